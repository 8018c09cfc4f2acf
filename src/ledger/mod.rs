//! The double-entry ledger under every money movement (DESIGN §8: money is conserved
//! by the data model).
//!
//! Per tenant and currency, money sits in accounts ([`Account`]) and moves only by
//! journal entries written in the same transaction as the business change they
//! record. Every movement is two-legged, so an entry is one row (`ledger_entries`)
//! holding both legs: an amount out of one account and into another — a posting of
//! −amount and one of +amount, which sum to zero by construction (the database
//! refuses an amount that is not positive and an entry from an account to itself).
//! One row, not an entry and two postings: the journal costs a purchase one row
//! (issue 18's measurement). Balances are derived from the entries (into − out of);
//! nothing caches them, so nothing can disagree with them. Amounts are integer minor
//! units, one currency per entry. The table is append-only.
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
//! [`verify`] checks that every entry is a movement of what its deposit, purchase or
//! payment says and that every business counter (escrow funded/released/refunded,
//! mandate total/spent, payments in flight, failed payments awaiting a retry, settled
//! payments, merchants' takings) equals the accounts that mirror it.

pub mod graphql;
mod verify;

use chrono::Utc;
use sea_orm::{ActiveValue::Set, ConnectionTrait};
use uuid::Uuid;

use crate::{
    db::{Scoped, TenantTxn},
    entity::{
        ledger_entry,
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

    /// The movement as its journal row: one row, both legs.
    fn entry(&self, tenant: Uuid) -> ledger_entry::ActiveModel {
        let (from_kind, from_ref) = self.from.key();
        let (to_kind, to_ref) = self.to.key();
        ledger_entry::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(tenant),
            currency: Set(self.currency.to_owned()),
            kind: Set(self.kind.as_str().to_owned()),
            subject_type: Set(self.subject.0.to_owned()),
            subject_id: Set(self.subject.1),
            created_at: Set(Utc::now()),
            from_kind: Set(from_kind.to_owned()),
            from_ref: Set(from_ref),
            to_kind: Set(to_kind.to_owned()),
            to_ref: Set(to_ref),
            amount_minor: Set(self.amount_minor),
        }
    }
}

/// Posts `movement` in `txn`'s transaction: one row, one statement.
pub async fn post<C: ConnectionTrait>(txn: &Scoped<C>, movement: Movement<'_>) -> Result<()> {
    movement.check()?;
    txn.insert_many([movement.entry(txn.tenant().as_uuid())])
        .await
}

/// Inserts `row` (a row of this tenant, its `tenant_id` set) and posts `movement`
/// in one round trip on PostgreSQL — the journal row as a data-modifying CTE in front
/// of the business row's `INSERT … RETURNING`, where [`post`] after an insert would be
/// two statements; on SQLite, the insert then [`post`]. Returns the inserted row.
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
    let backend = txn.unscoped().get_database_backend();
    if backend != sea_orm::DbBackend::Postgres {
        let inserted = txn.insert(row).await?;
        post(txn, movement).await?;
        return Ok(inserted);
    }
    let entry = ledger_entry::Entity::insert(movement.entry(txn.tenant().as_uuid())).build(backend);
    let insert = <A::Entity as EntityTrait>::insert(row).build(backend);
    let mut values = entry.values.map(|v| v.0).unwrap_or_default();
    // The business row's placeholders follow the entry's.
    let shift = values.len();
    let business = renumber(&insert.sql, shift);
    values.extend(insert.values.map(|v| v.0).unwrap_or_default());
    let sql = format!(
        "WITH ledger_entry AS ({}) {business} RETURNING *",
        entry.sql
    );
    let returned = txn
        .unscoped()
        .query_one(sea_orm::Statement::from_sql_and_values(
            backend, sql, values,
        ))
        .await?
        .ok_or_else(|| Error::internal(anyhow::anyhow!("an INSERT … RETURNING returned no row")))?;
    Ok(<A::Entity as EntityTrait>::Model::from_query_result(
        &returned, "",
    )?)
}

/// `sql` (PostgreSQL, `$n` placeholders) with each placeholder moved up by `shift`.
fn renumber(sql: &str, shift: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - at - 1);
        match rest[at + 1..at + 1 + digits].parse::<usize>() {
            Ok(n) => out.push_str(&format!("${}", n + shift)),
            Err(_) => out.push('$'),
        }
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
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

/// The entries that moved money into or out of `account`, and those recorded against
/// `payments` (their settlement, failure and retry), oldest first.
pub async fn entries_of<C: ConnectionTrait>(
    db: &Scoped<C>,
    account: &Account,
    payments: &[Uuid],
) -> Result<Vec<ledger_entry::Model>> {
    use sea_orm::{ColumnTrait, Condition, QueryFilter, QueryOrder};
    let (kind, reference) = account.key();
    db.list::<ledger_entry::Entity>(|q| {
        q.filter(
            Condition::any()
                .add(
                    Condition::all()
                        .add(ledger_entry::Column::FromKind.eq(kind))
                        .add(ledger_entry::Column::FromRef.eq(reference.clone())),
                )
                .add(
                    Condition::all()
                        .add(ledger_entry::Column::ToKind.eq(kind))
                        .add(ledger_entry::Column::ToRef.eq(reference.clone())),
                )
                .add(ledger_entry::Column::SubjectId.is_in(payments.iter().copied())),
        )
        .order_by_asc(ledger_entry::Column::CreatedAt)
        .order_by_asc(ledger_entry::Column::Id)
    })
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn renumber_moves_every_placeholder() {
        assert_eq!(
            super::renumber("INSERT INTO t (a, b) VALUES ($1, $2), ($10, $3)", 12),
            "INSERT INTO t (a, b) VALUES ($13, $14), ($22, $15)"
        );
        assert_eq!(super::renumber("no placeholder", 3), "no placeholder");
        assert_eq!(super::renumber("a $ b $1", 1), "a $ b $2");
    }
}
