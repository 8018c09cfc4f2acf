//! GraphQL for escrows. Resolvers authorize (scope guards here, party rules in
//! `rules`), call a rule in a transaction, and map the result.

use crate::graphql::mutation::one_object_payload;
use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject, Upload};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, QueryFilter};
use serde::Serialize;
use uuid::Uuid;

use super::{
    inspect,
    rules::{self, Effect, Resolution},
};
use crate::{
    accounts::graphql::{PartyNode, party},
    entity::{
        deposit,
        escrow::{self, EscrowStatus},
        escrow_event,
        milestone::{self, MilestoneStatus, ProofRequirement},
        payment,
        proof::{self, ProofKind, ProofStatus},
    },
    error::{Error, Result},
    graphql::loaders::by_id,
    graphql::{
        access,
        connection::{ListOrder, Page, PageArgs, paginate},
        context::ContextExt,
        loaders::children,
        mutation,
        scalars::Decimal,
    },
    graphql::{node::global_id, scalars::MoneyValue},
    ids::{self, Kind},
    kinds::EscrowEventKind,
    ledger::{self, graphql::LedgerEntryNode},
    payments::graphql::PaymentNode,
};

// ------------------------------------------------------------------ nodes

/// Money held for a provider until delivery is proven.
pub struct EscrowNode(pub escrow::Model);

/// Money a sender holds for a provider until the work is proven, released in milestones.
#[Object(name = "Escrow")]
impl EscrowNode {
    /// The escrow's global id.
    pub async fn id(&self) -> ID {
        global_id(Kind::Escrow, self.0.id)
    }

    /// Where the escrow stands in its life.
    async fn status(&self) -> EscrowStatus {
        self.0.status
    }

    /// What the money pays for.
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

    /// The user who pays (the SENDER).
    #[graphql(deprecation = "Use `sender { userId }`.")]
    async fn sender_id(&self) -> ID {
        global_id(Kind::User, self.0.sender_id)
    }

    /// The user who is paid.
    #[graphql(deprecation = "Use `provider { userId }`.")]
    async fn provider_id(&self) -> ID {
        global_id(Kind::User, self.0.provider_id)
    }

    /// The user who pays (the SENDER), as a party sees them.
    async fn sender(&self, ctx: &Context<'_>) -> Result<PartyNode> {
        party(ctx, self.0.sender_id).await
    }

    /// The user who is paid, as a party sees them.
    async fn provider(&self, ctx: &Context<'_>) -> Result<PartyNode> {
        party(ctx, self.0.provider_id).await
    }

    /// Deliver by then, or the sender may take the money back.
    async fn deadline(&self) -> DateTime<Utc> {
        self.0.deadline
    }

    /// How long the sender has to approve or reject a delivery; when it lapses the
    /// escrow is released automatically. None: no automatic release.
    async fn inspection_period_seconds(&self) -> Option<i64> {
        self.0.inspection_seconds
    }

    /// When the provider said the work was delivered.
    async fn delivered_at(&self) -> Option<DateTime<Utc>> {
        self.0.delivered_at
    }

    /// When a delivery not approved or rejected by then is released automatically.
    async fn inspection_ends_at(&self) -> Option<DateTime<Utc>> {
        self.0.inspection_ends_at
    }

    /// When the deadline passed without a delivery; the sender may then refund.
    async fn refundable_at(&self) -> Option<DateTime<Utc>> {
        self.0.refundable_at
    }

    /// Why a party opened the dispute, if one is open or was.
    async fn dispute_reason(&self) -> Option<&str> {
        self.0.dispute_reason.as_deref()
    }

    /// The state a dispute froze.
    async fn disputed_from(&self) -> Option<EscrowStatus> {
        self.0.disputed_from
    }

    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// When it last changed.
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

    /// The deposits that funded it, oldest first.
    async fn deposits(&self, ctx: &Context<'_>) -> Result<Vec<DepositNode>> {
        Ok(children::<deposit::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(DepositNode)
            .collect())
    }

    /// The payments out of it (releases, refunds, payouts), oldest first.
    #[graphql(deprecation = "Unbounded: use paymentsConnection, a page at a time.")]
    async fn payments(&self, ctx: &Context<'_>) -> Result<Vec<PaymentNode>> {
        Ok(children::<payment::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(PaymentNode)
            .collect())
    }

    /// Its ledger entries, oldest first: the deposits into it, the payments out of it,
    /// and their settlement (or failure and retry) by the PSP.
    async fn ledger_entries(&self, ctx: &Context<'_>) -> Result<Vec<LedgerEntryNode>> {
        let payments: Vec<Uuid> = children::<payment::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect();
        let db = ctx.tenant_db()?;
        Ok(
            ledger::entries_of(db, &ledger::Account::Escrow(self.0.id), &payments)
                .await?
                .into_iter()
                .map(LedgerEntryNode)
                .collect(),
        )
    }

    /// The timeline, oldest first.
    #[graphql(deprecation = "Unbounded: use eventsConnection, a page at a time.")]
    async fn events(&self, ctx: &Context<'_>) -> Result<Vec<EscrowEventNode>> {
        Ok(children::<escrow_event::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(EscrowEventNode)
            .collect())
    }

    /// The payments out of it (releases, refunds, payouts), a page at a time.
    // The Relay arguments and the order: one per GraphQL argument.
    #[allow(clippy::too_many_arguments)]
    async fn payments_connection(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A cursor from an earlier page: the items after it.")] after: Option<
            String,
        >,
        #[graphql(desc = "A cursor from an earlier page: the items before it.")] before: Option<
            String,
        >,
        #[graphql(
            desc = "At most this many items from the start (or after `after`); at most SEQUESTRA_GRAPHQL_MAX_PAGE_SIZE (100)."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "At most this many items from the end (or before `before`); at most SEQUESTRA_GRAPHQL_MAX_PAGE_SIZE (100)."
        )]
        last: Option<i32>,
        #[graphql(desc = "Oldest first (the default) or newest first.")] order_by: Option<
            ListOrder,
        >,
    ) -> async_graphql::Result<Page<PaymentNode>> {
        let parent = self.0.id;
        paginate::<payment::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
                order: order_by.unwrap_or_default(),
            },
            move |q| q.filter(payment::Column::EscrowId.eq(parent)),
            |m| (m.id, PaymentNode(m)),
        )
        .await
    }

    /// Its timeline, a page at a time.
    // The Relay arguments and the order: one per GraphQL argument.
    #[allow(clippy::too_many_arguments)]
    async fn events_connection(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A cursor from an earlier page: the items after it.")] after: Option<
            String,
        >,
        #[graphql(desc = "A cursor from an earlier page: the items before it.")] before: Option<
            String,
        >,
        #[graphql(
            desc = "At most this many items from the start (or after `after`); at most SEQUESTRA_GRAPHQL_MAX_PAGE_SIZE (100)."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "At most this many items from the end (or before `before`); at most SEQUESTRA_GRAPHQL_MAX_PAGE_SIZE (100)."
        )]
        last: Option<i32>,
        #[graphql(desc = "Oldest first (the default) or newest first.")] order_by: Option<
            ListOrder,
        >,
    ) -> async_graphql::Result<Page<EscrowEventNode>> {
        let parent = self.0.id;
        paginate::<escrow_event::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
                order: order_by.unwrap_or_default(),
            },
            move |q| q.filter(escrow_event::Column::EscrowId.eq(parent)),
            |m| (m.id, EscrowEventNode(m)),
        )
        .await
    }
}

/// A circle on the map a photo proof must be taken in.
#[derive(SimpleObject)]
pub struct GeofenceValue {
    /// The centre's latitude, in degrees (WGS 84).
    pub latitude: f64,
    /// The centre's longitude, in degrees (WGS 84).
    pub longitude: f64,
    /// The circle's radius, in meters.
    pub radius_meters: f64,
}

/// A part of the work, paid on its own once approved. Carries its escrow's currency.
pub struct MilestoneNode(pub milestone::Model, pub String);

/// A part of an escrow, proven and paid on its own.
#[Object(name = "Milestone")]
impl MilestoneNode {
    /// The milestone's global id.
    pub async fn id(&self) -> ID {
        global_id(Kind::Milestone, self.0.id)
    }

    /// The escrow it belongs to.
    #[graphql(deprecation = "Use `escrow { id }`.")]
    async fn escrow_id(&self) -> ID {
        global_id(Kind::Escrow, self.0.escrow_id)
    }

    /// The escrow it belongs to (whoever sees a milestone sees its escrow).
    async fn escrow(&self, ctx: &Context<'_>) -> Result<EscrowNode> {
        by_id::<escrow::Entity>(ctx, self.0.escrow_id)
            .await
            .map(EscrowNode)
    }

    /// Its place in the escrow, from 1.
    async fn position(&self) -> i32 {
        self.0.position
    }

    /// What is to be done.
    async fn title(&self) -> &str {
        &self.0.title
    }

    /// What it pays.
    async fn amount(&self) -> MoneyValue {
        MoneyValue::new(self.0.amount_minor, &self.1)
    }

    /// Where it stands: waiting for a proof, in review, approved, paying, paid.
    async fn status(&self) -> MilestoneStatus {
        self.0.status
    }

    /// What proof it needs before it can be approved.
    async fn proof_requirement(&self) -> ProofRequirement {
        self.0.proof_kind
    }

    /// Where a photo proof must be taken, if anywhere.
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

    /// A photo proof must be taken at or after this time, if set.
    async fn window_start(&self) -> Option<DateTime<Utc>> {
        self.0.window_start
    }

    /// A photo proof must be taken before this time, if set.
    async fn window_end(&self) -> Option<DateTime<Utc>> {
        self.0.window_end
    }

    /// The proofs submitted for it, oldest first.
    async fn proofs(&self, ctx: &Context<'_>) -> Result<Vec<ProofNode>> {
        Ok(children::<proof::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(ProofNode)
            .collect())
    }
}

pub struct ProofNode(pub proof::Model);

/// Evidence a provider submits for a milestone: a note, a document or a photo.
#[Object(name = "Proof")]
impl ProofNode {
    /// The proof's global id.
    pub async fn id(&self) -> ID {
        global_id(Kind::Proof, self.0.id)
    }

    /// The milestone it proves.
    async fn milestone_id(&self) -> ID {
        global_id(Kind::Milestone, self.0.milestone_id)
    }

    /// What was submitted.
    async fn kind(&self) -> ProofKind {
        self.0.kind
    }

    /// Whether it was accepted.
    async fn status(&self) -> ProofStatus {
        self.0.status
    }

    /// The provider's note.
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }

    /// The uploaded file's name, if a file was sent.
    async fn filename(&self) -> Option<&str> {
        self.0.filename.as_deref()
    }

    /// The type found in the file's bytes (not the one the upload declared).
    async fn content_type(&self) -> Option<&str> {
        self.0.content_type.as_deref()
    }

    /// The uploaded file's size, in bytes.
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

    /// From the photo's EXIF GPS tags.
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

    /// Who accepted or rejected it; none when decided automatically.
    async fn decided_by_id(&self) -> Option<ID> {
        self.0.decided_by.map(|id| global_id(Kind::User, id))
    }

    /// Why it was accepted or rejected.
    async fn decision_note(&self) -> Option<&str> {
        self.0.decision_note.as_deref()
    }

    /// When it was decided.
    async fn decided_at(&self) -> Option<DateTime<Utc>> {
        self.0.decided_at
    }

    /// Who submitted it (the provider).
    async fn submitted_by_id(&self) -> ID {
        global_id(Kind::User, self.0.submitted_by)
    }

    /// When it was submitted.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

pub struct DepositNode(pub deposit::Model);

/// Money the sender put into an escrow.
#[Object(name = "Deposit")]
impl DepositNode {
    /// The deposit's global id.
    pub async fn id(&self) -> ID {
        global_id(Kind::Deposit, self.0.id)
    }

    /// How much, in the escrow's currency.
    async fn amount(&self) -> MoneyValue {
        MoneyValue::new(self.0.amount_minor, &self.0.currency)
    }

    /// Who deposited it (the sender).
    async fn depositor_id(&self) -> ID {
        global_id(Kind::User, self.0.depositor_id)
    }

    /// When it was recorded.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// One step of an escrow's timeline.
pub struct EscrowEventNode(pub escrow_event::Model);

/// Who acted in an escrow event.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum EscrowActor {
    /// The escrow's sender.
    Sender,
    /// The escrow's provider.
    Provider,
    /// A member of the tenant's staff (an admin resolving a dispute, say).
    Staff,
    /// The system: a job (an automatic release, a deadline) or a PSP's webhook.
    System,
}

impl EscrowEventNode {
    /// The acting user, if the caller may know who: a party of the escrow, or anyone
    /// when the caller is staff.
    async fn visible_actor(&self, ctx: &Context<'_>) -> Result<Option<Uuid>> {
        let Some(actor) = self.0.actor_id else {
            return Ok(None);
        };
        if !ctx.caller()?.is_staff() {
            let esc = by_id::<escrow::Entity>(ctx, self.0.escrow_id).await?;
            if actor != esc.sender_id && actor != esc.provider_id {
                return Ok(None);
            }
        }
        Ok(Some(actor))
    }
}

/// One change of an escrow or of one of its milestones, in order.
#[Object(name = "EscrowEvent")]
impl EscrowEventNode {
    /// The event's global id.
    pub async fn id(&self) -> ID {
        global_id(Kind::EscrowEvent, self.0.id)
    }

    /// What happened, e.g. `ESCROW_FUNDED`, `MILESTONE_APPROVED`.
    async fn kind(&self) -> Result<EscrowEventKind> {
        EscrowEventKind::from_stored(&self.0.kind)
    }

    /// The status before, when the status changed.
    async fn from_status(&self) -> Option<&str> {
        self.0.from_status.as_deref()
    }

    /// The status after, when the status changed.
    async fn to_status(&self) -> Option<&str> {
        self.0.to_status.as_deref()
    }

    /// The milestone it concerns, if any.
    async fn milestone_id(&self) -> Option<ID> {
        self.0.milestone_id.map(|id| global_id(Kind::Milestone, id))
    }

    /// The user who acted; none when the system did (a job), and, as for `actor`, when
    /// a member of staff did and the caller is not staff.
    #[graphql(deprecation = "Use `actedBy`, and `actor` for who they are.")]
    async fn actor_id(&self, ctx: &Context<'_>) -> Result<Option<ID>> {
        Ok(self
            .visible_actor(ctx)
            .await?
            .map(|id| global_id(Kind::User, id)))
    }

    /// Which side acted: the sender, the provider, the tenant's staff or the system.
    async fn acted_by(&self, ctx: &Context<'_>) -> Result<EscrowActor> {
        let Some(actor) = self.0.actor_id else {
            return Ok(EscrowActor::System);
        };
        let esc = by_id::<escrow::Entity>(ctx, self.0.escrow_id).await?;
        Ok(if actor == esc.sender_id {
            EscrowActor::Sender
        } else if actor == esc.provider_id {
            EscrowActor::Provider
        } else {
            EscrowActor::Staff
        })
    }

    /// The user who acted, as a party sees them. None when the system acted, and when
    /// a member of the tenant's staff did and the caller is not staff: a party learns
    /// that staff acted (`actedBy`), not who.
    async fn actor(&self, ctx: &Context<'_>) -> Result<Option<PartyNode>> {
        match self.visible_actor(ctx).await? {
            Some(actor) => party(ctx, actor).await.map(Some),
            None => Ok(None),
        }
    }

    /// The event's details (amounts, reasons, payment ids), as JSON.
    async fn data(&self) -> Json<serde_json::Value> {
        Json(self.0.data.clone())
    }

    /// When it happened.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// What an escrow mutation did. Replaying a money-moving one's idempotency key
/// answers the same deposit and payments again (with their current state).
pub struct EscrowPayload(Effect);

impl EscrowPayload {
    /// What a mutation that moved no money did to `escrow`.
    fn of(escrow: escrow::Model) -> Self {
        Self(Effect {
            escrow: escrow.id,
            deposit: None,
            payments: Vec::new(),
        })
    }
}

/// What an escrow mutation did.
#[Object]
impl EscrowPayload {
    /// The escrow as it is now.
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

/// A circle on the map a photo proof must be taken in.
#[derive(InputObject, Serialize)]
pub struct GeofenceInput {
    /// The centre's latitude, in degrees (WGS 84).
    pub latitude: f64,
    /// The centre's longitude, in degrees (WGS 84).
    pub longitude: f64,
    /// The circle's radius, in meters.
    pub radius_meters: f64,
}

/// A milestone of a new escrow.
#[derive(InputObject, Serialize)]
pub struct MilestoneInput {
    /// What is to be done.
    pub title: String,
    /// What it pays; the milestones add up to the escrow's amount.
    pub amount: Decimal,
    /// What proof it needs.
    #[graphql(default_with = "ProofRequirement::None")]
    pub proof: ProofRequirement,
    /// Only for PHOTO: a photo taken inside it (and the window) is approved at once.
    pub geofence: Option<GeofenceInput>,
    /// The photo's capture time must be within [windowStart, windowEnd]; by default
    /// from the escrow's creation to now.
    pub window_start: Option<DateTime<Utc>>,
    /// A photo proof must be taken before this time.
    pub window_end: Option<DateTime<Utc>>,
}

/// A new escrow from you (the SENDER) to a provider.
#[derive(InputObject, Serialize)]
pub struct CreateEscrowInput {
    /// The user to pay (a user of your tenant).
    pub provider_id: ID,
    /// The total to hold, in `currency`.
    pub amount: Decimal,
    /// ISO 4217, e.g. "EUR".
    pub currency: String,
    /// What the money pays for, shown to both parties.
    pub description: String,
    /// Deliver by then, or the sender may take the money back.
    pub deadline: DateTime<Utc>,
    /// Seconds the sender has to approve or reject a delivery before it is released
    /// automatically; none means no automatic release.
    pub inspection_period_seconds: Option<i64>,
    /// They must add up to `amount`. None: one milestone for the whole amount.
    #[graphql(default)]
    pub milestones: Vec<MilestoneInput>,
    /// Any 1 to 255 visible ASCII characters you choose for this operation: a retry
    /// with the same key and input answers what the first call answered, without
    /// doing it again; the same key with another input is CONFLICT
    /// (IDEMPOTENCY_KEY_REUSED).
    #[serde(skip)]
    pub idempotency_key: String,
}

/// A deposit into a DRAFT escrow you send.
#[derive(InputObject)]
pub struct FundEscrowInput {
    /// The DRAFT escrow you send.
    pub escrow_id: ID,
    /// The deposit, in the escrow's currency; at most what remains to fund.
    pub amount: Decimal,
    /// Any 1 to 255 visible ASCII characters you choose for this operation: a retry
    /// with the same key and input answers what the first call answered, without
    /// doing it again; the same key with another input is CONFLICT
    /// (IDEMPOTENCY_KEY_REUSED).
    pub idempotency_key: String,
}

/// An escrow to cancel.
#[derive(InputObject)]
pub struct CancelEscrowInput {
    /// The escrow to cancel.
    pub escrow_id: ID,
    /// Why, for the other party and the audit log.
    pub reason: Option<String>,
    /// Any 1 to 255 visible ASCII characters you choose for this operation: a retry
    /// with the same key and input answers what the first call answered, without
    /// doing it again; the same key with another input is CONFLICT
    /// (IDEMPOTENCY_KEY_REUSED).
    pub idempotency_key: String,
}

/// An undelivered escrow to take back.
#[derive(InputObject)]
pub struct RefundEscrowInput {
    /// The escrow you send, past its deadline and not delivered.
    pub escrow_id: ID,
    /// Any 1 to 255 visible ASCII characters you choose for this operation: a retry
    /// with the same key and input answers what the first call answered, without
    /// doing it again; the same key with another input is CONFLICT
    /// (IDEMPOTENCY_KEY_REUSED).
    pub idempotency_key: String,
}

/// An APPROVED milestone to pay.
#[derive(InputObject)]
pub struct ReleaseMilestoneInput {
    /// The APPROVED milestone to pay.
    pub milestone_id: ID,
    /// Any 1 to 255 visible ASCII characters you choose for this operation: a retry
    /// with the same key and input answers what the first call answered, without
    /// doing it again; the same key with another input is CONFLICT
    /// (IDEMPOTENCY_KEY_REUSED).
    pub idempotency_key: String,
}

/// An escrow to release whole.
#[derive(InputObject)]
pub struct ReleaseEscrowInput {
    /// The escrow you send.
    pub escrow_id: ID,
    /// Any 1 to 255 visible ASCII characters you choose for this operation: a retry
    /// with the same key and input answers what the first call answered, without
    /// doing it again; the same key with another input is CONFLICT
    /// (IDEMPOTENCY_KEY_REUSED).
    pub idempotency_key: String,
}

/// A delivery to announce.
#[derive(InputObject)]
pub struct MarkDeliveredInput {
    /// The escrow you provide.
    pub escrow_id: ID,
    /// What was delivered, for the sender.
    pub note: Option<String>,
}

/// A delivery to accept.
#[derive(InputObject)]
pub struct ApproveEscrowInput {
    /// The escrow whose delivery you accept.
    pub escrow_id: ID,
}

/// A delivery to refuse.
#[derive(InputObject)]
pub struct RejectEscrowInput {
    /// The escrow whose delivery you refuse.
    pub escrow_id: ID,
    /// What is missing, for the provider.
    pub reason: String,
}

/// A dispute to open.
#[derive(InputObject)]
pub struct OpenDisputeInput {
    /// The escrow you are a party to.
    pub escrow_id: ID,
    /// What went wrong, for the other party and the admins.
    pub reason: String,
}

/// A proof for a milestone.
#[derive(InputObject)]
pub struct SubmitProofInput {
    /// The milestone it proves (of an escrow you provide).
    pub milestone_id: ID,
    /// What the proof shows.
    pub note: Option<String>,
    /// A JPEG, PNG or PDF (GraphQL multipart request: map the file to the variable
    /// given here), at most SEQUESTRA_PROOF_MAX_BYTES.
    pub file: Option<Upload>,
}

one_object_payload! {
    /// What `submitProof` did.
    SubmitProofPayload {
        /// The proof submitted (a photo inside its geofence is already approved).
        proof: ProofNode(proof::Model)
    }
}

/// A decision on a pending proof.
#[derive(InputObject)]
pub struct DecideProofInput {
    /// The pending proof.
    pub proof_id: ID,
    /// true approves the proof (and its milestone), false rejects it.
    pub accept: bool,
    /// Why, for the provider.
    pub note: Option<String>,
}

one_object_payload! {
    /// What `decideProof` did.
    DecideProofPayload {
        /// The proof, decided (its milestone approved with it when accepted).
        proof: ProofNode(proof::Model)
    }
}

/// How an admin settles a dispute.
#[derive(InputObject)]
pub struct ResolveDisputeInput {
    /// The DISPUTED escrow.
    pub escrow_id: ID,
    /// Who gets the money: the provider, the sender, or a split.
    pub outcome: DisputeOutcome,
    /// For SPLIT: what the provider gets; the sender gets the rest.
    pub provider_amount: Option<Decimal>,
    /// The decision's reasons, for both parties and the audit log.
    pub note: Option<String>,
    /// Any 1 to 255 visible ASCII characters you choose for this operation: a retry
    /// with the same key and input answers what the first call answered, without
    /// doing it again; the same key with another input is CONFLICT
    /// (IDEMPOTENCY_KEY_REUSED).
    pub idempotency_key: String,
}

/// Your part in an escrow.
#[derive(Enum, Copy, Clone, PartialEq, Eq)]
pub enum EscrowRole {
    /// Escrows you pay.
    Sender,
    /// Escrows that pay you.
    Provider,
}

/// Which escrows to list.
#[derive(InputObject, Default)]
pub struct EscrowFilter {
    /// Only escrows in this status.
    pub status: Option<EscrowStatus>,
    /// Your side of the escrow.
    pub role: Option<EscrowRole>,
    /// Only escrows created at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Only escrows created before this time.
    pub created_before: Option<DateTime<Utc>>,
}

/// How an admin settles a dispute.
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
    async fn escrow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The escrow's id.")] id: ID,
    ) -> Result<EscrowNode> {
        let caller = ctx.caller()?;
        Ok(EscrowNode(
            rules::visible(ctx.tenant_db()?, &caller, escrow_id(&id)?).await?,
        ))
    }

    /// Escrows you are a party to (support and admins: the tenant's), oldest first.
    #[graphql(visible = "access::visible::escrows")]
    // The Relay arguments, the order and a filter: one per GraphQL argument.
    #[allow(clippy::too_many_arguments)]
    async fn escrows(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only the escrows that match.")] filter: Option<EscrowFilter>,
        #[graphql(desc = "A cursor from an earlier page: the items after it.")] after: Option<
            String,
        >,
        #[graphql(desc = "A cursor from an earlier page: the items before it.")] before: Option<
            String,
        >,
        #[graphql(
            desc = "At most this many items from the start (or after `after`); at most SEQUESTRA_GRAPHQL_MAX_PAGE_SIZE (100)."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "At most this many items from the end (or before `before`); at most SEQUESTRA_GRAPHQL_MAX_PAGE_SIZE (100)."
        )]
        last: Option<i32>,
        #[graphql(desc = "Oldest first (the default) or newest first.")] order_by: Option<
            ListOrder,
        >,
    ) -> async_graphql::Result<Page<EscrowNode>> {
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
                order: order_by.unwrap_or_default(),
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
        #[graphql(desc = "The provider, amount, currency, deadline and milestones.")]
        input: CreateEscrowInput,
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
            &input.idempotency_key,
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
        #[graphql(desc = "The escrow, the deposit and your idempotency key.")]
        input: FundEscrowInput,
    ) -> Result<EscrowPayload> {
        let FundEscrowInput {
            escrow_id,
            amount,
            idempotency_key,
        } = input;
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
        #[graphql(desc = "The escrow, why, and your idempotency key.")] input: CancelEscrowInput,
    ) -> Result<EscrowPayload> {
        let CancelEscrowInput {
            escrow_id,
            reason,
            idempotency_key,
        } = input;
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
        #[graphql(desc = "The escrow and your idempotency key.")] input: RefundEscrowInput,
    ) -> Result<EscrowPayload> {
        let RefundEscrowInput {
            escrow_id,
            idempotency_key,
        } = input;
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
        #[graphql(desc = "The milestone and your idempotency key.")] input: ReleaseMilestoneInput,
    ) -> Result<EscrowPayload> {
        let ReleaseMilestoneInput {
            milestone_id,
            idempotency_key,
        } = input;
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
        #[graphql(desc = "The escrow and your idempotency key.")] input: ReleaseEscrowInput,
    ) -> Result<EscrowPayload> {
        let ReleaseEscrowInput {
            escrow_id,
            idempotency_key,
        } = input;
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
        #[graphql(desc = "The escrow, the decision and your idempotency key.")]
        input: ResolveDisputeInput,
    ) -> Result<EscrowPayload> {
        let ResolveDisputeInput {
            escrow_id,
            outcome,
            provider_amount,
            note,
            idempotency_key,
        } = input;
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
        #[graphql(desc = "The escrow and what was delivered.")] input: MarkDeliveredInput,
    ) -> Result<EscrowPayload> {
        let MarkDeliveredInput { escrow_id, note } = input;
        let id = self::escrow_id(&escrow_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::mark_delivered(txn, act, &caller, id, note)
                    .await
                    .map(EscrowPayload::of)
            })
        })
        .await
    }

    /// The sender accepts the delivery (within the inspection window).
    #[graphql(visible = "access::visible::approve_escrow")]
    async fn approve_escrow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The escrow whose delivery you accept.")] input: ApproveEscrowInput,
    ) -> Result<EscrowPayload> {
        let ApproveEscrowInput { escrow_id } = input;
        let id = self::escrow_id(&escrow_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::approve(txn, act, &caller, id)
                    .await
                    .map(EscrowPayload::of)
            })
        })
        .await
    }

    /// The sender refuses the delivery (within the inspection window); the provider
    /// may deliver again.
    #[graphql(visible = "access::visible::reject_escrow")]
    async fn reject_escrow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The escrow and what is missing.")] input: RejectEscrowInput,
    ) -> Result<EscrowPayload> {
        let RejectEscrowInput { escrow_id, reason } = input;
        let id = self::escrow_id(&escrow_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::reject(txn, act, &caller, id, reason)
                    .await
                    .map(EscrowPayload::of)
            })
        })
        .await
    }

    /// Either party freezes the escrow until an admin resolves the dispute.
    #[graphql(visible = "access::visible::open_dispute")]
    async fn open_dispute(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The escrow and what went wrong.")] input: OpenDisputeInput,
    ) -> Result<EscrowPayload> {
        let OpenDisputeInput { escrow_id, reason } = input;
        let id = self::escrow_id(&escrow_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::open_dispute(txn, act, &caller, id, reason)
                    .await
                    .map(EscrowPayload::of)
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
        #[graphql(desc = "The milestone, a note and the file.")] input: SubmitProofInput,
    ) -> Result<SubmitProofPayload> {
        let SubmitProofInput {
            milestone_id,
            note,
            file,
        } = input;
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
                    .map(SubmitProofPayload)
            })
        })
        .await
    }

    /// The sender (or support, or an admin) accepts or refuses a pending proof.
    #[graphql(visible = "access::visible::decide_proof")]
    async fn decide_proof(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The proof and the decision.")] input: DecideProofInput,
    ) -> Result<DecideProofPayload> {
        let DecideProofInput {
            proof_id,
            accept,
            note,
        } = input;
        let id = ids::decode_as(Kind::Proof, &proof_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::decide_proof(txn, act, &caller, id, accept, note)
                    .await
                    .map(DecideProofPayload)
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
