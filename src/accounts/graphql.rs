//! GraphQL types of the accounts area. Resolvers are thin: authorize, call the rule
//! or the scoped layer, map the result.

use async_graphql::{
    ComplexObject, Context, ID, InputObject, Object, SimpleObject, connection::Connection,
    dataloader::DataLoader,
};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, QueryFilter};
use secrecy::{ExposeSecret, SecretString};

use super::rules;

use crate::{
    audit::Actor,
    auth::{Role, password},
    domain::{Email, Slug},
    entity::{audit_log, tenant, user},
    graphql::{
        access,
        connection::{IdCursor, PageArgs, paginate},
        context::ContextExt,
        loaders::UserRolesLoader,
    },
    ids::{self, Kind},
};

/// A tenant: an isolated organisation whose data no other tenant can read.
#[derive(SimpleObject)]
#[graphql(name = "Tenant", complex)]
pub struct TenantNode {
    #[graphql(skip)]
    pub model: tenant::Model,
    pub slug: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[ComplexObject]
impl TenantNode {
    pub async fn id(&self) -> ID {
        ID(ids::encode(Kind::Tenant, self.model.id))
    }
}

impl From<tenant::Model> for TenantNode {
    fn from(model: tenant::Model) -> Self {
        Self {
            slug: model.slug.clone(),
            name: model.name.clone(),
            created_at: model.created_at,
            model,
        }
    }
}

/// A user of one tenant.
pub struct UserNode(pub user::Model);

#[Object(name = "User")]
impl UserNode {
    pub async fn id(&self) -> ID {
        ID(ids::encode(Kind::User, self.0.id))
    }

    async fn email(&self) -> &str {
        &self.0.email
    }

    async fn is_active(&self) -> bool {
        self.0.is_active
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// The roles this user holds in its tenant.
    async fn roles(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Role>> {
        let loader = ctx.data::<DataLoader<UserRolesLoader>>()?;
        Ok(loader.load_one(self.0.id).await?.unwrap_or_default())
    }

    /// The tenant this user belongs to (always the caller's own).
    async fn tenant(&self, ctx: &Context<'_>) -> async_graphql::Result<TenantNode> {
        Ok(ctx.tenant_db()?.tenant_record().await?.into())
    }
}

#[derive(Default)]
pub struct AccountsQuery;

#[Object(guard = "access::Guard(access::Root::Query)")]
impl AccountsQuery {
    /// The signed-in user.
    #[graphql(visible = "access::visible::viewer")]
    async fn viewer(&self, ctx: &Context<'_>) -> async_graphql::Result<UserNode> {
        let me = ctx.user()?;
        let model = ctx.tenant_db()?.get::<user::Entity>(me.user_id).await?;
        Ok(UserNode(model))
    }

    /// The tenant's audit log, oldest first (`last: N` for the newest).
    #[graphql(visible = "access::visible::audit_log")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        action: Option<String>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<IdCursor, AuditEntryNode>> {
        paginate::<audit_log::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
            },
            |q| match action {
                Some(action) => q.filter(audit_log::Column::Action.eq(action)),
                None => q,
            },
            |m| (m.id, AuditEntryNode(m)),
        )
        .await
    }

    /// Users of the caller's tenant, oldest first.
    #[graphql(visible = "access::visible::users")]
    async fn users(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<IdCursor, UserNode>> {
        paginate::<user::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
            },
            |q| q,
            |m| (m.id, UserNode(m)),
        )
        .await
    }
}

#[derive(InputObject)]
pub struct CreateUserInput {
    pub email: String,
    pub roles: Vec<Role>,
}

/// A new user and the one-time password to hand them (shown once).
#[derive(SimpleObject)]
pub struct CreatedUser {
    pub user: UserNode,
    pub one_time_password: String,
}

/// One row of the append-only audit log.
pub struct AuditEntryNode(pub audit_log::Model);

#[Object(name = "AuditEntry")]
impl AuditEntryNode {
    /// `USER` or `SYSTEM`.
    async fn actor_type(&self) -> &str {
        &self.0.actor_type
    }

    async fn actor_id(&self) -> Option<ID> {
        self.0.actor_id.map(|id| ID(ids::encode(Kind::User, id)))
    }

    /// What happened, e.g. `auth.sign_in.failed`.
    async fn action(&self) -> &str {
        &self.0.action
    }

    async fn subject_type(&self) -> Option<&str> {
        self.0.subject_type.as_deref()
    }

    async fn ip(&self) -> Option<&str> {
        self.0.ip.as_deref()
    }

    async fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }

    /// Details as a JSON string.
    async fn details(&self) -> String {
        self.0.details.to_string()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

#[derive(InputObject)]
pub struct CreateTenantInput {
    pub slug: String,
    pub name: String,
    pub admin_email: String,
}

/// A new tenant, its first ADMIN and that admin's one-time password (shown once).
#[derive(SimpleObject)]
pub struct CreatedTenant {
    pub tenant: TenantNode,
    pub admin_email: String,
    pub one_time_password: String,
}

#[derive(Default)]
pub struct AccountsMutation;

#[Object(guard = "access::Guard(access::Root::Mutation)")]
impl AccountsMutation {
    /// Creates a tenant and its first ADMIN (PLATFORM_ADMIN only).
    #[graphql(visible = "access::visible::create_tenant")]
    async fn create_tenant(
        &self,
        ctx: &Context<'_>,
        input: CreateTenantInput,
    ) -> async_graphql::Result<CreatedTenant> {
        let me = ctx.user()?;
        let slug = Slug::parse(&input.slug)?;
        let email = Email::parse(&input.admin_email)?;
        let by = rules::BootstrapBy {
            actor: Actor::User(me.user_id),
            origin: ctx.request().origin.clone(),
        };
        let made =
            rules::bootstrap(&ctx.services()?.db, &slug, &input.name, &email, false, by).await?;
        Ok(CreatedTenant {
            tenant: made.tenant.into(),
            admin_email: made.admin.email,
            one_time_password: made.one_time_password.expose_secret().to_owned(),
        })
    }

    /// Creates a user with a random one-time password.
    #[graphql(visible = "access::visible::create_user")]
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        input: CreateUserInput,
    ) -> async_graphql::Result<CreatedUser> {
        let me = ctx.user()?;
        let email = Email::parse(&input.email)?;
        let one_time = password::generate();
        let hash = password::hash(one_time.clone()).await?;
        let db = ctx.tenant_db()?.begin().await?;
        let user = rules::create_user(
            &db,
            Actor::User(me.user_id),
            &ctx.request().origin,
            &email,
            hash,
            &input.roles,
        )
        .await?;
        db.commit().await?;
        Ok(CreatedUser {
            user: UserNode(user),
            one_time_password: one_time.expose_secret().to_owned(),
        })
    }

    /// Replaces a user's roles (needs a recent MFA verification).
    #[graphql(visible = "access::visible::set_user_roles")]
    async fn set_user_roles(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        roles: Vec<Role>,
    ) -> async_graphql::Result<UserNode> {
        let me = ctx.user()?;
        let target = ids::decode_as(Kind::User, &user_id)?;
        let db = ctx.tenant_db()?.begin().await?;
        rules::set_roles(&db, me.user_id, &ctx.request().origin, target, &roles).await?;
        let user = db.get::<user::Entity>(target).await?;
        db.commit().await?;
        Ok(UserNode(user))
    }

    /// Deactivates a user; all their sessions end at once.
    #[graphql(visible = "access::visible::deactivate_user")]
    async fn deactivate_user(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
    ) -> async_graphql::Result<UserNode> {
        let me = ctx.user()?;
        let target = ids::decode_as(Kind::User, &user_id)?;
        let db = ctx.tenant_db()?.begin().await?;
        let user = rules::deactivate(&db, me.user_id, &ctx.request().origin, target).await?;
        db.commit().await?;
        Ok(UserNode(user))
    }

    /// Changes the caller's password; every other session of theirs ends.
    #[graphql(visible = "access::visible::change_password")]
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(secret)] current_password: String,
        #[graphql(secret)] new_password: String,
    ) -> async_graphql::Result<bool> {
        ctx.take_credential_attempt()?;
        let me = ctx.user()?;
        rules::change_password(
            ctx.tenant_db()?,
            ctx.services()?.tokens.lockout(),
            me.user_id,
            me.session()?,
            &ctx.request().origin,
            SecretString::from(current_password),
            SecretString::from(new_password),
        )
        .await?;
        Ok(true)
    }
}
