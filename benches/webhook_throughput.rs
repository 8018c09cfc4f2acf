//! `cargo bench --bench webhook_throughput`: PSP webhooks accepted per second on
//! PostgreSQL through the real route (signature, dedup row, forward-only
//! transition, audit, attempt history, NOTIFY), and the latency from posting a
//! webhook to a WebSocket subscriber (`myPaymentUpdates`) receiving the update.
//!
//! 1. Throughput: `CLIENTS` concurrent clients post one signed `payout.settled` per
//!    SENT payment until all `PAYMENTS` are settled; a subscriber is connected
//!    throughout and must receive every one (latency under that load is printed).
//! 2. Latency at rest: `SAMPLES` webhooks posted one at a time, each timed from the
//!    POST to the subscriber's frame.
//!
//! PostgreSQL: `SEQUESTRA_BENCH_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) must be allowed to create and drop
//! databases; a fresh one is used and dropped.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::pct;
use futures_util::StreamExt;
use sea_orm::ConnectionTrait;
use sequestra::{auth::Role, payments::Payee};
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 16;
const PAYMENTS: usize = 4000;
const SAMPLES: usize = 200;

fn main() {
    common::on_postgres(|url, owner| async move { bench(&url, &owner).await });
}

/// Sent-at instants by payment global id; the subscriber turns them into latencies.
type Clock = Arc<Mutex<HashMap<String, Instant>>>;

async fn bench(url: &str, owner: &str) {
    let (server, _proofs) = common::serve_on_postgres(
        url,
        owner,
        CLIENTS,
        &[
            ("SEQUESTRA_SIM_PSP_SETTLE_AFTER_MS", "0"),
            ("SEQUESTRA_WEBHOOK_SECRETS", common::WEBHOOK_SECRET),
        ],
    )
    .await;
    let addr = server.addr;

    // A tenant, an admin who follows every payment, and SENT payments to settle.
    let (_, scoped) = server.tenant().await;
    server
        .users(&scoped, &[("admin@bench.test", Role::Admin)])
        .await;
    let token = server.sign_in("admin@bench.test").await;
    let total = PAYMENTS + SAMPLES;
    let references = common::sent_payments(&scoped, total, "bench", |i| {
        Payee::External(format!("payee-{i}"))
    })
    .await;

    // The subscriber.
    let clock: Clock = Arc::default();
    let (latency_tx, mut latency_rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let mut socket =
        common::payment_updates(&addr.to_string(), &token, None, common::PAYMENT_UPDATES).await;
    let watch = clock.clone();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = socket.next().await {
            let Message::Text(text) = msg else { continue };
            let json: serde_json::Value = serde_json::from_str(&text).expect("json");
            let update = &json["payload"]["data"]["myPaymentUpdates"];
            if update["status"] != "SETTLED" {
                continue;
            }
            let id = update["id"].as_str().expect("id");
            if let Some(sent) = watch.lock().expect("clock").remove(id) {
                let _ = latency_tx.send(sent.elapsed());
            }
        }
    });
    // Let the subscription register (the first frame after ack).
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!(
        "sequestra webhook benchmark ({} cores, PostgreSQL, server, load and database on this machine)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let endpoint = addr.to_string();
    let work = Arc::new(Mutex::new(references[..PAYMENTS].to_vec()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, endpoint, work, clock) = (
            reqwest::Client::new(),
            endpoint.clone(),
            work.clone(),
            clock.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some((gid, reference)) = work.lock().expect("work").pop() else {
                    return latencies;
                };
                let t = Instant::now();
                clock.lock().expect("clock").insert(gid, t);
                post(&client, &endpoint, &reference).await;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut http = Vec::new();
    for task in tasks {
        http.extend(task.await.expect("client"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    http.sort();
    println!(
        "webhooks accepted (16 clients)  {:>8.0} events/s   n={}  p50={:.2} ms  p99={:.2} ms",
        http.len() as f64 / elapsed,
        http.len(),
        pct(&http, 0.5),
        pct(&http, 0.99)
    );
    let mut delivered = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.len() < PAYMENTS && Instant::now() < deadline {
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(1), latency_rx.recv()).await {
            delivered.push(d);
        }
    }
    delivered.sort();
    assert_eq!(
        delivered.len(),
        PAYMENTS,
        "every settlement reaches the subscriber"
    );
    println!(
        "  webhook -> subscriber, under that load:   p50={:.2} ms  p99={:.2} ms  max={:.2} ms",
        pct(&delivered, 0.5),
        pct(&delivered, 0.99),
        delivered.last().expect("some").as_secs_f64() * 1000.0
    );

    // At rest: one at a time.
    let client = reqwest::Client::new();
    let mut at_rest = Vec::new();
    for (gid, reference) in &references[PAYMENTS..] {
        clock
            .lock()
            .expect("clock")
            .insert(gid.clone(), Instant::now());
        post(&client, &endpoint, reference).await;
        let d = tokio::time::timeout(Duration::from_secs(5), latency_rx.recv())
            .await
            .expect("an update within 5 s")
            .expect("subscriber alive");
        at_rest.push(d);
    }
    at_rest.sort();
    println!(
        "webhook -> subscriber, one at a time       p50={:.2} ms  p99={:.2} ms  n={}",
        pct(&at_rest, 0.5),
        pct(&at_rest, 0.99),
        at_rest.len()
    );

    // Each event moved its payment exactly once (read as the owner: the server's
    // role sees no row outside a tenant's wall).
    let db = sea_orm::Database::connect(owner)
        .await
        .expect("owner connection");
    let row = db
        .query_one(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT (SELECT count(*) FROM payments WHERE status = 'SETTLED') AS settled, \
             (SELECT count(*) FROM webhook_events WHERE outcome = 'APPLIED') AS applied"
                .to_owned(),
        ))
        .await
        .expect("query")
        .expect("row");
    let settled: i64 = row.try_get("", "settled").expect("settled");
    let applied: i64 = row.try_get("", "applied").expect("applied");
    assert_eq!((settled, applied), (total as i64, total as i64));
}

async fn post(client: &reqwest::Client, addr: &str, reference: &str) {
    let json = common::post_settled(client, addr, reference).await;
    assert_eq!(json["outcome"], "applied", "{json}");
}
