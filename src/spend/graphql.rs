//! GraphQL for conditional spending. Resolvers authorize (scope guards here, party
//! rules in `rules`), run a rule in a transaction, and map; a refusal also records an
//! alert for the sender concerned.

use async_graphql::{Context, Enum, ID, InputObject, Json, Object, connection::Connection};
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, QueryFilter,
    sea_query::{Expr, Query},
};
use serde::Serialize;
use uuid::Uuid;

use super::rules::{self, NewMandate, NewPayee, PayeeOn};
use crate::{
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

pub struct CategoryNode(pub spend_category::Model);

#[Object(name = "SpendCategory")]
impl CategoryNode {
    async fn id(&self) -> ID {
        global_id(Kind::Category, self.0.id)
    }
    async fn code(&self) -> &str {
        &self.0.code
    }
    async fn label(&self) -> &str {
        &self.0.label
    }
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

pub struct MerchantNode(pub merchant::Model);

#[Object(name = "Merchant")]
impl MerchantNode {
    async fn id(&self) -> ID {
        global_id(Kind::Merchant, self.0.id)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn category_id(&self) -> ID {
        global_id(Kind::Category, self.0.category_id)
    }
    async fn certified(&self) -> bool {
        self.0.certified
    }
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// A sender's budget a beneficiary may spend only where it allows.
pub struct MandateNode(pub mandate::Model);

#[Object(name = "Mandate")]
impl MandateNode {
    async fn id(&self) -> ID {
        global_id(Kind::Mandate, self.0.id)
    }
    async fn status(&self) -> MandateStatus {
        self.0.status
    }
    async fn sender_id(&self) -> ID {
        global_id(Kind::User, self.0.sender_id)
    }
    async fn beneficiary_id(&self) -> ID {
        global_id(Kind::User, self.0.beneficiary_id)
    }
    async fn total(&self) -> MoneyValue {
        MoneyValue::new(self.0.total_minor, &self.0.currency)
    }
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
    async fn certified_merchants_only(&self) -> bool {
        self.0.certified_only
    }
    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }
    async fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.0.ended_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn allowed_category_ids(&self, ctx: &Context<'_>) -> Result<Vec<ID>> {
        Ok(children::<mandate_category::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(|r| global_id(Kind::Category, r.category_id))
            .collect())
    }
    async fn allowed_merchant_ids(&self, ctx: &Context<'_>) -> Result<Vec<ID>> {
        Ok(children::<mandate_merchant::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(|r| global_id(Kind::Merchant, r.merchant_id))
            .collect())
    }
    /// Oldest first.
    async fn purchases(&self, ctx: &Context<'_>) -> Result<Vec<PurchaseNode>> {
        Ok(children::<purchase::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(PurchaseNode)
            .collect())
    }
    async fn payees(&self, ctx: &Context<'_>) -> Result<Vec<PayeeNode>> {
        Ok(children::<payee::Entity>(ctx, self.0.id)
            .await?
            .into_iter()
            .map(PayeeNode)
            .collect())
    }
}

pub struct PurchaseNode(pub purchase::Model);

#[Object(name = "Purchase")]
impl PurchaseNode {
    async fn id(&self) -> ID {
        global_id(Kind::Purchase, self.0.id)
    }
    async fn mandate_id(&self) -> ID {
        global_id(Kind::Mandate, self.0.mandate_id)
    }
    async fn merchant_id(&self) -> ID {
        global_id(Kind::Merchant, self.0.merchant_id)
    }
    async fn beneficiary_id(&self) -> ID {
        global_id(Kind::User, self.0.beneficiary_id)
    }
    async fn amount(&self) -> MoneyValue {
        MoneyValue::new(self.0.amount_minor, &self.0.currency)
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
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

#[Object(name = "Payee")]
impl PayeeNode {
    async fn id(&self) -> ID {
        global_id(Kind::Payee, self.0.id)
    }
    async fn mandate_id(&self) -> Option<ID> {
        self.0.mandate_id.map(|id| global_id(Kind::Mandate, id))
    }
    async fn escrow_id(&self) -> Option<ID> {
        self.0.escrow_id.map(|id| global_id(Kind::Escrow, id))
    }
    /// The payee's reference at the PSP.
    async fn reference(&self) -> &str {
        &self.0.reference
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn daily_limit(&self) -> Option<MoneyValue> {
        self.0
            .daily_limit_minor
            .map(|m| MoneyValue::new(m, &self.0.currency))
    }
    async fn total_limit(&self) -> Option<MoneyValue> {
        self.0
            .total_limit_minor
            .map(|m| MoneyValue::new(m, &self.0.currency))
    }
    async fn paid(&self) -> MoneyValue {
        MoneyValue::new(self.0.paid_minor, &self.0.currency)
    }
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
}

pub struct PayoutNode(pub payout::Model);

#[Object(name = "Payout")]
impl PayoutNode {
    async fn id(&self) -> ID {
        global_id(Kind::Payout, self.0.id)
    }
    async fn payee_id(&self) -> ID {
        global_id(Kind::Payee, self.0.payee_id)
    }
    async fn amount(&self) -> MoneyValue {
        MoneyValue::new(self.0.amount_minor, &self.0.currency)
    }
    async fn payment(&self, ctx: &Context<'_>) -> Result<PaymentNode> {
        Ok(PaymentNode(
            ctx.tenant_db()?
                .get::<payment::Entity>(self.0.payment_id)
                .await?,
        ))
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

pub struct TransferNode(pub transfer::Model);

#[Object(name = "Transfer")]
impl TransferNode {
    async fn id(&self) -> ID {
        global_id(Kind::Transfer, self.0.id)
    }
    async fn sender_id(&self) -> ID {
        global_id(Kind::User, self.0.sender_id)
    }
    async fn recipient_id(&self) -> ID {
        global_id(Kind::User, self.0.recipient_id)
    }
    async fn amount(&self) -> MoneyValue {
        MoneyValue::new(self.0.amount_minor, &self.0.currency)
    }
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }
    async fn payment(&self, ctx: &Context<'_>) -> Result<PaymentNode> {
        Ok(PaymentNode(
            ctx.tenant_db()?
                .get::<payment::Entity>(self.0.payment_id)
                .await?,
        ))
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// Something a sender should know: a refused purchase, payout or transfer.
pub struct AlertNode(pub alert::Model);

#[Object(name = "Alert")]
impl AlertNode {
    async fn id(&self) -> ID {
        global_id(Kind::Alert, self.0.id)
    }
    /// The refusal: `MANDATE_EXHAUSTED`, `MERCHANT_NOT_ALLOWED`, `MANDATE_EXPIRED`,
    /// `MANDATE_REVOKED`, `LIMIT_EXCEEDED`, `PAYEE_NOT_ALLOWED`, `TRANSFER_NOT_ALLOWED`.
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    async fn sender_id(&self) -> ID {
        global_id(Kind::User, self.0.sender_id)
    }
    async fn mandate_id(&self) -> Option<ID> {
        self.0.mandate_id.map(|id| global_id(Kind::Mandate, id))
    }
    async fn message(&self) -> &str {
        &self.0.message
    }
    async fn details(&self) -> Json<serde_json::Value> {
        Json(self.0.details.clone())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

// ------------------------------------------------------------------ inputs

#[derive(InputObject, Serialize)]
pub struct GrantMandateInput {
    pub beneficiary_id: ID,
    pub total: Decimal,
    /// ISO 4217, e.g. "EUR".
    pub currency: String,
    pub expires_at: DateTime<Utc>,
    /// At least one category or merchant.
    #[graphql(default)]
    pub allowed_category_ids: Vec<ID>,
    #[graphql(default)]
    pub allowed_merchant_ids: Vec<ID>,
    pub per_purchase_limit: Option<Decimal>,
    /// Per UTC day.
    pub daily_limit: Option<Decimal>,
    #[graphql(default)]
    pub certified_merchants_only: bool,
}

/// A payee on a mandate (paid by its beneficiary) or on an escrow (paid by its
/// sender from what the escrow holds): give exactly one of `mandateId`, `escrowId`.
#[derive(InputObject)]
pub struct AddPayeeInput {
    pub mandate_id: Option<ID>,
    pub escrow_id: Option<ID>,
    /// The payee's reference at the PSP.
    pub reference: String,
    pub name: String,
    pub daily_limit: Option<Decimal>,
    pub total_limit: Option<Decimal>,
}

#[derive(Enum, Copy, Clone, PartialEq, Eq)]
pub enum MandateRole {
    /// Mandates you granted.
    Sender,
    /// Mandates you may spend.
    Beneficiary,
}

#[derive(InputObject, Default)]
pub struct MandateFilter {
    pub status: Option<MandateStatus>,
    pub role: Option<MandateRole>,
}

#[derive(InputObject, Default)]
pub struct AlertFilter {
    /// Only alerts of this kind, e.g. `MANDATE_EXHAUSTED`.
    pub kind: Option<String>,
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
    #[graphql(visible = "access::visible::spend_categories")]
    async fn spend_categories(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<IdCursor, CategoryNode>> {
        paginate::<spend_category::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
            },
            |q| q,
            |m| (m.id, CategoryNode(m)),
        )
        .await
    }

    #[graphql(visible = "access::visible::merchants")]
    async fn merchants(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<IdCursor, MerchantNode>> {
        paginate::<merchant::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
            },
            |q| q,
            |m| (m.id, MerchantNode(m)),
        )
        .await
    }

    /// A mandate you granted or may spend (support and admins: any of the tenant's).
    #[graphql(visible = "access::visible::mandate")]
    async fn mandate(&self, ctx: &Context<'_>, id: ID) -> Result<MandateNode> {
        let caller = ctx.caller()?;
        Ok(MandateNode(
            rules::visible(ctx.tenant_db()?, &caller, decode(Kind::Mandate, &id)?).await?,
        ))
    }

    #[graphql(visible = "access::visible::mandates")]
    async fn mandates(
        &self,
        ctx: &Context<'_>,
        filter: Option<MandateFilter>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<IdCursor, MandateNode>> {
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
    async fn purchases(
        &self,
        ctx: &Context<'_>,
        mandate_id: Option<ID>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<IdCursor, PurchaseNode>> {
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
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<IdCursor, TransferNode>> {
        let caller = ctx.caller()?;
        paginate::<transfer::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
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
    async fn alerts(
        &self,
        ctx: &Context<'_>,
        filter: Option<AlertFilter>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<IdCursor, AlertNode>> {
        let caller = ctx.caller()?;
        let kind = filter.unwrap_or_default().kind;
        paginate::<alert::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
            },
            move |mut q| {
                if let Some(cond) = rules::alert_visibility(&caller) {
                    q = q.filter(cond);
                }
                if let Some(kind) = kind {
                    q = q.filter(alert::Column::Kind.eq(kind));
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
        code: String,
        label: String,
    ) -> Result<CategoryNode> {
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::create_category(txn, act, &caller, &code, &label)
                    .await
                    .map(CategoryNode)
            })
        })
        .await
    }

    #[graphql(visible = "access::visible::set_spend_category_enabled")]
    async fn set_spend_category_enabled(
        &self,
        ctx: &Context<'_>,
        id: ID,
        enabled: bool,
    ) -> Result<CategoryNode> {
        let id = decode(Kind::Category, &id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::set_category_enabled(txn, act, &caller, id, enabled)
                    .await
                    .map(CategoryNode)
            })
        })
        .await
    }

    #[graphql(visible = "access::visible::create_merchant")]
    async fn create_merchant(
        &self,
        ctx: &Context<'_>,
        name: String,
        category_id: ID,
        #[graphql(desc = "Default false.")] certified: Option<bool>,
    ) -> Result<MerchantNode> {
        let certified = certified.unwrap_or(false);
        let category = decode(Kind::Category, &category_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::create_merchant(txn, act, &caller, &name, category, certified)
                    .await
                    .map(MerchantNode)
            })
        })
        .await
    }

    /// Enables, disables, certifies or uncertifies a merchant.
    #[graphql(visible = "access::visible::update_merchant")]
    async fn update_merchant(
        &self,
        ctx: &Context<'_>,
        id: ID,
        enabled: Option<bool>,
        certified: Option<bool>,
    ) -> Result<MerchantNode> {
        let id = decode(Kind::Merchant, &id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::update_merchant(txn, act, &caller, id, enabled, certified)
                    .await
                    .map(MerchantNode)
            })
        })
        .await
    }

    /// A SENDER grants a beneficiary a budget spendable only where it allows.
    #[graphql(visible = "access::visible::grant_mandate")]
    async fn grant_mandate(
        &self,
        ctx: &Context<'_>,
        input: GrantMandateInput,
        idempotency_key: String,
    ) -> Result<MandateNode> {
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
            &idempotency_key,
            &input,
            move |txn, act, caller| {
                Box::pin(async move { rules::grant(txn, act, &caller, new).await })
            },
        )
        .await?;
        Ok(MandateNode(
            ctx.tenant_db()?.get::<mandate::Entity>(outcome.id).await?,
        ))
    }

    /// The sender ends an ACTIVE mandate; what remained is released.
    #[graphql(visible = "access::visible::revoke_mandate")]
    async fn revoke_mandate(&self, ctx: &Context<'_>, mandate_id: ID) -> Result<MandateNode> {
        let id = decode(Kind::Mandate, &mandate_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move { rules::revoke(txn, act, &caller, id).await.map(MandateNode) })
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
        mandate_id: ID,
        merchant_id: ID,
        amount: Decimal,
        description: Option<String>,
        idempotency_key: String,
    ) -> Result<PurchaseNode> {
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
        Ok(PurchaseNode(db.get::<purchase::Entity>(outcome.id).await?))
    }

    /// The sender allows a payee on a mandate, with optional limits.
    #[graphql(visible = "access::visible::add_payee")]
    async fn add_payee(&self, ctx: &Context<'_>, input: AddPayeeInput) -> Result<PayeeNode> {
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
                    .map(PayeeNode)
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
        payee_id: ID,
        amount: Decimal,
        idempotency_key: String,
    ) -> Result<PayoutNode> {
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
        Ok(PayoutNode(db.get::<payout::Entity>(outcome.id).await?))
    }

    /// Allowlists a recipient for your transfers.
    #[graphql(visible = "access::visible::allow_transfer_recipient")]
    async fn allow_transfer_recipient(&self, ctx: &Context<'_>, recipient_id: ID) -> Result<bool> {
        let id = ids::decode_as(Kind::User, &recipient_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::allow_recipient(txn, act, &caller, id)
                    .await
                    .map(|_| true)
            })
        })
        .await
    }

    /// An ADMIN certifies a user: anyone of the tenant may transfer to them.
    #[graphql(visible = "access::visible::certify_transfer_recipient")]
    async fn certify_transfer_recipient(&self, ctx: &Context<'_>, user_id: ID) -> Result<bool> {
        let id = ids::decode_as(Kind::User, &user_id)?;
        mutation::in_txn(ctx, move |txn, act, caller| {
            Box::pin(async move {
                rules::certify_recipient(txn, act, &caller, id)
                    .await
                    .map(|_| true)
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
        recipient_id: ID,
        amount: Decimal,
        currency: String,
        note: Option<String>,
        idempotency_key: String,
    ) -> Result<TransferNode> {
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
        Ok(TransferNode(db.get::<transfer::Entity>(outcome.id).await?))
    }
}
