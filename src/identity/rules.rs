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

/// How long a session lives at most, however often it is refreshed.
pub const SESSION_LIFETIME: Duration = Duration::days(30);
/// Failures in one window before the account locks.
pub const FAILURES_BEFORE_LOCK: i32 = 5;
/// The window failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::hours(1);

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
    fn as_str(self) -> &'static str {
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

/// `email` + `password` in tenant `slug`. An unknown tenant, an unknown email, an
/// inactive user and a wrong password all take the same path (a dummy hash is
/// verified when there is no user) and get the same answer.
pub async fn sign_in(
    db: &DatabaseConnection,
    tokens: &TokenService,
    origin: &Origin,
    slug: &str,
    email: &str,
    secret: SecretString,
) -> Result<SignInOutcome> {
    let tenant = find_tenant_by_slug(db, slug).await?;
    let email = Email::parse(email).ok();
    let scoped = tenant.map(|t| TenantDb::new(db.clone(), TenantId::from_uuid(t.id)));
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

    ensure_not_locked(scoped, user.id, FailureKind::Password).await?;
    if !password::verify(secret.clone(), user.password_hash.clone()).await? {
        record_failure(scoped, user.id, FailureKind::Password).await?;
        audit_failure(scoped, Some(user.id), origin, "wrong_password").await?;
        return Err(Error::InvalidCredentials);
    }
    clear_failures(scoped, user.id, FailureKind::Password).await?;
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
            action: "auth.sign_in.succeeded",
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
            action: "auth.sign_in.failed",
            subject: user.map(|id| ("user", id)),
            details: json!({ "reason": reason }),
            origin,
        },
    )
    .await
}

/// Creates a session for `user` with its first refresh token and an access token.
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
            expires_at: Set(now + SESSION_LIFETIME),
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
    let mut random = [0u8; 32];
    rand::rng().fill_bytes(&mut random);
    let token = format!(
        "{REFRESH_PREFIX}{}_{}",
        db.tenant().as_uuid().simple(),
        hex::encode(random)
    );
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
    let rest = token.strip_prefix(REFRESH_PREFIX)?;
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
    if session.revoked_at.is_some() || session.expires_at <= now {
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
                action: "auth.refresh.reused",
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

/// Refuses with RATE_LIMITED while the account is locked for `kind`.
pub(super) async fn ensure_not_locked<C: ConnectionTrait>(
    db: &Scoped<C>,
    user: Uuid,
    kind: FailureKind,
) -> Result<()> {
    let row = db
        .first::<auth_failure::Entity>(|q| q.filter(failure_row(user, kind)))
        .await?;
    let now = Utc::now();
    if let Some(until) = row
        .and_then(|r| r.locked_until)
        .filter(|until| *until > now)
    {
        let secs = (until - now).num_seconds().max(1);
        return Err(Error::RateLimited {
            retry_after_secs: u64::try_from(secs).unwrap_or(1),
        });
    }
    Ok(())
}

/// How long the account locks after `failures` failures in the window: none below
/// the threshold, then 1, 2, 4 … minutes at each further multiple, at most an hour.
/// At most 5 failures per lock means far fewer than 100 failures an hour.
pub fn lock_duration(failures: i32) -> Option<Duration> {
    if failures < FAILURES_BEFORE_LOCK || failures % FAILURES_BEFORE_LOCK != 0 {
        return None;
    }
    let step = u32::try_from(failures / FAILURES_BEFORE_LOCK - 1)
        .unwrap_or(0)
        .min(6);
    Some(Duration::minutes(i64::from(2u32.pow(step))).min(Duration::hours(1)))
}

/// Counts one failure with a single atomic statement (no read-then-write), starting a
/// new window when the old one is over, and locks the account at the threshold.
pub(super) async fn record_failure<C: ConnectionTrait>(
    db: &Scoped<C>,
    user: Uuid,
    kind: FailureKind,
) -> Result<()> {
    let now = Utc::now();
    let window_start = now - FAILURE_WINDOW;
    // Create the row if this is the first failure ever (a duplicate insert from a
    // concurrent failure is harmless: the update below counts both).
    let exists = db
        .count::<auth_failure::Entity>(|q| q.filter(failure_row(user, kind)))
        .await?;
    if exists == 0 {
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
            Ok(_) | Err(Error::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    // Old window: restart at 1; current window: add 1.
    db.update_where::<auth_failure::Entity>(|q| {
        q.col_expr(
            auth_failure::Column::Failures,
            Expr::case(
                Expr::col(auth_failure::Column::WindowStartedAt).lt(window_start),
                1,
            )
            .finally(Expr::col(auth_failure::Column::Failures).add(1))
            .into(),
        )
        .col_expr(
            auth_failure::Column::WindowStartedAt,
            Expr::case(
                Expr::col(auth_failure::Column::WindowStartedAt).lt(window_start),
                now,
            )
            .finally(Expr::col(auth_failure::Column::WindowStartedAt))
            .into(),
        )
        .filter(failure_row(user, kind))
    })
    .await?;
    let row = db
        .first::<auth_failure::Entity>(|q| q.filter(failure_row(user, kind)))
        .await?
        .ok_or(Error::NotFound)?;
    if let Some(lock) = lock_duration(row.failures) {
        db.update_where::<auth_failure::Entity>(|q| {
            q.col_expr(auth_failure::Column::LockedUntil, Expr::value(now + lock))
                .filter(failure_row(user, kind))
        })
        .await?;
    }
    Ok(())
}

pub(super) async fn clear_failures<C: ConnectionTrait>(
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
    fn locks_grow_and_stay_under_the_asvs_ceiling() {
        assert_eq!(lock_duration(4), None);
        assert_eq!(lock_duration(5), Some(Duration::minutes(1)));
        assert_eq!(lock_duration(6), None);
        assert_eq!(lock_duration(10), Some(Duration::minutes(2)));
        assert_eq!(lock_duration(15), Some(Duration::minutes(4)));
        assert_eq!(lock_duration(500), Some(Duration::hours(1)));
        // Within one hour: locks of 1+2+4+8+16+32 minutes allow at most 35 failures.
        let mut minutes = 0;
        let mut failures = 0;
        while minutes < 60 {
            failures += 1;
            if let Some(lock) = lock_duration(failures) {
                minutes += lock.num_minutes();
            }
        }
        assert!(failures < 100, "{failures} failures in an hour");
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
