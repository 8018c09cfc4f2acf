//! Password reset by mail.
//!
//! `request` never tells whether an account exists: the edge answers the same at
//! once for any input, and the work (finding the user, minting a token, writing the
//! mail into the outbox) runs after the answer left. The token is
//! `sq_pr_<tenant>_<256 random bits>`, stored as a SHA-256 only, good for
//! [`MailConfig::reset_token_ttl`] and used by one conditional UPDATE, so it works
//! once. `reset` applies the password policy before it spends the token, then in one
//! transaction: the new hash, every session (and so every refresh token) ended, every
//! other reset token of the user spent, the password failure counter cleared, the
//! audit row and a security notice.

use chrono::Utc;
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, QueryFilter, sea_query::Expr};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::rules::{FailureKind, sha256_hex, tenant_of_token, tenant_token};
use crate::{
    accounts::rules::{find_tenant_by_slug, set_password_hash},
    audit::{self, Actor, Origin},
    auth::password,
    config::MailConfig,
    db::TenantDb,
    domain::Email,
    entity::{auth_failure, mail_token, user},
    error::{Error, Result},
    events::Bus,
    ids::{TenantId, new_id},
    kinds::AuditAction,
    notify::{self, NoticeKind},
};

const PREFIX: &str = "sq_pr_";
const PURPOSE: &str = "PASSWORD_RESET";

fn invalid() -> Error {
    Error::bad_field("token", "the reset token is invalid, used or expired")
}

/// Mails a reset token to `email` in tenant `slug` if such an active user exists and
/// has not had [`MailConfig::resets_per_account_per_hour`] already. Whatever happens,
/// the caller learns nothing.
pub async fn request(
    db: &DatabaseConnection,
    bus: Option<Bus>,
    config: &MailConfig,
    origin: &Origin,
    slug: &str,
    email: &str,
) -> Result<()> {
    let (Some(tenant), Ok(email)) = (find_tenant_by_slug(db, slug).await?, Email::parse(email))
    else {
        return Ok(());
    };
    let scoped = TenantDb::new(db.clone(), TenantId::from_uuid(tenant.id)).with_bus(bus);
    let Some(found) = scoped
        .first::<user::Entity>(|q| q.filter(user::Column::Email.eq(email.as_str())))
        .await?
        .filter(|u| u.is_active)
    else {
        return Ok(());
    };
    let txn = scoped.begin().await?;
    // Requests for one account are counted one after another (the user's row lock on
    // PostgreSQL; SQLite's write lock), so the limit is exact across processes.
    txn.get_for_update::<user::Entity>(found.id).await?;
    let now = Utc::now();
    let recent = txn
        .count::<mail_token::Entity>(|q| {
            q.filter(mail_token::Column::UserId.eq(found.id))
                .filter(mail_token::Column::Purpose.eq(PURPOSE))
                .filter(mail_token::Column::CreatedAt.gt(now - chrono::Duration::hours(1)))
        })
        .await?;
    if recent >= u64::from(config.resets_per_account_per_hour) {
        txn.rollback().await?;
        tracing::info!(user = %found.id, "password reset not mailed: too many this hour");
        return Ok(());
    }
    let token = tenant_token(PREFIX, scoped.tenant());
    let ttl = chrono::Duration::from_std(config.reset_token_ttl).map_err(Error::internal)?;
    txn.insert(mail_token::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(scoped.tenant().as_uuid()),
        user_id: Set(found.id),
        purpose: Set(PURPOSE.to_owned()),
        new_email: Set(None),
        token_hash: Set(sha256_hex(&token)),
        expires_at: Set(now + ttl),
        used_at: Set(None),
        created_at: Set(now),
    })
    .await?;
    audit::record(
        &txn,
        audit::Entry {
            actor: Actor::System,
            action: AuditAction::UserPasswordResetRequested,
            subject: Some(("user", found.id)),
            details: json!({}),
            origin,
        },
    )
    .await?;
    let link = config
        .app_url
        .as_ref()
        .map(|app| format!("{app}/reset-password#token={token}"));
    notify::enqueue(
        &txn,
        found.id,
        NoticeKind::PasswordReset,
        json!({ "token": token, "link": link, "minutes": ttl.num_minutes() }),
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Sets a new password with a reset token; answers how many sessions it ended.
pub async fn reset(
    db: &DatabaseConnection,
    bus: Option<Bus>,
    origin: &Origin,
    token: SecretString,
    new_password: SecretString,
) -> Result<u64> {
    let presented = token.expose_secret();
    let tenant = tenant_of_token(PREFIX, presented).ok_or_else(invalid)?;
    let scoped = TenantDb::new(db.clone(), tenant).with_bus(bus);
    let hash = sha256_hex(presented);
    let now = Utc::now();
    let row = scoped
        .first::<mail_token::Entity>(|q| {
            q.filter(mail_token::Column::TokenHash.eq(hash.as_str()))
                .filter(mail_token::Column::Purpose.eq(PURPOSE))
        })
        .await?
        .filter(|t| t.used_at.is_none() && t.expires_at > now)
        .ok_or_else(invalid)?;
    let who = scoped
        .find_by_id::<user::Entity>(row.user_id)
        .await?
        .filter(|u| u.is_active)
        .ok_or_else(invalid)?;
    crate::auth::policy::check_password(new_password.expose_secret(), &who.email)?;
    let new_hash = password::hash(new_password).await?;

    let txn = scoped.begin().await?;
    let spent = txn
        .update_where::<mail_token::Entity>(|q| {
            q.col_expr(mail_token::Column::UsedAt, Expr::value(Utc::now()))
                .filter(mail_token::Column::Id.eq(row.id))
                .filter(mail_token::Column::UsedAt.is_null())
                .filter(mail_token::Column::ExpiresAt.gt(Utc::now()))
        })
        .await?;
    if spent == 0 {
        // Used (or expired) between the look and now.
        txn.rollback().await?;
        return Err(invalid());
    }
    set_password_hash(&txn, who.id, new_hash).await?;
    let ended = super::rules::revoke_all_except(&txn, who.id, None, "PASSWORD_RESET").await?;
    txn.update_where::<mail_token::Entity>(|q| {
        q.col_expr(mail_token::Column::UsedAt, Expr::value(Utc::now()))
            .filter(mail_token::Column::UserId.eq(who.id))
            .filter(mail_token::Column::Purpose.eq(PURPOSE))
            .filter(mail_token::Column::UsedAt.is_null())
    })
    .await?;
    txn.delete_where::<auth_failure::Entity>(|q| {
        q.filter(auth_failure::Column::UserId.eq(who.id))
            .filter(auth_failure::Column::Kind.eq(FailureKind::Password.as_str()))
    })
    .await?;
    audit::record(
        &txn,
        audit::Entry {
            actor: Actor::User(who.id),
            action: AuditAction::UserPasswordReset,
            subject: Some(("user", who.id)),
            details: json!({ "sessionsEnded": ended }),
            origin,
        },
    )
    .await?;
    let mut notice = notify::security_data(origin.ip.as_deref());
    notice["how"] = json!("reset");
    notify::enqueue(&txn, who.id, NoticeKind::PasswordChanged, notice).await?;
    txn.commit().await?;
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_token_names_its_tenant_and_nothing_else_does() {
        let tenant = TenantId::from_uuid(uuid::Uuid::now_v7());
        let token = tenant_token(PREFIX, tenant);
        assert_eq!(tenant_of_token(PREFIX, &token), Some(tenant));
        // A refresh token is not a reset token.
        let refresh = tenant_token("sq_rt_", tenant);
        assert_eq!(tenant_of_token(PREFIX, &refresh), None);
    }
}
