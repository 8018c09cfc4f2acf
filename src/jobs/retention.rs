//! Retention: operational rows that are no longer needed are deleted after the periods
//! of [`RetentionConfig`], by the jobs (under a lease, once per interval across
//! replicas). Each statement deletes at most [`BATCH`] rows and commits on its own, so
//! no lock is held for long and a large backlog is worked off batch after batch.
//! Money, the ledger, the audit log and every business row are never purged.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    sea_query::{Expr, Query},
};

use crate::{
    config::RetentionConfig,
    db::{TenantDb, TenantEntity},
    entity::{
        auth_failure, idempotency_key, mail_token, mfa_challenge, notification, session, tenant,
        webhook_event, webhook_rejection,
    },
    error::Result,
    graphql::context::Services,
    ids::TenantId,
};

/// Rows one statement deletes at most.
pub const BATCH: u64 = 1000;

/// What one purge deleted, per kind of row.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Purged {
    pub webhook_events: u64,
    pub webhook_rejections: u64,
    pub idempotency_keys: u64,
    pub sessions: u64,
    pub auth_failures: u64,
    pub mfa_challenges: u64,
    pub notifications: u64,
    pub mail_tokens: u64,
}

fn cutoff(now: DateTime<Utc>, keep: Option<std::time::Duration>) -> Option<DateTime<Utc>> {
    let keep = chrono::Duration::from_std(keep?).ok()?;
    now.checked_sub_signed(keep)
}

/// Deletes a tenant's `E` rows matching `old`, a batch per statement, until none is
/// left; answers how many.
async fn purge_tenant<E>(db: &TenantDb, old: Condition) -> Result<u64>
where
    E: TenantEntity,
{
    let mut total = 0;
    loop {
        let batch = Query::select()
            .column(E::ID)
            .from(E::default())
            .and_where(Expr::col(E::TENANT).eq(db.tenant().as_uuid()))
            .cond_where(old.clone())
            .limit(BATCH)
            .to_owned();
        let deleted = db
            .delete_where::<E>(|q| q.filter(E::ID.in_subquery(batch)))
            .await?;
        total += deleted;
        if deleted < BATCH {
            return Ok(total);
        }
    }
}

/// One purge of every tenant's expired rows and of the platform's own.
pub async fn purge(services: &Services, config: &RetentionConfig) -> Result<Purged> {
    let now = Utc::now();
    let mut purged = Purged::default();
    for t in tenant::Entity::find().all(&services.db).await? {
        let db = services.tenant_db(TenantId::from_uuid(t.id));
        if let Some(before) = cutoff(now, config.idempotency_keys) {
            purged.idempotency_keys += purge_tenant::<idempotency_key::Entity>(
                &db,
                Condition::all().add(idempotency_key::Column::ExpiresAt.lt(before)),
            )
            .await?;
        }
        if let Some(before) = cutoff(now, config.sessions) {
            // Ended: expired, or revoked; their refresh tokens go with them (cascade).
            purged.sessions += purge_tenant::<session::Entity>(
                &db,
                Condition::any()
                    .add(session::Column::ExpiresAt.lt(before))
                    .add(session::Column::RevokedAt.lt(before)),
            )
            .await?;
        }
        if let Some(before) = cutoff(now, config.auth_failures) {
            purged.auth_failures += purge_tenant::<auth_failure::Entity>(
                &db,
                Condition::all()
                    .add(auth_failure::Column::WindowStartedAt.lt(before))
                    .add(
                        Condition::any()
                            .add(auth_failure::Column::LockedUntil.is_null())
                            .add(auth_failure::Column::LockedUntil.lt(now)),
                    ),
            )
            .await?;
        }
        if let Some(before) = cutoff(now, config.mfa_challenges) {
            purged.mfa_challenges += purge_tenant::<mfa_challenge::Entity>(
                &db,
                Condition::all().add(mfa_challenge::Column::ExpiresAt.lt(before)),
            )
            .await?;
        }
        if let Some(before) = cutoff(now, config.notifications) {
            // Sent or given up on; a mail still to be sent is kept however old.
            purged.notifications += purge_tenant::<notification::Entity>(
                &db,
                Condition::all()
                    .add(notification::Column::Status.ne(crate::notify::deliver::PENDING))
                    .add(notification::Column::CreatedAt.lt(before)),
            )
            .await?;
            purged.mail_tokens += purge_tenant::<mail_token::Entity>(
                &db,
                Condition::any()
                    .add(mail_token::Column::UsedAt.lt(before))
                    .add(mail_token::Column::ExpiresAt.lt(before)),
            )
            .await?;
        }
        if let Some(before) = cutoff(now, config.webhook_events) {
            // A tenant's own events (row-level security shows each tenant its own).
            purged.webhook_events += purge_rows::<webhook_event::Entity, _>(
                db.unscoped(),
                webhook_event::Column::Id,
                old_events(Some(t.id), before),
            )
            .await?;
        }
    }
    if let Some(before) = cutoff(now, config.webhook_events) {
        // Events never matched to a payment belong to no tenant.
        purged.webhook_events += purge_rows::<webhook_event::Entity, _>(
            &services.db,
            webhook_event::Column::Id,
            old_events(None, before),
        )
        .await?;
        purged.webhook_rejections += purge_rows::<webhook_rejection::Entity, _>(
            &services.db,
            webhook_rejection::Column::Id,
            Condition::all().add(webhook_rejection::Column::ReceivedAt.lt(before)),
        )
        .await?;
    }
    Ok(purged)
}

/// Deletes the rows of a platform table `E` (no tenant column of ours; row-level
/// security still applies on `conn`) matching `old`, a batch per statement, until none
/// is left; answers how many.
async fn purge_rows<E, C>(conn: &C, id: E::Column, old: Condition) -> Result<u64>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let mut total = 0;
    loop {
        let batch = Query::select()
            .column(id)
            .from(E::default())
            .cond_where(old.clone())
            .limit(BATCH)
            .to_owned();
        let deleted = E::delete_many()
            .filter(id.in_subquery(batch))
            .exec(conn)
            .await?
            .rows_affected;
        total += deleted;
        if deleted < BATCH {
            return Ok(total);
        }
    }
}

/// Webhook events received before `before`: one tenant's (through its wall), or
/// those matched to no tenant.
fn old_events(tenant: Option<uuid::Uuid>, before: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(match tenant {
            Some(t) => webhook_event::Column::TenantId.eq(t),
            None => webhook_event::Column::TenantId.is_null(),
        })
        .add(webhook_event::Column::ReceivedAt.lt(before))
}
