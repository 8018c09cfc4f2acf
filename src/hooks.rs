//! In-transaction domain events: what one business area announces and others react
//! to, in the same transaction, without the announcer knowing who listens.
//!
//! Payments announce that a payment moved on ([`payment_moved`]); the escrow rules
//! (a settled release pays its milestone) and the ledger (the clearing entry) react.
//! A reacting area registers a consumer next to its own code with
//! `inventory::submit!`; the announcing area never names it, so the dependency runs
//! one way (escrow → payments, ledger ← payments) and a new consumer needs no edit
//! in payments. Consumers run in name order, so the order (and the order of the locks
//! they take) is the same in every process.

use futures_util::future::BoxFuture;

use crate::{db::TenantTxn, entity::payment, error::Result};

/// Reacts to a payment that moved to a new state (`payment.status`: SENT, SETTLED or
/// FAILED), inside the transaction that moved it. An error rolls the move back.
pub struct PaymentMoved {
    /// Orders the consumers; names one in logs.
    pub name: &'static str,
    pub run: for<'a> fn(&'a TenantTxn, &'a payment::Model) -> BoxFuture<'a, Result<()>>,
}

inventory::collect!(PaymentMoved);

/// Runs every registered consumer of a payment's move, in name order.
pub async fn payment_moved(txn: &TenantTxn, payment: &payment::Model) -> Result<()> {
    let mut consumers: Vec<&PaymentMoved> = inventory::iter::<PaymentMoved>.into_iter().collect();
    consumers.sort_by_key(|c| c.name);
    for consumer in consumers {
        (consumer.run)(txn, payment).await?;
    }
    Ok(())
}

/// The registered consumers' names, in the order they run.
pub fn payment_moved_consumers() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = inventory::iter::<PaymentMoved>
        .into_iter()
        .map(|c| c.name)
        .collect();
    names.sort_unstable();
    names
}
