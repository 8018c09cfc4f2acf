//! Payments: money leaving through a payment service provider (DESIGN §4).
//!
//! A payment is recorded `PENDING` in the transaction that decides it (a release, a
//! refund), so it can never be lost: if the process stops before the PSP hears of
//! it, the retry job submits it later. Submission happens after that transaction
//! commits — never a network call inside a database transaction — and the PSP is
//! asked with the payment id as its idempotency key, so a retry never pays twice.

pub mod graphql;
pub mod psp;
pub mod webhook;

use chrono::Utc;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, QueryFilter, sea_query::Expr};
use uuid::Uuid;

use crate::{
    audit::{self, Actor, Origin},
    db::{Scoped, TenantDb},
    entity::payment::{self, PaymentPurpose, PaymentStatus},
    error::Result,
    escrow,
    ids::new_id,
    money::Money,
};

pub use psp::{Psp, PspPayout, SimulatedPsp};

/// Who is paid: a user of the tenant, or an external payee by its reference.
pub enum Payee {
    User(Uuid),
    External(String),
}

/// What a rule asks to pay.
pub struct NewPayment {
    pub payee: Payee,
    pub purpose: PaymentPurpose,
    pub amount: Money,
    pub escrow_id: Option<Uuid>,
    pub milestone_id: Option<Uuid>,
}

/// Records a `PENDING` payment in the caller's transaction.
pub async fn record<C: ConnectionTrait>(
    txn: &Scoped<C>,
    psp_name: &str,
    new: NewPayment,
    actor: Actor,
    origin: &Origin,
) -> Result<payment::Model> {
    let now = Utc::now();
    let model = txn
        .insert(payment::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(txn.tenant().as_uuid()),
            escrow_id: Set(new.escrow_id),
            milestone_id: Set(new.milestone_id),
            payee_id: Set(match &new.payee {
                Payee::User(id) => Some(*id),
                Payee::External(_) => None,
            }),
            payee_reference: Set(match new.payee {
                Payee::User(_) => None,
                Payee::External(reference) => Some(reference),
            }),
            purpose: Set(new.purpose),
            amount_minor: Set(new.amount.minor()),
            currency: Set(new.amount.currency().code().to_owned()),
            status: Set(PaymentStatus::Pending),
            psp: Set(psp_name.to_owned()),
            psp_reference: Set(None),
            failure_reason: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .await?;
    audit::record(
        txn,
        audit::Entry {
            actor,
            action: "payment.created",
            subject: Some(("payment", model.id)),
            details: serde_json::json!({
                "purpose": model.purpose,
                "amount_minor": model.amount_minor,
                "currency": model.currency,
                "escrow_id": model.escrow_id,
                "milestone_id": model.milestone_id,
            }),
            origin,
        },
    )
    .await?;
    Ok(model)
}

/// Submits pending payments to the PSP, one by one, after the transaction that
/// recorded them has committed. A PSP failure leaves a payment `PENDING` for the
/// retry job; it is logged, not returned, because the decision itself stands.
pub async fn dispatch(db: &TenantDb, psp: &dyn Psp, ids: &[Uuid]) {
    for id in ids {
        if let Err(err) = dispatch_one(db, psp, *id).await {
            tracing::warn!(payment = %id, error = ?err, "payment not yet accepted by the PSP; will retry");
        }
    }
}

async fn dispatch_one(db: &TenantDb, psp: &dyn Psp, id: Uuid) -> Result<()> {
    let payment = db.get::<payment::Entity>(id).await?;
    if payment.status != PaymentStatus::Pending {
        return Ok(());
    }
    let accepted = psp
        .submit(&PspPayout {
            payment_id: payment.id,
            tenant_id: db.tenant().as_uuid(),
            payee_id: payment.payee_id,
            payee_reference: payment.payee_reference.clone(),
            amount_minor: payment.amount_minor,
            currency: payment.currency.clone(),
        })
        .await?;
    let txn = db.begin().await?;
    let moved = txn
        .update_where::<payment::Entity>(|q| {
            q.col_expr(
                payment::Column::Status,
                Expr::value(PaymentStatus::Sent.as_str()),
            )
            .col_expr(
                payment::Column::PspReference,
                Expr::value(accepted.reference.clone()),
            )
            .col_expr(payment::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(payment::Column::Id.eq(payment.id))
            .filter(payment::Column::Status.eq(PaymentStatus::Pending.as_str()))
        })
        .await?;
    if moved == 0 {
        // Another dispatcher (the retry job, a second replica) got there first.
        return Ok(());
    }
    let origin = Origin::default();
    audit::record(
        &txn,
        audit::Entry {
            actor: Actor::System,
            action: "payment.sent",
            subject: Some(("payment", payment.id)),
            details: serde_json::json!({ "psp": psp.name(), "reference": accepted.reference }),
            origin: &origin,
        },
    )
    .await?;
    let sent = txn.get::<payment::Entity>(payment.id).await?;
    escrow::rules::payment_sent(&txn, &sent).await?;
    txn.commit().await?;
    Ok(())
}
