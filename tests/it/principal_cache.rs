//! Authentication without re-reading: a principal the server has read is reused
//! (no SQL statement on the request's way in), and every change that narrows it
//! takes effect on the next request: in the same process at once, in another process
//! on the same PostgreSQL database as soon as its LISTEN delivers the change.

use std::time::{Duration, Instant};

use sequestra::{
    auth::Role,
    ids::{self, Kind},
};
use serde_json::{Value, json};

use crate::harness::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(a_known_principal_costs_no_statement);

const CREATE_KEY: &str = "mutation($s: [Scope!]!) { createApiKey(input: { name: \"cache\", scopes: $s }) { key apiKey { id } } }";

/// Statements the server ran for one request.
async fn cost(app: &TestApp, token: &str, query: &str) -> (u64, Value) {
    let before = app.statements();
    let r = app.gql(Some(token), query, json!({})).await;
    (app.statements() - before, r.body)
}

/// What `{ __typename }` costs once the principal is known. The write that made the
/// session or key also reaches this process through LISTEN, a few milliseconds after
/// its commit, and drops the tenant's principals once more; so the cost is the first
/// of up to 20 requests (50 ms apart) that reads nothing, or the last one's.
async fn cached_cost(app: &TestApp, token: &str) -> u64 {
    let mut spent = u64::MAX;
    for _ in 0..20 {
        spent = cost(app, token, "{ __typename }").await.0;
        if spent == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    spent
}

async fn a_known_principal_costs_no_statement(app: TestApp) {
    let acme = app.tenant("acme").await;
    // A fresh session: its first request reads the principal, the next reads nothing.
    let sender = acme.user(Role::Sender).clone();
    let token = app.sign_in("acme", &sender.email, &sender.password).await;
    let (first, body) = cost(&app, &token, "{ __typename }").await;
    assert!(body.get("errors").is_none(), "{body}");
    let second = cached_cost(&app, &token).await;
    assert!(
        first >= 1,
        "the first request reads the principal ({first})"
    );
    assert_eq!(second, 0, "a later request reads nothing");

    // An API key alike (its use is recorded at most once a minute).
    let admin = acme.token(Role::Admin).to_owned();
    crate::mfa::enrol(&app, &admin).await;
    let r = app
        .gql(Some(&admin), CREATE_KEY, json!({ "s": ["USERS_READ"] }))
        .await;
    let key = r.ok()["createApiKey"]["key"].as_str().unwrap().to_owned();
    let (key_first, _) = cost(&app, &key, "{ __typename }").await;
    let key_second = cached_cost(&app, &key).await;
    assert!(key_first >= 1);
    assert_eq!(key_second, 0, "a known key reads nothing");
    crate::harness::report(&format!(
        "authentication: {first} statements for a new session's first request, {second} after; API key {key_first} then {key_second}"
    ));
}

pub(crate) const SECRETS: &[(&str, &str)] = &[
    (
        "SEQUESTRA_JWT_SECRET",
        "principal-cache-test-jwt-secret-0123456789abcdef",
    ),
    (
        "SEQUESTRA_API_KEY_SECRET",
        "principal-cache-test-api-key-secret-0123456789ab",
    ),
    (
        "SEQUESTRA_MFA_KEYS",
        "k1:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    ),
];

/// Asks `url` with `token` until `done(status, body)` holds; how long it took.
async fn until(
    url: &str,
    token: &str,
    query: &str,
    done: impl Fn(u16, &Value) -> bool,
) -> Duration {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let r = client
            .post(url)
            .bearer_auth(token)
            .json(&json!({ "query": query }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if done(status, &body) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not in effect after 5 s: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Revoking a session, changing roles, deactivating a user and revoking a key, each
/// done through one server, take effect on the next request there and, within the
/// notification's delivery, on a second `serve` process (the real binary) that had
/// the principal cached; not at the token's expiry 15 minutes later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_every_process_at_once() {
    let Some(app) = TestApp::spawn_with(Backend::Postgres, SECRETS).await else {
        crate::harness::skipped("principal_cache::changes_reach_every_process_at_once");
        return;
    };
    let acme = app.tenant("acme").await;
    let admin = acme.token(Role::Admin).to_owned();
    crate::mfa::enrol(&app, &admin).await;
    let owner = app
        .database_owner_url()
        .expect("PostgreSQL has an owner URL");
    let mut settings: Vec<(&str, &str)> = SECRETS.to_vec();
    settings.push(("SEQUESTRA_DATABASE_OWNER_URL", owner.as_str()));
    settings.push(("SEQUESTRA_JOBS_ENABLED", "false"));
    let (_other, listen) = crate::cli::serve_with(&[], &app.database_url(), &settings).await;
    let here = app.url("/graphql");
    let there = format!("http://{listen}/graphql");
    let viewer = "{ viewer { roles } }";
    let ok = |status: u16, body: &Value| status == 200 && body.get("errors").is_none();
    let refused = |status: u16, _: &Value| status == 401;

    // Every principal known to both processes first.
    let sender = acme.user(Role::Sender).clone();
    let support = acme.user(Role::Support).clone();
    let beneficiary = acme.user(Role::Beneficiary).clone();
    let r = app
        .gql(Some(&admin), CREATE_KEY, json!({ "s": ["USERS_READ"] }))
        .await;
    let key = r.ok()["createApiKey"]["key"].as_str().unwrap().to_owned();
    let key_id = r.ok()["createApiKey"]["apiKey"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for token in [&sender.token, &support.token, &beneficiary.token, &key] {
        for url in [&here, &there] {
            until(url, token, "{ __typename }", ok).await;
        }
    }

    // A session ended (sign-out).
    let r = app
        .gql(
            Some(&sender.token),
            "mutation { signOut { sessionId } }",
            json!({}),
        )
        .await;
    r.ok();
    assert_eq!(
        app.gql(Some(&sender.token), viewer, json!({})).await.status,
        401
    );
    let session = until(&there, &sender.token, viewer, refused).await;

    // Roles changed: SUPPORT becomes SENDER.
    let r = app
        .gql(
            Some(&admin),
            "mutation($u: ID!) { setUserRoles(input: { userId: $u, roles: [SENDER] }) { user { roles } } }",
            json!({ "u": ids::encode(Kind::User, support.id) }),
        )
        .await;
    r.ok();
    let is_sender = |status: u16, body: &Value| {
        status == 200 && body["data"]["viewer"]["roles"] == json!(["SENDER"])
    };
    let r = app.gql(Some(&support.token), viewer, json!({})).await;
    assert_eq!(
        r.ok()["viewer"]["roles"],
        json!(["SENDER"]),
        "the next request here"
    );
    let roles = until(&there, &support.token, viewer, is_sender).await;

    // A user deactivated.
    let r = app
        .gql(
            Some(&admin),
            "mutation($u: ID!) { deactivateUser(input: { userId: $u }) { user { isActive } } }",
            json!({ "u": ids::encode(Kind::User, beneficiary.id) }),
        )
        .await;
    r.ok();
    assert_eq!(
        app.gql(Some(&beneficiary.token), viewer, json!({}))
            .await
            .status,
        401
    );
    let deactivated = until(&there, &beneficiary.token, viewer, refused).await;

    // A key revoked.
    let r = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { revokeApiKey(input: { id: $id }) { apiKey { revokedAt } } }",
            json!({ "id": key_id }),
        )
        .await;
    r.ok();
    assert_eq!(
        app.gql(Some(&key), "{ __typename }", json!({}))
            .await
            .status,
        401
    );
    let revoked = until(&there, &key, "{ __typename }", refused).await;
    crate::harness::report(&format!(
        "principal cache: in effect in a second process after {session:?} (sign-out), {roles:?} (roles), {deactivated:?} (deactivation), {revoked:?} (key revocation)"
    ));
}

crate::on_both_backends_with!(
    statements_per_operation,
    &[("SEQUESTRA_SIM_PSP_SETTLE_AFTER_MS", "600000")]
);

/// What one purchase, one escrow release and one settling webhook cost in SQL
/// statements through the real edges (authentication already known), held to the
/// README's figures: a change that adds a round trip to one of them fails here.
async fn statements_per_operation(app: TestApp) {
    use sequestra::auth::Role;
    let t = app.tenant("acme").await;
    let (sender, beneficiary) = (
        t.token(Role::Sender).to_owned(),
        t.token(Role::Beneficiary).to_owned(),
    );
    let c = crate::spend::catalog(&app, &t).await;
    let r = crate::spend::grant(
        &app,
        &t,
        json!({ "total": "50.00", "currency": "EUR", "allowedCategoryIds": [c.groceries] }),
    )
    .await;
    let mandate = r.ok()["grantMandate"]["mandate"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A payout needs a recent step-up.
    crate::mfa::enrol(&app, &sender).await;
    for token in [&sender, &beneficiary] {
        app.gql(Some(token), "{ __typename }", json!({})).await;
    }

    let before = app.statements();
    let r = crate::spend::buy(&app, &beneficiary, &mandate, &c.fresh_mart, "1.00", "p-1").await;
    r.ok();
    let purchase = app.statements() - before;

    let id = crate::escrow::funded_escrow(&app, &t, "100.00", "f-1").await;
    let before = app.statements();
    let r = app
        .gql(
            Some(&sender),
            "mutation($id: ID!, $k: String!) { releaseEscrow(input: { escrowId: $id, idempotencyKey: $k }) { escrow { status } payments { pspReference } } }",
            json!({ "id": id, "k": "r-1" }),
        )
        .await;
    let reference = r.ok()["releaseEscrow"]["payments"][0]["pspReference"]
        .as_str()
        .unwrap()
        .to_owned();
    let release = app.statements() - before;

    let body = crate::webhooks::event("evt_count", "payout.settled", &reference);
    let before = app.statements();
    let (status, answer) = crate::webhooks::post(
        &app,
        &body,
        crate::webhooks::signed(crate::harness::WEBHOOK_SECRETS[0], &body),
    )
    .await;
    assert_eq!(
        (status, &answer["outcome"]),
        (200, &json!("applied")),
        "{answer}"
    );
    let webhook = app.statements() - before;

    crate::harness::report(&format!(
        "statements: purchase {purchase}, escrow release {release} (with its PSP dispatch), settling webhook {webhook}"
    ));
    for (what, counted, ceiling) in [
        ("purchase", purchase, PURCHASE_STATEMENTS),
        ("release", release, RELEASE_STATEMENTS),
        ("webhook", webhook, WEBHOOK_STATEMENTS),
    ] {
        assert!(
            counted <= ceiling,
            "{what}: {counted} statements, more than the {ceiling} the README states"
        );
    }
}

/// The README's figures (the most either backend needs today: SQLite 12, 27, 14;
/// PostgreSQL 10, 28, 16).
const PURCHASE_STATEMENTS: u64 = 12;
const RELEASE_STATEMENTS: u64 = 28;
const WEBHOOK_STATEMENTS: u64 = 16;
