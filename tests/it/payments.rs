//! Payments after release: live updates over WebSocket (and across processes on
//! PostgreSQL), settlement by webhook, reconciliation, the retry policy, the HTTP
//! PSP adapter.

use std::{
    sync::{Arc, Mutex},
    time::Duration as StdDuration,
};

use chrono::{Duration, Utc};
use sequestra::{auth::Role, payments::webhook::sign};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::escrow::{create_escrow, fund};
use crate::harness::{TestApp, TestTenant, WEBHOOK_SECRETS};
use crate::mfa::enrol;
use crate::ws::{Socket, close_code, connect, init, next_json, subscribe};
use crate::{on_both_backends, on_both_backends_with};

on_both_backends_with!(
    subscribers_see_sent_then_settled_and_strangers_nothing,
    &[("SEQUESTRA_SIM_PSP_SETTLE_AFTER_MS", "300")]
);
on_both_backends_with!(
    sockets_of_one_session_share_a_subscriptions_run,
    &[("SEQUESTRA_SIM_PSP_SETTLE_AFTER_MS", "300")]
);
on_both_backends_with!(
    reconciliation_settles_a_payment_whose_webhook_never_came,
    &[("SEQUESTRA_PAYMENT_RECHECK_AFTER_SECS", "0")]
);
on_both_backends_with!(
    a_failure_reconciliation_finds_is_retried,
    &[
        ("SEQUESTRA_PAYMENT_RECHECK_AFTER_SECS", "0"),
        ("SEQUESTRA_SIM_PSP_FAIL_EVERY", "1"),
    ]
);
on_both_backends_with!(
    failed_payments_are_retried_once_each_then_alerted,
    &[
        ("SEQUESTRA_SIM_PSP_SETTLE_AFTER_MS", "100"),
        ("SEQUESTRA_SIM_PSP_FAIL_EVERY", "1"),
    ]
);
on_both_backends!(
    the_psp_circuit_opens_when_it_is_down_and_closes_when_it_answers,
    http_psp_adapter_retries_with_one_idempotency_key,
    a_webhook_that_beat_its_reference_is_applied_by_the_jobs
);

const RELEASE: &str = "mutation($id: ID!, $k: String!) { releaseEscrow(input: { escrowId: $id, idempotencyKey: $k }) { payments { id status pspReference } } }";
const PAYMENT: &str = "query($id: ID!) { node(id: $id) { ... on Payment { id status attempt retryOf failureReason pspReference attempts { kind outcome detail } } } }";

/// A funded one-milestone escrow from the tenant's sender to its beneficiary, and
/// the sender's token with a fresh MFA step-up.
async fn funded_escrow(app: &TestApp, t: &TestTenant) -> (String, String) {
    let e = create_escrow(
        app,
        t,
        "10.00",
        json!([{ "title": "Work", "amount": "10.00", "proof": "NONE" }]),
        None,
        Duration::days(7),
    )
    .await;
    let id = e["id"].as_str().unwrap().to_owned();
    let sender = t.token(Role::Sender).to_owned();
    fund(
        app,
        &sender,
        &id,
        "10.00",
        &uuid::Uuid::now_v7().to_string(),
    )
    .await
    .ok();
    enrol(app, &sender).await;
    (id, sender)
}

/// Releases the escrow; the one payment's id.
async fn release(app: &TestApp, sender: &str, escrow_id: &str) -> String {
    let r = app
        .gql(
            Some(sender),
            RELEASE,
            json!({ "id": escrow_id, "k": uuid::Uuid::now_v7().to_string() }),
        )
        .await;
    r.ok()["releaseEscrow"]["payments"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn payment(app: &TestApp, token: &str, id: &str) -> Value {
    app.gql(Some(token), PAYMENT, json!({ "id": id }))
        .await
        .ok()["node"]
        .clone()
}

/// Polls `check` on the payment until it holds (10 s at most).
async fn wait_for(app: &TestApp, token: &str, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let p = payment(app, token, id).await;
        if check(&p) {
            return p;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    panic!(
        "payment {id} never reached the expected state: {}",
        payment(app, token, id).await
    );
}

/// The statuses `next` messages carry for subscription `id`, until `last` (5 s each).
async fn statuses_until(socket: &mut Socket, id: &str, field: &str, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let msg = next_json(socket).await;
        assert_eq!(msg["type"], "next", "{msg}");
        assert_eq!(msg["id"], id, "{msg}");
        let status = msg["payload"]["data"][field]["status"]
            .as_str()
            .unwrap()
            .to_owned();
        seen.push(status.clone());
        if status == last {
            return seen;
        }
    }
}

/// Nothing arrives on `socket` for `ms`.
async fn silent(socket: &mut Socket, ms: u64) {
    use futures_util::StreamExt;
    let got = tokio::time::timeout(StdDuration::from_millis(ms), socket.next()).await;
    assert!(got.is_err(), "expected silence, got {got:?}");
}

/// The subscription was refused as if the object did not exist, and ended.
async fn refused(socket: &mut Socket, id: &str) {
    let msg = next_json(socket).await;
    assert_eq!(
        (&msg["type"], &msg["id"]),
        (&json!("next"), &json!(id)),
        "{msg}"
    );
    assert_eq!(msg["payload"]["data"], Value::Null, "{msg}");
    assert_eq!(
        msg["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{msg}"
    );
    let end = next_json(socket).await;
    assert_eq!(
        (&end["type"], &end["id"]),
        (&json!("complete"), &json!(id)),
        "{end}"
    );
}

/// Sockets of one session following the same subscription share its run (one
/// execution per event, each socket its own copy under its own id); another session
/// runs its own; a socket leaving a shared run leaves the others theirs; the run
/// stops with its last socket. A run that refuses (NOT_FOUND) refuses every socket of
/// it, however late one joins.
async fn sockets_of_one_session_share_a_subscriptions_run(app: TestApp) {
    use futures_util::SinkExt;
    let t = app.tenant("acme").await;
    let Parties {
        stranger,
        escrow_id,
        sender,
        provider,
    } = parties(&app, &t).await;

    let mut first = connect(&app).await;
    let mut second = connect(&app).await;
    let mut payer = connect(&app).await;
    for (socket, token, id) in [
        (&mut first, &provider, "a"),
        (&mut second, &provider, "b"),
        (&mut payer, &sender, "c"),
    ] {
        init(socket, token).await;
        subscribe(socket, id, MINE, json!({})).await;
        registered(socket).await;
    }
    assert_eq!(
        app.subscription_runs(),
        2,
        "the provider's two sockets share"
    );

    let payment = release(&app, &sender, &escrow_id).await;
    for (socket, id) in [(&mut first, "a"), (&mut second, "b"), (&mut payer, "c")] {
        let statuses = statuses_until(socket, id, "myPaymentUpdates", "SETTLED").await;
        assert_eq!(statuses, ["PENDING", "SENT", "SETTLED"], "{id}");
    }

    // One socket completes: the other keeps the run; the last one's leaving stops it.
    first
        .send(tokio_tungstenite::tungstenite::Message::text(
            json!({ "id": "a", "type": "complete" }).to_string(),
        ))
        .await
        .unwrap();
    registered(&mut first).await;
    assert_eq!(app.subscription_runs(), 2);
    drop(second);
    drop(payer);
    let mut runs = app.subscription_runs();
    for _ in 0..50 {
        if runs == 0 {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
        runs = app.subscription_runs();
    }
    assert_eq!(runs, 0, "no socket follows a run any more");

    // A stranger's sockets may not follow the escrow: each of them is refused, the
    // one that started the run and the ones that joined it, ended or not.
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut socket = connect(&app).await;
        init(&mut socket, &stranger).await;
        sockets.push(socket);
    }
    for socket in &mut sockets {
        subscribe(socket, "esc", FOLLOW_ESCROW, json!({ "id": escrow_id })).await;
    }
    for socket in &mut sockets {
        refused(socket, "esc").await;
    }
    // The payment stays the provider's to follow.
    let mut one = connect(&app).await;
    init(&mut one, &provider).await;
    subscribe(&mut one, "p", FOLLOW_PAYMENT, json!({ "id": payment })).await;
    let now = next_json(&mut one).await;
    assert_eq!(
        now["payload"]["data"]["paymentUpdated"]["status"],
        "SETTLED"
    );
}

/// A funded escrow's sender and provider (tokens), and a stranger of the same tenant.
struct Parties {
    stranger: String,
    escrow_id: String,
    sender: String,
    provider: String,
}

async fn parties(app: &TestApp, t: &TestTenant) -> Parties {
    let stranger = app
        .add_user(t, "stranger@acme.test", &[Role::Sender, Role::Beneficiary])
        .await
        .token;
    let (escrow_id, sender) = funded_escrow(app, t).await;
    Parties {
        stranger,
        escrow_id,
        sender,
        provider: t.token(Role::Beneficiary).to_owned(),
    }
}

/// The server has read everything sent on `socket` so far: a heartbeat's round trip.
async fn registered(socket: &mut Socket) {
    use futures_util::SinkExt;
    subscribe(socket, "hb", "subscription { serverTime }", json!({})).await;
    // (The answer to a `complete` sent before may come first; nothing else may.)
    loop {
        let msg = next_json(socket).await;
        if msg["id"] == "hb" {
            break;
        }
        assert_eq!(msg["type"], "complete", "{msg}");
    }
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            json!({ "id": "hb", "type": "complete" }).to_string(),
        ))
        .await
        .unwrap();
    loop {
        let msg = next_json(socket).await;
        if msg["type"] == "complete" && msg["id"] == "hb" {
            return;
        }
    }
}

const MINE: &str = "subscription { myPaymentUpdates { id status amount { amount } } }";
const FOLLOW_PAYMENT: &str =
    "subscription($id: ID!) { paymentUpdated(paymentId: $id) { id status } }";
const FOLLOW_ESCROW: &str = "subscription($id: ID!) { escrowUpdated(escrowId: $id) { event escrow { status milestones { status } } } }";

async fn subscribers_see_sent_then_settled_and_strangers_nothing(app: TestApp) {
    let t = app.tenant("acme").await;
    let g = app.tenant("globex").await;
    let Parties {
        stranger,
        escrow_id,
        sender,
        provider,
    } = parties(&app, &t).await;

    let mut mine = connect(&app).await;
    init(&mut mine, &provider).await;
    subscribe(&mut mine, "mine", MINE, json!({})).await;
    let mut escrow_feed = connect(&app).await;
    init(&mut escrow_feed, &sender).await;
    subscribe(
        &mut escrow_feed,
        "esc",
        FOLLOW_ESCROW,
        json!({ "id": escrow_id }),
    )
    .await;
    // A non-party of the same tenant, and a user of another tenant, cannot follow
    // the escrow; the non-party's own feed stays silent.
    let mut other = connect(&app).await;
    init(&mut other, &stranger).await;
    subscribe(&mut other, "esc", FOLLOW_ESCROW, json!({ "id": escrow_id })).await;
    refused(&mut other, "esc").await;
    subscribe(&mut other, "mine", MINE, json!({})).await;
    let mut foreign = connect(&app).await;
    init(&mut foreign, g.token(Role::Admin)).await;
    subscribe(
        &mut foreign,
        "esc",
        FOLLOW_ESCROW,
        json!({ "id": escrow_id }),
    )
    .await;
    refused(&mut foreign, "esc").await;
    subscribe(&mut foreign, "mine", MINE, json!({})).await;
    // Subscriptions are registered once the server has read them; a heartbeat
    // round-trip on each socket makes sure of it.
    for socket in [&mut mine, &mut escrow_feed, &mut other, &mut foreign] {
        registered(socket).await;
    }

    let payment_id = release(&app, &sender, &escrow_id).await;
    // The payee sees the payment recorded, accepted by the PSP, then settled by its
    // webhook, in that order.
    let statuses = statuses_until(&mut mine, "mine", "myPaymentUpdates", "SETTLED").await;
    assert_eq!(statuses, ["PENDING", "SENT", "SETTLED"]);

    // The sender's escrow feed ends with the milestone paid on settlement.
    let mut events = Vec::new();
    loop {
        let msg = next_json(&mut escrow_feed).await;
        assert_eq!(msg["type"], "next", "{msg}");
        let update = &msg["payload"]["data"]["escrowUpdated"];
        events.push(update["event"].as_str().unwrap().to_owned());
        if update["event"] == "MILESTONE_PAID" {
            assert_eq!(update["escrow"]["milestones"][0]["status"], "PAID");
            break;
        }
    }
    for expected in ["ESCROW_RELEASED", "PAYMENT_SENT", "PAYMENT_SETTLED"] {
        assert!(events.iter().any(|e| e == expected), "{events:?}");
    }

    // Following one payment: its state now, then the stream completes (settled).
    let mut one = connect(&app).await;
    init(&mut one, &provider).await;
    subscribe(&mut one, "p", FOLLOW_PAYMENT, json!({ "id": payment_id })).await;
    let now = next_json(&mut one).await;
    assert_eq!(
        now["payload"]["data"]["paymentUpdated"]["status"],
        "SETTLED"
    );
    assert_eq!(next_json(&mut one).await["type"], "complete");
    // Nobody else may follow it.
    subscribe(&mut other, "p", FOLLOW_PAYMENT, json!({ "id": payment_id })).await;
    refused(&mut other, "p").await;
    subscribe(
        &mut foreign,
        "p",
        FOLLOW_PAYMENT,
        json!({ "id": payment_id }),
    )
    .await;
    refused(&mut foreign, "p").await;
    silent(&mut other, 300).await;
    silent(&mut foreign, 300).await;

    // The payment's history: accepted on submission, settled by the webhook.
    let p = payment(&app, &provider, &payment_id).await;
    let history: Vec<(String, String)> = p["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_owned(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            ("SUBMIT".to_owned(), "SENT".to_owned()),
            ("WEBHOOK".to_owned(), "SETTLED".to_owned())
        ]
    );
}

/// A PSP can post its webhook before our commit of SENT stores the reference: the
/// event is kept as `unknown_reference` and applied once the reference exists (here
/// by the jobs' sweep, the path for events that raced the SENT transaction itself).
async fn a_webhook_that_beat_its_reference_is_applied_by_the_jobs(app: TestApp) {
    use sea_orm::ConnectionTrait;
    let t = app.tenant("acme").await;
    let (escrow_id, sender) = funded_escrow(&app, &t).await;
    let payment_id = release(&app, &sender, &escrow_id).await;
    let p = payment(&app, &sender, &payment_id).await;
    let reference = p["pspReference"].as_str().unwrap().to_owned();
    let raw = sequestra::ids::decode_as(sequestra::ids::Kind::Payment, &payment_id).unwrap();
    // As it was before the SENT commit: no reference yet.
    let backend = app.db.get_database_backend();
    app.db
        .execute(sea_orm::Statement::from_sql_and_values(
            backend,
            match backend {
                sea_orm::DbBackend::Postgres => {
                    "UPDATE payments SET psp_reference = NULL WHERE id = $1"
                }
                _ => "UPDATE payments SET psp_reference = NULL WHERE id = ?",
            },
            [raw.into()],
        ))
        .await
        .unwrap();
    let body = json!({ "id": "evt_early", "type": "payout.settled", "created": Utc::now().timestamp(), "data": { "reference": reference, "failureReason": null } }).to_string();
    let t0 = Utc::now().timestamp();
    let answer: Value = app
        .http
        .post(app.url("/webhooks/psp"))
        .header("content-type", "application/json")
        .header(
            "Sequestra-Signature",
            format!(
                "t={t0},v1={}",
                sign(WEBHOOK_SECRETS[0], t0, body.as_bytes())
            ),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["outcome"], "unknown_reference");
    // The SENT commit lands (without seeing the event): the reference is stored.
    app.db
        .execute(sea_orm::Statement::from_sql_and_values(
            backend,
            match backend {
                sea_orm::DbBackend::Postgres => {
                    "UPDATE payments SET psp_reference = $1 WHERE id = $2"
                }
                _ => "UPDATE payments SET psp_reference = ? WHERE id = ?",
            },
            [reference.clone().into(), raw.into()],
        ))
        .await
        .unwrap();
    assert_eq!(payment(&app, &sender, &payment_id).await["status"], "SENT");
    let jobs = app
        .peer(&[
            ("SEQUESTRA_JOBS_ENABLED", "true"),
            ("SEQUESTRA_JOBS_INTERVAL_MS", "50"),
        ])
        .await;
    let p = wait_for(&app, &sender, &payment_id, |p| p["status"] == "SETTLED").await;
    drop(jobs);
    let webhook = p["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "WEBHOOK")
        .cloned()
        .unwrap();
    assert_eq!(webhook["detail"], "evt_early");
}

async fn reconciliation_settles_a_payment_whose_webhook_never_came(app: TestApp) {
    let t = app.tenant("acme").await;
    let (escrow_id, sender) = funded_escrow(&app, &t).await;
    let payment_id = release(&app, &sender, &escrow_id).await;
    // No webhook comes (the simulated PSP's are off in tests): SENT stays SENT…
    let p = payment(&app, &sender, &payment_id).await;
    assert_eq!(p["status"], "SENT");
    // …until the jobs of two other processes ask the PSP; it is settled once.
    let settings = [
        ("SEQUESTRA_JOBS_ENABLED", "true"),
        ("SEQUESTRA_JOBS_INTERVAL_MS", "50"),
        ("SEQUESTRA_PAYMENT_RECHECK_AFTER_SECS", "0"),
    ];
    let a = app.peer(&settings).await;
    let b = app.peer(&settings).await;
    let p = wait_for(&app, &sender, &payment_id, |p| p["status"] == "SETTLED").await;
    let settled: Vec<&Value> = p["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["outcome"] == "SETTLED")
        .collect();
    assert_eq!(settled.len(), 1, "{p}");
    assert_eq!(settled[0]["kind"], "STATUS_CHECK");
    drop((a, b));
    let e = crate::escrow::escrow(&app, &sender, &escrow_id).await;
    assert_eq!(e["milestones"][0]["status"], "PAID");
    let actions = app.audit_actions(&t).await;
    assert_eq!(
        actions.iter().filter(|a| *a == "payment.settled").count(),
        1
    );
}

/// A SENT payment without a webhook that the PSP's status check reports FAILED is
/// retried by the policy like any failure. (It was not: the check's claim on the
/// payment, `checked_at`, is also the retry policy's, and the failure kept it.)
async fn a_failure_reconciliation_finds_is_retried(app: TestApp) {
    let t = app.tenant("acme").await;
    let (escrow_id, sender) = funded_escrow(&app, &t).await;
    let payment_id = release(&app, &sender, &escrow_id).await;
    assert_eq!(payment(&app, &sender, &payment_id).await["status"], "SENT");
    // Another process runs the jobs: it asks the PSP (which fails every payout), then
    // the retry policy (two tries in all, no backoff) takes the failure.
    let jobs = app
        .peer(&[
            ("SEQUESTRA_JOBS_ENABLED", "true"),
            ("SEQUESTRA_JOBS_INTERVAL_MS", "50"),
            ("SEQUESTRA_PAYMENT_RECHECK_AFTER_SECS", "0"),
            ("SEQUESTRA_SIM_PSP_FAIL_EVERY", "1"),
            ("SEQUESTRA_SIM_PSP_SETTLE_AFTER_MS", "0"),
            ("SEQUESTRA_PAYMENT_MAX_ATTEMPTS", "2"),
            ("SEQUESTRA_PAYMENT_RETRY_BACKOFF_SECS", "0"),
        ])
        .await;
    let failed = wait_for(&app, &sender, &payment_id, |p| p["status"] == "FAILED").await;
    let checked: Vec<&Value> = failed["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "STATUS_CHECK" && a["outcome"] == "FAILED")
        .collect();
    assert_eq!(checked.len(), 1, "{failed}");
    // The retry: a second payment of the escrow, retrying the first.
    let mut retried = Value::Null;
    for _ in 0..200 {
        let e = crate::escrow::escrow(&app, &sender, &escrow_id).await;
        if let Some(p) = e["payments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] != payment_id.as_str())
        {
            retried = payment(&app, &sender, p["id"].as_str().unwrap()).await;
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert_eq!(retried["retryOf"], payment_id.as_str(), "{retried}");
    assert_eq!(retried["attempt"], 2);
    drop(jobs);
}

async fn failed_payments_are_retried_once_each_then_alerted(app: TestApp) {
    let t = app.tenant("acme").await;
    let (escrow_id, sender) = funded_escrow(&app, &t).await;
    // Two processes run the jobs (2 tries in all, no backoff): one retry of the
    // first payment, then an alert, whatever the race.
    let settings = [
        ("SEQUESTRA_JOBS_ENABLED", "true"),
        ("SEQUESTRA_JOBS_INTERVAL_MS", "50"),
        ("SEQUESTRA_PAYMENT_MAX_ATTEMPTS", "2"),
        ("SEQUESTRA_PAYMENT_RETRY_BACKOFF_SECS", "0"),
        ("SEQUESTRA_SIM_PSP_SETTLE_AFTER_MS", "100"),
        ("SEQUESTRA_SIM_PSP_FAIL_EVERY", "1"),
    ];
    let a = app.peer(&settings).await;
    let b = app.peer(&settings).await;
    let first = release(&app, &sender, &escrow_id).await;
    // Every payout fails at this PSP.
    let p = wait_for(&app, &sender, &first, |p| p["status"] == "FAILED").await;
    assert_eq!(p["failureReason"], "simulated failure");
    assert_eq!(p["attempt"], 1);

    let alerts_query =
        "{ alerts(filter: { kind: \"PAYMENT_FAILED\" }) { edges { node { kind message } } } }";
    let mut alerts = Vec::new();
    for _ in 0..200 {
        alerts = app.gql(Some(&sender), alerts_query, json!({})).await.ok()["alerts"]["edges"]
            .as_array()
            .unwrap()
            .clone();
        if !alerts.is_empty() {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    drop((a, b));
    let e = crate::escrow::escrow(&app, &sender, &escrow_id).await;
    let payments = e["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 2, "one retry: {e}");
    assert!(payments.iter().all(|p| p["status"] == "FAILED"), "{e}");
    // The money is still owed: the milestone waits, PAYING.
    assert_eq!(e["milestones"][0]["status"], "PAYING");
    let second = payments[1]["id"].as_str().unwrap().to_owned();
    let p = payment(&app, &sender, &second).await;
    assert_eq!(
        (p["attempt"].clone(), p["retryOf"].clone()),
        (json!(2), json!(first))
    );

    // A person may retry past the policy: payments:execute and a step-up.
    let retry = "mutation($id: ID!, $k: String!) { retryPayment(input: { paymentId: $id, idempotencyKey: $k }) { payment { id attempt retryOf status } } }";
    // The payee, stepped up, is not the payer.
    let provider = t.token(Role::Beneficiary);
    enrol(&app, provider).await;
    let r = app
        .gql(Some(provider), retry, json!({ "id": second, "k": "r-1" }))
        .await;
    assert_eq!(r.code(), Some("FORBIDDEN"), "{}", r.body);
    let r = app
        .gql(Some(&sender), retry, json!({ "id": second, "k": "r-1" }))
        .await;
    let third = r.ok()["retryPayment"]["payment"].clone();
    assert_eq!(third["attempt"], 3);
    assert_eq!(third["retryOf"], json!(second));
    // The same key answers the same retry; the first payment was retried already.
    let again = app
        .gql(Some(&sender), retry, json!({ "id": second, "k": "r-1" }))
        .await;
    assert_eq!(again.ok()["retryPayment"]["payment"]["id"], third["id"]);
    let r = app
        .gql(Some(&sender), retry, json!({ "id": first, "k": "r-2" }))
        .await;
    assert_eq!(r.code(), Some("CONFLICT"));
    assert_eq!(
        r.body["errors"][0]["extensions"]["reason"],
        "ALREADY_RETRIED"
    );
    // Another tenant's admin does not find it.
    let g = app.tenant("globex").await;
    let r = app
        .gql(
            Some(g.token(Role::Admin)),
            retry,
            json!({ "id": second, "k": "r-3" }),
        )
        .await;
    assert!(
        matches!(r.code(), Some("NOT_FOUND") | Some("FORBIDDEN")),
        "{}",
        r.body
    );
}

/// What the stand-in PSP saw.
#[derive(Default)]
struct PspLog {
    submissions: Vec<(String, bool)>,
    status_checks: usize,
}

/// A PSP over HTTP: refuses the first submission with 503, accepts the next
/// (checking the signature and the idempotency key), and reports it settled.
async fn stand_in_psp(secret: &'static str) -> (String, Arc<Mutex<PspLog>>) {
    use axum::{
        Json, Router,
        body::Bytes,
        extract::{Path, State},
        http::{HeaderMap, StatusCode},
        routing::{get, post},
    };
    type Log = Arc<Mutex<PspLog>>;
    let log: Log = Arc::default();
    let router = Router::new()
        .route(
            "/payouts",
            post(
                move |State(log): State<Log>, headers: HeaderMap, body: Bytes| async move {
                    let header = headers
                        .get("sequestra-signature")
                        .and_then(|v| v.to_str().ok());
                    let signed = sequestra::payments::webhook::verify(
                        header,
                        &body,
                        &[secret.to_owned().into()],
                        Utc::now().timestamp(),
                    )
                    .is_ok();
                    let key = headers["idempotency-key"].to_str().unwrap().to_owned();
                    let mut log = log.lock().unwrap();
                    log.submissions.push((key.clone(), signed));
                    if log.submissions.len() == 1 {
                        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({})));
                    }
                    (
                        StatusCode::OK,
                        Json(json!({ "reference": format!("psp_{key}") })),
                    )
                },
            ),
        )
        .route(
            "/payouts/{reference}",
            get(
                move |State(log): State<Log>, Path(reference): Path<String>| async move {
                    log.lock().unwrap().status_checks += 1;
                    if reference.starts_with("psp_") {
                        (StatusCode::OK, Json(json!({ "status": "settled" })))
                    } else {
                        (StatusCode::NOT_FOUND, Json(json!({})))
                    }
                },
            ),
        )
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, log)
}

async fn http_psp_adapter_retries_with_one_idempotency_key(app: TestApp) {
    const SECRET: &str = "psp-shared-secret-0123456789abcdef0123";
    let (url, log) = stand_in_psp(SECRET).await;
    let settings = [
        ("SEQUESTRA_PSP", "http"),
        ("SEQUESTRA_PSP_URL", url.as_str()),
        ("SEQUESTRA_PSP_SECRET", SECRET),
        ("SEQUESTRA_PSP_RETRY_BASE_MS", "10"),
        ("SEQUESTRA_PSP_TIMEOUT_MS", "2000"),
        ("SEQUESTRA_PAYMENT_RECHECK_AFTER_SECS", "0"),
    ];
    // A replica configured with the HTTP PSP, on this app's database.
    let psp_app = app
        .peer(&[&settings[..], &[("SEQUESTRA_JOBS_ENABLED", "false")]].concat())
        .await;
    let t = psp_app.tenant("acme").await;
    let (escrow_id, sender) = funded_escrow(&psp_app, &t).await;
    let payment_id = release(&psp_app, &sender, &escrow_id).await;
    let p = payment(&psp_app, &sender, &payment_id).await;
    assert_eq!(p["status"], "SENT", "{p}");
    {
        let log = log.lock().unwrap();
        assert_eq!(log.submissions.len(), 2, "a 503, then accepted");
        let raw = sequestra::ids::decode_as(sequestra::ids::Kind::Payment, &payment_id)
            .unwrap()
            .to_string();
        for (key, signed) in &log.submissions {
            assert_eq!(key, &raw, "the payment id is the idempotency key");
            assert!(signed, "every request is signed");
        }
        assert_eq!(p["pspReference"], json!(format!("psp_{raw}")));
    }
    // Reconciliation asks the PSP over HTTP and settles it.
    let jobs = app
        .peer(
            &[
                &settings[..],
                &[
                    ("SEQUESTRA_JOBS_ENABLED", "true"),
                    ("SEQUESTRA_JOBS_INTERVAL_MS", "50"),
                ],
            ]
            .concat(),
        )
        .await;
    wait_for(&psp_app, &sender, &payment_id, |p| p["status"] == "SETTLED").await;
    drop(jobs);
    assert!(log.lock().unwrap().status_checks >= 1);
}

/// Two `sequestra serve` processes on one PostgreSQL database: a subscriber on this
/// one sees the settlement a webhook brought to the other (LISTEN/NOTIFY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_on_one_process_reaches_a_subscriber_on_another() {
    let Some(app) = TestApp::spawn(crate::harness::Backend::Postgres).await else {
        crate::harness::skipped(
            "payments::a_webhook_on_one_process_reaches_a_subscriber_on_another",
        );
        return;
    };
    let t = app.tenant("acme").await;
    let (escrow_id, sender) = funded_escrow(&app, &t).await;
    let provider = t.token(Role::Beneficiary).to_owned();
    let mut mine = connect(&app).await;
    init(&mut mine, &provider).await;
    subscribe(&mut mine, "mine", MINE, json!({})).await;
    subscribe(&mut mine, "hb", "subscription { serverTime }", json!({})).await;
    assert_eq!(next_json(&mut mine).await["id"], "hb");
    let r = app
        .gql(
            Some(&sender),
            RELEASE,
            json!({ "id": escrow_id, "k": "release-1" }),
        )
        .await;
    let reference = r.ok()["releaseEscrow"]["payments"][0]["pspReference"]
        .as_str()
        .unwrap()
        .to_owned();

    // The other process: the real binary, on the same database.
    let secrets = WEBHOOK_SECRETS.join(",");
    let owner = app.database_owner_url();
    let mut settings = vec![
        ("SEQUESTRA_WEBHOOK_SECRETS", secrets.as_str()),
        ("SEQUESTRA_JOBS_ENABLED", "false"),
    ];
    if let Some(owner) = &owner {
        settings.push(("SEQUESTRA_DATABASE_OWNER_URL", owner.as_str()));
    }
    let (mut other, listen) = crate::cli::serve_with(&[], &app.database_url(), &settings).await;
    let client = reqwest::Client::new();

    let body = json!({ "id": "evt_two_process", "type": "payout.settled", "created": Utc::now().timestamp(), "data": { "reference": reference, "failureReason": null } }).to_string();
    let t0 = Utc::now().timestamp();
    let answer = client
        .post(format!("http://{listen}/webhooks/psp"))
        .header("content-type", "application/json")
        .header(
            "Sequestra-Signature",
            format!(
                "t={t0},v1={}",
                sign(WEBHOOK_SECRETS[0], t0, body.as_bytes())
            ),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let statuses = statuses_until(&mut mine, "mine", "myPaymentUpdates", "SETTLED").await;
    assert_eq!(statuses, ["PENDING", "SENT", "SETTLED"]);
    other.kill().await.ok();
}

/// No `connection_init` in time: 4408. A revoked session: 4403 "Session ended". An
/// expired token: 4403 "Token expired".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_close_on_init_timeout_and_token_expiry() {
    let app = TestApp::spawn_with(
        crate::harness::Backend::Sqlite,
        &[
            ("SEQUESTRA_WS_INIT_TIMEOUT_MS", "300"),
            ("SEQUESTRA_ACCESS_TOKEN_TTL_SECS", "3"),
            ("SEQUESTRA_WS_RECHECK_MS", "200"),
        ],
    )
    .await
    .unwrap();
    let mut silent_client = connect(&app).await;
    let (code, reason) = close_code(&mut silent_client, 5).await;
    assert_eq!(code, Some(CloseCode::Library(4408)), "{reason}");

    let t = app.tenant("acme").await;
    let mut revoked = connect(&app).await;
    init(&mut revoked, t.token(Role::Admin)).await;
    let out = app
        .gql(
            Some(t.token(Role::Admin)),
            "mutation { signOut { sessionId } }",
            json!({}),
        )
        .await;
    assert!(out.ok()["signOut"]["sessionId"].is_string());
    let (code, reason) = close_code(&mut revoked, 5).await;
    assert_eq!(code, Some(CloseCode::Library(4403)));
    assert_eq!(reason, "Session ended");

    let mut socket = connect(&app).await;
    init(&mut socket, t.token(Role::Sender)).await;
    subscribe(
        &mut socket,
        "hb",
        "subscription { serverTime(intervalSeconds: 60) }",
        json!({}),
    )
    .await;
    let (code, reason) = close_code(&mut socket, 10).await;
    assert_eq!(code, Some(CloseCode::Library(4403)));
    assert_eq!(reason, "Token expired");

    // A socket renewed before its token expires outlives that token and closes when
    // the renewed one expires: the socket's expiry timer moves with the renewal.
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let sender = t.user(Role::Sender).clone();
    let first = app.sign_in("acme", &sender.email, &sender.password).await;
    let first_exp = app.tokens.verify(&first).unwrap().exp;
    let mut renewed = connect(&app).await;
    init(&mut renewed, &first).await;
    // A later second, so the fresh token's expiry is at least 1 s after the first's.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let fresh = app.sign_in("acme", &sender.email, &sender.password).await;
    assert!(app.tokens.verify(&fresh).unwrap().exp > first_exp);
    let ping = json!({ "type": "ping", "payload": { "Authorization": format!("Bearer {fresh}") } });
    renewed.send(Message::text(ping.to_string())).await.unwrap();
    assert_eq!(next_json(&mut renewed).await["type"], "pong");
    let past_first = first_exp * 1000 + 300 - Utc::now().timestamp_millis();
    tokio::time::sleep(std::time::Duration::from_millis(past_first.max(0) as u64)).await;
    renewed
        .send(Message::text(json!({ "type": "ping" }).to_string()))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut renewed).await["type"],
        "pong",
        "open past the first token's expiry"
    );
    let (code, reason) = close_code(&mut renewed, 10).await;
    assert_eq!(code, Some(CloseCode::Library(4403)));
    assert_eq!(reason, "Token expired");
}

/// A PSP over HTTP that is down (503) until told otherwise; counts submissions.
async fn switchable_psp() -> (
    String,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use axum::{
        Json, Router,
        extract::Path,
        http::{HeaderMap, StatusCode},
        routing::{get, post},
    };
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let up = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (up2, calls2) = (up.clone(), calls.clone());
    let router = Router::new()
        .route(
            "/payouts",
            post(move |headers: HeaderMap| async move {
                calls2.fetch_add(1, Ordering::SeqCst);
                if !up2.load(Ordering::SeqCst) {
                    return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({})));
                }
                let key = headers["idempotency-key"].to_str().unwrap().to_owned();
                (
                    StatusCode::OK,
                    Json(json!({ "reference": format!("psp_{key}") })),
                )
            }),
        )
        .route(
            "/payouts/{reference}",
            get(|Path(_): Path<String>| async { Json(json!({ "status": "processing" })) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, up, calls)
}

async fn ready_psp(app: &TestApp) -> Value {
    let r = app.http.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "an open circuit does not make the server unready"
    );
    r.json::<Value>().await.unwrap()["checks"]["psp"].clone()
}

async fn circuit_metric(app: &TestApp, url: &str) -> Option<String> {
    let page = app.metrics().await;
    let label = format!("psp_circuit_open{{endpoint=\"{url}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(label.as_str()).map(str::to_owned))
}

/// Two calls in a row find the PSP down: its circuit opens, nothing calls it during
/// the cool-down (the payment waits as PENDING), `/ready` and the metric say so; once
/// it answers again, the first call after the cool-down goes through and closes it.
async fn the_psp_circuit_opens_when_it_is_down_and_closes_when_it_answers(app: TestApp) {
    use std::sync::atomic::Ordering;
    const SECRET: &str = "psp-shared-secret-0123456789abcdef0123";
    let (url, up, calls) = switchable_psp().await;
    let psp_app = app
        .peer(&[
            ("SEQUESTRA_PSP", "http"),
            ("SEQUESTRA_PSP_URL", url.as_str()),
            ("SEQUESTRA_PSP_SECRET", SECRET),
            ("SEQUESTRA_PSP_MAX_RETRIES", "0"),
            ("SEQUESTRA_PSP_TIMEOUT_MS", "2000"),
            ("SEQUESTRA_PSP_CIRCUIT_FAILURES", "2"),
            ("SEQUESTRA_PSP_CIRCUIT_COOL_DOWN_MS", "2000"),
            ("SEQUESTRA_PAYMENT_RESUBMIT_AFTER_SECS", "0"),
            ("SEQUESTRA_JOBS_ENABLED", "true"),
            ("SEQUESTRA_JOBS_INTERVAL_MS", "100"),
        ])
        .await;
    assert_eq!(ready_psp(&psp_app).await["status"], "ok");
    let t = psp_app.tenant("acme").await;
    let (escrow_id, sender) = funded_escrow(&psp_app, &t).await;
    let payment_id = release(&psp_app, &sender, &escrow_id).await;

    // The release's own submission and the jobs' next one find it down: open.
    let mut psp = Value::Null;
    for _ in 0..100 {
        psp = ready_psp(&psp_app).await;
        if psp["status"] == "circuit_open" {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert_eq!(psp["status"], "circuit_open", "{psp}");
    assert!(psp["until"].is_string(), "{psp}");
    assert_eq!(circuit_metric(&psp_app, &url).await.as_deref(), Some("1"));
    let tried = calls.load(Ordering::SeqCst);
    assert_eq!(tried, 2, "opened after two calls found it down");
    // The jobs keep trying every 100 ms; the breaker keeps them from calling.
    tokio::time::sleep(StdDuration::from_millis(800)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        tried,
        "no call while the circuit is open"
    );
    assert_eq!(
        payment(&psp_app, &sender, &payment_id).await["status"],
        "PENDING"
    );

    // It answers again: after the cool-down, one call goes through and closes it.
    up.store(true, Ordering::SeqCst);
    wait_for(&psp_app, &sender, &payment_id, |p| p["status"] == "SENT").await;
    assert_eq!(ready_psp(&psp_app).await["status"], "ok");
    assert_eq!(circuit_metric(&psp_app, &url).await.as_deref(), Some("0"));
}
