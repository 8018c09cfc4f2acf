//! `/playground`: the embedded GraphiQL build, its security headers, and the switch.
//! (The page itself is driven in a real browser by `.ci/browser/playground.mjs`.)

use crate::harness::{Backend, TestApp};

const CSP: &str = "content-security-policy";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_with_a_strict_policy_and_switchable() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let page = app.http.get(app.url("/playground/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let policy = headers[CSP].to_str().unwrap().to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe-eval"), "{policy}");
    assert!(!policy.contains("http"), "no other origin: {policy}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    // No inline script, nothing from another origin: every script is a file of ours.
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a script tag")
        .to_owned();
    assert!(script.starts_with("/playground/assets/"), "{script}");
    let js = app.http.get(app.url(&script)).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    assert!(js.headers()[CSP].to_str().is_ok());
    assert_eq!(
        app.http
            .get(app.url("/playground/assets/nope.js"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // `/playground` sends the browser to the page.
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/playground"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/playground/");

    let off = TestApp::spawn_with(Backend::Sqlite, &[("SEQUESTRA_PLAYGROUND", "false")])
        .await
        .unwrap();
    let page = off.http.get(off.url("/playground/")).send().await.unwrap();
    assert_eq!(page.status(), 404);
}
