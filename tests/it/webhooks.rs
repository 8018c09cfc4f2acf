//! `POST /webhooks/psp`: signatures (forged, stale, rotated, several values),
//! deduplication (sequential and concurrent), forward-only payments, malformed and
//! oversized bodies, unknown references.

use chrono::{Duration, Utc};
use sea_orm::EntityTrait;
use sequestra::{auth::Role, payments::webhook::sign};
use serde_json::{Value, json};

use crate::escrow::{create_escrow, escrow, fund};
use crate::harness::{TestApp, WEBHOOK_SECRETS};
use crate::mfa::enrol;
use crate::on_both_backends;

on_both_backends!(
    webhooks_are_signed_deduplicated_and_forward_only,
    a_payout_taken_back_after_it_settled_is_paid_again,
    a_psp_dispute_freezes_the_escrow_and_a_lost_one_takes_the_money_back,
);

pub(crate) async fn post(app: &TestApp, body: &[u8], signature: Option<String>) -> (u16, Value) {
    let mut request = app
        .http
        .post(app.url("/webhooks/psp"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("Sequestra-Signature", signature);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Settles every SENT payment of an escrow the way the PSP does: a signed
/// `payout.settled` webhook per payment, through the real route.
pub async fn settle_escrow_payments(app: &TestApp, token: &str, escrow_id: &str) {
    let r = app
        .gql(
            Some(token),
            "query($id: ID!) { escrow(id: $id) { payments { status pspReference } } }",
            json!({ "id": escrow_id }),
        )
        .await;
    for p in r.ok()["escrow"]["payments"].as_array().unwrap() {
        if p["status"] != "SENT" {
            continue;
        }
        let reference = p["pspReference"].as_str().unwrap();
        let body = event(
            &format!("evt_test_settle_{reference}"),
            "payout.settled",
            reference,
        );
        let (code, answer) = post(app, &body, signed(WEBHOOK_SECRETS[0], &body)).await;
        assert_eq!(
            (code, &answer["outcome"]),
            (200, &json!("applied")),
            "{answer}"
        );
    }
}

async fn first_payment_status(app: &TestApp, token: &str, escrow_id: &str) -> String {
    escrow(app, token, escrow_id).await["payments"][0]["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) fn signed(secret: &str, body: &[u8]) -> Option<String> {
    let t = Utc::now().timestamp();
    Some(format!("t={t},v1={}", sign(secret, t, body)))
}

pub(crate) fn event(id: &str, kind: &str, reference: &str) -> Vec<u8> {
    json!({ "id": id, "type": kind, "created": Utc::now().timestamp(), "data": { "reference": reference, "failureReason": null } })
        .to_string()
        .into_bytes()
}

async fn webhooks_are_signed_deduplicated_and_forward_only(app: TestApp) {
    let t = app.tenant("acme").await;
    let sender = t.token(Role::Sender).to_owned();
    let e = create_escrow(&app, &t, "10.00", json!([]), None, Duration::days(7)).await;
    let id = e["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &id, "10.00", "fund-1").await.ok();
    enrol(&app, &sender).await;
    let r = app
        .gql(Some(&sender), "mutation($id: ID!) { releaseEscrow(input: { escrowId: $id, idempotencyKey: \"rel-1\" }) { payments { status pspReference } } }", json!({ "id": id }))
        .await;
    let reference = r.ok()["releaseEscrow"]["payments"][0]["pspReference"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(first_payment_status(&app, &sender, &id).await, "SENT");

    let settled = event("evt_settle_1", "payout.settled", &reference);
    // Forged, missing, stale: 401, nothing changes.
    let (code, body) = post(
        &app,
        &settled,
        signed("not-the-secret-at-all-0000000000", &settled),
    )
    .await;
    assert_eq!(code, 401);
    assert_eq!(body, json!({ "error": "invalid signature" }), "no detail");
    assert_eq!(post(&app, &settled, None).await.0, 401);
    let old = Utc::now().timestamp() - 400;
    let stale = format!("t={old},v1={}", sign(WEBHOOK_SECRETS[0], old, &settled));
    assert_eq!(post(&app, &settled, Some(stale)).await.0, 401);
    assert_eq!(first_payment_status(&app, &sender, &id).await, "SENT");
    // Each refusal is on record, with its reason and address.
    let rejections = sequestra::entity::webhook_rejection::Entity::find()
        .all(&app.db)
        .await
        .unwrap();
    let mut reasons: Vec<&str> = rejections.iter().map(|r| r.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(reasons, ["MISMATCH", "MISSING", "STALE"]);
    assert!(
        rejections
            .iter()
            .all(|r| r.ip.as_deref() == Some("127.0.0.1"))
    );

    // The retiring secret still works, alongside a bad value in the same header.
    let now = Utc::now().timestamp();
    let header = format!(
        "t={now},v1={},v1={}",
        "ab".repeat(32),
        sign(WEBHOOK_SECRETS[1], now, &settled)
    );
    let (code, body) = post(&app, &settled, Some(header)).await;
    assert_eq!((code, body["outcome"].as_str()), (200, Some("applied")));
    assert_eq!(first_payment_status(&app, &sender, &id).await, "SETTLED");

    // The same event again: 200, nothing more.
    let (code, body) = post(&app, &settled, signed(WEBHOOK_SECRETS[0], &settled)).await;
    assert_eq!((code, body["outcome"].as_str()), (200, Some("duplicate")));
    // A late SENT, and a FAILED after SETTLED: recorded, no step back.
    for (n, kind) in ["payout.sent", "payout.failed"].iter().enumerate() {
        let late = event(&format!("evt_late_{n}"), kind, &reference);
        let (code, body) = post(&app, &late, signed(WEBHOOK_SECRETS[0], &late)).await;
        assert_eq!(
            (code, body["outcome"].as_str()),
            (200, Some("stale")),
            "{kind}"
        );
    }
    assert_eq!(first_payment_status(&app, &sender, &id).await, "SETTLED");

    // Unknown reference: 200 so the PSP stops, recorded.
    let unknown = event("evt_unknown", "payout.settled", "sim_nobody");
    let (code, body) = post(&app, &unknown, signed(WEBHOOK_SECRETS[0], &unknown)).await;
    assert_eq!(
        (code, body["outcome"].as_str()),
        (200, Some("unknown_reference"))
    );

    // Malformed (signed) and oversized bodies.
    let junk = br#"{"id":"evt_x","type":"payout.refunded","created":1,"data":{"reference":"r"}}"#;
    assert_eq!(
        post(&app, junk, signed(WEBHOOK_SECRETS[0], junk)).await.0,
        400
    );
    let not_json = b"hello";
    assert_eq!(
        post(&app, not_json, signed(WEBHOOK_SECRETS[0], not_json))
            .await
            .0,
        400
    );
    let big = vec![b' '; 70 * 1024];
    assert_eq!(
        post(&app, &big, signed(WEBHOOK_SECRETS[0], &big)).await.0,
        413
    );

    // Concurrent duplicates of a new event: one effect.
    let e2 = create_escrow(&app, &t, "5.00", json!([]), None, Duration::days(7)).await;
    let id2 = e2["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &id2, "5.00", "fund-2").await.ok();
    let r = app
        .gql(Some(&sender), "mutation($id: ID!) { releaseEscrow(input: { escrowId: $id, idempotencyKey: \"rel-2\" }) { payments { pspReference } } }", json!({ "id": id2 }))
        .await;
    let reference2 = r.ok()["releaseEscrow"]["payments"][0]["pspReference"]
        .as_str()
        .unwrap()
        .to_owned();
    // A PSP's failure reason may be long: it is kept, cut to 500 characters (it
    // also travels in the update notification, which PostgreSQL limits to 8000 bytes).
    let reason = format!("account closed: {}", "x".repeat(20_000));
    let failed = json!({ "id": "evt_fail_2", "type": "payout.failed", "created": Utc::now().timestamp(), "data": { "reference": reference2, "failureReason": reason } })
        .to_string()
        .into_bytes();
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (app, failed) = (app.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let sig = signed(WEBHOOK_SECRETS[0], &failed);
            post(&app, &failed, sig).await
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        let (code, body) = task.await.unwrap();
        assert_eq!(code, 200, "{body}");
        outcomes.push(body["outcome"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "applied").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "duplicate").count(),
        9,
        "{outcomes:?}"
    );
    let kept = app
        .gql(
            Some(&sender),
            "query($id: ID!) { escrow(id: $id) { payments { status failureReason } } }",
            json!({ "id": id2 }),
        )
        .await;
    let p = &kept.ok()["escrow"]["payments"][0];
    assert_eq!(p["status"], "FAILED");
    let kept_reason = p["failureReason"].as_str().unwrap();
    assert_eq!(kept_reason.chars().count(), 500);
    assert!(kept_reason.starts_with("account closed: x"));
    let audit = app.audit_actions(&t).await;
    assert_eq!(audit.iter().filter(|a| *a == "payment.failed").count(), 1);
    assert_eq!(audit.iter().filter(|a| *a == "payment.settled").count(), 1);
}

/// With settlement on, the simulated PSP posts signed webhooks to the server's own
/// route: payouts settle (or fail, every second one here), duplicates and a late
/// `payout.sent` change nothing.
async fn simulated_psp_closes_the_loop(backend: crate::harness::Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        &[
            ("SEQUESTRA_SIM_PSP_SETTLE_AFTER_MS", "50"),
            ("SEQUESTRA_SIM_PSP_FAIL_EVERY", "2"),
            ("SEQUESTRA_SIM_PSP_DUPLICATES", "true"),
            ("SEQUESTRA_SIM_PSP_OUT_OF_ORDER", "true"),
        ],
    )
    .await
    else {
        crate::harness::skipped("webhooks::simulated_psp_closes_the_loop::postgres");
        return;
    };
    let t = app.tenant("acme").await;
    let sender = t.token(Role::Sender).to_owned();
    enrol(&app, &sender).await;
    let e = create_escrow(
        &app,
        &t,
        "30.00",
        json!([{ "title": "a", "amount": "10.00" }, { "title": "b", "amount": "20.00" }]),
        None,
        Duration::days(7),
    )
    .await;
    let id = e["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &id, "30.00", "fund-sim").await.ok();
    app.gql(
        Some(&sender),
        "mutation($id: ID!) { releaseEscrow(input: { escrowId: $id, idempotencyKey: \"rel-sim\" }) { escrow { status } } }",
        json!({ "id": id }),
    )
    .await
    .ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let statuses = loop {
        let e = escrow(&app, &sender, &id).await;
        let mut statuses: Vec<String> = e["payments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["status"].as_str().unwrap().to_owned())
            .collect();
        statuses.sort();
        if statuses.iter().all(|s| s == "SETTLED" || s == "FAILED") {
            break statuses;
        }
        assert!(std::time::Instant::now() < deadline, "not settled: {e}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(statuses, ["FAILED", "SETTLED"], "every second payout fails");
    // Wait for the late events, then check what was recorded.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let events = sequestra::entity::webhook_event::Entity::find()
        .all(&app.db)
        .await
        .unwrap();
    let mut outcomes: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["APPLIED", "APPLIED", "STALE", "STALE"],
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_psp_closes_the_loop_sqlite() {
    simulated_psp_closes_the_loop(crate::harness::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_psp_closes_the_loop_postgres() {
    simulated_psp_closes_the_loop(crate::harness::Backend::Postgres).await;
}

/// An escrow of `amount` without milestones, funded and released by the tenant's
/// SENDER (who has MFA): its id, its payment's id and the payment's PSP reference.
async fn released(
    app: &TestApp,
    t: &crate::harness::TestTenant,
    amount: &str,
    key: &str,
) -> (String, String, String) {
    let sender = t.token(Role::Sender);
    let id = crate::escrow::funded_escrow(app, t, amount, &format!("fund-{key}")).await;
    let r = app
        .gql(
            Some(sender),
            "mutation($id: ID!, $k: String!) { releaseEscrow(input: { escrowId: $id, idempotencyKey: $k }) { payments { id pspReference } } }",
            json!({ "id": id, "k": format!("rel-{key}") }),
        )
        .await;
    let paid = &r.ok()["releaseEscrow"]["payments"][0];
    (
        id,
        paid["id"].as_str().unwrap().to_owned(),
        paid["pspReference"].as_str().unwrap().to_owned(),
    )
}

/// An event with a failure reason.
fn event_because(id: &str, kind: &str, reference: &str, reason: &str) -> Vec<u8> {
    json!({ "id": id, "type": kind, "created": Utc::now().timestamp(), "data": { "reference": reference, "failureReason": reason } })
        .to_string()
        .into_bytes()
}

async fn deliver(app: &TestApp, body: &[u8]) -> Value {
    let (status, answer) = post(app, body, signed(WEBHOOK_SECRETS[0], body)).await;
    assert_eq!(status, 200, "{answer}");
    answer["outcome"].clone()
}

/// `payout.returned` after `payout.settled`: the payment fails again (the money back
/// from the provider to PSP returned in the ledger), the milestone is being paid
/// again, the payee is told; its retry settles and pays the milestone once more.
/// `payment.refunded` on a payment still on its way fails it as `payout.failed`
/// would. The books hold throughout.
async fn a_payout_taken_back_after_it_settled_is_paid_again(app: TestApp) {
    let t = app.tenant("acme").await;
    let sender = t.token(Role::Sender).to_owned();
    enrol(&app, &sender).await;
    let e = create_escrow(
        &app,
        &t,
        "100.00",
        json!([{ "title": "all of it", "amount": "100.00" }]),
        None,
        Duration::days(7),
    )
    .await;
    let id = e["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &id, "100.00", "fund-1").await.ok();
    let r = app
        .gql(
            Some(&sender),
            "mutation($id: ID!) { releaseEscrow(input: { escrowId: $id, idempotencyKey: \"rel-1\" }) { payments { id pspReference } } }",
            json!({ "id": id }),
        )
        .await;
    let paid = r.ok()["releaseEscrow"]["payments"][0].clone();
    let reference = paid["pspReference"].as_str().unwrap().to_owned();
    let payment = paid["id"].as_str().unwrap().to_owned();
    assert_eq!(
        deliver(&app, &event("evt-s1", "payout.settled", &reference)).await,
        "applied"
    );
    let settled = escrow(&app, &sender, &id).await;
    assert_eq!(settled["milestones"][0]["status"], "PAID");

    // The payee's bank returns it.
    let returned = event_because("evt-r1", "payout.returned", &reference, "account closed");
    assert_eq!(deliver(&app, &returned).await, "applied");
    assert_eq!(deliver(&app, &returned).await, "duplicate");
    // Again, or a late failure: nothing more to do.
    assert_eq!(
        deliver(
            &app,
            &event_because("evt-r2", "payout.returned", &reference, "again")
        )
        .await,
        "stale"
    );
    assert_eq!(
        deliver(&app, &event("evt-f1", "payout.failed", &reference)).await,
        "stale"
    );
    let back = escrow(&app, &sender, &id).await;
    assert_eq!(back["status"], "RELEASED");
    assert_eq!(back["milestones"][0]["status"], "PAYING");
    assert_eq!(back["payments"][0]["status"], "FAILED");
    let kinds: Vec<&str> = back["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "MILESTONE_PAYMENT_RETURNED")
            .count(),
        1,
        "{kinds:?}"
    );
    let r = app
        .gql(
            Some(&sender),
            "query($id: ID!) { node(id: $id) { ... on Payment { status failureReason } } }",
            json!({ "id": payment }),
        )
        .await;
    assert_eq!(
        r.ok()["node"],
        json!({ "status": "FAILED", "failureReason": "returned: account closed" })
    );
    let actions = app.audit_actions(&t).await;
    assert!(
        actions.iter().any(|a| a == "payment.returned"),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a == "milestone.payment_returned"),
        "{actions:?}"
    );
    // The payee is told.
    use sea_orm::{ColumnTrait, QueryFilter};
    let told = sequestra::entity::notification::Entity::find()
        .filter(sequestra::entity::notification::Column::UserId.eq(t.user(Role::Beneficiary).id))
        .filter(sequestra::entity::notification::Column::Kind.eq("PAYMENT_FAILED"))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(told.len(), 1);
    assert!(
        told[0].data.contains("returned: account closed"),
        "{}",
        told[0].data
    );
    app.books().check().await;

    // Paid again: the retry settles and the milestone is paid once more.
    let r = app
        .gql(
            Some(&sender),
            "mutation($id: ID!) { retryPayment(input: { paymentId: $id, idempotencyKey: \"retry-1\" }) { payment { id status pspReference } } }",
            json!({ "id": payment }),
        )
        .await;
    let retry = r.ok()["retryPayment"]["payment"].clone();
    assert_eq!(retry["status"], "SENT", "{retry}");
    let again = retry["pspReference"].as_str().unwrap().to_owned();
    assert_eq!(
        deliver(&app, &event("evt-s2", "payout.settled", &again)).await,
        "applied"
    );
    let done = escrow(&app, &sender, &id).await;
    assert_eq!(done["milestones"][0]["status"], "PAID");
    app.books().check().await;

    // A refund of a payment still on its way is a failure like any other.
    let (other, _, on_its_way) = released(&app, &t, "20.00", "2").await;
    let refunded = event_because("evt-rf", "payment.refunded", &on_its_way, "payer asked");
    assert_eq!(deliver(&app, &refunded).await, "applied");
    assert_eq!(first_payment_status(&app, &sender, &other).await, "FAILED");
    app.books().check().await;
}

fn dispute_closed(id: &str, reference: &str, outcome: Option<&str>, reason: &str) -> Vec<u8> {
    json!({ "id": id, "type": "dispute.closed", "created": Utc::now().timestamp(),
            "data": { "reference": reference, "failureReason": reason, "outcome": outcome } })
    .to_string()
    .into_bytes()
}

async fn payment_state(app: &TestApp, token: &str, id: &str) -> Value {
    let r = app
        .gql(
            Some(token),
            "query($id: ID!) { node(id: $id) { ... on Payment { status failureReason disputeState disputeOpenedAt disputeClosedAt } } }",
            json!({ "id": id }),
        )
        .await;
    r.ok()["node"].clone()
}

/// `dispute.opened` on a milestone's settled payment while its escrow is still
/// RELEASABLE (another milestone unpaid):
/// the escrow is DISPUTED (for an admin to resolve), the payer and payee are told.
/// `dispute.closed` lost: the money is taken back (FAILED, its milestone PAYING) and
/// left to an operator. On a RELEASED escrow a dispute changes the payment only, and a
/// won one leaves it SETTLED. The books hold throughout.
async fn a_psp_dispute_freezes_the_escrow_and_a_lost_one_takes_the_money_back(app: TestApp) {
    use sea_orm::{ColumnTrait, QueryFilter};
    let t = app.tenant("acme").await;
    let sender = t.token(Role::Sender).to_owned();
    enrol(&app, &sender).await;
    let e = create_escrow(
        &app,
        &t,
        "100.00",
        json!([{ "title": "first", "amount": "50.00" }, { "title": "second", "amount": "50.00" }]),
        None,
        Duration::days(7),
    )
    .await;
    let id = e["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &id, "100.00", "fund-1").await.ok();
    // Delivered and accepted: both milestones approved, the escrow RELEASABLE; the
    // sender pays the first one only.
    app.gql(
        Some(t.token(Role::Beneficiary)),
        "mutation($id: ID!) { markDelivered(input: { escrowId: $id, note: \"done\" }) { escrow { status } } }",
        json!({ "id": id }),
    )
    .await
    .ok();
    app.gql(
        Some(&sender),
        "mutation($id: ID!) { approveEscrow(input: { escrowId: $id }) { escrow { status } } }",
        json!({ "id": id }),
    )
    .await
    .ok();
    let first = e["milestones"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .gql(
            Some(&sender),
            "mutation($id: ID!) { releaseMilestone(input: { milestoneId: $id, idempotencyKey: \"rm-1\" }) { payments { id pspReference } } }",
            json!({ "id": first }),
        )
        .await;
    let paid = r.ok()["releaseMilestone"]["payments"][0].clone();
    let (payment, reference) = (
        paid["id"].as_str().unwrap().to_owned(),
        paid["pspReference"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        deliver(&app, &event("evt-s1", "payout.settled", &reference)).await,
        "applied"
    );
    assert_eq!(escrow(&app, &sender, &id).await["status"], "RELEASABLE");

    // Opened: the escrow is disputed, once.
    let opened = event_because("evt-d1", "dispute.opened", &reference, "fraud claim");
    assert_eq!(deliver(&app, &opened).await, "applied");
    assert_eq!(
        deliver(
            &app,
            &event_because("evt-d2", "dispute.opened", &reference, "again")
        )
        .await,
        "stale"
    );
    let held = escrow(&app, &sender, &id).await;
    assert_eq!(
        (held["status"].as_str(), held["disputedFrom"].as_str()),
        (Some("DISPUTED"), Some("RELEASABLE"))
    );
    let why = held["disputeReason"].as_str().unwrap();
    assert!(
        why.contains(&payment) && why.contains("fraud claim"),
        "{why}"
    );
    let state = payment_state(&app, &sender, &payment).await;
    assert_eq!(
        (state["status"].as_str(), state["disputeState"].as_str()),
        (Some("SETTLED"), Some("OPENED"))
    );
    assert!(state["disputeOpenedAt"].is_string() && state["disputeClosedAt"].is_null());
    for (user, kind) in [
        (t.user(Role::Sender).id, "PAYMENT_DISPUTED"),
        (t.user(Role::Beneficiary).id, "PAYMENT_DISPUTED"),
        (t.user(Role::Sender).id, "ESCROW_DISPUTED"),
        (t.user(Role::Beneficiary).id, "ESCROW_DISPUTED"),
    ] {
        let n = sequestra::entity::notification::Entity::find()
            .filter(sequestra::entity::notification::Column::UserId.eq(user))
            .filter(sequestra::entity::notification::Column::Kind.eq(kind))
            .all(&app.db)
            .await
            .unwrap();
        assert_eq!(n.len(), 1, "{kind} for {user}");
    }

    // A close must say how it ended.
    let body = dispute_closed("evt-c0", &reference, None, "x");
    let (status, _) = post(&app, &body, signed(WEBHOOK_SECRETS[0], &body)).await;
    assert_eq!(status, 400);

    // Lost: the money is taken back and left to an operator.
    assert_eq!(
        deliver(
            &app,
            &dispute_closed("evt-c1", &reference, Some("lost"), "chargeback")
        )
        .await,
        "applied"
    );
    assert_eq!(
        deliver(
            &app,
            &dispute_closed("evt-c2", &reference, Some("won"), "late")
        )
        .await,
        "stale"
    );
    let state = payment_state(&app, &sender, &payment).await;
    assert_eq!(
        (
            state["status"].as_str(),
            state["failureReason"].as_str(),
            state["disputeState"].as_str()
        ),
        (
            Some("FAILED"),
            Some("dispute lost: chargeback"),
            Some("LOST")
        )
    );
    let uuid = sequestra::ids::decode_as(sequestra::ids::Kind::Payment, &payment).unwrap();
    let row = sequestra::entity::payment::Entity::find_by_id(uuid)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(
        row.checked_at.is_some(),
        "the retry policy leaves it to an operator"
    );
    let held = escrow(&app, &sender, &id).await;
    assert_eq!(held["status"], "DISPUTED");
    assert_eq!(held["milestones"][0]["status"], "PAYING");
    let actions = app.audit_actions(&t).await;
    for action in [
        "payment.dispute_opened",
        "payment.dispute_closed",
        "payment.returned",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    app.books().check().await;

    // On a released escrow: the payment only; won, it stands.
    let (other, payment, reference) = released(&app, &t, "30.00", "3").await;
    assert_eq!(
        deliver(&app, &event("evt-s3", "payout.settled", &reference)).await,
        "applied"
    );
    assert_eq!(
        deliver(
            &app,
            &event_because("evt-d3", "dispute.opened", &reference, "query")
        )
        .await,
        "applied"
    );
    assert_eq!(escrow(&app, &sender, &other).await["status"], "RELEASED");
    assert_eq!(
        deliver(
            &app,
            &dispute_closed("evt-c3", &reference, Some("won"), "resolved")
        )
        .await,
        "applied"
    );
    let state = payment_state(&app, &sender, &payment).await;
    assert_eq!(
        (state["status"].as_str(), state["disputeState"].as_str()),
        (Some("SETTLED"), Some("WON"))
    );
    assert!(state["disputeClosedAt"].is_string());
    app.books().check().await;
}
