//! `cargo bench --bench document_limits`: how fast each kind of oversized document is
//! refused (p50/p99 per kind: fragment chains, depth, aliases, page sizes, sheer
//! size), and how many ordinary queries the server answers per second meanwhile,
//! next to the same ordinary load alone. Server and clients in one process on
//! loopback, SQLite in a temp dir, an authenticated ADMIN.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use sequestra::{auth::Role, graphql::limits::fragment_chain as fragments};

const ORDINARY_CLIENTS: usize = 8;
const BOMB_CLIENTS: usize = 2;
const PER_KIND: usize = 200;
const ALONE_FOR: Duration = Duration::from_secs(3);

fn bombs() -> Vec<(&'static str, String)> {
    let aliases: String = (0..500).map(|i| format!("a{i}: serverTime ")).collect();
    let pages: String = (0..20)
        .map(|i| format!("e{i}: escrows(first: 100) {{ edges {{ node {{ milestones {{ proofs {{ id }} }} payments {{ id }} events {{ kind }} }} }} }} "))
        .collect();
    vec![
        ("fragments (60 levels, 2^60 fields)", fragments(60)),
        (
            "fields (1200 in one selection)",
            format!("{{ viewer {{ {} }} }}", "id ".repeat(1200)),
        ),
        ("aliases (500)", format!("{{ {aliases} }}")),
        (
            "page sizes (20 x escrows(first: 100))",
            format!("{{ {pages} }}"),
        ),
        (
            "document bytes (100 KB)",
            format!("{{ serverTime {} }}", "# padding\n".repeat(10_000)),
        ),
        (
            "depth (40 levels)",
            format!("{{ {} id {} }}", "viewer { ".repeat(40), "} ".repeat(40)),
        ),
    ]
}

fn main() {
    common::block_on(run());
}

async fn ordinary_load(
    endpoint: Arc<String>,
    token: Arc<String>,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
) {
    let client = reqwest::Client::new();
    let body = serde_json::json!({ "query": "{ viewer { id email roles } serverTime }" });
    while !stop.load(Ordering::Relaxed) {
        let response = client
            .post(endpoint.as_str())
            .bearer_auth(token.as_str())
            .json(&body)
            .send()
            .await
            .expect("ordinary request");
        assert!(response.status().is_success());
        let _ = response.bytes().await;
        served.fetch_add(1, Ordering::Relaxed);
    }
}

async fn measure_ordinary(
    endpoint: &Arc<String>,
    token: &Arc<String>,
    during: impl std::future::Future<Output = ()>,
) -> (f64, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..ORDINARY_CLIENTS)
        .map(|_| {
            tokio::spawn(ordinary_load(
                endpoint.clone(),
                token.clone(),
                stop.clone(),
                served.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    during.await;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    (
        served.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        elapsed,
    )
}

async fn run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/bench.db?mode=rwc", dir.path().display());
    let server = common::serve(&[
        ("SEQUESTRA_DATABASE_URL", url.as_str()),
        ("SEQUESTRA_LISTEN", "127.0.0.1:0"),
        ("SEQUESTRA_RATE_LIMIT_PER_SECOND", "1000000"),
        ("SEQUESTRA_RATE_LIMIT_BURST", "1000000"),
        ("SEQUESTRA_BODY_LIMIT_BYTES", "1048576"),
        ("SEQUESTRA_LOG", "warn"),
    ])
    .await;
    let (_, scoped) = server.tenant().await;
    server
        .users(&scoped, &[("admin@bench.test", Role::Admin)])
        .await;
    let token = Arc::new(server.sign_in("admin@bench.test").await);
    let endpoint = Arc::new(format!("http://{}/graphql", server.addr));

    let (alone, _) = measure_ordinary(&endpoint, &token, tokio::time::sleep(ALONE_FOR)).await;
    println!("ordinary queries alone ({ORDINARY_CLIENTS} clients): {alone:>8.0} /s");

    for (kind, document) in bombs() {
        let document = Arc::new(document);
        let samples = Arc::new(std::sync::Mutex::new(Vec::with_capacity(PER_KIND)));
        let bombing = {
            let (endpoint, token, document, samples) = (
                endpoint.clone(),
                token.clone(),
                document.clone(),
                samples.clone(),
            );
            async move {
                let tasks: Vec<_> = (0..BOMB_CLIENTS)
                    .map(|_| {
                        let (endpoint, token, document, samples) = (
                            endpoint.clone(),
                            token.clone(),
                            document.clone(),
                            samples.clone(),
                        );
                        tokio::spawn(async move {
                            let client = reqwest::Client::new();
                            let body = serde_json::json!({ "query": document.as_str() });
                            for _ in 0..PER_KIND / BOMB_CLIENTS {
                                let started = Instant::now();
                                let response: serde_json::Value = client
                                    .post(endpoint.as_str())
                                    .bearer_auth(token.as_str())
                                    .json(&body)
                                    .send()
                                    .await
                                    .expect("bomb")
                                    .json()
                                    .await
                                    .expect("json");
                                let took = started.elapsed();
                                let code = response["errors"][0]["extensions"]["code"].clone();
                                assert!(
                                    code == "QUERY_TOO_COMPLEX" || code == "BAD_USER_INPUT",
                                    "{kind}: not refused: {response}"
                                );
                                samples.lock().unwrap().push(took);
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("bomb client");
                }
            }
        };
        let (rate, elapsed) = measure_ordinary(&endpoint, &token, bombing).await;
        let mut samples = std::mem::take(&mut *samples.lock().unwrap());
        samples.sort();
        let (p50, p99) = (common::pct(&samples, 0.5), common::pct(&samples, 0.99));
        println!(
            "{kind:<40} refused p50={p50:>7.2} ms p99={p99:>7.2} ms; ordinary meanwhile {rate:>8.0} /s ({:.0} % of alone, {:.1} s)",
            100.0 * rate / alone,
            elapsed.as_secs_f64()
        );
    }
}
