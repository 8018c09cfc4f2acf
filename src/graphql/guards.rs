//! The one guard set. Guards enforce at run time, whether or not a field was visible.

use async_graphql::{Context, Guard};

use crate::{auth::Role, error::Error};

use super::context::ContextExt;

/// Any signed-in principal.
pub struct Authenticated;

impl Guard for Authenticated {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        ctx.user()?;
        Ok(())
    }
}

/// A signed-in principal holding at least one of `roles`.
pub struct AnyRole(pub &'static [Role]);

impl Guard for AnyRole {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let user = ctx.user()?;
        if user.roles.iter().any(|r| self.0.contains(r)) {
            Ok(())
        } else {
            Err(Error::Forbidden.into())
        }
    }
}
