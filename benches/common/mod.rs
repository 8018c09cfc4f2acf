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
    entity::{
        payment::{PaymentPurpose, PaymentStatus},
        tenant,
    },
    identity::rules::{SignInOutcome, sign_in},
    ids::{self, Kind, TenantId},
    money::{Currency, Money},
    payments::{self, Move, NewPayment, Payee, Via, webhook::sign},
};

/// The webhook secret the PostgreSQL benches configure.
pub const WEBHOOK_SECRET: &str = "whsec-bench-0123456789abcdef0123456789";

pub const PASSWORD: &str = "bench-passphrase-long-enough";

/// Runs `bench` on a multi-threaded runtime.
pub fn block_on(bench: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench);
}

/// Runs `bench(server_url, owner_url)` against a fresh PostgreSQL database, dropped
/// afterwards whatever the bench did (a panic is passed on once it is dropped).
pub fn on_postgres<F, Fut>(bench: F)
where
    F: FnOnce(String, String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    block_on(async {
        let pg = PgDatabase::create().await;
        let (url, owner) = (pg.url.clone(), pg.owner_url.clone());
        let result = tokio::spawn(async move { bench(url, owner).await }).await;
        pg.drop_now().await;
        if let Err(err) = result {
            std::panic::resume_unwind(err.into_panic());
        }
    });
}

/// A new tenant `bench` written through `db`, and its scoped handle.
pub async fn bench_tenant(db: &DatabaseConnection) -> (tenant::Model, TenantDb) {
    let txn = sequestra::db::begin_write(db).await.expect("begin");
    let txn = sequestra::db::TenantTxn::bind(txn, TenantId::from_uuid(uuid::Uuid::now_v7()))
        .await
        .expect("enter the new tenant");
    let tenant =
        accounts::create_tenant(&txn, &Slug::parse("bench").expect("slug"), "Bench", false)
            .await
            .expect("tenant");
    txn.commit().await.expect("commit");
    let scoped = TenantDb::new(db.clone(), TenantId::from_uuid(tenant.id));
    (tenant, scoped)
}

/// `n` SENT payments of 1.00 EUR, the `i`th to `payee(i)` with PSP reference
/// `{prefix}_{i}`: (payment global id, reference) each, in order.
pub async fn sent_payments(
    db: &TenantDb,
    n: usize,
    prefix: &str,
    payee: impl Fn(usize) -> Payee,
) -> Vec<(String, String)> {
    let eur = Currency::parse("EUR").expect("EUR");
    let origin = Origin::default();
    let mut references = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(500) {
        let txn = db.begin().await.expect("begin");
        for i in chunk * 500..((chunk + 1) * 500).min(n) {
            let p = payments::record(
                &txn,
                "simulated",
                NewPayment {
                    payee: payee(i),
                    purpose: PaymentPurpose::Transfer,
                    amount: Money::from_minor(100, eur),
                    escrow_id: None,
                    milestone_id: None,
                    // Paid by no user of the tenant: the bench's own funding.
                    source: sequestra::ledger::Account::Funding(uuid::Uuid::nil()),
                },
                Actor::System,
                &origin,
            )
            .await
            .expect("payment");
            let reference = format!("{prefix}_{i}");
            payments::transition(
                &txn,
                p.id,
                Move {
                    to: PaymentStatus::Sent,
                    reference: Some(&reference),
                    failure_reason: None,
                    via: Via::Submit,
                    detail: None,
                },
            )
            .await
            .expect("sent");
            references.push((ids::encode(Kind::Payment, p.id), reference));
        }
        txn.commit().await.expect("commit");
    }
    references
}

/// Posts a signed `payout.settled` for `reference` to the webhook route at `addr`;
/// its JSON answer (the status must be 200).
pub async fn post_settled(
    client: &reqwest::Client,
    addr: &str,
    reference: &str,
) -> serde_json::Value {
    let body = serde_json::json!({
        "id": format!("evt_{reference}"),
        "type": "payout.settled",
        "created": chrono::Utc::now().timestamp(),
        "data": { "reference": reference, "failureReason": null },
    })
    .to_string();
    let t = chrono::Utc::now().timestamp();
    let response = client
        .post(format!("http://{addr}/webhooks/psp"))
        .header("content-type", "application/json")
        .header(
            "Sequestra-Signature",
            format!("t={t},v1={}", sign(WEBHOOK_SECRET, t, body.as_bytes())),
        )
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

/// The real application on PostgreSQL for `clients` concurrent clients: its role and
/// owner URLs, no rate limit, no jobs, warnings only, proofs in a temporary folder
/// (kept as long as the returned guard), and `extra` settings.
pub async fn serve_on_postgres(
    url: &str,
    owner: &str,
    clients: usize,
    extra: &[(&str, &str)],
) -> (Server, tempfile::TempDir) {
    let proofs = tempfile::tempdir().expect("temp dir");
    let pool = (clients + 4).to_string();
    let proof_dir = proofs.path().display().to_string();
    let mut vars = vec![
        ("SEQUESTRA_DATABASE_URL", url),
        ("SEQUESTRA_DATABASE_OWNER_URL", owner),
        ("SEQUESTRA_LISTEN", "127.0.0.1:0"),
        ("SEQUESTRA_RATE_LIMIT_PER_SECOND", "1000000"),
        ("SEQUESTRA_RATE_LIMIT_BURST", "1000000"),
        ("SEQUESTRA_DB_MAX_CONNECTIONS", pool.as_str()),
        ("SEQUESTRA_JOBS_ENABLED", "false"),
        ("SEQUESTRA_PROOF_DIR", proof_dir.as_str()),
        ("SEQUESTRA_LOG", "warn"),
    ];
    vars.extend_from_slice(extra);
    (serve(&vars).await, proofs)
}

/// A graphql-transport-ws socket to `addr`, initialised with `token` (its ack
/// received) and subscribed to `myPaymentUpdates { id status }` as operation "1".
/// The payee's subscription the benches follow (an alias makes it another document).
pub const PAYMENT_UPDATES: &str = "subscription { myPaymentUpdates { id status } }";

pub async fn payment_updates(
    addr: &str,
    token: &str,
    config: Option<tokio_tungstenite::tungstenite::protocol::WebSocketConfig>,
    document: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let mut request = format!("ws://{addr}/graphql/ws")
        .into_client_request()
        .expect("ws request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(request, config, true)
        .await
        .expect("ws connect");
    let init = serde_json::json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    socket
        .send(Message::text(init.to_string()))
        .await
        .expect("init");
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.contains("connection_ack") => break,
            Some(Ok(_)) => continue,
            other => panic!("no ack: {other:?}"),
        }
    }
    let subscribe =
        serde_json::json!({ "id": "1", "type": "subscribe", "payload": { "query": document } });
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .expect("subscribe");
    socket
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
    // The process's subscriber, as `sequestra serve` installs it (the log's filter and
    // format, traces when configured): what a request pays for logging is measured.
    std::mem::forget(sequestra::telemetry::init_tracing(&config));
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
        bench_tenant(&self.db).await
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
            None,
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
