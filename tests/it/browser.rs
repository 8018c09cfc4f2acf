//! What a browser sees at the edge: CORS for the configured origins only, the same
//! list for WebSocket upgrades, security headers on every answer, `no-store` on
//! answers to credentialed requests, and the optional trusted-host list. The edge
//! does not touch the database: SQLite only.

use reqwest::{Method, StatusCode, header};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{Backend, TestApp};

const APP: &str = "https://app.example";

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.http
        .request(Method::OPTIONS, app.url("/graphql"))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type,idempotency-key",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_admits_the_configured_origins_only() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("SEQUESTRA_CORS_ORIGINS", APP)])
        .await
        .unwrap();
    let allowed = preflight(&app, APP).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let h = allowed.headers();
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], APP);
    assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "600");
    let allowed_headers = h[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["authorization", "content-type", "idempotency-key"] {
        assert!(allowed_headers.contains(name), "{allowed_headers}");
    }
    assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));

    let other = preflight(&app, "https://evil.example").await;
    assert!(
        !other
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );

    // The request itself, from the allowed origin, with a token.
    let t = app.tenant("acme").await;
    let r = app
        .http
        .post(app.url("/graphql"))
        .header(header::ORIGIN, APP)
        .bearer_auth(t.token(sequestra::auth::Role::Sender))
        .json(&json!({ "query": "{ viewer { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], APP);
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_list_no_origin_is_admitted() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let r = preflight(&app, APP).await;
    assert!(
        !r.headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_security_headers() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("SEQUESTRA_HSTS", "true")])
        .await
        .unwrap();
    let anonymous_graphql = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    for (what, r) in [
        ("graphql", anonymous_graphql),
        (
            "health",
            app.http.get(app.url("/health")).send().await.unwrap(),
        ),
        (
            "not found",
            app.http.get(app.url("/nowhere")).send().await.unwrap(),
        ),
    ] {
        let h = r.headers();
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{what}");
        assert_eq!(
            h[header::CONTENT_SECURITY_POLICY],
            "default-src 'none'; frame-ancestors 'none'",
            "{what}"
        );
        assert!(
            h[header::STRICT_TRANSPORT_SECURITY]
                .to_str()
                .unwrap()
                .starts_with("max-age="),
            "{what}"
        );
    }
    // Credentials make any answer uncacheable, not only GraphQL's (which always is).
    let credentialed = app
        .http
        .get(app.url("/health"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(credentialed.headers()[header::CACHE_CONTROL], "no-store");
    // The playground's page keeps its own, stricter-for-HTML policy.
    let page = app.http.get(app.url("/playground/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_checked_against_the_same_origins() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("SEQUESTRA_CORS_ORIGINS", APP)])
        .await
        .unwrap();
    let own = format!("http://{}", app.addr);
    for (origin, admitted) in [
        (Some(APP), true),
        (Some(own.as_str()), true),
        (None, true),
        (Some("https://evil.example"), false),
    ] {
        let mut request = app.ws_url().into_client_request().unwrap();
        let h = request.headers_mut();
        h.insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        if let Some(origin) = origin {
            h.insert("Origin", origin.parse().unwrap());
        }
        let outcome = tokio_tungstenite::connect_async(request).await;
        match (admitted, outcome) {
            (true, Ok(_)) => {}
            (false, Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin:?}");
            }
            (admitted, outcome) => panic!(
                "{origin:?}: admitted {admitted} expected, got {:?}",
                outcome.map(|(_, r)| r.status())
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_hosts_are_refused() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("SEQUESTRA_TRUSTED_HOSTS", "api.example")],
    )
    .await
    .unwrap();
    let direct = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(direct.status(), StatusCode::BAD_REQUEST);
    let named = app
        .http
        .get(app.url("/health"))
        .header(header::HOST, "API.example:443")
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), StatusCode::OK);
}
