//! The double-entry ledger under every money movement (DESIGN §8: money is conserved
//! by the data model).
//!
//! Per tenant and currency, money sits in accounts ([`Account`]) and moves only by
//! journal entries: a set of postings, one per account, that sum to zero, written in
//! the same transaction as the business change they record. Balances are the sums of
//! the postings; nothing caches them, so nothing can disagree with them. Amounts are
//! integer minor units; an entry has one currency and the database refuses a posting
//! in another (a composite foreign key). Both tables are append-only.
//!
//! The movements (who is debited → who is credited):
//! - deposit into an escrow: the sender's funding → the escrow;
//! - mandate granted: the sender's funding → the mandate; ended (revoked, expired)
//!   with money left: the mandate → the sender's funding;
//! - purchase: the mandate → the merchant;
//! - payment recorded (release, refund, dispute split, payee payout, transfer): its
//!   source (the escrow, the mandate, the sender's funding) → PSP clearing;
//! - payment settled: PSP clearing → the payee; failed: PSP clearing → PSP returned;
//!   retried: PSP returned → PSP clearing.
//!
//! [`verify`] checks that every entry balances and that every business counter
//! (escrow funded/released/refunded, mandate total/spent, payments in flight, failed
//! payments awaiting a retry, settled payments, merchants' takings) equals the
//! accounts that mirror it.

pub mod graphql;
mod verify;

use chrono::Utc;
use sea_orm::{ActiveValue::Set, ConnectionTrait};
use uuid::Uuid;

use crate::{
    db::{Scoped, TenantTxn},
    entity::{
        ledger_entry, ledger_posting,
        payment::{self, PaymentStatus},
    },
    error::{Error, Result},
    ids::new_id,
};

pub use verify::{Report, verify};

/// Where money sits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Account {
    /// A user's own money outside the system: what deposits, mandate budgets and
    /// transfers are paid from, and what a returned mandate budget goes back to.
    Funding(Uuid),
    /// What an escrow holds.
    Escrow(Uuid),
    /// A mandate's unspent budget.
    Mandate(Uuid),
    /// What a merchant took from purchases under mandates.
    Merchant(Uuid),
    /// Payments handed to the PSP and not yet settled or failed (PENDING, SENT).
    PspClearing,
    /// Payments that failed and wait for a retry.
    PspReturned,
    /// What a user of the tenant was paid out.
    PaidUser(Uuid),
    /// What an external payee (by its reference) was paid out.
    PaidExternal(String),
}

impl Account {
    /// The account's kind and reference, as stored.
    pub fn key(&self) -> (&'static str, String) {
        match self {
            Account::Funding(id) => ("FUNDING", id.to_string()),
            Account::Escrow(id) => ("ESCROW", id.to_string()),
            Account::Mandate(id) => ("MANDATE", id.to_string()),
            Account::Merchant(id) => ("MERCHANT", id.to_string()),
            Account::PspClearing => ("PSP_CLEARING", String::new()),
            Account::PspReturned => ("PSP_RETURNED", String::new()),
            Account::PaidUser(id) => ("PAID_USER", id.to_string()),
            Account::PaidExternal(reference) => ("PAID_EXTERNAL", reference.clone()),
        }
    }

    /// The account a stored kind and reference name.
    pub fn from_key(kind: &str, reference: &str) -> Option<Self> {
        let id = || reference.parse::<Uuid>().ok();
        Some(match kind {
            "FUNDING" => Account::Funding(id()?),
            "ESCROW" => Account::Escrow(id()?),
            "MANDATE" => Account::Mandate(id()?),
            "MERCHANT" => Account::Merchant(id()?),
            "PSP_CLEARING" => Account::PspClearing,
            "PSP_RETURNED" => Account::PspReturned,
            "PAID_USER" => Account::PaidUser(id()?),
            "PAID_EXTERNAL" => Account::PaidExternal(reference.to_owned()),
            _ => return None,
        })
    }
}

/// What moved the money: the kind of a journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
#[graphql(name = "LedgerEntryKind")]
pub enum EntryKind {
    /// A deposit into an escrow.
    Deposit,
    /// A mandate's budget set aside from its sender's funding.
    MandateGranted,
    /// What was left of a revoked or expired mandate, back to its sender.
    MandateEnded,
    /// A purchase under a mandate.
    Purchase,
    /// A payment recorded for the PSP (release, refund, payout, transfer).
    PaymentCreated,
    /// A failed payment tried again.
    PaymentRetried,
    /// The PSP settled a payment: the payee has the money.
    PaymentSettled,
    /// The PSP failed a payment: the money waits for a retry.
    PaymentFailed,
    /// The PSP took back a payment it had settled (the payee's bank returned it, or
    /// the PSP refunded it): the money waits for a retry.
    PaymentReturned,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Deposit => "DEPOSIT",
            EntryKind::MandateGranted => "MANDATE_GRANTED",
            EntryKind::MandateEnded => "MANDATE_ENDED",
            EntryKind::Purchase => "PURCHASE",
            EntryKind::PaymentCreated => "PAYMENT_CREATED",
            EntryKind::PaymentRetried => "PAYMENT_RETRIED",
            EntryKind::PaymentSettled => "PAYMENT_SETTLED",
            EntryKind::PaymentFailed => "PAYMENT_FAILED",
            EntryKind::PaymentReturned => "PAYMENT_RETURNED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            EntryKind::Deposit,
            EntryKind::MandateGranted,
            EntryKind::MandateEnded,
            EntryKind::Purchase,
            EntryKind::PaymentCreated,
            EntryKind::PaymentRetried,
            EntryKind::PaymentSettled,
            EntryKind::PaymentFailed,
            EntryKind::PaymentReturned,
        ]
        .into_iter()
        .find(|k| k.as_str() == raw)
    }
}

/// One movement: `amount_minor` of `currency` from `from` to `to`, recorded against
/// `subject` (the row the movement belongs to).
pub struct Movement<'a> {
    pub kind: EntryKind,
    pub subject: (&'static str, Uuid),
    pub currency: &'a str,
    pub amount_minor: i64,
    pub from: Account,
    pub to: Account,
}

impl Movement<'_> {
    fn check(&self) -> Result<()> {
        if self.amount_minor <= 0 || self.from == self.to {
            return Err(Error::internal(anyhow::anyhow!(
                "a ledger movement of {} from {:?} to {:?}",
                self.amount_minor,
                self.from,
                self.to
            )));
        }
        Ok(())
    }

    /// PostgreSQL: the entry and both postings as two data-modifying CTEs
    /// (`ledger_entry AS (…), ledger_legs AS (…)`), placeholders numbered from
    /// `first`, and their values. The postings' foreign key is checked at the end of
    /// the statement, when the entry is there.
    fn ctes(&self, tenant: Uuid, first: usize) -> (String, Vec<sea_orm::Value>) {
        let p = |i: usize| format!("${}", first + i);
        let (from_kind, from_ref) = self.from.key();
        let (to_kind, to_ref) = self.to.key();
        let sql = format!(
            "ledger_entry AS (INSERT INTO ledger_entries \
               (id, tenant_id, currency, kind, subject_type, subject_id, created_at) \
               VALUES ({e}, {t}, {c}, {}, {}, {}, {})), \
             ledger_legs AS (INSERT INTO ledger_postings \
               (id, tenant_id, entry_id, currency, account_kind, account_ref, amount_minor) \
               VALUES ({}, {t}, {e}, {c}, {}, {}, {}), ({}, {t}, {e}, {c}, {}, {}, {}))",
            p(3),
            p(4),
            p(5),
            p(6),
            p(7),
            p(8),
            p(9),
            p(10),
            p(11),
            p(12),
            p(13),
            p(14),
            e = p(0),
            t = p(1),
            c = p(2),
        );
        let values = vec![
            new_id().into(),
            tenant.into(),
            self.currency.into(),
            self.kind.as_str().into(),
            self.subject.0.into(),
            self.subject.1.into(),
            Utc::now().into(),
            new_id().into(),
            from_kind.into(),
            from_ref.into(),
            (-self.amount_minor).into(),
            new_id().into(),
            to_kind.into(),
            to_ref.into(),
            self.amount_minor.into(),
        ];
        (sql, values)
    }

    /// SQLite: the entry, then its postings (two statements).
    async fn insert_apart<C: ConnectionTrait>(&self, txn: &Scoped<C>) -> Result<()> {
        let entry = new_id();
        let tenant = txn.tenant().as_uuid();
        txn.insert_many([ledger_entry::ActiveModel {
            id: Set(entry),
            tenant_id: Set(tenant),
            currency: Set(self.currency.to_owned()),
            kind: Set(self.kind.as_str().to_owned()),
            subject_type: Set(self.subject.0.to_owned()),
            subject_id: Set(self.subject.1),
            created_at: Set(Utc::now()),
        }])
        .await?;
        let leg = |(kind, reference): (&str, String), amount: i64| ledger_posting::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(tenant),
            entry_id: Set(entry),
            currency: Set(self.currency.to_owned()),
            account_kind: Set(kind.to_owned()),
            account_ref: Set(reference),
            amount_minor: Set(amount),
        };
        txn.insert_many([
            leg(self.from.key(), -self.amount_minor),
            leg(self.to.key(), self.amount_minor),
        ])
        .await
    }
}

fn on_postgres<C: ConnectionTrait>(txn: &Scoped<C>) -> bool {
    txn.unscoped().get_database_backend() == sea_orm::DbBackend::Postgres
}

/// Posts `movement` in `txn`'s transaction: one statement on PostgreSQL, two on
/// SQLite.
pub async fn post<C: ConnectionTrait>(txn: &Scoped<C>, movement: Movement<'_>) -> Result<()> {
    movement.check()?;
    if !on_postgres(txn) {
        return movement.insert_apart(txn).await;
    }
    let (ctes, values) = movement.ctes(txn.tenant().as_uuid(), 1);
    txn.unscoped()
        .execute(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            format!("WITH {ctes} SELECT 1"),
            values,
        ))
        .await?;
    Ok(())
}

/// Inserts `row` (a row of this tenant, its `tenant_id` set) and posts `movement`
/// in one round trip on PostgreSQL — the business row and its ledger entry are one
/// statement, where [`post`] after an insert would be two; on SQLite, the insert then
/// [`post`]. Returns the inserted row.
pub async fn insert_and_post<C, A>(
    txn: &Scoped<C>,
    row: A,
    movement: Movement<'_>,
) -> Result<<A::Entity as sea_orm::EntityTrait>::Model>
where
    C: ConnectionTrait,
    A: sea_orm::ActiveModelTrait + sea_orm::ActiveModelBehavior + Send,
    A::Entity: crate::db::TenantEntity,
    <A::Entity as sea_orm::EntityTrait>::Model: sea_orm::IntoActiveModel<A>,
{
    use sea_orm::{EntityTrait, FromQueryResult, QueryTrait};
    if <A::Entity as crate::db::TenantEntity>::GUARDS_ACCESS {
        // Such a row must tell the principal caches (`Scoped::insert` does).
        return Err(Error::internal(anyhow::anyhow!(
            "insert_and_post on a table that guards access"
        )));
    }
    movement.check()?;
    if !on_postgres(txn) {
        let inserted = txn.insert(row).await?;
        movement.insert_apart(txn).await?;
        return Ok(inserted);
    }
    let insert = <A::Entity as EntityTrait>::insert(row).build(sea_orm::DbBackend::Postgres);
    let mut values = insert.values.map(|v| v.0).unwrap_or_default();
    let (ctes, ledger_values) = movement.ctes(txn.tenant().as_uuid(), values.len() + 1);
    values.extend(ledger_values);
    let sql = format!("WITH {ctes} {} RETURNING *", insert.sql);
    let returned = txn
        .unscoped()
        .query_one(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            sql,
            values,
        ))
        .await?
        .ok_or_else(|| Error::internal(anyhow::anyhow!("an INSERT … RETURNING returned no row")))?;
    Ok(<A::Entity as EntityTrait>::Model::from_query_result(
        &returned, "",
    )?)
}

/// Who a payment pays, as an account.
fn payee_of(p: &payment::Model) -> Result<Account> {
    match (p.payee_id, &p.payee_reference) {
        (Some(id), _) => Ok(Account::PaidUser(id)),
        (None, Some(reference)) => Ok(Account::PaidExternal(reference.clone())),
        (None, None) => Err(Error::internal(anyhow::anyhow!(
            "payment {} has no payee",
            p.id
        ))),
    }
}

/// A settled payment leaves PSP clearing for its payee; a failed one waits in PSP
/// returned for its retry; one the PSP took back after it settled comes back from its
/// payee to PSP returned.
fn payment_moved<'a>(
    txn: &'a TenantTxn,
    p: &'a payment::Model,
    from: Option<PaymentStatus>,
) -> futures_util::future::BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        let (kind, source, to) = match (p.status, from) {
            (PaymentStatus::Settled, _) => (
                EntryKind::PaymentSettled,
                Account::PspClearing,
                payee_of(p)?,
            ),
            (PaymentStatus::Failed, Some(PaymentStatus::Settled)) => (
                EntryKind::PaymentReturned,
                payee_of(p)?,
                Account::PspReturned,
            ),
            (PaymentStatus::Failed, _) => (
                EntryKind::PaymentFailed,
                Account::PspClearing,
                Account::PspReturned,
            ),
            (PaymentStatus::Pending | PaymentStatus::Sent, _) => return Ok(()),
        };
        post(
            txn,
            Movement {
                kind,
                subject: ("payment", p.id),
                currency: &p.currency,
                amount_minor: p.amount_minor,
                from: source,
                to,
            },
        )
        .await
    })
}

inventory::submit! {
    crate::hooks::PaymentMoved { name: "ledger", run: payment_moved }
}

/// An entry with its postings.
pub struct Posted {
    pub entry: ledger_entry::Model,
    pub postings: Vec<ledger_posting::Model>,
}

/// The entries that moved money into or out of `account`, and those recorded against
/// `payments` (their settlement, failure and retry), oldest first, each with all its
/// postings.
pub async fn entries_of<C: ConnectionTrait>(
    db: &Scoped<C>,
    account: &Account,
    payments: &[Uuid],
) -> Result<Vec<Posted>> {
    use sea_orm::{ColumnTrait, Condition, QueryFilter, QueryOrder};
    let (kind, reference) = account.key();
    let touching: Vec<Uuid> = db
        .list::<ledger_posting::Entity>(|q| {
            q.filter(ledger_posting::Column::AccountKind.eq(kind))
                .filter(ledger_posting::Column::AccountRef.eq(reference))
        })
        .await?
        .into_iter()
        .map(|p| p.entry_id)
        .collect();
    let entries = db
        .list::<ledger_entry::Entity>(|q| {
            q.filter(
                Condition::any()
                    .add(ledger_entry::Column::Id.is_in(touching))
                    .add(ledger_entry::Column::SubjectId.is_in(payments.iter().copied())),
            )
            .order_by_asc(ledger_entry::Column::CreatedAt)
            .order_by_asc(ledger_entry::Column::Id)
        })
        .await?;
    let mut postings = db
        .list::<ledger_posting::Entity>(|q| {
            q.filter(ledger_posting::Column::EntryId.is_in(entries.iter().map(|e| e.id)))
                .order_by_asc(ledger_posting::Column::AmountMinor)
        })
        .await?;
    Ok(entries
        .into_iter()
        .map(|entry| {
            let (mine, rest) = postings.drain(..).partition(|p| p.entry_id == entry.id);
            postings = rest;
            Posted {
                entry,
                postings: mine,
            }
        })
        .collect())
}
