//! The third tenant wall (DESIGN §3): PostgreSQL row-level security.
//!
//! Every tenant table has `FORCE ROW LEVEL SECURITY` and a policy that admits a row
//! only when its `tenant_id` equals the transaction's `sequestra.tenant_id` setting
//! (migration `m20261130_000011_row_level_security`). A connection that has not set it
//! sees no tenant's rows and can write none. The setting lives for one transaction
//! (`set_config(…, true)`), so a pooled connection never carries it to its next user:
//! the scoped handle sets it in every transaction it begins, and a read through the
//! pool ([`TenantPool`]) is its own short transaction that sets it first.
//!
//! A few reads happen before any tenant is known; each has its own setting and a
//! narrow SELECT-only policy ([`Lookup`]). SQLite has no row-level security: there the
//! two application walls (the scoped handle and the composite keys) stand alone, and
//! everything here is a pass-through.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, Statement, TransactionTrait,
};
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use tokio::sync::{MappedMutexGuard, MutexGuard};
use uuid::Uuid;

/// The setting the tenant policies read.
pub const TENANT_SETTING: &str = "sequestra.tenant_id";

/// A read made before the tenant is known, and the one thing it may look up.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// An API key by its keyed hash (`api_keys.key_hash`), at the edge.
    ApiKeyHash(&'a str),
    /// A payment by the PSP's reference (`payments.psp_reference`), for a webhook.
    PspReference(&'a str),
}

impl Lookup<'_> {
    fn setting(&self) -> (&'static str, &str) {
        match self {
            Lookup::ApiKeyHash(hash) => ("sequestra.api_key_hash", hash),
            Lookup::PspReference(reference) => ("sequestra.psp_reference", reference),
        }
    }
}

async fn set_local<C: ConnectionTrait>(conn: &C, name: &str, value: &str) -> Result<(), DbErr> {
    if conn.get_database_backend() == DbBackend::Postgres {
        conn.execute(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT set_config($1, $2, true)",
            [name.into(), value.into()],
        ))
        .await?;
    }
    Ok(())
}

/// Puts the open transaction `txn` inside `tenant`'s wall until it ends.
pub async fn enter<C: ConnectionTrait>(txn: &C, tenant: Uuid) -> Result<(), DbErr> {
    if txn.get_database_backend() == DbBackend::Postgres {
        // A uuid's text is hex and dashes: safe inline, and a simple query saves the
        // parse of a prepared one.
        txn.execute_unprepared(&format!(
            "SELECT set_config('{TENANT_SETTING}', '{tenant}', true)"
        ))
        .await?;
    }
    Ok(())
}

/// Lets the open transaction `txn` see the rows `lookup` names, in any tenant, until
/// it ends.
pub async fn allow<C: ConnectionTrait>(txn: &C, lookup: Lookup<'_>) -> Result<(), DbErr> {
    let (name, value) = lookup.setting();
    set_local(txn, name, value).await
}

/// The pool as one tenant sees it. On PostgreSQL each statement runs in a
/// transaction of its own that enters the tenant's wall first (`BEGIN`, the setting,
/// the statement, `COMMIT`); on SQLite it goes to the pool as it is. Callers that
/// read several rows in a row are better served by one transaction
/// ([`super::TenantDb::begin_read`]); the reads of a GraphQL query over HTTP share one
/// ([`SharedReads`]).
#[derive(Clone)]
pub struct TenantPool {
    pool: DatabaseConnection,
    tenant: Uuid,
    shared: Option<Arc<SharedReads>>,
}

/// One read-only transaction for every read of one GraphQL query (PostgreSQL): each
/// SELECT of a page would otherwise be `BEGIN`, the wall's setting, the SELECT and
/// `COMMIT` (4 round trips per SELECT; shared, one per SELECT and 3 for the page).
/// Armed by the HTTP edge for one request ([`TenantPool::with_shared_reads`])
/// and switched on once the operation is known to be a query
/// ([`TenantPool::share_reads`]): a mutation's reads keep their own transactions (a
/// shared one would hold a second connection across the mutation's own), and so does
/// a socket, whose operations live for as long as it does.
///
/// The transaction is begun at the first read (a request that reads nothing costs
/// nothing), READ COMMITTED as each read was on its own, and read-only (a write sent
/// through it fails rather than being kept or lost with it); it ends when the edge
/// calls [`SharedReads::finish`] (or, if a spawned loader still holds it, when the
/// last handle drops: rolled back).
#[derive(Default)]
pub struct SharedReads {
    on: AtomicBool,
    txn: tokio::sync::Mutex<Option<DatabaseTransaction>>,
}

impl SharedReads {
    /// Ends the shared transaction, if one was begun; reads after this (a loader
    /// still running) go back to a transaction each.
    pub async fn finish(&self) {
        self.on.store(false, Ordering::Release);
        let txn = self.txn.lock().await.take();
        if let Some(txn) = txn
            && let Err(err) = txn.commit().await
        {
            tracing::warn!(error = %err, "ending a query's read transaction failed");
        }
    }
}

impl TenantPool {
    pub fn new(pool: DatabaseConnection, tenant: Uuid) -> Self {
        Self {
            pool,
            tenant,
            shared: None,
        }
    }

    /// This handle's reads may share `shared` once [`Self::share_reads`] says so.
    pub fn with_shared_reads(mut self, shared: Arc<SharedReads>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The operation is a query: its reads share one transaction from now on (when
    /// the handle was armed for it, on PostgreSQL).
    pub fn share_reads(&self) {
        if let Some(shared) = &self.shared
            && self.walled()
        {
            shared.on.store(true, Ordering::Release);
        }
    }

    /// The shared transaction the reads go through, when they share one.
    fn sharing(&self) -> Option<&SharedReads> {
        self.shared
            .as_deref()
            .filter(|shared| shared.on.load(Ordering::Acquire))
    }

    /// The shared transaction, begun now if it was not yet; held by this read until
    /// the guard drops (a connection runs one statement at a time anyway).
    async fn shared_txn<'s>(
        &self,
        shared: &'s SharedReads,
    ) -> Result<MappedMutexGuard<'s, DatabaseTransaction>, DbErr> {
        let mut slot = shared.txn.lock().await;
        if slot.is_none() {
            let txn = self.pool.begin().await?;
            // The wall and read-only, in one round trip.
            txn.execute(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT set_config($1, $2, true), set_config('transaction_read_only', 'on', true)",
                [TENANT_SETTING.into(), self.tenant.to_string().into()],
            ))
            .await?;
            *slot = Some(txn);
        }
        Ok(MutexGuard::map(slot, |txn| {
            txn.as_mut().expect("begun above")
        }))
    }

    pub fn pool(&self) -> &DatabaseConnection {
        &self.pool
    }

    fn walled(&self) -> bool {
        self.pool.get_database_backend() == DbBackend::Postgres
    }

    async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        let txn = self.pool.begin().await?;
        enter(&txn, self.tenant).await?;
        Ok(txn)
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for TenantPool {
    fn get_database_backend(&self) -> DbBackend {
        self.pool.get_database_backend()
    }

    async fn execute(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        if !self.walled() {
            return self.pool.execute(stmt).await;
        }
        let txn = self.begin().await?;
        let done = txn.execute(stmt).await?;
        txn.commit().await?;
        Ok(done)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        if !self.walled() {
            return self.pool.execute_unprepared(sql).await;
        }
        let txn = self.begin().await?;
        let done = txn.execute_unprepared(sql).await?;
        txn.commit().await?;
        Ok(done)
    }

    async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        if !self.walled() {
            return self.pool.query_one(stmt).await;
        }
        if let Some(shared) = self.sharing() {
            return self.shared_txn(shared).await?.query_one(stmt).await;
        }
        let txn = self.begin().await?;
        let row = txn.query_one(stmt).await?;
        txn.commit().await?;
        Ok(row)
    }

    async fn query_all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        if !self.walled() {
            return self.pool.query_all(stmt).await;
        }
        if let Some(shared) = self.sharing() {
            return self.shared_txn(shared).await?.query_all(stmt).await;
        }
        let txn = self.begin().await?;
        let rows = txn.query_all(stmt).await?;
        txn.commit().await?;
        Ok(rows)
    }

    fn support_returning(&self) -> bool {
        self.pool.support_returning()
    }
}
