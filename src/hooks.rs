//! In-transaction domain events: what one business area announces and others react
//! to, in the same transaction, without the announcer knowing who listens.
//!
//! Payments announce that a payment moved on ([`payment_moved`]); the escrow rules
//! (a settled release pays its milestone), the ledger (the clearing entry) and the
//! notifications (the payee's mail, into the outbox) react.
//! A reacting area registers a consumer next to its own code with
//! `inventory::submit!`; the announcing area never names it, so the dependency runs
//! one way (escrow → payments, ledger ← payments) and a new consumer needs no edit
//! in payments. Consumers run in name order, so the order (and the order of the locks
//! they take) is the same in every process.

use futures_util::future::BoxFuture;

use crate::{
    db::TenantTxn,
    entity::payment::{self, PaymentStatus},
    error::Result,
};

/// Reacts to a payment that moved to a new state (`payment.status`: SENT, SETTLED or
/// FAILED), inside the transaction that moved it. An error rolls the move back. The
/// third argument is the state the payment left when it was not a forward move: a
/// payout the PSP returned after it had settled left `SETTLED` (`None` otherwise).
pub struct PaymentMoved {
    /// Orders the consumers; names one in logs.
    pub name: &'static str,
    pub run: for<'a> fn(
        &'a TenantTxn,
        &'a payment::Model,
        Option<PaymentStatus>,
    ) -> BoxFuture<'a, Result<()>>,
}

inventory::collect!(PaymentMoved);

/// A [`PaymentDisputed`] consumer: the payment as it is now, what the PSP said, and
/// its reason.
pub type DisputeConsumer = for<'a> fn(
    &'a TenantTxn,
    &'a payment::Model,
    crate::payments::Dispute,
    Option<&'a str>,
) -> BoxFuture<'a, Result<()>>;

/// Reacts to what the PSP said of a dispute on a payment (opened, won, lost), inside
/// the transaction that recorded it, with the PSP's reason. A lost dispute has also
/// moved the payment (FAILED), which [`PaymentMoved`] consumers saw first.
pub struct PaymentDisputed {
    /// Orders the consumers; names one in logs.
    pub name: &'static str,
    pub run: DisputeConsumer,
}

inventory::collect!(PaymentDisputed);

/// Runs every registered consumer of a payment's dispute, in name order.
pub async fn payment_disputed(
    txn: &TenantTxn,
    payment: &payment::Model,
    what: crate::payments::Dispute,
    reason: Option<&str>,
) -> Result<()> {
    let mut all: Vec<&PaymentDisputed> = inventory::iter::<PaymentDisputed>.into_iter().collect();
    all.sort_by_key(|c| c.name);
    for consumer in all {
        (consumer.run)(txn, payment, what, reason).await?;
    }
    Ok(())
}

/// Runs every registered consumer of a payment's move, in name order.
pub async fn payment_moved(
    txn: &TenantTxn,
    payment: &payment::Model,
    from: Option<PaymentStatus>,
) -> Result<()> {
    for consumer in consumers() {
        (consumer.run)(txn, payment, from).await?;
    }
    Ok(())
}

/// The registered consumers, in the order they run.
fn consumers() -> Vec<&'static PaymentMoved> {
    let mut all: Vec<&PaymentMoved> = inventory::iter::<PaymentMoved>.into_iter().collect();
    all.sort_by_key(|c| c.name);
    all
}

/// The registered consumers' names, in the order they run.
pub fn payment_moved_consumers() -> Vec<&'static str> {
    consumers().into_iter().map(|c| c.name).collect()
}

#[cfg(test)]
mod tests {
    /// The consumers register themselves: a payment's move reaches the escrow rules,
    /// the ledger and the notifications without payments naming any of them.
    #[test]
    fn escrow_and_ledger_consume_payment_moves() {
        assert_eq!(
            super::payment_moved_consumers(),
            ["escrow", "ledger", "notify"]
        );
    }

    /// The money modules depend one way: payments' rules name no business area that
    /// reacts to them, and the ledger names none of the areas that post to it.
    #[test]
    fn money_modules_do_not_call_each_other() {
        let payments = [
            ("payments/mod.rs", include_str!("payments/mod.rs")),
            ("payments/webhook.rs", include_str!("payments/webhook.rs")),
            ("payments/psp.rs", include_str!("payments/psp.rs")),
            ("payments/http_psp.rs", include_str!("payments/http_psp.rs")),
        ];
        for (file, source) in payments {
            for area in [
                "crate::escrow",
                "crate::spend",
                "escrow::rules",
                "spend::rules",
            ] {
                assert!(!source.contains(area), "{file} names {area}");
            }
        }
        let ledger = [
            ("ledger/mod.rs", include_str!("ledger/mod.rs")),
            ("ledger/verify.rs", include_str!("ledger/verify.rs")),
        ];
        for (file, source) in ledger {
            for area in [
                "crate::payments",
                "crate::escrow",
                "crate::spend",
                "payments::",
            ] {
                assert!(!source.contains(area), "{file} names {area}");
            }
        }
    }
}
