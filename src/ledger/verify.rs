//! `sequestra ledger verify`: proves, for one tenant, that no money was created or
//! lost — every entry is a well-formed movement of what its subject (deposit,
//! purchase, payment) says, and every business counter equals the accounts that
//! mirror it. The first discrepancy is named; the checks read in one transaction, so
//! they see one consistent state.

use std::collections::{HashMap, HashSet};

use migration::statement::statement;
use sea_orm::ConnectionTrait;
use uuid::Uuid;

use super::{Account, EntryKind};
use crate::{
    db::{Scoped, TenantDb},
    entity::{
        escrow, mandate,
        mandate::MandateStatus,
        payment::{self, PaymentStatus},
        purchase,
    },
    error::{Error, Result},
    ids::{self, Kind},
};

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Report {
    pub entries: u64,
    pub accounts: u64,
    /// The first discrepancy, in words; `None` when the books hold.
    pub discrepancy: Option<String>,
}

fn money(minor: i64, currency: &str) -> String {
    match crate::money::Currency::parse(currency) {
        Ok(c) => crate::money::Money::from_minor(minor, c).to_string(),
        Err(_) => format!("{minor} minor units of {currency}"),
    }
}

type Balances = HashMap<(String, String, String), (i64, i64)>;

/// Every account's (inflow, outflow) by (kind, reference, currency): what the entries
/// moved into it and out of it.
async fn balances<C: ConnectionTrait>(txn: &Scoped<C>, tenant: Uuid) -> Result<Balances> {
    let conn = txn.unscoped();
    let rows = conn
        .query_all(statement(
            conn.get_database_backend(),
            "SELECT account_kind, account_ref, currency, \
             CAST(SUM(inflow) AS BIGINT) AS inflow, CAST(SUM(outflow) AS BIGINT) AS outflow \
             FROM (SELECT to_kind AS account_kind, to_ref AS account_ref, currency, \
                     amount_minor AS inflow, 0 AS outflow \
                   FROM ledger_entries WHERE tenant_id = $1 \
                   UNION ALL \
                   SELECT from_kind, from_ref, currency, 0, amount_minor \
                   FROM ledger_entries WHERE tenant_id = $2) legs \
             GROUP BY account_kind, account_ref, currency",
            vec![tenant.into(), tenant.into()],
        ))
        .await?;
    let mut out = Balances::new();
    for row in rows {
        out.insert(
            (
                row.try_get("", "account_kind")?,
                row.try_get("", "account_ref")?,
                row.try_get("", "currency")?,
            ),
            (row.try_get("", "inflow")?, row.try_get("", "outflow")?),
        );
    }
    Ok(out)
}

/// The first entry that is not a movement (an amount that is not positive, or from an
/// account to itself: the database refuses both, but not to its owner), or that moves
/// another amount or currency than the deposit, purchase or payment it is recorded
/// against.
async fn malformed<C: ConnectionTrait>(txn: &Scoped<C>, tenant: Uuid) -> Result<Option<String>> {
    let conn = txn.unscoped();
    let backend = conn.get_database_backend();
    let row = conn
        .query_one(statement(
            backend,
            "SELECT id, kind, currency, amount_minor FROM ledger_entries \
             WHERE tenant_id = $1 AND (amount_minor <= 0 \
               OR (from_kind = to_kind AND from_ref = to_ref)) \
             ORDER BY id LIMIT 1",
            vec![tenant.into()],
        ))
        .await?;
    if let Some(row) = row {
        let id: Uuid = row.try_get("", "id")?;
        let kind: String = row.try_get("", "kind")?;
        let currency: String = row.try_get("", "currency")?;
        let amount: i64 = row.try_get("", "amount_minor")?;
        return Ok(Some(format!(
            "ledger entry {} ({kind}) is not a movement: {} from an account to {}",
            ids::encode(Kind::LedgerEntry, id),
            money(amount, &currency),
            if amount <= 0 { "another" } else { "itself" }
        )));
    }
    let row = conn
        .query_one(statement(
            backend,
            "SELECT e.id AS id, e.kind AS kind, e.currency AS currency, \
               e.amount_minor AS amount_minor, s.kind AS subject_type, s.id AS subject_id, \
               s.currency AS subject_currency, s.amount_minor AS subject_amount \
             FROM ledger_entries e JOIN ( \
               SELECT 'deposit' AS kind, tenant_id, id, currency, amount_minor FROM deposits \
               UNION ALL \
               SELECT 'purchase', tenant_id, id, currency, amount_minor FROM purchases \
               UNION ALL \
               SELECT 'payment', tenant_id, id, currency, amount_minor FROM payments \
             ) s ON s.tenant_id = e.tenant_id AND s.id = e.subject_id AND s.kind = e.subject_type \
             WHERE e.tenant_id = $1 \
               AND (e.amount_minor <> s.amount_minor OR e.currency <> s.currency) \
             ORDER BY e.id LIMIT 1",
            vec![tenant.into()],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let id: Uuid = row.try_get("", "id")?;
    let kind: String = row.try_get("", "kind")?;
    let subject_type: String = row.try_get("", "subject_type")?;
    let subject_id: Uuid = row.try_get("", "subject_id")?;
    let subject_kind = match subject_type.as_str() {
        "deposit" => Kind::Deposit,
        "purchase" => Kind::Purchase,
        _ => Kind::Payment,
    };
    Ok(Some(format!(
        "ledger entry {} ({kind}) moves {}, its {subject_type} {} is of {}",
        ids::encode(Kind::LedgerEntry, id),
        money(
            row.try_get("", "amount_minor")?,
            &row.try_get::<String>("", "currency")?
        ),
        ids::encode(subject_kind, subject_id),
        money(
            row.try_get("", "subject_amount")?,
            &row.try_get::<String>("", "subject_currency")?
        ),
    )))
}

async fn count<C: ConnectionTrait>(txn: &Scoped<C>, table: &str, tenant: Uuid) -> Result<u64> {
    let conn = txn.unscoped();
    let row = conn
        .query_one(statement(
            conn.get_database_backend(),
            &format!("SELECT COUNT(*) AS n FROM {table} WHERE tenant_id = $1"),
            vec![tenant.into()],
        ))
        .await?
        .ok_or_else(|| Error::internal(anyhow::anyhow!("no count")))?;
    Ok(u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or_default())
}

/// The kinds of entry recorded against each subject.
async fn entries_by_subject<C: ConnectionTrait>(
    txn: &Scoped<C>,
    tenant: Uuid,
) -> Result<HashMap<Uuid, Vec<(EntryKind, i64)>>> {
    let conn = txn.unscoped();
    let rows = conn
        .query_all(statement(
            conn.get_database_backend(),
            "SELECT subject_id, kind, amount_minor AS amount FROM ledger_entries \
             WHERE tenant_id = $1",
            vec![tenant.into()],
        ))
        .await?;
    let mut out: HashMap<Uuid, Vec<(EntryKind, i64)>> = HashMap::new();
    for row in rows {
        let kind: String = row.try_get("", "kind")?;
        let Some(kind) = EntryKind::parse(&kind) else {
            continue;
        };
        out.entry(row.try_get("", "subject_id")?)
            .or_default()
            .push((kind, row.try_get("", "amount")?));
    }
    Ok(out)
}

/// Checks `db`'s tenant's books (see the module's documentation).
pub async fn verify(db: &TenantDb) -> Result<Report> {
    let txn = db.begin_snapshot().await?;
    let tenant = db.tenant().as_uuid();
    let mut report = Report {
        entries: count(&txn, "ledger_entries", tenant).await?,
        ..Report::default()
    };
    let found = check(&txn, tenant, &mut report).await?;
    txn.rollback().await?;
    report.discrepancy = found;
    Ok(report)
}

async fn check<C: ConnectionTrait>(
    txn: &Scoped<C>,
    tenant: Uuid,
    report: &mut Report,
) -> Result<Option<String>> {
    if let Some(found) = malformed(txn, tenant).await? {
        return Ok(Some(found));
    }
    let balances = balances(txn, tenant).await?;
    report.accounts = balances.len() as u64;
    let flows = |account: &Account, currency: &str| -> (i64, i64) {
        let (kind, reference) = account.key();
        balances
            .get(&(kind.to_owned(), reference, currency.to_owned()))
            .copied()
            .unwrap_or_default()
    };
    let mut known: HashSet<(String, String, String)> = HashSet::new();
    let mut mark = |account: &Account, currency: &str| {
        let (kind, reference) = account.key();
        known.insert((kind.to_owned(), reference, currency.to_owned()));
    };

    // Escrows: what went in is what was funded, what went out is what was released
    // or refunded.
    for esc in txn.list::<escrow::Entity>(|q| q).await? {
        let account = Account::Escrow(esc.id);
        mark(&account, &esc.currency);
        let (inflow, outflow) = flows(&account, &esc.currency);
        let name = ids::encode(Kind::Escrow, esc.id);
        if inflow != esc.funded_minor {
            return Ok(Some(format!(
                "escrow {name} was funded {} by its counters, {} by its ledger account",
                money(esc.funded_minor, &esc.currency),
                money(inflow, &esc.currency)
            )));
        }
        let paid = esc.released_minor + esc.refunded_minor;
        if outflow != paid {
            return Ok(Some(format!(
                "escrow {name} paid out {} (released {}, refunded {}) by its counters, {} by its ledger account",
                money(paid, &esc.currency),
                money(esc.released_minor, &esc.currency),
                money(esc.refunded_minor, &esc.currency),
                money(outflow, &esc.currency)
            )));
        }
    }

    // Mandates: the budget went in; what is out is what was spent, or everything once
    // the mandate ended.
    for m in txn.list::<mandate::Entity>(|q| q).await? {
        let account = Account::Mandate(m.id);
        mark(&account, &m.currency);
        let (inflow, outflow) = flows(&account, &m.currency);
        let name = ids::encode(Kind::Mandate, m.id);
        if inflow != m.total_minor {
            return Ok(Some(format!(
                "mandate {name} has a budget of {} by its counters, {} by its ledger account",
                money(m.total_minor, &m.currency),
                money(inflow, &m.currency)
            )));
        }
        let out = if m.status == MandateStatus::Active {
            m.spent_minor
        } else {
            m.total_minor
        };
        if outflow != out {
            return Ok(Some(format!(
                "mandate {name} ({}) spent {} of {} by its counters, its ledger account paid out {}",
                m.status.as_str(),
                money(m.spent_minor, &m.currency),
                money(m.total_minor, &m.currency),
                money(outflow, &m.currency)
            )));
        }
    }

    // Merchants: what they took is the sum of their purchases.
    let mut takings: HashMap<(Uuid, String), i64> = HashMap::new();
    for p in txn.list::<purchase::Entity>(|q| q).await? {
        *takings.entry((p.merchant_id, p.currency)).or_default() += p.amount_minor;
    }
    let mut merchants: HashSet<(Uuid, String)> = takings.keys().cloned().collect();
    for (kind, reference, currency) in balances.keys() {
        if kind == "MERCHANT" {
            merchants.insert((reference.parse().unwrap_or_default(), currency.clone()));
        }
    }
    for (merchant, currency) in &merchants {
        let bought = takings
            .get(&(*merchant, currency.clone()))
            .copied()
            .unwrap_or_default();
        let account = Account::Merchant(*merchant);
        mark(&account, currency);
        let (inflow, outflow) = flows(&account, currency);
        if inflow - outflow != bought {
            return Ok(Some(format!(
                "merchant {} took {} in purchases, its ledger account holds {}",
                ids::encode(Kind::Merchant, *merchant),
                money(bought, currency),
                money(inflow - outflow, currency)
            )));
        }
    }

    // Payments: each has the entry that funded it; each settled one its settlement;
    // the PSP accounts hold exactly what is in flight and what waits for a retry.
    let subjects = entries_by_subject(txn, tenant).await?;
    let payments = txn.list::<payment::Entity>(|q| q).await?;
    let retried: HashSet<Uuid> = payments.iter().filter_map(|p| p.retry_of).collect();
    let mut in_flight: HashMap<String, i64> = HashMap::new();
    let mut waiting: HashMap<String, i64> = HashMap::new();
    for p in &payments {
        let name = ids::encode(Kind::Payment, p.id);
        let has = |kind: EntryKind| {
            subjects.get(&p.id).is_some_and(|e| {
                e.iter()
                    .any(|(k, amount)| *k == kind && *amount == p.amount_minor)
            })
        };
        let funded_by = if p.retry_of.is_some() {
            EntryKind::PaymentRetried
        } else {
            EntryKind::PaymentCreated
        };
        if !has(funded_by) {
            return Ok(Some(format!(
                "payment {name} of {} has no {} ledger entry for its amount",
                money(p.amount_minor, &p.currency),
                funded_by.as_str()
            )));
        }
        match p.status {
            PaymentStatus::Pending | PaymentStatus::Sent => {
                *in_flight.entry(p.currency.clone()).or_default() += p.amount_minor;
            }
            PaymentStatus::Settled => {
                if !has(EntryKind::PaymentSettled) {
                    return Ok(Some(format!(
                        "payment {name} is SETTLED but has no clearing entry (PAYMENT_SETTLED) for {}",
                        money(p.amount_minor, &p.currency)
                    )));
                }
            }
            PaymentStatus::Failed => {
                // Failed on its way, or taken back after it settled.
                let returned = has(EntryKind::PaymentSettled) && has(EntryKind::PaymentReturned);
                if !has(EntryKind::PaymentFailed) && !returned {
                    return Ok(Some(format!(
                        "payment {name} is FAILED but has no PAYMENT_FAILED (or PAYMENT_SETTLED and PAYMENT_RETURNED) ledger entry"
                    )));
                }
                if !retried.contains(&p.id) {
                    *waiting.entry(p.currency.clone()).or_default() += p.amount_minor;
                }
            }
        }
    }
    let currencies: HashSet<String> = balances
        .keys()
        .map(|(_, _, c)| c.clone())
        .chain(in_flight.keys().cloned())
        .chain(waiting.keys().cloned())
        .collect();
    for currency in currencies {
        for (account, expected, what) in [
            (
                Account::PspClearing,
                &in_flight,
                "payments in flight (PENDING, SENT)",
            ),
            (
                Account::PspReturned,
                &waiting,
                "failed payments awaiting a retry",
            ),
        ] {
            mark(&account, &currency);
            let (inflow, outflow) = flows(&account, &currency);
            let want = expected.get(&currency).copied().unwrap_or_default();
            if inflow - outflow != want {
                return Ok(Some(format!(
                    "{} holds {}, the {what} add up to {}",
                    account.key().0,
                    money(inflow - outflow, &currency),
                    money(want, &currency)
                )));
            }
        }
    }

    // Every account is one of the above or a party's (funding, paid out).
    for (kind, reference, currency) in balances.keys() {
        let key = (kind.clone(), reference.clone(), currency.clone());
        let party = matches!(
            kind.as_str(),
            "FUNDING" | "PAID_USER" | "PAID_EXTERNAL" | "MERCHANT"
        );
        if !party && !known.contains(&key) {
            return Ok(Some(format!(
                "ledger account {kind}/{reference} ({currency}) belongs to nothing the tenant has"
            )));
        }
    }
    Ok(None)
}
