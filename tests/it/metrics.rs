//! `/metrics` for operators: on an address of its own and behind a token, with the
//! latency of each GraphQL operation by type and root field, the database pool, the
//! jobs' runs and last tick, payments by state and the open WebSockets.

use serde_json::json;

use crate::harness::{Backend, TestApp};

const TOKEN: &str = "4f1e9c2b7a6d3e8f0a5b1c7d9e2f4a6b8c0d1e3f";

async fn scrape(app: &TestApp, token: Option<&str>) -> (u16, String) {
    let addr = app.metrics_addr.expect("a metrics listener");
    let mut request = app.http.get(format!("http://{addr}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The line of `page` for `metric` whose labels include all of `labels`.
fn line<'a>(page: &'a str, metric: &str, labels: &[&str]) -> Option<&'a str> {
    page.lines().find(|l| {
        l.starts_with(&format!("{metric}{{")) && labels.iter().all(|label| l.contains(label))
            || (labels.is_empty() && l.starts_with(&format!("{metric} ")))
    })
}

fn value(line: &str) -> f64 {
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_stand_apart_behind_a_token_and_tell_what_operators_watch() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("SEQUESTRA_METRICS_LISTEN", "127.0.0.1:0"),
            ("SEQUESTRA_METRICS_TOKEN", TOKEN),
            ("SEQUESTRA_JOBS_ENABLED", "true"),
            ("SEQUESTRA_JOBS_INTERVAL_MS", "100"),
        ],
    )
    .await
    .expect("sqlite always runs");

    // Not on the main address; on its own, only with the token.
    let main = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(main.status().as_u16(), 404);
    assert_eq!(scrape(&app, None).await.0, 401);
    assert_eq!(scrape(&app, Some("not-the-token")).await.0, 401);

    let t = app.tenant("acme").await;
    app.gql(None, "{ serverTime }", json!({})).await.ok();
    crate::escrow::create_escrow(
        &app,
        &t,
        "10.00",
        json!([]),
        None,
        chrono::Duration::days(3),
    )
    .await;
    let mut socket = crate::ws::connect(&app).await;
    crate::ws::init(&mut socket, t.token(sequestra::auth::Role::Sender)).await;

    // The jobs tick every 100 ms: their runs and the payments appear.
    let mut page = String::new();
    for _ in 0..100 {
        let (status, text) = scrape(&app, Some(TOKEN)).await;
        assert_eq!(status, 200);
        page = text;
        if line(
            &page,
            "jobs_runs_total",
            &["job=\"tick\"", "outcome=\"ok\""],
        )
        .is_some()
            && line(&page, "payments", &["state=\"SETTLED\""]).is_some()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // (The metrics are the process's: other tests' servers count too, so the figures
    // are at least what this one did.)
    for (metric, labels) in [
        (
            "graphql_operation_duration_seconds_count",
            &["type=\"query\"", "root=\"serverTime\""][..],
        ),
        (
            "graphql_operation_duration_seconds_count",
            &["type=\"mutation\"", "root=\"createEscrow\""][..],
        ),
        ("db_pool_connections", &["state=\"idle\""][..]),
        ("db_pool_connections", &["state=\"in_use\""][..]),
        ("jobs_runs_total", &["job=\"tick\"", "outcome=\"ok\""][..]),
        ("payments", &["state=\"PENDING\""][..]),
    ] {
        assert!(
            line(&page, metric, labels).is_some(),
            "{metric} {labels:?} in:\n{page}"
        );
    }
    assert!(
        value(
            line(
                &page,
                "graphql_operation_duration_seconds_count",
                &["root=\"serverTime\""]
            )
            .unwrap()
        ) >= 1.0
    );
    assert!(
        value(line(&page, "websocket_connections", &[]).expect("websocket_connections")) >= 1.0
    );
    assert!(
        value(line(&page, "db_pool_max_connections", &[]).expect("db_pool_max_connections")) >= 1.0
    );
    let age =
        value(line(&page, "jobs_last_tick_age_seconds", &[]).expect("jobs_last_tick_age_seconds"));
    assert!((0.0..10.0).contains(&age), "{age}");
    drop(socket);
}
