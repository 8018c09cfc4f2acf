//! Connection setup, migrations and the tenant-scoped access layer.

mod scoped;

pub use scoped::{Scoped, TenantDb, TenantEntity, TenantTxn};

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, SqlxSqliteConnector, TransactionTrait,
    sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use secrecy::ExposeSecret;
use std::str::FromStr;

use crate::config::DatabaseConfig;

/// Opens a pool for the configured URL. SQLite gets WAL, foreign keys, a busy timeout
/// and full fsync (it holds money); PostgreSQL gets the pool settings.
pub async fn connect(cfg: &DatabaseConfig) -> Result<DatabaseConnection, DbErr> {
    let url = cfg.url.expose_secret();
    if cfg.is_sqlite() {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::Internal(e.to_string())))?
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(cfg.sqlite_busy_timeout)
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(cfg.max_connections)
            .min_connections(cfg.min_connections)
            .acquire_timeout(cfg.acquire_timeout)
            .idle_timeout(cfg.idle_timeout)
            .connect_with(options)
            .await
            .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::Internal(e.to_string())))?;
        Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
    } else {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(cfg.max_connections)
            .min_connections(cfg.min_connections)
            .connect_timeout(cfg.connect_timeout)
            .acquire_timeout(cfg.acquire_timeout)
            .idle_timeout(cfg.idle_timeout)
            .sqlx_logging(false);
        Database::connect(options).await
    }
}

/// Starts a transaction that will write. On SQLite the first statement takes the
/// write lock at once (a zero-row UPDATE, which behaves like `BEGIN IMMEDIATE`):
/// otherwise a transaction that reads before it writes can lose the lock upgrade to a
/// concurrent writer and fail with "database is locked" instead of waiting its turn
/// under the busy timeout. PostgreSQL needs nothing.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let txn = db.begin().await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        txn.execute_unprepared("UPDATE tenants SET id = id WHERE 0")
            .await?;
    }
    Ok(txn)
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// Names of migrations not yet applied; empty when the schema is at head.
pub async fn pending_migrations(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    Ok(Migrator::get_pending_migrations(db)
        .await?
        .iter()
        .map(|m| m.name().to_owned())
        .collect())
}

/// A cheap round trip to prove the database answers.
pub async fn ping(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.execute_unprepared("SELECT 1").await.map(|_| ())
}
