//! GraphQL for payments: the `Payment` type with its attempt history, the three
//! live subscriptions, and `retryPayment`.

use crate::graphql::mutation::one_object_payload;
use std::sync::Arc;

use async_graphql::{Context, ID, Object, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, stream};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::{
    accounts::graphql::{PartyNode, party},
    db::TenantDb,
    entity::{
        escrow,
        payment::{self, PaymentPurpose, PaymentStatus},
        payment_attempt,
    },
    error::{Error, Result},
    escrow::{graphql::EscrowNode, rules as escrow_rules},
    events::{Subscription as Following, Topic, Update},
    graphql::{
        access, context::ContextExt, loaders::children, mutation, node::global_id,
        scalars::MoneyValue,
    },
    ids::{self, Kind},
    kinds::EscrowUpdateEvent,
    payments::Via,
    rules::{Caller, MovesMoney},
};

/// Money leaving through the PSP.
pub struct PaymentNode(pub payment::Model);

/// Money sent through the PSP: PENDING, SENT, then SETTLED or FAILED.
#[Object(name = "Payment")]
impl PaymentNode {
    /// The payment's global id.
    pub async fn id(&self) -> ID {
        global_id(Kind::Payment, self.0.id)
    }

    /// Why it was made.
    async fn purpose(&self) -> PaymentPurpose {
        self.0.purpose
    }

    /// PENDING → SENT → SETTLED | FAILED; never backwards.
    async fn status(&self) -> PaymentStatus {
        self.0.status
    }

    /// How much.
    async fn amount(&self) -> MoneyValue {
        MoneyValue::new(self.0.amount_minor, &self.0.currency)
    }

    /// The user paid (none for an external payee).
    #[graphql(deprecation = "Use `payee { userId }`.")]
    async fn payee_id(&self) -> Option<ID> {
        self.0.payee_id.map(|id| global_id(Kind::User, id))
    }

    /// The user paid, as a party sees them (none for an external payee: see
    /// `payeeReference`).
    async fn payee(&self, ctx: &Context<'_>) -> Result<Option<PartyNode>> {
        match self.0.payee_id {
            Some(id) => party(ctx, id).await.map(Some),
            None => Ok(None),
        }
    }

    /// An external payee's reference (spend payouts).
    async fn payee_reference(&self) -> Option<&str> {
        self.0.payee_reference.as_deref()
    }

    /// The escrow it comes from, if any.
    #[graphql(deprecation = "Use `escrow { id }`.")]
    async fn escrow_id(&self) -> Option<ID> {
        self.0.escrow_id.map(|id| global_id(Kind::Escrow, id))
    }

    /// The escrow it comes from, if any (a payment's parties are its escrow's).
    async fn escrow(&self, ctx: &Context<'_>) -> Result<Option<EscrowNode>> {
        match self.0.escrow_id {
            Some(id) => crate::graphql::loaders::by_id::<escrow::Entity>(ctx, id)
                .await
                .map(|e| Some(EscrowNode(e))),
            None => Ok(None),
        }
    }

    /// The milestone it pays, if any.
    async fn milestone_id(&self) -> Option<ID> {
        self.0.milestone_id.map(|id| global_id(Kind::Milestone, id))
    }

    /// Which PSP carries it.
    async fn psp(&self) -> &str {
        &self.0.psp
    }

    /// The PSP's reference, once it accepted the payment.
    async fn psp_reference(&self) -> Option<&str> {
        self.0.psp_reference.as_deref()
    }

    /// Why the PSP failed it.
    async fn failure_reason(&self) -> Option<&str> {
        self.0.failure_reason.as_deref()
    }

    /// When the PSP opened a dispute on this payment (null: none).
    async fn dispute_opened_at(&self) -> Option<DateTime<Utc>> {
        self.0.dispute_opened_at
    }

    /// When the PSP closed that dispute (null: open, or none).
    async fn dispute_closed_at(&self) -> Option<DateTime<Utc>> {
        self.0.dispute_closed_at
    }

    /// Where a PSP dispute on this payment stands: OPENED while it is open, WON (the
    /// payment stands) or LOST (the PSP took the money back; the payment is FAILED
    /// and waits for an operator) once closed; null when there was none.
    async fn dispute_state(&self) -> Option<crate::payments::Dispute> {
        match (&self.0.dispute_outcome, self.0.dispute_opened_at) {
            (Some(outcome), _) => crate::payments::Dispute::parse(outcome),
            (None, Some(_)) => Some(crate::payments::Dispute::Opened),
            (None, None) => None,
        }
    }

    /// 1 for a first try; a retry counts on from the payment it retries.
    async fn attempt(&self) -> i32 {
        self.0.attempt
    }

    /// The failed payment this one retries.
    async fn retry_of(&self) -> Option<ID> {
        self.0.retry_of.map(|id| global_id(Kind::Payment, id))
    }

    /// When the PSP accepted it.
    async fn sent_at(&self) -> Option<DateTime<Utc>> {
        self.0.sent_at
    }

    /// Every exchange with the PSP about this payment, oldest first.
    async fn attempts(&self, ctx: &Context<'_>) -> Result<Vec<PaymentAttemptNode>> {
        Ok(children::<payment_attempt::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(PaymentAttemptNode)
            .collect())
    }

    /// When it was decided.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// When it last moved.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// One exchange with the PSP: a submission, a status check, or a webhook.
pub struct PaymentAttemptNode(pub payment_attempt::Model);

/// One step of a payment's history: a submission, a status check or a webhook.
#[Object(name = "PaymentAttempt")]
impl PaymentAttemptNode {
    /// What the line records: a submission, a status check or a webhook.
    async fn kind(&self) -> Result<Via> {
        Via::from_stored(&self.0.kind)
    }

    /// `ACCEPTED`, `ERROR`, `SENT`, `SETTLED`, `FAILED`, `PROCESSING` or `UNKNOWN`.
    async fn outcome(&self) -> &str {
        &self.0.outcome
    }

    /// The webhook event id, the PSP's error, …
    async fn detail(&self) -> Option<&str> {
        self.0.detail.as_deref()
    }

    /// When it happened.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
}

/// A change to an escrow: what happened, and the escrow as it is now.
pub struct EscrowUpdate {
    event: EscrowUpdateEvent,
    escrow: escrow::Model,
}

/// A change to an escrow, as `escrowUpdated` sends it.
#[Object]
impl EscrowUpdate {
    /// What happened: `MILESTONE_PAID`, `PAYMENT_SETTLED`, `ESCROW_RELEASED`, …, or
    /// `RESYNC` when updates were skipped.
    async fn event(&self) -> EscrowUpdateEvent {
        self.event
    }

    /// The escrow after the change.
    async fn escrow(&self) -> EscrowNode {
        EscrowNode(self.escrow.clone())
    }
}

fn rank(status: PaymentStatus) -> u8 {
    match status {
        PaymentStatus::Pending => 0,
        PaymentStatus::Sent => 1,
        PaymentStatus::Settled | PaymentStatus::Failed => 2,
    }
}

/// The next update off the bus; after a lag, `None` in its place (the subscriber
/// re-reads what it follows).
async fn next_update(rx: &mut Following) -> Option<Option<Arc<Update>>> {
    match rx.recv().await {
        Ok(update) => Some(Some(update)),
        Err(RecvError::Lagged(skipped)) => {
            tracing::warn!(skipped, "a subscriber fell behind; re-reading");
            Some(None)
        }
        Err(RecvError::Closed) => None,
    }
}

#[derive(Default)]
pub struct PaymentsSubscription;

#[Subscription(guard = "access::Guard(access::Root::Subscription)")]
impl PaymentsSubscription {
    /// The payment now, then each move it makes, until it is SETTLED or FAILED.
    /// Visible to its parties and the tenant's support and admins; anyone else gets
    /// NOT_FOUND.
    #[graphql(visible = "access::visible::payment_updated")]
    async fn payment_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The payment to follow.")] payment_id: ID,
    ) -> Result<impl Stream<Item = PaymentNode> + use<>> {
        let id = ids::decode_as(Kind::Payment, &payment_id)?;
        let (db, caller, rx) = follow(ctx, |tenant, _| Topic::Payment(tenant, id))?;
        let current = crate::payments::visible(&db, &caller, id).await?;
        let state = (rx, db, Some(current), None::<u8>);
        Ok(stream::unfold(
            state,
            move |(mut rx, db, mut pending, mut last)| async move {
                loop {
                    let candidate = match pending.take() {
                        Some(p) => p,
                        None => {
                            if last.is_some_and(|r| r == 2) {
                                return None;
                            }
                            match next_update(&mut rx).await? {
                                Some(update) => match &*update {
                                    Update::Payment { payment, .. }
                                        if payment.id == id
                                            && payment.tenant_id == db.tenant().as_uuid() =>
                                    {
                                        payment.as_ref().clone()
                                    }
                                    _ => continue,
                                },
                                None => match db.find_by_id::<payment::Entity>(id).await {
                                    Ok(Some(p)) => p,
                                    _ => return None,
                                },
                            }
                        }
                    };
                    // Only forward: a report already passed is not repeated.
                    if last.is_some_and(|r| rank(candidate.status) <= r) {
                        continue;
                    }
                    last = Some(rank(candidate.status));
                    return Some((PaymentNode(candidate), (rx, db, None, last)));
                }
            },
        ))
    }

    /// Every change to the escrow (its state, a milestone, a payment), with the
    /// escrow as it is after it. Visible to its parties and the tenant's support and
    /// admins; anyone else gets NOT_FOUND.
    #[graphql(visible = "access::visible::escrow_updated")]
    async fn escrow_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The escrow to follow (you are a party, or its tenant's staff).")]
        escrow_id: ID,
    ) -> Result<impl Stream<Item = EscrowUpdate> + use<>> {
        let id = ids::decode_as(Kind::Escrow, &escrow_id)?;
        let (db, caller, rx) = follow(ctx, |tenant, _| Topic::Escrow(tenant, id))?;
        escrow_rules::visible(&db, &caller, id).await?;
        Ok(stream::unfold((rx, db), move |(mut rx, db)| async move {
            loop {
                let event = match next_update(&mut rx).await? {
                    Some(update) => match &*update {
                        Update::Escrow {
                            tenant_id,
                            escrow_id,
                            event,
                        } if *escrow_id == id && *tenant_id == db.tenant().as_uuid() => *event,
                        _ => continue,
                    },
                    None => EscrowUpdateEvent::Resync,
                };
                // The escrow as committed now, read through the caller's tenant.
                let escrow = db.find_by_id::<escrow::Entity>(id).await.ok()??;
                return Some((EscrowUpdate { event, escrow }, (rx, db)));
            }
        }))
    }

    /// Every move of a payment the caller takes part in (payee, payer, a party of
    /// its escrow or mandate); the tenant's support and admins get all of its
    /// payments.
    #[graphql(visible = "access::visible::my_payment_updates")]
    async fn my_payment_updates(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = PaymentNode> + use<>> {
        let (db, caller, rx) = follow(ctx, |tenant, caller| {
            if caller.is_staff() {
                Topic::TenantPayments(tenant)
            } else {
                Topic::PartyPayments(tenant, caller.user_id)
            }
        })?;
        let tenant = db.tenant().as_uuid();
        Ok(stream::unfold(
            (rx, caller),
            move |(mut rx, caller)| async move {
                loop {
                    // A lag skips what was missed; the client re-reads by query.
                    let Some(update) = next_update(&mut rx).await? else {
                        continue;
                    };
                    if let Update::Payment { payment, parties } = &*update
                        && payment.tenant_id == tenant
                        && (caller.is_staff() || parties.contains(&caller.user_id))
                    {
                        return Some((PaymentNode(payment.as_ref().clone()), (rx, caller)));
                    }
                }
            },
        ))
    }
}

/// What a subscription follows with: the caller's scoped handle, the caller, and a
/// subscription to the topic `topic` names for the caller's tenant, taken before
/// anything is read (so no committed update falls between the read and the first
/// event). The streams still check tenant and id: the topic routes, the check
/// decides.
fn follow(
    ctx: &Context<'_>,
    topic: impl FnOnce(Uuid, &Caller) -> Topic,
) -> Result<(TenantDb, Caller, Following)> {
    let caller = ctx.caller()?;
    let db = ctx.tenant_db()?.clone();
    let rx = ctx
        .services()?
        .bus
        .subscribe(topic(db.tenant().as_uuid(), &caller));
    Ok((db, caller, rx))
}

/// What `retryPayment` did (kept under its idempotency key).
#[derive(Serialize, Deserialize)]
pub struct Retried {
    payments: Vec<Uuid>,
}

impl MovesMoney for Retried {
    fn payments(&self) -> &[Uuid] {
        &self.payments
    }
}

#[derive(Default)]
pub struct PaymentsMutation;

#[Object(guard = "access::Guard(access::Root::Mutation)")]
impl PaymentsMutation {
    /// Retries a FAILED payment now, whatever the automatic policy would do: a new
    /// payment for the same payee and amount (`retryOf` the failed one). Its payer
    /// (or an admin who also holds `payments:execute`); needs `payments:execute` and
    /// a recent MFA step-up. A payment is
    /// retried once: again answers `CONFLICT` (`ALREADY_RETRIED`).
    #[graphql(visible = "access::visible::retry_payment")]
    async fn retry_payment(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The FAILED payment and your idempotency key.")] input: RetryPaymentInput,
    ) -> Result<RetryPaymentPayload> {
        let RetryPaymentInput {
            payment_id,
            idempotency_key,
        } = input;
        let id = ids::decode_as(Kind::Payment, &payment_id)?;
        let input = serde_json::json!({ "payment": id });
        let done: Retried = mutation::money_move(
            ctx,
            "retryPayment",
            &idempotency_key,
            &input,
            move |txn, act, caller| {
                Box::pin(async move {
                    let failed = crate::payments::visible(txn, &caller, id).await?;
                    let payer = crate::payments::parties(txn, &failed).await?.payer;
                    crate::rules::require(caller.is_admin() || payer == Some(caller.user_id))?;
                    let retry =
                        crate::payments::record_retry(txn, failed.id, act.actor, act.origin)
                            .await?;
                    Ok(Retried {
                        payments: vec![retry.id],
                    })
                })
            },
        )
        .await?;
        let retry = done
            .payments
            .first()
            .copied()
            .ok_or_else(|| Error::internal(anyhow::anyhow!("a retry without its payment")))?;
        Ok(RetryPaymentPayload(
            ctx.tenant_db()?.get::<payment::Entity>(retry).await?,
        ))
    }
}

/// A FAILED payment to retry.
#[derive(async_graphql::InputObject)]
pub struct RetryPaymentInput {
    /// The FAILED payment you made.
    pub payment_id: ID,
    /// Any 1 to 255 visible ASCII characters you choose for this operation: a retry
    /// with the same key and input answers what the first call answered, without
    /// doing it again; the same key with another input is CONFLICT
    /// (IDEMPOTENCY_KEY_REUSED).
    pub idempotency_key: String,
}

one_object_payload! {
    /// What `retryPayment` did.
    RetryPaymentPayload {
        /// The new payment (`retryOf` the failed one).
        payment: PaymentNode(payment::Model)
    }
}
