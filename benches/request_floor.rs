//! `cargo bench --bench request_floor`: requests per second for `{ __typename }`
//! through the server, anonymous and with a bearer token, next to the floor: a bare
//! async-graphql schema behind a minimal axum handler on the same tokio runtime.
//! Rounds are interleaved (bare, anonymous, token, twice) so the ratios come from the
//! same conditions; clients and servers share this process and the machine's cores.
//! The server logs at `info` (its default) unless `SEQUESTRA_BENCH_LOG` says otherwise.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
use axum::{Router, body::Bytes, extract::State, routing::post};
use sequestra::auth::Role;

const CLIENTS: usize = 16;
const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 2;

struct Bare;

#[Object]
impl Bare {
    async fn ok(&self) -> bool {
        true
    }
}

type BareSchema = Schema<Bare, EmptyMutation, EmptySubscription>;

async fn bare_handler(State(schema): State<BareSchema>, body: Bytes) -> Vec<u8> {
    let request: async_graphql::Request = serde_json::from_slice(&body).expect("request");
    serde_json::to_vec(&schema.execute(request).await).expect("response")
}

async fn serve_bare() -> SocketAddr {
    let schema = Schema::new(Bare, EmptyMutation, EmptySubscription);
    let app = Router::new()
        .route("/graphql", post(bare_handler))
        .with_state(schema);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Requests answered per second by `CLIENTS` clients posting `{ __typename }`.
async fn rate(url: &str, token: Option<&str>) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let body = br#"{"query":"{ __typename }"}"#.to_vec();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, done, url, body) =
                (stop.clone(), done.clone(), url.to_owned(), body.clone());
            let token = token.map(str::to_owned);
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let mut request = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone());
                    if let Some(token) = &token {
                        request = request.bearer_auth(token);
                    }
                    let response = request.send().await.expect("request");
                    assert!(response.status().is_success(), "{}", response.status());
                    let _ = response.bytes().await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(ROUND).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for w in workers {
        w.await.expect("client");
    }
    done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
}

fn main() {
    common::block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/bench.db?mode=rwc", dir.path().display());
    // The server's default level unless SEQUESTRA_BENCH_LOG says otherwise.
    let log = std::env::var("SEQUESTRA_BENCH_LOG").unwrap_or_else(|_| "info".to_owned());
    let server = common::serve(&[
        ("SEQUESTRA_DATABASE_URL", url.as_str()),
        ("SEQUESTRA_LISTEN", "127.0.0.1:0"),
        ("SEQUESTRA_RATE_LIMIT_PER_SECOND", "1000000"),
        ("SEQUESTRA_RATE_LIMIT_BURST", "1000000"),
        ("SEQUESTRA_LOG", log.as_str()),
    ])
    .await;
    let (_, scoped) = server.tenant().await;
    server
        .users(&scoped, &[("reader@bench.test", Role::Support)])
        .await;
    let token = server.sign_in("reader@bench.test").await;
    let ours = format!("http://{}/graphql", server.addr);
    let bare = format!("http://{}/graphql", serve_bare().await);

    let (mut floor, mut anonymous, mut bearer) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        floor.push(rate(&bare, None).await);
        anonymous.push(rate(&ours, None).await);
        bearer.push(rate(&ours, Some(&token)).await);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (floor, anonymous, bearer) = (mean(&floor), mean(&anonymous), mean(&bearer));
    println!(
        "{{ __typename }}, {CLIENTS} clients, {ROUNDS} interleaved rounds of {ROUND:?}, SQLite, log level {log}:"
    );
    println!("  bare async-graphql + axum   {floor:>9.0} /s");
    println!(
        "  sequestra, anonymous        {anonymous:>9.0} /s   {:.2} of bare",
        anonymous / floor
    );
    println!(
        "  sequestra, bearer token     {bearer:>9.0} /s   {:.2} of bare",
        bearer / floor
    );
}
