//! `cargo bench --bench signin_burst`: sign-in latency, and the latency of a cheap
//! authenticated query alone and during a burst of concurrent sign-ins, through the
//! real HTTP edge on loopback (server and client in one process, SQLite in a temp dir).

mod common;

use std::time::{Duration, Instant};

use common::PASSWORD;
use sequestra::auth::Role;

const SIGN_INS_SEQUENTIAL: usize = 20;
const CHEAP_SAMPLES: usize = 500;
const BURST: usize = 64;
const BURST_CONCURRENCY: usize = 16;

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    common::pct(samples, p)
}

fn report(label: &str, mut samples: Vec<Duration>) {
    let n = samples.len();
    let p50 = pct(&mut samples, 0.50);
    let p99 = pct(&mut samples, 0.99);
    let max = pct(&mut samples, 1.0);
    println!("{label:<58} n={n:<5} p50={p50:>8.2} ms  p99={p99:>8.2} ms  max={max:>8.2} ms");
}

async fn timed_post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> Duration {
    let started = Instant::now();
    let mut request = client.post(url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    assert!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    let _ = response.bytes().await;
    started.elapsed()
}

fn main() {
    common::block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/bench.db?mode=rwc", dir.path().display());
    let server = common::serve(&[
        ("SEQUESTRA_DATABASE_URL", url.as_str()),
        ("SEQUESTRA_LISTEN", "127.0.0.1:0"),
        ("SEQUESTRA_RATE_LIMIT_PER_SECOND", "1000"),
        ("SEQUESTRA_RATE_LIMIT_BURST", "100000"),
        ("SEQUESTRA_CREDENTIAL_ATTEMPTS_PER_MINUTE", "100000"),
        ("SEQUESTRA_LOG", "warn"),
    ])
    .await;
    let addr = server.addr;

    // One tenant, a reader, and one account per concurrent signer (no lockouts).
    let (_, scoped) = server.tenant().await;
    let emails: Vec<String> = (0..=BURST_CONCURRENCY)
        .map(|i| format!("user{i}@bench.test"))
        .collect();
    let users: Vec<(&str, Role)> = emails.iter().map(|e| (e.as_str(), Role::Support)).collect();
    server.users(&scoped, &users).await;
    let token = server.sign_in("user0@bench.test").await;

    let endpoint = format!("http://{addr}/graphql");
    let client = reqwest::Client::new();
    let cheap = serde_json::json!({ "query": "{ viewer { id email } }" });
    let sign_in_body = |i: usize| {
        serde_json::json!({ "query": format!(
            r#"mutation {{ signIn(input: {{ tenant: "bench", email: "user{i}@bench.test", password: "{PASSWORD}" }}) {{ accessToken }} }}"#
        ) })
    };

    println!(
        "sequestra sign-in benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for _ in 0..20 {
        timed_post(&client, &endpoint, Some(&token), &cheap).await; // warm up
    }

    let mut samples = Vec::new();
    for i in 0..SIGN_INS_SEQUENTIAL {
        samples.push(
            timed_post(
                &client,
                &endpoint,
                None,
                &sign_in_body(1 + i % BURST_CONCURRENCY),
            )
            .await,
        );
    }
    report("signIn, one at a time", samples);

    let mut samples = Vec::new();
    for _ in 0..CHEAP_SAMPLES {
        samples.push(timed_post(&client, &endpoint, Some(&token), &cheap).await);
    }
    report("cheap query `{ viewer { id email } }`, alone", samples);

    // The burst: BURST sign-ins, BURST_CONCURRENCY at a time, while the cheap query loops.
    let burst_started = Instant::now();
    let burst = {
        let client = client.clone();
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(BURST_CONCURRENCY));
            let mut tasks = Vec::new();
            for i in 0..BURST {
                let permit = semaphore.clone().acquire_owned().await.expect("permit");
                let (client, endpoint, body) = (
                    client.clone(),
                    endpoint.clone(),
                    sign_in_body(1 + i % BURST_CONCURRENCY),
                );
                tasks.push(tokio::spawn(async move {
                    let d = timed_post(&client, &endpoint, None, &body).await;
                    drop(permit);
                    d
                }));
            }
            let mut durations = Vec::new();
            for t in tasks {
                durations.push(t.await.expect("sign-in task"));
            }
            durations
        })
    };
    let mut during = Vec::new();
    while !burst.is_finished() {
        during.push(timed_post(&client, &endpoint, Some(&token), &cheap).await);
    }
    let burst_durations = burst.await.expect("burst");
    let burst_secs = burst_started.elapsed().as_secs_f64();
    report(
        &format!("cheap query during {BURST} sign-ins ({BURST_CONCURRENCY} concurrent)"),
        during,
    );
    report("signIn inside that burst", burst_durations);
    println!(
        "burst throughput: {:.1} sign-ins/s over {burst_secs:.2} s",
        BURST as f64 / burst_secs
    );
}
