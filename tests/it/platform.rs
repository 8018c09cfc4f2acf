//! Health, readiness, metrics, request ids, limits and shutdown through the real port.

use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::on_both_backends;

on_both_backends!(
    ready_reports_pending_migrations,
    health_ready_and_metrics_answer,
    request_ids_are_kept_or_replaced,
    body_limit_answers_413,
    graceful_shutdown_stops_the_server,
);

async fn health_ready_and_metrics_answer(app: TestApp) {
    let health = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({ "status": "ok" })
    );

    let ready = app.http.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["status"], "ok");
    assert_eq!(body["checks"]["migrations"]["status"], "ok");
    assert!(app.migrations_pending().await.is_empty());

    // An error, so the error counter has a series too.
    let r = app.gql(None, "{ viewer { id } }", json!({})).await;
    assert_eq!(r.code(), Some("UNAUTHENTICATED"));

    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "Prometheus text format"
    );
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"}"),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket{method=\"POST\",route=\"/graphql\""),
        "{text}"
    );
    assert!(
        text.contains("graphql_errors_total{code=\"UNAUTHENTICATED\"}"),
        "{text}"
    );

    // A made-up method is counted as OTHER: a client cannot mint a series per method.
    let odd = reqwest::Method::from_bytes(b"FROBNICATE").unwrap();
    let answer = app
        .http
        .request(odd, app.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 405);
    // The series' handles are made once and kept: later requests still count.
    let health_count = |text: &str| -> f64 {
        let series = "http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} ";
        text.lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series}in {text}"))
    };
    let before = health_count(&text);
    for _ in 0..3 {
        let health = app.http.get(app.url("/health")).send().await.unwrap();
        assert_eq!(health.status(), 200);
    }
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(health_count(&text) >= before + 3.0, "{text}");
    assert!(
        text.contains("http_requests_total{method=\"OTHER\",route=\"/health\",status=\"405\"}"),
        "{text}"
    );
    assert!(!text.contains("FROBNICATE"), "{text}");
}

async fn request_ids_are_kept_or_replaced(app: TestApp) {
    let kept = app
        .http
        .get(app.url("/health"))
        .header("x-request-id", "client-chosen-id-123")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "client-chosen-id-123");

    let replaced = app
        .http
        .get(app.url("/health"))
        .header("x-request-id", "bad id with spaces <script>")
        .send()
        .await
        .unwrap();
    let id = replaced.headers()["x-request-id"].to_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "replaced by a fresh uuid, got {id}"
    );

    let generated = app.http.get(app.url("/nowhere")).send().await.unwrap();
    assert_eq!(generated.status(), 404);
    assert!(generated.headers().contains_key("x-request-id"));
}

async fn body_limit_answers_413(app: TestApp) {
    let padding = "x".repeat(2 * 1024 * 1024);
    let response = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(json!({ "query": format!("{{ __typename }} # {padding}") }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

async fn graceful_shutdown_stops_the_server(app: TestApp) {
    let addr = app.addr;
    app.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens after shutdown"
    );
}

/// With a migration missing, the server is alive but not ready, and says which
/// migrations are pending.
async fn ready_reports_pending_migrations(app: TestApp) {
    use migration::MigratorTrait;
    // Undo the last migration on this database, as an older schema would be.
    migration::Migrator::down(&app.db, Some(1)).await.unwrap();
    let ready = app.http.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["migrations"]["status"], "pending");
    assert_eq!(
        body["checks"]["migrations"]["pending"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.http
            .get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
