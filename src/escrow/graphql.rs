//! GraphQL for escrows. Resolvers authorize (scope guards here, party rules in
//! `rules`), call a rule in a transaction, and map the result.

use async_graphql::{
    Context, Enum, ID, InputObject, Json, Object, SimpleObject, Upload, connection::Connection,
};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, QueryFilter};
use serde::Serialize;
use uuid::Uuid;

use super::{
    inspect,
    rules::{self, Effect, Resolution},
};
use crate::{
    entity::{
        deposit,
        escrow::{self, EscrowStatus},
        escrow_event,
        milestone::{self, MilestoneStatus, ProofRequirement},
        payment,
        proof::{self, ProofKind, ProofStatus},
    },
    error::{Error, Result},
    graphql::{
        access,
        connection::{IdCursor, PageArgs, paginate},
        context::ContextExt,
        loaders::children,
        mutation,
        scalars::Decimal,
    },
    graphql::{node::global_id, scalars::MoneyValue},
    ids::{self, Kind},
    payments::graphql::PaymentNode,
};

// ------------------------------------------------------------------ nodes

/// Money held for a provider until delivery is proven.
pub struct EscrowNode(pub escrow::Model);

#[Object(name = "Escrow")]
impl EscrowNode {
    pub async fn id(&self) -> ID {
        global_id(Kind::Escrow, self.0.id)
    }

    async fn status(&self) -> EscrowStatus {
        self.0.status
    }

    async fn description(&self) -> &str {
        &self.0.description
    }

    /// The total to hold.
    async fn amount(&self) -> MoneyValue {
        MoneyValue::new(self.0.amount_minor, &self.0.currency)
    }

    /// Deposited so far.
    async fn funded(&self) -> MoneyValue {
        MoneyValue::new(self.0.funded_minor, &self.0.currency)
    }

    /// Paid out to the provider.
    async fn released(&self) -> MoneyValue {
        MoneyValue::new(self.0.released_minor, &self.0.currency)
    }

    /// Returned to the sender.
    async fn refunded(&self) -> MoneyValue {
        MoneyValue::new(self.0.refunded_minor, &self.0.currency)
    }

    /// Still held: funded minus released minus refunded.
    async fn held(&self) -> MoneyValue {
        MoneyValue::new(
            self.0.funded_minor - self.0.released_minor - self.0.refunded_minor,
            &self.0.currency,
        )
    }

    async fn sender_id(&self) -> ID {
        global_id(Kind::User, self.0.sender_id)
    }

    async fn provider_id(&self) -> ID {
        global_id(Kind::User, self.0.provider_id)
    }

    async fn deadline(&self) -> DateTime<Utc> {
        self.0.deadline
    }

    /// How long the sender has to approve or reject a delivery; when it lapses the
    /// escrow is released automatically. None: no automatic release.
    async fn inspection_period_seconds(&self) -> Option<i64> {
        self.0.inspection_seconds
    }

    async fn delivered_at(&self) -> Option<DateTime<Utc>> {
        self.0.delivered_at
    }

    async fn inspection_ends_at(&self) -> Option<DateTime<Utc>> {
        self.0.inspection_ends_at
    }

    /// When the deadline passed without a delivery; the sender may then refund.
    async fn refundable_at(&self) -> Option<DateTime<Utc>> {
        self.0.refundable_at
    }

    async fn dispute_reason(&self) -> Option<&str> {
        self.0.dispute_reason.as_deref()
    }

    /// The state a dispute froze.
    async fn disputed_from(&self) -> Option<EscrowStatus> {
        self.0.disputed_from
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// In order.
    async fn milestones(&self, ctx: &Context<'_>) -> Result<Vec<MilestoneNode>> {
        Ok(children::<milestone::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(|m| MilestoneNode(m, self.0.currency.clone()))
            .collect())
    }

    async fn deposits(&self, ctx: &Context<'_>) -> Result<Vec<DepositNode>> {
        Ok(children::<deposit::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(DepositNode)
            .collect())
    }

    async fn payments(&self, ctx: &Context<'_>) -> Result<Vec<PaymentNode>> {
        Ok(children::<payment::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(PaymentNode)
            .collect())
    }

    /// The timeline, oldest first.
    async fn events(&self, ctx: &Context<'_>) -> Result<Vec<EscrowEventNode>> {
        Ok(children::<escrow_event::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(EscrowEventNode)
            .collect())
    }
}

#[derive(SimpleObject)]
pub struct GeofenceValue {
    pub latitude: f64,
    pub longitude: f64,
    pub radius_meters: f64,
}

/// A part of the work, paid on its own once approved. Carries its escrow's currency.
pub struct MilestoneNode(pub milestone::Model, pub String);

#[Object(name = "Milestone")]
impl MilestoneNode {
    pub async fn id(&self) -> ID {
        global_id(Kind::Milestone, self.0.id)
    }

    async fn escrow_id(&self) -> ID {
        global_id(Kind::Escrow, self.0.escrow_id)
    }

    async fn position(&self) -> i32 {
        self.0.position
    }

    async fn title(&self) -> &str {
        &self.0.title
    }

    async fn amount(&self) -> MoneyValue {
        MoneyValue::new(self.0.amount_minor, &self.1)
    }

    async fn status(&self) -> MilestoneStatus {
        self.0.status
    }

    async fn proof_requirement(&self) -> ProofRequirement {
        self.0.proof_kind
    }

    async fn geofence(&self) -> Option<GeofenceValue> {
        match (
            self.0.geo_latitude,
            self.0.geo_longitude,
            self.0.geo_radius_m,
        ) {
            (Some(latitude), Some(longitude), Some(radius_meters)) => Some(GeofenceValue {
                latitude,
                longitude,
                radius_meters,
            }),
            _ => None,
        }
    }

    async fn window_start(&self) -> Option<DateTime<Utc>> {
        self.0.window_start
    }

    async fn window_end(&self) -> Option<DateTime<Utc>> {
        self.0.window_end
    }

    async fn proofs(&self, ctx: &Context<'_>) -> Result<Vec<ProofNode>> {
        Ok(children::<proof::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(ProofNode)
            .collect())
    }
}

pub struct ProofNode(pub proof::Model);

#[Object(name = "Proof")]
impl ProofNode {
    pub async fn id(&self) -> ID {
        global_id(Kind::Proof, self.0.id)
    }

    async fn milestone_id(&self) -> ID {
        global_id(Kind::Milestone, self.0.milestone_id)
    }

    async fn kind(&self) -> ProofKind {
        self.0.kind
    }

    async fn status(&self) -> ProofStatus {
        self.0.status
    }

    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }

    async fn filename(&self) -> Option<&str> {
        self.0.filename.as_deref()
    }

    /// The type found in the file's bytes (not the one the upload declared).
    async fn content_type(&self) -> Option<&str> {
        self.0.content_type.as_deref()
    }

    async fn size_bytes(&self) -> Option<i64> {
        self.0.size_bytes
    }

    /// Hex SHA-256 of the file.
    async fn sha256(&self) -> Option<&str> {
        self.0.sha256.as_deref()
    }

    /// From the photo's EXIF GPS tags.
    async fn latitude(&self) -> Option<f64> {
        self.0.latitude
    }

    async fn longitude(&self) -> Option<f64> {
        self.0.longitude
    }

    /// From the photo's EXIF capture time.
    async fn captured_at(&self) -> Option<DateTime<Utc>> {
        self.0.captured_at
    }

    /// Approved on arrival: a photo inside the geofence and time window.
    async fn decided_automatically(&self) -> bool {
        self.0.decided_automatically
    }

    async fn decided_by_id(&self) -> Option<ID> {
        self.0.decided_by.map(|id| global_id(Kind::User, id))
    }

    async fn decision_note(&self) -> Option<&str> {
        self.0.decision_note.as_deref()
    }

    async fn decided_at(&self) -> Option<DateTime<Utc>> {
        self.0.decided_at
    }

    async fn submitted_by_id(&self) -> ID {
        global_id(Kind::User, self.0.submitted_by)
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

pub struct DepositNode(pub deposit::Model);

#[Object(name = "Deposit")]
impl DepositNode {
    pub async fn id(&self) -> ID {
        global_id(Kind::Deposit, self.0.id)
    }

    async fn amount(&self) -> MoneyValue {
        MoneyValue::new(self.0.amount_minor, &self.0.currency)
    }

    async fn depositor_id(&self) -> ID {
        global_id(Kind::User, self.0.depositor_id)
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// One step of an escrow's timeline.
pub struct EscrowEventNode(pub escrow_event::Model);

#[Object(name = "EscrowEvent")]
impl EscrowEventNode {
    pub async fn id(&self) -> ID {
        global_id(Kind::EscrowEvent, self.0.id)
    }

    /// E.g. `escrow.funded`, `milestone.approved`, `escrow.deposit_received`.
    async fn kind(&self) -> &str {
        &self.0.kind
    }

    async fn from_status(&self) -> Option<&str> {
        self.0.from_status.as_deref()
    }

    async fn to_status(&self) -> Option<&str> {
        self.0.to_status.as_deref()
    }

    async fn milestone_id(&self) -> Option<ID> {
        self.0.milestone_id.map(|id| global_id(Kind::Milestone, id))
    }

    /// The user who acted; none when the system did (a job).
    async fn actor_id(&self) -> Option<ID> {
        self.0.actor_id.map(|id| global_id(Kind::User, id))
    }

    async fn data(&self) -> Json<serde_json::Value> {
        Json(self.0.data.clone())
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// What a money-moving mutation did. Replaying its idempotency key answers the
/// same deposit and payments again (with their current state).
pub struct EscrowPayload(Effect);

#[Object]
impl EscrowPayload {
    async fn escrow(&self, ctx: &Context<'_>) -> Result<EscrowNode> {
        Ok(EscrowNode(
            ctx.tenant_db()?
                .get::<escrow::Entity>(self.0.escrow)
                .await?,
        ))
    }

    /// The deposit `fundEscrow` made.
    async fn deposit(&self, ctx: &Context<'_>) -> Result<Option<DepositNode>> {
        match self.0.deposit {
            Some(id) => Ok(Some(DepositNode(
                ctx.tenant_db()?.get::<deposit::Entity>(id).await?,
            ))),
            None => Ok(None),
        }
    }

    /// Payments this mutation created (releases, refunds).
    async fn payments(&self, ctx: &Context<'_>) -> Result<Vec<PaymentNode>> {
        if self.0.payments.is_empty() {
            return Ok(vec![]);
        }
        let ids = self.0.payments.clone();
        let mut rows = ctx
            .tenant_db()?
            .list::<payment::Entity>(|q| q.filter(payment::Column::Id.is_in(ids)))
            .await?;
        rows.sort_by_key(|p| p.id);
        Ok(rows.into_iter().map(PaymentNode).collect())
    }
}

// ------------------------------------------------------------------ inputs

#[derive(InputObject, Serialize)]
pub struct GeofenceInput {
    pub latitude: f64,
    pub longitude: f64,
    pub radius_meters: f64,
}

#[derive(InputObject, Serialize)]
pub struct MilestoneInput {
    pub title: String,
    pub amount: Decimal,
    #[graphql(default_with = "ProofRequirement::None")]
    pub proof: ProofRequirement,
    /// Only for PHOTO: a photo taken inside it (and the window) is approved at once.
    pub geofence: Option<GeofenceInput>,
    /// The photo's capture time must be within [windowStart, windowEnd]; by default
    /// from the escrow's creation to now.
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
}

#[derive(InputObject, Serialize)]
pub struct CreateEscrowInput {
    /// The user to pay (a user of your tenant).
    pub provider_id: ID,
    pub amount: Decimal,
    /// ISO 4217, e.g. "EUR".
    pub currency: String,
    pub description: String,
    /// Deliver by then, or the sender may take the money back.
    pub deadline: DateTime<Utc>,
    /// Seconds the sender has to approve or reject a delivery before it is released
    /// automatically; none means no automatic release.
    pub inspection_period_seconds: Option<i64>,
    /// They must add up to `amount`. None: one milestone for the whole amount.
    #[graphql(default)]
    pub milestones: Vec<MilestoneInput>,
}

#[derive(Enum, Copy, Clone, PartialEq, Eq)]
pub enum EscrowRole {
    /// Escrows you pay.
    Sender,
    /// Escrows that pay you.
    Provider,
}

#[derive(InputObject, Default)]
pub struct EscrowFilter {
    pub status: Option<EscrowStatus>,
    /// Your side of the escrow.
    pub role: Option<EscrowRole>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

#[derive(Enum, Copy, Clone, PartialEq, Eq, Serialize)]
pub enum DisputeOutcome {
    /// Everything held goes to the provider.
    Release,
    /// Everything held goes back to the sender.
    Refund,
    /// `providerAmount` to the provider, the rest to the sender.
    Split,
}

// ------------------------------------------------------------------ helpers

fn escrow_id(id: &ID) -> Result<Uuid> {
    ids::decode_as(Kind::Escrow, id)
}

// ------------------------------------------------------------------ roots

#[derive(Default)]
pub struct EscrowQuery;

#[Object(guard = "access::Guard(access::Root::Query)")]
impl EscrowQuery {
    /// One escrow you are a party to (support and admins: any of the tenant's).
    #[graphql(visible = "access::visible::escrow")]
    async fn escrow(&self, ctx: &Context<'_>, id: ID) -> Result<EscrowNode> {
        let caller = ctx.caller()?;
        Ok(EscrowNode(
            rules::visible(ctx.tenant_db()?, &caller, escrow_id(&id)?).await?,
        ))
    }

    /// Escrows you are a party to (support and admins: the tenant's), oldest first.
    #[graphql(visible = "access::visible::escrows")]
    async fn escrows(
        &self,
        ctx: &Context<'_>,
        filter: Option<EscrowFilter>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<IdCursor, EscrowNode>> {
        let caller = ctx.caller()?;
        let filter = filter.unwrap_or_default();
        let me = caller.user_id;
        paginate::<escrow::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
            },
            move |mut q| {
                if let Some(cond) = rules::visibility(&caller) {
                    q = q.filter(cond);
                }
                if let Some(status) = filter.status {
                    q = q.filter(escrow::Column::Status.eq(status.as_str()));
                }
                match filter.role {
                    Some(EscrowRole::Sender) => q = q.filter(escrow::Column::SenderId.eq(me)),
                    Some(EscrowRole::Provider) => q = q.filter(escrow::Column::ProviderId.eq(me)),
                    None => {}
                }
                if let Some(t) = filter.created_after {
                    q = q.filter(escrow::Column::CreatedAt.gt(t));
                }
                if let Some(t) = filter.created_before {
                    q = q.filter(escrow::Column::CreatedAt.lt(t));
                }
                q
            },
            |m| (m.id, EscrowNode(m)),
        )
        .await
    }
}

#[derive(Default)]
pub struct EscrowMutation;

#[Object(guard = "access::Guard(access::Root::Mutation)")]
impl EscrowMutation {
    /// A new DRAFT escrow from you (a SENDER) to a provider.
    #[graphql(visible = "access::visible::create_escrow")]
    async fn create_escrow(
        &self,
        ctx: &Context<'_>,
        input: CreateEscrowInput,
        idempotency_key: String,
    ) -> Result<EscrowPayload> {
        let new = rules::NewEscrow {
            provider_id: ids::decode_as(Kind::User, &input.provider_id)?,
            amount: input.amount.0,
            currency: input.currency.clone(),
            description: input.description.clone(),
            deadline: input.deadline,
            inspection_seconds: input.inspection_period_seconds,
            milestones: input
                .milestones
                .iter()
                .map(|m| rules::NewMilestone {
                    title: m.title.clone(),
                    amount: m.amount.0,
                    proof: m.proof,
                    geofence: m.geofence.as_ref().map(|g| rules::Geofence {
                        latitude: g.latitude,
                        longitude: g.longitude,
                        radius_m: g.radius_meters,
                    }),
                    window_start: m.window_start,
                    window_end: m.window_end,
                })
                .collect(),
        };
        mutation::money_move(
            ctx,
            "createEscrow",
            &idempotency_key,
            &input,
            move |txn, act, caller| {
                Box::pin(async move { rules::create(txn, act, &caller, new).await })
            },
        )
        .await
        .map(EscrowPayload)
    }

    /// A deposit into a DRAFT escrow you send; the one that reaches the total makes
    /// it FUNDED. A deposit above what remains is refused.
    #[graphql(visible = "access::visible::fund_escrow")]
    async fn fund_escrow(
        &self,
        ctx: &Context<'_>,
        escrow_id: ID,
        amount: Decimal,
        idempotency_key: String,
    ) -> Result<EscrowPayload> {
        let id = self::escrow_id(&escrow_id)?;
        let input = serde_json::json!({ "escrow": id, "amount": amount });
        mutation::money_move(
            ctx,
            "fundEscrow",
            &idempotency_key,
            &input,
            move |txn, act, caller| {
                Box::pin(async move { rules::fund(txn, act, &caller, id, amount.0).await })
            },
        )
        .await
        .map(EscrowPayload)
    }

    /// The sender withdraws a DRAFT escrow, or the provider a FUNDED one before
    /// anything was paid; deposits are refunded.
    #[graphql(visible = "access::visible::cancel_escrow")]
    async fn cancel_escrow(
        &self,
        ctx: &Context<'_>,
        escrow_id: ID,
        reason: Option<String>,
        idempotency_key: String,
    ) -> Result<EscrowPayload> {
        let id = self::escrow_id(&escrow_id)?;
        let input = serde_json::json!({ "escrow": id, "reason": reason });
        mutation::money_move(
            ctx,
            "cancelEscrow",
            &idempotency_key,
            &input,
            move |txn, act, caller| {
                Box::pin(async move { rules::cancel(txn, act, &caller, id, reason).await })
            },
        )
        .await
        .map(EscrowPayload)
    }

    /// The sender takes back an undelivered escrow once its deadline has passed.
    #[graphql(visible = "access::visible::refund_escrow")]
    async fn refund_escrow(
        &self,
        ctx: &Context<'_>,
        escrow_id: ID,
        idempotency_key: String,
    ) -> Result<EscrowPayload> {
        let id = self::escrow_id(&escrow_id)?;
        let input = serde_json::json!({ "escrow": id });
        mutation::money_move(
            ctx,
            "refundEscrow",
            &idempotency_key,
            &input,
            move |txn, act, caller| {
                Box::pin(async move { rules::refund(txn, act, &caller, id).await })
            },
        )
        .await
        .map(EscrowPayload)
    }

    /// The sender pays one APPROVED milestone. Needs a recent MFA step-up.
    #[graphql(visible = "access::visible::release_milestone")]
    async fn release_milestone(
        &self,
        ctx: &Context<'_>,
        milestone_id: ID,
        idempotency_key: String,
    ) -> Result<EscrowPayload> {
        let id = ids::decode_as(Kind::Milestone, &milestone_id)?;
        let input = serde_json::json!({ "milestone": id });
        mutation::money_move(
            ctx,
            "releaseMilestone",
            &idempotency_key,
            &input,
            move |txn, act, caller| {
                Box::pin(async move { rules::release_milestone(txn, act, &caller, id).await })
            },
        )
        .await
        .map(EscrowPayload)
    }

    /// The sender releases everything the escrow holds to the provider (milestones
    /// not approved yet are approved by this). Needs a recent MFA step-up.
    #[graphql(visible = "access::visible::release_escrow")]
    async fn release_escrow(
        &self,
        ctx: &Context<'_>,
        escrow_id: ID,
        idempotency_key: String,
    ) -> Result<EscrowPayload> {
        let id = self::escrow_id(&escrow_id)?;
        let input = serde_json::json!({ "escrow": id });
        mutation::money_move(
            ctx,
            "releaseEscrow",
            &idempotency_key,
            &input,
            move |txn, act, caller| {
                Box::pin(async move { rules::release(txn, act, &caller, id).await })
            },
        )
        .await
        .map(EscrowPayload)
    }

    /// An admin settles a dispute. Needs a recent MFA step-up.
    #[graphql(visible = "access::visible::resolve_dispute")]
    async fn resolve_dispute(
        &self,
        ctx: &Context<'_>,
        escrow_id: ID,
        outcome: DisputeOutcome,
        #[graphql(desc = "For SPLIT: what the provider gets; the sender gets the rest.")]
        provider_amount: Option<Decimal>,
        note: Option<String>,
        idempotency_key: String,
    ) -> Result<EscrowPayload> {
        let id = self::escrow_id(&escrow_id)?;
        let resolution = match (outcome, provider_amount) {
            (DisputeOutcome::Release, None) => Resolution::Release,
            (DisputeOutcome::Refund, None) => Resolution::Refund,
            (DisputeOutcome::Split, Some(amount)) => Resolution::Split {
                provider_amount: amount.0,
            },
            (DisputeOutcome::Split, None) => {
                return Err(Error::bad_field(
                    "providerAmount",
                    "a SPLIT needs providerAmount",
                ));
            }
            (_, Some(_)) => {
                return Err(Error::bad_field(
                    "providerAmount",
                    "providerAmount is only for SPLIT",
                ));
            }
        };
        let input = serde_json::json!({ "escrow": id, "resolution": resolution, "note": note });
        mutation::money_move(
            ctx,
            "resolveDispute",
            &idempotency_key,
            &input,
            move |txn, act, caller| {
                Box::pin(async move {
                    rules::resolve_dispute(txn, act, &caller, id, resolution, note).await
                })
            },
        )
        .await
        .map(EscrowPayload)
    }

    /// The provider says the work is delivered; the inspection window starts.
    #[graphql(visible = "access::visible::mark_delivered")]
    async fn mark_delivered(
        &self,
        ctx: &Context<'_>,
        escrow_id: ID,
        note: Option<String>,
    ) -> Result<EscrowNode> {
        let id = self::escrow_id(&escrow_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::mark_delivered(txn, act, &caller, id, note)
                    .await
                    .map(EscrowNode)
            })
        })
        .await
    }

    /// The sender accepts the delivery (within the inspection window).
    #[graphql(visible = "access::visible::approve_escrow")]
    async fn approve_escrow(&self, ctx: &Context<'_>, escrow_id: ID) -> Result<EscrowNode> {
        let id = self::escrow_id(&escrow_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move { rules::approve(txn, act, &caller, id).await.map(EscrowNode) })
        })
        .await
    }

    /// The sender refuses the delivery (within the inspection window); the provider
    /// may deliver again.
    #[graphql(visible = "access::visible::reject_escrow")]
    async fn reject_escrow(
        &self,
        ctx: &Context<'_>,
        escrow_id: ID,
        reason: String,
    ) -> Result<EscrowNode> {
        let id = self::escrow_id(&escrow_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::reject(txn, act, &caller, id, reason)
                    .await
                    .map(EscrowNode)
            })
        })
        .await
    }

    /// Either party freezes the escrow until an admin resolves the dispute.
    #[graphql(visible = "access::visible::open_dispute")]
    async fn open_dispute(
        &self,
        ctx: &Context<'_>,
        escrow_id: ID,
        reason: String,
    ) -> Result<EscrowNode> {
        let id = self::escrow_id(&escrow_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::open_dispute(txn, act, &caller, id, reason)
                    .await
                    .map(EscrowNode)
            })
        })
        .await
    }

    /// The provider proves a milestone: a note, and/or a JPEG, PNG or PDF sent as a
    /// GraphQL multipart request. A photo taken inside the milestone's geofence and
    /// window is approved at once.
    #[graphql(visible = "access::visible::submit_proof")]
    async fn submit_proof(
        &self,
        ctx: &Context<'_>,
        milestone_id: ID,
        note: Option<String>,
        file: Option<Upload>,
    ) -> Result<ProofNode> {
        let id = ids::decode_as(Kind::Milestone, &milestone_id)?;
        let db = ctx.tenant_db()?;
        let caller = ctx.caller()?;
        // Check the caller may prove it before anything is stored.
        let (esc, _) = rules::visible_milestone(db, &caller, id).await?;
        if esc.provider_id != caller.user_id {
            return Err(Error::Forbidden);
        }
        let stored = match file {
            None => None,
            Some(upload) => {
                let services = ctx.services()?;
                let value = upload
                    .value(ctx)
                    .map_err(|_| Error::bad_field("file", "the upload could not be read"))?;
                let inspected = inspect::inspect(&value.content, services.proof_max_bytes)?;
                let key = format!("{}/{}", db.tenant().as_uuid().simple(), inspected.sha256);
                services.proofs.put(&key, &value.content).await?;
                Some(rules::StoredFile {
                    filename: clean_filename(&value.filename),
                    storage_key: key,
                    inspected,
                })
            }
        };
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::submit_proof(txn, act, &caller, id, note, stored)
                    .await
                    .map(ProofNode)
            })
        })
        .await
    }

    /// The sender (or support, or an admin) accepts or refuses a pending proof.
    #[graphql(visible = "access::visible::decide_proof")]
    async fn decide_proof(
        &self,
        ctx: &Context<'_>,
        proof_id: ID,
        accept: bool,
        note: Option<String>,
    ) -> Result<ProofNode> {
        let id = ids::decode_as(Kind::Proof, &proof_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::decide_proof(txn, act, &caller, id, accept, note)
                    .await
                    .map(ProofNode)
            })
        })
        .await
    }
}

/// The last path segment, printable characters only, at most 255 bytes.
fn clean_filename(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut name: String = base.chars().filter(|c| !c.is_control()).collect();
    while name.len() > 255 {
        name.pop();
    }
    if name.is_empty() {
        "upload".to_owned()
    } else {
        name
    }
}
