//! Per-client-address limits through the real port. The forwarded addresses below are
//! only header values: no traffic goes anywhere but the loopback test server.

use serde_json::json;

use crate::harness::{Backend, TestApp};

/// An anonymous `{ __typename }` from this test's address.
async fn typename(app: &TestApp) -> reqwest::Response {
    app.http
        .post(app.url("/graphql"))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap()
}

async fn sign_in_from(app: &TestApp, forwarded_for: Option<&str>, n: usize) -> Option<String> {
    let mut request = app.http.post(app.url("/graphql")).json(&json!({
        "query": format!(r#"mutation {{ signIn(input: {{ tenant: "acme", email: "nobody{n}@acme.test", password: "wrong password {n}" }}) {{ accessToken }} }}"#)
    }));
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    let body: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_requests_over_the_limit_get_429() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("SEQUESTRA_RATE_LIMIT_PER_SECOND", "1"),
            ("SEQUESTRA_RATE_LIMIT_BURST", "3"),
        ],
    )
    .await
    .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = typename(&app).await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(
                r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= 1
            );
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    // Health checks are not rate limited.
    for _ in 0..5 {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_checks_are_limited_per_client_address() {
    // Behind a trusted proxy: each forwarded client has its own budget.
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("SEQUESTRA_CREDENTIAL_ATTEMPTS_PER_MINUTE", "3"),
            ("SEQUESTRA_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await
    .unwrap();
    app.tenant("acme").await;
    for n in 0..3 {
        assert_eq!(
            sign_in_from(&app, Some("198.51.100.7"), n).await.as_deref(),
            Some("UNAUTHENTICATED")
        );
    }
    assert_eq!(
        sign_in_from(&app, Some("198.51.100.7"), 3).await.as_deref(),
        Some("RATE_LIMITED")
    );
    assert_eq!(
        sign_in_from(&app, Some("198.51.100.8"), 4).await.as_deref(),
        Some("UNAUTHENTICATED")
    );

    // Without a trusted proxy the header is ignored: spoofing it buys nothing.
    let direct = TestApp::spawn_with(
        Backend::Sqlite,
        &[("SEQUESTRA_CREDENTIAL_ATTEMPTS_PER_MINUTE", "3")],
    )
    .await
    .unwrap();
    direct.tenant("acme").await;
    for n in 0..3 {
        let spoofed = format!("192.0.2.{n}");
        assert_eq!(
            sign_in_from(&direct, Some(&spoofed), n).await.as_deref(),
            Some("UNAUTHENTICATED")
        );
    }
    assert_eq!(
        sign_in_from(&direct, Some("192.0.2.99"), 9)
            .await
            .as_deref(),
        Some("RATE_LIMITED")
    );
}

/// Operations over a WebSocket count against the same per-address limit as HTTP: 400
/// queries sent at once over one socket with a limit of 50 per second (burst 50) get
/// about 50 answers and `RATE_LIMITED` errors for the rest; an address that spent its
/// budget on HTTP is limited on its socket too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_operations_count_against_the_same_limit() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("SEQUESTRA_RATE_LIMIT_PER_SECOND", "50"),
            ("SEQUESTRA_RATE_LIMIT_BURST", "50"),
            ("SEQUESTRA_WS_MAX_OPERATIONS_PER_SOCKET", "1000"),
            ("SEQUESTRA_WS_MAX_OPERATIONS_PER_USER", "1000"),
        ],
    )
    .await
    .unwrap();
    let acme = app.tenant("acme").await;
    let mut socket = crate::ws::connect(&app).await;
    crate::ws::init(&mut socket, acme.token(sequestra::auth::Role::Sender)).await;

    // One budget: HTTP spends it, the socket finds it spent.
    let mut statuses = 0;
    loop {
        statuses += 1;
        if typename(&app).await.status() == 429 {
            break;
        }
        assert!(statuses < 200, "HTTP never limited");
    }
    for i in 0..10 {
        let msg = json!({ "id": format!("h{i}"), "type": "subscribe", "payload": { "query": "{ __typename }" } });
        socket.feed(Message::text(msg.to_string())).await.unwrap();
    }
    socket.flush().await.unwrap();
    let mut spent = 0;
    let mut seen = 0;
    while seen < 10 {
        let msg = crate::ws::next_json(&mut socket).await;
        match msg["type"].as_str() {
            Some("error") => {
                spent += 1;
                seen += 1;
            }
            Some("next") => seen += 1,
            _ => {}
        }
    }
    assert!(
        spent >= 5,
        "{spent} of 10 socket operations limited after HTTP spent the budget"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let started = std::time::Instant::now();
    for i in 0..400 {
        let msg = json!({ "id": i.to_string(), "type": "subscribe", "payload": { "query": "{ __typename }" } });
        socket.feed(Message::text(msg.to_string())).await.unwrap();
    }
    socket.flush().await.unwrap();
    let (mut answered, mut limited) = (0, 0);
    while answered + limited < 400 {
        let msg = crate::ws::next_json(&mut socket).await;
        match msg["type"].as_str() {
            Some("next") => answered += 1,
            Some("error") => {
                assert_eq!(
                    msg["payload"][0]["extensions"]["code"], "RATE_LIMITED",
                    "{msg}"
                );
                assert!(msg["payload"][0]["extensions"]["retryAfter"].as_u64() >= Some(1));
                limited += 1;
            }
            _ => {}
        }
    }
    let elapsed = started.elapsed();
    let allowed = 50 + (elapsed.as_secs_f64() * 50.0).ceil() as usize;
    assert!(
        answered <= allowed,
        "{answered} answered in {elapsed:?} (at most {allowed})"
    );
    assert!(limited >= 400 - allowed, "{limited} limited");
    crate::harness::report(&format!(
        "ws rate limit: 400 operations over one socket at 50/s: {answered} answered, {limited} RATE_LIMITED in {elapsed:?}"
    ));
}
