//! Payments: money leaving through a payment service provider (DESIGN §4).
//!
//! A payment is recorded `PENDING` in the transaction that decides it (a release, a
//! refund), so it can never be lost: if the process stops before the PSP hears of
//! it, the jobs submit it later. Submission happens after that transaction
//! commits — never a network call inside a database transaction — and the PSP is
//! asked with the payment id as its idempotency key, so a retry never pays twice.
//!
//! A payment only moves forward, `PENDING → SENT → SETTLED | FAILED`, through
//! [`transition`]: one conditional UPDATE, an audit row, a line of attempt
//! history and a published update, in the caller's transaction. A failed payment
//! stays failed; a retry is a new payment pointing at it (`retry_of`, unique).

pub mod graphql;
pub mod http_psp;
pub mod psp;
pub mod webhook;

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, QueryFilter, QueryOrder, sea_query::Expr,
};
use uuid::Uuid;

use crate::kinds::{AuditAction, EscrowUpdateEvent};
use crate::{
    audit::{self, Actor, Origin},
    db::{Scoped, TenantDb, TenantTxn},
    entity::{
        escrow,
        payment::{self, PaymentPurpose, PaymentStatus},
        payment_attempt, payout, transfer,
    },
    error::{Error, Result},
    events::Update,
    ids::new_id,
    ledger::{self, Account, EntryKind},
    money::{Currency, Money},
    rules::Caller,
};

pub use psp::{Psp, PspPayout, PspStatus, SimulatedPsp};

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
    /// The ledger account the money leaves for the PSP (an escrow, a mandate, the
    /// payer's funding).
    pub source: Account,
}

impl NewPayment {
    /// The same payment again: what a retry of `p` pays.
    fn again(p: &payment::Model) -> Result<Self> {
        let payee = match (p.payee_id, &p.payee_reference) {
            (Some(id), _) => Payee::User(id),
            (None, Some(reference)) => Payee::External(reference.clone()),
            (None, None) => {
                return Err(Error::internal(anyhow::anyhow!(
                    "payment {} has no payee",
                    p.id
                )));
            }
        };
        Ok(Self {
            payee,
            purpose: p.purpose,
            amount: Money::from_minor(p.amount_minor, Currency::parse(&p.currency)?),
            escrow_id: p.escrow_id,
            milestone_id: p.milestone_id,
            source: Account::PspReturned,
        })
    }
}

/// A new `PENDING` row: a first try, or (`retry_of`) the next try of a failed one.
fn pending_row(
    tenant: Uuid,
    psp_name: &str,
    new: NewPayment,
    retry_of: Option<&payment::Model>,
) -> payment::ActiveModel {
    let now = Utc::now();
    let (payee_id, payee_reference) = match new.payee {
        Payee::User(id) => (Some(id), None),
        Payee::External(reference) => (None, Some(reference)),
    };
    payment::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(tenant),
        escrow_id: Set(new.escrow_id),
        milestone_id: Set(new.milestone_id),
        payee_id: Set(payee_id),
        payee_reference: Set(payee_reference),
        purpose: Set(new.purpose),
        amount_minor: Set(new.amount.minor()),
        currency: Set(new.amount.currency().code().to_owned()),
        status: Set(PaymentStatus::Pending),
        psp: Set(psp_name.to_owned()),
        psp_reference: Set(None),
        failure_reason: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        retry_of: Set(retry_of.map(|f| f.id)),
        attempt: Set(retry_of.map_or(1, |f| f.attempt + 1)),
        sent_at: Set(None),
        checked_at: Set(None),
        dispute_opened_at: Set(None),
        dispute_closed_at: Set(None),
        dispute_outcome: Set(None),
    }
}

/// Records a `PENDING` payment in the caller's transaction.
pub async fn record<C: ConnectionTrait>(
    txn: &Scoped<C>,
    psp_name: &str,
    new: NewPayment,
    actor: Actor,
    origin: &Origin,
) -> Result<payment::Model> {
    let source = new.source.clone();
    let model = txn
        .insert(pending_row(txn.tenant().as_uuid(), psp_name, new, None))
        .await?;
    ledger::post(
        txn,
        ledger::Movement {
            kind: EntryKind::PaymentCreated,
            subject: ("payment", model.id),
            currency: &model.currency,
            amount_minor: model.amount_minor,
            from: source,
            to: Account::PspClearing,
        },
    )
    .await?;
    audit::record(
        txn,
        audit::Entry {
            actor,
            action: AuditAction::PaymentCreated,
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
    publish(txn, &model).await?;
    Ok(model)
}

/// Who takes part in a payment: who pays (when known) and everyone who may see it
/// besides the tenant's staff.
pub struct Parties {
    pub payer: Option<Uuid>,
    pub all: Vec<Uuid>,
}

pub async fn parties<C: ConnectionTrait>(db: &Scoped<C>, p: &payment::Model) -> Result<Parties> {
    let mut all: Vec<Uuid> = p.payee_id.into_iter().collect();
    let mut payer = None;
    match p.purpose {
        PaymentPurpose::EscrowRelease | PaymentPurpose::EscrowRefund => {
            if let Some(escrow_id) = p.escrow_id {
                let esc = db.get::<escrow::Entity>(escrow_id).await?;
                payer = Some(esc.sender_id);
                all.extend([esc.sender_id, esc.provider_id]);
            }
        }
        PaymentPurpose::SpendPayout => {
            if let Some(out) = db
                .first::<payout::Entity>(|q| q.filter(payout::Column::PaymentId.eq(p.id)))
                .await?
            {
                payer = Some(out.created_by);
                all.push(out.created_by);
                if let Some(mandate_id) = out.mandate_id {
                    let m = db.get::<crate::entity::mandate::Entity>(mandate_id).await?;
                    all.extend([m.sender_id, m.beneficiary_id]);
                }
            }
            if let Some(escrow_id) = p.escrow_id {
                let esc = db.get::<escrow::Entity>(escrow_id).await?;
                all.extend([esc.sender_id, esc.provider_id]);
            }
        }
        PaymentPurpose::Transfer => {
            if let Some(t) = db
                .first::<transfer::Entity>(|q| q.filter(transfer::Column::PaymentId.eq(p.id)))
                .await?
            {
                payer = Some(t.sender_id);
                all.extend([t.sender_id, t.recipient_id]);
            }
        }
    }
    all.sort();
    all.dedup();
    Ok(Parties { payer, all })
}

/// The payment, when `caller` may see it (a party, or the tenant's staff);
/// otherwise `NOT_FOUND`, like a payment of another tenant.
pub async fn visible<C: ConnectionTrait>(
    db: &Scoped<C>,
    caller: &Caller,
    id: Uuid,
) -> Result<payment::Model> {
    let p = db.get::<payment::Entity>(id).await?;
    if caller.is_staff() || parties(db, &p).await?.all.contains(&caller.user_id) {
        Ok(p)
    } else {
        Err(Error::NotFound)
    }
}

/// Publishes `p` (and its escrow's change) when the transaction commits.
async fn publish<C: ConnectionTrait>(txn: &Scoped<C>, p: &payment::Model) -> Result<()> {
    let parties = parties(txn, p).await?;
    txn.publish(Update::Payment {
        payment: Box::new(p.clone()),
        parties: parties.all,
    });
    if let Some(escrow_id) = p.escrow_id {
        txn.publish(Update::Escrow {
            tenant_id: p.tenant_id,
            escrow_id,
            event: match p.status {
                PaymentStatus::Pending => EscrowUpdateEvent::PaymentPending,
                PaymentStatus::Sent => EscrowUpdateEvent::PaymentSent,
                PaymentStatus::Settled => EscrowUpdateEvent::PaymentSettled,
                PaymentStatus::Failed => EscrowUpdateEvent::PaymentFailed,
            },
        });
    }
    Ok(())
}

crate::text_enum! {
    /// What told us about a payment: the kind of a line of its history.
    #[graphql(name = "PaymentAttemptKind")]
    pub enum Via {
        /// Sending the payment to the PSP.
        Submit = "SUBMIT",
        /// Asking the PSP where the payment stands.
        StatusCheck = "STATUS_CHECK",
        /// A signed webhook from the PSP.
        Webhook = "WEBHOOK",
    }
}

/// Adds a line to a payment's attempt history.
pub async fn note_attempt<C: ConnectionTrait>(
    txn: &Scoped<C>,
    payment_id: Uuid,
    via: Via,
    outcome: &str,
    detail: Option<String>,
) -> Result<()> {
    txn.insert(payment_attempt::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(txn.tenant().as_uuid()),
        payment_id: Set(payment_id),
        kind: Set(via.as_str().to_owned()),
        outcome: Set(outcome.to_owned()),
        detail: Set(detail.map(|d| d.chars().take(500).collect())),
        at: Set(Utc::now()),
    })
    .await?;
    Ok(())
}

/// The states a payment may be in to move to `to`.
pub fn allowed_from(to: PaymentStatus) -> &'static [PaymentStatus] {
    use PaymentStatus::*;
    match to {
        Pending => &[],
        Sent => &[Pending],
        Settled | Failed => &[Pending, Sent],
    }
}

/// The longest failure reason kept (a PSP may send any length; a NOTIFY payload is
/// limited to 8000 bytes).
pub const MAX_REASON_CHARS: usize = 500;

/// A move forward, as a PSP reported it.
pub struct Move<'a> {
    pub to: PaymentStatus,
    /// The PSP's reference (set when it accepted the payment).
    pub reference: Option<&'a str>,
    pub failure_reason: Option<&'a str>,
    pub via: Via,
    /// The webhook event or other detail kept in the history.
    pub detail: Option<String>,
}

/// Moves payment `id` forward, if it is still in a state that allows it: one
/// conditional UPDATE, then the audit row, the attempt history, the published
/// update, and whatever the areas that react to payments registered
/// ([`crate::hooks::PaymentMoved`]: the escrow's consequence, the ledger's entry).
/// `None` when the payment had already moved on (a late or repeated report).
pub async fn transition(txn: &TenantTxn, id: Uuid, m: Move<'_>) -> Result<Option<payment::Model>> {
    let from = allowed_from(m.to);
    move_payment(txn, id, m, from, None).await
}

/// The PSP took a payment back (`payout.returned`, `payment.refunded`): a SETTLED one
/// becomes FAILED again, the money back from its payee to PSP returned
/// (`PAYMENT_RETURNED`), its milestone paid again, and the retry policy takes it
/// like any failure; one still on its way fails as `payout.failed` would. `None`
/// when it had failed already (a late or repeated report).
pub async fn take_back(txn: &TenantTxn, id: Uuid, m: Move<'_>) -> Result<Option<payment::Model>> {
    let settled = Move {
        to: PaymentStatus::Failed,
        reference: m.reference,
        failure_reason: m.failure_reason,
        via: m.via,
        detail: m.detail.clone(),
    };
    if let Some(p) = move_payment(
        txn,
        id,
        settled,
        &[PaymentStatus::Settled],
        Some(PaymentStatus::Settled),
    )
    .await?
    {
        return Ok(Some(p));
    }
    transition(
        txn,
        id,
        Move {
            to: PaymentStatus::Failed,
            ..m
        },
    )
    .await
}

/// One conditional UPDATE from `from` to `m.to`, and everything that follows a move
/// (see [`transition`]); `left` is the state it left when that is not a forward move.
async fn move_payment(
    txn: &TenantTxn,
    id: Uuid,
    m: Move<'_>,
    from: &[PaymentStatus],
    left: Option<PaymentStatus>,
) -> Result<Option<payment::Model>> {
    let now = Utc::now();
    let to = m.to;
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let moved = txn
        .transition::<payment::Entity>(id, payment::Column::Status, &from, to.as_str(), |q| {
            let mut q = q.col_expr(payment::Column::UpdatedAt, Expr::value(now));
            if let Some(reference) = m.reference {
                q = q.col_expr(payment::Column::PspReference, Expr::value(reference));
            }
            if to == PaymentStatus::Sent {
                q = q.col_expr(payment::Column::SentAt, Expr::value(now));
            }
            if to == PaymentStatus::Failed {
                // Bounded: the reason travels in the update notification too.
                let reason: String = m
                    .failure_reason
                    .unwrap_or("failed")
                    .chars()
                    .take(MAX_REASON_CHARS)
                    .collect();
                q = q
                    .col_expr(payment::Column::FailureReason, Expr::value(reason))
                    // The retry policy claims a failure by setting it: a failure
                    // starts unclaimed, whatever reconciliation left there.
                    .col_expr(
                        payment::Column::CheckedAt,
                        Expr::value(None::<chrono::DateTime<Utc>>),
                    );
            }
            q
        })
        .await?;
    let Some(p) = moved else {
        return Ok(None);
    };
    let origin = Origin::default();
    audit::record(
        txn,
        audit::Entry {
            actor: Actor::System,
            action: match (to, left) {
                (PaymentStatus::Sent, _) => AuditAction::PaymentSent,
                (PaymentStatus::Settled, _) => AuditAction::PaymentSettled,
                (_, Some(PaymentStatus::Settled)) => AuditAction::PaymentReturned,
                _ => AuditAction::PaymentFailed,
            },
            subject: Some(("payment", p.id)),
            details: serde_json::json!({
                "via": m.via.as_str(),
                "reference": p.psp_reference,
                "failure_reason": p.failure_reason,
                "detail": m.detail,
            }),
            origin: &origin,
        },
    )
    .await?;
    note_attempt(txn, p.id, m.via, to.as_str(), m.detail).await?;
    publish(txn, &p).await?;
    crate::hooks::payment_moved(txn, &p, left).await?;
    Ok(Some(p))
}

crate::text_enum! {
    /// What the PSP said of a dispute on a payment, and where one stands.
    #[graphql(name = "PaymentDisputeState")]
    pub enum Dispute {
        /// The PSP opened a dispute on the payment (`dispute.opened`); it is open.
        Opened = "OPENED",
        /// The PSP closed it in the payee's favour: the payment stands.
        Won = "WON",
        /// The PSP closed it against the payee and took the money back.
        Lost = "LOST",
    }
}

/// Records what the PSP said of a dispute on payment `id`: one conditional UPDATE (a
/// dispute is opened once and closed once; a close that came first opens and closes
/// it), the audit row, the published update and the areas that react
/// ([`crate::hooks::PaymentDisputed`]: the escrow is disputed, the parties told). A
/// lost dispute takes the money back as [`take_back`] does and leaves the failure to
/// an operator (`retryPayment`): the retry policy does not pay it again by itself.
/// `None` when nothing changed (a late or repeated report).
pub async fn dispute(
    txn: &TenantTxn,
    id: Uuid,
    what: Dispute,
    reason: Option<&str>,
    event_id: &str,
) -> Result<Option<payment::Model>> {
    use sea_orm::sea_query::Func;
    let now = Utc::now();
    let changed = txn
        .update_returning::<payment::Entity>(|q| {
            let q = q
                .col_expr(payment::Column::UpdatedAt, Expr::value(now))
                .filter(payment::Column::Id.eq(id))
                .filter(payment::Column::DisputeClosedAt.is_null());
            match what {
                Dispute::Opened => q
                    .col_expr(payment::Column::DisputeOpenedAt, Expr::value(now))
                    .filter(payment::Column::DisputeOpenedAt.is_null()),
                Dispute::Won | Dispute::Lost => q
                    .col_expr(
                        payment::Column::DisputeOpenedAt,
                        Func::coalesce([
                            Expr::col(payment::Column::DisputeOpenedAt).into(),
                            Expr::value(now),
                        ])
                        .into(),
                    )
                    .col_expr(payment::Column::DisputeClosedAt, Expr::value(now))
                    .col_expr(payment::Column::DisputeOutcome, Expr::value(what.as_str())),
            }
        })
        .await?;
    let Some(mut p) = changed.into_iter().next() else {
        return Ok(None);
    };
    let reason: Option<String> = reason.map(|r| r.chars().take(MAX_REASON_CHARS).collect());
    let origin = Origin::default();
    audit::record(
        txn,
        audit::Entry {
            actor: Actor::System,
            action: match what {
                Dispute::Opened => AuditAction::PaymentDisputeOpened,
                Dispute::Won | Dispute::Lost => AuditAction::PaymentDisputeClosed,
            },
            subject: Some(("payment", p.id)),
            details: serde_json::json!({
                "outcome": what.as_str(),
                "reason": reason,
                "event": event_id,
            }),
            origin: &origin,
        },
    )
    .await?;
    if what == Dispute::Lost {
        let why = format!(
            "dispute lost: {}",
            reason.as_deref().unwrap_or("the PSP took the money back")
        );
        match take_back(
            txn,
            id,
            Move {
                to: PaymentStatus::Failed,
                reference: None,
                failure_reason: Some(&why),
                via: Via::Webhook,
                detail: Some(event_id.to_owned()),
            },
        )
        .await?
        {
            Some(back) => p = back,
            None => publish(txn, &p).await?,
        }
        // Claimed for the retry policy: an operator decides (`retryPayment`).
        txn.update_where::<payment::Entity>(|q| {
            q.col_expr(payment::Column::CheckedAt, Expr::value(now))
                .filter(payment::Column::Id.eq(id))
                .filter(payment::Column::Status.eq(PaymentStatus::Failed.as_str()))
        })
        .await?;
    } else {
        publish(txn, &p).await?;
    }
    crate::hooks::payment_disputed(txn, &p, what, reason.as_deref()).await?;
    Ok(Some(p))
}

/// Records a retry of the failed payment `failed_id`: a new `PENDING` payment for
/// the same payee, amount and purpose, pointing at it. A payment is retried at most
/// once (a unique index), so two processes cannot both retry it: the second gets
/// `CONFLICT` (`ALREADY_RETRIED`).
pub async fn record_retry<C: ConnectionTrait>(
    txn: &Scoped<C>,
    failed_id: Uuid,
    actor: Actor,
    origin: &Origin,
) -> Result<payment::Model> {
    let failed = txn.get::<payment::Entity>(failed_id).await?;
    if failed.status != PaymentStatus::Failed {
        return Err(Error::InvalidState {
            object: "payment",
            state: failed.status.as_str(),
            action: "retry it",
        });
    }
    let already = txn
        .first::<payment::Entity>(|q| q.filter(payment::Column::RetryOf.eq(failed.id)))
        .await?;
    if already.is_some() {
        return Err(already_retried());
    }
    let retry = txn
        .insert(pending_row(
            failed.tenant_id,
            &failed.psp,
            NewPayment::again(&failed)?,
            Some(&failed),
        ))
        .await
        .map_err(|err| match err {
            Error::Conflict { .. } => already_retried(),
            other => other,
        })?;
    ledger::post(
        txn,
        ledger::Movement {
            kind: EntryKind::PaymentRetried,
            subject: ("payment", retry.id),
            currency: &retry.currency,
            amount_minor: retry.amount_minor,
            from: Account::PspReturned,
            to: Account::PspClearing,
        },
    )
    .await?;
    audit::record(
        txn,
        audit::Entry {
            actor,
            action: AuditAction::PaymentRetried,
            subject: Some(("payment", retry.id)),
            details: serde_json::json!({
                "retry_of": failed.id,
                "attempt": retry.attempt,
                "failure_reason": failed.failure_reason,
            }),
            origin,
        },
    )
    .await?;
    publish(txn, &retry).await?;
    Ok(retry)
}

fn already_retried() -> Error {
    Error::conflict("ALREADY_RETRIED", "this payment has already been retried")
}

/// A payment's attempt history, oldest first.
pub async fn attempts<C: ConnectionTrait>(
    db: &Scoped<C>,
    payment_id: Uuid,
) -> Result<Vec<payment_attempt::Model>> {
    db.list::<payment_attempt::Entity>(|q| {
        q.filter(payment_attempt::Column::PaymentId.eq(payment_id))
            .order_by_asc(payment_attempt::Column::At)
            .order_by_asc(payment_attempt::Column::Id)
    })
    .await
}

/// Submits pending payments to the PSP, one by one, after the transaction that
/// recorded them has committed. A PSP failure leaves a payment `PENDING` for the
/// jobs; it is logged, not returned, because the decision itself stands.
pub async fn dispatch(db: &TenantDb, psp: &dyn Psp, ids: &[Uuid]) {
    for id in ids {
        if let Err(err) = dispatch_one(db, psp, *id).await {
            tracing::warn!(payment = %id, error = %err, "payment not yet accepted by the PSP; will retry");
        }
    }
}

async fn dispatch_one(db: &TenantDb, psp: &dyn Psp, id: Uuid) -> Result<()> {
    let payment = db.get::<payment::Entity>(id).await?;
    if payment.status != PaymentStatus::Pending {
        return Ok(());
    }
    let submitted = psp
        .submit(&PspPayout {
            payment_id: payment.id,
            tenant_id: db.tenant().as_uuid(),
            payee_id: payment.payee_id,
            payee_reference: payment.payee_reference.clone(),
            amount_minor: payment.amount_minor,
            currency: payment.currency.clone(),
        })
        .await;
    let txn: TenantTxn = db.begin().await?;
    match submitted {
        Ok(accepted) => {
            webhook::lock_reference(txn.unscoped(), psp.name(), &accepted.reference).await?;
            let moved = transition(
                &txn,
                payment.id,
                Move {
                    to: PaymentStatus::Sent,
                    reference: Some(&accepted.reference),
                    failure_reason: None,
                    via: Via::Submit,
                    detail: Some(format!("accepted by {}", psp.name())),
                },
            )
            .await?;
            match moved {
                // Events the PSP posted before this commit are applied now.
                Some(sent) => {
                    webhook::adopt_orphans(&txn, &sent).await?;
                }
                // Another dispatcher (the jobs, a second replica) got there first.
                None => note_attempt(&txn, payment.id, Via::Submit, "ACCEPTED", None).await?,
            }
            txn.commit().await
        }
        Err(err) => {
            note_attempt(
                &txn,
                payment.id,
                Via::Submit,
                "ERROR",
                Some(err.to_string()),
            )
            .await?;
            txn.commit().await?;
            Err(err)
        }
    }
}
