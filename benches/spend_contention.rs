//! `cargo bench --bench spend_contention`: purchases per second when every request
//! spends the same mandate (the worst case: one row, one lock), through the real
//! HTTP edge on PostgreSQL; then, for scale, the bare conditional UPDATE on one row
//! driven by `pgbench` with the same number of clients.
//!
//! PostgreSQL: `SEQUESTRA_BENCH_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) must be allowed to create and drop
//! databases; a fresh one is used and dropped.

mod common;

use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use sea_orm::ConnectionTrait;
use sequestra::{
    audit::{Actor, Origin},
    auth::Role,
    ids::{self, Kind},
    spend::rules::{self as spend, Act, Caller, NewMandate},
};

const CLIENTS: usize = 16;
const SECONDS: u64 = 10;

fn main() {
    common::on_postgres(|url, owner| async move { run(&url, &owner).await });
}

async fn run(url: &str, owner: &str) {
    let (server, proofs) = common::serve_on_postgres(url, owner, CLIENTS, &[]).await;
    let addr = server.addr;

    // A tenant, a sender and a beneficiary, a merchant, and one big mandate.
    let (_, scoped) = server.tenant().await;
    let users = server
        .users(
            &scoped,
            &[
                ("sender@bench.test", Role::Sender),
                ("beneficiary@bench.test", Role::Beneficiary),
            ],
        )
        .await;
    let origin = Origin::default();
    let sender = Caller {
        user_id: users[0],
        roles: vec![Role::Sender, Role::Admin],
    };
    let act = Act {
        actor: Actor::User(users[0]),
        origin: &origin,
        psp: "simulated",
    };
    let txn = scoped.begin().await.expect("begin");
    let category = spend::create_category(&txn, act, &sender, "GROCERIES", "Groceries")
        .await
        .expect("category");
    let shop = spend::create_merchant(&txn, act, &sender, "FreshMart", category.id, true)
        .await
        .expect("merchant");
    let mandate = spend::grant(
        &txn,
        act,
        &sender,
        NewMandate {
            beneficiary_id: users[1],
            total: Decimal::new(1_000_000_000, 2),
            currency: "EUR".to_owned(),
            expires_at: chrono::Utc::now() + chrono::Duration::days(1),
            category_ids: vec![category.id],
            merchant_ids: vec![],
            per_purchase_limit: None,
            daily_limit: None,
            certified_only: false,
        },
    )
    .await
    .expect("mandate");
    txn.commit().await.expect("commit");
    let token = server.sign_in("beneficiary@bench.test").await;

    let endpoint = format!("http://{addr}/graphql");
    let mandate_id = ids::encode(Kind::Mandate, mandate.id);
    let merchant_id = ids::encode(Kind::Merchant, shop.id);
    let query = "mutation($m: ID!, $s: ID!, $k: String!) { createPurchase(input: { mandateId: $m, merchantId: $s, amount: \"1.00\", idempotencyKey: $k }) { purchase { id } } }";
    println!(
        "sequestra spend contention benchmark ({} cores, PostgreSQL, {CLIENTS} clients, {SECONDS} s, one mandate)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let started = Instant::now();
    let stop = started + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, endpoint, token, mandate_id, merchant_id) = (
            reqwest::Client::new(),
            endpoint.clone(),
            token.clone(),
            mandate_id.clone(),
            merchant_id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0usize;
            while Instant::now() < stop {
                let t = Instant::now();
                let body = serde_json::json!({ "query": query, "variables": { "m": mandate_id, "s": merchant_id, "k": format!("c{c}-{i}") } });
                let response = client.post(&endpoint).bearer_auth(&token).json(&body).send().await.expect("request");
                let json: serde_json::Value = response.json().await.expect("json");
                assert!(json.get("errors").is_none(), "{json}");
                latencies.push(t.elapsed());
                i += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| common::pct(&latencies, p);
    let purchases = latencies.len() as f64 / elapsed;
    println!(
        "createPurchase over HTTP        {:>8.0} purchases/s   n={}  p50={:.2} ms  p99={:.2} ms",
        purchases,
        latencies.len(),
        pct(0.5),
        pct(0.99)
    );
    // The invariant held under the load (read as the owner: the server's role sees
    // no row outside a tenant's row-level security wall).
    let db = sea_orm::Database::connect(owner)
        .await
        .expect("owner connection");
    let row = db
        .query_one(sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!("SELECT spent_minor, (SELECT count(*) FROM purchases) AS n FROM mandates WHERE id = '{}'", mandate.id),
        ))
        .await
        .expect("query")
        .expect("row");
    let spent: i64 = row.try_get("", "spent_minor").expect("spent");
    let n: i64 = row.try_get("", "n").expect("n");
    assert_eq!(spent, n * 100, "spent equals the sum of the purchases");

    // The bare conditional UPDATE on one row, with pgbench.
    db.execute_unprepared(
        "CREATE TABLE bench_mandate (id int PRIMARY KEY, spent bigint NOT NULL, total bigint NOT NULL); \
         INSERT INTO bench_mandate VALUES (1, 0, 1000000000000)",
    )
    .await
    .expect("bench table");
    let script = proofs.path().join("update.sql");
    std::fs::write(
        &script,
        "UPDATE bench_mandate SET spent = spent + 100 WHERE id = 1 AND spent + 100 <= total;\n",
    )
    .expect("script");
    let output = std::process::Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &CLIENTS.to_string(),
            "-j",
            "2",
            "-T",
            &SECONDS.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(owner)
        .output();
    match output {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let tps = text
                .lines()
                .find(|l| l.starts_with("tps"))
                .unwrap_or("tps = ?")
                .to_owned();
            println!("bare UPDATE with pgbench        {tps}");
            if let Some(floor) = tps
                .split_whitespace()
                .nth(2)
                .and_then(|t| t.parse::<f64>().ok())
            {
                println!(
                    "  ratio: purchases / bare UPDATE = {:.2} (target >= 0.50); overspend 0",
                    purchases / floor
                );
            }
        }
        Ok(out) => println!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(err) => println!("pgbench not run ({err}); install postgresql-client"),
    }
}
