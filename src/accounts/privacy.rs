//! What the system holds about a person, and how it forgets them (GDPR).
//!
//! [`export`] gathers everything about one user into a JSON document: the profile,
//! roles, MFA state, sessions, the escrows, mandates and payments they are party to,
//! their notifications and settings, and the audit entries by or about them.
//!
//! [`erase`] anonymizes a user and keeps what a payment system must keep: amounts, the
//! ledger, business rows and the audit log stay, pointing at the user's id, which no
//! longer leads to a person (the address becomes `erased+<id>@erased.invalid`, the
//! password unusable, the account inactive). Everything personal that is not a record
//! of money goes: sessions' addresses and devices, MFA secrets and recovery codes,
//! mailed tokens, notifications and settings, failure counters. Refused (CONFLICT
//! `FUNDS_IN_FLIGHT`) while the person has money moving: an escrow they are party to
//! FUNDED, RELEASABLE or DISPUTED, a mandate of theirs ACTIVE, a payment to or from
//! them PENDING or SENT.

use chrono::Utc;
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, QueryFilter, QueryOrder, sea_query::Expr};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    audit::{self, Actor, Origin},
    db::Scoped,
    entity::{
        audit_log, auth_failure,
        escrow::{self, EscrowStatus},
        mail_token,
        mandate::{self, MandateStatus},
        mfa_challenge, mfa_totp, notification, notification_opt_out,
        payment::{self, PaymentStatus},
        payout, recovery_code, session, transfer, user, user_role,
    },
    error::{Error, Result},
    ids::{Kind, encode},
    kinds::AuditAction,
    notify::amount,
};

/// Every payment `user` is party to: paid to them, paid out of an escrow of theirs,
/// a payout they made, a transfer they sent.
async fn payments_of<C: ConnectionTrait>(
    db: &Scoped<C>,
    user_id: Uuid,
    escrows: &[escrow::Model],
) -> Result<Vec<(payment::Model, &'static str)>> {
    let paid_out: Vec<Uuid> = db
        .list::<payout::Entity>(|q| q.filter(payout::Column::CreatedBy.eq(user_id)))
        .await?
        .into_iter()
        .map(|p| p.payment_id)
        .chain(
            db.list::<transfer::Entity>(|q| q.filter(transfer::Column::SenderId.eq(user_id)))
                .await?
                .into_iter()
                .map(|t| t.payment_id),
        )
        .collect();
    let sent_escrows: Vec<Uuid> = escrows
        .iter()
        .filter(|e| e.sender_id == user_id)
        .map(|e| e.id)
        .collect();
    let rows = db
        .list::<payment::Entity>(|q| {
            q.filter(
                Condition::any()
                    .add(payment::Column::PayeeId.eq(user_id))
                    .add(payment::Column::Id.is_in(paid_out.clone()))
                    .add(payment::Column::EscrowId.is_in(sent_escrows.clone())),
            )
            .order_by_asc(payment::Column::CreatedAt)
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(|p| {
            let role = if p.payee_id == Some(user_id) {
                "PAYEE"
            } else {
                "PAYER"
            };
            (p, role)
        })
        .collect())
}

async fn escrows_of<C: ConnectionTrait>(
    db: &Scoped<C>,
    user_id: Uuid,
) -> Result<Vec<escrow::Model>> {
    db.list::<escrow::Entity>(|q| {
        q.filter(
            Condition::any()
                .add(escrow::Column::SenderId.eq(user_id))
                .add(escrow::Column::ProviderId.eq(user_id)),
        )
        .order_by_asc(escrow::Column::CreatedAt)
    })
    .await
}

async fn mandates_of<C: ConnectionTrait>(
    db: &Scoped<C>,
    user_id: Uuid,
) -> Result<Vec<mandate::Model>> {
    db.list::<mandate::Entity>(|q| {
        q.filter(
            Condition::any()
                .add(mandate::Column::SenderId.eq(user_id))
                .add(mandate::Column::BeneficiaryId.eq(user_id)),
        )
        .order_by_asc(mandate::Column::CreatedAt)
    })
    .await
}

/// Everything held about `user_id`, as one JSON document.
pub async fn export<C: ConnectionTrait>(db: &Scoped<C>, user_id: Uuid) -> Result<Value> {
    let who = db.get::<user::Entity>(user_id).await?;
    let tenant = db.tenant_record().await?;
    let roles = super::rules::roles_of(db, user_id).await?;
    let mfa = db
        .first::<mfa_totp::Entity>(|q| q.filter(mfa_totp::Column::UserId.eq(user_id)))
        .await?;
    let sessions = db
        .list::<session::Entity>(|q| {
            q.filter(session::Column::UserId.eq(user_id))
                .order_by_asc(session::Column::CreatedAt)
        })
        .await?;
    let escrows = escrows_of(db, user_id).await?;
    let mandates = mandates_of(db, user_id).await?;
    let payments = payments_of(db, user_id, &escrows).await?;
    let notifications = db
        .list::<notification::Entity>(|q| {
            q.filter(notification::Column::UserId.eq(user_id))
                .order_by_asc(notification::Column::CreatedAt)
        })
        .await?;
    let opt_outs = db
        .list::<notification_opt_out::Entity>(|q| {
            q.filter(notification_opt_out::Column::UserId.eq(user_id))
        })
        .await?;
    let entries = db
        .list::<audit_log::Entity>(|q| {
            q.filter(
                Condition::any()
                    .add(audit_log::Column::ActorId.eq(user_id))
                    .add(
                        Condition::all()
                            .add(audit_log::Column::SubjectType.eq("user"))
                            .add(audit_log::Column::SubjectId.eq(user_id)),
                    ),
            )
            .order_by_asc(audit_log::Column::CreatedAt)
            .order_by_asc(audit_log::Column::Id)
        })
        .await?;

    Ok(json!({
        "exportedAt": Utc::now(),
        "tenant": { "slug": tenant.slug, "name": tenant.name },
        "profile": {
            "id": encode(Kind::User, who.id),
            "email": who.email,
            "emailVerified": who.email_verified_at.is_some(),
            "isActive": who.is_active,
            "createdAt": who.created_at,
        },
        "roles": roles,
        "mfa": {
            "enabled": mfa.as_ref().is_some_and(|m| m.enabled_at.is_some()),
            "enabledAt": mfa.and_then(|m| m.enabled_at),
        },
        "sessions": sessions.iter().map(|s| json!({
            "id": encode(Kind::Session, s.id),
            "createdAt": s.created_at,
            "lastSeenAt": s.last_seen_at,
            "expiresAt": s.expires_at,
            "revokedAt": s.revoked_at,
            "ip": s.ip,
            "userAgent": s.user_agent,
        })).collect::<Vec<_>>(),
        "escrows": escrows.iter().map(|e| json!({
            "id": encode(Kind::Escrow, e.id),
            "role": if e.sender_id == user_id { "SENDER" } else { "PROVIDER" },
            "description": e.description,
            "amount": amount(e.amount_minor, &e.currency),
            "currency": e.currency,
            "status": e.status.as_str(),
            "createdAt": e.created_at,
        })).collect::<Vec<_>>(),
        "mandates": mandates.iter().map(|m| json!({
            "id": encode(Kind::Mandate, m.id),
            "role": if m.sender_id == user_id { "SENDER" } else { "BENEFICIARY" },
            "total": amount(m.total_minor, &m.currency),
            "spent": amount(m.spent_minor, &m.currency),
            "currency": m.currency,
            "status": m.status.as_str(),
            "createdAt": m.created_at,
            "expiresAt": m.expires_at,
        })).collect::<Vec<_>>(),
        "payments": payments.iter().map(|(p, role)| json!({
            "id": encode(Kind::Payment, p.id),
            "role": role,
            "purpose": p.purpose,
            "amount": amount(p.amount_minor, &p.currency),
            "currency": p.currency,
            "status": p.status.as_str(),
            "createdAt": p.created_at,
        })).collect::<Vec<_>>(),
        "notifications": notifications.iter().map(|n| json!({
            "kind": n.kind,
            "status": n.status,
            "createdAt": n.created_at,
            "sentAt": n.sent_at,
        })).collect::<Vec<_>>(),
        "notificationsTurnedOff": opt_outs.iter().map(|o| o.kind.clone()).collect::<Vec<_>>(),
        "auditEntries": entries.iter().map(|a| json!({
            "action": a.action,
            "by": if a.actor_id == Some(user_id) { "YOU" } else { a.actor_type.as_str() },
            "about": a.subject_type.as_deref().zip(a.subject_id).map(|(t, id)| format!("{t}:{id}")),
            "ip": a.ip,
            "createdAt": a.created_at,
            "details": a.details,
        })).collect::<Vec<_>>(),
    }))
}

/// What still moves money for `user_id` (empty: nothing).
async fn in_flight<C: ConnectionTrait>(db: &Scoped<C>, user_id: Uuid) -> Result<Vec<String>> {
    let escrows = escrows_of(db, user_id).await?;
    let mut busy: Vec<String> = escrows
        .iter()
        .filter(|e| {
            matches!(
                e.status,
                EscrowStatus::Funded | EscrowStatus::Releasable | EscrowStatus::Disputed
            )
        })
        .map(|e| {
            format!(
                "escrow {} is {}",
                encode(Kind::Escrow, e.id),
                e.status.as_str()
            )
        })
        .collect();
    busy.extend(
        mandates_of(db, user_id)
            .await?
            .iter()
            .filter(|m| m.status == MandateStatus::Active)
            .map(|m| format!("mandate {} is ACTIVE", encode(Kind::Mandate, m.id))),
    );
    busy.extend(
        payments_of(db, user_id, &escrows)
            .await?
            .iter()
            .filter(|(p, _)| matches!(p.status, PaymentStatus::Pending | PaymentStatus::Sent))
            .map(|(p, _)| {
                format!(
                    "payment {} is {}",
                    encode(Kind::Payment, p.id),
                    p.status.as_str()
                )
            }),
    );
    Ok(busy)
}

/// Anonymizes `user_id` (see the module). Run it in a transaction: it takes the
/// tenant's lock, like a deactivation, so the last active ADMIN cannot be erased and
/// nothing can start moving money for the user between the check and the erasure.
pub async fn erase<C: ConnectionTrait>(
    db: &Scoped<C>,
    actor: Actor,
    origin: &Origin,
    user_id: Uuid,
) -> Result<()> {
    db.lock_tenant().await?;
    let who = db.get::<user::Entity>(user_id).await?;
    let busy = in_flight(db, user_id).await?;
    if !busy.is_empty() {
        return Err(Error::conflict(
            "FUNDS_IN_FLIGHT",
            format!(
                "money is still moving for this user: {}; erase once it settled",
                busy.join(", ")
            ),
        ));
    }
    let admin = db
        .count::<user_role::Entity>(|q| {
            q.filter(user_role::Column::UserId.eq(user_id))
                .filter(user_role::Column::Role.eq(crate::auth::Role::Admin))
        })
        .await?
        > 0;
    if admin && who.is_active {
        super::rules::ensure_another_admin(db, user_id).await?;
    }
    let now = Utc::now();
    db.update_where::<user::Entity>(|q| {
        q.col_expr(
            user::Column::Email,
            Expr::value(format!("erased+{}@erased.invalid", user_id.simple())),
        )
        // Not a hash any password can match: sign-in cannot succeed.
        .col_expr(user::Column::PasswordHash, Expr::value("!erased"))
        .col_expr(user::Column::IsActive, Expr::value(false))
        .col_expr(
            user::Column::EmailVerifiedAt,
            Expr::value(None::<chrono::DateTime<Utc>>),
        )
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .filter(user::Column::Id.eq(user_id))
    })
    .await?;
    crate::identity::rules::revoke_all_except(db, user_id, None, "USER_ERASED").await?;
    db.update_where::<session::Entity>(|q| {
        q.col_expr(session::Column::Ip, Expr::value(None::<String>))
            .col_expr(session::Column::UserAgent, Expr::value(None::<String>))
            .filter(session::Column::UserId.eq(user_id))
    })
    .await?;
    db.delete_where::<recovery_code::Entity>(|q| {
        q.filter(recovery_code::Column::UserId.eq(user_id))
    })
    .await?;
    db.delete_where::<mfa_totp::Entity>(|q| q.filter(mfa_totp::Column::UserId.eq(user_id)))
        .await?;
    db.delete_where::<mfa_challenge::Entity>(|q| {
        q.filter(mfa_challenge::Column::UserId.eq(user_id))
    })
    .await?;
    db.delete_where::<mail_token::Entity>(|q| q.filter(mail_token::Column::UserId.eq(user_id)))
        .await?;
    db.delete_where::<notification::Entity>(|q| q.filter(notification::Column::UserId.eq(user_id)))
        .await?;
    db.delete_where::<notification_opt_out::Entity>(|q| {
        q.filter(notification_opt_out::Column::UserId.eq(user_id))
    })
    .await?;
    db.delete_where::<auth_failure::Entity>(|q| q.filter(auth_failure::Column::UserId.eq(user_id)))
        .await?;
    audit::record(
        db,
        audit::Entry {
            actor,
            action: AuditAction::UserErased,
            subject: Some(("user", user_id)),
            details: json!({}),
            origin,
        },
    )
    .await
}
