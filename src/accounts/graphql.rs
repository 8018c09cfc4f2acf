//! GraphQL types of the accounts area. Resolvers are thin: authorize, call the rule
//! or the scoped layer, map the result.

use async_graphql::{ComplexObject, Context, ID, InputObject, Object, SimpleObject};
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
        connection::{ListOrder, Page, PageArgs, paginate},
        context::ContextExt,
    },
    ids::{self, Kind},
    kinds::AuditAction,
};

/// A tenant: an isolated organisation whose data no other tenant can read.
#[derive(SimpleObject)]
#[graphql(name = "Tenant", complex)]
pub struct TenantNode {
    #[graphql(skip)]
    pub model: tenant::Model,
    /// The tenant's short name, used to sign in.
    pub slug: String,
    /// The tenant's display name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

#[ComplexObject]
impl TenantNode {
    /// The tenant's global id.
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

/// Another user as the parties of an escrow, a mandate, a payment or a transfer see
/// them. Decided once, here: their global id and email address, nothing more (their
/// roles, activity, sessions and keys stay with them and the tenant's staff, through
/// `node(id:)` and `users`).
pub struct PartyNode(pub user::Model);

/// A user as a counterparty sees them: who they are and how to reach them, nothing
/// more (`node(id: userId)` gives the full `User` to themselves and to staff).
#[Object(name = "Party")]
impl PartyNode {
    /// The user's global id (`usr_…`).
    async fn user_id(&self) -> ID {
        ID(ids::encode(Kind::User, self.0.id))
    }

    /// Their email address.
    async fn email(&self) -> &str {
        &self.0.email
    }
}

/// The party `id` (a user of the caller's tenant), batched per request.
pub async fn party(ctx: &Context<'_>, id: uuid::Uuid) -> crate::error::Result<PartyNode> {
    crate::graphql::loaders::by_id::<user::Entity>(ctx, id)
        .await
        .map(PartyNode)
}

/// A user of one tenant.
pub struct UserNode(pub user::Model);

/// A person of the tenant.
#[Object(name = "User")]
impl UserNode {
    /// The user's global id.
    pub async fn id(&self) -> ID {
        ID(ids::encode(Kind::User, self.0.id))
    }

    /// The email they sign in with.
    async fn email(&self) -> &str {
        &self.0.email
    }

    /// false: deactivated; they can no longer sign in.
    async fn is_active(&self) -> bool {
        self.0.is_active
    }

    /// Whether the user proved `email` is theirs (the token mailed to it).
    async fn email_verified(&self) -> bool {
        self.0.email_verified_at.is_some()
    }

    /// When the user was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// The roles this user holds in its tenant.
    async fn roles(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Role>> {
        Ok(crate::graphql::loaders::user_roles(ctx, self.0.id).await?)
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

    /// Everything this server holds about you, as one JSON document (profile, roles,
    /// MFA, sessions, the escrows, mandates and payments you are party to, your
    /// notifications and settings, audit entries by or about you).
    #[graphql(visible = "access::visible::export_my_data")]
    async fn export_my_data(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<async_graphql::Json<serde_json::Value>> {
        let me = ctx.user()?;
        let txn = ctx.tenant_db()?.begin_snapshot().await?;
        let document = super::privacy::export(&txn, me.user_id).await?;
        txn.commit().await?;
        Ok(async_graphql::Json(document))
    }

    /// The tenant's audit log, oldest first (`last: N` for the newest).
    #[graphql(visible = "access::visible::audit_log")]
    // The Relay arguments, the order and a filter: one per GraphQL argument.
    #[allow(clippy::too_many_arguments)]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only entries with this action (e.g. `AUTH_SIGN_IN_FAILED`).")]
        action: Option<AuditAction>,
        #[graphql(desc = "A cursor from an earlier page: the items after it.")] after: Option<
            String,
        >,
        #[graphql(desc = "A cursor from an earlier page: the items before it.")] before: Option<
            String,
        >,
        #[graphql(
            desc = "At most this many items from the start (or after `after`); at most SEQUESTRA_GRAPHQL_MAX_PAGE_SIZE (100)."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "At most this many items from the end (or before `before`); at most SEQUESTRA_GRAPHQL_MAX_PAGE_SIZE (100)."
        )]
        last: Option<i32>,
        #[graphql(desc = "Oldest first (the default) or newest first.")] order_by: Option<
            ListOrder,
        >,
    ) -> async_graphql::Result<Page<AuditEntryNode>> {
        paginate::<audit_log::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
                order: order_by.unwrap_or_default(),
            },
            move |q| match action {
                Some(action) => q.filter(audit_log::Column::Action.eq(action.as_str())),
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
        #[graphql(desc = "A cursor from an earlier page: the items after it.")] after: Option<
            String,
        >,
        #[graphql(desc = "A cursor from an earlier page: the items before it.")] before: Option<
            String,
        >,
        #[graphql(
            desc = "At most this many items from the start (or after `after`); at most SEQUESTRA_GRAPHQL_MAX_PAGE_SIZE (100)."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "At most this many items from the end (or before `before`); at most SEQUESTRA_GRAPHQL_MAX_PAGE_SIZE (100)."
        )]
        last: Option<i32>,
        #[graphql(desc = "Oldest first (the default) or newest first.")] order_by: Option<
            ListOrder,
        >,
    ) -> async_graphql::Result<Page<UserNode>> {
        paginate::<user::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
                order: order_by.unwrap_or_default(),
            },
            |q| q,
            |m| (m.id, UserNode(m)),
        )
        .await
    }
}

/// A new user of your tenant.
#[derive(InputObject)]
pub struct CreateUserInput {
    /// The user's email, unique in the tenant; they sign in with it.
    pub email: String,
    /// The user's roles (and so their scopes).
    pub roles: Vec<Role>,
}

/// Whom `eraseUser` erases.
#[derive(InputObject)]
pub struct EraseUserInput {
    /// The user's global id.
    pub user_id: ID,
}

/// Your confirmation of `eraseMyAccount`.
#[derive(InputObject)]
pub struct EraseMyAccountInput {
    /// Your password now.
    #[graphql(secret)]
    pub password: String,
}

/// The answer to `eraseUser` and `eraseMyAccount`.
#[derive(SimpleObject)]
pub struct ErasedPayload {
    /// The erased user's id (it stays in the ledger and the audit log, leading to no
    /// one).
    pub user_id: ID,
}

/// A new user and the one-time password to hand them (shown once).
#[derive(SimpleObject)]
pub struct CreateUserPayload {
    /// The new user.
    pub user: UserNode,
    /// The user's first password: shown once, stored only as a hash.
    pub one_time_password: String,
}

/// One row of the append-only audit log.
pub struct AuditEntryNode(pub audit_log::Model);

/// A row of the tenant's append-only audit log: who did what, from where.
#[Object(name = "AuditEntry")]
impl AuditEntryNode {
    /// `USER` or `SYSTEM`.
    async fn actor_type(&self) -> &str {
        &self.0.actor_type
    }

    /// The user who acted; none for the system (jobs, webhooks) or an anonymous caller.
    #[graphql(deprecation = "Use `actor { userId }`.")]
    async fn actor_id(&self) -> Option<ID> {
        self.0.actor_id.map(|id| ID(ids::encode(Kind::User, id)))
    }

    /// The user who acted (id and email; `node(id: userId)` for the rest); none for
    /// the system (jobs, webhooks), an anonymous caller, or a user of no tenant the
    /// log's reader can see (a platform operator).
    async fn actor(&self, ctx: &Context<'_>) -> crate::error::Result<Option<PartyNode>> {
        let Some(actor) = self.0.actor_id else {
            return Ok(None);
        };
        match party(ctx, actor).await {
            Ok(p) => Ok(Some(p)),
            Err(crate::error::Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What happened, e.g. `AUTH_SIGN_IN_FAILED`.
    async fn action(&self) -> crate::error::Result<AuditAction> {
        AuditAction::from_stored(&self.0.action)
    }

    /// The kind of object acted on (`escrow`, `payment`, `user`, …).
    async fn subject_type(&self) -> Option<&str> {
        self.0.subject_type.as_deref()
    }

    /// The client address the request came from (behind a trusted proxy: the forwarded one).
    async fn ip(&self) -> Option<&str> {
        self.0.ip.as_deref()
    }

    /// The request's `x-request-id`, to find its log lines.
    async fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }

    /// Details as a JSON string.
    async fn details(&self) -> String {
        self.0.details.to_string()
    }

    /// When it happened.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// A new tenant and its first ADMIN.
#[derive(InputObject)]
pub struct CreateTenantInput {
    /// The tenant's short name in sign-ins: 2 to 63 characters of a-z, 0-9 and -, not starting or ending with -, unique.
    pub slug: String,
    /// The tenant's display name.
    pub name: String,
    /// The email of the tenant's first ADMIN, who gets a one-time password.
    pub admin_email: String,
}

/// A new tenant, its first ADMIN and that admin's one-time password (shown once).
#[derive(SimpleObject)]
pub struct CreateTenantPayload {
    /// The new tenant.
    pub tenant: TenantNode,
    /// The email its first ADMIN signs in with.
    pub admin_email: String,
    /// That ADMIN's password: shown once, stored only as a hash; change it at first sign-in.
    pub one_time_password: String,
}

/// A user's roles to replace.
#[derive(InputObject)]
pub struct SetUserRolesInput {
    /// The user.
    pub user_id: ID,
    /// The user's roles from now on (their scopes follow).
    pub roles: Vec<Role>,
}

/// A user to deactivate.
#[derive(InputObject)]
pub struct DeactivateUserInput {
    /// The user to deactivate: their sessions and API keys stop working at once.
    pub user_id: ID,
}

/// Your password change.
#[derive(InputObject)]
pub struct ChangePasswordInput {
    /// Your password now.
    #[graphql(secret)]
    pub current_password: String,
    /// The new password: at least 12 characters, not a common one; every other
    /// session is signed out.
    #[graphql(secret)]
    pub new_password: String,
}

/// What a mutation of one user did: the user as it is now.
#[derive(SimpleObject)]
pub struct UserPayload {
    /// The user, as it is now.
    pub user: UserNode,
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
        #[graphql(desc = "The tenant's slug and name, and its first ADMIN.")]
        input: CreateTenantInput,
    ) -> async_graphql::Result<CreateTenantPayload> {
        let me = ctx.user()?;
        let slug = Slug::parse(&input.slug)?;
        let email = Email::parse(&input.admin_email)?;
        let by = rules::BootstrapBy {
            actor: Actor::User(me.user_id),
            origin: ctx.request().origin.clone(),
        };
        let made =
            rules::bootstrap(&ctx.services()?.db, &slug, &input.name, &email, false, by).await?;
        Ok(CreateTenantPayload {
            tenant: made.tenant.into(),
            admin_email: made.admin.email,
            one_time_password: made.one_time_password.expose_secret().to_owned(),
        })
    }

    /// Creates a user with a random one-time password; a token to verify the address
    /// is mailed to it.
    #[graphql(visible = "access::visible::create_user")]
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new user's email, name and roles.")] input: CreateUserInput,
    ) -> async_graphql::Result<CreateUserPayload> {
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
        // The new user confirms the address is theirs.
        crate::identity::email::send_verification(
            &db,
            ctx.services()?.mail.app_url.as_deref(),
            user.id,
            &user.email,
        )
        .await?;
        db.commit().await?;
        Ok(CreateUserPayload {
            user: UserNode(user),
            one_time_password: one_time.expose_secret().to_owned(),
        })
    }

    /// Replaces a user's roles (needs a recent MFA verification).
    #[graphql(visible = "access::visible::set_user_roles")]
    async fn set_user_roles(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user and their roles from now on.")] input: SetUserRolesInput,
    ) -> async_graphql::Result<UserPayload> {
        let me = ctx.user()?;
        let target = ids::decode_as(Kind::User, &input.user_id)?;
        let db = ctx.tenant_db()?.begin().await?;
        rules::set_roles(&db, me.user_id, &ctx.request().origin, target, &input.roles).await?;
        let user = db.get::<user::Entity>(target).await?;
        db.commit().await?;
        Ok(UserPayload {
            user: UserNode(user),
        })
    }

    /// Erases a user's personal data (an ADMIN, with a recent step-up): the account is
    /// anonymized and closed; amounts, the ledger and the audit log stay, pointing at
    /// a pseudonymous id. CONFLICT `FUNDS_IN_FLIGHT` while money is still moving for
    /// them (the message says what), `LAST_ADMIN` for the last active ADMIN.
    #[graphql(visible = "access::visible::erase_user")]
    async fn erase_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user to erase.")] input: EraseUserInput,
    ) -> async_graphql::Result<ErasedPayload> {
        let me = ctx.user()?;
        let target = ids::decode_as(Kind::User, &input.user_id)?;
        let db = ctx.tenant_db()?.begin().await?;
        super::privacy::erase(&db, Actor::User(me.user_id), &ctx.request().origin, target).await?;
        db.commit().await?;
        Ok(ErasedPayload {
            user_id: input.user_id,
        })
    }

    /// Erases your own personal data and closes your account (your password is
    /// asked again), as `eraseUser` does: refused with CONFLICT `FUNDS_IN_FLIGHT`
    /// while money is still moving for you.
    #[graphql(visible = "access::visible::erase_my_account")]
    async fn erase_my_account(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Your password.")] input: EraseMyAccountInput,
    ) -> async_graphql::Result<ErasedPayload> {
        ctx.take_credential_attempt()?;
        let me = ctx.user()?;
        let db = ctx.tenant_db()?;
        let services = ctx.services()?;
        let origin = &ctx.request().origin;
        let who = db.get::<user::Entity>(me.user_id).await?;
        crate::identity::rules::confirm_password(
            db,
            services.tokens.lockout(),
            &who,
            origin,
            SecretString::from(input.password),
            "erase_my_account",
        )
        .await?;
        let txn = db.begin().await?;
        super::privacy::erase(&txn, Actor::User(who.id), origin, who.id).await?;
        txn.commit().await?;
        Ok(ErasedPayload {
            user_id: ID(ids::encode(Kind::User, who.id)),
        })
    }

    /// Deactivates a user; all their sessions end at once.
    #[graphql(visible = "access::visible::deactivate_user")]
    async fn deactivate_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user to deactivate.")] input: DeactivateUserInput,
    ) -> async_graphql::Result<UserPayload> {
        let me = ctx.user()?;
        let target = ids::decode_as(Kind::User, &input.user_id)?;
        let db = ctx.tenant_db()?.begin().await?;
        let user = rules::deactivate(&db, me.user_id, &ctx.request().origin, target).await?;
        db.commit().await?;
        Ok(UserPayload {
            user: UserNode(user),
        })
    }

    /// Changes the caller's password; every other session of theirs ends.
    #[graphql(visible = "access::visible::change_password")]
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Your password now, and the new one.")] input: ChangePasswordInput,
    ) -> async_graphql::Result<UserPayload> {
        ctx.take_credential_attempt()?;
        let me = ctx.user()?;
        let db = ctx.tenant_db()?;
        rules::change_password(
            db,
            ctx.services()?.tokens.lockout(),
            me.user_id,
            me.session()?,
            &ctx.request().origin,
            SecretString::from(input.current_password),
            SecretString::from(input.new_password),
        )
        .await?;
        Ok(UserPayload {
            user: UserNode(db.get::<user::Entity>(me.user_id).await?),
        })
    }
}
