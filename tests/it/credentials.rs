//! Credential checks under attack: racing wrong passwords (spread over two server
//! processes) and codes are checked at most the lock threshold, every check counts and is audited whatever asked for it,
//! and refresh tokens and sessions end when configured.

use sequestra::auth::Role;
use serde_json::{Value, json};

use crate::harness::{TestApp, TestTenant};
use crate::identity::{SIGN_IN, sign_in};
use crate::mfa::{code_at, enrol};
use crate::on_both_backends_with;

/// The per-address limiter would refuse most of 50 attempts from one test client
/// before the account's count is reached; these tests are about the account's count.
const NO_ADDRESS_LIMIT: &[(&str, &str)] = &[("SEQUESTRA_CREDENTIAL_ATTEMPTS_PER_MINUTE", "100000")];

on_both_backends_with!(
    fifty_racing_wrong_passwords_check_five,
    super::NO_ADDRESS_LIMIT
);
on_both_backends_with!(fifty_racing_wrong_codes_check_five, super::NO_ADDRESS_LIMIT);
on_both_backends_with!(
    password_change_and_mfa_removal_count_and_audit,
    super::NO_ADDRESS_LIMIT
);
on_both_backends_with!(
    refresh_tokens_live_seven_days_inside_the_session,
    &[
        ("SEQUESTRA_REFRESH_TOKEN_TTL_SECS", "2"),
        ("SEQUESTRA_SESSION_LIFETIME_SECS", "4"),
    ]
);

fn count(actions: &[String], action: &str) -> usize {
    actions.iter().filter(|a| *a == action).count()
}

/// Sends the requests at once (each its own HTTP request), spread over `servers` in
/// turn (processes on one database), and returns their bodies.
async fn race(servers: &[&TestApp], requests: Vec<(Option<String>, String, Value)>) -> Vec<Value> {
    let mut racers = Vec::new();
    for (i, (token, query, variables)) in requests.into_iter().enumerate() {
        let server = servers[i % servers.len()];
        let (http, url) = (server.http.clone(), server.url("/graphql"));
        racers.push(tokio::spawn(async move {
            let mut request = http
                .post(url)
                .json(&json!({ "query": query, "variables": variables }));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send().await.unwrap().json::<Value>().await.unwrap()
        }));
    }
    let mut out = Vec::new();
    for racer in racers {
        out.push(racer.await.unwrap());
    }
    out
}

fn codes(bodies: &[Value]) -> Vec<String> {
    bodies
        .iter()
        .map(|b| {
            b["errors"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("NONE")
                .to_owned()
        })
        .collect()
}

async fn fifty_racing_wrong_passwords_check_five(app: TestApp) {
    let acme = app.tenant("acme").await;
    let target = acme.user(Role::Support).clone();
    // Two server processes on the one database, as two replicas.
    let peer = app.peer(NO_ADDRESS_LIMIT).await;
    let bodies = race(
        &[&app, &peer],
        (0..50)
            .map(|i| {
                (
                    None,
                    SIGN_IN.to_owned(),
                    json!({ "input": { "tenant": "acme", "email": target.email, "password": format!("wrong guess {i}") } }),
                )
            })
            .collect(),
    )
    .await;
    peer.stop().await;
    let codes = codes(&bodies);
    let checked = codes.iter().filter(|c| *c == "UNAUTHENTICATED").count();
    let refused = codes.iter().filter(|c| *c == "RATE_LIMITED").count();
    assert_eq!(checked + refused, 50, "{codes:?}");
    // Every checked password is audited as a failure: that is the count of checks.
    let audited = count(&app.audit_actions(&acme).await, "auth.sign_in.failed");
    assert_eq!(audited, checked, "{codes:?}");
    assert_eq!(checked, 5, "at most the threshold is checked: {codes:?}");
    // Locked: the right password is refused too, without a check.
    let r = sign_in(&app, "acme", &target.email, &target.password).await;
    assert_eq!(r.code(), Some("RATE_LIMITED"), "{}", r.body);
    assert_eq!(
        count(&app.audit_actions(&acme).await, "auth.sign_in.failed"),
        5
    );
}

/// 50 challenges of one MFA user, each answered with a wrong code at once.
async fn fifty_racing_wrong_codes_check_five(app: TestApp) {
    let acme = app.tenant("acme").await;
    let user = acme.user(Role::Sender).clone();
    let (totp, _, _) = enrol(&app, &user.token).await;
    let mut challenges = Vec::new();
    for _ in 0..50 {
        let r = sign_in(&app, "acme", &user.email, &user.password).await;
        challenges.push(
            r.ok()["signIn"]["mfaChallenge"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let before = count(&app.audit_actions(&acme).await, "auth.mfa.failed");
    let right = code_at(&totp, 0);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    let verify = "mutation($c: String!, $code: String) { verifyMfa(input: { challenge: $c, code: $code }) { accessToken } }";
    // One process: a peer has MFA keys of its own and could not read this seed.
    let bodies = race(
        &[&app],
        challenges
            .iter()
            .map(|c| (None, verify.to_owned(), json!({ "c": c, "code": wrong })))
            .collect(),
    )
    .await;
    let codes = codes(&bodies);
    let checked = codes.iter().filter(|c| *c == "UNAUTHENTICATED").count();
    assert_eq!(
        checked + codes.iter().filter(|c| *c == "RATE_LIMITED").count(),
        50,
        "{codes:?}"
    );
    let audited = count(&app.audit_actions(&acme).await, "auth.mfa.failed") - before;
    assert_eq!(audited, checked, "{codes:?}");
    assert_eq!(checked, 5, "at most the threshold is checked: {codes:?}");
    // Step-up codes count against the same lock.
    let r = app
        .gql(
            Some(&user.token),
            "mutation($c: String!) { verifyStepUp(input: { code: $c }) { verifiedAt } }",
            json!({ "c": code_at(&totp, 30) }),
        )
        .await;
    assert_eq!(r.code(), Some("RATE_LIMITED"), "{}", r.body);
}

async fn wrong_change(app: &TestApp, token: &str) -> Value {
    app.gql(
        Some(token),
        "mutation { changePassword(input: { currentPassword: \"not my password\", newPassword: \"a brand new long passphrase 9\" }) { user { id } } }",
        json!({}),
    )
    .await
    .body
}

async fn password_change_and_mfa_removal_count_and_audit(app: TestApp) {
    let acme: TestTenant = app.tenant("acme").await;
    let me = acme.user(Role::Beneficiary).clone();
    for _ in 0..3 {
        let body = wrong_change(&app, &me.token).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    }
    // disableMfa's password check counts against the same lock.
    let (totp, _, _) = enrol(&app, &me.token).await;
    for _ in 0..2 {
        let r = app
            .gql(
                Some(&me.token),
                "mutation($c: String!) { disableMfa(input: { password: \"not my password\", code: $c }) { mfaEnabled } }",
                json!({ "c": code_at(&totp, 30) }),
            )
            .await;
        assert_eq!(r.code(), Some("UNAUTHENTICATED"), "{}", r.body);
    }
    let actions = app.audit_actions(&acme).await;
    assert_eq!(count(&actions, "auth.password.failed"), 5, "{actions:?}");
    // Five failures: locked for changePassword, disableMfa and sign-in alike, even with
    // the right password.
    let r = app
        .gql(
            Some(&me.token),
            "mutation($p: String!) { changePassword(input: { currentPassword: $p, newPassword: \"a brand new long passphrase 9\" }) { user { id } } }",
            json!({ "p": me.password }),
        )
        .await;
    assert_eq!(r.code(), Some("RATE_LIMITED"), "{}", r.body);
    let r = sign_in(&app, "acme", &me.email, &me.password).await;
    assert_eq!(r.code(), Some("RATE_LIMITED"), "{}", r.body);
    // Nothing was changed by the refused attempts: MFA is still on.
    let r = app.gql(Some(&me.token), "{ mfaEnabled }", json!({})).await;
    assert_eq!(r.ok()["mfaEnabled"], true);
}

async fn refresh(app: &TestApp, token: &str) -> Value {
    app.gql(
        None,
        "mutation($t: String!) { refreshSession(input: { refreshToken: $t }) { refreshToken } }",
        json!({ "t": token }),
    )
    .await
    .body
}

/// Run with refresh tokens of 2 s inside sessions of 4 s (the defaults are 7 and 30
/// days): rotation restarts a token's life, the session's end is absolute, and a
/// token past its own life answers UNAUTHENTICATED.
async fn refresh_tokens_live_seven_days_inside_the_session(app: TestApp) {
    use std::time::Duration;
    let acme = app.tenant("acme").await;
    let me = acme.user(Role::Sender).clone();
    let r = sign_in(&app, "acme", &me.email, &me.password).await;
    // Counted from the answer: the session began before it (a sign-in under load may
    // take long enough that "before the request" would put 4.3 s inside the session).
    let started = tokio::time::Instant::now();
    let mut token = r.ok()["signIn"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    // At 1.2 s and 2.6 s: each token is younger than 2 s, though the session is older.
    for at in [1200, 2600] {
        tokio::time::sleep_until(started + Duration::from_millis(at)).await;
        let body = refresh(&app, &token).await;
        token = body["data"]["refreshSession"]["refreshToken"]
            .as_str()
            .unwrap_or_else(|| panic!("refresh at {at} ms: {body}"))
            .to_owned();
    }
    // At 4.3 s the token is 1.7 s old, but the session's 4 s are over.
    tokio::time::sleep_until(started + Duration::from_millis(4300)).await;
    let body = refresh(&app, &token).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{body}"
    );

    // A fresh session whose refresh token waits past its 2 s.
    let r = sign_in(&app, "acme", &me.email, &me.password).await;
    let token = r.ok()["signIn"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let body = refresh(&app, &token).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{body}"
    );
}
