//! What every GraphQL request carries: who is calling, their tenant-scoped handle,
//! and where the call came from.

use std::{
    net::IpAddr,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU32, Ordering},
    },
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
    /// The resolved client address (behind trusted proxies, the forwarded one).
    pub client_ip: Option<IpAddr>,
}

impl RequestContext {
    pub fn new(
        principal: Principal,
        db: Option<TenantDb>,
        origin: Origin,
        client_ip: Option<IpAddr>,
    ) -> Self {
        Self {
            principal,
            db,
            origin,
            credential_attempts: Arc::default(),
            client_ip,
        }
    }

    /// One credential check per request (aliases cannot multiply attempts), and a
    /// limited number per client address per minute.
    pub fn take_credential_attempt(&self, limiter: &CredentialLimiter) -> Result<()> {
        if self.credential_attempts.fetch_add(1, Ordering::SeqCst) != 0 {
            return Err(Error::RateLimited {
                retry_after_secs: 1,
            });
        }
        let Some(ip) = self.client_ip else {
            return Ok(());
        };
        limiter.check_key(&ip).map_err(|not_until| {
            let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
            Error::RateLimited {
                retry_after_secs: not_until.wait_time_from(now).as_secs().max(1),
            }
        })
    }
}

/// Platform services rules need before a tenant is known. Only pre-authentication
/// resolvers (sign-in, refresh, MFA challenge) and platform operations (tenant
/// creation) use the raw connection in here; everything else goes through `TenantDb`.
#[derive(Clone)]
pub struct Services {
    pub db: DatabaseConnection,
    /// Statements `db` has run (counted by its metric callback).
    pub statements: std::sync::Arc<crate::db::StatementTap>,
    pub tokens: TokenService,
    pub sealer: Sealer,
    /// How recent an MFA verification must be for a sensitive mutation.
    pub step_up_window: std::time::Duration,
    pub credential_limiter: Arc<CredentialLimiter>,
    /// Where payouts go.
    pub psp: Arc<dyn crate::payments::Psp>,
    /// Where proof files are kept.
    pub proofs: Arc<dyn crate::escrow::storage::ProofStore>,
    pub proof_max_bytes: usize,
    /// Reconciliation and retry policy for payouts.
    pub payments: Arc<crate::config::PaymentsConfig>,
    /// Committed updates, for subscriptions.
    pub bus: crate::events::Bus,
    /// Mail: where it goes, who it is from, the reset limits.
    pub mail: Arc<crate::config::MailConfig>,
    pub mailer: Arc<crate::notify::deliver::Mailer>,
    /// Password reset requests per address (tenant and email), in this process.
    pub reset_limiter: Arc<governor::DefaultKeyedRateLimiter<String>>,
}

impl Services {
    /// The scoped handle of `tenant`, publishing to this process's bus.
    pub fn tenant_db(&self, tenant: crate::ids::TenantId) -> TenantDb {
        TenantDb::new(self.db.clone(), tenant).with_bus(Some(self.bus.clone()))
    }
}

pub trait ContextExt {
    fn request(&self) -> &RequestContext;

    fn services(&self) -> Result<&Services>;

    /// Counts a credential check against this request and the client's address.
    fn take_credential_attempt(&self) -> Result<()> {
        self.request()
            .take_credential_attempt(&self.services()?.credential_limiter)
    }

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

    /// The signed-in user as the rules see it.
    fn caller(&self) -> Result<crate::rules::Caller> {
        let user = self.user()?;
        Ok(crate::rules::Caller {
            user_id: user.user_id,
            roles: user.roles.clone(),
        })
    }

    /// The caller's tenant-scoped handle, or `UNAUTHENTICATED`.
    fn tenant_db(&self) -> Result<&TenantDb> {
        self.request().db.as_ref().ok_or(Error::Unauthenticated)
    }
}

/// What a request without a context (one not built by the edge) is treated as:
/// anonymous, with no tenant.
static ANONYMOUS: LazyLock<RequestContext> =
    LazyLock::new(|| RequestContext::new(Principal::Anonymous, None, Origin::default(), None));

/// Credential checks per client address (governor's keyed limiter).
pub type CredentialLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

impl ContextExt for Context<'_> {
    fn request(&self) -> &RequestContext {
        self.data_opt::<RequestContext>().unwrap_or(&ANONYMOUS)
    }

    fn services(&self) -> Result<&Services> {
        self.data_opt::<Services>()
            .ok_or_else(|| Error::internal(anyhow::anyhow!("schema built without Services")))
    }
}
