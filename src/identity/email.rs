//! A user's address: verified by a mailed token, changed only once the new address
//! confirmed it.
//!
//! A new user is mailed a verification token (`sq_ev_…`, 7 days); confirming it marks
//! the address verified if it is still the user's. `request_change` (password and a
//! recent step-up, checked by the caller's policy) mails a confirmation token
//! (`sq_ec_…`, 24 hours) to the new address and a security notice to the old one; the
//! address switches only when that token is confirmed. [`confirm`] does both, in the
//! transaction that spends the token (one conditional UPDATE). Tokens are stored as SHA-256 hashes, like the reset's.

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, QueryFilter,
    sea_query::Expr,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use uuid::Uuid;

use super::rules::{sha256_hex, tenant_of_token, tenant_token};
use crate::{
    audit::{self, Actor, Origin},
    config::MailConfig,
    db::{Scoped, TenantDb},
    domain::Email,
    entity::{mail_token, user},
    error::{Error, Result},
    events::Bus,
    ids::new_id,
    kinds::AuditAction,
    notify::{self, NoticeKind},
};

const VERIFY_PREFIX: &str = "sq_ev_";
const VERIFY: &str = "EMAIL_VERIFY";
const VERIFY_HOURS: i64 = 7 * 24;
const CHANGE_PREFIX: &str = "sq_ec_";
const CHANGE: &str = "EMAIL_CHANGE";
const CHANGE_HOURS: i64 = 24;

fn invalid() -> Error {
    Error::bad_field("token", "the token is invalid, used or expired")
}

/// Mints a token for `purpose` proving `address`, stores its hash and mails it.
#[allow(clippy::too_many_arguments)]
async fn mail_token<C: ConnectionTrait>(
    db: &Scoped<C>,
    app_url: Option<&str>,
    user: Uuid,
    prefix: &str,
    purpose: &str,
    hours: i64,
    kind: NoticeKind,
    address: &str,
) -> Result<()> {
    let token = tenant_token(prefix, db.tenant());
    let now = Utc::now();
    db.insert(mail_token::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(db.tenant().as_uuid()),
        user_id: Set(user),
        purpose: Set(purpose.to_owned()),
        new_email: Set(Some(address.to_owned())),
        token_hash: Set(sha256_hex(&token)),
        expires_at: Set(now + chrono::Duration::hours(hours)),
        used_at: Set(None),
        created_at: Set(now),
    })
    .await?;
    let page = if kind == NoticeKind::EmailVerification {
        "verify-email"
    } else {
        "confirm-email"
    };
    let link = app_url.map(|app| format!("{app}/{page}#token={token}"));
    notify::enqueue_to(
        db,
        user,
        kind,
        json!({ "token": token, "link": link, "address": address, "hours": hours }),
        Some(address),
    )
    .await
}

/// Mails `user` a token that verifies `address` (a new user's).
pub async fn send_verification<C: ConnectionTrait>(
    db: &Scoped<C>,
    app_url: Option<&str>,
    user: Uuid,
    address: &str,
) -> Result<()> {
    mail_token(
        db,
        app_url,
        user,
        VERIFY_PREFIX,
        VERIFY,
        VERIFY_HOURS,
        NoticeKind::EmailVerification,
        address,
    )
    .await
}

/// Spends a token of `purpose` (one conditional UPDATE); answers its row.
async fn spend(
    db: &DatabaseConnection,
    bus: Option<Bus>,
    prefix: &str,
    purpose: &str,
    token: &SecretString,
) -> Result<(crate::db::TenantTxn, mail_token::Model)> {
    let presented = token.expose_secret();
    let tenant = tenant_of_token(prefix, presented).ok_or_else(invalid)?;
    let scoped = TenantDb::new(db.clone(), tenant).with_bus(bus);
    let txn = scoped.begin().await?;
    let now = Utc::now();
    let spent = txn
        .update_returning::<mail_token::Entity>(|q| {
            q.col_expr(mail_token::Column::UsedAt, Expr::value(now))
                .filter(mail_token::Column::TokenHash.eq(sha256_hex(presented)))
                .filter(mail_token::Column::Purpose.eq(purpose))
                .filter(mail_token::Column::UsedAt.is_null())
                .filter(mail_token::Column::ExpiresAt.gt(now))
        })
        .await?;
    match spent.into_iter().next() {
        Some(row) => Ok((txn, row)),
        None => {
            txn.rollback().await?;
            Err(invalid())
        }
    }
}

/// Asks to move `user`'s address to `new`: a token to the new address, a notice to the
/// old one. The password and step-up were checked by the caller.
pub async fn request_change(
    db: &TenantDb,
    config: &MailConfig,
    origin: &Origin,
    user_id: Uuid,
    new: &Email,
) -> Result<()> {
    let who = db.get::<user::Entity>(user_id).await?;
    if who.email == new.as_str() {
        return Err(Error::bad_field("newEmail", "this is already your address"));
    }
    let txn = db.begin().await?;
    let taken = txn
        .count::<user::Entity>(|q| q.filter(user::Column::Email.eq(new.as_str())))
        .await?;
    if taken > 0 {
        return Err(Error::conflict(
            "EMAIL_TAKEN",
            "a user with this email already exists",
        ));
    }
    mail_token(
        &txn,
        config.app_url.as_deref(),
        user_id,
        CHANGE_PREFIX,
        CHANGE,
        CHANGE_HOURS,
        NoticeKind::EmailChangeConfirmation,
        new.as_str(),
    )
    .await?;
    let mut notice = notify::security_data(origin.ip.as_deref());
    notice["address"] = json!(new.as_str());
    notify::enqueue_to(
        &txn,
        user_id,
        NoticeKind::EmailChangeRequested,
        notice,
        Some(&who.email),
    )
    .await?;
    audit::record(
        &txn,
        audit::Entry {
            actor: Actor::User(user_id),
            action: AuditAction::UserEmailChangeRequested,
            subject: Some(("user", user_id)),
            details: json!({}),
            origin,
        },
    )
    .await?;
    txn.commit().await
}

/// What a mailed address token confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// The user's address is theirs (`verifyEmail`): verified if it is still theirs.
    Verification,
    /// The new address of a change (`confirmEmailChange`): it becomes the user's,
    /// verified; CONFLICT `EMAIL_TAKEN` when another user took it meanwhile.
    Change,
}

/// Spends a mailed address token and applies what it confirms, in one transaction.
pub async fn confirm(
    db: &DatabaseConnection,
    bus: Option<Bus>,
    origin: &Origin,
    token: SecretString,
    what: Confirm,
) -> Result<()> {
    let (prefix, purpose, action) = match what {
        Confirm::Verification => (VERIFY_PREFIX, VERIFY, AuditAction::UserEmailVerified),
        Confirm::Change => (CHANGE_PREFIX, CHANGE, AuditAction::UserEmailChanged),
    };
    let (txn, row) = spend(db, bus, prefix, purpose, &token).await?;
    let address = row.new_email.unwrap_or_default();
    if what == Confirm::Change {
        let taken = txn
            .count::<user::Entity>(|q| {
                q.filter(user::Column::Email.eq(address.as_str()))
                    .filter(user::Column::Id.ne(row.user_id))
            })
            .await?;
        if taken > 0 {
            txn.rollback().await?;
            return Err(Error::conflict(
                "EMAIL_TAKEN",
                "a user with this email already exists",
            ));
        }
    }
    let now = Utc::now();
    let changed = txn
        .update_where::<user::Entity>(|q| {
            let q = q
                .col_expr(user::Column::EmailVerifiedAt, Expr::value(now))
                .filter(user::Column::Id.eq(row.user_id))
                .filter(user::Column::IsActive.eq(true));
            match what {
                // Only if the address is still the one the mail went to.
                Confirm::Verification => q.filter(user::Column::Email.eq(address.as_str())),
                Confirm::Change => q
                    .col_expr(user::Column::Email, Expr::value(address.as_str()))
                    .col_expr(user::Column::UpdatedAt, Expr::value(now)),
            }
        })
        .await?;
    if changed == 0 {
        // The address changed, or the user was deactivated, since the mail left.
        txn.rollback().await?;
        return Err(invalid());
    }
    audit::record(
        &txn,
        audit::Entry {
            actor: Actor::User(row.user_id),
            action,
            subject: Some(("user", row.user_id)),
            details: json!({}),
            origin,
        },
    )
    .await?;
    txn.commit().await
}
