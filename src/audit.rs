//! The append-only audit log. Every change of state writes its row through the same
//! scoped handle (and so the same transaction) as the change itself.
//!
//! Each tenant's rows form a hash chain (`migration::audit_chain` defines the
//! canonical form): a row's `hash` covers the previous row's `hash` and its own
//! content, and `seq` numbers the rows 1, 2, 3, … in commit order. The rows a
//! transaction writes are linked when it commits ([`append`]), under the lock of the
//! tenant's head row (`audit_chain_heads`), so tenants never wait on each other and a
//! tenant's transactions hold its head only for the moment before their commit.
//! [`verify`] recomputes the chain; [`export`] writes it out for an auditor.

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
    pub action: &'static str,
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
        action: entry.action.to_owned(),
        subject_type: entry.subject.map(|(t, _)| t.to_owned()),
        subject_id: entry.subject.map(|(_, id)| id),
        ip: entry.origin.ip.clone(),
        request_id: entry.origin.request_id.clone(),
        details: entry.details,
        // Stored as hashed: PostgreSQL keeps microseconds (and would round more).
        created_at: micros(Utc::now()),
        seq: None,
        prev_hash: None,
        hash: None,
    })
    .await
}

fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(at)
}

fn chain_row(row: &audit_log::Model, seq: i64) -> audit_chain::Row<'_> {
    audit_chain::Row {
        tenant_id: row.tenant_id,
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

/// The last head this process appended for each tenant, `(seq, hash)`: the guess
/// the next append starts from. Only a guess — the UPDATE that moves the head checks
/// it — so a stale one (another process appended, a transaction rolled back) costs the
/// locked read it saves, nothing else.
static HEADS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<Uuid, (i64, String)>>,
> = std::sync::LazyLock::new(Default::default);

/// A tenant's new head, remembered once the transaction that wrote it committed.
pub(crate) struct NewHead(Option<(Uuid, i64, String)>);

impl NewHead {
    /// The transaction committed: the next append starts from here.
    pub(crate) fn committed(self) {
        if let Some((tenant, seq, hash)) = self.0
            && let Ok(mut heads) = HEADS.lock()
        {
            heads.insert(tenant, (seq, hash));
        }
    }
}

/// Links `rows` after `(seq, hash)`; answers the new head.
fn link_after(rows: &mut [audit_log::Model], mut seq: i64, mut prev: String) -> (i64, String) {
    for row in rows {
        seq += 1;
        let hash = audit_chain::link(&prev, &chain_row(row, seq));
        row.seq = Some(seq);
        row.prev_hash = Some(std::mem::replace(&mut prev, hash.clone()));
        row.hash = Some(hash);
    }
    (seq, prev)
}

/// Moves the tenant's head from `from` to `to`; `false` when it is not at `from`.
async fn move_head<C: ConnectionTrait>(
    conn: &C,
    tenant: Uuid,
    from: &(i64, String),
    to: &(i64, String),
) -> Result<bool> {
    let moved = audit_chain_head::Entity::update_many()
        .col_expr(audit_chain_head::Column::Seq, to.0.into())
        .col_expr(audit_chain_head::Column::Hash, to.1.clone().into())
        .filter(audit_chain_head::Column::TenantId.eq(tenant))
        .filter(audit_chain_head::Column::Seq.eq(from.0))
        .filter(audit_chain_head::Column::Hash.eq(from.1.as_str()))
        .exec(conn)
        .await?;
    Ok(moved.rows_affected == 1)
}

/// Links `rows` after the tenant's head and inserts them, in `conn`'s transaction
/// (which has entered the tenant's wall). The head is moved first, by an UPDATE that
/// checks it is where this process last left it (and so locks it until the commit);
/// when it is not, it is read under lock (created on first use) and moved from there.
/// Then one multi-row INSERT. Answers the new head, to remember once committed.
pub(crate) async fn append<C: ConnectionTrait>(
    conn: &C,
    tenant: Uuid,
    mut rows: Vec<audit_log::Model>,
) -> Result<NewHead> {
    if rows.is_empty() {
        return Ok(NewHead(None));
    }
    let guess = HEADS.lock().ok().and_then(|h| h.get(&tenant).cloned());
    let mut moved = None;
    if let Some(from) = guess {
        let mut linked = rows.clone();
        let to = link_after(&mut linked, from.0, from.1.clone());
        if move_head(conn, tenant, &from, &to).await? {
            rows = linked;
            moved = Some(to);
        }
    }
    let to = match moved {
        Some(to) => to,
        None => {
            let head = match locked_head(conn, tenant).await? {
                Some(head) => head,
                None => {
                    audit_chain_head::Entity::insert(audit_chain_head::ActiveModel {
                        tenant_id: Set(tenant),
                        seq: Set(0),
                        hash: Set(audit_chain::GENESIS.to_owned()),
                    })
                    .on_conflict(
                        OnConflict::column(audit_chain_head::Column::TenantId)
                            .do_nothing()
                            .to_owned(),
                    )
                    .exec_without_returning(conn)
                    .await?;
                    locked_head(conn, tenant)
                        .await?
                        .ok_or_else(|| Error::internal(anyhow::anyhow!("no audit chain head")))?
                }
            };
            let from = (head.seq, head.hash);
            let to = link_after(&mut rows, from.0, from.1.clone());
            if !move_head(conn, tenant, &from, &to).await? {
                return Err(Error::internal(anyhow::anyhow!(
                    "the audit chain head moved under its lock"
                )));
            }
            to
        }
    };
    audit_log::Entity::insert_many(rows.into_iter().map(IntoActiveModel::into_active_model))
        .exec_without_returning(conn)
        .await?;
    Ok(NewHead(Some((tenant, to.0, to.1))))
}

async fn locked_head<C: ConnectionTrait>(
    conn: &C,
    tenant: Uuid,
) -> Result<Option<audit_chain_head::Model>> {
    let query = audit_chain_head::Entity::find_by_id(tenant);
    let query = if conn.get_database_backend() == DbBackend::Postgres {
        query.lock_exclusive()
    } else {
        query
    };
    Ok(query.one(conn).await?)
}

/// What checking a tenant's chain found.
#[derive(Debug)]
pub struct ChainReport {
    /// Rows checked.
    pub rows: u64,
    /// The first broken link, if any.
    pub broken: Option<Broken>,
}

#[derive(Debug)]
pub struct Broken {
    pub seq: Option<i64>,
    pub id: Option<Uuid>,
    pub reason: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.seq, self.id) {
            (Some(seq), Some(id)) => write!(f, "row {seq} (id {id}): {}", self.reason),
            (None, Some(id)) => write!(f, "row id {id}: {}", self.reason),
            _ => f.write_str(&self.reason),
        }
    }
}

const PAGE: u64 = 1000;

/// Recomputes `db`'s tenant's chain from its first row: every `seq` in order without a
/// gap, every `prev_hash` the previous row's `hash`, every `hash` the row's content,
/// the head the last row. Answers the first broken link.
pub async fn verify(db: &TenantDb) -> Result<ChainReport> {
    let txn = db.begin_snapshot().await?;
    let unsealed = txn
        .first::<audit_log::Entity>(|q| q.filter(audit_log::Column::Seq.is_null()))
        .await?;
    if let Some(row) = unsealed {
        return Ok(ChainReport {
            rows: 0,
            broken: Some(Broken {
                seq: None,
                id: Some(row.id),
                reason: "the row is not in the chain (no seq/hash): inserted around it".into(),
            }),
        });
    }
    let mut checked = 0u64;
    let mut prev = audit_chain::GENESIS.to_owned();
    let mut seq = 0i64;
    loop {
        let page = txn
            .list::<audit_log::Entity>(|q| {
                q.filter(audit_log::Column::Seq.gt(seq))
                    .order_by_asc(audit_log::Column::Seq)
                    .limit(PAGE)
            })
            .await?;
        let last_page = (page.len() as u64) < PAGE;
        for row in page {
            let at = Some(row.id);
            let broken = |reason: String| Broken {
                seq: row.seq,
                id: at,
                reason,
            };
            let this = row.seq.unwrap_or_default();
            if this != seq + 1 {
                return Ok(ChainReport {
                    rows: checked,
                    broken: Some(broken(format!(
                        "expected row {} next: rows {}..{} are missing",
                        seq + 1,
                        seq + 1,
                        this - 1
                    ))),
                });
            }
            if row.prev_hash.as_deref() != Some(prev.as_str()) {
                return Ok(ChainReport {
                    rows: checked,
                    broken: Some(broken(
                        "prev_hash is not the previous row's hash (a row before it was changed or removed)".into(),
                    )),
                });
            }
            let hash = audit_chain::link(&prev, &chain_row(&row, this));
            if row.hash.as_deref() != Some(hash.as_str()) {
                return Ok(ChainReport {
                    rows: checked,
                    broken: Some(broken(
                        "hash does not match the row's content (the row was edited)".into(),
                    )),
                });
            }
            checked += 1;
            seq = this;
            prev = hash;
        }
        if last_page {
            break;
        }
    }
    let head = txn
        .find_by_id::<audit_chain_head::Entity>(db.tenant().as_uuid())
        .await?;
    let (head_seq, head_hash) =
        head.map_or((0, audit_chain::GENESIS.to_owned()), |h| (h.seq, h.hash));
    if head_seq != seq || head_hash != prev {
        return Ok(ChainReport {
            rows: checked,
            broken: Some(Broken {
                seq: Some(head_seq),
                id: None,
                reason: format!(
                    "the chain head says row {head_seq} is last, the rows end at {seq} (rows removed from the end, or the head was moved)"
                ),
            }),
        });
    }
    txn.rollback().await?;
    Ok(ChainReport {
        rows: checked,
        broken: None,
    })
}

/// Writes the tenant's chain from the first row created at or after `since` (all of
/// it without), one JSON object per line: the row's fields, `prev_hash`, `hash` and
/// the `canonical` text the hash covers, so an auditor can recompute every link with
/// any SHA-256 tool (`sha256(prev_hash ‖ canonical) = hash`). Answers the rows written.
pub async fn export(
    db: &TenantDb,
    since: Option<DateTime<Utc>>,
    out: &mut dyn std::io::Write,
) -> Result<u64> {
    let txn = db.begin_snapshot().await?;
    let mut seq = match since {
        None => 0,
        Some(since) => txn
            .first::<audit_log::Entity>(|q| {
                q.filter(audit_log::Column::CreatedAt.gte(since))
                    .filter(audit_log::Column::Seq.is_not_null())
                    .order_by_asc(audit_log::Column::Seq)
            })
            .await?
            .and_then(|row| row.seq)
            .map_or(i64::MAX, |s| s - 1),
    };
    let mut written = 0;
    loop {
        let page = txn
            .list::<audit_log::Entity>(|q| {
                q.filter(audit_log::Column::Seq.gt(seq))
                    .order_by_asc(audit_log::Column::Seq)
                    .limit(PAGE)
            })
            .await?;
        let last_page = (page.len() as u64) < PAGE;
        for row in page {
            let this = row.seq.unwrap_or_default();
            let line = serde_json::json!({
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
                "canonical": audit_chain::canonical(&chain_row(&row, this)),
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
    txn.rollback().await?;
    Ok(written)
}
