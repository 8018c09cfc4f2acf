//! Idempotency for every money-moving mutation (DESIGN §4): same key and same input
//! answer the first result again (also after a restart); the same key with another
//! input is `CONFLICT` / `IDEMPOTENCY_KEY_REUSED`; concurrent duplicates have exactly
//! one effect. Records are kept at least [`RETENTION`].
//!
//! The key is claimed by inserting its row inside the same write transaction as the
//! work: on PostgreSQL a concurrent duplicate blocks on the unique index until the
//! first commits, on SQLite on the write lock; either then finds the stored result.
//! A failed operation rolls its claim back, so a retry runs it again.

use chrono::{Duration, Utc};
use futures_util::future::BoxFuture;
use sea_orm::{ActiveValue::Set, ColumnTrait, Condition, QueryFilter, sea_query::Expr};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    db::{TenantDb, TenantTxn},
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
    if let Some(row) = txn
        .first::<idempotency_key::Entity>(|q| q.filter(scope(principal, operation, key)))
        .await?
    {
        return replay(row, &hash);
    }
    let now = Utc::now();
    let claim = txn
        .insert(idempotency_key::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(db.tenant().as_uuid()),
            principal_id: Set(principal),
            operation: Set(operation.to_owned()),
            key: Set(key.to_owned()),
            input_hash: Set(hash.clone()),
            response: Set(serde_json::Value::Null),
            created_at: Set(now),
            expires_at: Set(now + RETENTION),
        })
        .await;
    let claim = match claim {
        Ok(claim) => claim,
        Err(Error::Conflict { .. }) => {
            // A concurrent duplicate committed first (PostgreSQL): give up this
            // transaction and answer what that one stored.
            drop(txn);
            let row = db
                .first::<idempotency_key::Entity>(|q| q.filter(scope(principal, operation, key)))
                .await?
                .ok_or_else(|| Error::internal(anyhow::anyhow!("idempotency claim vanished")))?;
            return replay(row, &hash);
        }
        Err(err) => return Err(err),
    };
    let value = work(&txn).await?;
    let stored = serde_json::to_value(&value).map_err(Error::internal)?;
    txn.update_where::<idempotency_key::Entity>(|q| {
        q.col_expr(idempotency_key::Column::Response, Expr::value(stored))
            .filter(idempotency_key::Column::Id.eq(claim.id))
    })
    .await?;
    txn.commit().await?;
    Ok(value)
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
