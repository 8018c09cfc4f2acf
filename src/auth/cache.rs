//! Principals kept between requests, so an authenticated request reads nothing to
//! know who calls (DESIGN §3 still holds: every change that could narrow a principal
//! drops it before the next request).
//!
//! A principal is cached by its session (access tokens) or by its key's hash (API
//! keys) once it was read from the database. It is dropped:
//! - when anything a principal is built from changes in its tenant (a session, a
//!   user, roles, MFA, an API key): every write of those rows through the scoped layer
//!   publishes [`Update::Access`](crate::events::Update) at commit, which this process
//!   applies at once (before the commit returns) and every other process applies when
//!   its LISTEN delivers it (milliseconds);
//! - when the update listener lost its connection (what was missed is unknown: all);
//! - after `ttl` in any case (`SEQUESTRA_PRINCIPAL_CACHE_SECS`), the bound for a
//!   change no notification reported (a write outside a server process on SQLite);
//! - when its session or key expires.
//!
//! A load that raced an invalidation of its tenant is not cached: the tenant's
//! generation, taken before the principal's rows are read, must be unchanged when the
//! result is stored.
//! the read must be unchanged when the result is stored).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::UserPrincipal;

/// Entries kept at most; past it the cache starts over (a bound, not a policy).
const MAX_ENTRIES: usize = 100_000;

/// What a principal is cached by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Session(Uuid),
    /// The API key's keyed hash.
    ApiKey(String),
}

struct Entry {
    principal: UserPrincipal,
    /// The session's or key's own end, if any.
    valid_until: Option<DateTime<Utc>>,
    cached_at: Instant,
    /// When the API key's use was last recorded (`last_used_at`).
    touched_at: Instant,
}

pub struct PrincipalCache {
    ttl: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
    /// Per tenant, bumped by its invalidations; a drop of everything bumps all of them
    /// at once by clearing the map under a new `epoch`.
    tenants: Mutex<(u64, HashMap<Uuid, u64>)>,
}

/// The invalidations of one tenant a load must not have raced, taken before it reads:
/// (tenant, epoch of the drops of everything, the tenant's own count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(Uuid, u64, u64);

/// A cached principal, and whether its key's use is due to be recorded again.
pub struct Hit {
    pub principal: UserPrincipal,
    pub touch_due: bool,
}

/// Every cache of this process, so a write through the scoped layer drops principals
/// in all of them however it reached the database (a handle with or without the bus).
static CACHES: Mutex<Vec<Weak<PrincipalCache>>> = Mutex::new(Vec::new());

/// Drops the principals of `tenant` (`None`: all) from every cache of this process.
pub fn invalidate_local(tenant: Option<Uuid>) {
    let mut caches = CACHES.lock().expect("principal caches lock");
    caches.retain(|cache| match cache.upgrade() {
        Some(cache) => {
            cache.invalidate(tenant);
            true
        }
        None => false,
    });
}

impl PrincipalCache {
    /// `ttl` zero: nothing is cached.
    pub fn new(ttl: Duration) -> Arc<Self> {
        let cache = Arc::new(Self {
            ttl,
            entries: Mutex::default(),
            tenants: Mutex::default(),
        });
        CACHES
            .lock()
            .expect("principal caches lock")
            .push(Arc::downgrade(&cache));
        cache
    }

    /// Taken before a principal of `tenant` is read from the database; hand it to
    /// [`Self::put`].
    pub fn generation(&self, tenant: Uuid) -> Generation {
        let tenants = self.tenants.lock().expect("principal cache lock");
        let count = tenants.1.get(&tenant).copied().unwrap_or(0);
        Generation(tenant, tenants.0, count)
    }

    pub fn get(&self, key: &Key, touch_every: Duration) -> Option<Hit> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut entries = self.entries.lock().expect("principal cache lock");
        let entry = entries.get_mut(key)?;
        let now = Instant::now();
        if now.duration_since(entry.cached_at) >= self.ttl
            || entry.valid_until.is_some_and(|until| until <= Utc::now())
        {
            entries.remove(key);
            return None;
        }
        let touch_due = now.duration_since(entry.touched_at) >= touch_every;
        if touch_due {
            entry.touched_at = now;
        }
        Some(Hit {
            principal: entry.principal.clone(),
            touch_due,
        })
    }

    /// Keeps `principal` unless an invalidation happened since `generation` was taken.
    pub fn put(
        &self,
        key: Key,
        principal: UserPrincipal,
        valid_until: Option<DateTime<Utc>>,
        generation: Generation,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().expect("principal cache lock");
        // Checked under the lock invalidations take too: none can slip in between.
        if self.generation(generation.0) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        let now = Instant::now();
        entries.insert(
            key,
            Entry {
                principal,
                valid_until,
                cached_at: now,
                touched_at: now,
            },
        );
    }

    /// Drops the principals of `tenant` (`None`: of every tenant).
    pub fn invalidate(&self, tenant: Option<Uuid>) {
        let mut entries = self.entries.lock().expect("principal cache lock");
        let mut tenants = self.tenants.lock().expect("principal cache lock");
        match tenant {
            Some(tenant) => {
                *tenants.1.entry(tenant).or_default() += 1;
                entries.retain(|_, e| e.principal.tenant_id.as_uuid() != tenant);
            }
            None => {
                tenants.0 += 1;
                tenants.1.clear();
                entries.clear();
            }
        }
    }
}
