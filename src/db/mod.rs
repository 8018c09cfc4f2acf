//! Connection setup, migrations and the tenant-scoped access layer.

pub(crate) mod scoped;
pub mod wall;

pub use scoped::{Scoped, TenantDb, TenantEntity, TenantTxn};
pub use wall::{Lookup, SharedReads, TenantPool};

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

/// Opens the server's pool and, with `migrate`, brings the schema to head: through
/// the owner's URL when one is configured (the server's role then owns no table and
/// is granted what it uses), else through the server's own. On PostgreSQL it warns
/// when the server's role is not held by row-level security (a superuser, BYPASSRLS).
pub async fn open(cfg: &DatabaseConfig, migrate: bool) -> anyhow::Result<DatabaseConnection> {
    use anyhow::Context;
    let db = connect(cfg)
        .await
        .with_context(|| format!("cannot open the database at {}", cfg.redacted_url()))?;
    if migrate {
        match &cfg.owner_url {
            None => self::migrate(&db)
                .await
                .context("cannot apply migrations")?,
            Some(owner_url) => {
                let mut options = ConnectOptions::new(owner_url.expose_secret().to_owned());
                options.max_connections(1).sqlx_logging(false);
                let owner = Database::connect(options).await.context(
                    "cannot open the database as its owner (SEQUESTRA_DATABASE_OWNER_URL)",
                )?;
                self::migrate(&owner)
                    .await
                    .context("cannot apply migrations")?;
                grant_server_role(&owner, &current_role(&db).await?)
                    .await
                    .context("cannot grant the server's role its privileges")?;
                owner.close().await.ok();
            }
        }
    }
    if db.get_database_backend() == DbBackend::Postgres {
        let unbound = db
            .query_one(sea_orm::Statement::from_string(
                DbBackend::Postgres,
                "SELECT rolsuper OR rolbypassrls AS unbound FROM pg_roles WHERE rolname = current_user",
            ))
            .await?
            .map(|row| row.try_get::<bool>("", "unbound"))
            .transpose()?
            .unwrap_or(false);
        if unbound {
            tracing::warn!(
                "the database role is a superuser or has BYPASSRLS: row-level security does \
                 not hold for it (README, \"Database roles\")"
            );
        }
    }
    Ok(db)
}

async fn current_role(db: &DatabaseConnection) -> Result<String, DbErr> {
    let row = db
        .query_one(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT current_user AS name",
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("no current_user".into()))?;
    row.try_get("", "name")
}

/// What the server's role may do, granted by the owner after each migration: read
/// and write rows (row-level security decides which), read the migration history.
async fn grant_server_role(owner: &DatabaseConnection, role: &str) -> Result<(), DbErr> {
    if current_role(owner).await? == role {
        return Ok(());
    }
    let role = format!("\"{}\"", role.replace('"', "\"\""));
    owner
        .execute_unprepared(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};\n\
             REVOKE INSERT, UPDATE, DELETE ON seaql_migrations FROM {role};\n\
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};"
        ))
        .await?;
    Ok(())
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// Names of migrations not yet applied; empty when the schema is at head. Reads the
/// history only (sea-orm-migration's own check creates its table first, which the
/// server's role may not: it owns nothing on PostgreSQL); no history is no migration.
pub async fn pending_migrations(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    let applied: Vec<String> = match db
        .query_all(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT version FROM seaql_migrations",
        ))
        .await
    {
        Ok(rows) => rows
            .iter()
            .map(|row| row.try_get::<String>("", "version"))
            .collect::<Result<_, _>>()?,
        Err(err) if is_missing_table(&err) => Vec::new(),
        Err(err) => return Err(err),
    };
    Ok(Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .filter(|name| !applied.contains(name))
        .collect())
}

fn is_missing_table(err: &DbErr) -> bool {
    let text = err.to_string();
    text.contains("does not exist") || text.contains("no such table")
}

/// A cheap round trip to prove the database answers.
pub async fn ping(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.execute_unprepared("SELECT 1").await.map(|_| ())
}

/// What the server's pool runs, seen from SeaORM's metric callback (which also gives
/// each statement its trace span when traces are exported): a count of
/// statements (tests assert what an operation costs) and, while a capture is on,
/// their text with the values inlined (the nested-page benchmark replays one page's
/// statements with pgbench). Off, a capture costs one relaxed load per statement.
#[derive(Default)]
pub struct StatementTap {
    count: std::sync::atomic::AtomicU64,
    capturing: std::sync::atomic::AtomicBool,
    captured: std::sync::Mutex<Vec<String>>,
}

impl StatementTap {
    /// Puts a new tap on `db`'s metric callback (replacing any other).
    pub fn attach(db: &mut DatabaseConnection) -> std::sync::Arc<Self> {
        let tap = std::sync::Arc::new(Self::default());
        let seen = tap.clone();
        db.set_metric_callback(move |info| {
            seen.saw(info.statement);
            crate::telemetry::traces::statement(info);
        });
        tap
    }

    fn saw(&self, statement: &sea_orm::Statement) {
        use std::sync::atomic::Ordering::Relaxed;
        self.count.fetch_add(1, Relaxed);
        if self.capturing.load(Relaxed) {
            self.captured
                .lock()
                .expect("tap lock")
                .push(statement.to_string());
        }
    }

    /// Statements run since the server started.
    pub fn count(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Starts or stops keeping the text of each statement run.
    pub fn capture(&self, on: bool) {
        self.capturing
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// The statements kept so far, in the order they ran; the capture starts over.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.captured.lock().expect("tap lock"))
    }
}
