//! GraphQL types of the accounts area. Resolvers are thin: authorize, call the rule
//! or the scoped layer, map the result.

use async_graphql::{
    ComplexObject, Context, ID, Object, SimpleObject, connection::Connection,
    dataloader::DataLoader,
};
use chrono::{DateTime, Utc};

use crate::{
    auth::{Role, Scope},
    config::GraphqlConfig,
    entity::{tenant, user},
    graphql::{
        connection::{IdCursor, PageArgs, paginate},
        context::ContextExt,
        guards::{Authenticated, HasScope},
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

#[Object]
impl AccountsQuery {
    /// The signed-in user.
    #[graphql(guard = "Authenticated")]
    async fn viewer(&self, ctx: &Context<'_>) -> async_graphql::Result<UserNode> {
        let me = ctx.user()?;
        let model = ctx.tenant_db()?.get::<user::Entity>(me.user_id).await?;
        Ok(UserNode(model))
    }

    /// Users of the caller's tenant, oldest first.
    #[graphql(guard = "HasScope(Scope::UsersRead)")]
    async fn users(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<IdCursor, UserNode>> {
        let max = ctx.data::<GraphqlConfig>()?.max_page_size;
        paginate::<user::Entity, _>(
            ctx.tenant_db()?,
            PageArgs {
                after,
                before,
                first,
                last,
            },
            max,
            |q| q,
            |m| (m.id, UserNode(m)),
        )
        .await
    }
}
