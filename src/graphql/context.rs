//! What every GraphQL request carries: who is calling, their tenant-scoped handle,
//! and where the call came from.

use async_graphql::Context;

use crate::{
    audit::Origin,
    auth::{Principal, UserPrincipal},
    db::TenantDb,
    error::{Error, Result},
};

/// Built once per request (or per WebSocket connection) at the edge.
#[derive(Clone)]
pub struct RequestContext {
    pub principal: Principal,
    /// Present exactly when the principal belongs to a tenant.
    pub db: Option<TenantDb>,
    pub origin: Origin,
}

pub trait ContextExt {
    fn request(&self) -> &RequestContext;

    fn principal(&self) -> &Principal {
        &self.request().principal
    }

    /// The signed-in user, or `UNAUTHENTICATED`.
    fn user(&self) -> Result<&UserPrincipal> {
        match self.principal() {
            Principal::User(u) => Ok(u),
            Principal::Anonymous => Err(Error::Unauthenticated),
        }
    }

    /// The caller's tenant-scoped handle, or `UNAUTHENTICATED`.
    fn tenant_db(&self) -> Result<&TenantDb> {
        self.request().db.as_ref().ok_or(Error::Unauthenticated)
    }
}

impl ContextExt for Context<'_> {
    fn request(&self) -> &RequestContext {
        // The edge inserts a RequestContext into every request; its absence is a bug
        // in the edge, not input, and a schema built without the edge has none.
        self.data_unchecked::<RequestContext>()
    }
}
