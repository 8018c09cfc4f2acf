//! Spend rules: plain functions over a tenant-scoped transaction.
//!
//! The budget moves by one conditional UPDATE (`… SET spent = spent + x WHERE
//! spent + x <= total AND …`), never read-then-write; the daily counter moves in the
//! same statement. A refusal is a `CONFLICT` whose `reason` says exactly why; the
//! caller rolls the transaction back and records an alert for the sender.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, QueryFilter,
    sea_query::{Expr, SimpleExpr},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::kinds::AuditAction;
use crate::{
    audit,
    auth::Role,
    db::{Scoped, TenantDb},
    entity::{
        alert, certified_recipient,
        mandate::{self, MandateStatus},
        mandate_category, mandate_merchant, merchant, payee,
        payment::PaymentPurpose,
        payout, purchase, spend_category, transfer, transfer_recipient, user,
    },
    error::{Error, Result},
    ids::{self, Kind, new_id},
    ledger::{self, Account, EntryKind},
    money::{Currency, Money},
    payments::{self, NewPayment, Payee},
};

pub use crate::rules::{Act, Caller};
use crate::rules::{MovesMoney, require, text};

/// The refusal reasons, as `extensions.reason`.
pub mod refusal {
    pub const MANDATE_EXHAUSTED: &str = "MANDATE_EXHAUSTED";
    pub const MERCHANT_NOT_ALLOWED: &str = "MERCHANT_NOT_ALLOWED";
    pub const MANDATE_EXPIRED: &str = "MANDATE_EXPIRED";
    pub const MANDATE_REVOKED: &str = "MANDATE_REVOKED";
    pub const LIMIT_EXCEEDED: &str = "LIMIT_EXCEEDED";
    pub const PAYEE_NOT_ALLOWED: &str = "PAYEE_NOT_ALLOWED";
    pub const TRANSFER_NOT_ALLOWED: &str = "TRANSFER_NOT_ALLOWED";
}

crate::text_enum! {
    /// What an alert tells its sender (or payer): the refusal reason, or a payment that
    /// failed for good. Stored as the same text.
    pub enum AlertKind {
        /// A purchase or payout asked for more than the mandate has left.
        MandateExhausted = "MANDATE_EXHAUSTED",
        /// A purchase at a merchant the mandate does not allow.
        MerchantNotAllowed = "MERCHANT_NOT_ALLOWED",
        /// A purchase under a mandate past its end date.
        MandateExpired = "MANDATE_EXPIRED",
        /// A purchase under a revoked mandate.
        MandateRevoked = "MANDATE_REVOKED",
        /// A purchase or payout above a daily or total limit.
        LimitExceeded = "LIMIT_EXCEEDED",
        /// A payout to a payee the mandate does not allow.
        PayeeNotAllowed = "PAYEE_NOT_ALLOWED",
        /// A transfer to a recipient the payer may not pay.
        TransferNotAllowed = "TRANSFER_NOT_ALLOWED",
        /// A payment failed as many times as it is retried automatically.
        PaymentFailed = "PAYMENT_FAILED",
    }
}

fn refuse(reason: &'static str, message: impl Into<String>) -> Error {
    Error::conflict(reason, message)
}

fn today() -> String {
    Utc::now().format("%Y-%m-%d").to_string()
}

async fn record<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    action: AuditAction,
    subject: (&'static str, Uuid),
    details: serde_json::Value,
) -> Result<()> {
    audit::record(
        txn,
        audit::Entry {
            actor: act.actor,
            action,
            subject: Some(subject),
            details,
            origin: act.origin,
        },
    )
    .await
}

// ------------------------------------------------------------------ catalog

fn check_code(code: &str) -> Result<String> {
    let code = code.trim().to_ascii_uppercase();
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(code)
    } else {
        Err(Error::bad_field(
            "code",
            "a category code is 1 to 64 of A-Z, 0-9 and _",
        ))
    }
}

fn staff_only(caller: &Caller) -> Result<()> {
    require(caller.is_staff())
}

pub async fn create_category<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    code: &str,
    label: &str,
) -> Result<spend_category::Model> {
    staff_only(caller)?;
    let code = check_code(code)?;
    let label = text("label", label, 200)?;
    let row = txn
        .insert(spend_category::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(txn.tenant().as_uuid()),
            code: Set(code.clone()),
            label: Set(label),
            enabled: Set(true),
            created_at: Set(Utc::now()),
        })
        .await
        .map_err(|e| match e {
            Error::Conflict { .. } => {
                Error::conflict("ALREADY_EXISTS", format!("a category {code} exists"))
            }
            other => other,
        })?;
    record(
        txn,
        act,
        AuditAction::SpendCategoryCreated,
        ("spend_category", row.id),
        serde_json::json!({ "code": row.code }),
    )
    .await?;
    Ok(row)
}

pub async fn set_category_enabled<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    id: Uuid,
    enabled: bool,
) -> Result<spend_category::Model> {
    staff_only(caller)?;
    txn.get::<spend_category::Entity>(id).await?;
    txn.update_where::<spend_category::Entity>(|q| {
        q.col_expr(spend_category::Column::Enabled, Expr::value(enabled))
            .filter(spend_category::Column::Id.eq(id))
    })
    .await?;
    record(
        txn,
        act,
        if enabled {
            AuditAction::SpendCategoryEnabled
        } else {
            AuditAction::SpendCategoryDisabled
        },
        ("spend_category", id),
        serde_json::json!({}),
    )
    .await?;
    txn.get::<spend_category::Entity>(id).await
}

pub async fn create_merchant<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    name: &str,
    category_id: Uuid,
    certified: bool,
) -> Result<merchant::Model> {
    staff_only(caller)?;
    let name = text("name", name, 200)?;
    txn.get::<spend_category::Entity>(category_id).await?;
    let row = txn
        .insert(merchant::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(txn.tenant().as_uuid()),
            name: Set(name.clone()),
            category_id: Set(category_id),
            certified: Set(certified),
            enabled: Set(true),
            created_at: Set(Utc::now()),
        })
        .await
        .map_err(|e| match e {
            Error::Conflict { .. } => {
                Error::conflict("ALREADY_EXISTS", format!("a merchant named {name} exists"))
            }
            other => other,
        })?;
    record(
        txn,
        act,
        AuditAction::SpendMerchantCreated,
        ("merchant", row.id),
        serde_json::json!({ "name": row.name, "certified": certified }),
    )
    .await?;
    Ok(row)
}

pub async fn update_merchant<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    id: Uuid,
    enabled: Option<bool>,
    certified: Option<bool>,
) -> Result<merchant::Model> {
    staff_only(caller)?;
    txn.get::<merchant::Entity>(id).await?;
    txn.update_where::<merchant::Entity>(|mut q| {
        if let Some(enabled) = enabled {
            q = q.col_expr(merchant::Column::Enabled, Expr::value(enabled));
        }
        if let Some(certified) = certified {
            q = q.col_expr(merchant::Column::Certified, Expr::value(certified));
        }
        q.filter(merchant::Column::Id.eq(id))
    })
    .await?;
    record(
        txn,
        act,
        AuditAction::SpendMerchantUpdated,
        ("merchant", id),
        serde_json::json!({ "enabled": enabled, "certified": certified }),
    )
    .await?;
    txn.get::<merchant::Entity>(id).await
}

// ------------------------------------------------------------------ mandates

/// Parties see their mandates; support and admins see the tenant's; anyone else
/// NOT_FOUND.
pub fn can_see(caller: &Caller, m: &mandate::Model) -> bool {
    caller.is_staff() || m.sender_id == caller.user_id || m.beneficiary_id == caller.user_id
}

pub fn visibility(caller: &Caller) -> Option<Condition> {
    (!caller.is_staff()).then(|| {
        Condition::any()
            .add(mandate::Column::SenderId.eq(caller.user_id))
            .add(mandate::Column::BeneficiaryId.eq(caller.user_id))
    })
}

pub async fn visible<C: ConnectionTrait>(
    db: &Scoped<C>,
    caller: &Caller,
    id: Uuid,
) -> Result<mandate::Model> {
    let m = db.get::<mandate::Entity>(id).await?;
    if can_see(caller, &m) {
        Ok(m)
    } else {
        Err(Error::NotFound)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NewMandate {
    pub beneficiary_id: Uuid,
    pub total: Decimal,
    pub currency: String,
    pub expires_at: DateTime<Utc>,
    pub category_ids: Vec<Uuid>,
    pub merchant_ids: Vec<Uuid>,
    pub per_purchase_limit: Option<Decimal>,
    pub daily_limit: Option<Decimal>,
    pub certified_only: bool,
}

/// What a money-moving spend mutation did; stored as its idempotent result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub id: Uuid,
    #[serde(default)]
    pub payments: Vec<Uuid>,
}

impl MovesMoney for Outcome {
    fn payments(&self) -> &[Uuid] {
        &self.payments
    }
}

pub async fn grant<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    new: NewMandate,
) -> Result<Outcome> {
    require(caller.roles.contains(&Role::Sender))?;
    let currency = Currency::parse(&new.currency)?;
    let total = Money::parse_positive(new.total, currency)?;
    let limit = |v: Option<Decimal>, field: &'static str| -> Result<Option<i64>> {
        v.map(|d| {
            Money::parse_positive(d, currency)
                .map(|m| m.minor())
                .map_err(|e| match e {
                    Error::BadUserInput { message, .. } => Error::bad_field(field, message),
                    other => other,
                })
        })
        .transpose()
    };
    let per_purchase = limit(new.per_purchase_limit, "perPurchaseLimit")?;
    let daily = limit(new.daily_limit, "dailyLimit")?;
    if new.expires_at <= Utc::now() {
        return Err(Error::bad_field(
            "expiresAt",
            "the expiry must be in the future",
        ));
    }
    if new.category_ids.is_empty() && new.merchant_ids.is_empty() {
        return Err(Error::bad_field(
            "allowedCategoryIds",
            "allow at least one category or merchant",
        ));
    }
    if new.beneficiary_id == caller.user_id {
        return Err(Error::bad_field(
            "beneficiaryId",
            "you cannot grant yourself a mandate",
        ));
    }
    // A missing id and another tenant's are the same answer: NOT_FOUND.
    txn.find_by_id::<user::Entity>(new.beneficiary_id)
        .await?
        .filter(|u| u.is_active)
        .ok_or(Error::NotFound)?;
    for id in &new.category_ids {
        txn.get::<spend_category::Entity>(*id).await?;
    }
    for id in &new.merchant_ids {
        txn.get::<merchant::Entity>(*id).await?;
    }
    let now = Utc::now();
    let row = txn
        .insert(mandate::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(txn.tenant().as_uuid()),
            sender_id: Set(caller.user_id),
            beneficiary_id: Set(new.beneficiary_id),
            currency: Set(currency.code().to_owned()),
            total_minor: Set(total.minor()),
            spent_minor: Set(0),
            per_purchase_limit_minor: Set(per_purchase),
            daily_limit_minor: Set(daily),
            spend_day: Set(today()),
            day_spent_minor: Set(0),
            certified_only: Set(new.certified_only),
            status: Set(MandateStatus::Active),
            expires_at: Set(new.expires_at),
            ended_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .await
        .map_err(|e| match e {
            Error::Conflict { .. } => Error::conflict(
                "MANDATE_EXISTS",
                "an ACTIVE mandate for this beneficiary and currency exists; revoke it first",
            ),
            other => other,
        })?;
    ledger::post(
        txn,
        ledger::Movement {
            kind: EntryKind::MandateGranted,
            subject: ("mandate", row.id),
            currency: &row.currency,
            amount_minor: row.total_minor,
            from: Account::Funding(caller.user_id),
            to: Account::Mandate(row.id),
        },
    )
    .await?;
    let mut categories = new.category_ids.clone();
    categories.sort();
    categories.dedup();
    for id in categories {
        txn.insert(mandate_category::ActiveModel {
            mandate_id: Set(row.id),
            category_id: Set(id),
            tenant_id: Set(txn.tenant().as_uuid()),
        })
        .await?;
    }
    let mut merchants = new.merchant_ids.clone();
    merchants.sort();
    merchants.dedup();
    for id in merchants {
        txn.insert(mandate_merchant::ActiveModel {
            mandate_id: Set(row.id),
            merchant_id: Set(id),
            tenant_id: Set(txn.tenant().as_uuid()),
        })
        .await?;
    }
    record(
        txn,
        act,
        AuditAction::MandateGranted,
        ("mandate", row.id),
        serde_json::json!({
            "beneficiary_id": row.beneficiary_id,
            "total_minor": row.total_minor,
            "currency": row.currency,
            "expires_at": row.expires_at,
        }),
    )
    .await?;
    crate::notify::enqueue(
        txn,
        row.beneficiary_id,
        crate::notify::NoticeKind::MandateGranted,
        serde_json::json!({
            "total": crate::notify::amount(row.total_minor, &row.currency),
            "currency": row.currency,
            "mandate_id": crate::ids::encode(crate::ids::Kind::Mandate, row.id),
            "expires": row.expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        }),
    )
    .await?;
    Ok(Outcome {
        id: row.id,
        payments: vec![],
    })
}

/// The sender ends an ACTIVE mandate; what remained is no longer spendable.
pub async fn revoke<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    id: Uuid,
) -> Result<mandate::Model> {
    let m = visible(txn, caller, id).await?;
    require(m.sender_id == caller.user_id)?;
    let ended = end(
        txn,
        act,
        &m,
        MandateStatus::Revoked,
        AuditAction::MandateRevoked,
    )
    .await?;
    if !ended {
        let now = txn.get::<mandate::Entity>(id).await?;
        return Err(Error::InvalidState {
            object: "mandate",
            state: now.status.as_str(),
            action: "revoke it",
        });
    }
    txn.get::<mandate::Entity>(id).await
}

/// ACTIVE → `to`, once: the conditional UPDATE decides who ends it.
async fn end<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    m: &mandate::Model,
    to: MandateStatus,
    action: AuditAction,
) -> Result<bool> {
    let now = Utc::now();
    let ended = txn
        .transition::<mandate::Entity>(
            m.id,
            mandate::Column::Status,
            &[MandateStatus::Active.as_str()],
            to.as_str(),
            |q| {
                let q = q
                    .col_expr(mandate::Column::EndedAt, Expr::value(now))
                    .col_expr(mandate::Column::UpdatedAt, Expr::value(now));
                if to == MandateStatus::Expired {
                    q.filter(mandate::Column::ExpiresAt.lte(now))
                } else {
                    q
                }
            },
        )
        .await?;
    let Some(m) = ended else {
        return Ok(false);
    };
    let left = m.total_minor - m.spent_minor;
    if left > 0 {
        ledger::post(
            txn,
            ledger::Movement {
                kind: EntryKind::MandateEnded,
                subject: ("mandate", m.id),
                currency: &m.currency,
                amount_minor: left,
                from: Account::Mandate(m.id),
                to: Account::Funding(m.sender_id),
            },
        )
        .await?;
    }
    record(
        txn,
        act,
        action,
        ("mandate", m.id),
        serde_json::json!({
            "spent_minor": m.spent_minor,
            "released_minor": m.total_minor - m.spent_minor,
            "currency": m.currency,
        }),
    )
    .await?;
    Ok(true)
}

/// The expiry job, for one mandate past its expiry: EXPIRED, once.
pub async fn expire<C: ConnectionTrait>(txn: &Scoped<C>, act: Act<'_>, id: Uuid) -> Result<bool> {
    let m = txn.get::<mandate::Entity>(id).await?;
    end(
        txn,
        act,
        &m,
        MandateStatus::Expired,
        AuditAction::MandateExpired,
    )
    .await
}

// ------------------------------------------------------------------ purchases

/// Why an ACTIVE-looking mandate cannot be spent right now, if it cannot.
fn not_spendable(m: &mandate::Model) -> Option<Error> {
    match m.status {
        MandateStatus::Active if m.expires_at <= Utc::now() => {
            Some(refuse(refusal::MANDATE_EXPIRED, "the mandate has expired"))
        }
        MandateStatus::Active => None,
        MandateStatus::Expired => Some(refuse(refusal::MANDATE_EXPIRED, "the mandate has expired")),
        MandateStatus::Consumed => Some(refuse(refusal::MANDATE_EXHAUSTED, "the mandate is spent")),
        MandateStatus::Revoked => Some(refuse(refusal::MANDATE_REVOKED, "the mandate was revoked")),
    }
}

/// The merchant is enabled, allowed by the mandate directly or through an enabled
/// category, and certified where the mandate requires it. Both ways of allowing it
/// are asked in one statement (`SELECT EXISTS(direct) OR EXISTS(by enabled
/// category)`).
async fn merchant_allowed<C: ConnectionTrait>(
    txn: &Scoped<C>,
    m: &mandate::Model,
    shop: &merchant::Model,
) -> Result<bool> {
    use sea_orm::sea_query::Query;
    if !shop.enabled || (m.certified_only && !shop.certified) {
        return Ok(false);
    }
    let tenant = txn.tenant().as_uuid();
    let direct = Query::select()
        .expr(Expr::val(1))
        .from(mandate_merchant::Entity)
        .and_where(mandate_merchant::Column::TenantId.eq(tenant))
        .and_where(mandate_merchant::Column::MandateId.eq(m.id))
        .and_where(mandate_merchant::Column::MerchantId.eq(shop.id))
        .to_owned();
    let by_category = Query::select()
        .expr(Expr::val(1))
        .from(mandate_category::Entity)
        .inner_join(
            spend_category::Entity,
            Expr::col((spend_category::Entity, spend_category::Column::Id)).equals((
                mandate_category::Entity,
                mandate_category::Column::CategoryId,
            )),
        )
        .and_where(mandate_category::Column::TenantId.eq(tenant))
        .and_where(mandate_category::Column::MandateId.eq(m.id))
        .and_where(mandate_category::Column::CategoryId.eq(shop.category_id))
        .and_where(spend_category::Column::TenantId.eq(tenant))
        .and_where(spend_category::Column::Enabled.eq(true))
        .to_owned();
    let query = Query::select()
        .expr_as(
            Expr::exists(direct).or(Expr::exists(by_category)),
            sea_orm::sea_query::Alias::new("allowed"),
        )
        .to_owned();
    let row = txn
        .unscoped()
        .query_one(txn.unscoped().get_database_backend().build(&query))
        .await?
        .ok_or_else(|| Error::internal(anyhow::anyhow!("SELECT EXISTS answered no row")))?;
    Ok(row.try_get::<bool>("", "allowed")?)
}

/// `spend_day = today ? day_spent : 0`, as SQL.
fn day_counter(
    day_col: impl sea_orm::ColumnTrait,
    spent_col: impl sea_orm::ColumnTrait,
    today: &str,
) -> SimpleExpr {
    Expr::case(Expr::col(day_col).eq(today), Expr::col(spent_col))
        .finally(Expr::value(0_i64))
        .into()
}

/// Takes `x` from the mandate's budget in one conditional UPDATE: still ACTIVE,
/// unexpired, within the total and within today's limit. Answers the mandate as the
/// UPDATE left it (`RETURNING`), `None` when any condition failed.
async fn take_budget<C: ConnectionTrait>(
    txn: &Scoped<C>,
    m: &mandate::Model,
    x: i64,
) -> Result<Option<mandate::Model>> {
    let now = Utc::now();
    let day = today();
    let day_spent = day_counter(
        mandate::Column::SpendDay,
        mandate::Column::DaySpentMinor,
        &day,
    );
    let taken = txn
        .update_returning::<mandate::Entity>(|q| {
            q.col_expr(
                mandate::Column::SpentMinor,
                Expr::col(mandate::Column::SpentMinor).add(x),
            )
            .col_expr(
                mandate::Column::DaySpentMinor,
                Expr::expr(day_spent.clone()).add(x),
            )
            .col_expr(mandate::Column::SpendDay, Expr::value(day.clone()))
            .col_expr(mandate::Column::UpdatedAt, Expr::value(now))
            .filter(mandate::Column::Id.eq(m.id))
            .filter(mandate::Column::Status.eq(MandateStatus::Active.as_str()))
            .filter(mandate::Column::ExpiresAt.gt(now))
            .filter(
                Expr::expr(Expr::col(mandate::Column::SpentMinor).add(x))
                    .lte(Expr::col(mandate::Column::TotalMinor)),
            )
            .filter(
                Condition::any()
                    .add(mandate::Column::DailyLimitMinor.is_null())
                    .add(
                        Expr::expr(Expr::expr(day_spent.clone()).add(x))
                            .lte(Expr::col(mandate::Column::DailyLimitMinor)),
                    ),
            )
        })
        .await?;
    Ok(taken.into_iter().next())
}

/// After a refused budget move: the precise reason, read back inside the same
/// transaction.
async fn why_refused<C: ConnectionTrait>(txn: &Scoped<C>, id: Uuid, x: i64) -> Result<Error> {
    let m = txn.get::<mandate::Entity>(id).await?;
    if let Some(err) = not_spendable(&m) {
        return Ok(err);
    }
    if m.spent_minor + x > m.total_minor {
        let left = Money::from_minor(m.total_minor - m.spent_minor, Currency::parse(&m.currency)?);
        return Ok(refuse(
            refusal::MANDATE_EXHAUSTED,
            format!("only {left} remains on the mandate"),
        ));
    }
    Ok(refuse(
        refusal::LIMIT_EXCEEDED,
        "the mandate's daily limit would be exceeded",
    ))
}

/// After `taken` was spent from a mandate (`m` as the budget UPDATE left it): all
/// spent, it is CONSUMED; this spending took it past nine-tenths, its beneficiary is
/// told (once: only the spending that crosses the line tells).
async fn after_spending<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    m: &mandate::Model,
    taken: i64,
) -> Result<()> {
    if m.status == MandateStatus::Active && m.spent_minor == m.total_minor {
        end(
            txn,
            act,
            m,
            MandateStatus::Consumed,
            AuditAction::MandateConsumed,
        )
        .await?;
        return Ok(());
    }
    let nine_tenths = |spent: i64| i128::from(spent) * 10 >= i128::from(m.total_minor) * 9;
    if nine_tenths(m.spent_minor) && !nine_tenths(m.spent_minor - taken) {
        crate::notify::enqueue(
            txn,
            m.beneficiary_id,
            crate::notify::NoticeKind::MandateNearlySpent,
            serde_json::json!({
                "total": crate::notify::amount(m.total_minor, &m.currency),
                "remaining": crate::notify::amount(m.total_minor - m.spent_minor, &m.currency),
                "currency": m.currency,
                "mandate_id": crate::ids::encode(crate::ids::Kind::Mandate, m.id),
            }),
        )
        .await?;
    }
    Ok(())
}

fn amount_in(m: &mandate::Model, amount: Decimal) -> Result<Money> {
    Money::parse_positive(amount, Currency::parse(&m.currency)?)
}

/// The beneficiary buys at a merchant under a mandate.
pub async fn purchase<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    mandate_id: Uuid,
    merchant_id: Uuid,
    amount: Decimal,
    description: Option<String>,
) -> Result<Outcome> {
    let m = visible(txn, caller, mandate_id).await?;
    require(m.beneficiary_id == caller.user_id)?;
    let shop = txn.get::<merchant::Entity>(merchant_id).await?;
    let money = amount_in(&m, amount)?;
    let description = description
        .map(|d| text("description", &d, 500))
        .transpose()?;
    if let Some(err) = not_spendable(&m) {
        return Err(err);
    }
    if !merchant_allowed(txn, &m, &shop).await? {
        return Err(refuse(
            refusal::MERCHANT_NOT_ALLOWED,
            format!("the mandate does not allow spending at {}", shop.name),
        ));
    }
    if m.per_purchase_limit_minor
        .is_some_and(|limit| money.minor() > limit)
    {
        return Err(refuse(
            refusal::LIMIT_EXCEEDED,
            "the purchase is above the mandate's per-purchase limit",
        ));
    }
    // The purchase with its ledger entry (one statement on PostgreSQL), the idempotent
    // answer and its audit row (appended to the chain now, not at the commit) first,
    // the budget last: on PostgreSQL the mandate's row lock is then held only from the
    // UPDATE to the commit. A refusal rolls all of it back.
    let id = new_id();
    let row = ledger::insert_and_post(
        txn,
        purchase::ActiveModel {
            id: Set(id),
            tenant_id: Set(txn.tenant().as_uuid()),
            mandate_id: Set(m.id),
            merchant_id: Set(shop.id),
            beneficiary_id: Set(caller.user_id),
            amount_minor: Set(money.minor()),
            currency: Set(m.currency.clone()),
            description: Set(description),
            created_at: Set(Utc::now()),
        },
        ledger::Movement {
            kind: EntryKind::Purchase,
            subject: ("purchase", id),
            currency: &m.currency,
            amount_minor: money.minor(),
            from: Account::Mandate(m.id),
            to: Account::Merchant(shop.id),
        },
    )
    .await?;
    record(
        txn,
        act,
        AuditAction::PurchaseCreated,
        ("purchase", row.id),
        serde_json::json!({ "mandate_id": m.id, "merchant_id": shop.id, "amount_minor": row.amount_minor }),
    )
    .await?;
    let outcome = Outcome {
        id: row.id,
        payments: vec![],
    };
    crate::idempotency::answer_now(txn, &outcome).await?;
    txn.append_audit_now().await?;
    let Some(after) = take_budget(txn, &m, money.minor()).await? else {
        return Err(why_refused(txn, m.id, money.minor()).await?);
    };
    after_spending(txn, act, &after, money.minor()).await?;
    Ok(outcome)
}

// ------------------------------------------------------------------ alerts

/// Records an alert for `sender`, in its own transaction (the refused work was
/// rolled back; the alert stays).
pub async fn raise_alert(
    db: &TenantDb,
    sender_id: Uuid,
    kind: AlertKind,
    mandate_id: Option<Uuid>,
    message: &str,
    details: serde_json::Value,
) -> Result<()> {
    let txn = db.begin().await?;
    txn.insert(alert::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(db.tenant().as_uuid()),
        sender_id: Set(sender_id),
        kind: Set(kind.as_str().to_owned()),
        mandate_id: Set(mandate_id),
        message: Set(message.chars().take(500).collect()),
        details: Set(details),
        created_at: Set(Utc::now()),
    })
    .await?;
    txn.commit().await
}

/// The reason of a refusal that raises an alert, if `err` is one.
pub fn alerting_reason(err: &Error) -> Option<AlertKind> {
    match err {
        Error::Conflict {
            reason: Some(reason),
            ..
        } => AlertKind::parse(reason).filter(|kind| *kind != AlertKind::PaymentFailed),
        _ => None,
    }
}

pub fn alert_visibility(caller: &Caller) -> Option<Condition> {
    (!caller.is_staff()).then(|| Condition::all().add(alert::Column::SenderId.eq(caller.user_id)))
}

// ------------------------------------------------------------------ payees and payouts

/// What a payee is allowed on.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum PayeeOn {
    Mandate(Uuid),
    Escrow(Uuid),
}

#[derive(Debug, Clone, Serialize)]
pub struct NewPayee {
    pub on: PayeeOn,
    pub reference: String,
    pub name: String,
    pub daily_limit: Option<Decimal>,
    pub total_limit: Option<Decimal>,
}

/// The sender allows a payee on a mandate or on an escrow.
pub async fn add_payee<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    new: NewPayee,
) -> Result<payee::Model> {
    let (mandate_id, escrow_id, currency_code) = match new.on {
        PayeeOn::Mandate(id) => {
            let m = visible(txn, caller, id).await?;
            require(m.sender_id == caller.user_id)?;
            (Some(m.id), None, m.currency)
        }
        PayeeOn::Escrow(id) => {
            let esc = crate::escrow::rules::locked(txn, caller, id).await?;
            require(esc.sender_id == caller.user_id)?;
            (None, Some(esc.id), esc.currency)
        }
    };
    let reference = new.reference.trim().to_owned();
    if reference.is_empty()
        || reference.len() > 64
        || !reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::bad_field(
            "reference",
            "a payee reference is 1 to 64 of A-Z, a-z, 0-9, - and _",
        ));
    }
    let name = text("name", &new.name, 200)?;
    let currency = Currency::parse(&currency_code)?;
    let limit = |v: Option<Decimal>, field: &'static str| -> Result<Option<i64>> {
        v.map(|d| {
            Money::parse_positive(d, currency)
                .map(|x| x.minor())
                .map_err(|_| Error::bad_field(field, "a positive amount in the payee's currency"))
        })
        .transpose()
    };
    let row = txn
        .insert(payee::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(txn.tenant().as_uuid()),
            mandate_id: Set(mandate_id),
            escrow_id: Set(escrow_id),
            reference: Set(reference),
            name: Set(name),
            currency: Set(currency_code.clone()),
            daily_limit_minor: Set(limit(new.daily_limit, "dailyLimit")?),
            total_limit_minor: Set(limit(new.total_limit, "totalLimit")?),
            paid_minor: Set(0),
            pay_day: Set(today()),
            day_paid_minor: Set(0),
            enabled: Set(true),
            created_at: Set(Utc::now()),
        })
        .await?;
    record(
        txn,
        act,
        AuditAction::PayeeAdded,
        ("payee", row.id),
        serde_json::json!({
            "mandate_id": mandate_id,
            "escrow_id": escrow_id,
            "reference": row.reference,
        }),
    )
    .await?;
    Ok(row)
}

/// Pays an allowed payee: from a mandate (its beneficiary), or from an escrow (its
/// sender). The payee's limits and the budget move in conditional UPDATEs, and a
/// payment goes to the PSP.
pub async fn payout<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    payee_id: Uuid,
    amount: Decimal,
) -> Result<Outcome> {
    let p = txn.get::<payee::Entity>(payee_id).await?;
    // Check who may pay before anything moves.
    let m = match (p.mandate_id, p.escrow_id) {
        (Some(mandate_id), _) => {
            let m = visible(txn, caller, mandate_id).await?;
            require(m.beneficiary_id == caller.user_id)?;
            if let Some(err) = not_spendable(&m) {
                return Err(err);
            }
            Some(m)
        }
        (None, Some(escrow_id)) => {
            let esc = crate::escrow::rules::locked(txn, caller, escrow_id).await?;
            require(esc.sender_id == caller.user_id)?;
            None
        }
        (None, None) => return Err(Error::NotFound),
    };
    let money = Money::parse_positive(amount, Currency::parse(&p.currency)?)?;
    if !p.enabled {
        return Err(refuse(refusal::PAYEE_NOT_ALLOWED, "this payee is disabled"));
    }
    let x = money.minor();
    let day = today();
    let day_paid = day_counter(payee::Column::PayDay, payee::Column::DayPaidMinor, &day);
    let within = txn
        .update_where::<payee::Entity>(|q| {
            q.col_expr(
                payee::Column::PaidMinor,
                Expr::col(payee::Column::PaidMinor).add(x),
            )
            .col_expr(
                payee::Column::DayPaidMinor,
                Expr::expr(day_paid.clone()).add(x),
            )
            .col_expr(payee::Column::PayDay, Expr::value(day.clone()))
            .filter(payee::Column::Id.eq(p.id))
            .filter(
                Condition::any()
                    .add(payee::Column::TotalLimitMinor.is_null())
                    .add(
                        Expr::expr(Expr::col(payee::Column::PaidMinor).add(x))
                            .lte(Expr::col(payee::Column::TotalLimitMinor)),
                    ),
            )
            .filter(
                Condition::any()
                    .add(payee::Column::DailyLimitMinor.is_null())
                    .add(
                        Expr::expr(Expr::expr(day_paid.clone()).add(x))
                            .lte(Expr::col(payee::Column::DailyLimitMinor)),
                    ),
            )
        })
        .await?;
    if within == 0 {
        return Err(refuse(
            refusal::LIMIT_EXCEEDED,
            "the payee's limit would be exceeded",
        ));
    }
    let Some(m) = m else {
        // From an escrow: what it holds, counted as released.
        let escrow_id = p.escrow_id.ok_or(Error::NotFound)?;
        let effect =
            crate::escrow::rules::pay_external(txn, act, caller, escrow_id, &p.reference, amount)
                .await?;
        let payment_id = effect.payments.first().copied().ok_or(Error::NotFound)?;
        let row = insert_payout(txn, act, caller, &p, None, payment_id, x).await?;
        return Ok(Outcome {
            id: row.id,
            payments: vec![payment_id],
        });
    };
    let Some(after) = take_budget(txn, &m, x).await? else {
        return Err(why_refused(txn, m.id, x).await?);
    };
    let payment = payments::record(
        txn,
        act.psp,
        NewPayment {
            payee: Payee::External(p.reference.clone()),
            purpose: PaymentPurpose::SpendPayout,
            amount: money,
            escrow_id: None,
            milestone_id: None,
            source: Account::Mandate(m.id),
        },
        act.actor,
        act.origin,
    )
    .await?;
    let row = insert_payout(txn, act, caller, &p, Some(m.id), payment.id, x).await?;
    after_spending(txn, act, &after, x).await?;
    Ok(Outcome {
        id: row.id,
        payments: vec![payment.id],
    })
}

async fn insert_payout<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    p: &payee::Model,
    mandate_id: Option<Uuid>,
    payment_id: Uuid,
    x: i64,
) -> Result<payout::Model> {
    let row = txn
        .insert(payout::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(txn.tenant().as_uuid()),
            payee_id: Set(p.id),
            mandate_id: Set(mandate_id),
            payment_id: Set(payment_id),
            amount_minor: Set(x),
            currency: Set(p.currency.clone()),
            created_by: Set(caller.user_id),
            created_at: Set(Utc::now()),
        })
        .await?;
    record(
        txn,
        act,
        AuditAction::PayoutCreated,
        ("payout", row.id),
        serde_json::json!({ "payee_id": p.id, "amount_minor": x }),
    )
    .await?;
    Ok(row)
}

// ------------------------------------------------------------------ transfers

/// A user allowlists a recipient for their transfers.
pub async fn allow_recipient<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    recipient_id: Uuid,
) -> Result<transfer_recipient::Model> {
    if recipient_id == caller.user_id {
        return Err(Error::bad_field(
            "recipientId",
            "you cannot allowlist yourself",
        ));
    }
    txn.find_by_id::<user::Entity>(recipient_id)
        .await?
        .filter(|u| u.is_active)
        .ok_or(Error::NotFound)?;
    let row = txn
        .insert(transfer_recipient::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(txn.tenant().as_uuid()),
            owner_id: Set(caller.user_id),
            recipient_id: Set(recipient_id),
            created_at: Set(Utc::now()),
        })
        .await?;
    record(
        txn,
        act,
        AuditAction::TransferRecipientAllowed,
        ("user", recipient_id),
        serde_json::json!({}),
    )
    .await?;
    Ok(row)
}

/// An admin certifies a user: anyone of the tenant may transfer to them.
pub async fn certify_recipient<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    user_id: Uuid,
) -> Result<()> {
    require(caller.roles.contains(&Role::Admin))?;
    txn.get::<user::Entity>(user_id).await?;
    let exists = txn
        .first::<certified_recipient::Entity>(|q| {
            q.filter(certified_recipient::Column::UserId.eq(user_id))
        })
        .await?
        .is_some();
    if !exists {
        txn.insert(certified_recipient::ActiveModel {
            tenant_id: Set(txn.tenant().as_uuid()),
            user_id: Set(user_id),
            created_at: Set(Utc::now()),
        })
        .await?;
        record(
            txn,
            act,
            AuditAction::TransferRecipientCertified,
            ("user", user_id),
            serde_json::json!({}),
        )
        .await?;
    }
    Ok(())
}

/// A transfer to another user of the tenant: only to an allowlisted or certified
/// recipient.
pub async fn transfer<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    recipient_id: Uuid,
    amount: Decimal,
    currency: &str,
    note: Option<String>,
) -> Result<Outcome> {
    let money = Money::parse_positive(amount, Currency::parse(currency)?)?;
    let note = note.map(|n| text("note", &n, 500)).transpose()?;
    if recipient_id == caller.user_id {
        return Err(Error::bad_field(
            "recipientId",
            "you cannot transfer to yourself",
        ));
    }
    let recipient = txn
        .find_by_id::<user::Entity>(recipient_id)
        .await?
        .filter(|u| u.is_active)
        .ok_or(Error::NotFound)?;
    let allowed = match Some(&recipient) {
        None => false,
        Some(r) => {
            txn.first::<transfer_recipient::Entity>(|q| {
                q.filter(transfer_recipient::Column::OwnerId.eq(caller.user_id))
                    .filter(transfer_recipient::Column::RecipientId.eq(r.id))
            })
            .await?
            .is_some()
                || txn
                    .first::<certified_recipient::Entity>(|q| {
                        q.filter(certified_recipient::Column::UserId.eq(r.id))
                    })
                    .await?
                    .is_some()
        }
    };
    if !allowed {
        return Err(refuse(
            refusal::TRANSFER_NOT_ALLOWED,
            "transfers go only to recipients you allowlisted or the tenant certified",
        ));
    }
    let payment = payments::record(
        txn,
        act.psp,
        NewPayment {
            payee: Payee::User(recipient_id),
            purpose: PaymentPurpose::Transfer,
            amount: money,
            escrow_id: None,
            milestone_id: None,
            source: Account::Funding(caller.user_id),
        },
        act.actor,
        act.origin,
    )
    .await?;
    let row = txn
        .insert(transfer::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(txn.tenant().as_uuid()),
            sender_id: Set(caller.user_id),
            recipient_id: Set(recipient_id),
            payment_id: Set(payment.id),
            amount_minor: Set(money.minor()),
            currency: Set(money.currency().code().to_owned()),
            note: Set(note),
            created_at: Set(Utc::now()),
        })
        .await?;
    record(
        txn,
        act,
        AuditAction::TransferCreated,
        ("transfer", row.id),
        serde_json::json!({ "recipient_id": recipient_id, "amount_minor": row.amount_minor }),
    )
    .await?;
    Ok(Outcome {
        id: row.id,
        payments: vec![payment.id],
    })
}

/// Details for an alert: global ids, never internal ones.
pub fn alert_details(pairs: &[(&str, Kind, Uuid)], amount: Option<String>) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (key, kind, id) in pairs {
        map.insert(
            (*key).to_owned(),
            serde_json::Value::from(ids::encode(*kind, *id)),
        );
    }
    if let Some(amount) = amount {
        map.insert("amount".to_owned(), serde_json::Value::from(amount));
    }
    serde_json::Value::Object(map)
}
