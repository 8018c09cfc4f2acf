//! `cargo bench --bench footprint`: the server as its own process, measured from
//! outside as an operator would. The binary is `SEQUESTRA_BENCH_SERVER` when set
//! (`scripts/bench` sets it to what `cargo build --release` makes, the binary that
//! ships), else the `sequestra` binary of this bench's build — which differs: a
//! bench build unifies the dev-dependencies' features into the server's dependencies,
//! so its symbols are named differently and the code layout (`build.rs`) mostly
//! does not apply to it.
//!
//! 1. SQLite, the embedded default: exec → `/ready` answering 200 for `serve --demo`
//!    on a new file (the seed included), the server's RSS once idle after the demo
//!    seed and after 100 sign-ins; then exec → `/ready` and idle RSS for `serve`
//!    on that existing file.
//! 2. PostgreSQL: `SEQUESTRA_BENCH_SUBSCRIBERS` (default `1000,5000,10000`)
//!    WebSocket subscribers of `myPaymentUpdates`, all the same payee; at each
//!    step the server's RSS and, for `SAMPLES` settling webhooks posted one at a
//!    time, the fan-out latency from the POST to every subscriber's frame. The
//!    sockets share one session and send the same document, so the server runs the
//!    subscription once for all of them (`http/fanout.rs`); with
//!    `SEQUESTRA_BENCH_APART=1` each socket's document has its own alias, and each
//!    socket runs its own.
//!
//! PostgreSQL: `SEQUESTRA_BENCH_DATABASE_URL` as for the other benches.

mod common;

use std::{
    collections::HashMap,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{PASSWORD, pct};
use futures_util::StreamExt;
use sea_orm::Database;
use sequestra::{
    accounts::rules as accounts,
    audit::{Actor, Origin},
    auth::{Role, password},
    domain::Email,
    payments::Payee,
};
use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};

const SAMPLES: usize = 10;
const SIGN_INS: usize = 100;

fn main() {
    raise_open_files();
    common::block_on(async {
        println!(
            "sequestra footprint benchmark ({} cores; server as its own process, clients and database on this machine)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!("server binary: {}", server_binary());
        sqlite().await;
    });
    common::on_postgres(|url, owner| async move { subscribers(&url, &owner).await });
}

/// Ten thousand sockets on each side need more descriptors than a default shell's
/// soft limit; the server child inherits the raised limit.
fn raise_open_files() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The server binary to measure (see the module's documentation).
fn server_binary() -> String {
    std::env::var("SEQUESTRA_BENCH_SERVER")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sequestra").to_owned())
}

/// The server binary, started with `vars` (and nothing else of ours) in its
/// environment.
struct Process {
    child: Child,
    addr: String,
}

impl Process {
    fn start(args: &[&str], vars: &[(&str, &str)]) -> (Self, Instant) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut command = Command::new(server_binary());
        for (key, _) in std::env::vars() {
            if key.starts_with("SEQUESTRA_") {
                command.env_remove(key);
            }
        }
        command
            .args(args)
            .envs(vars.iter().copied())
            .env("SEQUESTRA_LISTEN", &addr)
            .env("SEQUESTRA_LOG", "warn")
            .env("SEQUESTRA_RATE_LIMIT_PER_SECOND", "1000000")
            .env("SEQUESTRA_RATE_LIMIT_BURST", "1000000")
            .env("SEQUESTRA_CREDENTIAL_ATTEMPTS_PER_MINUTE", "1000000")
            .stdout(Stdio::null());
        let started = Instant::now();
        let child = command.spawn().expect("start the server");
        (Self { child, addr }, started)
    }

    /// Waits until `/ready` answers 200; how long after `started` that was.
    async fn ready(&self, started: Instant) -> Duration {
        let client = reqwest::Client::new();
        let url = format!("http://{}/ready", self.addr);
        let deadline = started + Duration::from_secs(120);
        loop {
            if let Ok(r) = client.get(&url).send().await
                && r.status() == 200
            {
                return started.elapsed();
            }
            assert!(Instant::now() < deadline, "the server never became ready");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Resident set size now, in MiB.
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kib / 1024.0
    }

    /// Of that, the binary's machine code mapped in, in MiB: what the code layout
    /// (`linker/symbol-order.txt`, build.rs) keeps small; it grows back when that
    /// file no longer names the functions the server runs.
    fn code_mib(&self) -> f64 {
        let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", self.child.id()))
            .expect("/proc smaps");
        // /proc names the file by its canonical path.
        let binary = std::fs::canonicalize(server_binary()).expect("the server binary");
        let (mut ours, mut kib) = (false, 0.0);
        for line in smaps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // A mapping's header: `start-end perms offset dev inode [path]`.
            if fields
                .first()
                .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
            {
                ours =
                    fields.len() >= 6 && fields[1].contains('x') && Path::new(fields[5]) == binary;
            } else if ours && fields.first() == Some(&"Rss:") {
                kib += fields
                    .get(1)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
        }
        kib / 1024.0
    }
}

/// Stopped however the bench ends (a panic too: a server left running would keep
/// the output pipe open).
impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

async fn sign_in(
    client: &reqwest::Client,
    addr: &str,
    tenant: &str,
    email: &str,
    pw: &str,
) -> String {
    let body = serde_json::json!({
        "query": "mutation($i: SignInInput!) { signIn(input: $i) { accessToken } }",
        "variables": { "i": { "tenant": tenant, "email": email, "password": pw } },
    });
    let json: serde_json::Value = client
        .post(format!("http://{addr}/graphql"))
        .json(&body)
        .send()
        .await
        .expect("sign in")
        .json()
        .await
        .expect("json");
    json["data"]["signIn"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("a token: {json}"))
        .to_owned()
}

async fn sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("footprint.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let credentials = dir.path().join("demo.json");
    let proofs = dir.path().join("proofs");
    let proofs = proofs.display().to_string();
    let vars = [
        ("SEQUESTRA_DATABASE_URL", url.as_str()),
        ("SEQUESTRA_PROOF_DIR", proofs.as_str()),
        ("SEQUESTRA_JOBS_ENABLED", "false"),
    ];
    let credentials_arg = credentials.display().to_string();
    let (server, started) = Process::start(
        &["serve", "--demo", "--demo-credentials", &credentials_arg],
        &vars,
    );
    let with_demo = server.ready(started).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_demo = (server.rss_mib(), server.code_mib());
    let (tenant, email, pw) = demo_password_user(&credentials);
    let client = reqwest::Client::new();
    for _ in 0..SIGN_INS {
        sign_in(&client, &server.addr, &tenant, &email, &pw).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_sign_ins = (server.rss_mib(), server.code_mib());
    drop(server);

    let (server, started) = Process::start(&["serve"], &vars);
    let existing = server.ready(started).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = (server.rss_mib(), server.code_mib());
    drop(server);

    println!("SQLite, start to /ready:");
    println!(
        "  serve --demo on a new file          {:>8.0} ms (migrations and the demo seed included)",
        ms(with_demo)
    );
    println!(
        "  serve on that existing file         {:>8.0} ms",
        ms(existing)
    );
    println!("SQLite, idle RSS (of which the binary's code):");
    for (label, (rss, code)) in [
        ("after the --demo seed".to_owned(), after_demo),
        (format!("after {SIGN_INS} sign-ins"), after_sign_ins),
        ("serve on the existing file".to_owned(), idle),
    ] {
        println!("  {label:<34} {rss:>8.1} MiB (code {code:.1} MiB)");
    }
}

/// The demo's first user who signs in with a password alone (a BENEFICIARY: the demo
/// SENDER has MFA): (tenant, email, password).
fn demo_password_user(path: &Path) -> (String, String, String) {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("demo credentials")).expect("json");
    for tenant in json["tenants"].as_array().expect("tenants") {
        for user in tenant["users"].as_array().expect("users") {
            let roles = user["roles"].as_array().expect("roles");
            if user.get("totpSecret").is_none() && roles.iter().any(|r| r == "BENEFICIARY") {
                return (
                    tenant["slug"].as_str().expect("slug").to_owned(),
                    user["email"].as_str().expect("email").to_owned(),
                    user["password"].as_str().expect("password").to_owned(),
                );
            }
        }
    }
    panic!("the demo has no BENEFICIARY without MFA");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Settlement instants by payment global id, and every subscriber's latencies.
type Clock = Arc<Mutex<HashMap<String, Instant>>>;

async fn subscribers(url: &str, owner: &str) {
    let tiers: Vec<usize> = std::env::var("SEQUESTRA_BENCH_SUBSCRIBERS")
        .unwrap_or_else(|_| "1000,5000,10000".to_owned())
        .split(',')
        .map(|n| n.trim().parse().expect("a number of subscribers"))
        .collect();
    let most = tiers.iter().copied().max().unwrap_or(0);
    let dir = tempfile::tempdir().expect("temp dir");
    let proofs = dir.path().display().to_string();
    let per_user = (most * 2).to_string();
    let (server, started) = Process::start(
        &["serve"],
        &[
            ("SEQUESTRA_DATABASE_URL", url),
            ("SEQUESTRA_DATABASE_OWNER_URL", owner),
            ("SEQUESTRA_PROOF_DIR", proofs.as_str()),
            ("SEQUESTRA_JOBS_ENABLED", "false"),
            ("SEQUESTRA_WEBHOOK_SECRETS", common::WEBHOOK_SECRET),
            ("SEQUESTRA_WS_MAX_OPERATIONS_PER_USER", per_user.as_str()),
        ],
    );
    server.ready(started).await;
    let base = server.rss_mib();

    // A tenant and its payee, written through the owner's connection.
    let db = Database::connect(owner).await.expect("owner connection");
    let (_, scoped) = common::bench_tenant(&db).await;
    let hash = password::hash(PASSWORD.to_owned().into())
        .await
        .expect("hash");
    let payee = accounts::create_user(
        &scoped,
        Actor::System,
        &Origin::default(),
        &Email::parse("payee@bench.test").expect("email"),
        hash,
        &[Role::Beneficiary],
    )
    .await
    .expect("payee")
    .id;
    let client = reqwest::Client::new();
    let token = sign_in(&client, &server.addr, "bench", "payee@bench.test", PASSWORD).await;

    // SENT payments to the payee, one per sample per tier.
    let references = common::sent_payments(&scoped, SAMPLES * tiers.len(), "fanout", |_| {
        Payee::User(payee)
    })
    .await;
    let mut references = references.into_iter();

    let apart = std::env::var("SEQUESTRA_BENCH_APART").is_ok_and(|v| v == "1");
    let clock: Clock = Arc::default();
    let (latency_tx, mut latency_rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let mut connected = 0;
    println!(
        "PostgreSQL, myPaymentUpdates subscribers (one payee, {}), {SAMPLES} settlements each; idle server {base:.1} MiB:",
        if apart {
            "a document per socket: a run each"
        } else {
            "one session and document: one shared run"
        }
    );
    for tier in tiers {
        while connected < tier {
            let batch = (tier - connected).min(250);
            let mut joins = Vec::new();
            for n in connected..connected + batch {
                let document = if apart {
                    format!("subscription {{ s{n}: myPaymentUpdates {{ id status }} }}")
                } else {
                    common::PAYMENT_UPDATES.to_owned()
                };
                joins.push(tokio::spawn(subscriber(
                    server.addr.clone(),
                    token.clone(),
                    document,
                    clock.clone(),
                    latency_tx.clone(),
                )));
            }
            for join in joins {
                join.await.expect("a subscriber");
            }
            connected += batch;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = server.rss_mib();
        while latency_rx.try_recv().is_ok() {}
        let mut fan_out = Vec::with_capacity(tier * SAMPLES);
        for _ in 0..SAMPLES {
            let (gid, reference) = references.next().expect("a payment");
            clock.lock().expect("clock").insert(gid, Instant::now());
            post(&client, &server.addr, &reference).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            let before = fan_out.len();
            while fan_out.len() - before < connected {
                match tokio::time::timeout_at(deadline.into(), latency_rx.recv()).await {
                    Ok(Some(d)) => fan_out.push(d),
                    _ => panic!(
                        "{} of {connected} subscribers got the settlement",
                        fan_out.len() - before
                    ),
                }
            }
        }
        fan_out.sort();
        println!(
            "  {connected:>6} subscribers: RSS {rss:>7.1} MiB ({:>5.1} KiB each over the idle server)   fan-out p50={:.1} ms  p99={:.1} ms  max={:.1} ms",
            0.0_f64.max((rss - base) * 1024.0 / connected as f64),
            pct(&fan_out, 0.5),
            pct(&fan_out, 0.99),
            fan_out.last().map_or(0.0, |d| ms(*d)),
        );
    }
    drop(server);
}

/// One subscriber: connects, subscribes, and reports each settlement's latency.
async fn subscriber(
    addr: String,
    token: String,
    document: String,
    clock: Clock,
    latency: tokio::sync::mpsc::UnboundedSender<Duration>,
) {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let mut socket = common::payment_updates(&addr, &token, Some(config), &document).await;
    tokio::spawn(async move {
        while let Some(Ok(msg)) = socket.next().await {
            let Message::Text(text) = msg else { continue };
            if !text.contains("SETTLED") {
                continue;
            }
            let json: serde_json::Value = serde_json::from_str(&text).expect("json");
            // The one field of `data`, whatever its alias.
            let id = json["payload"]["data"]
                .as_object()
                .and_then(|data| data.values().next())
                .and_then(|update| update["id"].as_str())
                .expect("id");
            let sent = clock.lock().expect("clock").get(id).copied();
            if let Some(sent) = sent {
                let _ = latency.send(sent.elapsed());
            }
        }
    });
}

async fn post(client: &reqwest::Client, addr: &str, reference: &str) {
    common::post_settled(client, addr, reference).await;
}
