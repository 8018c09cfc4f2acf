//! What every GraphQL request carries: who is calling, their tenant-scoped handle,
//! and where the call came from.

use std::sync::{
    Arc, LazyLock,
    atomic::{AtomicU32, Ordering},
};

use async_graphql::Context;
use sea_orm::DatabaseConnection;

use crate::{
    audit::Origin,
    auth::{Principal, TokenService, UserPrincipal, crypto::Sealer},
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
    /// Credential checks (sign-in, refresh) made by this request so far.
    pub credential_attempts: Arc<AtomicU32>,
}

impl RequestContext {
    pub fn new(principal: Principal, db: Option<TenantDb>, origin: Origin) -> Self {
        Self {
            principal,
            db,
            origin,
            credential_attempts: Arc::default(),
        }
    }

    /// One credential check per request: aliases cannot multiply attempts.
    pub fn take_credential_attempt(&self) -> Result<()> {
        if self.credential_attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            Ok(())
        } else {
            Err(Error::RateLimited {
                retry_after_secs: 0,
            })
        }
    }
}

/// Platform services rules need before a tenant is known (sign-in, refresh). Only
/// pre-authentication resolvers use the raw connection in here.
#[derive(Clone)]
pub struct Services {
    pub db: DatabaseConnection,
    pub tokens: TokenService,
    pub sealer: Sealer,
    /// How recent an MFA verification must be for a sensitive mutation.
    pub step_up_window: std::time::Duration,
}

pub trait ContextExt {
    fn request(&self) -> &RequestContext;

    fn principal(&self) -> &Principal {
        &self.request().principal
    }

    /// The signed-in user, or `UNAUTHENTICATED`; `MFA_REQUIRED` while the tenant's
    /// policy demands an enrolment the user has not made.
    fn user(&self) -> Result<&UserPrincipal> {
        let user = self.user_may_enrol()?;
        if user.mfa_enrolment_required {
            return Err(Error::MfaEnrolmentRequired);
        }
        Ok(user)
    }

    /// The signed-in user, even one who still has to enrol in MFA (for enrolment,
    /// sign-out and the like).
    fn user_may_enrol(&self) -> Result<&UserPrincipal> {
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

/// What a request without a context (one not built by the edge) is treated as:
/// anonymous, with no tenant.
static ANONYMOUS: LazyLock<RequestContext> =
    LazyLock::new(|| RequestContext::new(Principal::Anonymous, None, Origin::default()));

impl ContextExt for Context<'_> {
    fn request(&self) -> &RequestContext {
        self.data_opt::<RequestContext>().unwrap_or(&ANONYMOUS)
    }
}
