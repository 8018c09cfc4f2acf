//! Sign-in, refresh rotation, sessions and brute-force limits through HTTP.

use sequestra::auth::Role;
use serde_json::json;

use crate::harness::{TestApp, TestTenant};
use crate::on_both_backends;

on_both_backends!(
    sign_in_issues_working_tokens_and_hides_why_it_failed,
    refresh_rotates_and_a_reused_token_revokes_the_session,
    sessions_are_listed_and_revoked_by_their_owner_only,
    repeated_failures_lock_the_account,
    aliases_cannot_multiply_sign_in_attempts,
    concurrent_refreshes_with_one_token_succeed_once,
    concurrent_failures_are_all_counted,
);

pub(crate) const SIGN_IN: &str = "mutation($input: SignInInput!) { signIn(input: $input) { accessToken refreshToken expiresAt mfaChallenge } }";
const REFRESH: &str = "mutation($t: String!) { refreshSession(input: { refreshToken: $t }) { accessToken refreshToken } }";

pub(crate) async fn sign_in(
    app: &TestApp,
    tenant: &str,
    email: &str,
    password: &str,
) -> crate::harness::GqlResponse {
    app.gql(
        None,
        SIGN_IN,
        json!({ "input": { "tenant": tenant, "email": email, "password": password } }),
    )
    .await
}

fn user(t: &TestTenant, role: Role) -> (&str, &str) {
    let u = t.user(role);
    (u.email.as_str(), u.password.as_str())
}

async fn sign_in_issues_working_tokens_and_hides_why_it_failed(app: TestApp) {
    let acme = app.tenant("acme").await;
    let (email, password) = user(&acme, Role::Sender);

    let r = sign_in(&app, "acme", &email.to_uppercase(), password).await;
    let tokens = r.ok()["signIn"].clone();
    let access = tokens["accessToken"].as_str().unwrap();
    assert!(
        tokens["refreshToken"]
            .as_str()
            .unwrap()
            .starts_with("sq_rt_")
    );
    let me = app
        .gql(Some(access), "{ viewer { email } }", json!({}))
        .await;
    assert_eq!(me.ok()["viewer"]["email"], email);

    // Wrong password, unknown email, unknown tenant: one answer.
    let mut bodies = Vec::new();
    for (tenant, email, password) in [
        ("acme", email, "wrong password entirely"),
        ("acme", "nobody@acme.test", password),
        ("no-such-tenant", email, password),
        ("acme", "not an email", password),
    ] {
        let r = sign_in(&app, tenant, email, password).await;
        assert_eq!(r.code(), Some("UNAUTHENTICATED"), "{tenant} {email}");
        bodies.push(r.body.to_string());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert!(!bodies[0].contains("password"), "no hint in {}", bodies[0]);

    let actions = app.audit_actions(&acme).await;
    assert!(actions.iter().any(|a| a == "auth.sign_in.succeeded"));
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "auth.sign_in.failed")
            .count(),
        3
    );
}

async fn refresh_rotates_and_a_reused_token_revokes_the_session(app: TestApp) {
    let acme = app.tenant("acme").await;
    let (email, password) = user(&acme, Role::Sender);
    let first = sign_in(&app, "acme", email, password).await.ok()["signIn"].clone();
    let r1 = first["refreshToken"].as_str().unwrap();

    let second = app.gql(None, REFRESH, json!({ "t": r1 })).await.ok()["refreshSession"].clone();
    let r2 = second["refreshToken"].as_str().unwrap();
    let a2 = second["accessToken"].as_str().unwrap();
    assert_ne!(r1, r2, "the refresh token rotates");
    assert_eq!(
        app.gql(Some(a2), "{ viewer { email } }", json!({}))
            .await
            .status,
        200
    );

    // r1 again: refused, and the whole session is revoked.
    let reuse = app.gql(None, REFRESH, json!({ "t": r1 })).await;
    assert_eq!(reuse.code(), Some("UNAUTHENTICATED"));
    assert_eq!(
        app.gql(Some(a2), "{ viewer { email } }", json!({}))
            .await
            .status,
        401
    );
    assert_eq!(
        app.gql(None, REFRESH, json!({ "t": r2 })).await.code(),
        Some("UNAUTHENTICATED")
    );
    assert!(
        app.audit_actions(&acme)
            .await
            .iter()
            .any(|a| a == "auth.refresh.reused")
    );

    for garbage in ["", "sq_rt_x", &r2.replace("sq_rt_", "sq_rt_0")] {
        assert_eq!(
            app.gql(None, REFRESH, json!({ "t": garbage })).await.code(),
            Some("UNAUTHENTICATED")
        );
    }
}

async fn sessions_are_listed_and_revoked_by_their_owner_only(app: TestApp) {
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let (email, password) = user(&acme, Role::Sender);
    let laptop = acme.token(Role::Sender).to_owned();
    let phone = app.sign_in("acme", email, password).await;
    let tablet = app.sign_in("acme", email, password).await;

    let list = app
        .gql(Some(&phone), "{ mySessions { id current } }", json!({}))
        .await;
    let sessions = list.ok()["mySessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);

    // Another user's session, same tenant or not: NOT_FOUND, nothing revoked.
    let laptop_id = sessions.iter().find(|s| s["current"] == false).unwrap()["id"].clone();
    let revoke = "mutation($id: ID!) { revokeSession(input: { id: $id }) { sessionId } }";
    for other in [acme.token(Role::Admin), globex.token(Role::Admin)] {
        let r = app
            .gql(Some(other), revoke, json!({ "id": laptop_id }))
            .await;
        assert_eq!(r.code(), Some("NOT_FOUND"), "{}", r.body);
    }
    let node = app
        .gql(
            Some(acme.token(Role::Admin)),
            "query($id: ID!) { node(id: $id) { id } }",
            json!({ "id": laptop_id }),
        )
        .await;
    assert_eq!(node.code(), Some("NOT_FOUND"));

    // The owner revokes the others; only the current one survives.
    let r = app
        .gql(
            Some(&phone),
            "mutation { revokeOtherSessions { revoked } }",
            json!({}),
        )
        .await;
    assert_eq!(r.ok()["revokeOtherSessions"]["revoked"], 2);
    for gone in [&laptop, &tablet] {
        assert_eq!(
            app.gql(Some(gone), "{ viewer { id } }", json!({}))
                .await
                .status,
            401
        );
    }
    let r = app
        .gql(
            Some(&phone),
            "mutation { signOut { sessionId } }",
            json!({}),
        )
        .await;
    assert!(r.ok()["signOut"]["sessionId"].is_string());
    assert_eq!(
        app.gql(Some(&phone), "{ viewer { id } }", json!({}))
            .await
            .status,
        401
    );
}

async fn repeated_failures_lock_the_account(app: TestApp) {
    let acme = app.tenant("acme").await;
    let (email, password) = user(&acme, Role::Beneficiary);
    for attempt in 1..=5 {
        let r = sign_in(&app, "acme", email, "definitely not it").await;
        assert_eq!(r.code(), Some("UNAUTHENTICATED"), "attempt {attempt}");
    }
    // Locked: even the right password is refused, with a retry-after.
    let r = sign_in(&app, "acme", email, password).await;
    assert_eq!(r.code(), Some("RATE_LIMITED"), "{}", r.body);
    let retry = r.body["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap();
    // The first lock lasts 15 minutes.
    assert!((840..=900).contains(&retry), "{retry}");
    // Another account is not affected.
    let (other, other_pw) = user(&acme, Role::Sender);
    assert!(
        sign_in(&app, "acme", other, other_pw)
            .await
            .body
            .get("errors")
            .is_none()
    );
}

async fn aliases_cannot_multiply_sign_in_attempts(app: TestApp) {
    let acme = app.tenant("acme").await;
    let (email, _) = user(&acme, Role::Support);
    let attempts: Vec<String> = (0..10)
        .map(|i| format!(r#"a{i}: signIn(input: {{ tenant: "acme", email: "{email}", password: "guess number {i}" }}) {{ accessToken }}"#))
        .collect();
    let r = app
        .gql(
            None,
            &format!("mutation {{ {} }}", attempts.join(" ")),
            json!({}),
        )
        .await;
    let errors = r.body["errors"].as_array().unwrap();
    let codes: Vec<&str> = errors
        .iter()
        .map(|e| e["extensions"]["code"].as_str().unwrap())
        .collect();
    // Mutations run in order and stop at the first failed non-null field; either way
    // no second password is ever checked.
    assert_eq!(
        codes.iter().filter(|c| **c == "UNAUTHENTICATED").count(),
        1,
        "{codes:?}"
    );
    assert!(
        codes
            .iter()
            .all(|c| *c == "UNAUTHENTICATED" || *c == "RATE_LIMITED"),
        "{codes:?}"
    );
    let failed = app
        .audit_actions(&acme)
        .await
        .into_iter()
        .filter(|a| a == "auth.sign_in.failed")
        .count();
    assert_eq!(failed, 1, "one password was checked");
}

/// Ten refreshes racing with one token: exactly one wins; the others are reuse, which
/// revokes the session; none is an internal error (no lost race inside the database).
async fn concurrent_refreshes_with_one_token_succeed_once(app: TestApp) {
    let acme = app.tenant("acme").await;
    let (email, password) = user(&acme, Role::Sender);
    let first = sign_in(&app, "acme", email, password).await.ok()["signIn"].clone();
    let token = first["refreshToken"].as_str().unwrap().to_owned();
    let mut racers = Vec::new();
    for _ in 0..10 {
        let (http, url, token) = (app.http.clone(), app.url("/graphql"), token.clone());
        racers.push(tokio::spawn(async move {
            let body: serde_json::Value = http
                .post(url)
                .json(&json!({ "query": REFRESH, "variables": { "t": token } }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body
        }));
    }
    let mut wins = 0;
    let mut codes = Vec::new();
    for racer in racers {
        let body = racer.await.unwrap();
        match body["errors"][0]["extensions"]["code"].as_str() {
            None => wins += 1,
            Some(code) => codes.push(code.to_owned()),
        }
    }
    assert_eq!(wins, 1, "exactly one refresh wins: {codes:?}");
    assert!(codes.iter().all(|c| c == "UNAUTHENTICATED"), "{codes:?}");
}

/// Eight wrong passwords for one account at once: every one is counted (the account
/// locks), none is lost to a race or answered with an internal error.
async fn concurrent_failures_are_all_counted(app: TestApp) {
    let acme = app.tenant("acme").await;
    let (email, password) = user(&acme, Role::Support);
    let mut racers = Vec::new();
    for i in 0..8 {
        let (http, url, email) = (app.http.clone(), app.url("/graphql"), email.to_owned());
        racers.push(tokio::spawn(async move {
            let body: serde_json::Value = http
                .post(url)
                .json(&json!({ "query": SIGN_IN, "variables": { "input": {
                    "tenant": "acme", "email": email, "password": format!("wrong guess {i}") } } }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["errors"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("NONE")
                .to_owned()
        }));
    }
    for racer in racers {
        let code = racer.await.unwrap();
        assert!(
            code == "UNAUTHENTICATED" || code == "RATE_LIMITED",
            "{code}"
        );
    }
    let r = sign_in(&app, "acme", email, password).await;
    assert_eq!(
        r.code(),
        Some("RATE_LIMITED"),
        "at least five failures were counted"
    );
}
