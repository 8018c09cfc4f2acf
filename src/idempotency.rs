//! Idempotency for every money-moving mutation (DESIGN §4): same key and same input
//! answer the first result again (also after a restart); the same key with another
//! input is `CONFLICT` / `IDEMPOTENCY_KEY_REUSED`; concurrent duplicates have exactly
//! one effect. Records are kept at least [`RETENTION`].
//!
//! The key is claimed by inserting its row (`ON CONFLICT DO NOTHING`) inside the same
//! write transaction as the work: on PostgreSQL a concurrent duplicate blocks on the
//! unique index until the first commits, on SQLite on the write lock; either then
//! finds the stored result. A failed operation rolls its claim back, so a retry runs
//! it again.

use chrono::{Duration, Utc};
use futures_util::future::BoxFuture;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, QueryFilter, sea_query::Expr,
};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    db::{Scoped, TenantDb, TenantTxn, scoped::Claim},
    entity::idempotency_key,
    error::{Error, Result},
    ids::new_id,
};

/// How long a result is kept at least.
pub const RETENTION: Duration = Duration::hours(24);
pub const REUSED: &str = "IDEMPOTENCY_KEY_REUSED";

/// A client's idempotency key: 1 to 255 visible ASCII characters.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(Error::bad_field(
            "idempotencyKey",
            "an idempotency key is 1 to 255 visible ASCII characters",
        ))
    }
}

/// SHA-256 over the operation and the canonical JSON of the input (object keys are
/// sorted by `serde_json`'s map), so field order does not matter.
fn input_hash(operation: &str, input: &impl Serialize) -> Result<String> {
    let canonical = serde_json::to_vec(&serde_json::to_value(input).map_err(Error::internal)?)
        .map_err(Error::internal)?;
    let mut hasher = Sha256::new();
    hasher.update(operation.as_bytes());
    hasher.update([0]);
    hasher.update(&canonical);
    Ok(hex::encode(hasher.finalize()))
}

fn scope(principal: Uuid, operation: &str, key: &str) -> Condition {
    Condition::all()
        .add(idempotency_key::Column::PrincipalId.eq(principal))
        .add(idempotency_key::Column::Operation.eq(operation))
        .add(idempotency_key::Column::Key.eq(key))
}

fn replay<T: DeserializeOwned>(row: idempotency_key::Model, hash: &str) -> Result<T> {
    if row.input_hash != hash {
        return Err(Error::conflict(
            REUSED,
            "this idempotency key was already used with a different input",
        ));
    }
    serde_json::from_value(row.response).map_err(Error::internal)
}

/// Runs `work` once per (principal, operation, key) in a write transaction of the
/// caller's tenant, storing its result with the claim; replays that result otherwise.
///
/// The claim is one `INSERT … ON CONFLICT DO NOTHING`: when it inserts nothing, the
/// key was used (on PostgreSQL a concurrent duplicate waits on the unique index
/// until the first commits), and the stored row is read and replayed.
pub async fn run<T, F>(
    db: &TenantDb,
    principal: Uuid,
    operation: &'static str,
    key: &str,
    input: &impl Serialize,
    work: F,
) -> Result<T>
where
    T: Serialize + DeserializeOwned,
    F: for<'t> FnOnce(&'t TenantTxn) -> BoxFuture<'t, Result<T>>,
{
    check_key(key)?;
    let hash = input_hash(operation, input)?;
    let txn = db.begin().await?;
    let now = Utc::now();
    let id = new_id();
    let claimed = txn
        .insert_or_skip(
            idempotency_key::ActiveModel {
                id: Set(id),
                tenant_id: Set(db.tenant().as_uuid()),
                principal_id: Set(principal),
                operation: Set(operation.to_owned()),
                key: Set(key.to_owned()),
                input_hash: Set(hash.clone()),
                response: Set(serde_json::Value::Null),
                created_at: Set(now),
                expires_at: Set(now + RETENTION),
            },
            [
                idempotency_key::Column::TenantId,
                idempotency_key::Column::PrincipalId,
                idempotency_key::Column::Operation,
                idempotency_key::Column::Key,
            ],
        )
        .await?;
    if !claimed {
        let row = txn
            .first::<idempotency_key::Entity>(|q| q.filter(scope(principal, operation, key)))
            .await?
            .ok_or_else(|| Error::internal(anyhow::anyhow!("idempotency claim vanished")))?;
        return replay(row, &hash);
    }
    *txn.claim.lock().expect("claim lock") = Some(Claim { id, answer: None });
    let value = work(&txn).await?;
    let stored = serde_json::to_value(&value).map_err(Error::internal)?;
    let answered = txn
        .claim
        .lock()
        .expect("claim lock")
        .take()
        .and_then(|c| c.answer);
    if answered.as_ref() != Some(&stored) {
        write_answer(&txn, id, stored).await?;
    }
    txn.commit().await?;
    Ok(value)
}

/// Writes the answer of the key this transaction claimed now, rather than after the
/// work: a rule calls it just before the UPDATE that takes a contended row's lock
/// (a mandate's budget), so that lock is held only from that UPDATE to COMMIT.
/// `value` must be what the work goes on to return (when it returns something else,
/// [`run`] writes that instead). Outside [`run`] it does nothing.
pub async fn answer_now<C: ConnectionTrait>(txn: &Scoped<C>, value: &impl Serialize) -> Result<()> {
    let Some(id) = txn.claim.lock().expect("claim lock").as_ref().map(|c| c.id) else {
        return Ok(());
    };
    let stored = serde_json::to_value(value).map_err(Error::internal)?;
    write_answer(txn, id, stored.clone()).await?;
    if let Some(claim) = txn.claim.lock().expect("claim lock").as_mut() {
        claim.answer = Some(stored);
    }
    Ok(())
}

async fn write_answer<C: ConnectionTrait>(
    txn: &Scoped<C>,
    claim: Uuid,
    answer: serde_json::Value,
) -> Result<()> {
    txn.update_where::<idempotency_key::Entity>(|q| {
        q.col_expr(idempotency_key::Column::Response, Expr::value(answer))
            .filter(idempotency_key::Column::Id.eq(claim))
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_field_order_and_depends_on_operation() {
        let a = serde_json::json!({ "amount": "10.00", "escrow": "esc_1" });
        let b = serde_json::json!({ "escrow": "esc_1", "amount": "10.00" });
        assert_eq!(
            input_hash("fund", &a).unwrap(),
            input_hash("fund", &b).unwrap()
        );
        assert_ne!(
            input_hash("fund", &a).unwrap(),
            input_hash("refund", &a).unwrap()
        );
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("order-42/attempt-1").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("has space").is_err());
        assert!(check_key(&"k".repeat(256)).is_err());
    }
}
