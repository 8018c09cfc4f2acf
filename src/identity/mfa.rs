//! TOTP (RFC 6238): enrolment, activation, single-use codes, recovery codes, the
//! second step of sign-in, and tenant MFA policy. Plain functions over the database.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use chrono::{Duration, Utc};
use rand::RngCore;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, QueryFilter,
    sea_query::Expr,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use totp_rs::{Builder, Totp};
use uuid::Uuid;

use super::rules::{
    FailureKind, IssuedSession, LockoutPolicy, audit_failed_check, counted_check, open_session,
    sha256_hex,
};
use crate::kinds::AuditAction;
use crate::{
    audit::{self, Actor, Origin},
    auth::{Role, TokenService, crypto::Sealer},
    db::{Scoped, TenantDb},
    entity::{mfa_challenge, mfa_totp, recovery_code, tenant_mfa_policy, user},
    error::{Error, Result},
    ids::{TenantId, new_id},
};

pub const ISSUER: &str = "Sequestra";
pub const RECOVERY_CODES: usize = 10;
const CHALLENGE_TTL: Duration = Duration::minutes(5);
const CHALLENGE_PREFIX: &str = "sq_mfa_";

/// What enrolment shows the user once: the seed, as text, URI and QR code.
pub struct Enrolment {
    pub secret_base32: SecretString,
    pub otpauth_uri: SecretString,
    /// `data:image/svg+xml;base64,…`
    pub qr_code: SecretString,
}

fn totp(seed: Vec<u8>, account: &str) -> Result<Totp> {
    Builder::new()
        .with_secret(seed)
        .with_account_name(account)
        .with_issuer(Some(ISSUER))
        .build()
        .map_err(|e| Error::internal(anyhow::anyhow!("totp: {e:?}")))
}

fn now_secs() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap_or(0)
}

/// Starts (or restarts) an enrolment with a fresh 160-bit seed, sealed at rest.
/// An active enrolment must be disabled first.
pub async fn start_enrolment<C: ConnectionTrait>(
    db: &Scoped<C>,
    sealer: &Sealer,
    who: &user::Model,
) -> Result<Enrolment> {
    Ok(enrol(db, sealer, who).await?.0)
}

/// Enrols and activates `who` at once, for the demo seed (which acts as its own
/// authenticator). Returns the seed in base32 for the printed credentials.
pub async fn enrol_activated<C: ConnectionTrait>(
    db: &Scoped<C>,
    sealer: &Sealer,
    who: &user::Model,
    origin: &Origin,
) -> Result<SecretString> {
    let (enrolment, totp) = enrol(db, sealer, who).await?;
    let code = totp.generate(now_secs()).to_string();
    activate(db, sealer, who, &code, origin)
        .await?
        .ok_or_else(|| Error::internal(anyhow::anyhow!("a fresh code did not activate")))?;
    Ok(enrolment.secret_base32)
}

async fn enrol<C: ConnectionTrait>(
    db: &Scoped<C>,
    sealer: &Sealer,
    who: &user::Model,
) -> Result<(Enrolment, Totp)> {
    if let Some(existing) = db.find_by_id::<mfa_totp::Entity>(who.id).await? {
        if existing.enabled_at.is_some() {
            return Err(Error::conflict(
                "MFA_ALREADY_ENABLED",
                "MFA is already enabled; disable it first",
            ));
        }
        db.delete_where::<mfa_totp::Entity>(|q| q.filter(mfa_totp::Column::UserId.eq(who.id)))
            .await?;
    }
    let mut seed = vec![0u8; 20];
    rand::rng().fill_bytes(&mut seed);
    let sealed = sealer.seal(&seed, who.id.as_bytes())?;
    db.insert(mfa_totp::ActiveModel {
        tenant_id: Set(db.tenant().as_uuid()),
        user_id: Set(who.id),
        secret_sealed: Set(sealed),
        enabled_at: Set(None),
        last_used_step: Set(None),
        created_at: Set(Utc::now()),
    })
    .await?;
    let totp = totp(seed, &who.email)?;
    let uri = totp
        .to_url()
        .map_err(|e| Error::internal(anyhow::anyhow!("otpauth uri: {e:?}")))?;
    let qr = qrcode::QrCode::new(uri.as_bytes()).map_err(Error::internal)?;
    let svg = qr
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build();
    let enrolment = Enrolment {
        secret_base32: SecretString::from(totp.secret().to_base32()),
        otpauth_uri: SecretString::from(uri),
        qr_code: SecretString::from(format!("data:image/svg+xml;base64,{}", B64.encode(svg))),
    };
    Ok((enrolment, totp))
}

/// The step `code` matches (±1 step of skew), if any.
fn matching_step(
    sealer: &Sealer,
    row: &mfa_totp::Model,
    who: &user::Model,
    code: &str,
) -> Result<Option<i64>> {
    let seed = sealer
        .open(&row.secret_sealed, who.id.as_bytes())
        .map_err(|_| {
            // Sealed under a key the server no longer holds (SEQUESTRA_MFA_KEYS changed
            // without keeping the old key for decryption): not the caller's fault, and
            // not a server failure to hide behind INTERNAL either.
            tracing::warn!(
                user = %who.id,
                key = row.secret_sealed.split('.').nth(1).unwrap_or_default(),
                "a TOTP seed cannot be opened with the configured SEQUESTRA_MFA_KEYS"
            );
            Error::conflict(
                "MFA_SEED_UNREADABLE",
                "this MFA enrolment was sealed with a key the server no longer has \
                 (SEQUESTRA_MFA_KEYS changed): use a recovery code, or ask an administrator",
            )
        })?;
    let totp = totp(seed, &who.email)?;
    Ok(totp
        .check(code.trim(), now_secs())
        .and_then(|step| i64::try_from(step).ok()))
}

/// Accepts `code` once: the matched step is stored with a compare-and-set, so the same
/// code (or an older one) never works again, even from two requests at once.
async fn consume_code<C: ConnectionTrait>(
    db: &Scoped<C>,
    sealer: &Sealer,
    who: &user::Model,
    code: &str,
    require_enabled: bool,
) -> Result<bool> {
    let Some(row) = db.find_by_id::<mfa_totp::Entity>(who.id).await? else {
        return Ok(false);
    };
    if row.enabled_at.is_some() != require_enabled {
        return Ok(false);
    }
    let Some(step) = matching_step(sealer, &row, who, code)? else {
        return Ok(false);
    };
    let claimed = db
        .update_where::<mfa_totp::Entity>(|q| {
            let q = q
                .col_expr(mfa_totp::Column::LastUsedStep, Expr::value(step))
                .filter(mfa_totp::Column::UserId.eq(who.id))
                .filter(
                    mfa_totp::Column::LastUsedStep
                        .is_null()
                        .or(mfa_totp::Column::LastUsedStep.lt(step)),
                );
            if require_enabled {
                q.filter(mfa_totp::Column::EnabledAt.is_not_null())
            } else {
                q.col_expr(mfa_totp::Column::EnabledAt, Expr::value(Utc::now()))
                    .filter(mfa_totp::Column::EnabledAt.is_null())
            }
        })
        .await?;
    Ok(claimed == 1)
}

/// CONFLICT unless `who` has a pending (not yet active) enrolment.
pub async fn ensure_enrolling<C: ConnectionTrait>(db: &Scoped<C>, who: Uuid) -> Result<()> {
    match db.find_by_id::<mfa_totp::Entity>(who).await? {
        None => Err(Error::conflict("MFA_NOT_ENROLLING", "start with enrollMfa")),
        Some(row) if row.enabled_at.is_some() => Err(Error::conflict(
            "MFA_ALREADY_ENABLED",
            "MFA is already enabled",
        )),
        Some(_) => Ok(()),
    }
}

/// Activates a pending enrolment with a first valid code; returns fresh recovery codes,
/// or `None` when the code does not match (nothing changed). The caller counts the
/// check against the account (see `activateMfa`).
pub async fn activate<C: ConnectionTrait>(
    db: &Scoped<C>,
    sealer: &Sealer,
    who: &user::Model,
    code: &str,
    origin: &Origin,
) -> Result<Option<Vec<SecretString>>> {
    ensure_enrolling(db, who.id).await?;
    if !consume_code(db, sealer, who, code, false).await? {
        return Ok(None);
    }
    let codes = replace_recovery_codes(db, who.id).await?;
    audit::record(
        db,
        audit::Entry {
            actor: Actor::User(who.id),
            action: AuditAction::AuthMfaEnabled,
            subject: Some(("user", who.id)),
            details: json!({}),
            origin,
        },
    )
    .await?;
    Ok(Some(codes))
}

/// True when `who` has an active TOTP enrolment.
pub async fn is_enabled<C: ConnectionTrait>(db: &Scoped<C>, who: Uuid) -> Result<bool> {
    Ok(db
        .find_by_id::<mfa_totp::Entity>(who)
        .await?
        .is_some_and(|r| r.enabled_at.is_some()))
}

/// Verifies a TOTP code of an enabled enrolment. The check is counted against the
/// account before it is made (locked after a handful in a window, however many race)
/// and a failure is audited with `purpose`.
pub async fn verify_code(
    db: &TenantDb,
    lockout: &LockoutPolicy,
    sealer: &Sealer,
    who: &user::Model,
    code: &str,
    origin: &Origin,
    purpose: &'static str,
) -> Result<()> {
    let valid = counted_check(
        db,
        lockout,
        who.id,
        FailureKind::Totp,
        consume_code(db, sealer, who, code, true),
    )
    .await?;
    if valid {
        Ok(())
    } else {
        audit_failed_check(db, who.id, origin, AuditAction::AuthMfaFailed, purpose).await?;
        Err(Error::InvalidCredentials)
    }
}

fn normalize_recovery(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn recovery_hash(user: Uuid, code: &str) -> String {
    sha256_hex(&format!("{}:{}", user.simple(), normalize_recovery(code)))
}

/// Ten new single-use codes of 80 bits (`XXXX-XXXX-XXXX-XXXX`, base32); the old ones
/// stop working.
pub async fn replace_recovery_codes<C: ConnectionTrait>(
    db: &Scoped<C>,
    who: Uuid,
) -> Result<Vec<SecretString>> {
    db.delete_where::<recovery_code::Entity>(|q| q.filter(recovery_code::Column::UserId.eq(who)))
        .await?;
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let mut raw = [0u8; 10];
        rand::rng().fill_bytes(&mut raw);
        let text = data_encoding::BASE32_NOPAD.encode(&raw);
        let code = text
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-");
        db.insert(recovery_code::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(db.tenant().as_uuid()),
            user_id: Set(who),
            code_hash: Set(recovery_hash(who, &code)),
            created_at: Set(Utc::now()),
            used_at: Set(None),
        })
        .await?;
        codes.push(SecretString::from(code));
    }
    Ok(codes)
}

/// Uses a recovery code once (compare-and-set on `used_at`).
async fn consume_recovery_code<C: ConnectionTrait>(
    db: &Scoped<C>,
    who: Uuid,
    code: &str,
) -> Result<bool> {
    let hash = recovery_hash(who, code);
    let used = db
        .update_where::<recovery_code::Entity>(|q| {
            q.col_expr(recovery_code::Column::UsedAt, Expr::value(Utc::now()))
                .filter(recovery_code::Column::UserId.eq(who))
                .filter(recovery_code::Column::CodeHash.eq(hash))
                .filter(recovery_code::Column::UsedAt.is_null())
        })
        .await?;
    Ok(used == 1)
}

/// Removes the enrolment and its recovery codes.
pub async fn disable<C: ConnectionTrait>(db: &Scoped<C>, who: Uuid, origin: &Origin) -> Result<()> {
    db.delete_where::<recovery_code::Entity>(|q| q.filter(recovery_code::Column::UserId.eq(who)))
        .await?;
    db.delete_where::<mfa_totp::Entity>(|q| q.filter(mfa_totp::Column::UserId.eq(who)))
        .await?;
    audit::record(
        db,
        audit::Entry {
            actor: Actor::User(who),
            action: AuditAction::AuthMfaDisabled,
            subject: Some(("user", who)),
            details: json!({}),
            origin,
        },
    )
    .await?;
    crate::notify::enqueue(
        db,
        who,
        crate::notify::NoticeKind::MfaDisabled,
        crate::notify::security_data(origin.ip.as_deref()),
    )
    .await
}

/// The first step of an MFA sign-in: an opaque challenge naming its tenant.
pub async fn create_challenge<C: ConnectionTrait>(
    db: &Scoped<C>,
    who: Uuid,
) -> Result<SecretString> {
    let mut random = [0u8; 32];
    rand::rng().fill_bytes(&mut random);
    let token = format!(
        "{CHALLENGE_PREFIX}{}_{}",
        db.tenant().as_uuid().simple(),
        hex::encode(random)
    );
    let now = Utc::now();
    db.insert(mfa_challenge::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(db.tenant().as_uuid()),
        user_id: Set(who),
        token_hash: Set(sha256_hex(&token)),
        created_at: Set(now),
        expires_at: Set(now + CHALLENGE_TTL),
        consumed_at: Set(None),
    })
    .await?;
    Ok(SecretString::from(token))
}

/// The second factor offered with a challenge.
pub enum SecondFactor {
    Code(String),
    RecoveryCode(String),
}

/// Completes an MFA sign-in. Failures count against the account like password ones.
pub async fn complete_challenge(
    db: &DatabaseConnection,
    bus: Option<crate::events::Bus>,
    tokens: &TokenService,
    sealer: &Sealer,
    origin: &Origin,
    challenge: SecretString,
    factor: SecondFactor,
) -> Result<IssuedSession> {
    let challenge = challenge.expose_secret();
    let tenant = challenge
        .strip_prefix(CHALLENGE_PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .and_then(|(tenant, _)| Uuid::try_parse(tenant).ok())
        .map(TenantId::from_uuid)
        .ok_or(Error::InvalidCredentials)?;
    let scoped = TenantDb::new(db.clone(), tenant).with_bus(bus);
    let hash = sha256_hex(challenge);
    let now = Utc::now();
    let row = scoped
        .first::<mfa_challenge::Entity>(|q| q.filter(mfa_challenge::Column::TokenHash.eq(hash)))
        .await?
        .filter(|c| c.consumed_at.is_none() && c.expires_at > now)
        .ok_or(Error::InvalidCredentials)?;
    let who = scoped
        .find_by_id::<user::Entity>(row.user_id)
        .await?
        .filter(|u| u.is_active)
        .ok_or(Error::InvalidCredentials)?;

    let used_recovery = match &factor {
        SecondFactor::Code(code) => {
            verify_code(
                &scoped,
                tokens.lockout(),
                sealer,
                &who,
                code,
                origin,
                "sign_in",
            )
            .await?;
            false
        }
        SecondFactor::RecoveryCode(code) => {
            let valid = counted_check(
                &scoped,
                tokens.lockout(),
                who.id,
                FailureKind::Totp,
                consume_recovery_code(&scoped, who.id, code),
            )
            .await?;
            if !valid {
                audit_failed_check(
                    &scoped,
                    who.id,
                    origin,
                    AuditAction::AuthMfaFailed,
                    "sign_in",
                )
                .await?;
                return Err(Error::InvalidCredentials);
            }
            true
        }
    };

    let txn = scoped.begin().await?;
    let consumed = txn
        .update_where::<mfa_challenge::Entity>(|q| {
            q.col_expr(mfa_challenge::Column::ConsumedAt, Expr::value(now))
                .filter(mfa_challenge::Column::Id.eq(row.id))
                .filter(mfa_challenge::Column::ConsumedAt.is_null())
        })
        .await?;
    if consumed != 1 {
        return Err(Error::InvalidCredentials);
    }
    let issued = open_session(&txn, tokens, who.id, origin, true).await?;
    if used_recovery {
        audit::record(
            &txn,
            audit::Entry {
                actor: Actor::User(who.id),
                action: AuditAction::AuthMfaRecoveryCodeUsed,
                subject: Some(("user", who.id)),
                details: json!({}),
                origin,
            },
        )
        .await?;
    }
    audit::record(
        &txn,
        audit::Entry {
            actor: Actor::User(who.id),
            action: AuditAction::AuthSignInSucceeded,
            subject: Some(("session", issued.session_id)),
            details: json!({ "mfa": true }),
            origin,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(issued)
}

/// Roles whose users must have MFA in this tenant.
pub async fn required_roles<C: ConnectionTrait>(db: &Scoped<C>) -> Result<Vec<Role>> {
    Ok(db
        .list::<tenant_mfa_policy::Entity>(|q| q)
        .await?
        .into_iter()
        .map(|p| p.role)
        .collect())
}

/// Replaces the tenant's MFA policy.
pub async fn set_required_roles<C: ConnectionTrait>(
    db: &Scoped<C>,
    actor: Uuid,
    roles: &[Role],
    origin: &Origin,
) -> Result<()> {
    db.delete_where::<tenant_mfa_policy::Entity>(|q| q).await?;
    let mut unique: Vec<Role> = roles.to_vec();
    unique.sort_by_key(|r| r.as_str());
    unique.dedup();
    for role in &unique {
        db.insert(tenant_mfa_policy::ActiveModel {
            tenant_id: Set(db.tenant().as_uuid()),
            role: Set(*role),
            created_at: Set(Utc::now()),
        })
        .await?;
    }
    audit::record(
        db,
        audit::Entry {
            actor: Actor::User(actor),
            action: AuditAction::TenantMfaPolicyChanged,
            subject: None,
            details: json!({ "roles": unique }),
            origin,
        },
    )
    .await
}

/// Records a fresh MFA verification on `session` (step-up).
pub async fn mark_session_verified<C: ConnectionTrait>(
    db: &Scoped<C>,
    session: Uuid,
) -> Result<()> {
    db.update_where::<crate::entity::session::Entity>(|q| {
        q.col_expr(
            crate::entity::session::Column::MfaVerifiedAt,
            Expr::value(Utc::now()),
        )
        .filter(crate::entity::session::Column::Id.eq(session))
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_normalize() {
        let user = Uuid::now_v7();
        assert_eq!(
            recovery_hash(user, "abcd-efgh-ijkl-mnop"),
            recovery_hash(user, "ABCDEFGHIJKLMNOP")
        );
        assert_ne!(
            recovery_hash(user, "ABCD"),
            recovery_hash(Uuid::now_v7(), "ABCD")
        );
    }
}
