//! What the benchmarks share: a fresh PostgreSQL database, the real server on a
//! loopback port, a bench tenant and a signed-in token. Each bench includes this
//! file with `mod common;` (a bench is its own crate).

#![allow(dead_code)] // Each bench uses its own part of this.

use std::{future::Future, net::SocketAddr, time::Duration};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use sequestra::{
    Application,
    accounts::rules as accounts,
    audit::{Actor, Origin},
    auth::{Role, TokenService, password},
    config::Config,
    db::TenantDb,
    domain::{Email, Slug},
    entity::tenant,
    identity::rules::{SignInOutcome, sign_in},
    ids::TenantId,
};

pub const PASSWORD: &str = "bench-passphrase-long-enough";

/// Runs `bench` on a multi-threaded runtime.
pub fn block_on(bench: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench);
}

/// The `p` quantile of sorted samples, in milliseconds.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// A new PostgreSQL database (from `SEQUESTRA_BENCH_DATABASE_URL`, default
/// `postgres://postgres@127.0.0.1:5432/postgres`), dropped by [`PgDatabase::drop_now`].
pub struct PgDatabase {
    admin: DatabaseConnection,
    name: String,
    /// The server's role (no superuser, no BYPASSRLS: row-level security holds, as in
    /// a deployment).
    pub url: String,
    /// The owner, who migrates.
    pub owner_url: String,
}

const BENCH_ROLE: &str = "sequestra_server_bench";

impl PgDatabase {
    pub async fn create() -> Self {
        let admin_url = std::env::var("SEQUESTRA_BENCH_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("sequestra_bench_{}", uuid::Uuid::now_v7().simple());
        let admin = Database::connect(&admin_url)
            .await
            .expect("connect to PostgreSQL");
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create the bench database");
        let base = admin_url.split('?').next().unwrap_or(&admin_url);
        let prefix = base.rsplit_once('/').map(|(p, _)| p).unwrap_or(base);
        let owner_url = format!("{prefix}/{name}");
        admin
            .execute_unprepared(&format!(
                "DO $$ BEGIN \
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{BENCH_ROLE}') THEN \
                     CREATE ROLE {BENCH_ROLE} LOGIN PASSWORD '{BENCH_ROLE}'; \
                   END IF; END $$"
            ))
            .await
            .expect("create the bench server role");
        let (scheme, rest) = owner_url.split_once("://").expect("scheme");
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let url = format!("{scheme}://{BENCH_ROLE}:{BENCH_ROLE}@{host}");
        Self {
            admin,
            name,
            url,
            owner_url,
        }
    }

    pub async fn drop_now(self) {
        self.admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await
            .ok();
    }
}

/// The running server.
pub struct Server {
    pub addr: SocketAddr,
    pub db: DatabaseConnection,
    pub tokens: TokenService,
    /// What the server's pool runs (a count; the text while capturing).
    pub statements: std::sync::Arc<sequestra::db::StatementTap>,
}

/// Starts the real application with `vars` as its whole environment.
pub async fn serve(vars: &[(&str, &str)]) -> Server {
    let config = Config::from_lookup(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    })
    .expect("config");
    let app = Application::build(config).await.expect("app");
    let server = Server {
        addr: app.local_addr().expect("addr"),
        db: app.db().clone(),
        tokens: app.tokens().clone(),
        statements: app.statements(),
    };
    tokio::spawn(app.run_until(std::future::pending()));
    server
}

impl Server {
    /// The `bench` tenant and its scoped handle.
    pub async fn tenant(&self) -> (tenant::Model, TenantDb) {
        let txn = sequestra::db::begin_write(&self.db).await.expect("begin");
        let txn = sequestra::db::TenantTxn::bind(txn, TenantId::from_uuid(uuid::Uuid::now_v7()))
            .await
            .expect("enter the new tenant");
        let tenant =
            accounts::create_tenant(&txn, &Slug::parse("bench").expect("slug"), "Bench", false)
                .await
                .expect("tenant");
        txn.commit().await.expect("commit");
        let scoped = TenantDb::new(self.db.clone(), TenantId::from_uuid(tenant.id));
        (tenant, scoped)
    }

    /// Users with [`PASSWORD`], one per `(email, role)`; their ids.
    pub async fn users(&self, db: &TenantDb, users: &[(&str, Role)]) -> Vec<uuid::Uuid> {
        let hash = password::hash(PASSWORD.to_owned().into())
            .await
            .expect("hash");
        let mut ids = Vec::new();
        for (email, role) in users {
            let user = accounts::create_user(
                db,
                Actor::System,
                &Origin::default(),
                &Email::parse(email).expect("email"),
                hash.clone(),
                &[*role],
            )
            .await
            .expect("user");
            ids.push(user.id);
        }
        ids
    }

    /// An access token for `email` of the `bench` tenant.
    pub async fn sign_in(&self, email: &str) -> String {
        match sign_in(
            &self.db,
            &self.tokens,
            &Origin::default(),
            "bench",
            email,
            PASSWORD.to_owned().into(),
        )
        .await
        .expect("sign in")
        {
            SignInOutcome::Signed(issued) => issued.access.token,
            SignInOutcome::MfaRequired(_) => unreachable!("no MFA here"),
        }
    }
}
