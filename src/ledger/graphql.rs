//! The ledger as the parties of an escrow or a mandate (and the tenant's staff) see
//! it: `Escrow.ledgerEntries`, `Mandate.ledgerEntries`.

use async_graphql::{Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::{Account, EntryKind};
use crate::{
    entity::ledger_entry,
    graphql::{node::global_id, scalars::MoneyValue},
    ids::Kind,
};

pub struct LedgerEntryNode(pub ledger_entry::Model);

/// One money movement: postings that sum to zero, in one currency.
#[Object(name = "LedgerEntry")]
impl LedgerEntryNode {
    /// The entry's global id.
    pub async fn id(&self) -> ID {
        global_id(Kind::LedgerEntry, self.0.id)
    }

    /// What moved the money.
    async fn kind(&self) -> Option<EntryKind> {
        EntryKind::parse(&self.0.kind)
    }

    /// The global id of what the movement belongs to: a deposit, payment, purchase or
    /// mandate.
    async fn subject_id(&self) -> ID {
        let kind = match self.0.subject_type.as_str() {
            "deposit" => Kind::Deposit,
            "purchase" => Kind::Purchase,
            "mandate" => Kind::Mandate,
            _ => Kind::Payment,
        };
        global_id(kind, self.0.subject_id)
    }

    /// When it was posted.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// Its legs, money out (negative) first; they sum to zero.
    async fn postings(&self) -> Vec<LedgerPosting> {
        let e = &self.0;
        vec![
            LedgerPosting {
                account: LedgerAccount::of(&e.from_kind, &e.from_ref),
                amount: MoneyValue::new(-e.amount_minor, &e.currency),
            },
            LedgerPosting {
                account: LedgerAccount::of(&e.to_kind, &e.to_ref),
                amount: MoneyValue::new(e.amount_minor, &e.currency),
            },
        ]
    }
}

/// One leg of a ledger entry.
#[derive(SimpleObject)]
pub struct LedgerPosting {
    /// Where the money went into (positive) or came out of (negative).
    pub account: LedgerAccount,
    /// Signed: positive into the account, negative out of it.
    pub amount: MoneyValue,
}

/// The kinds of ledger account.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum LedgerAccountKind {
    /// A user's own money outside the system (what deposits and budgets come from).
    Funding,
    /// What an escrow holds.
    Escrow,
    /// A mandate's unspent budget.
    Mandate,
    /// What a merchant took from purchases.
    Merchant,
    /// Payments with the PSP, not yet settled or failed.
    PspClearing,
    /// Failed payments waiting for a retry.
    PspReturned,
    /// What a user of the tenant was paid.
    PaidUser,
    /// What an external payee was paid.
    PaidExternal,
}

/// Where money sits.
#[derive(SimpleObject)]
pub struct LedgerAccount {
    /// The kind of account.
    pub kind: LedgerAccountKind,
    /// The global id of its owner (a user, escrow, mandate or merchant); null for the
    /// PSP accounts and external payees.
    pub owner_id: Option<ID>,
    /// An external payee's reference; null otherwise.
    pub reference: Option<String>,
}

impl LedgerAccount {
    fn of(kind: &str, reference: &str) -> Self {
        let (kind, owner_id, reference) = match Account::from_key(kind, reference) {
            Some(Account::Funding(id)) => (
                LedgerAccountKind::Funding,
                Some(global_id(Kind::User, id)),
                None,
            ),
            Some(Account::Escrow(id)) => (
                LedgerAccountKind::Escrow,
                Some(global_id(Kind::Escrow, id)),
                None,
            ),
            Some(Account::Mandate(id)) => (
                LedgerAccountKind::Mandate,
                Some(global_id(Kind::Mandate, id)),
                None,
            ),
            Some(Account::Merchant(id)) => (
                LedgerAccountKind::Merchant,
                Some(global_id(Kind::Merchant, id)),
                None,
            ),
            Some(Account::PaidUser(id)) => (
                LedgerAccountKind::PaidUser,
                Some(global_id(Kind::User, id)),
                None,
            ),
            Some(Account::PaidExternal(r)) => (LedgerAccountKind::PaidExternal, None, Some(r)),
            Some(Account::PspReturned) => (LedgerAccountKind::PspReturned, None, None),
            Some(Account::PspClearing) | None => (LedgerAccountKind::PspClearing, None, None),
        };
        Self {
            kind,
            owner_id,
            reference,
        }
    }
}
