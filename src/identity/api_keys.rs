//! API keys: created by a user with `keys:admin` (and a recent MFA verification),
//! shown once, stored as a keyed hash, scoped to at most the creator's scopes.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, QueryFilter, sea_query::Expr};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use uuid::Uuid;

use crate::kinds::AuditAction;
use crate::{
    audit::{self, Actor, Origin},
    auth::{API_KEY_PREFIX, Scope, TokenService, UserPrincipal},
    db::Scoped,
    entity::api_key,
    error::{Error, Result},
    ids::new_id,
};

/// `lastUsedAt` is written at most this often per key.
const TOUCH_EVERY: Duration = Duration::minutes(1);
/// The same, for the principal cache's clock.
pub const TOUCH_EVERY_STD: std::time::Duration = std::time::Duration::from_secs(60);

pub struct CreatedKey {
    pub model: api_key::Model,
    /// The key itself, shown once.
    pub key: SecretString,
}

/// The scopes stored on a key (unknown names, from a future version, are ignored).
pub fn scopes_of_key(key: &api_key::Model) -> BTreeSet<Scope> {
    key.scopes
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub async fn create<C: ConnectionTrait>(
    db: &Scoped<C>,
    tokens: &TokenService,
    creator: &UserPrincipal,
    name: &str,
    scopes: &[Scope],
    expires_at: Option<DateTime<Utc>>,
    origin: &Origin,
) -> Result<CreatedKey> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(Error::bad_field(
            "name",
            "a key name is 1 to 100 characters",
        ));
    }
    let wanted: BTreeSet<Scope> = scopes.iter().copied().collect();
    if wanted.is_empty() {
        return Err(Error::bad_field("scopes", "a key needs at least one scope"));
    }
    if let Some(extra) = wanted.iter().find(|s| !creator.scopes.contains(s)) {
        return Err(Error::conflict(
            "SCOPE_ESCALATION",
            format!("you do not hold `{extra}`, so no key of yours can"),
        ));
    }
    if expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(Error::bad_field("expiresAt", "must be in the future"));
    }
    let mut random = [0u8; 32];
    rand::rng().fill_bytes(&mut random);
    let key = format!("{API_KEY_PREFIX}{}", hex::encode(random));
    let names: Vec<&str> = wanted.iter().map(|s| s.as_str()).collect();
    let model = db
        .insert(api_key::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(db.tenant().as_uuid()),
            created_by: Set(creator.user_id),
            name: Set(name.to_owned()),
            key_hash: Set(tokens.api_key_hash(&key)),
            prefix: Set(key[..API_KEY_PREFIX.len() + 8].to_owned()),
            scopes: Set(json!(names)),
            created_at: Set(Utc::now()),
            expires_at: Set(expires_at),
            last_used_at: Set(None),
            revoked_at: Set(None),
        })
        .await?;
    audit::record(
        db,
        audit::Entry {
            actor: Actor::User(creator.user_id),
            action: AuditAction::ApiKeyCreated,
            subject: Some(("api_key", model.id)),
            details: json!({ "name": name, "scopes": names, "expiresAt": expires_at }),
            origin,
        },
    )
    .await?;
    Ok(CreatedKey {
        model,
        key: SecretString::from(key),
    })
}

/// Revokes a key of this tenant (NOT_FOUND for any other); revoking twice is a no-op.
pub async fn revoke<C: ConnectionTrait>(
    db: &Scoped<C>,
    actor: Uuid,
    id: Uuid,
    origin: &Origin,
) -> Result<api_key::Model> {
    db.get::<api_key::Entity>(id).await?;
    let changed = db
        .update_where::<api_key::Entity>(|q| {
            q.col_expr(api_key::Column::RevokedAt, Expr::value(Utc::now()))
                .filter(api_key::Column::Id.eq(id))
                .filter(api_key::Column::RevokedAt.is_null())
        })
        .await?;
    if changed == 1 {
        audit::record(
            db,
            audit::Entry {
                actor: Actor::User(actor),
                action: AuditAction::ApiKeyRevoked,
                subject: Some(("api_key", id)),
                details: json!({}),
                origin,
            },
        )
        .await?;
    }
    db.get::<api_key::Entity>(id).await
}

/// Records use, at most once a minute per key (one conditional UPDATE).
pub async fn touch<C: ConnectionTrait>(db: &Scoped<C>, id: Uuid, now: DateTime<Utc>) -> Result<()> {
    db.update_bookkeeping::<api_key::Entity>(|q| {
        q.col_expr(api_key::Column::LastUsedAt, Expr::value(now))
            .filter(api_key::Column::Id.eq(id))
            .filter(
                api_key::Column::LastUsedAt
                    .is_null()
                    .or(api_key::Column::LastUsedAt.lt(now - TOUCH_EVERY)),
            )
    })
    .await?;
    Ok(())
}

/// Exposes the key text for the one response that shows it.
pub fn reveal(created: &CreatedKey) -> String {
    created.key.expose_secret().to_owned()
}
