//! GraphQL for conditional spending. Resolvers authorize (scope guards here, party
//! rules in `rules`), run a rule in a transaction, and map; a refusal also records an
//! alert for the sender concerned.

use crate::graphql::mutation::one_object_payload;
use async_graphql::{Context, Enum, ID, InputObject, Json, Object};
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, QueryFilter,
    sea_query::{Expr, Query},
};
use serde::Serialize;
use uuid::Uuid;

use super::rules::{self, NewMandate, NewPayee, PayeeOn};
use crate::{
    accounts::graphql::{PartyNode, party},
    db::TenantDb,
    entity::{
        alert,
        mandate::{self, MandateStatus},
        mandate_category, mandate_merchant, merchant, payee, payment, payout, purchase,
        spend_category, transfer,
    },
    error::{Error, Result},
    graphql::{
        access,
        connection::{ListOrder, Page, PageArgs, paginate},
        context::ContextExt,
        loaders::{by_id, children},
        mutation,
        scalars::Decimal,
    },
    graphql::{node::global_id, scalars::MoneyValue},
    ids::{self, Kind},
    ledger::{self, graphql::LedgerEntryNode},
    payments::graphql::PaymentNode,
};

// ------------------------------------------------------------------ nodes

pub struct CategoryNode(pub spend_category::Model);

/// A kind of merchant (groceries, pharmacy, …) a mandate can allow.
#[Object(name = "SpendCategory")]
impl CategoryNode {
    /// The category's global id.
    pub async fn id(&self) -> ID {
        global_id(Kind::Category, self.0.id)
    }
    /// Its short code, unique in the tenant.
    async fn code(&self) -> &str {
        &self.0.code
    }
    /// Its name.
    async fn label(&self) -> &str {
        &self.0.label
    }
    /// false: its merchants can no longer be paid under any mandate.
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    /// When it was added.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

pub struct MerchantNode(pub merchant::Model);

/// Where a mandate can be spent.
#[Object(name = "Merchant")]
impl MerchantNode {
    /// The merchant's global id.
    pub async fn id(&self) -> ID {
        global_id(Kind::Merchant, self.0.id)
    }
    /// The merchant's name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The spend category it sells in.
    async fn category_id(&self) -> ID {
        global_id(Kind::Category, self.0.category_id)
    }
    /// Vetted by the tenant: allowed under mandates limited to certified merchants.
    async fn certified(&self) -> bool {
        self.0.certified
    }
    /// false: it can no longer be paid.
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    /// When it was added.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// A sender's budget a beneficiary may spend only where it allows.
pub struct MandateNode(pub mandate::Model);

/// A budget a sender granted a beneficiary, spendable only at allowed merchants.
#[Object(name = "Mandate")]
impl MandateNode {
    /// The mandate's global id.
    pub async fn id(&self) -> ID {
        global_id(Kind::Mandate, self.0.id)
    }
    /// Whether it can still be spent.
    async fn status(&self) -> MandateStatus {
        self.0.status
    }
    /// Who granted and pays it.
    #[graphql(deprecation = "Use `sender { userId }`.")]
    async fn sender_id(&self) -> ID {
        global_id(Kind::User, self.0.sender_id)
    }
    /// Who may spend it.
    #[graphql(deprecation = "Use `beneficiary { userId }`.")]
    async fn beneficiary_id(&self) -> ID {
        global_id(Kind::User, self.0.beneficiary_id)
    }
    /// Who granted and pays it, as a party sees them.
    async fn sender(&self, ctx: &Context<'_>) -> Result<PartyNode> {
        party(ctx, self.0.sender_id).await
    }
    /// Who may spend it, as a party sees them.
    async fn beneficiary(&self, ctx: &Context<'_>) -> Result<PartyNode> {
        party(ctx, self.0.beneficiary_id).await
    }
    /// The budget.
    async fn total(&self) -> MoneyValue {
        MoneyValue::new(self.0.total_minor, &self.0.currency)
    }
    /// What purchases and payouts have used of it.
    async fn spent(&self) -> MoneyValue {
        MoneyValue::new(self.0.spent_minor, &self.0.currency)
    }
    /// What may still be spent (zero once the mandate has ended).
    async fn remaining(&self) -> MoneyValue {
        let left = if self.0.status == MandateStatus::Active {
            self.0.total_minor - self.0.spent_minor
        } else {
            0
        };
        MoneyValue::new(left, &self.0.currency)
    }
    /// At most this much per purchase, if limited.
    async fn per_purchase_limit(&self) -> Option<MoneyValue> {
        self.0
            .per_purchase_limit_minor
            .map(|m| MoneyValue::new(m, &self.0.currency))
    }
    /// Per UTC day.
    async fn daily_limit(&self) -> Option<MoneyValue> {
        self.0
            .daily_limit_minor
            .map(|m| MoneyValue::new(m, &self.0.currency))
    }
    /// Only certified merchants of the allowed categories.
    async fn certified_merchants_only(&self) -> bool {
        self.0.certified_only
    }
    /// When it can no longer be spent, if it expires.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }
    /// When it stopped being spendable (exhausted, expired or revoked).
    async fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.0.ended_at
    }
    /// When it was granted.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Spend categories whose merchants it may be spent at.
    async fn allowed_category_ids(&self, ctx: &Context<'_>) -> Result<Vec<ID>> {
        Ok(children::<mandate_category::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(|r| global_id(Kind::Category, r.category_id))
            .collect())
    }
    /// Merchants it may be spent at, besides the categories'.
    async fn allowed_merchant_ids(&self, ctx: &Context<'_>) -> Result<Vec<ID>> {
        Ok(children::<mandate_merchant::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(|r| global_id(Kind::Merchant, r.merchant_id))
            .collect())
    }
    /// Oldest first.
    #[graphql(deprecation = "Unbounded: use purchasesConnection, a page at a time.")]
    async fn purchases(&self, ctx: &Context<'_>) -> Result<Vec<PurchaseNode>> {
        Ok(children::<purchase::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(PurchaseNode)
            .collect())
    }
    /// Its purchases, a page at a time.
    // The Relay arguments and the order: one per GraphQL argument.
    #[allow(clippy::too_many_arguments)]
    async fn purchases_connection(
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
    ) -> async_graphql::Result<Page<PurchaseNode>> {
        let parent = self.0.id;
        paginate::<purchase::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
                order: order_by.unwrap_or_default(),
            },
            move |q| q.filter(purchase::Column::MandateId.eq(parent)),
            |m| (m.id, PurchaseNode(m)),
        )
        .await
    }
    /// Its ledger entries, oldest first: the budget set aside, purchases, payouts and
    /// their settlement by the PSP, and what went back to the sender when it ended.
    async fn ledger_entries(&self, ctx: &Context<'_>) -> Result<Vec<LedgerEntryNode>> {
        let db = ctx.tenant_db()?;
        let payments: Vec<Uuid> = db
            .list::<payout::Entity>(|q| q.filter(payout::Column::MandateId.eq(self.0.id)))
            .await?
            .into_iter()
            .map(|p| p.payment_id)
            .collect();
        Ok(
            ledger::entries_of(db, &ledger::Account::Mandate(self.0.id), &payments)
                .await?
                .into_iter()
                .map(LedgerEntryNode)
                .collect(),
        )
    }
    /// Payees its beneficiary may pay from it.
    async fn payees(&self, ctx: &Context<'_>) -> Result<Vec<PayeeNode>> {
        Ok(children::<payee::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(PayeeNode)
            .collect())
    }
}

pub struct PurchaseNode(pub purchase::Model);

/// A beneficiary's spend at a merchant under a mandate.
#[Object(name = "Purchase")]
impl PurchaseNode {
    /// The purchase's global id.
    pub async fn id(&self) -> ID {
        global_id(Kind::Purchase, self.0.id)
    }
    /// The mandate it was spent from.
    async fn mandate_id(&self) -> ID {
        global_id(Kind::Mandate, self.0.mandate_id)
    }
    /// Where it was spent.
    #[graphql(deprecation = "Use `merchant { id }`.")]
    async fn merchant_id(&self) -> ID {
        global_id(Kind::Merchant, self.0.merchant_id)
    }
    /// Who spent it.
    #[graphql(deprecation = "Use `beneficiary { userId }`.")]
    async fn beneficiary_id(&self) -> ID {
        global_id(Kind::User, self.0.beneficiary_id)
    }
    /// Where it was spent.
    async fn merchant(&self, ctx: &Context<'_>) -> Result<MerchantNode> {
        by_id::<merchant::Entity>(ctx, self.0.merchant_id)
            .await
            .map(MerchantNode)
    }
    /// Who spent it, as a party sees them.
    async fn beneficiary(&self, ctx: &Context<'_>) -> Result<PartyNode> {
        party(ctx, self.0.beneficiary_id).await
    }
    /// How much.
    async fn amount(&self) -> MoneyValue {
        MoneyValue::new(self.0.amount_minor, &self.0.currency)
    }
    /// What was bought.
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// When it was made.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The mandate as it stands now.
    async fn mandate(&self, ctx: &Context<'_>) -> Result<MandateNode> {
        Ok(MandateNode(
            ctx.tenant_db()?
                .get::<mandate::Entity>(self.0.mandate_id)
                .await?,
        ))
    }
}

/// Someone outside the tenant a mandate may pay, within limits.
pub struct PayeeNode(pub payee::Model);

/// Someone a mandate's beneficiary or an escrow's sender may pay through the PSP, within limits.
#[Object(name = "Payee")]
impl PayeeNode {
    /// The payee's global id.
    pub async fn id(&self) -> ID {
        global_id(Kind::Payee, self.0.id)
    }
    /// The mandate it may be paid from, if any.
    #[graphql(deprecation = "Use `mandate { id }`.")]
    async fn mandate_id(&self) -> Option<ID> {
        self.0.mandate_id.map(|id| global_id(Kind::Mandate, id))
    }
    /// The escrow it may be paid from, if any.
    #[graphql(deprecation = "Use `escrow { id }`.")]
    async fn escrow_id(&self) -> Option<ID> {
        self.0.escrow_id.map(|id| global_id(Kind::Escrow, id))
    }
    /// The mandate it may be paid from, if any (whoever sees a payee sees it).
    async fn mandate(&self, ctx: &Context<'_>) -> Result<Option<MandateNode>> {
        match self.0.mandate_id {
            Some(id) => by_id::<mandate::Entity>(ctx, id)
                .await
                .map(|m| Some(MandateNode(m))),
            None => Ok(None),
        }
    }
    /// The escrow it may be paid from, if any (whoever sees a payee sees it).
    async fn escrow(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Option<crate::escrow::graphql::EscrowNode>> {
        match self.0.escrow_id {
            Some(id) => by_id::<crate::entity::escrow::Entity>(ctx, id)
                .await
                .map(|e| Some(crate::escrow::graphql::EscrowNode(e))),
            None => Ok(None),
        }
    }
    /// The payee's reference at the PSP.
    async fn reference(&self) -> &str {
        &self.0.reference
    }
    /// The payee's name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// At most this much per UTC day, if limited.
    async fn daily_limit(&self) -> Option<MoneyValue> {
        self.0
            .daily_limit_minor
            .map(|m| MoneyValue::new(m, &self.0.currency))
    }
    /// At most this much in all, if limited.
    async fn total_limit(&self) -> Option<MoneyValue> {
        self.0
            .total_limit_minor
            .map(|m| MoneyValue::new(m, &self.0.currency))
    }
    /// What it has been paid so far.
    async fn paid(&self) -> MoneyValue {
        MoneyValue::new(self.0.paid_minor, &self.0.currency)
    }
    /// false: it can no longer be paid.
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
}

pub struct PayoutNode(pub payout::Model);

/// A payment to a payee, from a mandate or an escrow.
#[Object(name = "Payout")]
impl PayoutNode {
    /// The payout's global id.
    pub async fn id(&self) -> ID {
        global_id(Kind::Payout, self.0.id)
    }
    /// Who is paid.
    #[graphql(deprecation = "Use `payee { id }`.")]
    async fn payee_id(&self) -> ID {
        global_id(Kind::Payee, self.0.payee_id)
    }
    /// Who is paid (whoever sees a payout sees its payee).
    async fn payee(&self, ctx: &Context<'_>) -> Result<PayeeNode> {
        by_id::<payee::Entity>(ctx, self.0.payee_id)
            .await
            .map(PayeeNode)
    }
    /// How much.
    async fn amount(&self) -> MoneyValue {
        MoneyValue::new(self.0.amount_minor, &self.0.currency)
    }
    /// The payment that carries it.
    async fn payment(&self, ctx: &Context<'_>) -> Result<PaymentNode> {
        Ok(PaymentNode(
            ctx.tenant_db()?
                .get::<payment::Entity>(self.0.payment_id)
                .await?,
        ))
    }
    /// When it was made.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

pub struct TransferNode(pub transfer::Model);

/// Money a user sent to another user of the tenant.
#[Object(name = "Transfer")]
impl TransferNode {
    /// The transfer's global id.
    pub async fn id(&self) -> ID {
        global_id(Kind::Transfer, self.0.id)
    }
    /// Who sent it.
    #[graphql(deprecation = "Use `sender { userId }`.")]
    async fn sender_id(&self) -> ID {
        global_id(Kind::User, self.0.sender_id)
    }
    /// Who receives it.
    #[graphql(deprecation = "Use `recipient { userId }`.")]
    async fn recipient_id(&self) -> ID {
        global_id(Kind::User, self.0.recipient_id)
    }
    /// Who sent it, as a party sees them.
    async fn sender(&self, ctx: &Context<'_>) -> Result<PartyNode> {
        party(ctx, self.0.sender_id).await
    }
    /// Who receives it, as a party sees them.
    async fn recipient(&self, ctx: &Context<'_>) -> Result<PartyNode> {
        party(ctx, self.0.recipient_id).await
    }
    /// How much.
    async fn amount(&self) -> MoneyValue {
        MoneyValue::new(self.0.amount_minor, &self.0.currency)
    }
    /// The sender's message.
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }
    /// The payment that carries it.
    async fn payment(&self, ctx: &Context<'_>) -> Result<PaymentNode> {
        Ok(PaymentNode(
            ctx.tenant_db()?
                .get::<payment::Entity>(self.0.payment_id)
                .await?,
        ))
    }
    /// When it was made.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// Something a sender should know: a refused purchase, payout or transfer.
pub struct AlertNode(pub alert::Model);

/// A refused spend or a failed payment, for the sender (or payer) to look at.
#[Object(name = "Alert")]
impl AlertNode {
    /// The alert's global id.
    pub async fn id(&self) -> ID {
        global_id(Kind::Alert, self.0.id)
    }
    /// What the alert is about: a refusal, or a payment that failed for good.
    async fn kind(&self) -> Result<rules::AlertKind> {
        rules::AlertKind::from_stored(&self.0.kind)
    }
    /// The user the alert is for: the mandate's sender, or the payer.
    #[graphql(deprecation = "Use `sender { userId }`.")]
    async fn sender_id(&self) -> ID {
        global_id(Kind::User, self.0.sender_id)
    }
    /// The mandate concerned, if any.
    #[graphql(deprecation = "Use `mandate { id }`.")]
    async fn mandate_id(&self) -> Option<ID> {
        self.0.mandate_id.map(|id| global_id(Kind::Mandate, id))
    }
    /// The user the alert is for (the mandate's sender, or the payer), as a party
    /// sees them.
    async fn sender(&self, ctx: &Context<'_>) -> Result<PartyNode> {
        party(ctx, self.0.sender_id).await
    }
    /// The mandate concerned, if any (its sender is the alert's).
    async fn mandate(&self, ctx: &Context<'_>) -> Result<Option<MandateNode>> {
        match self.0.mandate_id {
            Some(id) => by_id::<mandate::Entity>(ctx, id)
                .await
                .map(|m| Some(MandateNode(m))),
            None => Ok(None),
        }
    }
    /// What happened, in words.
    async fn message(&self) -> &str {
        &self.0.message
    }
    /// What was attempted (merchant, amount, payment, …), as JSON.
    async fn details(&self) -> Json<serde_json::Value> {
        Json(self.0.details.clone())
    }
    /// When it was raised.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

// ------------------------------------------------------------------ inputs

/// A budget a sender grants a beneficiary, spendable only where it allows.
#[derive(InputObject, Serialize)]
pub struct GrantMandateInput {
    /// Who may spend it (a BENEFICIARY of your tenant).
    pub beneficiary_id: ID,
    /// The budget, in `currency`.
    pub total: Decimal,
    /// ISO 4217, e.g. "EUR".
    pub currency: String,
    /// When it can no longer be spent; none: until revoked.
    pub expires_at: DateTime<Utc>,
    /// At least one category or merchant.
    #[graphql(default)]
    pub allowed_category_ids: Vec<ID>,
    /// Merchants it may be spent at, besides the allowed categories'.
    #[graphql(default)]
    pub allowed_merchant_ids: Vec<ID>,
    /// At most this much per purchase; none: up to what is left.
    pub per_purchase_limit: Option<Decimal>,
    /// Per UTC day.
    pub daily_limit: Option<Decimal>,
    /// Only certified merchants of the allowed categories.
    #[graphql(default)]
    pub certified_merchants_only: bool,
    /// Any 1 to 255 visible ASCII characters you choose for this operation: a retry
    /// with the same key and input answers what the first call answered, without
    /// doing it again; the same key with another input is CONFLICT
    /// (IDEMPOTENCY_KEY_REUSED).
    #[serde(skip)]
    pub idempotency_key: String,
}

/// A new spend category.
#[derive(InputObject)]
pub struct CreateSpendCategoryInput {
    /// A short code, unique in the tenant (e.g. `GROCERIES`).
    pub code: String,
    /// The category's name, as shown to people.
    pub label: String,
}

/// A category to enable or disable.
#[derive(InputObject)]
pub struct SetSpendCategoryEnabledInput {
    /// The category.
    pub id: ID,
    /// false: its merchants can no longer be paid under any mandate.
    pub enabled: bool,
}

/// A new merchant.
#[derive(InputObject)]
pub struct CreateMerchantInput {
    /// The merchant's name, as shown to beneficiaries.
    pub name: String,
    /// The spend category the merchant sells in.
    pub category_id: ID,
    /// Certified merchants are allowed under every mandate of their category;
    /// default false.
    pub certified: Option<bool>,
}

/// A merchant to change; what is left out stays as it is.
#[derive(InputObject)]
pub struct UpdateMerchantInput {
    /// The merchant.
    pub id: ID,
    /// false: the merchant can no longer be paid.
    pub enabled: Option<bool>,
    /// Certified merchants are allowed under every mandate of their category.
    pub certified: Option<bool>,
}

/// A user to allowlist for your transfers.
#[derive(InputObject)]
pub struct AllowTransferRecipientInput {
    /// The user (of your tenant) you may then transfer to.
    pub recipient_id: ID,
}

/// A user to certify as a transfer recipient.
#[derive(InputObject)]
pub struct CertifyTransferRecipientInput {
    /// The user everyone of the tenant may then transfer to.
    pub user_id: ID,
}

one_object_payload! {
    /// What a spend category mutation did.
    SpendCategoryPayload {
        /// The category, as it is now.
        category: CategoryNode(spend_category::Model)
    }
}

one_object_payload! {
    /// What a merchant mutation did.
    MerchantPayload {
        /// The merchant, as it is now.
        merchant: MerchantNode(merchant::Model)
    }
}

one_object_payload! {
    /// What `addPayee` did.
    AddPayeePayload {
        /// The payee added.
        payee: PayeeNode(payee::Model)
    }
}

/// What a transfer recipient mutation did: the recipient.
pub struct TransferRecipientPayload(Uuid);

/// What a transfer recipient mutation did.
#[Object]
impl TransferRecipientPayload {
    /// The user who may now be transferred to.
    async fn recipient(&self, ctx: &Context<'_>) -> Result<PartyNode> {
        party(ctx, self.0).await
    }
}

/// A mandate to end.
#[derive(InputObject)]
pub struct RevokeMandateInput {
    /// The mandate you granted; what is left of its budget is no longer spendable.
    pub mandate_id: ID,
}

/// A purchase under a mandate.
#[derive(InputObject)]
pub struct CreatePurchaseInput {
    /// The mandate it is spent from (yours, as its beneficiary).
    pub mandate_id: ID,
    /// Where it is spent; the mandate must allow it.
    pub merchant_id: ID,
    /// What the purchase costs, in the mandate's currency.
    pub amount: Decimal,
    /// What was bought, for the sender.
    pub description: Option<String>,
    /// Any 1 to 255 visible ASCII characters you choose for this operation: a retry
    /// with the same key and input answers what the first call answered, without
    /// doing it again; the same key with another input is CONFLICT
    /// (IDEMPOTENCY_KEY_REUSED).
    pub idempotency_key: String,
}

/// A payment to an allowed payee.
#[derive(InputObject)]
pub struct PayPayeeInput {
    /// The allowed payee to pay.
    pub payee_id: ID,
    /// How much to pay, within the payee's limits.
    pub amount: Decimal,
    /// Any 1 to 255 visible ASCII characters you choose for this operation: a retry
    /// with the same key and input answers what the first call answered, without
    /// doing it again; the same key with another input is CONFLICT
    /// (IDEMPOTENCY_KEY_REUSED).
    pub idempotency_key: String,
}

/// Money sent to another user of the tenant.
#[derive(InputObject)]
pub struct CreateTransferInput {
    /// Who receives it: a user of your tenant you allowlisted, or one the tenant
    /// certified.
    pub recipient_id: ID,
    /// How much to send.
    pub amount: Decimal,
    /// ISO 4217, e.g. "EUR".
    pub currency: String,
    /// A message for the recipient.
    pub note: Option<String>,
    /// Any 1 to 255 visible ASCII characters you choose for this operation: a retry
    /// with the same key and input answers what the first call answered, without
    /// doing it again; the same key with another input is CONFLICT
    /// (IDEMPOTENCY_KEY_REUSED).
    pub idempotency_key: String,
}

one_object_payload! {
    /// What a mandate mutation did.
    MandatePayload {
        /// The mandate granted or revoked (replaying a grant's key answers it as it is
        /// now).
        mandate: MandateNode(mandate::Model)
    }
}

/// What `createPurchase` did: the purchase, and the mandate it was spent from.
pub struct CreatePurchasePayload(purchase::Model);

/// What `createPurchase` did.
#[Object]
impl CreatePurchasePayload {
    /// The purchase made.
    async fn purchase(&self) -> PurchaseNode {
        PurchaseNode(self.0.clone())
    }

    /// The mandate it was spent from, as it is now (what is left of its budget).
    async fn mandate(&self, ctx: &Context<'_>) -> Result<MandateNode> {
        by_id::<mandate::Entity>(ctx, self.0.mandate_id)
            .await
            .map(MandateNode)
    }
}

one_object_payload! {
    /// What `payPayee` did.
    PayPayeePayload {
        /// The payout made (its payment goes through the PSP).
        payout: PayoutNode(payout::Model)
    }
}

one_object_payload! {
    /// What `createTransfer` did.
    CreateTransferPayload {
        /// The transfer made (its payment goes through the PSP).
        transfer: TransferNode(transfer::Model)
    }
}

/// A payee on a mandate (paid by its beneficiary) or on an escrow (paid by its
/// sender from what the escrow holds): give exactly one of `mandateId`, `escrowId`.
#[derive(InputObject)]
pub struct AddPayeeInput {
    /// The mandate whose beneficiary may pay this payee (give this or `escrowId`).
    pub mandate_id: Option<ID>,
    /// The escrow whose sender may pay this payee from what it holds (give this or `mandateId`).
    pub escrow_id: Option<ID>,
    /// The payee's reference at the PSP.
    pub reference: String,
    /// The payee's name, as shown to the payer.
    pub name: String,
    /// At most this much paid to the payee per UTC day; none: no daily limit.
    pub daily_limit: Option<Decimal>,
    /// At most this much paid to the payee in all; none: no total limit.
    pub total_limit: Option<Decimal>,
}

/// Your part in a mandate.
#[derive(Enum, Copy, Clone, PartialEq, Eq)]
pub enum MandateRole {
    /// Mandates you granted.
    Sender,
    /// Mandates you may spend.
    Beneficiary,
}

/// Which mandates to list.
#[derive(InputObject, Default)]
pub struct MandateFilter {
    /// Only mandates in this status.
    pub status: Option<MandateStatus>,
    /// Only mandates you granted (SENDER) or received (BENEFICIARY).
    pub role: Option<MandateRole>,
}

/// Which alerts to list.
#[derive(InputObject, Default)]
pub struct AlertFilter {
    /// Only alerts of this kind.
    pub kind: Option<rules::AlertKind>,
}

// ------------------------------------------------------------------ helpers

fn decode(kind: Kind, id: &ID) -> Result<Uuid> {
    ids::decode_as(kind, id)
}

/// Ids of a list argument; a malformed or foreign one is NOT_FOUND, like any id.
fn decode_all(kind: Kind, list: &[ID]) -> Result<Vec<Uuid>> {
    list.iter().map(|id| ids::decode_as(kind, id)).collect()
}

/// Whether `result` is a refusal that alerts the sender. Looked at only after a
/// failure, so a successful mutation pays for no extra query.
fn refused<T>(result: &Result<T>) -> Option<&Error> {
    result
        .as_ref()
        .err()
        .filter(|err| rules::alerting_reason(err).is_some())
}

/// Records the alert for a refusal, in its own transaction (the refused work was
/// rolled back); a failure to record it is logged, the refusal still answered.
async fn alert(
    db: &TenantDb,
    err: &Error,
    sender: Uuid,
    mandate: Option<Uuid>,
    details: serde_json::Value,
) {
    let Some(kind) = rules::alerting_reason(err) else {
        return;
    };
    if let Err(alert_err) =
        rules::raise_alert(db, sender, kind, mandate, &err.to_string(), details).await
    {
        tracing::error!(error = ?alert_err, "could not record a spend alert");
    }
}

// ------------------------------------------------------------------ roots

#[derive(Default)]
pub struct SpendQuery;

#[Object(guard = "access::Guard(access::Root::Query)")]
impl SpendQuery {
    /// The tenant's spend categories.
    #[graphql(visible = "access::visible::spend_categories")]
    async fn spend_categories(
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
    ) -> async_graphql::Result<Page<CategoryNode>> {
        paginate::<spend_category::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
                order: order_by.unwrap_or_default(),
            },
            |q| q,
            |m| (m.id, CategoryNode(m)),
        )
        .await
    }

    /// The tenant's merchants.
    #[graphql(visible = "access::visible::merchants")]
    async fn merchants(
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
    ) -> async_graphql::Result<Page<MerchantNode>> {
        paginate::<merchant::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
                order: order_by.unwrap_or_default(),
            },
            |q| q,
            |m| (m.id, MerchantNode(m)),
        )
        .await
    }

    /// A mandate you granted or may spend (support and admins: any of the tenant's).
    #[graphql(visible = "access::visible::mandate")]
    async fn mandate(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The mandate's id.")] id: ID,
    ) -> Result<MandateNode> {
        let caller = ctx.caller()?;
        Ok(MandateNode(
            rules::visible(ctx.tenant_db()?, &caller, decode(Kind::Mandate, &id)?).await?,
        ))
    }

    /// Mandates you granted or received (support and admins: all of the tenant's).
    #[graphql(visible = "access::visible::mandates")]
    // The Relay arguments, the order and a filter: one per GraphQL argument.
    #[allow(clippy::too_many_arguments)]
    async fn mandates(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only the mandates that match.")] filter: Option<MandateFilter>,
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
    ) -> async_graphql::Result<Page<MandateNode>> {
        let caller = ctx.caller()?;
        let filter = filter.unwrap_or_default();
        let me = caller.user_id;
        paginate::<mandate::Entity, _>(
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
                    q = q.filter(mandate::Column::Status.eq(status.as_str()));
                }
                match filter.role {
                    Some(MandateRole::Sender) => q = q.filter(mandate::Column::SenderId.eq(me)),
                    Some(MandateRole::Beneficiary) => {
                        q = q.filter(mandate::Column::BeneficiaryId.eq(me))
                    }
                    None => {}
                }
                q
            },
            |m| (m.id, MandateNode(m)),
        )
        .await
    }

    /// Purchases under mandates you are a party to (support and admins: all), or
    /// under one mandate.
    #[graphql(visible = "access::visible::purchases")]
    // The Relay arguments, the order and a filter: one per GraphQL argument.
    #[allow(clippy::too_many_arguments)]
    async fn purchases(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only the purchases under this mandate.")] mandate_id: Option<ID>,
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
    ) -> async_graphql::Result<Page<PurchaseNode>> {
        let caller = ctx.caller()?;
        let db = ctx.tenant_db()?;
        let only = match &mandate_id {
            Some(id) => Some(
                rules::visible(db, &caller, decode(Kind::Mandate, id)?)
                    .await?
                    .id,
            ),
            None => None,
        };
        let tenant = db.tenant().as_uuid();
        paginate::<purchase::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
                order: order_by.unwrap_or_default(),
            },
            move |mut q| {
                if let Some(id) = only {
                    q = q.filter(purchase::Column::MandateId.eq(id));
                } else if let Some(cond) = rules::visibility(&caller) {
                    // Purchases of the caller's mandates, as sender or beneficiary.
                    let mine = Query::select()
                        .column(mandate::Column::Id)
                        .from(mandate::Entity)
                        .and_where(Expr::col(mandate::Column::TenantId).eq(tenant))
                        .cond_where(cond)
                        .to_owned();
                    q = q.filter(purchase::Column::MandateId.in_subquery(mine));
                }
                q
            },
            |m| (m.id, PurchaseNode(m)),
        )
        .await
    }

    /// Transfers you sent or received (support and admins: all).
    #[graphql(visible = "access::visible::transfers")]
    async fn transfers(
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
    ) -> async_graphql::Result<Page<TransferNode>> {
        let caller = ctx.caller()?;
        paginate::<transfer::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
                order: order_by.unwrap_or_default(),
            },
            move |q| {
                if caller.is_staff() {
                    q
                } else {
                    q.filter(
                        Condition::any()
                            .add(transfer::Column::SenderId.eq(caller.user_id))
                            .add(transfer::Column::RecipientId.eq(caller.user_id)),
                    )
                }
            },
            |m| (m.id, TransferNode(m)),
        )
        .await
    }

    /// Alerts about your mandates and transfers (support and admins: all), newest last.
    #[graphql(visible = "access::visible::alerts")]
    // The Relay arguments, the order and a filter: one per GraphQL argument.
    #[allow(clippy::too_many_arguments)]
    async fn alerts(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only the alerts that match.")] filter: Option<AlertFilter>,
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
    ) -> async_graphql::Result<Page<AlertNode>> {
        let caller = ctx.caller()?;
        let kind = filter.unwrap_or_default().kind;
        paginate::<alert::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
                order: order_by.unwrap_or_default(),
            },
            move |mut q| {
                if let Some(cond) = rules::alert_visibility(&caller) {
                    q = q.filter(cond);
                }
                if let Some(kind) = kind {
                    q = q.filter(alert::Column::Kind.eq(kind.as_str()));
                }
                q
            },
            |m| (m.id, AlertNode(m)),
        )
        .await
    }
}

#[derive(Default)]
pub struct SpendMutation;

#[Object(guard = "access::Guard(access::Root::Mutation)")]
impl SpendMutation {
    /// A spend category (ADMIN or SUPPORT).
    #[graphql(visible = "access::visible::create_spend_category")]
    async fn create_spend_category(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The code and label.")] input: CreateSpendCategoryInput,
    ) -> Result<SpendCategoryPayload> {
        let CreateSpendCategoryInput { code, label } = input;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::create_category(txn, act, &caller, &code, &label)
                    .await
                    .map(SpendCategoryPayload)
            })
        })
        .await
    }

    /// Enables or disables a spend category (ADMIN or SUPPORT).
    #[graphql(visible = "access::visible::set_spend_category_enabled")]
    async fn set_spend_category_enabled(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The category and whether it is enabled.")]
        input: SetSpendCategoryEnabledInput,
    ) -> Result<SpendCategoryPayload> {
        let SetSpendCategoryEnabledInput { id, enabled } = input;
        let id = decode(Kind::Category, &id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::set_category_enabled(txn, act, &caller, id, enabled)
                    .await
                    .map(SpendCategoryPayload)
            })
        })
        .await
    }

    /// A merchant in a spend category (ADMIN or SUPPORT).
    #[graphql(visible = "access::visible::create_merchant")]
    async fn create_merchant(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The name, category and certification.")] input: CreateMerchantInput,
    ) -> Result<MerchantPayload> {
        let CreateMerchantInput {
            name,
            category_id,
            certified,
        } = input;
        let certified = certified.unwrap_or(false);
        let category = decode(Kind::Category, &category_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::create_merchant(txn, act, &caller, &name, category, certified)
                    .await
                    .map(MerchantPayload)
            })
        })
        .await
    }

    /// Enables, disables, certifies or uncertifies a merchant.
    #[graphql(visible = "access::visible::update_merchant")]
    async fn update_merchant(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The merchant and what changes.")] input: UpdateMerchantInput,
    ) -> Result<MerchantPayload> {
        let UpdateMerchantInput {
            id,
            enabled,
            certified,
        } = input;
        let id = decode(Kind::Merchant, &id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::update_merchant(txn, act, &caller, id, enabled, certified)
                    .await
                    .map(MerchantPayload)
            })
        })
        .await
    }

    /// A SENDER grants a beneficiary a budget spendable only where it allows.
    #[graphql(visible = "access::visible::grant_mandate")]
    async fn grant_mandate(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The beneficiary, budget, currency, period and where it may be spent.")]
        input: GrantMandateInput,
    ) -> Result<MandatePayload> {
        let new = NewMandate {
            beneficiary_id: ids::decode_as(Kind::User, &input.beneficiary_id)?,
            total: input.total.0,
            currency: input.currency.clone(),
            expires_at: input.expires_at,
            category_ids: decode_all(Kind::Category, &input.allowed_category_ids)?,
            merchant_ids: decode_all(Kind::Merchant, &input.allowed_merchant_ids)?,
            per_purchase_limit: input.per_purchase_limit.map(|d| d.0),
            daily_limit: input.daily_limit.map(|d| d.0),
            certified_only: input.certified_merchants_only,
        };
        let outcome = mutation::money_move(
            ctx,
            "grantMandate",
            &input.idempotency_key,
            &input,
            move |txn, act, caller| {
                Box::pin(async move { rules::grant(txn, act, &caller, new).await })
            },
        )
        .await?;
        Ok(MandatePayload(
            ctx.tenant_db()?.get::<mandate::Entity>(outcome.id).await?,
        ))
    }

    /// The sender ends an ACTIVE mandate; what remained is released.
    #[graphql(visible = "access::visible::revoke_mandate")]
    async fn revoke_mandate(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The mandate to end.")] input: RevokeMandateInput,
    ) -> Result<MandatePayload> {
        let id = decode(Kind::Mandate, &input.mandate_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::revoke(txn, act, &caller, id)
                    .await
                    .map(MandatePayload)
            })
        })
        .await
    }

    /// The beneficiary buys at a merchant under a mandate. A refusal answers CONFLICT
    /// with `reason` MANDATE_EXHAUSTED, MERCHANT_NOT_ALLOWED, MANDATE_EXPIRED,
    /// MANDATE_REVOKED or LIMIT_EXCEEDED, changes nothing, and alerts the sender.
    #[graphql(visible = "access::visible::create_purchase")]
    async fn create_purchase(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The mandate, merchant, amount and your idempotency key.")]
        input: CreatePurchaseInput,
    ) -> Result<CreatePurchasePayload> {
        let CreatePurchaseInput {
            mandate_id,
            merchant_id,
            amount,
            description,
            idempotency_key,
        } = input;
        let mandate = decode(Kind::Mandate, &mandate_id)?;
        let shop = decode(Kind::Merchant, &merchant_id)?;
        let db = ctx.tenant_db()?;
        let caller = ctx.caller()?;
        let input = serde_json::json!({ "mandate": mandate, "merchant": shop, "amount": amount, "description": description });
        let result = mutation::money_move(
            ctx,
            "createPurchase",
            &idempotency_key,
            &input,
            move |txn, act, caller| {
                Box::pin(async move {
                    rules::purchase(txn, act, &caller, mandate, shop, amount.0, description).await
                })
            },
        )
        .await;
        if let Some(err) = refused(&result)
            && let Ok(m) = rules::visible(db, &caller, mandate).await
        {
            let details = rules::alert_details(
                &[
                    ("mandateId", Kind::Mandate, mandate),
                    ("merchantId", Kind::Merchant, shop),
                ],
                Some(amount.0.normalize().to_string()),
            );
            alert(db, err, m.sender_id, Some(m.id), details).await;
        }
        let outcome = result?;
        Ok(CreatePurchasePayload(
            db.get::<purchase::Entity>(outcome.id).await?,
        ))
    }

    /// The sender allows a payee on a mandate, with optional limits.
    #[graphql(visible = "access::visible::add_payee")]
    async fn add_payee(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The payee, and the mandate or escrow it is allowed on.")]
        input: AddPayeeInput,
    ) -> Result<AddPayeePayload> {
        let new = NewPayee {
            on: match (&input.mandate_id, &input.escrow_id) {
                (Some(m), None) => PayeeOn::Mandate(decode(Kind::Mandate, m)?),
                (None, Some(e)) => PayeeOn::Escrow(decode(Kind::Escrow, e)?),
                _ => {
                    return Err(Error::bad_field(
                        "mandateId",
                        "give exactly one of mandateId and escrowId",
                    ));
                }
            },
            reference: input.reference,
            name: input.name,
            daily_limit: input.daily_limit.map(|d| d.0),
            total_limit: input.total_limit.map(|d| d.0),
        };
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::add_payee(txn, act, &caller, new)
                    .await
                    .map(AddPayeePayload)
            })
        })
        .await
    }

    /// Pays an allowed payee through the PSP: a mandate's payee is paid by its
    /// beneficiary from the budget, an escrow's by its sender from what the escrow
    /// holds. Needs a recent MFA step-up.
    #[graphql(visible = "access::visible::pay_payee")]
    async fn pay_payee(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The payee, the amount and your idempotency key.")] input: PayPayeeInput,
    ) -> Result<PayPayeePayload> {
        let PayPayeeInput {
            payee_id,
            amount,
            idempotency_key,
        } = input;
        let payee_uuid = decode(Kind::Payee, &payee_id)?;
        let db = ctx.tenant_db()?;
        let caller = ctx.caller()?;
        let input = serde_json::json!({ "payee": payee_uuid, "amount": amount });
        let result = mutation::money_move(
            ctx,
            "payPayee",
            &idempotency_key,
            &input,
            move |txn, act, caller| {
                Box::pin(
                    async move { rules::payout(txn, act, &caller, payee_uuid, amount.0).await },
                )
            },
        )
        .await;
        if let Some(err) = refused(&result)
            && let Some(mandate_id) = db
                .find_by_id::<payee::Entity>(payee_uuid)
                .await?
                .and_then(|p| p.mandate_id)
            && let Ok(m) = rules::visible(db, &caller, mandate_id).await
        {
            let details = rules::alert_details(
                &[
                    ("mandateId", Kind::Mandate, m.id),
                    ("payeeId", Kind::Payee, payee_uuid),
                ],
                Some(amount.0.normalize().to_string()),
            );
            alert(db, err, m.sender_id, Some(m.id), details).await;
        }
        let outcome = result?;
        Ok(PayPayeePayload(db.get::<payout::Entity>(outcome.id).await?))
    }

    /// Allowlists a recipient for your transfers.
    #[graphql(visible = "access::visible::allow_transfer_recipient")]
    async fn allow_transfer_recipient(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user to allowlist.")] input: AllowTransferRecipientInput,
    ) -> Result<TransferRecipientPayload> {
        let id = ids::decode_as(Kind::User, &input.recipient_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::allow_recipient(txn, act, &caller, id)
                    .await
                    .map(|_| TransferRecipientPayload(id))
            })
        })
        .await
    }

    /// An ADMIN certifies a user: anyone of the tenant may transfer to them.
    #[graphql(visible = "access::visible::certify_transfer_recipient")]
    async fn certify_transfer_recipient(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user to certify.")] input: CertifyTransferRecipientInput,
    ) -> Result<TransferRecipientPayload> {
        let id = ids::decode_as(Kind::User, &input.user_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::certify_recipient(txn, act, &caller, id)
                    .await
                    .map(|_| TransferRecipientPayload(id))
            })
        })
        .await
    }

    /// Sends money to another user of the tenant: only to a recipient you allowlisted
    /// or the tenant certified; any other attempt is refused (TRANSFER_NOT_ALLOWED)
    /// and raises an alert. Needs `payments:execute` and a recent MFA step-up.
    #[graphql(visible = "access::visible::create_transfer")]
    async fn create_transfer(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The recipient, the amount and your idempotency key.")]
        input: CreateTransferInput,
    ) -> Result<CreateTransferPayload> {
        let CreateTransferInput {
            recipient_id,
            amount,
            currency,
            note,
            idempotency_key,
        } = input;
        let recipient = ids::decode_as(Kind::User, &recipient_id)?;
        let db = ctx.tenant_db()?;
        let me = ctx.caller()?.user_id;
        let input = serde_json::json!({ "recipient": recipient, "amount": amount, "currency": currency, "note": note });
        let result = mutation::money_move(
            ctx,
            "createTransfer",
            &idempotency_key,
            &input,
            move |txn, act, caller| {
                Box::pin(async move {
                    rules::transfer(txn, act, &caller, recipient, amount.0, &currency, note).await
                })
            },
        )
        .await;
        if let Some(err) = refused(&result) {
            let details = rules::alert_details(
                &[("recipientId", Kind::User, recipient)],
                Some(amount.0.normalize().to_string()),
            );
            alert(db, err, me, None, details).await;
        }
        let outcome = result?;
        Ok(CreateTransferPayload(
            db.get::<transfer::Entity>(outcome.id).await?,
        ))
    }
}
