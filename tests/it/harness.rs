//! The one test harness: every integration test starts from `TestApp::spawn`, which
//! runs the real application on a real port against a fresh database — a new SQLite
//! file, or a new PostgreSQL database created from `SEQUESTRA_TEST_DATABASE_URL` and
//! dropped afterwards.

use std::{collections::HashMap, io::Write, net::SocketAddr};

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, EntityTrait};
use sequestra::{
    Application,
    accounts::rules,
    audit::{Actor, Origin},
    auth::{Role, TokenService, password},
    config::Config,
    db::{self, TenantDb},
    domain::{Email, Slug},
    ids::TenantId,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

/// The PSP webhook secrets every test app accepts: the first signs, the second is
/// the one being rotated out.
pub const WEBHOOK_SECRETS: [&str; 2] = [
    "whsec-current-7f3a91c2e4b85d06f1a2c3e4d5b6a7980",
    "whsec-retiring-2b8e4f6a0c1d3e5f7a9b0c2d4e6f8a1b3",
];

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs `$name(app)` once per backend: `$name::sqlite` and `$name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::harness::TestApp::spawn($crate::harness::Backend::Sqlite)
                    .await
                    .expect("sqlite always runs");
                let books = app.books();
                super::$name(app).await;
                books.check().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = $crate::harness::TestApp::spawn($crate::harness::Backend::Postgres).await {
                    let books = app.books();
                    super::$name(app).await;
                    books.check().await;
                } else {
                    $crate::harness::skipped(concat!(module_path!(), "::postgres"));
                }
            }
        }
    )*};
}

/// Like `on_both_backends!`, each app started with extra `SEQUESTRA_*` settings:
/// `on_both_backends_with!(name, &[("SEQUESTRA_…", "…")])`.
#[macro_export]
macro_rules! on_both_backends_with {
    ($name:ident, $settings:expr) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::harness::TestApp::spawn_with(
                    $crate::harness::Backend::Sqlite,
                    $settings,
                )
                .await
                .expect("sqlite always runs");
                let books = app.books();
                super::$name(app).await;
                books.check().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = $crate::harness::TestApp::spawn_with(
                    $crate::harness::Backend::Postgres,
                    $settings,
                )
                .await
                {
                    let books = app.books();
                    super::$name(app).await;
                    books.check().await;
                } else {
                    $crate::harness::skipped(concat!(module_path!(), "::postgres"));
                }
            }
        }
    };
}

/// The books of a test's database: after every test that runs on both backends,
/// `ledger verify` and `audit verify` must pass for every tenant (DESIGN §8), so each
/// test's money flows are also a test of the ledger and of the audit chain.
pub struct Books {
    db: DatabaseConnection,
    /// Set by a test that damaged the books on purpose (`TestApp::tampered`).
    tampered: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _dir: Option<std::sync::Arc<tempfile::TempDir>>,
    _pg: Option<std::sync::Arc<PgDatabase>>,
}

impl Books {
    pub async fn check(self) {
        use sequestra::ids::TenantId;
        if self.tampered.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let tenants = sequestra::accounts::rules::tenants(&self.db, None)
            .await
            .expect("tenants");
        for t in tenants {
            let scoped = sequestra::db::TenantDb::new(self.db.clone(), TenantId::from_uuid(t.id));
            let ledger = sequestra::ledger::verify(&scoped)
                .await
                .expect("ledger verify");
            assert!(
                ledger.discrepancy.is_none(),
                "ledger verify, tenant {}: {}",
                t.slug,
                ledger.discrepancy.unwrap_or_default()
            );
            let chain = sequestra::audit::verify(&scoped)
                .await
                .expect("audit verify");
            if let Some(broken) = chain.broken {
                panic!("audit verify, tenant {}: {broken}", t.slug);
            }
        }
    }
}

/// Says so on the real stderr (not the captured one) when PostgreSQL is skipped.
pub fn skipped(test: &str) {
    skipped_because(
        test,
        "PostgreSQL half not run (set SEQUESTRA_TEST_DATABASE_URL)",
    );
}

/// Prints `line` on the process's standard error past the test harness's output
/// capture (which also takes `io::stderr()`), so `scripts/test` shows it on every run:
/// a figure a test measured, say. Written through file descriptor 2 itself, so it
/// shares the offset of whatever CI redirected it to.
pub fn report(line: &str) {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 2 is open for the whole process; ManuallyDrop never closes it.
    let mut stderr = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(2) });
    let _ = stderr.write_all(format!("{line}\n").as_bytes());
}

/// Says on the real stderr that `test` did not run, and why.
pub fn skipped_because(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// A fresh PostgreSQL database, dropped when this value is.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside async context: use a private runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(conn) = Database::connect(&admin_url).await {
                    let _ = conn
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// The role the server connects as in PostgreSQL tests: it logs in, owns nothing, and
/// is neither a superuser nor BYPASSRLS (the defaults of CREATE ROLE).
pub const SERVER_ROLE: &str = "sequestra_server_test";
const SERVER_ROLE_PASSWORD: &str = "server-role-test-password";

/// Creates [`SERVER_ROLE`] once per cluster (concurrent tests may race to it).
async fn ensure_server_role(admin: &DatabaseConnection) {
    let created = admin
        .execute_unprepared(&format!(
            "DO $$ BEGIN \
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SERVER_ROLE}') THEN \
                 CREATE ROLE {SERVER_ROLE} LOGIN PASSWORD '{SERVER_ROLE_PASSWORD}'; \
               END IF; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        ))
        .await;
    created.expect("create the server's test role");
}

/// `url` with its user and password replaced.
fn with_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{user}:{password}@{host}{path}")
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let prefix = base.rsplit_once('/').map(|(p, _)| p).unwrap_or(base);
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

/// A user created in a test tenant, with a valid access token.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub email: String,
    pub password: String,
    pub token: String,
}

/// A tenant created through the real rules, with one user per role.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub id: Uuid,
    pub users: HashMap<Role, TestUser>,
}

impl TestTenant {
    pub fn user(&self, role: Role) -> &TestUser {
        &self.users[&role]
    }

    pub fn token(&self, role: Role) -> &str {
        &self.users[&role].token
    }
}

/// A GraphQL response as a client sees it.
#[derive(Debug)]
pub struct GqlResponse {
    pub status: StatusCode,
    pub body: Value,
}

impl GqlResponse {
    /// `extensions.code` of the first error, if any.
    pub fn code(&self) -> Option<&str> {
        self.body["errors"][0]["extensions"]["code"].as_str()
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// Panics with the whole body unless the response has no errors.
    pub fn ok(&self) -> &Value {
        assert!(
            self.body.get("errors").is_none(),
            "unexpected errors: {}",
            self.body
        );
        &self.body["data"]
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// Where `/metrics` is served with `SEQUESTRA_METRICS_LISTEN` (none: on `addr`).
    pub metrics_addr: Option<SocketAddr>,
    pub http: reqwest::Client,
    /// The database as its owner sees it (on PostgreSQL a superuser, outside
    /// row-level security), for tests that set up or inspect rows directly.
    pub db: DatabaseConnection,
    /// The server's own pool (on PostgreSQL its unprivileged role).
    pub server_db: DatabaseConnection,
    ws_operations: sequestra::http::ws::PerUser,
    subscriptions: sequestra::http::fanout::Groups,
    statements: std::sync::Arc<sequestra::db::StatementTap>,
    pub tokens: TokenService,
    pub schema: sequestra::graphql::AppSchema,
    config_database: sequestra::config::DatabaseConfig,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<std::sync::Arc<tempfile::TempDir>>,
    _pg: Option<std::sync::Arc<PgDatabase>>,
    tampered: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TestApp {
    /// This test edits the books behind the server's back on purpose: the check after
    /// it is skipped.
    pub fn tampered(&self) {
        self.tampered
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Starts the app on port 0 on a fresh database; `None` when PostgreSQL was asked
    /// for and is not configured (unless `SEQUESTRA_TEST_REQUIRE_POSTGRES=1`).
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, &[]).await
    }

    /// Like `spawn`, with extra `SEQUESTRA_*` settings.
    pub async fn spawn_with(backend: Backend, settings: &[(&str, &str)]) -> Option<Self> {
        let mut vars: HashMap<String, String> = HashMap::new();
        let tmp = tempfile::tempdir().expect("temp dir");
        vars.insert(
            "SEQUESTRA_PROOF_DIR".into(),
            tmp.path().join("proofs").display().to_string(),
        );
        let mut pg = None;
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}/test.db?mode=rwc", tmp.path().display());
                vars.insert("SEQUESTRA_DATABASE_URL".into(), url);
            }
            Backend::Postgres => {
                let Ok(admin_url) = std::env::var("SEQUESTRA_TEST_DATABASE_URL") else {
                    assert!(
                        std::env::var("SEQUESTRA_TEST_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                        "SEQUESTRA_TEST_REQUIRE_POSTGRES=1 but SEQUESTRA_TEST_DATABASE_URL is not set"
                    );
                    return None;
                };
                let name = format!("sequestra_test_{}", Uuid::now_v7().simple());
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("connect to SEQUESTRA_TEST_DATABASE_URL");
                ensure_server_role(&admin).await;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                // As a deployment runs: the server as a role that owns no table and
                // is held by row-level security, the migrations as the owner.
                let owner_url = with_database(&admin_url, &name);
                vars.insert(
                    "SEQUESTRA_DATABASE_URL".into(),
                    with_user(&owner_url, SERVER_ROLE, SERVER_ROLE_PASSWORD),
                );
                vars.insert("SEQUESTRA_DATABASE_OWNER_URL".into(), owner_url);
                pg = Some(PgDatabase { admin_url, name });
            }
        }
        vars.insert("SEQUESTRA_LISTEN".into(), "127.0.0.1:0".into());
        vars.insert("SEQUESTRA_DB_MAX_CONNECTIONS".into(), "8".into());
        vars.insert("SEQUESTRA_SHUTDOWN_GRACE_SECS".into(), "1".into());
        vars.insert(
            "SEQUESTRA_WEBHOOK_SECRETS".into(),
            WEBHOOK_SECRETS.join(","),
        );
        // Background jobs only where a test starts them (see `peer`).
        vars.insert("SEQUESTRA_JOBS_ENABLED".into(), "false".into());
        // Concurrency tests send hundreds of requests from one address; the limiter
        // has its own tests (`rate_limit.rs`), which set their limits.
        vars.insert("SEQUESTRA_RATE_LIMIT_PER_SECOND".into(), "100000".into());
        vars.insert("SEQUESTRA_RATE_LIMIT_BURST".into(), "100000".into());
        for (k, v) in settings {
            vars.insert((*k).into(), (*v).into());
        }
        Some(Self::start(vars, Some(tmp), pg).await)
    }

    /// A second server process on this app's database (its own secrets, so tokens
    /// of one are not valid on the other), as a second replica would run.
    pub async fn peer(&self, settings: &[(&str, &str)]) -> TestApp {
        use secrecy::ExposeSecret;
        let mut vars: HashMap<String, String> = HashMap::new();
        let tmp = tempfile::tempdir().expect("temp dir");
        vars.insert(
            "SEQUESTRA_PROOF_DIR".into(),
            tmp.path().join("proofs").display().to_string(),
        );
        vars.insert(
            "SEQUESTRA_DATABASE_URL".into(),
            self.config_database.url.expose_secret().to_owned(),
        );
        if let Some(owner) = &self.config_database.owner_url {
            vars.insert(
                "SEQUESTRA_DATABASE_OWNER_URL".into(),
                owner.expose_secret().to_owned(),
            );
        }
        vars.insert("SEQUESTRA_LISTEN".into(), "127.0.0.1:0".into());
        vars.insert("SEQUESTRA_DB_MAX_CONNECTIONS".into(), "8".into());
        vars.insert("SEQUESTRA_SHUTDOWN_GRACE_SECS".into(), "1".into());
        vars.insert(
            "SEQUESTRA_WEBHOOK_SECRETS".into(),
            WEBHOOK_SECRETS.join(","),
        );
        vars.insert("SEQUESTRA_SIM_PSP_SETTLE_AFTER_MS".into(), "0".into());
        for (k, v) in settings {
            vars.insert((*k).into(), (*v).into());
        }
        Self::start(vars, Some(tmp), None).await
    }

    async fn start(
        vars: HashMap<String, String>,
        dir: Option<tempfile::TempDir>,
        pg: Option<PgDatabase>,
    ) -> TestApp {
        let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("test config");
        let config_database = config.database.clone();
        let app = Application::build(config).await.expect("build application");
        let addr = app.local_addr().expect("local addr");
        let metrics_addr = app.metrics_addr();
        let server_db = app.db().clone();
        let db = match &config_database.owner_url {
            Some(owner) => {
                use secrecy::ExposeSecret;
                Database::connect(owner.expose_secret())
                    .await
                    .expect("connect as the owner")
            }
            None => server_db.clone(),
        };
        let tokens = app.tokens().clone();
        let ws_operations = app.ws_operations().clone();
        let subscriptions = app.subscriptions().clone();
        let statements = app.statements();
        let schema = app.schema().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            metrics_addr,
            http: reqwest::Client::new(),
            db,
            server_db,
            tokens,
            ws_operations,
            subscriptions,
            statements,
            schema,
            config_database,
            shutdown: Some(tx),
            server: Some(server),
            _dir: dir.map(std::sync::Arc::new),
            _pg: pg.map(std::sync::Arc::new),
            tampered: std::sync::Arc::default(),
        }
    }

    /// Applies pending migrations as `sequestra migrate` does (as the owner, then the
    /// server's role granted its privileges).
    pub async fn migrate(&self) {
        sequestra::db::open(&self.config_database, true)
            .await
            .expect("migrate");
    }

    /// What checks the books once the test is done with the app (the database
    /// outlives the app until then).
    pub fn books(&self) -> Books {
        Books {
            db: self.server_db.clone(),
            tampered: self.tampered.clone(),
            _dir: self._dir.clone(),
            _pg: self._pg.clone(),
        }
    }

    /// Statements the server's own pool has run so far.
    pub fn statements(&self) -> u64 {
        self.statements.count()
    }

    /// The server's statement tap (to capture the text of what a request ran).
    pub fn tap(&self) -> &sequestra::db::StatementTap {
        &self.statements
    }

    /// Operations the app counts as running over each user's WebSockets.
    pub fn ws_operations(&self) -> &sequestra::http::ws::PerUser {
        &self.ws_operations
    }

    /// Subscription runs in progress (each shared by the sockets following it).
    pub fn subscription_runs(&self) -> usize {
        self.subscriptions.running()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The database this app runs on (for a second process on the same one): the
    /// server's URL and, on PostgreSQL, the owner's.
    pub fn database_url(&self) -> String {
        use secrecy::ExposeSecret;
        self.config_database.url.expose_secret().to_owned()
    }

    pub fn database_owner_url(&self) -> Option<String> {
        use secrecy::ExposeSecret;
        self.config_database
            .owner_url
            .as_ref()
            .map(|u| u.expose_secret().to_owned())
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/graphql/ws", self.addr)
    }

    /// POSTs a GraphQL request, optionally with a bearer token.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> GqlResponse {
        let mut request = self
            .http
            .post(self.url("/graphql"))
            .header("accept", "application/graphql-response+json")
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        let body = response.json().await.expect("json body");
        GqlResponse { status, body }
    }

    /// A GraphQL multipart request (file upload): `file` goes to the variable `var`.
    pub async fn gql_upload(
        &self,
        token: &str,
        query: &str,
        mut variables: Value,
        var: &str,
        filename: &str,
        file: Vec<u8>,
    ) -> GqlResponse {
        variables[var] = Value::Null;
        let operations = json!({ "query": query, "variables": variables });
        let map = json!({ "0": [format!("variables.{var}")] });
        let form = reqwest::multipart::Form::new()
            .text("operations", operations.to_string())
            .text("map", map.to_string())
            .part(
                "0",
                reqwest::multipart::Part::bytes(file)
                    .file_name(filename.to_owned())
                    .mime_str("application/octet-stream")
                    .expect("mime"),
            );
        let response = self
            .http
            .post(self.url("/graphql"))
            .header("accept", "application/graphql-response+json")
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .expect("send");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        GqlResponse { status, body }
    }

    /// Creates a tenant with one user per role through the real rules, and mints each
    /// user an access token with the app's own token service.
    pub async fn tenant(&self, slug: &str) -> TestTenant {
        let txn = sequestra::db::begin_write(&self.db).await.expect("begin");
        let txn = sequestra::db::TenantTxn::bind(txn, TenantId::from_uuid(Uuid::now_v7()))
            .await
            .expect("enter the new tenant");
        let tenant = rules::create_tenant(&txn, &Slug::parse(slug).unwrap(), slug, false)
            .await
            .expect("create tenant");
        txn.commit().await.expect("commit");
        let tenant_id = TenantId::from_uuid(tenant.id);
        let scoped = TenantDb::new(self.db.clone(), tenant_id);
        let mut users = HashMap::new();
        for role in Role::ALL {
            let email = format!("{}@{slug}.test", role.as_str().to_lowercase());
            let pw = "correct horse battery staple 42".to_owned();
            let hash = password::hash(pw.clone().into()).await.expect("hash");
            let user = rules::create_user(
                &scoped,
                Actor::System,
                &Origin::default(),
                &Email::parse(&email).unwrap(),
                hash,
                &[role],
            )
            .await
            .expect("create user");
            let token = self.sign_in(slug, &email, &pw).await;
            users.insert(
                role,
                TestUser {
                    id: user.id,
                    email,
                    password: pw,
                    token,
                },
            );
        }
        TestTenant {
            id: tenant.id,
            users,
        }
    }

    /// Bootstraps the platform tenant (slug `platform`) through the real rule; returns
    /// it (without users in `users`), its first ADMIN (a PLATFORM_ADMIN) and a token
    /// of theirs from signing in with the one-time password.
    pub async fn platform(&self) -> (TestTenant, sequestra::entity::user::Model, String) {
        let made = rules::bootstrap(
            &self.db,
            &Slug::parse("platform").unwrap(),
            "Platform",
            &Email::parse("root@platform.test").unwrap(),
            true,
            rules::BootstrapBy {
                actor: Actor::System,
                origin: Origin::default(),
            },
        )
        .await
        .expect("bootstrap the platform tenant");
        use secrecy::ExposeSecret;
        let token = self
            .sign_in(
                "platform",
                "root@platform.test",
                made.one_time_password.expose_secret(),
            )
            .await;
        let tenant = TestTenant {
            id: made.tenant.id,
            users: HashMap::new(),
        };
        (tenant, made.admin, token)
    }

    /// Adds one more user with `roles` to `tenant`.
    pub async fn add_user(&self, tenant: &TestTenant, email: &str, roles: &[Role]) -> TestUser {
        let tenant_id = TenantId::from_uuid(tenant.id);
        let scoped = TenantDb::new(self.db.clone(), tenant_id);
        let pw = "another long passphrase 7".to_owned();
        let hash = password::hash(pw.clone().into()).await.expect("hash");
        let user = rules::create_user(
            &scoped,
            Actor::System,
            &Origin::default(),
            &Email::parse(email).unwrap(),
            hash,
            roles,
        )
        .await
        .expect("create user");
        let slug = sequestra::entity::tenant::Entity::find_by_id(tenant.id)
            .one(&self.db)
            .await
            .expect("tenant")
            .expect("tenant exists")
            .slug;
        TestUser {
            id: user.id,
            email: email.to_owned(),
            password: pw.clone(),
            token: self.sign_in(&slug, email, &pw).await,
        }
    }

    /// The actions of `tenant`'s audit rows, oldest first.
    /// This server's `/metrics` page.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn audit_actions(&self, tenant: &TestTenant) -> Vec<String> {
        use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
        use sequestra::entity::audit_log;
        audit_log::Entity::find()
            .filter(audit_log::Column::TenantId.eq(tenant.id))
            .order_by_asc(audit_log::Column::Id)
            .all(&self.db)
            .await
            .expect("audit rows")
            .into_iter()
            .map(|r| r.action)
            .collect()
    }

    /// Opens a real session through the sign-in rule; returns its access token.
    pub async fn sign_in(&self, slug: &str, email: &str, password: &str) -> String {
        let outcome = sequestra::identity::rules::sign_in(
            &self.db,
            None,
            &self.tokens,
            &Origin::default(),
            slug,
            email,
            password.to_owned().into(),
        )
        .await
        .expect("sign in");
        match outcome {
            sequestra::identity::rules::SignInOutcome::Signed(issued) => issued.access.token,
            sequestra::identity::rules::SignInOutcome::MfaRequired(_) => {
                panic!("{email} has MFA: sign in through verifyMfa")
            }
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server result");
        }
    }

    /// A new pool on the same database, as a restarted process would open.
    pub async fn reconnect(&self) -> DatabaseConnection {
        let mut cfg = self.config_database.clone();
        cfg.max_connections = 2;
        db::connect(&cfg).await.expect("reconnect")
    }

    /// Runs `query` on the schema as `user` with `roles` (the request fenced and
    /// given its DataLoaders, as the HTTP edge does) over a pool of its own that
    /// counts SQL statements; returns the count and the data. Panics on errors.
    pub async fn count_statements(
        &self,
        tenant: Uuid,
        user: Uuid,
        roles: &[Role],
        query: &str,
    ) -> (usize, Value) {
        use sequestra::{
            auth::{Credential, Principal, UserPrincipal, scopes_of},
            graphql::{context::RequestContext, loaders},
        };
        use std::sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        };
        let statements = Arc::new(AtomicUsize::new(0));
        let mut counted = self.reconnect().await;
        let counter = statements.clone();
        counted.set_metric_callback(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let tenant = TenantId::from_uuid(tenant);
        let principal = Principal::User(UserPrincipal {
            tenant_id: tenant,
            user_id: user,
            credential: Credential::Session(Uuid::nil()),
            roles: roles.to_vec(),
            scopes: scopes_of(roles),
            mfa_verified_at: None,
            mfa_enrolment_required: false,
            expires_at: None,
        });
        let context = RequestContext::new(
            principal,
            Some(TenantDb::new(counted, tenant)),
            Origin::default(),
            None,
        );
        let mut request = async_graphql::Request::new(query);
        let fence = loaders::PollFence::default();
        loaders::attach(&mut request.data, context.db.as_ref(), Some(&fence));
        let response = fence.run(self.schema.execute(request.data(context))).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        let data = serde_json::to_value(&response.data).expect("data");
        (statements.load(Ordering::SeqCst), data)
    }

    pub async fn migrations_pending(&self) -> Vec<String> {
        db::pending_migrations(&self.db)
            .await
            .expect("pending migrations")
    }
}
