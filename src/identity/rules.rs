//! Sign-in, sessions and refresh-token rotation: plain functions over the database,
//! with no GraphQL types.

use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, QueryFilter,
    QueryOrder, sea_query::Expr,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::kinds::AuditAction;
use crate::{
    accounts::rules::find_tenant_by_slug,
    audit::{self, Actor, Origin},
    auth::{TokenService, password, token::IssuedToken},
    db::{Scoped, TenantDb},
    domain::Email,
    entity::{auth_failure, refresh_token, session, user},
    error::{Error, Result},
    ids::{TenantId, new_id},
};

const REFRESH_PREFIX: &str = "sq_rt_";

/// What a successful sign-in or refresh hands back.
pub struct IssuedSession {
    pub session_id: Uuid,
    pub access: IssuedToken,
    pub refresh_token: SecretString,
}

/// Which secret failed.
#[derive(Debug, Clone, Copy)]
pub enum FailureKind {
    Password,
    Totp,
}

impl FailureKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FailureKind::Password => "PASSWORD",
            FailureKind::Totp => "TOTP",
        }
    }
}

/// How a correct password ends: tokens, or (with MFA) a challenge for the second step.
pub enum SignInOutcome {
    Signed(IssuedSession),
    MfaRequired(SecretString),
}

/// `email` + `password` in tenant `slug` (`bus`: where this process's subscribers and
/// mail sender listen, woken when the sign-in commits). An unknown tenant, an unknown email, an
/// inactive user and a wrong password all take the same path (a dummy hash is
/// verified when there is no user) and get the same answer.
pub async fn sign_in(
    db: &DatabaseConnection,
    bus: Option<crate::events::Bus>,
    tokens: &TokenService,
    origin: &Origin,
    slug: &str,
    email: &str,
    secret: SecretString,
) -> Result<SignInOutcome> {
    let tenant = find_tenant_by_slug(db, slug).await?;
    let email = Email::parse(email).ok();
    let scoped = tenant.map(|t| TenantDb::new(db.clone(), TenantId::from_uuid(t.id)).with_bus(bus));
    let user = match (&scoped, &email) {
        (Some(scoped), Some(email)) => scoped
            .first::<user::Entity>(|q| q.filter(user::Column::Email.eq(email.as_str())))
            .await?
            .filter(|u| u.is_active),
        _ => None,
    };

    let (Some(scoped), Some(user)) = (scoped.as_ref(), user) else {
        password::verify_dummy(secret).await;
        if let Some(scoped) = &scoped {
            audit_failure(scoped, None, origin, "unknown_email").await?;
        }
        return Err(Error::InvalidCredentials);
    };

    let verified = counted_check(
        scoped,
        tokens.lockout(),
        user.id,
        FailureKind::Password,
        password::verify(secret.clone(), user.password_hash.clone()),
    )
    .await?;
    if !verified {
        audit_failure(scoped, Some(user.id), origin, "wrong_password").await?;
        return Err(Error::InvalidCredentials);
    }
    if password::needs_rehash(&user.password_hash) {
        let rehashed = password::hash(secret).await?;
        crate::accounts::rules::set_password_hash(scoped, user.id, rehashed).await?;
    }

    if super::mfa::is_enabled(scoped, user.id).await? {
        let challenge = super::mfa::create_challenge(scoped, user.id).await?;
        return Ok(SignInOutcome::MfaRequired(challenge));
    }

    let txn = scoped.begin().await?;
    let issued = open_session(&txn, tokens, user.id, origin, false).await?;
    audit::record(
        &txn,
        audit::Entry {
            actor: Actor::User(user.id),
            action: AuditAction::AuthSignInSucceeded,
            subject: Some(("session", issued.session_id)),
            details: json!({}),
            origin,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(SignInOutcome::Signed(issued))
}

async fn audit_failure(
    db: &TenantDb,
    user: Option<Uuid>,
    origin: &Origin,
    reason: &str,
) -> Result<()> {
    audit::record(
        db,
        audit::Entry {
            actor: user.map_or(Actor::System, Actor::User),
            action: AuditAction::AuthSignInFailed,
            subject: user.map(|id| ("user", id)),
            details: json!({ "reason": reason }),
            origin,
        },
    )
    .await
}

/// Creates a session for `user` with its first refresh token and an access token, and
/// tells the user by mail that someone signed in.
pub(super) async fn open_session<C: ConnectionTrait>(
    db: &Scoped<C>,
    tokens: &TokenService,
    user: Uuid,
    origin: &Origin,
    mfa_verified: bool,
) -> Result<IssuedSession> {
    let now = Utc::now();
    let session = db
        .insert(session::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(db.tenant().as_uuid()),
            user_id: Set(user),
            created_at: Set(now),
            expires_at: Set(now + tokens.session_lifetime()),
            last_seen_at: Set(now),
            revoked_at: Set(None),
            revoke_reason: Set(None),
            mfa_verified_at: Set(mfa_verified.then_some(now)),
            ip: Set(origin.ip.clone()),
            user_agent: Set(None),
        })
        .await?;
    let refresh_token = new_refresh_token(db, session.id).await?;
    let access = tokens.issue(db.tenant(), user, session.id)?;
    // Every sign-in is told to the account's owner (a security notice).
    crate::notify::enqueue(
        db,
        user,
        crate::notify::NoticeKind::SignIn,
        crate::notify::security_data(origin.ip.as_deref()),
    )
    .await?;
    Ok(IssuedSession {
        session_id: session.id,
        access,
        refresh_token,
    })
}

/// A fresh opaque refresh token for `session`: `sq_rt_<tenant>_<256 random bits>`.
/// The tenant part lets a refresh find its tenant without a cross-tenant lookup; only
/// the SHA-256 of the whole token is stored.
async fn new_refresh_token<C: ConnectionTrait>(
    db: &Scoped<C>,
    session: Uuid,
) -> Result<SecretString> {
    let token = tenant_token(REFRESH_PREFIX, db.tenant());
    db.insert(refresh_token::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(db.tenant().as_uuid()),
        session_id: Set(session),
        token_hash: Set(sha256_hex(&token)),
        created_at: Set(Utc::now()),
        used_at: Set(None),
    })
    .await?;
    Ok(SecretString::from(token))
}

pub fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

fn tenant_of_refresh_token(token: &str) -> Option<TenantId> {
    tenant_of_token(REFRESH_PREFIX, token)
}

/// A fresh opaque token `<prefix><tenant>_<256 random bits in hex>`: the tenant part
/// lets whoever presents it be served without a cross-tenant lookup.
pub(crate) fn tenant_token(prefix: &str, tenant: TenantId) -> String {
    let mut random = [0u8; 32];
    rand::rng().fill_bytes(&mut random);
    format!(
        "{prefix}{}_{}",
        tenant.as_uuid().simple(),
        hex::encode(random)
    )
}

/// The tenant a [`tenant_token`] with `prefix` names; `None` for anything else.
pub(crate) fn tenant_of_token(prefix: &str, token: &str) -> Option<TenantId> {
    let rest = token.strip_prefix(prefix)?;
    let (tenant, secret) = rest.split_once('_')?;
    if secret.len() != 64 {
        return None;
    }
    Uuid::try_parse(tenant).ok().map(TenantId::from_uuid)
}

/// Rotates a refresh token. A token that was already used revokes its whole session
/// (someone holds a copy) and is audited; the answer is the same as for any bad token.
pub async fn refresh(
    db: &DatabaseConnection,
    tokens: &TokenService,
    origin: &Origin,
    presented: SecretString,
) -> Result<IssuedSession> {
    let presented = presented.expose_secret();
    let tenant = tenant_of_refresh_token(presented).ok_or(Error::InvalidCredentials)?;
    let scoped = TenantDb::new(db.clone(), tenant);
    let hash = sha256_hex(presented);
    let txn = scoped.begin().await?;
    let Some(row) = txn
        .first::<refresh_token::Entity>(|q| q.filter(refresh_token::Column::TokenHash.eq(hash)))
        .await?
    else {
        return Err(Error::InvalidCredentials);
    };
    let session = txn.get::<session::Entity>(row.session_id).await?;
    let now = Utc::now();
    // A refresh token lives `refresh_token_ttl` from its issue (each rotation issues a
    // new one), never past the session's absolute end.
    if session.revoked_at.is_some()
        || session.expires_at <= now
        || row.created_at + tokens.refresh_token_ttl() <= now
    {
        return Err(Error::InvalidCredentials);
    }
    // Compare-and-set: of two concurrent refreshes with one token, one wins.
    let claimed = txn
        .update_where::<refresh_token::Entity>(|q| {
            q.col_expr(refresh_token::Column::UsedAt, Expr::value(now))
                .filter(refresh_token::Column::Id.eq(row.id))
                .filter(refresh_token::Column::UsedAt.is_null())
        })
        .await?;
    if claimed != 1 {
        revoke(&txn, session.id, "REFRESH_REUSE").await?;
        audit::record(
            &txn,
            audit::Entry {
                actor: Actor::User(session.user_id),
                action: AuditAction::AuthRefreshReused,
                subject: Some(("session", session.id)),
                details: json!({ "revoked": true }),
                origin,
            },
        )
        .await?;
        txn.commit().await?;
        return Err(Error::InvalidCredentials);
    }
    txn.update_where::<session::Entity>(|q| {
        q.col_expr(session::Column::LastSeenAt, Expr::value(now))
            .filter(session::Column::Id.eq(session.id))
    })
    .await?;
    let refresh_token = new_refresh_token(&txn, session.id).await?;
    let access = tokens.issue(tenant, session.user_id, session.id)?;
    txn.commit().await?;
    Ok(IssuedSession {
        session_id: session.id,
        access,
        refresh_token,
    })
}

/// Marks `session` revoked (once; a revoked session stays as it was).
pub async fn revoke<C: ConnectionTrait>(
    db: &Scoped<C>,
    session: Uuid,
    reason: &str,
) -> Result<bool> {
    let changed = db
        .update_where::<session::Entity>(|q| {
            q.col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
                .col_expr(session::Column::RevokeReason, Expr::value(reason))
                .filter(session::Column::Id.eq(session))
                .filter(session::Column::RevokedAt.is_null())
        })
        .await?;
    Ok(changed == 1)
}

/// Revokes every live session of `user` except `keep`; returns how many.
pub async fn revoke_all_except<C: ConnectionTrait>(
    db: &Scoped<C>,
    user: Uuid,
    keep: Option<Uuid>,
    reason: &str,
) -> Result<u64> {
    db.update_where::<session::Entity>(|q| {
        let q = q
            .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
            .col_expr(session::Column::RevokeReason, Expr::value(reason))
            .filter(session::Column::UserId.eq(user))
            .filter(session::Column::RevokedAt.is_null());
        match keep {
            Some(keep) => q.filter(session::Column::Id.ne(keep)),
            None => q,
        }
    })
    .await
}

/// A live session: not revoked, not past its absolute end.
pub fn is_live(session: &session::Model, now: DateTime<Utc>) -> bool {
    session.revoked_at.is_none() && session.expires_at > now
}

/// Live sessions of `user`, newest first.
pub async fn live_sessions(db: &TenantDb, user: Uuid) -> Result<Vec<session::Model>> {
    let now = Utc::now();
    db.list::<session::Entity>(|q| {
        q.filter(session::Column::UserId.eq(user))
            .filter(session::Column::RevokedAt.is_null())
            .filter(session::Column::ExpiresAt.gt(now))
            .order_by_desc(session::Column::Id)
    })
    .await
}

/// The counter row of `user` for `kind`.
fn failure_row(user: Uuid, kind: FailureKind) -> Condition {
    Condition::all()
        .add(auth_failure::Column::UserId.eq(user))
        .add(auth_failure::Column::Kind.eq(kind.as_str()))
}

/// When repeated failures lock an account, from config: after `after` failures in
/// `window` the account locks for `first_lock`, and for twice as long at each further
/// `after` failures (at most `max_lock`), for passwords and TOTP codes separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub after: u32,
    pub first_lock: Duration,
    pub max_lock: Duration,
    pub window: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            after: 5,
            first_lock: Duration::minutes(15),
            max_lock: Duration::hours(24),
            window: Duration::hours(24),
        }
    }
}

impl LockoutPolicy {
    /// How long the account locks once `failures` have been counted: none below the
    /// threshold or between its multiples, then `first_lock`, doubled at each further
    /// multiple, at most `max_lock`.
    pub fn lock_for(&self, failures: i32) -> Option<Duration> {
        let after = i32::try_from(self.after.max(1)).unwrap_or(i32::MAX);
        if failures < after || failures % after != 0 {
            return None;
        }
        let doublings = u32::try_from(failures / after - 1).unwrap_or(0).min(20);
        let lock = self
            .first_lock
            .checked_mul(2i32.pow(doublings))
            .unwrap_or(self.max_lock);
        Some(lock.min(self.max_lock))
    }
}

/// Reserves one credential check of `user`'s `kind` before the check is made: a single
/// compare-and-set UPDATE counts it as a failure in advance (and locks the account
/// when that count reaches the threshold), so however many checks race, at most the
/// allowed number are ever made; a locked account answers `RATE_LIMITED` without a
/// check. [`clear_failures`] takes the count back when the check succeeds. Run it on a
/// handle outside the caller's business transaction, so a rollback cannot undo it.
pub(crate) async fn reserve_attempt<C: ConnectionTrait>(
    db: &Scoped<C>,
    policy: &LockoutPolicy,
    user: Uuid,
    kind: FailureKind,
) -> Result<()> {
    // Each lost compare-and-set means another check was reserved; the lock ends the
    // race after at most `after` of them, so this bound is never reached in practice.
    for _ in 0..256 {
        let now = Utc::now();
        let Some(row) = db
            .first::<auth_failure::Entity>(|q| q.filter(failure_row(user, kind)))
            .await?
        else {
            let inserted = db
                .insert(auth_failure::ActiveModel {
                    tenant_id: Set(db.tenant().as_uuid()),
                    user_id: Set(user),
                    kind: Set(kind.as_str().to_owned()),
                    window_started_at: Set(now),
                    failures: Set(0),
                    locked_until: Set(None),
                })
                .await;
            match inserted {
                // A concurrent check created it first: count against that row.
                Ok(_) | Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        };
        if let Some(until) = row.locked_until.filter(|until| *until > now) {
            let secs = (until - now).num_seconds().max(1);
            return Err(Error::RateLimited {
                retry_after_secs: u64::try_from(secs).unwrap_or(1),
            });
        }
        let (failures, window_started_at) = if row.window_started_at < now - policy.window {
            (1, now)
        } else {
            (row.failures.saturating_add(1), row.window_started_at)
        };
        let locked_until = policy.lock_for(failures).map(|lock| now + lock);
        let claimed = db
            .update_where::<auth_failure::Entity>(|q| {
                q.col_expr(auth_failure::Column::Failures, Expr::value(failures))
                    .col_expr(
                        auth_failure::Column::WindowStartedAt,
                        Expr::value(window_started_at),
                    )
                    .col_expr(auth_failure::Column::LockedUntil, Expr::value(locked_until))
                    .filter(failure_row(user, kind))
                    .filter(auth_failure::Column::Failures.eq(row.failures))
            })
            .await?;
        if claimed == 1 {
            return Ok(());
        }
    }
    Err(Error::RateLimited {
        retry_after_secs: 1,
    })
}

/// One counted credential check: reserves it ([`reserve_attempt`] on `counter`, a
/// handle outside any business transaction), runs `check`, and takes the count back
/// when it passes. A check that fails (or errs) stays counted.
pub(crate) async fn counted_check<C, F>(
    counter: &Scoped<C>,
    policy: &LockoutPolicy,
    user: Uuid,
    kind: FailureKind,
    check: F,
) -> Result<bool>
where
    C: ConnectionTrait,
    F: std::future::Future<Output = Result<bool>>,
{
    reserve_attempt(counter, policy, user, kind).await?;
    let passed = check.await?;
    if passed {
        clear_failures(counter, user, kind).await?;
    }
    Ok(passed)
}

/// Checks the signed-in user `who`'s password again before a sensitive change
/// (`purpose` names it): counted against the account as a sign-in is, a failure
/// audited and answered UNAUTHENTICATED "invalid credentials".
pub(crate) async fn confirm_password(
    db: &TenantDb,
    policy: &LockoutPolicy,
    who: &user::Model,
    origin: &Origin,
    presented: SecretString,
    purpose: &'static str,
) -> Result<()> {
    let verified = counted_check(
        db,
        policy,
        who.id,
        FailureKind::Password,
        password::verify(presented, who.password_hash.clone()),
    )
    .await?;
    if verified {
        return Ok(());
    }
    audit_failed_check(db, who.id, origin, AuditAction::AuthPasswordFailed, purpose).await?;
    Err(Error::InvalidCredentials)
}

/// Audits a failed credential check of a signed-in user (`what`: which secret, and
/// `purpose`: which operation asked for it).
pub(crate) async fn audit_failed_check<C: ConnectionTrait>(
    db: &Scoped<C>,
    user: Uuid,
    origin: &Origin,
    action: AuditAction,
    purpose: &'static str,
) -> Result<()> {
    audit::record(
        db,
        audit::Entry {
            actor: Actor::User(user),
            action,
            subject: Some(("user", user)),
            details: json!({ "purpose": purpose }),
            origin,
        },
    )
    .await
}

pub(crate) async fn clear_failures<C: ConnectionTrait>(
    db: &Scoped<C>,
    user: Uuid,
    kind: FailureKind,
) -> Result<()> {
    db.delete_where::<auth_failure::Entity>(|q| q.filter(failure_row(user, kind)))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_start_at_fifteen_minutes_and_double() {
        let p = LockoutPolicy::default();
        assert_eq!(p.lock_for(4), None);
        assert_eq!(p.lock_for(5), Some(Duration::minutes(15)));
        assert_eq!(p.lock_for(6), None);
        assert_eq!(p.lock_for(10), Some(Duration::minutes(30)));
        assert_eq!(p.lock_for(15), Some(Duration::hours(1)));
        assert_eq!(p.lock_for(500), Some(Duration::hours(24)));
        // In a day of trying, at most 5 checks per lock: 15+30+60+120+240+480 minutes
        // of locks leave room for fewer than 40 checks.
        let mut minutes = 0;
        let mut failures = 0;
        while minutes < 24 * 60 {
            failures += 1;
            if let Some(lock) = p.lock_for(failures) {
                minutes += lock.num_minutes();
            }
        }
        assert!(failures <= 40, "{failures} checks in a day");
    }

    #[test]
    fn refresh_tokens_name_their_tenant() {
        let tenant = Uuid::now_v7();
        let token = format!("sq_rt_{}_{}", tenant.simple(), "ab".repeat(32));
        assert_eq!(
            tenant_of_refresh_token(&token),
            Some(TenantId::from_uuid(tenant))
        );
        assert_eq!(tenant_of_refresh_token("sq_rt_nope_x"), None);
        assert_eq!(tenant_of_refresh_token("something else"), None);
    }
}
