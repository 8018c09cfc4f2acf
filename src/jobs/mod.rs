//! Background work (escrow auto-release and deadlines, mandate expiry, stuck
//! payments), safe with many replicas on one database: each job runs under a
//! lease (a row in `job_leases` that one process holds until it expires), and every
//! change it makes is a conditional UPDATE, so even two holders could not do a
//! thing twice.

pub mod lease;

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect};

use crate::{
    audit::{Actor, Origin},
    db::TenantDb,
    entity::{
        escrow::{self, EscrowStatus},
        mandate::{self, MandateStatus},
        payment::{self, PaymentStatus},
    },
    error::Result,
    escrow::rules::{self, Act},
    graphql::context::Services,
    ids::TenantId,
    payments,
};

const JOBS_LEASE: &str = "jobs";
/// Rows handled per kind per tick; the next tick takes the rest.
const BATCH: u64 = 100;
/// A payment still PENDING this long after it was recorded is submitted again.
const PAYMENT_RETRY_AFTER: chrono::Duration = chrono::Duration::seconds(30);

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
}

/// Runs the jobs every `interval` until `stop` fires.
pub async fn run(
    services: Services,
    interval: Duration,
    heartbeat: Heartbeat,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let holder = uuid::Uuid::now_v7().simple().to_string();
    let ttl = interval * 3 + Duration::from_secs(1);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        match tick(&services, &holder, ttl).await {
            Ok(report) => {
                heartbeat.beat();
                if report.released
                    + report.made_refundable
                    + report.payments_retried
                    + report.mandates_expired
                    > 0
                {
                    tracing::info!(?report, "background jobs did work");
                }
            }
            Err(err) => tracing::error!(error = ?err, "background jobs failed; retrying next tick"),
        }
    }
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

    // Jobs span tenants: find the rows here, then act through each row's tenant.
    let lapsed = escrow::Entity::find()
        .filter(escrow::Column::Status.is_in([
            EscrowStatus::Funded.as_str(),
            EscrowStatus::Releasable.as_str(),
        ]))
        .filter(escrow::Column::DeliveredAt.is_not_null())
        .filter(escrow::Column::InspectionEndsAt.lte(now))
        .limit(BATCH)
        .all(db)
        .await?;
    for esc in lapsed {
        let tenant = TenantDb::new(db.clone(), TenantId::from_uuid(esc.tenant_id));
        let done = async {
            let txn = tenant.begin().await?;
            let effect = rules::auto_release(&txn, act, esc.id).await?;
            txn.commit().await?;
            Ok::<_, crate::error::Error>(effect)
        }
        .await;
        match done {
            Ok(Some(effect)) => {
                report.released += 1;
                payments::dispatch(&tenant, services.psp.as_ref(), &effect.payments).await;
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(escrow = %esc.id, error = ?err, "auto-release failed"),
        }
    }

    let overdue = escrow::Entity::find()
        .filter(escrow::Column::Status.eq(EscrowStatus::Funded.as_str()))
        .filter(escrow::Column::DeliveredAt.is_null())
        .filter(escrow::Column::RefundableAt.is_null())
        .filter(escrow::Column::Deadline.lte(now))
        .limit(BATCH)
        .all(db)
        .await?;
    for esc in overdue {
        let tenant = TenantDb::new(db.clone(), TenantId::from_uuid(esc.tenant_id));
        let done = async {
            let txn = tenant.begin().await?;
            let marked = rules::mark_refundable(&txn, act, esc.id).await?;
            txn.commit().await?;
            Ok::<_, crate::error::Error>(marked)
        }
        .await;
        match done {
            Ok(true) => report.made_refundable += 1,
            Ok(false) => {}
            Err(err) => tracing::warn!(escrow = %esc.id, error = ?err, "deadline mark failed"),
        }
    }

    let expiring = mandate::Entity::find()
        .filter(mandate::Column::Status.eq(MandateStatus::Active.as_str()))
        .filter(mandate::Column::ExpiresAt.lte(now))
        .limit(BATCH)
        .all(db)
        .await?;
    for m in expiring {
        let tenant = TenantDb::new(db.clone(), TenantId::from_uuid(m.tenant_id));
        let done = async {
            let txn = tenant.begin().await?;
            let expired = crate::spend::rules::expire(&txn, act, m.id).await?;
            txn.commit().await?;
            Ok::<_, crate::error::Error>(expired)
        }
        .await;
        match done {
            Ok(true) => report.mandates_expired += 1,
            Ok(false) => {}
            Err(err) => tracing::warn!(mandate = %m.id, error = ?err, "mandate expiry failed"),
        }
    }

    let stuck = payment::Entity::find()
        .filter(payment::Column::Status.eq(PaymentStatus::Pending.as_str()))
        .filter(Condition::all().add(payment::Column::CreatedAt.lte(now - PAYMENT_RETRY_AFTER)))
        .limit(BATCH)
        .all(db)
        .await?;
    for pay in stuck {
        let tenant = TenantDb::new(db.clone(), TenantId::from_uuid(pay.tenant_id));
        payments::dispatch(&tenant, services.psp.as_ref(), &[pay.id]).await;
        report.payments_retried += 1;
    }
    Ok(report)
}
