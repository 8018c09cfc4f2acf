//! Background work (escrow auto-release and deadlines, mandate expiry, stuck
//! payments), safe with many replicas on one database: each job runs under a
//! lease (a row in `job_leases` that one process holds until it expires), and every
//! change it makes is a conditional UPDATE, so even two holders could not do a
//! thing twice.

pub mod lease;
pub mod retention;

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, Iterable, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};

use crate::{
    audit::{Actor, Origin},
    db::{TenantDb, TenantTxn},
    entity::{
        escrow::{self, EscrowStatus},
        mandate::{self, MandateStatus},
        payment::{self, PaymentStatus},
        tenant,
    },
    error::Result,
    escrow::rules::{self, Act},
    graphql::context::Services,
    ids::TenantId,
    payments::{self, Move, PspStatus, Via},
};

const JOBS_LEASE: &str = "jobs";
/// Held for a whole books-check interval by whoever checked last, so replicas and
/// restarts check the books once per interval between them.
const BOOKS_LEASE: &str = "books";
/// Held for a whole retention interval, as the books lease.
const RETENTION_LEASE: &str = "retention";
/// Rows handled per kind per tick; the next tick takes the rest.
const BATCH: u64 = 100;

/// When the jobs last completed a tick (Unix milliseconds; 0 = never), for `/ready`.
#[derive(Clone, Default)]
pub struct Heartbeat(Arc<AtomicI64>);

impl Heartbeat {
    fn beat(&self) {
        self.0
            .store(Utc::now().timestamp_millis(), Ordering::SeqCst);
    }

    /// Milliseconds since the last completed tick, if any.
    pub fn age_ms(&self) -> Option<i64> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            at => Some(Utc::now().timestamp_millis() - at),
        }
    }
}

/// What one tick did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    pub leased: bool,
    pub released: usize,
    pub made_refundable: usize,
    pub payments_retried: usize,
    pub mandates_expired: usize,
    /// SENT payments checked with the PSP (no webhook in time).
    pub payments_rechecked: usize,
    /// FAILED payments the policy acted on (a retry, or an alert when tries ran out).
    pub failures_handled: usize,
}

/// Runs the jobs every `interval` until `stop` fires, checks the books every
/// `books_every` and purges expired operational rows every `retention.every` (when
/// set).
pub async fn run(
    services: Services,
    interval: Duration,
    books_every: Option<Duration>,
    retention: crate::config::RetentionConfig,
    heartbeat: Heartbeat,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let holder = uuid::Uuid::now_v7().simple().to_string();
    let ttl = interval * 3 + Duration::from_secs(1);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut books_due = tokio::time::Instant::now();
    let mut purge_due = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if let Some(every) = books_every
            && tokio::time::Instant::now() >= books_due
        {
            books_due = tokio::time::Instant::now() + every;
            match lease::acquire(&services.db, BOOKS_LEASE, &holder, every).await {
                Ok(true) => {
                    let checked = check_books(&services).await;
                    ran("books", checked.is_ok());
                    if let Err(err) = checked {
                        tracing::error!(error = ?err, "checking the books failed");
                    }
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(error = ?err, "books lease not taken"),
            }
        }
        if let Some(every) = retention.every
            && tokio::time::Instant::now() >= purge_due
        {
            purge_due = tokio::time::Instant::now() + every;
            match lease::acquire(&services.db, RETENTION_LEASE, &holder, every).await {
                Ok(true) => match retention::purge(&services, &retention)
                    .await
                    .inspect(|_| ran("retention", true))
                    .inspect_err(|_| ran("retention", false))
                {
                    Ok(purged) => {
                        if purged != retention::Purged::default() {
                            tracing::info!(?purged, "expired operational rows purged");
                        }
                    }
                    Err(err) => tracing::error!(error = ?err, "purging expired rows failed"),
                },
                Ok(false) => {}
                Err(err) => tracing::warn!(error = ?err, "retention lease not taken"),
            }
        }
        match tick(&services, &holder, ttl).await {
            Ok(report) => {
                heartbeat.beat();
                if report.leased {
                    ran("tick", true);
                }
                if report.released
                    + report.made_refundable
                    + report.payments_retried
                    + report.mandates_expired
                    + report.payments_rechecked
                    + report.failures_handled
                    > 0
                {
                    tracing::info!(?report, "background jobs did work");
                }
            }
            Err(err) => {
                ran("tick", false);
                tracing::error!(error = ?err, "background jobs failed; retrying next tick")
            }
        }
    }
}

/// Counts a run of `job` in `jobs_runs_total{job, outcome}` (runs this process made
/// while it held the job's lease).
pub(crate) fn ran(job: &'static str, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!("jobs_runs_total", "job" => job, "outcome" => outcome).increment(1);
}

/// One pass: auto-release lapsed inspections, mark missed deadlines refundable,
/// resubmit stuck payments. Does nothing unless this holder has the lease.
pub async fn tick(services: &Services, holder: &str, ttl: Duration) -> Result<TickReport> {
    let db = &services.db;
    if !lease::acquire(db, JOBS_LEASE, holder, ttl).await? {
        return Ok(TickReport::default());
    }
    let mut report = TickReport {
        leased: true,
        ..TickReport::default()
    };
    let now = Utc::now();
    let origin = Origin::default();
    let act = Act {
        actor: Actor::System,
        origin: &origin,
        psp: services.psp.name(),
    };

    // Early webhook events first: a payment they settle needs no status check.
    for pay in payments::webhook::orphaned_payments(db).await? {
        let tenant = services.tenant_db(TenantId::from_uuid(pay.tenant_id));
        let adopted = in_tenant(&tenant, async |txn| {
            payments::webhook::adopt_orphans(txn, &pay).await
        })
        .await;
        if let Err(err) = adopted {
            tracing::warn!(payment = %pay.id, error = %err, "early webhook events not applied");
        }
    }
    // Jobs span tenants: each tenant's rows are found and changed inside its own
    // wall (row-level security admits no other way), one tenant after another.
    let mut by_state: std::collections::BTreeMap<String, u64> = PaymentStatus::iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for tenant in tenant::Entity::find().all(db).await? {
        let tenant = services.tenant_db(TenantId::from_uuid(tenant.id));
        sweep(services, &tenant, act, now, &mut report).await?;
        for (state, n) in payments_by_state(&tenant).await? {
            *by_state.entry(state).or_default() += n;
        }
    }
    // Reported by the process that ran the tick (the jobs lease holder).
    for (state, n) in by_state {
        metrics::gauge!("payments", "state" => state).set(n as f64);
    }
    Ok(report)
}

/// Checks every tenant's books: `ledger verify` and `audit verify`. A discrepancy or
/// a broken chain is logged as an error (and so reaches Sentry when configured) and
/// shows in the metrics `ledger_discrepancy` / `audit_chain_broken` (1 for the
/// tenant, 0 once it holds again) and `books_checks_total{outcome}`. Answers the
/// number of problems found.
pub async fn check_books(services: &Services) -> Result<usize> {
    let mut problems = 0;
    for t in tenant::Entity::find().all(&services.db).await? {
        let tenant = services.tenant_db(TenantId::from_uuid(t.id));
        let ledger = crate::ledger::verify(&tenant).await?;
        let chain = crate::audit::verify(&tenant).await?;
        metrics::gauge!("ledger_discrepancy", "tenant" => t.slug.clone()).set(
            if ledger.discrepancy.is_some() {
                1.0
            } else {
                0.0
            },
        );
        metrics::gauge!("audit_chain_broken", "tenant" => t.slug.clone())
            .set(if chain.broken.is_some() { 1.0 } else { 0.0 });
        if let Some(found) = &ledger.discrepancy {
            problems += 1;
            tracing::error!(tenant = %t.slug, discrepancy = %found, "the ledger does not hold");
        }
        if let Some(broken) = &chain.broken {
            problems += 1;
            tracing::error!(tenant = %t.slug, broken = %broken, "the audit chain is broken");
        }
    }
    let outcome = if problems == 0 { "ok" } else { "problem" };
    metrics::counter!("books_checks_total", "outcome" => outcome).increment(1);
    tracing::info!(problems, "books checked");
    Ok(problems)
}

/// One tenant's share of a tick.
async fn sweep(
    services: &Services,
    tenant: &TenantDb,
    act: Act<'_>,
    now: chrono::DateTime<Utc>,
    report: &mut TickReport,
) -> Result<()> {
    let lapsed = tenant
        .list::<escrow::Entity>(|q| {
            q.filter(escrow::Column::Status.is_in([
                EscrowStatus::Funded.as_str(),
                EscrowStatus::Releasable.as_str(),
            ]))
            .filter(escrow::Column::DeliveredAt.is_not_null())
            .filter(escrow::Column::InspectionEndsAt.lte(now))
            .limit(BATCH)
        })
        .await?;
    for esc in lapsed {
        let done = in_tenant(tenant, async |txn| {
            rules::auto_release(txn, act, esc.id).await
        })
        .await;
        match done {
            Ok(Some(effect)) => {
                report.released += 1;
                payments::dispatch(tenant, services.psp.as_ref(), &effect.payments).await;
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(escrow = %esc.id, error = ?err, "auto-release failed"),
        }
    }

    let overdue = tenant
        .list::<escrow::Entity>(|q| {
            q.filter(escrow::Column::Status.eq(EscrowStatus::Funded.as_str()))
                .filter(escrow::Column::DeliveredAt.is_null())
                .filter(escrow::Column::RefundableAt.is_null())
                .filter(escrow::Column::Deadline.lte(now))
                .limit(BATCH)
        })
        .await?;
    for esc in overdue {
        let done = in_tenant(tenant, async |txn| {
            rules::mark_refundable(txn, act, esc.id).await
        })
        .await;
        match done {
            Ok(true) => report.made_refundable += 1,
            Ok(false) => {}
            Err(err) => tracing::warn!(escrow = %esc.id, error = ?err, "deadline mark failed"),
        }
    }

    let expiring = tenant
        .list::<mandate::Entity>(|q| {
            q.filter(mandate::Column::Status.eq(MandateStatus::Active.as_str()))
                .filter(mandate::Column::ExpiresAt.lte(now))
                .limit(BATCH)
        })
        .await?;
    for m in expiring {
        let done = in_tenant(tenant, async |txn| {
            crate::spend::rules::expire(txn, act, m.id).await
        })
        .await;
        match done {
            Ok(true) => report.mandates_expired += 1,
            Ok(false) => {}
            Err(err) => tracing::warn!(mandate = %m.id, error = ?err, "mandate expiry failed"),
        }
    }

    // PENDING payments recorded before this are submitted again.
    let resubmit_before = chrono::Duration::from_std(services.payments.resubmit_after)
        .ok()
        .and_then(|wait| now.checked_sub_signed(wait))
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
    let stuck = tenant
        .list::<payment::Entity>(|q| {
            q.filter(payment::Column::Status.eq(PaymentStatus::Pending.as_str()))
                .filter(Condition::all().add(payment::Column::CreatedAt.lte(resubmit_before)))
                .limit(BATCH)
        })
        .await?;
    for pay in stuck {
        payments::dispatch(tenant, services.psp.as_ref(), &[pay.id]).await;
        report.payments_retried += 1;
    }
    report.payments_rechecked += reconcile(services, tenant, now).await?;
    report.failures_handled += handle_failures(services, tenant, now).await?;
    Ok(())
}

/// How many of `tenant`'s payments are in each state (one grouped count).
async fn payments_by_state(tenant: &TenantDb) -> Result<Vec<(String, u64)>> {
    let rows: Vec<(String, i64)> = payment::Entity::find()
        .select_only()
        .column(payment::Column::Status)
        .column_as(payment::Column::Id.count(), "n")
        .filter(payment::Column::TenantId.eq(tenant.tenant().as_uuid()))
        .group_by(payment::Column::Status)
        .into_tuple()
        .all(tenant.unscoped())
        .await?;
    Ok(rows
        .into_iter()
        .map(|(state, n)| (state, u64::try_from(n).unwrap_or_default()))
        .collect())
}

/// Runs `rule` in a write transaction of `tenant` and commits what it did.
async fn in_tenant<T>(
    tenant: &TenantDb,
    rule: impl AsyncFnOnce(&TenantTxn) -> Result<T>,
) -> Result<T> {
    let txn = tenant.begin().await?;
    let value = rule(&txn).await?;
    txn.commit().await?;
    Ok(value)
}

/// Reconciliation: a payment SENT this long without a webhook is checked with the
/// PSP (again after as long, while the PSP says it is processing). Each check is
/// claimed by a conditional UPDATE of `checked_at`, so two processes never check
/// the same payment at once, and what the PSP says goes through the same forward-
/// only transition as a webhook.
async fn reconcile(
    services: &Services,
    tenant: &TenantDb,
    now: chrono::DateTime<Utc>,
) -> Result<usize> {
    let cutoff = now
        - chrono::Duration::from_std(services.payments.recheck_after)
            .unwrap_or(chrono::Duration::MAX);
    let due = tenant
        .list::<payment::Entity>(|q| {
            q.filter(payment::Column::Status.eq(PaymentStatus::Sent.as_str()))
                .filter(payment::Column::SentAt.lte(cutoff))
                .filter(
                    Condition::any()
                        .add(payment::Column::CheckedAt.is_null())
                        .add(payment::Column::CheckedAt.lte(cutoff)),
                )
                .order_by_asc(payment::Column::SentAt)
                .limit(BATCH)
        })
        .await?;
    let mut checked = 0;
    for pay in due {
        match recheck(services, tenant, &pay, cutoff).await {
            Ok(true) => checked += 1,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(payment = %pay.id, error = %err, "payment status check failed")
            }
        }
    }
    Ok(checked)
}

async fn recheck(
    services: &Services,
    tenant: &TenantDb,
    pay: &payment::Model,
    cutoff: chrono::DateTime<Utc>,
) -> Result<bool> {
    let claimed = tenant
        .update_where::<payment::Entity>(|q| {
            q.col_expr(payment::Column::CheckedAt, Expr::value(Utc::now()))
                .filter(payment::Column::Id.eq(pay.id))
                .filter(payment::Column::Status.eq(PaymentStatus::Sent.as_str()))
                .filter(
                    Condition::any()
                        .add(payment::Column::CheckedAt.is_null())
                        .add(payment::Column::CheckedAt.lte(cutoff)),
                )
        })
        .await?;
    if claimed == 0 {
        return Ok(false);
    }
    let Some(reference) = pay.psp_reference.as_deref() else {
        return Ok(false);
    };
    // The network call happens outside any transaction.
    let answer = services.psp.status(reference).await;
    let txn = tenant.begin().await?;
    let (to, failure, outcome) = match &answer {
        Ok(PspStatus::Settled) => (Some(PaymentStatus::Settled), None, "SETTLED"),
        Ok(PspStatus::Failed(reason)) => {
            (Some(PaymentStatus::Failed), Some(reason.as_str()), "FAILED")
        }
        Ok(PspStatus::Processing) => (None, None, "PROCESSING"),
        Ok(PspStatus::Unknown) => (None, None, "UNKNOWN"),
        Err(_) => (None, None, "ERROR"),
    };
    let moved = match to {
        Some(to) => payments::transition(
            &txn,
            pay.id,
            Move {
                to,
                reference: None,
                failure_reason: failure,
                via: Via::StatusCheck,
                detail: Some("reconciliation".to_owned()),
            },
        )
        .await?
        .is_some(),
        None => false,
    };
    if !moved {
        let detail = answer.as_ref().err().map(|e| e.to_string());
        payments::note_attempt(&txn, pay.id, Via::StatusCheck, outcome, detail).await?;
    }
    txn.commit().await?;
    if outcome == "UNKNOWN" {
        tracing::error!(payment = %pay.id, reference, "the PSP does not know a payment it accepted");
    }
    Ok(true)
}

/// The retry policy: a FAILED payment is retried (a new payment, `retry_of` it)
/// after a backoff that doubles with each try, until `max_attempts` tries in all;
/// then its payer gets a `PAYMENT_FAILED` alert and an operator decides
/// (`retryPayment`). `checked_at` marks a failed payment the policy has handled,
/// claimed by a conditional UPDATE, and a payment can be retried only once (a
/// unique index): exactly once across processes.
async fn handle_failures(
    services: &Services,
    tenant: &TenantDb,
    now: chrono::DateTime<Utc>,
) -> Result<usize> {
    let failed = tenant
        .list::<payment::Entity>(|q| {
            q.filter(payment::Column::Status.eq(PaymentStatus::Failed.as_str()))
                .filter(payment::Column::CheckedAt.is_null())
                .order_by_asc(payment::Column::UpdatedAt)
                .limit(BATCH)
        })
        .await?;
    let mut handled = 0;
    for pay in failed {
        let backoff = services.payments.retry_backoff
            * 2u32.saturating_pow((pay.attempt - 1).clamp(0, 16) as u32);
        if pay.updated_at + chrono::Duration::from_std(backoff).unwrap_or(chrono::Duration::MAX)
            > now
        {
            continue;
        }
        match handle_failure(services, tenant, &pay).await {
            Ok(true) => handled += 1,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(payment = %pay.id, error = %err, "failed payment not handled")
            }
        }
    }
    Ok(handled)
}

async fn handle_failure(
    services: &Services,
    tenant: &TenantDb,
    pay: &payment::Model,
) -> Result<bool> {
    let origin = Origin::default();
    let txn = tenant.begin().await?;
    let claimed = txn
        .update_where::<payment::Entity>(|q| {
            q.col_expr(payment::Column::CheckedAt, Expr::value(Utc::now()))
                .filter(payment::Column::Id.eq(pay.id))
                .filter(payment::Column::Status.eq(PaymentStatus::Failed.as_str()))
                .filter(payment::Column::CheckedAt.is_null())
        })
        .await?;
    if claimed == 0 {
        return Ok(false);
    }
    if pay.attempt < services.payments.max_attempts {
        let retry = match payments::record_retry(&txn, pay.id, Actor::System, &origin).await {
            Ok(retry) => retry,
            // Someone retried it by hand meanwhile: nothing left to do.
            Err(crate::error::Error::Conflict { .. }) => {
                txn.commit().await?;
                return Ok(false);
            }
            Err(err) => return Err(err),
        };
        txn.commit().await?;
        payments::dispatch(tenant, services.psp.as_ref(), &[retry.id]).await;
        return Ok(true);
    }
    let payer = payments::parties(&txn, pay).await?.payer;
    txn.commit().await?;
    if let Some(payer) = payer {
        crate::spend::rules::raise_alert(
            tenant,
            payer,
            crate::spend::rules::AlertKind::PaymentFailed,
            None,
            &format!(
                "A payment failed {} times and will not be retried automatically: {}",
                pay.attempt,
                pay.failure_reason.as_deref().unwrap_or("failed")
            ),
            serde_json::json!({
                "paymentId": crate::ids::encode(crate::ids::Kind::Payment, pay.id),
                "attempt": pay.attempt,
            }),
        )
        .await?;
    }
    Ok(true)
}
