//! The tenant-scoped access layer (DESIGN §3).
//!
//! Resolvers never hold a raw connection. They get a [`TenantDb`] built from the
//! request's principal: every read, update and delete through it carries
//! `tenant_id = <principal's tenant>`, and every insert is stamped with it. A row of
//! another tenant is therefore indistinguishable from a missing one: `NOT_FOUND`.

use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DeleteMany, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    Select, UpdateMany,
};
use std::sync::{Arc, Mutex};

use sea_orm::{DbBackend, Statement};

use super::wall::{self, TenantPool};
use uuid::Uuid;

use crate::{
    entity::{audit_log, tenant},
    error::{Error, Result},
    events::{self, Bus, Update},
    ids::TenantId,
};

/// An entity whose rows belong to one tenant.
pub trait TenantEntity: EntityTrait {
    /// The `tenant_id` column.
    const TENANT: Self::Column;
    /// The column `get` looks rows up by.
    const ID: Self::Column;
    /// Whether a principal is built from these rows (sessions, users, roles, MFA, API
    /// keys): a write through the scoped layer then tells every process to drop the
    /// tenant's cached principals ([`crate::auth::cache`]), when it commits.
    const GUARDS_ACCESS: bool = false;
}

/// A connection (or transaction) bound to one tenant.
#[derive(Clone)]
pub struct Scoped<C> {
    conn: C,
    tenant: TenantId,
    /// Where this process's subscribers listen (none: the CLI, the demo seeder).
    bus: Option<Bus>,
    /// Updates published in this transaction, sent when it commits.
    outbox: Arc<Mutex<Vec<Update>>>,
    /// Over the pool, each statement commits on its own: what it publishes goes out
    /// at once.
    autocommit: bool,
    /// The idempotency claim this transaction holds, if it runs under one
    /// ([`crate::idempotency`]), and the answer stored with it so far.
    pub(crate) claim: Arc<Mutex<Option<Claim>>>,
    /// Audit rows written in this transaction: linked into the tenant's hash chain and
    /// inserted when it commits ([`crate::audit::append`]), so the chain's head is
    /// locked only for the moment before the commit.
    audit: Arc<Mutex<Vec<audit_log::Model>>>,
    /// The audit chain's lanes this transaction appended to, released when it ends.
    lanes: Arc<Mutex<Vec<crate::audit::Lease>>>,
    /// Over the pool: the pool itself, for the transaction an audit row needs.
    pool: Option<DatabaseConnection>,
}

/// An idempotency key claimed in a transaction: its row, and the answer already
/// written to it (`None` until then).
pub(crate) struct Claim {
    pub id: Uuid,
    pub answer: Option<serde_json::Value>,
}

/// The scoped handle over the pool, as resolvers get it.
pub type TenantDb = Scoped<TenantPool>;
/// The scoped handle inside a transaction; rules take `&Scoped<impl ConnectionTrait>`.
pub type TenantTxn = Scoped<DatabaseTransaction>;

impl TenantDb {
    pub fn new(conn: DatabaseConnection, tenant: TenantId) -> Self {
        Self {
            conn: TenantPool::new(conn.clone(), tenant.as_uuid()),
            tenant,
            bus: None,
            outbox: Arc::default(),
            claim: Arc::default(),
            audit: Arc::default(),
            lanes: Arc::default(),
            pool: Some(conn),
            autocommit: true,
        }
    }

    /// This handle's reads may share one transaction ([`super::wall::SharedReads`]),
    /// once [`Self::share_reads`] is called: for one GraphQL request over HTTP.
    pub fn with_shared_reads(mut self, shared: Arc<super::wall::SharedReads>) -> Self {
        self.conn = self.conn.with_shared_reads(shared);
        self
    }

    /// The operation is a query: its reads share the transaction the handle was armed
    /// with (nothing otherwise, and nothing on SQLite).
    pub fn share_reads(&self) {
        self.conn.share_reads();
    }

    /// Starts a (write) transaction that stays bound to the same tenant, inside its
    /// row-level security wall.
    pub async fn begin(&self) -> Result<TenantTxn> {
        let txn = super::begin_write(self.conn.pool()).await?;
        wall::enter(&txn, self.tenant.as_uuid()).await?;
        Ok(self.in_txn(txn))
    }

    /// Starts a transaction for several reads in a row (one wall setting for all of
    /// them instead of one per statement); it takes no write lock on SQLite.
    pub async fn begin_read(&self) -> Result<TenantTxn> {
        let txn = sea_orm::TransactionTrait::begin(self.conn.pool()).await?;
        wall::enter(&txn, self.tenant.as_uuid()).await?;
        Ok(self.in_txn(txn))
    }

    /// Starts a read-only transaction that sees one snapshot of the database for all
    /// its statements (REPEATABLE READ on PostgreSQL; a SQLite read transaction is one
    /// already): for checks that compare several tables (`ledger verify`).
    pub async fn begin_snapshot(&self) -> Result<TenantTxn> {
        let txn = if self.conn.pool().get_database_backend() == DbBackend::Postgres {
            sea_orm::TransactionTrait::begin_with_config(
                self.conn.pool(),
                Some(sea_orm::IsolationLevel::RepeatableRead),
                Some(sea_orm::AccessMode::ReadOnly),
            )
            .await?
        } else {
            sea_orm::TransactionTrait::begin(self.conn.pool()).await?
        };
        wall::enter(&txn, self.tenant.as_uuid()).await?;
        Ok(self.in_txn(txn))
    }

    fn in_txn(&self, txn: DatabaseTransaction) -> TenantTxn {
        Scoped {
            conn: txn,
            tenant: self.tenant,
            bus: self.bus.clone(),
            outbox: Arc::default(),
            claim: Arc::default(),
            audit: Arc::default(),
            lanes: Arc::default(),
            pool: None,
            autocommit: false,
        }
    }
}

/// `pg_notify` of each of `updates`, in order, on the updates channel, in one
/// statement however many there are (a release publishes five): delivered to every
/// process that LISTENs when the statement's transaction commits.
async fn notify<C: ConnectionTrait>(conn: &C, updates: &[Update]) -> Result<()> {
    if updates.is_empty() {
        return Ok(());
    }
    let payloads = updates
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::internal(anyhow::anyhow!(e)))?;
    conn.execute(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, u.payload) \
         FROM json_array_elements_text($2::json) WITH ORDINALITY AS u(payload, n) ORDER BY u.n",
        [
            events::CHANNEL.into(),
            serde_json::to_string(&payloads)
                .map_err(|e| Error::internal(anyhow::anyhow!(e)))?
                .into(),
        ],
    ))
    .await?;
    Ok(())
}

impl TenantTxn {
    /// Binds a transaction the caller opened to `tenant` and puts it inside the
    /// tenant's row-level security wall (used where the tenant is learnt inside the
    /// transaction: a new tenant, a webhook's payment).
    pub async fn bind(txn: DatabaseTransaction, tenant: TenantId) -> Result<Self> {
        wall::enter(&txn, tenant.as_uuid()).await?;
        Ok(Self {
            conn: txn,
            tenant,
            bus: None,
            outbox: Arc::default(),
            claim: Arc::default(),
            audit: Arc::default(),
            lanes: Arc::default(),
            pool: None,
            autocommit: false,
        })
    }

    /// Rolls back now (rather than when dropped), so the write lock is free for what
    /// the caller writes next outside the transaction.
    pub async fn rollback(self) -> Result<()> {
        self.conn.rollback().await?;
        Ok(())
    }

    /// Commits, and publishes what the transaction published (see `events`): on
    /// PostgreSQL as notifications inside the transaction, delivered by its commit;
    /// on SQLite to the local bus once committed.
    pub async fn commit(self) -> Result<()> {
        let rows = std::mem::take(&mut *self.audit.lock().expect("audit lock"));
        let lease = crate::audit::append(&self.conn, self.tenant.as_uuid(), rows).await?;
        let mut lanes = std::mem::take(&mut *self.lanes.lock().expect("lanes lock"));
        lanes.extend(lease);
        let updates = std::mem::take(&mut *self.outbox.lock().expect("outbox lock"));
        let postgres = self.conn.get_database_backend() == DbBackend::Postgres;
        if postgres {
            notify(&self.conn, &updates).await?;
        }
        self.conn.commit().await?;
        lanes.into_iter().for_each(crate::audit::Lease::committed);
        // A change of access takes effect in this process before the commit returns
        // (other processes: when their LISTEN delivers it).
        for update in &updates {
            if let Update::Access { tenant_id } = update {
                crate::auth::cache::invalidate_local(*tenant_id);
            }
        }
        if !postgres && let Some(bus) = &self.bus {
            bus.deliver(updates);
        }
        Ok(())
    }
}

impl<C> Scoped<C> {
    /// Hands this handle (and the transactions it begins) the process's bus.
    pub fn with_bus(mut self, bus: Option<Bus>) -> Self {
        self.bus = bus;
        self
    }

    /// The connection without the tenant filter, for platform tables that have no
    /// tenant (the webhook deduplication table) written in a tenant's transaction.
    pub(crate) fn unscoped(&self) -> &C {
        &self.conn
    }

    /// Keeps `row` for the tenant's audit chain: appended when this transaction commits
    /// (nothing on rollback); over the pool, at once in a transaction of its own.
    pub(crate) async fn audit(&self, row: audit_log::Model) -> Result<()> {
        if !self.autocommit {
            self.audit.lock().expect("audit lock").push(row);
            return Ok(());
        }
        let pool = self.pool.as_ref().ok_or_else(|| {
            Error::internal(anyhow::anyhow!("an autocommit handle without its pool"))
        })?;
        let txn = super::begin_write(pool).await?;
        wall::enter(&txn, self.tenant.as_uuid()).await?;
        let lease = crate::audit::append(&txn, self.tenant.as_uuid(), vec![row]).await?;
        txn.commit().await?;
        lease.into_iter().for_each(crate::audit::Lease::committed);
        Ok(())
    }

    /// Appends the audit rows written so far to the tenant's chain now rather than at
    /// the commit: for a rule about to take a contended row lock (a purchase's budget
    /// UPDATE), so that the lock is not held across the append. The chain's lane stays
    /// held until the commit, so the lane still follows commit order.
    pub(crate) async fn append_audit_now(&self) -> Result<()>
    where
        C: ConnectionTrait,
    {
        let rows = std::mem::take(&mut *self.audit.lock().expect("audit lock"));
        let lease = crate::audit::append(&self.conn, self.tenant.as_uuid(), rows).await?;
        self.lanes.lock().expect("lanes lock").extend(lease);
        Ok(())
    }

    /// Publishes `update` when this transaction commits (nothing on rollback).
    pub fn publish(&self, update: Update) {
        self.outbox.lock().expect("outbox lock").push(update);
    }
}

impl<C: ConnectionTrait> Scoped<C> {
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    fn select<E: TenantEntity>(&self) -> Select<E> {
        E::find().filter(E::TENANT.eq(self.tenant.as_uuid()))
    }

    /// The row with this id in this tenant; another tenant's row is `NotFound`.
    pub async fn get<E: TenantEntity>(&self, id: Uuid) -> Result<E::Model> {
        self.find_by_id::<E>(id).await?.ok_or(Error::NotFound)
    }

    pub async fn find_by_id<E: TenantEntity>(&self, id: Uuid) -> Result<Option<E::Model>> {
        Ok(self
            .select::<E>()
            .filter(E::ID.eq(id))
            .one(&self.conn)
            .await?)
    }

    /// The row with this id in this tenant, locked for the rest of the transaction
    /// (`SELECT … FOR UPDATE` on PostgreSQL), so a rule that decides on its state is
    /// alone with it until it commits. On SQLite a write transaction already holds
    /// the database's write lock. Outside a transaction it is a plain read.
    pub async fn get_for_update<E: TenantEntity>(&self, id: Uuid) -> Result<E::Model> {
        self.for_update(self.select::<E>().filter(E::ID.eq(id)))
            .one(&self.conn)
            .await?
            .ok_or(Error::NotFound)
    }

    /// `query … FOR UPDATE` on PostgreSQL; SQLite has no row locks (its write
    /// transactions hold the database's).
    fn for_update<E: EntityTrait>(&self, query: Select<E>) -> Select<E> {
        if self.conn.get_database_backend() == DbBackend::Postgres {
            sea_orm::QuerySelect::lock_exclusive(query)
        } else {
            query
        }
    }

    /// Rows of this tenant; `query` adds filters, order and limits to a select that
    /// already carries the tenant predicate (filters only ever narrow it).
    pub async fn list<E: TenantEntity>(
        &self,
        query: impl FnOnce(Select<E>) -> Select<E>,
    ) -> Result<Vec<E::Model>> {
        Ok(query(self.select::<E>()).all(&self.conn).await?)
    }

    pub async fn first<E: TenantEntity>(
        &self,
        query: impl FnOnce(Select<E>) -> Select<E>,
    ) -> Result<Option<E::Model>> {
        Ok(query(self.select::<E>()).one(&self.conn).await?)
    }

    pub async fn count<E: TenantEntity>(
        &self,
        query: impl FnOnce(Select<E>) -> Select<E>,
    ) -> Result<u64>
    where
        E::Model: Sync,
    {
        Ok(query(self.select::<E>()).count(&self.conn).await?)
    }

    /// `model` with `tenant_id` set to this tenant, whatever it held before.
    fn ours<A>(&self, mut model: A) -> A
    where
        A: ActiveModelTrait,
        A::Entity: TenantEntity,
    {
        model.set(
            <A::Entity as TenantEntity>::TENANT,
            self.tenant.as_uuid().into(),
        );
        model
    }

    /// Inserts `model` with `tenant_id` set to this tenant, whatever it held before.
    pub async fn insert<A>(&self, model: A) -> Result<<A::Entity as EntityTrait>::Model>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        A::Entity: TenantEntity,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        let inserted = self.ours(model).insert(&self.conn).await?;
        self.changed::<A::Entity>(1).await?;
        Ok(inserted)
    }

    /// Inserts `models` in one statement, each with `tenant_id` set to this tenant.
    pub async fn insert_many<A>(&self, models: impl IntoIterator<Item = A>) -> Result<()>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        A::Entity: TenantEntity,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        let models: Vec<A> = models.into_iter().map(|m| self.ours(m)).collect();
        let rows = models.len() as u64;
        if rows == 0 {
            return Ok(());
        }
        <A::Entity as EntityTrait>::insert_many(models)
            .exec_without_returning(&self.conn)
            .await?;
        self.changed::<A::Entity>(rows).await?;
        Ok(())
    }

    /// `INSERT … ON CONFLICT (conflict) DO NOTHING` with `tenant_id` set to this
    /// tenant: `true` when the row went in, `false` when a row with the same
    /// `conflict` columns already existed (on PostgreSQL, once the transaction that
    /// wrote it committed). One round trip, where a read then an insert is two.
    pub async fn insert_or_skip<A>(
        &self,
        model: A,
        conflict: impl IntoIterator<Item = <A::Entity as EntityTrait>::Column>,
    ) -> Result<bool>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        A::Entity: TenantEntity,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        let inserted = <A::Entity as EntityTrait>::insert(self.ours(model))
            .on_conflict(
                sea_orm::sea_query::OnConflict::columns(conflict)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.conn)
            .await?;
        self.changed::<A::Entity>(inserted).await?;
        Ok(inserted == 1)
    }

    /// After a write of `rows` rows of `E`: when principals are built from `E`, every
    /// process drops this tenant's cached ones (at commit; at once over the pool).
    async fn changed<E: TenantEntity>(&self, rows: u64) -> Result<()> {
        if !E::GUARDS_ACCESS || rows == 0 {
            return Ok(());
        }
        let update = Update::Access {
            tenant_id: Some(self.tenant.as_uuid()),
        };
        if !self.autocommit {
            let mut outbox = self.outbox.lock().expect("outbox lock");
            if !outbox.iter().any(|u| matches!(u, Update::Access { .. })) {
                outbox.push(update);
            }
            return Ok(());
        }
        if self.conn.get_database_backend() == DbBackend::Postgres {
            notify(&self.conn, std::slice::from_ref(&update)).await?;
        }
        crate::auth::cache::invalidate_local(Some(self.tenant.as_uuid()));
        Ok(())
    }

    /// An UPDATE limited to this tenant; `query` sets values and narrows further.
    /// Returns the number of rows changed.
    pub async fn update_where<E: TenantEntity>(
        &self,
        query: impl FnOnce(UpdateMany<E>) -> UpdateMany<E>,
    ) -> Result<u64> {
        let update = E::update_many().filter(E::TENANT.eq(self.tenant.as_uuid()));
        let rows = query(update).exec(&self.conn).await?.rows_affected;
        self.changed::<E>(rows).await?;
        Ok(rows)
    }

    /// An UPDATE of bookkeeping columns no principal is built from (an API key's
    /// `last_used_at`): like [`Scoped::update_where`], without dropping cached
    /// principals.
    pub async fn update_bookkeeping<E: TenantEntity>(
        &self,
        query: impl FnOnce(UpdateMany<E>) -> UpdateMany<E>,
    ) -> Result<u64> {
        let update = E::update_many().filter(E::TENANT.eq(self.tenant.as_uuid()));
        Ok(query(update).exec(&self.conn).await?.rows_affected)
    }

    /// Like [`Scoped::update_where`], answering the changed rows as the UPDATE left
    /// them (`UPDATE … RETURNING`): a rule never reads back what it just wrote.
    pub async fn update_returning<E: TenantEntity>(
        &self,
        query: impl FnOnce(UpdateMany<E>) -> UpdateMany<E>,
    ) -> Result<Vec<E::Model>> {
        let update = E::update_many().filter(E::TENANT.eq(self.tenant.as_uuid()));
        let rows = query(update).exec_with_returning(&self.conn).await?;
        self.changed::<E>(rows.len() as u64).await?;
        Ok(rows)
    }

    /// The one way a state moves (escrows, milestones, mandates, payments): a single
    /// `UPDATE … SET <status> = to … WHERE id = $id AND tenant_id = $t AND <status> IN
    /// (from) RETURNING *`, never a read, a decision in Rust, and a blind write. `set`
    /// adds further column changes (and conditions) to the same statement. Answers the
    /// row as moved, or `None` when this call did not move it: it was not in an
    /// allowed state (another writer moved it first), which the caller turns into its
    /// typed answer.
    pub async fn transition<E: TenantEntity>(
        &self,
        id: Uuid,
        status: E::Column,
        from: &[&str],
        to: &str,
        set: impl FnOnce(UpdateMany<E>) -> UpdateMany<E>,
    ) -> Result<Option<E::Model>> {
        let moved = self
            .update_returning::<E>(|q| {
                set(q
                    .col_expr(status, sea_orm::sea_query::Expr::value(to))
                    .filter(E::ID.eq(id))
                    .filter(status.is_in(from.iter().copied())))
            })
            .await?;
        Ok(moved.into_iter().next())
    }

    /// A DELETE limited to this tenant. Returns the number of rows deleted.
    pub async fn delete_where<E: TenantEntity>(
        &self,
        query: impl FnOnce(DeleteMany<E>) -> DeleteMany<E>,
    ) -> Result<u64> {
        let delete = E::delete_many().filter(E::TENANT.eq(self.tenant.as_uuid()));
        let rows = query(delete).exec(&self.conn).await?.rows_affected;
        self.changed::<E>(rows).await?;
        Ok(rows)
    }

    /// Locks this tenant's row for the rest of the transaction (PostgreSQL; SQLite's
    /// write transactions are serialized already): rules that keep a tenant-wide
    /// invariant, such as "at least one active ADMIN", take it before they read the
    /// rows the invariant is about, so two such changes never decide on the same view.
    pub async fn lock_tenant(&self) -> Result<()> {
        if self.conn.get_database_backend() == DbBackend::Postgres {
            self.for_update(tenant::Entity::find_by_id(self.tenant.as_uuid()))
                .one(&self.conn)
                .await?
                .ok_or(Error::NotFound)?;
        }
        Ok(())
    }

    /// This tenant's own record.
    pub async fn tenant_record(&self) -> Result<tenant::Model> {
        tenant::Entity::find_by_id(self.tenant.as_uuid())
            .one(&self.conn)
            .await?
            .ok_or(Error::NotFound)
    }
}
