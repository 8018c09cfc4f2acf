//! The one guard set. Guards enforce at run time, whether or not a field was visible.

use async_graphql::{Context, Guard};

use crate::{
    auth::{Role, Scope},
    error::Error,
};

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

/// A signed-in principal whose token or key carries `scope`.
pub struct HasScope(pub Scope);

impl Guard for HasScope {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        ctx.user()?;
        if ctx.principal().has_scope(self.0) {
            Ok(())
        } else {
            Err(Error::Forbidden.into())
        }
    }
}

/// A signed-in user, including one who still has to enrol in MFA.
pub struct SignedIn;

impl Guard for SignedIn {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        ctx.user_may_enrol()?;
        Ok(())
    }
}

/// Step-up: an MFA verification in this session within the configured window,
/// else `MFA_REQUIRED`.
pub struct RecentMfa;

impl Guard for RecentMfa {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let user = ctx.user()?;
        let window = ctx.services()?.step_up_window;
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::minutes(10));
        match user.mfa_verified_at {
            Some(at) if chrono::Utc::now() - at <= window => Ok(()),
            _ => Err(Error::MfaRequired.into()),
        }
    }
}

/// Who sees what in introspection (`#[graphql(visible = "…")]`). Visibility only
/// tidies the schema a caller is shown; the guards above are what refuse.
pub mod visible {
    use async_graphql::Context;

    use crate::{
        auth::{Role, Scope},
        graphql::context::ContextExt,
    };

    fn has(ctx: &Context<'_>, scope: Scope) -> bool {
        ctx.principal().has_scope(scope)
    }

    /// Any signed-in caller.
    pub fn signed_in(ctx: &Context<'_>) -> bool {
        ctx.principal().tenant().is_some()
    }

    pub fn users_read(ctx: &Context<'_>) -> bool {
        has(ctx, Scope::UsersRead)
    }

    pub fn users_admin(ctx: &Context<'_>) -> bool {
        has(ctx, Scope::UsersAdmin)
    }

    pub fn keys_admin(ctx: &Context<'_>) -> bool {
        has(ctx, Scope::KeysAdmin)
    }

    pub fn tenants_admin(ctx: &Context<'_>) -> bool {
        has(ctx, Scope::TenantsAdmin)
    }

    pub fn audit_read(ctx: &Context<'_>) -> bool {
        has(ctx, Scope::AuditRead)
    }

    pub fn escrow_read(ctx: &Context<'_>) -> bool {
        has(ctx, Scope::EscrowRead)
    }

    pub fn escrow_write(ctx: &Context<'_>) -> bool {
        has(ctx, Scope::EscrowWrite)
    }

    /// Who creates escrows: senders.
    pub fn escrow_create(ctx: &Context<'_>) -> bool {
        escrow_write(ctx) && has_role(ctx, Role::Sender)
    }

    /// Who reviews proofs: escrow writers, and support.
    pub fn escrow_review(ctx: &Context<'_>) -> bool {
        escrow_write(ctx) || (escrow_read(ctx) && has_role(ctx, Role::Support))
    }

    /// Who resolves disputes.
    pub fn escrow_admin(ctx: &Context<'_>) -> bool {
        escrow_write(ctx) && has_role(ctx, Role::Admin)
    }

    pub fn spend_read(ctx: &Context<'_>) -> bool {
        has(ctx, Scope::SpendRead)
    }

    pub fn spend_write(ctx: &Context<'_>) -> bool {
        has(ctx, Scope::SpendWrite)
    }

    /// Who grants mandates: senders.
    pub fn spend_grant(ctx: &Context<'_>) -> bool {
        spend_write(ctx) && has_role(ctx, Role::Sender)
    }

    /// Who keeps the spend catalog: admins and support.
    pub fn spend_catalog(ctx: &Context<'_>) -> bool {
        has_role(ctx, Role::Admin) || has_role(ctx, Role::Support)
    }

    /// Who may follow payments: readers of escrows or of spending.
    pub fn payments_read(ctx: &Context<'_>) -> bool {
        has(ctx, Scope::EscrowRead) || has(ctx, Scope::SpendRead)
    }

    pub fn payments_execute(ctx: &Context<'_>) -> bool {
        has(ctx, Scope::PaymentsExecute)
    }

    fn has_role(ctx: &Context<'_>, role: Role) -> bool {
        match ctx.principal() {
            crate::auth::Principal::User(u) => u.roles.contains(&role),
            crate::auth::Principal::Anonymous => false,
        }
    }
}
