//! The append-only audit log. Every change of state writes its row through the same
//! scoped handle (and so the same transaction) as the change itself.
//!
//! Each tenant's rows form hash chains (`migration::audit_chain` defines the canonical
//! form): a few parallel *lanes* ([`LANES`]), each a chain in commit order, where a
//! row's `hash` covers the previous row's `hash` in its lane and its own content, and
//! `seq` numbers the lane's rows 1, 2, 3, …. The rows a transaction writes are linked
//! when it commits ([`append`]) into a lane no other transaction holds (on PostgreSQL
//! `FOR UPDATE SKIP LOCKED` on the lanes' head rows), so concurrent writers of one
//! tenant never queue on one row, and tenants never wait on each other. [`verify`]
//! recomputes every lane; [`export`] writes them out for an auditor.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use migration::audit_chain;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect, sea_query::OnConflict,
};
use uuid::Uuid;

use crate::{
    db::{Scoped, TenantDb},
    entity::{audit_chain_head, audit_log},
    error::{Error, Result},
    ids::new_id,
    kinds::AuditAction,
};

/// Who did it.
#[derive(Debug, Clone, Copy)]
pub enum Actor {
    User(Uuid),
    /// The command line (`bootstrap`, `--demo`) or a background job.
    System,
}

/// Where the request came from, for the audit row.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

pub struct Entry<'a> {
    pub actor: Actor,
    pub action: AuditAction,
    pub subject: Option<(&'static str, Uuid)>,
    pub details: serde_json::Value,
    pub origin: &'a Origin,
}

/// Writes `entry` in `db`'s transaction (linked into the chain when it commits).
pub async fn record<C: ConnectionTrait>(db: &Scoped<C>, entry: Entry<'_>) -> Result<()> {
    let (actor_type, actor_id) = match entry.actor {
        Actor::User(id) => ("USER", Some(id)),
        Actor::System => ("SYSTEM", None),
    };
    db.audit(audit_log::Model {
        id: new_id(),
        tenant_id: db.tenant().as_uuid(),
        actor_type: actor_type.to_owned(),
        actor_id,
        action: entry.action.as_str().to_owned(),
        subject_type: entry.subject.map(|(t, _)| t.to_owned()),
        subject_id: entry.subject.map(|(_, id)| id),
        ip: entry.origin.ip.clone(),
        request_id: entry.origin.request_id.clone(),
        details: entry.details,
        // Stored as hashed: PostgreSQL keeps microseconds (and would round more).
        created_at: micros(Utc::now()),
        lane: None,
        seq: None,
        prev_hash: None,
        hash: None,
    })
    .await
}

fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(at)
}

fn chain_row(row: &audit_log::Model, lane: i16, seq: i64) -> audit_chain::Row<'_> {
    audit_chain::Row {
        tenant_id: row.tenant_id,
        lane,
        seq,
        id: row.id,
        actor_type: &row.actor_type,
        actor_id: row.actor_id,
        action: &row.action,
        subject_type: row.subject_type.as_deref(),
        subject_id: row.subject_id,
        ip: row.ip.as_deref(),
        request_id: row.request_id.as_deref(),
        details: &row.details,
        created_at: row.created_at,
    }
}

/// How many lanes a tenant's chain has: how many of its transactions can append at
/// the same moment without waiting for one another.
pub const LANES: i16 = 16;

/// Links `rows` after `(seq, hash)` in `lane`; answers the lane's new head.
fn link_after(
    rows: &mut [audit_log::Model],
    lane: i16,
    mut seq: i64,
    mut prev: String,
) -> (i64, String) {
    for row in rows {
        seq += 1;
        row.lane = Some(lane);
        let hash = audit_chain::link(&prev, &chain_row(row, lane, seq));
        row.seq = Some(seq);
        row.prev_hash = Some(std::mem::replace(&mut prev, hash.clone()));
        row.hash = Some(hash);
    }
    (seq, prev)
}

/// Lanes this process holds no transaction on, per tenant, with their heads as this
/// process last left them: a transaction takes one (so no two of this process's
/// transactions pick the same lane) and gives it back when it ends.
type LanePool = std::collections::HashMap<Uuid, Vec<(i16, i64, String)>>;
static POOL: std::sync::LazyLock<std::sync::Mutex<LanePool>> =
    std::sync::LazyLock::new(Default::default);

fn pool() -> std::sync::MutexGuard<'static, LanePool> {
    POOL.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A lane a transaction appended to: back to the pool when the transaction ends, with
/// its new head if it committed ([`Lease::committed`]), its old one otherwise.
pub(crate) struct Lease {
    tenant: Uuid,
    lane: i16,
    before: (i64, String),
    after: Option<(i64, String)>,
    committed: bool,
}

impl Lease {
    pub(crate) fn committed(mut self) {
        self.committed = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (seq, hash) = match (self.committed, self.after.take()) {
            (true, Some(after)) => after,
            _ => std::mem::take(&mut self.before),
        };
        let mut pool = pool();
        let lanes = pool.entry(self.tenant).or_default();
        lanes.retain(|(lane, ..)| *lane != self.lane);
        lanes.push((self.lane, seq, hash));
    }
}

/// Moves a lane's head from `from` to `to`; `false` when it was not at `from` (another
/// process appended to it). The UPDATE locks the head until the commit.
async fn move_head<C: ConnectionTrait>(
    conn: &C,
    tenant: Uuid,
    lane: i16,
    from: &(i64, String),
    to: &(i64, String),
) -> Result<bool> {
    let moved = audit_chain_head::Entity::update_many()
        .col_expr(audit_chain_head::Column::Seq, to.0.into())
        .col_expr(audit_chain_head::Column::Hash, to.1.clone().into())
        .filter(audit_chain_head::Column::TenantId.eq(tenant))
        .filter(audit_chain_head::Column::Lane.eq(lane))
        .filter(audit_chain_head::Column::Seq.eq(from.0))
        .filter(audit_chain_head::Column::Hash.eq(from.1.as_str()))
        .exec(conn)
        .await?;
    Ok(moved.rows_affected == 1)
}

/// On PostgreSQL, one statement: moves `lane`'s head from `from` to `to` and, only if
/// it moved, inserts `rows` (linked after `from`). `false` when the head was elsewhere
/// or another transaction holds it (nothing written). It never waits for the lane: a
/// transaction of another process may hold it while it waits for a row this one holds
/// (a mandate), and waiting here would close that circle into a deadlock.
async fn moved_with_rows<C: ConnectionTrait>(
    conn: &C,
    tenant: Uuid,
    lane: i16,
    from: &(i64, String),
    to: &(i64, String),
    rows: &[audit_log::Model],
) -> Result<bool> {
    let mut values: Vec<sea_orm::Value> = vec![
        to.0.into(),
        to.1.clone().into(),
        tenant.into(),
        lane.into(),
        from.0.into(),
        from.1.clone().into(),
    ];
    let mut tuples = Vec::with_capacity(rows.len());
    for row in rows {
        let n = values.len();
        tuples.push(format!(
            "(${}::uuid, $3::uuid, ${}::text, ${}::uuid, ${}::text, ${}::text, ${}::uuid, \
             ${}::text, ${}::text, ${}::json, ${}::timestamptz, $4::smallint, ${}::bigint, \
             ${}::text, ${}::text)",
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6,
            n + 7,
            n + 8,
            n + 9,
            n + 10,
            n + 11,
            n + 12,
            n + 13
        ));
        values.extend([
            row.id.into(),
            row.actor_type.clone().into(),
            row.actor_id.into(),
            row.action.clone().into(),
            row.subject_type.clone().into(),
            row.subject_id.into(),
            row.ip.clone().into(),
            row.request_id.clone().into(),
            row.details.to_string().into(),
            row.created_at.into(),
            row.seq.into(),
            row.prev_hash.clone().into(),
            row.hash.clone().into(),
        ]);
    }
    let sql = format!(
        "WITH head AS (UPDATE audit_chain_heads SET seq = $1, hash = $2 \
           WHERE (tenant_id, lane) IN (SELECT tenant_id, lane FROM audit_chain_heads \
             WHERE tenant_id = $3 AND lane = $4 AND seq = $5 AND hash = $6 \
             FOR UPDATE SKIP LOCKED) \
           RETURNING 1) \
         INSERT INTO audit_log (id, tenant_id, actor_type, actor_id, action, subject_type, \
           subject_id, ip, request_id, details, created_at, lane, seq, prev_hash, hash) \
         SELECT v.* FROM (VALUES {}) AS v WHERE EXISTS (SELECT 1 FROM head)",
        tuples.join(", ")
    );
    let done = conn
        .execute(sea_orm::Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await?;
    Ok(done.rows_affected() == rows.len() as u64)
}

/// Links `rows` into one lane of the tenant's chain and inserts them, in `conn`'s
/// transaction (which has entered the tenant's wall); the lane's head stays locked
/// until the commit. A lane from this process's pool is moved with one UPDATE that
/// checks its head is where this process left it; without one (or when another
/// process moved it) a lane no other transaction holds is read under lock first
/// (`FOR UPDATE SKIP LOCKED`). Then one multi-row INSERT. The lease goes back to the
/// pool when the transaction ends.
pub(crate) async fn append<C: ConnectionTrait>(
    conn: &C,
    tenant: Uuid,
    mut rows: Vec<audit_log::Model>,
) -> Result<Option<Lease>> {
    if rows.is_empty() {
        return Ok(None);
    }
    let pooled = pool().get_mut(&tenant).and_then(Vec::pop);
    let mut lease = None;
    if let Some((lane, seq, hash)) = pooled {
        let before = (seq, hash);
        let mut linked = rows.clone();
        let after = link_after(&mut linked, lane, before.0, before.1.clone());
        let lease_of = |after| Lease {
            tenant,
            lane,
            before: before.clone(),
            after: Some(after),
            committed: false,
        };
        if conn.get_database_backend() == DbBackend::Postgres {
            // The head's move and the rows in one statement: the rows go in only if
            // the head moved.
            if moved_with_rows(conn, tenant, lane, &before, &after, &linked).await? {
                return Ok(Some(lease_of(after)));
            }
        } else if move_head(conn, tenant, lane, &before, &after).await? {
            rows = linked;
            lease = Some(lease_of(after));
        }
    }
    let lease = match lease {
        Some(lease) => lease,
        None => {
            let head = match free_lane(conn, tenant).await? {
                Some(head) => head,
                None => {
                    // First use (the lanes do not exist yet), or every lane is held:
                    // create them (nothing if they exist), then wait for one.
                    audit_chain_head::Entity::insert_many((0..LANES).map(|lane| {
                        audit_chain_head::ActiveModel {
                            tenant_id: Set(tenant),
                            lane: Set(lane),
                            seq: Set(0),
                            hash: Set(audit_chain::GENESIS.to_owned()),
                        }
                    }))
                    .on_conflict(
                        OnConflict::columns([
                            audit_chain_head::Column::TenantId,
                            audit_chain_head::Column::Lane,
                        ])
                        .do_nothing()
                        .to_owned(),
                    )
                    .exec_without_returning(conn)
                    .await?;
                    match free_lane(conn, tenant).await? {
                        Some(head) => head,
                        None => busy_lane(conn, tenant).await?,
                    }
                }
            };
            let (lane, before) = (head.lane, (head.seq, head.hash));
            let after = link_after(&mut rows, lane, before.0, before.1.clone());
            if !move_head(conn, tenant, lane, &before, &after).await? {
                return Err(Error::internal(anyhow::anyhow!(
                    "audit chain lane {lane} moved under its lock"
                )));
            }
            Lease {
                tenant,
                lane,
                before,
                after: Some(after),
                committed: false,
            }
        }
    };
    audit_log::Entity::insert_many(rows.into_iter().map(IntoActiveModel::into_active_model))
        .exec_without_returning(conn)
        .await?;
    Ok(Some(lease))
}

/// A lane's head that no other transaction holds, locked until the commit. SQLite's
/// write transactions are serialized already: there, lane 0.
async fn free_lane<C: ConnectionTrait>(
    conn: &C,
    tenant: Uuid,
) -> Result<Option<audit_chain_head::Model>> {
    use sea_orm::sea_query::{LockBehavior, LockType};
    let query = audit_chain_head::Entity::find()
        .filter(audit_chain_head::Column::TenantId.eq(tenant))
        .order_by_asc(audit_chain_head::Column::Lane);
    let query = if conn.get_database_backend() == DbBackend::Postgres {
        query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
    } else {
        query.filter(audit_chain_head::Column::Lane.eq(0))
    };
    Ok(query.one(conn).await?)
}

/// Every lane is held: wait for one, picked at random.
async fn busy_lane<C: ConnectionTrait>(conn: &C, tenant: Uuid) -> Result<audit_chain_head::Model> {
    let lane = rand::random_range(0..LANES);
    let query = audit_chain_head::Entity::find()
        .filter(audit_chain_head::Column::TenantId.eq(tenant))
        .filter(audit_chain_head::Column::Lane.eq(lane));
    let query = if conn.get_database_backend() == DbBackend::Postgres {
        query.lock_exclusive()
    } else {
        query
    };
    query
        .one(conn)
        .await?
        .ok_or_else(|| Error::internal(anyhow::anyhow!("no audit chain lane {lane}")))
}

/// What checking a tenant's chain found.
#[derive(Debug)]
pub struct ChainReport {
    /// Rows checked.
    pub rows: u64,
    /// Lanes checked.
    pub lanes: u64,
    /// The first broken link, if any.
    pub broken: Option<Broken>,
}

#[derive(Debug)]
pub struct Broken {
    /// Where: the lane and the row's number in it, when known.
    pub at: Option<(i16, i64)>,
    pub id: Option<Uuid>,
    pub reason: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.at, self.id) {
            (Some((lane, seq)), Some(id)) => {
                write!(f, "lane {lane} row {seq} (id {id}): {}", self.reason)
            }
            (Some((lane, seq)), None) => write!(f, "lane {lane} row {seq}: {}", self.reason),
            (None, Some(id)) => write!(f, "row id {id}: {}", self.reason),
            (None, None) => f.write_str(&self.reason),
        }
    }
}

const PAGE: u64 = 1000;

/// The next page of one lane: up to [`PAGE`] rows after `seq`, in order.
async fn rows_after<C: ConnectionTrait>(
    txn: &Scoped<C>,
    lane: i16,
    seq: i64,
) -> Result<Vec<audit_log::Model>> {
    txn.list::<audit_log::Entity>(|q| {
        q.filter(audit_log::Column::Lane.eq(lane))
            .filter(audit_log::Column::Seq.gt(seq))
            .order_by_asc(audit_log::Column::Seq)
            .limit(PAGE)
    })
    .await
}

/// The lanes a tenant's rows or heads name, in order.
async fn lanes<C: ConnectionTrait>(txn: &Scoped<C>) -> Result<Vec<i16>> {
    let mut lanes: Vec<i16> = txn
        .list::<audit_chain_head::Entity>(|q| q)
        .await?
        .into_iter()
        .map(|h| h.lane)
        .collect();
    let used: Vec<Option<i16>> = audit_log::Entity::find()
        .select_only()
        .column(audit_log::Column::Lane)
        .filter(audit_log::Column::TenantId.eq(txn.tenant().as_uuid()))
        .distinct()
        .into_tuple()
        .all(txn.unscoped())
        .await?;
    lanes.extend(used.into_iter().flatten());
    lanes.sort_unstable();
    lanes.dedup();
    Ok(lanes)
}

/// Recomputes every lane of `db`'s tenant's chain from its first row: every `seq` in
/// order without a gap, every `prev_hash` the previous row's `hash`, every `hash` the
/// row's content, each head its lane's last row. Answers the first broken link.
pub async fn verify(db: &TenantDb) -> Result<ChainReport> {
    let txn = db.begin_snapshot().await?;
    let mut report = ChainReport {
        rows: 0,
        lanes: 0,
        broken: None,
    };
    let unsealed = txn
        .first::<audit_log::Entity>(|q| {
            q.filter(
                sea_orm::Condition::any()
                    .add(audit_log::Column::Seq.is_null())
                    .add(audit_log::Column::Lane.is_null()),
            )
        })
        .await?;
    if let Some(row) = unsealed {
        report.broken = Some(Broken {
            at: None,
            id: Some(row.id),
            reason: "the row is not in the chain (no lane/seq/hash): inserted around it".into(),
        });
        return Ok(report);
    }
    let heads = txn.list::<audit_chain_head::Entity>(|q| q).await?;
    for lane in lanes(&txn).await? {
        report.lanes += 1;
        if let Some(broken) = verify_lane(&txn, lane, &heads, &mut report.rows).await? {
            report.broken = Some(broken);
            return Ok(report);
        }
    }
    txn.rollback().await?;
    Ok(report)
}

async fn verify_lane<C: ConnectionTrait>(
    txn: &Scoped<C>,
    lane: i16,
    heads: &[audit_chain_head::Model],
    checked: &mut u64,
) -> Result<Option<Broken>> {
    let mut prev = audit_chain::GENESIS.to_owned();
    let mut seq = 0i64;
    loop {
        let page = rows_after(txn, lane, seq).await?;
        let last_page = (page.len() as u64) < PAGE;
        for row in page {
            let this = row.seq.unwrap_or_default();
            let broken = |reason: String| {
                Some(Broken {
                    at: Some((lane, this)),
                    id: Some(row.id),
                    reason,
                })
            };
            if this != seq + 1 {
                return Ok(broken(format!(
                    "expected row {} next: rows {}..{} are missing",
                    seq + 1,
                    seq + 1,
                    this - 1
                )));
            }
            if row.prev_hash.as_deref() != Some(prev.as_str()) {
                return Ok(broken(
                    "prev_hash is not the previous row's hash (a row before it was changed or removed)".into(),
                ));
            }
            let hash = audit_chain::link(&prev, &chain_row(&row, lane, this));
            if row.hash.as_deref() != Some(hash.as_str()) {
                return Ok(broken(
                    "hash does not match the row's content (the row was edited)".into(),
                ));
            }
            *checked += 1;
            seq = this;
            prev = hash;
        }
        if last_page {
            break;
        }
    }
    let (head_seq, head_hash) = heads
        .iter()
        .find(|h| h.lane == lane)
        .map_or((0, audit_chain::GENESIS.to_owned()), |h| {
            (h.seq, h.hash.clone())
        });
    if head_seq != seq || head_hash != prev {
        return Ok(Some(Broken {
            at: Some((lane, head_seq)),
            id: None,
            reason: format!(
                "the lane's head says row {head_seq} is last, its rows end at {seq} (rows removed from the end, or the head was moved)"
            ),
        }));
    }
    Ok(None)
}

/// Writes every lane of the tenant's chain, lane after lane, from each lane's first row
/// created at or after `since` (all of it without), one JSON object per line: the
/// row's fields (with `lane` and `seq`), `prev_hash`, `hash` and the `canonical` text
/// the hash covers, so an auditor can recompute every link with any SHA-256 tool
/// (`sha256(prev_hash ‖ canonical) = hash`, each `prev_hash` the `hash` of the previous
/// row of the same lane). Answers the rows written.
pub async fn export(
    db: &TenantDb,
    since: Option<DateTime<Utc>>,
    out: &mut dyn std::io::Write,
) -> Result<u64> {
    let txn = db.begin_snapshot().await?;
    let mut written = 0;
    for lane in lanes(&txn).await? {
        let mut seq = match since {
            None => 0,
            Some(since) => txn
                .first::<audit_log::Entity>(|q| {
                    q.filter(audit_log::Column::Lane.eq(lane))
                        .filter(audit_log::Column::CreatedAt.gte(since))
                        .order_by_asc(audit_log::Column::Seq)
                })
                .await?
                .and_then(|row| row.seq)
                .map_or(i64::MAX, |s| s - 1),
        };
        loop {
            let page = rows_after(&txn, lane, seq).await?;
            let last_page = (page.len() as u64) < PAGE;
            for row in page {
                let this = row.seq.unwrap_or_default();
                let line = serde_json::json!({
                    "lane": lane,
                    "seq": this,
                    "id": row.id,
                    "tenant_id": row.tenant_id,
                    "created_at": row.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    "actor_type": row.actor_type,
                    "actor_id": row.actor_id,
                    "action": row.action,
                    "subject_type": row.subject_type,
                    "subject_id": row.subject_id,
                    "ip": row.ip,
                    "request_id": row.request_id,
                    "details": row.details,
                    "canonical": audit_chain::canonical(&chain_row(&row, lane, this)),
                    "prev_hash": row.prev_hash,
                    "hash": row.hash,
                });
                writeln!(out, "{line}").map_err(|e| Error::internal(anyhow::anyhow!(e)))?;
                written += 1;
                seq = this;
            }
            if last_page {
                break;
            }
        }
    }
    txn.rollback().await?;
    Ok(written)
}
