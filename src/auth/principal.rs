//! Who is calling. Built once at the edge (HTTP or WebSocket) from a bearer token.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, TransactionTrait,
};
use uuid::Uuid;

use std::time::Duration;

use super::cache;
use crate::{
    accounts::rules::roles_of,
    db::{Lookup, Scoped, TenantDb, wall},
    entity::{api_key, session, user},
    error::{Error, Result},
    identity::{mfa, rules::is_live},
    ids::TenantId,
};

use super::{PLATFORM_ADMIN_SCOPES, Role, Scope, TokenService, scopes_of};

/// What the caller presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Credential {
    /// An access token of this session.
    Session(Uuid),
    /// This API key, acting for the user who created it.
    ApiKey(Uuid),
}

#[derive(Debug, Clone)]
pub struct UserPrincipal {
    pub tenant_id: TenantId,
    /// The user, or for an API key the user who created it.
    pub user_id: Uuid,
    pub credential: Credential,
    pub roles: Vec<Role>,
    pub scopes: BTreeSet<Scope>,
    /// The last MFA verification in this session (sign-in with MFA, or a step-up).
    pub mfa_verified_at: Option<DateTime<Utc>>,
    /// The tenant requires MFA for one of these roles and the user has none yet:
    /// everything but enrolment is refused.
    pub mfa_enrolment_required: bool,
    /// When the credential stops working (the access token's expiry; an API key's
    /// own, if any). A WebSocket is closed then.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default)]
pub enum Principal {
    #[default]
    Anonymous,
    User(UserPrincipal),
}

impl UserPrincipal {
    /// The session behind this call; an API key has none (FORBIDDEN).
    pub fn session(&self) -> Result<Uuid> {
        match self.credential {
            Credential::Session(id) => Ok(id),
            Credential::ApiKey(_) => Err(Error::Forbidden),
        }
    }
}

impl Principal {
    pub fn tenant(&self) -> Option<TenantId> {
        match self {
            Principal::Anonymous => None,
            Principal::User(u) => Some(u.tenant_id),
        }
    }

    pub fn has_scope(&self, scope: Scope) -> bool {
        match self {
            Principal::Anonymous => false,
            Principal::User(u) => u.scopes.contains(&scope),
        }
    }

    pub fn has_any_role(&self, roles: &[Role]) -> bool {
        match self {
            Principal::Anonymous => false,
            Principal::User(u) => u.roles.iter().any(|r| roles.contains(r)),
        }
    }
}

/// Turns an `Authorization` value into a principal: `None` is anonymous; anything
/// present must be a valid bearer token of an active user, or the call is refused.
/// The principal is read from the database once and then reused from the process's
/// cache (`auth::cache`), which every change of sessions, users, roles, MFA or keys
/// empties for its tenant at commit: a removed role or a deactivated user still takes
/// effect on the next request.
pub async fn authenticate_bearer(
    db: &DatabaseConnection,
    tokens: &TokenService,
    authorization: Option<&str>,
) -> Result<Principal> {
    let Some(value) = authorization else {
        return Ok(Principal::Anonymous);
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(Error::Unauthenticated)?;
    if token.starts_with(API_KEY_PREFIX) {
        return authenticate_api_key(db, tokens, token).await;
    }
    let claims = tokens.verify(token)?;
    let tenant = TenantId::from_uuid(claims.tid);
    let expires_at = chrono::DateTime::from_timestamp(claims.exp, 0);
    let cache = tokens.principals();
    let key = cache::Key::Session(claims.sid);
    if let Some(hit) = cache.get(&key, Duration::MAX)
        && hit.principal.tenant_id == tenant
        && hit.principal.user_id == claims.sub
    {
        return Ok(Principal::User(UserPrincipal {
            expires_at,
            ..hit.principal
        }));
    }
    let generation = cache.generation(tenant.as_uuid());
    // The five reads share one transaction: one row-level security setting for all.
    let txn = TenantDb::new(db.clone(), tenant).begin_read().await?;
    // A revoked or expired session ends its access tokens at once.
    let session = txn
        .find_by_id::<session::Entity>(claims.sid)
        .await?
        .filter(|s| s.user_id == claims.sub && is_live(s, chrono::Utc::now()))
        .ok_or(Error::Unauthenticated)?;
    let user = txn
        .find_by_id::<user::Entity>(claims.sub)
        .await?
        .filter(|u| u.is_active)
        .ok_or(Error::Unauthenticated)?;
    let roles = roles_of(&txn, user.id).await?;
    let required = mfa::required_roles(&txn).await?;
    let mfa_enrolment_required =
        roles.iter().any(|r| required.contains(r)) && !mfa::is_enabled(&txn, user.id).await?;
    let scopes = effective_scopes(&txn, &roles).await?;
    txn.commit().await?;
    let principal = UserPrincipal {
        tenant_id: tenant,
        user_id: user.id,
        credential: Credential::Session(session.id),
        scopes,
        roles,
        mfa_verified_at: session.mfa_verified_at,
        mfa_enrolment_required,
        expires_at,
    };
    cache.put(key, principal.clone(), Some(session.expires_at), generation);
    Ok(Principal::User(principal))
}

/// Every API key starts with this.
pub const API_KEY_PREFIX: &str = "sq_live_";

/// An API key acts for its creator with the key's scopes, never more than the
/// creator holds today: a creator who lost a role, or was deactivated, takes the key's
/// powers with them.
async fn authenticate_api_key(
    db: &DatabaseConnection,
    tokens: &TokenService,
    key: &str,
) -> Result<Principal> {
    let now = chrono::Utc::now();
    let hash = tokens.api_key_hash(key);
    let cache = tokens.principals();
    let cache_key = cache::Key::ApiKey(hash.clone());
    if let Some(hit) = cache.get(&cache_key, crate::identity::api_keys::TOUCH_EVERY_STD) {
        if hit.touch_due
            && let Credential::ApiKey(id) = hit.principal.credential
        {
            let scoped = TenantDb::new(db.clone(), hit.principal.tenant_id);
            crate::identity::api_keys::touch(&scoped, id, now).await?;
        }
        return Ok(Principal::User(hit.principal));
    }
    // The edge looks the key up by its keyed hash before any tenant is known (the
    // one read row-level security lets through for it): the row names the tenant.
    let lookup = db.begin().await?;
    wall::allow(&lookup, Lookup::ApiKeyHash(&hash)).await?;
    let tenant = api_key::Entity::find()
        .filter(api_key::Column::KeyHash.eq(hash.as_str()))
        .one(&lookup)
        .await?
        .map(|k| TenantId::from_uuid(k.tenant_id))
        .ok_or(Error::Unauthenticated)?;
    lookup.commit().await?;
    // Everything the principal is built from is read after the tenant's generation
    // is taken, in a transaction of its own (so a fresh view on every backend), the
    // key again included: a change that committed before is seen, one after keeps
    // the result out of the cache.
    let generation = cache.generation(tenant.as_uuid());
    let txn = TenantDb::new(db.clone(), tenant).begin_read().await?;
    let found = txn
        .first::<api_key::Entity>(|q| q.filter(api_key::Column::KeyHash.eq(hash.as_str())))
        .await?
        .filter(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|at| at > now))
        .ok_or(Error::Unauthenticated)?;
    let creator = txn
        .find_by_id::<user::Entity>(found.created_by)
        .await?
        .filter(|u| u.is_active)
        .ok_or(Error::Unauthenticated)?;
    let roles = roles_of(&txn, creator.id).await?;
    let allowed = effective_scopes(&txn, &roles).await?;
    txn.commit().await?;
    let scoped = TenantDb::new(db.clone(), tenant);
    let scopes = crate::identity::api_keys::scopes_of_key(&found)
        .into_iter()
        .filter(|s| allowed.contains(s))
        .collect();
    crate::identity::api_keys::touch(&scoped, found.id, now).await?;
    let principal = UserPrincipal {
        tenant_id: tenant,
        user_id: creator.id,
        credential: Credential::ApiKey(found.id),
        roles,
        scopes,
        mfa_verified_at: None,
        mfa_enrolment_required: false,
        expires_at: found.expires_at,
    };
    cache.put(cache_key, principal.clone(), found.expires_at, generation);
    Ok(Principal::User(principal))
}

/// The scopes `roles` grant in this tenant: the roles' defaults in a business tenant;
/// in the platform tenant, an ADMIN is a PLATFORM_ADMIN with platform scopes only.
async fn effective_scopes<C: ConnectionTrait>(
    db: &Scoped<C>,
    roles: &[Role],
) -> Result<BTreeSet<Scope>> {
    if db.tenant_record().await?.is_platform {
        Ok(if roles.contains(&Role::Admin) {
            PLATFORM_ADMIN_SCOPES.into_iter().collect()
        } else {
            BTreeSet::new()
        })
    } else {
        Ok(scopes_of(roles))
    }
}
