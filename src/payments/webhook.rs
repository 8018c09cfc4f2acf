//! PSP webhooks: the signature (`Sequestra-Signature: t=<unix>,v1=<hex>` where v1 is
//! HMAC-SHA256 over `"<t>.<raw body>"`), the event, and its effect on a payment.
//!
//! Payments only move forward (PENDING → SENT → SETTLED | FAILED): a late `SENT`
//! after `SETTLED` is recorded and changes nothing. The one way back is the PSP
//! taking the money back (`payout.returned`, `payment.refunded`): a SETTLED payment
//! becomes FAILED (see [`payments::take_back`]). Event ids are deduplicated by
//! the primary key of `webhook_events`, inserted in the same transaction as the
//! effect, so concurrent duplicates have one effect.

use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, OnConflict},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;

use crate::{
    db::{self, TenantTxn},
    entity::{
        payment::{self, PaymentStatus},
        webhook_event, webhook_rejection,
    },
    error::{Error, Result},
    events::Bus,
    ids::TenantId,
    payments::{self, Move, Via},
};

/// The largest webhook body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How far a signature's timestamp may be from now.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused (recorded, never sent).
#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Malformed,
    Stale,
    Mismatch,
}

impl SignatureError {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Missing => "MISSING",
            Self::Malformed => "MALFORMED",
            Self::Stale => "STALE",
            Self::Mismatch => "MISMATCH",
        }
    }
}

/// Records a refused delivery (the audit trail of forgeries; no event id kept).
pub async fn record_rejection(
    db: &DatabaseConnection,
    ip: Option<String>,
    why: &SignatureError,
) -> Result<()> {
    webhook_rejection::Entity::insert(webhook_rejection::ActiveModel {
        id: Set(crate::ids::new_id()),
        ip: Set(ip),
        reason: Set(why.as_str().to_owned()),
        received_at: Set(Utc::now()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Checks `header` against `body` with any of `secrets` (rotation) and any of the
/// header's `v1=` values, in constant time per comparison.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                timestamp = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?)
            }
            Some(("v1", v)) => {
                signatures.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?)
            }
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - t).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
            .map_err(|_| SignatureError::Mismatch)?;
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        for candidate in &signatures {
            if mac.clone().verify_slice(candidate).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::Mismatch)
}

/// `v1` for `body` at `t` under `secret` (the simulated PSP and the tests sign
/// with it).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub reference: String,
    #[serde(rename = "failureReason")]
    pub failure_reason: Option<String>,
    /// `dispute.closed`: `won` (the payout stands) or `lost` (the PSP took it back).
    #[serde(default)]
    pub outcome: Option<String>,
}

impl Event {
    /// A well-formed event, or why not.
    pub fn parse(body: &[u8]) -> std::result::Result<Self, &'static str> {
        let event: Event =
            serde_json::from_slice(body).map_err(|_| "the body is not a webhook event")?;
        // No text of an event may carry NUL (PostgreSQL cannot store it): the same
        // rule as every GraphQL text input.
        let texts = [&event.id, &event.kind, &event.data.reference];
        if texts.iter().any(|t| t.contains('\0'))
            || event
                .data
                .failure_reason
                .as_ref()
                .is_some_and(|r| r.contains('\0'))
        {
            return Err("the event's text must not contain NUL characters");
        }
        if event.id.is_empty() || event.id.len() > 255 {
            return Err("`id` must be 1 to 255 characters");
        }
        if event.data.reference.is_empty() || event.data.reference.len() > 128 {
            return Err("`data.reference` must be 1 to 128 characters");
        }
        if event.kind == "dispute.closed"
            && !matches!(event.data.outcome.as_deref(), Some("won" | "lost"))
        {
            return Err("`data.outcome` must be won or lost for dispute.closed");
        }
        if effect(&event.kind, event.data.outcome.as_deref()).is_none() {
            return Err(
                "`type` must be payout.sent, payout.settled, payout.failed, payout.returned, payment.refunded, dispute.opened or dispute.closed",
            );
        }
        if Utc.timestamp_opt(event.created, 0).single().is_none() {
            return Err("`created` must be a Unix time");
        }
        Ok(event)
    }
}

/// What an event does to its payment.
#[derive(Debug, Clone, Copy)]
enum Effect {
    /// Moves it forward to this status.
    Forward(PaymentStatus),
    /// The PSP took the money back (the payee's bank returned it, or the PSP refunded
    /// it): a failure, even after it settled; the reason starts with this word.
    TakeBack(&'static str),
    /// The PSP opened or closed a dispute on the payment.
    Dispute(payments::Dispute),
}

fn effect(kind: &str, outcome: Option<&str>) -> Option<Effect> {
    match kind {
        "dispute.opened" => Some(Effect::Dispute(payments::Dispute::Opened)),
        "dispute.closed" => match outcome {
            Some("won") => Some(Effect::Dispute(payments::Dispute::Won)),
            Some("lost") => Some(Effect::Dispute(payments::Dispute::Lost)),
            _ => None,
        },
        "payout.sent" => Some(Effect::Forward(PaymentStatus::Sent)),
        "payout.settled" => Some(Effect::Forward(PaymentStatus::Settled)),
        "payout.failed" => Some(Effect::Forward(PaymentStatus::Failed)),
        "payout.returned" => Some(Effect::TakeBack("returned")),
        "payment.refunded" => Some(Effect::TakeBack("refunded")),
        _ => None,
    }
}

/// Applies what an event says to payment `id`; `None` when it changed nothing.
async fn apply(
    txn: &TenantTxn,
    id: uuid::Uuid,
    effect: Effect,
    failure_reason: Option<&str>,
    event_id: &str,
) -> Result<Option<payment::Model>> {
    match effect {
        Effect::Forward(to) => {
            payments::transition(
                txn,
                id,
                Move {
                    to,
                    reference: None,
                    failure_reason,
                    via: Via::Webhook,
                    detail: Some(event_id.to_owned()),
                },
            )
            .await
        }
        Effect::Dispute(what) => payments::dispute(txn, id, what, failure_reason, event_id).await,
        Effect::TakeBack(word) => {
            let why = format!(
                "{word}: {}",
                failure_reason.unwrap_or("taken back by the PSP")
            );
            payments::take_back(
                txn,
                id,
                Move {
                    to: PaymentStatus::Failed,
                    reference: None,
                    failure_reason: Some(&why),
                    via: Via::Webhook,
                    detail: Some(event_id.to_owned()),
                },
            )
            .await
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// The payment moved.
    Applied,
    /// Seen before: nothing done.
    Duplicate,
    /// It would move the payment backwards (or sideways): recorded, nothing done.
    Stale,
    /// No payment has this reference: recorded for an operator, nothing done.
    UnknownReference,
}

impl Received {
    pub fn outcome(self) -> &'static str {
        match self {
            Received::Applied => "APPLIED",
            Received::Duplicate => "RECEIVED",
            Received::Stale => "STALE",
            Received::UnknownReference => "UNKNOWN_REFERENCE",
        }
    }
}

/// Records `event` once and applies it to its payment, in one transaction.
pub async fn receive(
    db: &DatabaseConnection,
    bus: Option<&Bus>,
    psp: &str,
    event: &Event,
) -> Result<Received> {
    let effect = effect(&event.kind, event.data.outcome.as_deref())
        .ok_or_else(|| Error::bad_input("unknown event type"))?;
    let created: DateTime<Utc> = Utc
        .timestamp_opt(event.created, 0)
        .single()
        .ok_or_else(|| Error::bad_input("bad created time"))?;
    let txn = db::begin_write(db).await?;
    lock_reference(&txn, psp, &event.data.reference).await?;
    let inserted = webhook_event::Entity::insert(webhook_event::ActiveModel {
        id: Set(event.id.clone()),
        psp: Set(psp.to_owned()),
        kind: Set(event.kind.clone()),
        reference: Set(event.data.reference.clone()),
        created_at: Set(created),
        received_at: Set(Utc::now()),
        outcome: Set("RECEIVED".to_owned()),
        payment_id: Set(None),
        tenant_id: Set(None),
        failure_reason: Set(event
            .data
            .failure_reason
            .as_ref()
            .map(|r| r.chars().take(payments::MAX_REASON_CHARS).collect())),
    })
    .on_conflict(
        OnConflict::column(webhook_event::Column::Id)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(&txn)
    .await?;
    if inserted == 0 {
        return Ok(Received::Duplicate);
    }
    // The PSP's reference names the payment, whichever tenant it belongs to: the one
    // read row-level security lets through before the tenant is known.
    db::wall::allow(&txn, db::Lookup::PspReference(&event.data.reference)).await?;
    let found = payment::Entity::find()
        .filter(payment::Column::Psp.eq(psp))
        .filter(payment::Column::PspReference.eq(event.data.reference.as_str()))
        .one(&txn)
        .await?;
    let Some(found) = found else {
        mark(&txn, &event.id, Received::UnknownReference, None).await?;
        txn.commit().await?;
        return Ok(Received::UnknownReference);
    };
    // From here on the payment's own tenant scopes every statement: this route acts
    // for the PSP, and the reference has named the tenant.
    let scoped = TenantTxn::bind(txn, TenantId::from_uuid(found.tenant_id))
        .await?
        .with_bus(bus.cloned());
    let moved = apply(
        &scoped,
        found.id,
        effect,
        event.data.failure_reason.as_deref(),
        &event.id,
    )
    .await?;
    // Nothing moved: the payment is already there or beyond (a late or repeated
    // report), recorded and otherwise ignored.
    let outcome = if moved.is_some() {
        Received::Applied
    } else {
        Received::Stale
    };
    mark(scoped.unscoped(), &event.id, outcome, Some(&found)).await?;
    scoped.commit().await?;
    Ok(outcome)
}

/// Serializes, per PSP reference, the two transactions that meet there: a webhook
/// looking its payment up, and the dispatch storing the reference (SENT) and then
/// adopting early events. Without it, on PostgreSQL, each could miss the other's
/// uncommitted row and an early event would wait for the jobs' sweep. A transaction-
/// scoped advisory lock; SQLite needs none (its write transactions never overlap).
pub async fn lock_reference<C: ConnectionTrait>(
    conn: &C,
    psp: &str,
    reference: &str,
) -> Result<()> {
    if conn.get_database_backend() == sea_orm::DbBackend::Postgres {
        conn.execute(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            [format!("{psp}:{reference}").into()],
        ))
        .await?;
    }
    Ok(())
}

/// Applies the events that arrived before `payment` had its reference (a PSP can
/// post its webhook before our own commit of `SENT` is visible): each such event,
/// recorded `UNKNOWN_REFERENCE`, is claimed by a conditional UPDATE and applied as
/// it came, in `txn`. Called when the reference is stored, and by the jobs for
/// events that raced that moment.
pub async fn adopt_orphans(txn: &TenantTxn, payment: &payment::Model) -> Result<usize> {
    let Some(reference) = payment.psp_reference.as_deref() else {
        return Ok(0);
    };
    let orphans = webhook_event::Entity::find()
        .filter(webhook_event::Column::Psp.eq(payment.psp.as_str()))
        .filter(webhook_event::Column::Reference.eq(reference))
        .filter(webhook_event::Column::Outcome.eq(Received::UnknownReference.outcome()))
        .order_by_asc(webhook_event::Column::CreatedAt)
        .all(txn.unscoped())
        .await?;
    let mut applied = 0;
    for orphan in orphans {
        let claimed = webhook_event::Entity::update_many()
            .col_expr(webhook_event::Column::Outcome, Expr::value("RECEIVED"))
            .filter(webhook_event::Column::Id.eq(orphan.id.as_str()))
            .filter(webhook_event::Column::Outcome.eq(Received::UnknownReference.outcome()))
            .exec(txn.unscoped())
            .await?
            .rows_affected;
        // (A `dispute.closed` keeps no outcome here: one that came before its payment
        // had a reference stays RECEIVED, for an operator.)
        let Some(effect) = effect(&orphan.kind, None).filter(|_| claimed == 1) else {
            continue;
        };
        let moved = apply(
            txn,
            payment.id,
            effect,
            orphan.failure_reason.as_deref(),
            &orphan.id,
        )
        .await?;
        let outcome = if moved.is_some() {
            applied += 1;
            Received::Applied
        } else {
            Received::Stale
        };
        mark(txn.unscoped(), &orphan.id, outcome, Some(payment)).await?;
    }
    Ok(applied)
}

/// Unknown-reference events of the last day whose payment now exists: the jobs
/// adopt them (see [`adopt_orphans`]).
pub async fn orphaned_payments(db: &DatabaseConnection) -> Result<Vec<payment::Model>> {
    let since = Utc::now() - chrono::Duration::days(1);
    let orphans = webhook_event::Entity::find()
        .filter(webhook_event::Column::Outcome.eq(Received::UnknownReference.outcome()))
        .filter(webhook_event::Column::ReceivedAt.gte(since))
        .limit(100)
        .all(db)
        .await?;
    let mut found = Vec::new();
    // Each lookup goes through the one read row-level security allows by reference.
    let txn = sea_orm::TransactionTrait::begin(db).await?;
    for orphan in orphans {
        db::wall::allow(&txn, db::Lookup::PspReference(&orphan.reference)).await?;
        if let Some(p) = payment::Entity::find()
            .filter(payment::Column::Psp.eq(orphan.psp.as_str()))
            .filter(payment::Column::PspReference.eq(orphan.reference.as_str()))
            .one(&txn)
            .await?
            && !found.iter().any(|f: &payment::Model| f.id == p.id)
        {
            found.push(p);
        }
    }
    txn.commit().await?;
    Ok(found)
}

async fn mark<C: sea_orm::ConnectionTrait>(
    conn: &C,
    id: &str,
    received: Received,
    payment: Option<&payment::Model>,
) -> Result<()> {
    webhook_event::Entity::update_many()
        .col_expr(
            webhook_event::Column::Outcome,
            Expr::value(received.outcome()),
        )
        .col_expr(
            webhook_event::Column::PaymentId,
            Expr::value(payment.map(|p| p.id)),
        )
        .col_expr(
            webhook_event::Column::TenantId,
            Expr::value(payment.map(|p| p.tenant_id)),
        )
        .filter(webhook_event::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter()
            .map(|s| SecretString::from((*s).to_owned()))
            .collect()
    }

    #[test]
    fn signatures_verify_with_rotation_and_several_values() {
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_800_000_000;
        let good = sign("new-secret", now, body);
        let header = format!("t={now},v1={good}");
        let both = secrets(&["old-secret", "new-secret"]);
        assert_eq!(verify(Some(&header), body, &both, now), Ok(()));
        assert_eq!(
            verify(Some(&header), body, &secrets(&["old-secret"]), now),
            Err(SignatureError::Mismatch)
        );
        let several = format!("t={now},v1={},v1={good}", "00".repeat(32));
        assert_eq!(verify(Some(&several), body, &both, now), Ok(()));
        assert_eq!(
            verify(Some(&header), b"{}", &both, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), body, &both, now + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(verify(None, body, &both, now), Err(SignatureError::Missing));
        assert_eq!(
            verify(Some("v1=zz"), body, &both, now),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(Some(&format!("t={now}")), body, &both, now),
            Err(SignatureError::Malformed)
        );
    }
}
