//! `cargo bench --bench nested_page`: a page of 20 escrows with their milestones and
//! payments, as their sender reads it over HTTP (16 clients, PostgreSQL), next to
//!
//! 1. pgbench replaying the statements the server ran for one such page (captured
//!    from its pool, values inlined, run as the database owner with the same 16
//!    clients): the SQL floor;
//! 2. PostGraphile v4 serving the same page from the same database, when
//!    `SEQUESTRA_BENCH_POSTGRAPHILE` names its CLI (`scripts/bench` installs it
//!    with npm when it can).
//!
//! Rounds alternate (sequestra, PostGraphile, sequestra, PostGraphile) so both see
//! the same machine; the ratios use the sums.
//!
//! PostgreSQL: `SEQUESTRA_BENCH_DATABASE_URL` as for the other benches.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sequestra::{
    audit::{Actor, Origin},
    auth::Role,
    entity::payment::PaymentPurpose,
    ids::{self, Kind},
    money::{Currency, Money},
    payments::{self, NewPayment, Payee},
};

const CLIENTS: usize = 16;
const ESCROWS: usize = 20;
const ROUND: Duration = Duration::from_secs(5);

const PAGE: &str = "{ escrows(first: 20) { edges { node { id status amount { amount currency } \
    milestones { id title status amount { amount } } \
    payments { id status amount { amount } } } } } }";

fn main() {
    common::on_postgres(|url, owner| async move { bench(&url, &owner).await });
}

async fn bench(url: &str, owner: &str) {
    let (server, proofs) = common::serve_on_postgres(url, owner, CLIENTS, &[]).await;
    let (_, scoped) = server.tenant().await;
    let users = server
        .users(
            &scoped,
            &[
                ("sender@bench.test", Role::Sender),
                ("provider@bench.test", Role::Beneficiary),
            ],
        )
        .await;
    let provider = users[1];
    let token = server.sign_in("sender@bench.test").await;
    let endpoint = format!("http://{}/graphql", server.addr);
    let client = reqwest::Client::new();

    // 20 escrows of two milestones, each with two payments to its provider.
    let eur = Currency::parse("EUR").expect("EUR");
    let origin = Origin::default();
    for i in 0..ESCROWS {
        let body = serde_json::json!({
            "query": "mutation($i: CreateEscrowInput!) { createEscrow(input: $i) { escrow { id } } }",
            "variables": { "i": {
                "idempotencyKey": format!("page-{i}"),
                "providerId": ids::encode(Kind::User, provider),
                "amount": "100.00",
                "currency": "EUR",
                "description": format!("Escrow {i}"),
                "deadline": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
                "milestones": [
                    { "title": "Design", "amount": "40.00" },
                    { "title": "Build", "amount": "60.00" },
                ],
            } },
        });
        let json: serde_json::Value = client
            .post(&endpoint)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        let gid = json["data"]["createEscrow"]["escrow"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("an escrow: {json}"));
        let escrow = ids::decode_as(Kind::Escrow, gid).expect("escrow id");
        let txn = scoped.begin().await.expect("begin");
        for minor in [4000, 6000] {
            payments::record(
                &txn,
                "simulated",
                NewPayment {
                    payee: Payee::User(provider),
                    purpose: PaymentPurpose::EscrowRelease,
                    amount: Money::from_minor(minor, eur),
                    escrow_id: Some(escrow),
                    milestone_id: None,
                    source: sequestra::ledger::Account::Escrow(escrow),
                },
                Actor::System,
                &origin,
            )
            .await
            .expect("payment");
        }
        txn.commit().await.expect("commit");
    }

    // One page, its statements captured.
    server.statements.capture(true);
    let page = fetch(&client, &endpoint, Some(&token), PAGE).await;
    server.statements.capture(false);
    let captured = server.statements.take();
    let edges = page["data"]["escrows"]["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), ESCROWS, "{page}");
    assert!(
        edges
            .iter()
            .all(|e| e["node"]["payments"].as_array().map(Vec::len) == Some(2)),
        "{page}"
    );

    println!(
        "sequestra nested page benchmark ({} cores, PostgreSQL, {CLIENTS} clients, {ESCROWS} escrows x (2 milestones + 2 payments))",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let postgraphile = PostGraphile::start(owner).await;
    let mut ours = 0.0;
    let mut theirs = 0.0;
    for round in 0..2 {
        let rps = load(&endpoint, Some(&token), PAGE).await;
        println!("  round {round}: sequestra          {rps:>8.0} pages/s");
        ours += rps;
        if let Some(pg) = &postgraphile {
            let rps = load(&pg.endpoint, None, &pg.query).await;
            println!("  round {round}: PostGraphile v4    {rps:>8.0} pages/s");
            theirs += rps;
        }
    }
    drop(postgraphile);

    let statements: Vec<String> = captured
        .iter()
        .filter(|s| !s.contains("set_config"))
        .map(|s| s.replace('\n', " "))
        .collect();
    let bare: String = statements.iter().map(|s| format!("{s};\n")).collect();
    let floor = pgbench(owner, &bare, proofs.path());
    match floor {
        Some(tps) => println!(
            "  pgbench, the page's {} statements as the owner   {tps:>8.0} pages/s (the SQL floor)",
            statements.len()
        ),
        None => println!("  pgbench not run"),
    }
    // The same statements as the server sends them: as its role, inside the tenant's
    // row-level security wall, in the one read-only transaction a query's reads share
    // (BEGIN, the setting, the statements, COMMIT).
    let tenant = scoped.tenant().as_uuid();
    let walled = format!(
        "BEGIN;\nSELECT set_config('sequestra.tenant_id', '{tenant}', true), set_config('transaction_read_only', 'on', true);\n{bare}COMMIT;\n"
    );
    if let Some(tps) = pgbench(url, &walled, proofs.path()) {
        println!("  pgbench, the same inside the RLS wall, server role  {tps:>8.0} pages/s");
        println!("  sequestra / walled floor      {:.2}", ours / 2.0 / tps);
    }
    println!("ratios:");
    if let Some(tps) = floor {
        println!(
            "  sequestra / pgbench floor     {:.2} (target >= 0.50)",
            ours / 2.0 / tps
        );
    }
    if theirs > 0.0 {
        println!(
            "  sequestra / PostGraphile v4   {:.2} (target >= 2)",
            ours / theirs
        );
    } else {
        println!(
            "  PostGraphile not run (set SEQUESTRA_BENCH_POSTGRAPHILE to its CLI; scripts/bench does)"
        );
    }
}

async fn fetch(
    client: &reqwest::Client,
    endpoint: &str,
    token: Option<&str>,
    query: &str,
) -> serde_json::Value {
    let mut request = client
        .post(endpoint)
        .json(&serde_json::json!({ "query": query }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let json: serde_json::Value = request
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(json.get("errors").is_none(), "{json}");
    json
}

/// Pages per second over one round, `CLIENTS` at a time.
async fn load(endpoint: &str, token: Option<&str>, query: &str) -> f64 {
    let started = Instant::now();
    let stop = started + ROUND;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (endpoint, token, query) = (
            endpoint.to_owned(),
            token.map(str::to_owned),
            query.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0u64;
            while Instant::now() < stop {
                fetch(&client, &endpoint, token.as_deref(), &query).await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("client");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// pgbench running `script` (one page) as whoever `url` names; pages per second.
fn pgbench(url: &str, script: &str, dir: &std::path::Path) -> Option<f64> {
    let file = dir.join("page.sql");
    std::fs::write(&file, script).expect("script");
    let output = Command::new("pgbench")
        .args([
            "-n",
            "-M",
            "simple",
            "-c",
            &CLIENTS.to_string(),
            "-j",
            "2",
            "-T",
            &ROUND.as_secs().to_string(),
            "-f",
        ])
        .arg(&file)
        .arg(url)
        .output();
    match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("tps"))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|t| t.parse().ok()),
        Ok(out) => {
            println!("  pgbench failed: {}", String::from_utf8_lossy(&out.stderr));
            None
        }
        Err(err) => {
            println!("  pgbench not run ({err}); install postgresql-client");
            None
        }
    }
}

/// PostGraphile v4 over the same database, as its owner, on a free port.
struct PostGraphile {
    child: Child,
    endpoint: String,
    query: String,
}

impl PostGraphile {
    async fn start(owner: &str) -> Option<Self> {
        let cli = std::env::var("SEQUESTRA_BENCH_POSTGRAPHILE").ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        let child = Command::new(&cli)
            .args([
                "--connection",
                owner,
                "--schema",
                "public",
                "--host",
                "127.0.0.1",
            ])
            .args(["--port", &port.to_string(), "--disable-query-log"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(err) => {
                println!("  PostGraphile not run ({cli}: {err})");
                return None;
            }
        };
        let mut pg = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}/graphql"),
            query: String::new(),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            // Its relation fields are named after the foreign keys (ours are composite,
            // tenant first): asked, not guessed.
            let introspection =
                serde_json::json!({ "query": "{ __type(name: \"Escrow\") { fields { name } } }" });
            let Ok(r) = client.post(&pg.endpoint).json(&introspection).send().await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let fields: serde_json::Value = r.json().await.unwrap_or_default();
            let named = |prefix: &str| {
                fields["data"]["__type"]["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["name"].as_str())
                    .find(|n| n.starts_with(prefix))
                    .map(str::to_owned)
            };
            let (Some(milestones), Some(payments)) = (named("milestonesBy"), named("paymentsBy"))
            else {
                println!("  PostGraphile has no escrow relations: {fields}");
                return None;
            };
            // The same page: the 20 escrows, their milestones and payments.
            pg.query = format!(
                "{{ allEscrows(first: 20, orderBy: ID_DESC) {{ nodes {{ id status amountMinor currency \
                 {milestones} {{ nodes {{ id title status amountMinor }} }} \
                 {payments} {{ nodes {{ id status amountMinor }} }} }} }} }}"
            );
            if let Ok(r) = client
                .post(&pg.endpoint)
                .json(&serde_json::json!({ "query": pg.query }))
                .send()
                .await
                && let Ok(json) = r.json::<serde_json::Value>().await
            {
                let n = json["data"]["allEscrows"]["nodes"]
                    .as_array()
                    .map_or(0, Vec::len);
                if n == ESCROWS {
                    return Some(pg);
                }
                println!("  PostGraphile answered without the page: {json}");
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("  PostGraphile did not start within 60 s");
        None
    }
}

impl Drop for PostGraphile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
