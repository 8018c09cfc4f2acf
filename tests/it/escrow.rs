//! Escrow lifecycle through HTTP: both state machines, proofs (multipart uploads,
//! magic bytes, duplicates, EXIF geofence), disputes, refusals, tenancy, and the
//! deadline job.

use chrono::{Duration, Utc};
use sequestra::{auth::Role, escrow::inspect::sample_photo};
use serde_json::{Value, json};

use crate::harness::{GqlResponse, TestApp, TestTenant};
use crate::mfa::enrol;
use crate::on_both_backends;

on_both_backends!(
    milestones_proofs_and_releases,
    delivery_inspection_disputes_and_cancellation,
    jobs_auto_release_and_make_refundable,
    concurrent_funding_never_overfunds,
    foreign_and_unrelated_escrows_are_not_found,
    escrow_pages_cost_the_same_statements_for_any_size,
    two_concurrent_auto_releases_pay_once,
    uploads_are_checked,
);

pub const ESCROW_FIELDS: &str = "id status description amount { amount currency } funded { amount } \
    released { amount } refunded { amount } held { amount } senderId providerId deliveredAt \
    inspectionEndsAt refundableAt disputeReason disputedFrom \
    milestones { id position title status proofRequirement amount { amount } \
      proofs { id kind status decidedAutomatically latitude longitude capturedAt sha256 contentType } } \
    deposits { id amount { amount } } payments { id purpose status amount { amount } pspReference payeeId milestoneId } \
    events { kind fromStatus toStatus milestoneId actorId actedBy actor { userId email } }";

pub fn user_gid(id: uuid::Uuid) -> String {
    format!("usr_{}", id.simple())
}

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Creates an escrow from the tenant's SENDER to its BENEFICIARY (the provider).
pub async fn create_escrow(
    app: &TestApp,
    t: &TestTenant,
    amount: &str,
    milestones: Value,
    inspection: Option<i64>,
    deadline_in: Duration,
) -> Value {
    let r = app
        .gql(
            Some(t.token(Role::Sender)),
            &format!(
                "mutation($i: CreateEscrowInput!) {{ createEscrow(input: $i) {{ escrow {{ {ESCROW_FIELDS} }} }} }}"
            ),
            json!({
                "i": {
                    "idempotencyKey": key(),
                    "providerId": user_gid(t.user(Role::Beneficiary).id),
                    "amount": amount,
                    "currency": "EUR",
                    "description": "Kitchen renovation",
                    "deadline": (Utc::now() + deadline_in).to_rfc3339(),
                    "inspectionPeriodSeconds": inspection,
                    "milestones": milestones,
                }
            }),
        )
        .await;
    r.ok()["createEscrow"]["escrow"].clone()
}

/// An escrow of `amount` without milestones from the tenant's SENDER to its
/// BENEFICIARY, funded in full (idempotency key `key`): its id.
pub async fn funded_escrow(app: &TestApp, t: &TestTenant, amount: &str, key: &str) -> String {
    let e = create_escrow(app, t, amount, json!([]), None, Duration::days(7)).await;
    let id = e["id"].as_str().unwrap().to_owned();
    fund(app, t.token(Role::Sender), &id, amount, key)
        .await
        .ok();
    id
}

pub async fn fund(app: &TestApp, token: &str, id: &str, amount: &str, key: &str) -> GqlResponse {
    app.gql(
        Some(token),
        "mutation($id: ID!, $a: Decimal!, $k: String!) { fundEscrow(input: { escrowId: $id, amount: $a, idempotencyKey: $k }) { escrow { status funded { amount } } deposit { id amount { amount } } } }",
        json!({ "id": id, "a": amount, "k": key }),
    )
    .await
}

pub async fn escrow(app: &TestApp, token: &str, id: &str) -> Value {
    let r = app
        .gql(
            Some(token),
            &format!("query($id: ID!) {{ escrow(id: $id) {{ {ESCROW_FIELDS} }} }}"),
            json!({ "id": id }),
        )
        .await;
    r.ok()["escrow"].clone()
}

async fn call(app: &TestApp, token: &str, mutation: &str, vars: Value) -> GqlResponse {
    app.gql(Some(token), mutation, vars).await
}

const RELEASE_MILESTONE: &str = "mutation($id: ID!, $k: String!) { releaseMilestone(input: { milestoneId: $id, idempotencyKey: $k }) { escrow { status released { amount } } payments { status purpose amount { amount } pspReference } } }";
const RELEASE_ESCROW: &str = "mutation($id: ID!, $k: String!) { releaseEscrow(input: { escrowId: $id, idempotencyKey: $k }) { escrow { status } payments { status purpose amount { amount } } } }";
const SUBMIT: &str = "mutation($m: ID!, $n: String, $file: Upload) { submitProof(input: { milestoneId: $m, note: $n, file: $file }) { proof { id kind status decidedAutomatically contentType sha256 latitude capturedAt } } }";
const DECIDE: &str = "mutation($p: ID!, $a: Boolean!, $n: String) { decideProof(input: { proofId: $p, accept: $a, note: $n }) { proof { id status } } }";
const DELIVER: &str = "mutation($id: ID!) { markDelivered(input: { escrowId: $id, note: \"done\" }) { escrow { status deliveredAt inspectionEndsAt } } }";
const APPROVE: &str = "mutation($id: ID!) { approveEscrow(input: { escrowId: $id }) { escrow { status milestones { status } } } }";
const REJECT: &str = "mutation($id: ID!) { rejectEscrow(input: { escrowId: $id, reason: \"the tiles are cracked\" }) { escrow { status deliveredAt } } }";
const DISPUTE: &str = "mutation($id: ID!) { openDispute(input: { escrowId: $id, reason: \"not what we agreed\" }) { escrow { status disputedFrom disputeReason } } }";
const RESOLVE: &str = "mutation($id: ID!, $o: DisputeOutcome!, $a: Decimal, $k: String!) { resolveDispute(input: { escrowId: $id, outcome: $o, providerAmount: $a, idempotencyKey: $k }) { escrow { status released { amount } refunded { amount } held { amount } } payments { purpose status amount { amount } } } }";
const CANCEL: &str = "mutation($id: ID!, $k: String!) { cancelEscrow(input: { escrowId: $id, reason: \"changed plans\", idempotencyKey: $k }) { escrow { status refunded { amount } } payments { purpose status amount { amount } payeeId } } }";
const REFUND: &str = "mutation($id: ID!, $k: String!) { refundEscrow(input: { escrowId: $id, idempotencyKey: $k }) { escrow { status refunded { amount } } payments { purpose status amount { amount } } } }";

fn pdf(tag: &str) -> Vec<u8> {
    format!("%PDF-1.7\n% proof {tag}\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n").into_bytes()
}

fn kinds(e: &Value) -> Vec<String> {
    e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ev| ev["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_state(r: &GqlResponse, state: &str) {
    assert_eq!(r.code(), Some("CONFLICT"), "{}", r.body);
    assert_eq!(
        r.body["errors"][0]["extensions"]["reason"], "INVALID_STATE",
        "{}",
        r.body
    );
    assert_eq!(
        r.body["errors"][0]["extensions"]["state"], state,
        "{}",
        r.body
    );
}

async fn milestones_proofs_and_releases(app: TestApp) {
    let t = app.tenant("acme").await;
    let (sender, provider, support) = (
        t.token(Role::Sender).to_owned(),
        t.token(Role::Beneficiary).to_owned(),
        t.token(Role::Support).to_owned(),
    );
    let (lat, lon) = (48.858_37, 2.294_481);
    let e = create_escrow(
        &app,
        &t,
        "1000.00",
        json!([
            { "title": "Plans", "amount": "250.00", "proof": "DOCUMENT" },
            { "title": "Tiling", "amount": "750.00", "proof": "PHOTO",
              "geofence": { "latitude": lat, "longitude": lon, "radiusMeters": 150.0 } }
        ]),
        None,
        Duration::days(30),
    )
    .await;
    let id = e["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("esc_"));
    assert_eq!(e["status"], "DRAFT");
    assert_eq!(
        e["amount"],
        json!({ "amount": "1000.00", "currency": "EUR" })
    );
    let m1 = e["milestones"][0]["id"].as_str().unwrap().to_owned();
    let m2 = e["milestones"][1]["id"].as_str().unwrap().to_owned();

    // Milestones must add up; amounts are exact.
    let bad = app
        .gql(
            Some(&sender),
            "mutation($i: CreateEscrowInput!) { createEscrow(input: $i) { escrow { id } } }",
            json!({ "i": { "idempotencyKey": "bad-1",
                "providerId": user_gid(t.user(Role::Beneficiary).id), "amount": "10.00", "currency": "EUR",
                "description": "x", "deadline": (Utc::now() + Duration::days(1)).to_rfc3339(),
                "milestones": [{ "title": "a", "amount": "4.00" }, { "title": "b", "amount": "5.00" }] } }),
        )
        .await;
    assert_eq!(bad.code(), Some("BAD_USER_INPUT"), "{}", bad.body);
    let precise = app
        .gql(
            Some(&sender),
            "mutation($i: CreateEscrowInput!) { createEscrow(input: $i) { escrow { id } } }",
            json!({ "i": { "idempotencyKey": "bad-2",
                "providerId": user_gid(t.user(Role::Beneficiary).id), "amount": "10.005", "currency": "EUR",
                "description": "x", "deadline": (Utc::now() + Duration::days(1)).to_rfc3339() } }),
        )
        .await;
    assert_eq!(
        precise.body["errors"][0]["extensions"]["field"], "amount",
        "{}",
        precise.body
    );

    // A proof before funding is refused: the escrow is DRAFT.
    let early = app
        .gql_upload(
            &provider,
            SUBMIT,
            json!({ "m": m1 }),
            "file",
            "plans.pdf",
            pdf("early"),
        )
        .await;
    assert_state(&early, "DRAFT");

    // Partial deposits; above the remainder is refused; the last one funds it.
    let r = fund(&app, &sender, &id, "400.00", &key()).await;
    assert_eq!(r.ok()["fundEscrow"]["escrow"]["status"], "DRAFT");
    let over = fund(&app, &sender, &id, "600.01", &key()).await;
    assert_eq!(over.code(), Some("CONFLICT"));
    assert_eq!(
        over.body["errors"][0]["extensions"]["reason"],
        "EXCEEDS_REMAINING"
    );
    let provider_funds = fund(&app, &provider, &id, "1.00", &key()).await;
    assert_eq!(
        provider_funds.code(),
        Some("FORBIDDEN"),
        "only the sender funds"
    );
    let r = fund(&app, &sender, &id, "600.00", &key()).await;
    assert_eq!(r.ok()["fundEscrow"]["escrow"]["status"], "FUNDED");
    assert_eq!(
        r.ok()["fundEscrow"]["escrow"]["funded"]["amount"],
        "1000.00"
    );
    assert_state(&fund(&app, &sender, &id, "1.00", &key()).await, "FUNDED");

    // Milestone 1: a document, rejected, then another one accepted by support.
    let not_a_pdf = app
        .gql_upload(
            &provider,
            SUBMIT,
            json!({ "m": m1 }),
            "file",
            "plans.pdf",
            b"GIF89a....".to_vec(),
        )
        .await;
    assert_eq!(
        not_a_pdf.body["errors"][0]["extensions"]["field"], "file",
        "{}",
        not_a_pdf.body
    );
    let sender_proves = app
        .gql_upload(
            &sender,
            SUBMIT,
            json!({ "m": m1 }),
            "file",
            "plans.pdf",
            pdf("s"),
        )
        .await;
    assert_eq!(
        sender_proves.code(),
        Some("FORBIDDEN"),
        "only the provider proves"
    );
    let p1 = app
        .gql_upload(
            &provider,
            SUBMIT,
            json!({ "m": m1, "n": "v1" }),
            "file",
            "../../plans.pdf",
            pdf("v1"),
        )
        .await;
    let p1 = p1.ok()["submitProof"]["proof"].clone();
    assert_eq!(p1["status"], "PENDING");
    assert_eq!(p1["kind"], "DOCUMENT");
    assert_eq!(p1["contentType"], "application/pdf");
    assert_eq!(p1["sha256"].as_str().unwrap().len(), 64);
    let again = app
        .gql_upload(
            &provider,
            SUBMIT,
            json!({ "m": m1 }),
            "file",
            "plans.pdf",
            pdf("v2"),
        )
        .await;
    assert_state(&again, "PENDING_REVIEW");
    let r = call(
        &app,
        &sender,
        DECIDE,
        json!({ "p": p1["id"], "a": false, "n": "unsigned" }),
    )
    .await;
    assert_eq!(r.ok()["decideProof"]["proof"]["status"], "REJECTED");
    assert_eq!(
        call(&app, &sender, DECIDE, json!({ "p": p1["id"], "a": true }))
            .await
            .code(),
        Some("CONFLICT"),
        "a decided proof stays decided"
    );
    let reused = app
        .gql_upload(
            &provider,
            SUBMIT,
            json!({ "m": m1 }),
            "file",
            "plans.pdf",
            pdf("v1"),
        )
        .await;
    assert_eq!(
        reused.body["errors"][0]["extensions"]["reason"], "PROOF_ALREADY_USED",
        "{}",
        reused.body
    );
    let p2 = app
        .gql_upload(
            &provider,
            SUBMIT,
            json!({ "m": m1 }),
            "file",
            "plans-signed.pdf",
            pdf("v2"),
        )
        .await;
    let p2 = p2.ok()["submitProof"]["proof"].clone();
    let by_provider = call(&app, &provider, DECIDE, json!({ "p": p2["id"], "a": true })).await;
    assert_eq!(
        by_provider.code(),
        Some("FORBIDDEN"),
        "{}",
        by_provider.body
    );
    let r = call(&app, &support, DECIDE, json!({ "p": p2["id"], "a": true })).await;
    assert_eq!(r.ok()["decideProof"]["proof"]["status"], "ACCEPTED");

    // Milestone 2: a photo outside the fence waits; one inside is approved at once.
    let far = sample_photo(lat + 0.01, lon, Utc::now() - Duration::minutes(1));
    let r = app
        .gql_upload(
            &provider,
            SUBMIT,
            json!({ "m": m2 }),
            "file",
            "far.jpg",
            far,
        )
        .await;
    let far = r.ok()["submitProof"]["proof"].clone();
    assert_eq!(far["status"], "PENDING");
    assert_eq!(far["decidedAutomatically"], false);
    assert!(
        far["latitude"].as_f64().is_some(),
        "EXIF GPS is read: {far}"
    );
    let r = call(&app, &sender, DECIDE, json!({ "p": far["id"], "a": false })).await;
    assert_eq!(r.ok()["decideProof"]["proof"]["status"], "REJECTED");
    let near = sample_photo(lat + 0.0005, lon, Utc::now());
    let r = app
        .gql_upload(
            &provider,
            SUBMIT,
            json!({ "m": m2 }),
            "file",
            "near.jpg",
            near,
        )
        .await;
    let near = r.ok()["submitProof"]["proof"].clone();
    assert_eq!(near["status"], "ACCEPTED", "{near}");
    assert_eq!(near["decidedAutomatically"], true);
    assert_eq!(near["kind"], "PHOTO");
    let e = escrow(&app, &sender, &id).await;
    assert_eq!(e["status"], "RELEASABLE", "every milestone approved: {e}");

    // Releasing needs payments:execute and a step-up.
    let no_step_up = call(
        &app,
        &sender,
        RELEASE_MILESTONE,
        json!({ "id": m1, "k": key() }),
    )
    .await;
    assert_eq!(no_step_up.code(), Some("MFA_REQUIRED"));
    enrol(&app, &sender).await;
    let by_support = call(
        &app,
        &support,
        RELEASE_MILESTONE,
        json!({ "id": m1, "k": key() }),
    )
    .await;
    assert_eq!(
        by_support.code(),
        Some("FORBIDDEN"),
        "support does not move money"
    );
    let k1 = key();
    let r = call(
        &app,
        &sender,
        RELEASE_MILESTONE,
        json!({ "id": m1, "k": k1 }),
    )
    .await;
    let first = r.ok()["releaseMilestone"].clone();
    assert_eq!(first["escrow"]["status"], "RELEASABLE");
    assert_eq!(first["escrow"]["released"]["amount"], "250.00");
    assert_eq!(
        first["payments"][0]["status"], "SENT",
        "the simulated PSP accepts: {first}"
    );
    assert_eq!(first["payments"][0]["purpose"], "ESCROW_RELEASE");
    // Same key, same input: the same payment again, nothing paid twice.
    let replay = call(
        &app,
        &sender,
        RELEASE_MILESTONE,
        json!({ "id": m1, "k": k1 }),
    )
    .await;
    assert_eq!(
        replay.ok()["releaseMilestone"]["payments"],
        first["payments"]
    );
    let other = call(
        &app,
        &sender,
        RELEASE_MILESTONE,
        json!({ "id": m2, "k": k1 }),
    )
    .await;
    assert_eq!(
        other.body["errors"][0]["extensions"]["reason"],
        "IDEMPOTENCY_KEY_REUSED"
    );
    assert_state(
        &call(
            &app,
            &sender,
            RELEASE_MILESTONE,
            json!({ "id": m1, "k": key() }),
        )
        .await,
        "PAYING",
    );
    // The milestone is paid when the PSP settles its payment, not before.
    assert_eq!(
        escrow(&app, &sender, &id).await["milestones"][0]["status"],
        "PAYING"
    );
    crate::webhooks::settle_escrow_payments(&app, &sender, &id).await;
    assert_eq!(
        escrow(&app, &sender, &id).await["milestones"][0]["status"],
        "PAID"
    );

    let r = call(
        &app,
        &sender,
        RELEASE_MILESTONE,
        json!({ "id": m2, "k": key() }),
    )
    .await;
    assert_eq!(r.ok()["releaseMilestone"]["escrow"]["status"], "RELEASED");
    crate::webhooks::settle_escrow_payments(&app, &sender, &id).await;
    let e = escrow(&app, &sender, &id).await;
    assert_eq!(e["released"]["amount"], "1000.00");
    assert_eq!(e["held"]["amount"], "0.00");
    assert_eq!(e["milestones"][0]["status"], "PAID");
    assert_eq!(e["milestones"][1]["status"], "PAID");
    assert_eq!(e["payments"].as_array().unwrap().len(), 2);
    assert_eq!(e["deposits"].as_array().unwrap().len(), 2);
    assert_eq!(e["milestones"][0]["proofs"].as_array().unwrap().len(), 2);
    let events = kinds(&e);
    for expected in [
        "ESCROW_CREATED",
        "ESCROW_DEPOSIT_RECEIVED",
        "ESCROW_FUNDED",
        "MILESTONE_PROOF_SUBMITTED",
        "MILESTONE_REJECTED",
        "MILESTONE_APPROVED",
        "ESCROW_RELEASABLE",
        "MILESTONE_PAYING",
        "MILESTONE_PAID",
        "ESCROW_RELEASED",
    ] {
        assert!(
            events.iter().any(|k| k == expected),
            "{expected} in {events:?}"
        );
    }
    // Final: nothing moves a RELEASED escrow.
    assert_state(
        &call(&app, &sender, DISPUTE, json!({ "id": id })).await,
        "RELEASED",
    );
    assert_state(&fund(&app, &sender, &id, "1.00", &key()).await, "RELEASED");
    // Every transition is audited too.
    let audit = app.audit_actions(&t).await;
    assert!(audit.iter().any(|a| a == "escrow.released"), "{audit:?}");
    assert!(audit.iter().any(|a| a == "payment.sent"), "{audit:?}");
}

async fn delivery_inspection_disputes_and_cancellation(app: TestApp) {
    let t = app.tenant("acme").await;
    let (sender, provider, admin) = (
        t.token(Role::Sender).to_owned(),
        t.token(Role::Beneficiary).to_owned(),
        t.token(Role::Admin).to_owned(),
    );
    let e = create_escrow(&app, &t, "300.00", json!([]), Some(3600), Duration::days(7)).await;
    let id = e["id"].as_str().unwrap().to_owned();
    assert_eq!(
        e["milestones"].as_array().unwrap().len(),
        1,
        "one implicit milestone"
    );
    assert_eq!(e["milestones"][0]["proofRequirement"], "NONE");
    assert_state(
        &call(&app, &provider, DELIVER, json!({ "id": id })).await,
        "DRAFT",
    );
    fund(&app, &sender, &id, "300.00", &key()).await.ok();

    // Approval needs a delivery; a rejection undoes one.
    let r = call(&app, &sender, APPROVE, json!({ "id": id })).await;
    assert_eq!(r.body["errors"][0]["extensions"]["reason"], "NOT_DELIVERED");
    assert_eq!(
        call(&app, &sender, DELIVER, json!({ "id": id }))
            .await
            .code(),
        Some("FORBIDDEN")
    );
    let r = call(&app, &provider, DELIVER, json!({ "id": id })).await;
    assert!(r.ok()["markDelivered"]["escrow"]["inspectionEndsAt"].is_string());
    let r = call(&app, &sender, REJECT, json!({ "id": id })).await;
    assert_eq!(r.ok()["rejectEscrow"]["escrow"]["status"], "FUNDED");
    assert_eq!(r.ok()["rejectEscrow"]["escrow"]["deliveredAt"], Value::Null);
    call(&app, &provider, DELIVER, json!({ "id": id }))
        .await
        .ok();
    let r = call(&app, &sender, APPROVE, json!({ "id": id })).await;
    assert_eq!(r.ok()["approveEscrow"]["escrow"]["status"], "RELEASABLE");
    assert_eq!(
        r.ok()["approveEscrow"]["escrow"]["milestones"][0]["status"],
        "APPROVED"
    );

    // A dispute freezes it; only an admin with a step-up resolves it.
    let r = call(&app, &provider, DISPUTE, json!({ "id": id })).await;
    assert_eq!(r.ok()["openDispute"]["escrow"]["status"], "DISPUTED");
    assert_eq!(
        r.ok()["openDispute"]["escrow"]["disputedFrom"],
        "RELEASABLE"
    );
    enrol(&app, &sender).await;
    assert_state(
        &call(
            &app,
            &sender,
            RELEASE_ESCROW,
            json!({ "id": id, "k": key() }),
        )
        .await,
        "DISPUTED",
    );
    let split = json!({ "id": id, "o": "SPLIT", "a": "100.00", "k": key() });
    assert_eq!(
        call(&app, &sender, RESOLVE, split.clone()).await.code(),
        Some("FORBIDDEN")
    );
    assert_eq!(
        call(&app, &admin, RESOLVE, split.clone()).await.code(),
        Some("MFA_REQUIRED")
    );
    enrol(&app, &admin).await;
    let too_much = call(
        &app,
        &admin,
        RESOLVE,
        json!({ "id": id, "o": "SPLIT", "a": "300.00", "k": key() }),
    )
    .await;
    assert_eq!(too_much.code(), Some("BAD_USER_INPUT"));
    let r = call(&app, &admin, RESOLVE, split).await;
    let resolved = r.ok()["resolveDispute"].clone();
    assert_eq!(resolved["escrow"]["status"], "RELEASED");
    assert_eq!(resolved["escrow"]["released"]["amount"], "100.00");
    assert_eq!(resolved["escrow"]["refunded"]["amount"], "200.00");
    assert_eq!(resolved["escrow"]["held"]["amount"], "0.00");
    let purposes: Vec<&str> = resolved["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["purpose"].as_str().unwrap())
        .collect();
    assert_eq!(purposes, ["ESCROW_RELEASE", "ESCROW_REFUND"]);

    // Who acted: the parties are named to each other; staff acted, but a party is
    // not told who (staff are).
    let event = |e: &Value, kind: &str| {
        e["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|ev| ev["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {e}"))
            .clone()
    };
    let seen_by_sender = escrow(&app, &sender, &id).await;
    let disputed = event(&seen_by_sender, "ESCROW_DISPUTED");
    assert_eq!(disputed["actedBy"], "PROVIDER");
    assert_eq!(
        disputed["actor"]["userId"],
        user_gid(t.user(Role::Beneficiary).id)
    );
    assert_eq!(disputed["actor"]["email"], t.user(Role::Beneficiary).email);
    let funded = event(&seen_by_sender, "ESCROW_FUNDED");
    assert_eq!(funded["actedBy"], "SENDER");
    assert_eq!(funded["actor"]["userId"], user_gid(t.user(Role::Sender).id));
    let by_staff = event(&seen_by_sender, "ESCROW_DISPUTE_RESOLVED");
    assert_eq!(by_staff["actedBy"], "STAFF");
    assert_eq!(by_staff["actor"], Value::Null, "{by_staff}");
    assert_eq!(
        by_staff["actorId"],
        Value::Null,
        "the deprecated id hides it too"
    );
    let seen_by_admin = escrow(&app, &admin, &id).await;
    let by_staff = event(&seen_by_admin, "ESCROW_DISPUTE_RESOLVED");
    assert_eq!(by_staff["actedBy"], "STAFF");
    assert_eq!(by_staff["actor"]["email"], t.user(Role::Admin).email);
    assert_eq!(by_staff["actorId"], user_gid(t.user(Role::Admin).id));

    // A dispute resolved by refund.
    let e = create_escrow(&app, &t, "50.00", json!([]), None, Duration::days(7)).await;
    let id2 = e["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &id2, "50.00", &key()).await.ok();
    call(&app, &sender, DISPUTE, json!({ "id": id2 }))
        .await
        .ok();
    let r = call(
        &app,
        &admin,
        RESOLVE,
        json!({ "id": id2, "o": "REFUND", "k": key() }),
    )
    .await;
    assert_eq!(r.ok()["resolveDispute"]["escrow"]["status"], "REFUNDED");
    assert_eq!(
        r.ok()["resolveDispute"]["escrow"]["refunded"]["amount"],
        "50.00"
    );

    // A dispute resolved by release pays every milestone.
    let e = create_escrow(
        &app,
        &t,
        "60.00",
        json!([{ "title": "a", "amount": "20.00" }, { "title": "b", "amount": "40.00" }]),
        None,
        Duration::days(7),
    )
    .await;
    let id3 = e["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &id3, "60.00", &key()).await.ok();
    call(&app, &provider, DISPUTE, json!({ "id": id3 }))
        .await
        .ok();
    let r = call(
        &app,
        &admin,
        RESOLVE,
        json!({ "id": id3, "o": "RELEASE", "k": key() }),
    )
    .await;
    assert_eq!(r.ok()["resolveDispute"]["escrow"]["status"], "RELEASED");
    crate::webhooks::settle_escrow_payments(&app, &sender, &id3).await;
    let e = escrow(&app, &sender, &id3).await;
    assert!(
        e["milestones"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "PAID"),
        "{e}"
    );

    // Cancelling: the sender a DRAFT (partial deposits refunded), the provider a
    // FUNDED one; the sender cannot walk away from a FUNDED escrow.
    let e = create_escrow(&app, &t, "80.00", json!([]), None, Duration::days(7)).await;
    let draft = e["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &draft, "30.00", &key()).await.ok();
    let r = call(&app, &sender, CANCEL, json!({ "id": draft, "k": key() })).await;
    let c = r.ok()["cancelEscrow"].clone();
    assert_eq!(c["escrow"]["status"], "CANCELLED");
    assert_eq!(c["payments"][0]["purpose"], "ESCROW_REFUND");
    assert_eq!(c["payments"][0]["amount"]["amount"], "30.00");
    assert_eq!(
        c["payments"][0]["payeeId"],
        user_gid(t.user(Role::Sender).id)
    );
    assert_state(
        &call(&app, &sender, CANCEL, json!({ "id": draft, "k": key() })).await,
        "CANCELLED",
    );

    let e = create_escrow(&app, &t, "80.00", json!([]), None, Duration::days(7)).await;
    let funded = e["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &funded, "80.00", &key()).await.ok();
    assert_eq!(
        call(&app, &sender, CANCEL, json!({ "id": funded, "k": key() }))
            .await
            .code(),
        Some("FORBIDDEN")
    );
    let not_yet = call(&app, &sender, REFUND, json!({ "id": funded, "k": key() })).await;
    assert_eq!(
        not_yet.body["errors"][0]["extensions"]["reason"],
        "NOT_REFUNDABLE"
    );
    let r = call(&app, &provider, CANCEL, json!({ "id": funded, "k": key() })).await;
    assert_eq!(
        r.ok()["cancelEscrow"]["escrow"]["refunded"]["amount"],
        "80.00"
    );

    // Releasing a whole FUNDED escrow early approves and pays its milestones.
    let e = create_escrow(&app, &t, "10.00", json!([]), None, Duration::days(7)).await;
    let early = e["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &early, "10.00", &key()).await.ok();
    let r = call(
        &app,
        &sender,
        RELEASE_ESCROW,
        json!({ "id": early, "k": key() }),
    )
    .await;
    assert_eq!(r.ok()["releaseEscrow"]["escrow"]["status"], "RELEASED");
    assert_eq!(r.ok()["releaseEscrow"]["payments"][0]["status"], "SENT");
}

async fn jobs_auto_release_and_make_refundable(app: TestApp) {
    let t = app.tenant("acme").await;
    let (sender, provider) = (
        t.token(Role::Sender).to_owned(),
        t.token(Role::Beneficiary).to_owned(),
    );
    // Two more processes on the same database, each running the jobs every 50 ms.
    let peer_a = app.peer(&[("SEQUESTRA_JOBS_INTERVAL_MS", "50")]).await;
    let peer_b = app.peer(&[("SEQUESTRA_JOBS_INTERVAL_MS", "50")]).await;

    let e = create_escrow(
        &app,
        &t,
        "90.00",
        json!([{ "title": "a", "amount": "30.00" }, { "title": "b", "amount": "60.00" }]),
        Some(1),
        Duration::days(7),
    )
    .await;
    let lapsing = e["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &lapsing, "90.00", &key()).await.ok();
    call(&app, &provider, DELIVER, json!({ "id": lapsing }))
        .await
        .ok();

    let e = create_escrow(&app, &t, "40.00", json!([]), None, Duration::seconds(2)).await;
    let overdue = e["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &overdue, "40.00", &key()).await.ok();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (released, refundable) = loop {
        let a = escrow(&app, &sender, &lapsing).await;
        let b = escrow(&app, &sender, &overdue).await;
        if a["status"] == "RELEASED" && b["refundableAt"].is_string() {
            break (a, b);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jobs did not run: {a} {b}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // Exactly once, though two processes ran the job.
    let payments = released["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 2, "{released}");
    assert!(payments.iter().all(|p| p["status"] == "SENT"));
    let events = kinds(&released);
    assert_eq!(
        events.iter().filter(|k| *k == "ESCROW_RELEASED").count(),
        1,
        "{events:?}"
    );
    let lapse = released["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ev| ev["kind"] == "ESCROW_RELEASED")
        .unwrap()
        .clone();
    assert_eq!(lapse["actorId"], Value::Null, "the system released it");
    assert_eq!(lapse["actedBy"], "SYSTEM");
    assert_eq!(lapse["actor"], Value::Null);
    assert_eq!(
        kinds(&refundable)
            .iter()
            .filter(|k| *k == "ESCROW_DEADLINE_PASSED")
            .count(),
        1
    );

    let late = call(&app, &provider, DELIVER, json!({ "id": overdue })).await;
    assert_eq!(
        late.body["errors"][0]["extensions"]["reason"],
        "DEADLINE_PASSED"
    );
    let k = key();
    let r = call(&app, &sender, REFUND, json!({ "id": overdue, "k": k })).await;
    assert_eq!(r.ok()["refundEscrow"]["escrow"]["status"], "REFUNDED");
    assert_eq!(
        r.ok()["refundEscrow"]["payments"][0]["amount"]["amount"],
        "40.00"
    );
    peer_a.stop().await;
    peer_b.stop().await;
}

async fn concurrent_funding_never_overfunds(app: TestApp) {
    let t = app.tenant("acme").await;
    let sender = t.token(Role::Sender).to_owned();
    let app = std::sync::Arc::new(app);

    // 50 deposits of 4.00 with different keys against a total of 100.00.
    let e = create_escrow(&app, &t, "100.00", json!([]), None, Duration::days(7)).await;
    let id = e["id"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (app, sender, id) = (app.clone(), sender.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            fund(&app, &sender, &id, "4.00", &key()).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        let r = task.await.unwrap();
        match r.code() {
            None => ok += 1,
            Some("CONFLICT") => {}
            other => panic!("unexpected {other:?}: {}", r.body),
        }
    }
    assert_eq!(ok, 25, "exactly enough deposits to reach the total");
    let e = escrow(&app, &sender, &id).await;
    assert_eq!(e["status"], "FUNDED");
    assert_eq!(e["funded"]["amount"], "100.00");
    assert_eq!(e["deposits"].as_array().unwrap().len(), 25);

    // 20 concurrent calls with one key: one deposit, the same answer 20 times.
    let e = create_escrow(&app, &t, "100.00", json!([]), None, Duration::days(7)).await;
    let id = e["id"].as_str().unwrap().to_owned();
    let k = key();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (app, sender, id, k) = (app.clone(), sender.clone(), id.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            fund(&app, &sender, &id, "7.00", &k).await
        }));
    }
    let mut deposits = std::collections::HashSet::new();
    for task in tasks {
        let r = task.await.unwrap();
        deposits.insert(
            r.ok()["fundEscrow"]["deposit"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(deposits.len(), 1, "{deposits:?}");
    let e = escrow(&app, &sender, &id).await;
    assert_eq!(e["funded"]["amount"], "7.00");
    assert_eq!(e["deposits"].as_array().unwrap().len(), 1);
}

async fn foreign_and_unrelated_escrows_are_not_found(app: TestApp) {
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let outsider = app
        .add_user(
            &acme,
            "other.sender@acme.test",
            &[Role::Sender, Role::Beneficiary],
        )
        .await;
    let sender = acme.token(Role::Sender).to_owned();
    let e = create_escrow(
        &app,
        &acme,
        "20.00",
        json!([{ "title": "a", "amount": "20.00", "proof": "DOCUMENT" }]),
        Some(60),
        Duration::days(7),
    )
    .await;
    let id = e["id"].as_str().unwrap().to_owned();
    let m = e["milestones"][0]["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &id, "20.00", &key()).await.ok();
    let p = app
        .gql_upload(
            acme.token(Role::Beneficiary),
            SUBMIT,
            json!({ "m": m }),
            "file",
            "a.pdf",
            pdf("a"),
        )
        .await;
    let proof = p.ok()["submitProof"]["proof"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let payment_e = escrow(&app, &sender, &id).await;
    assert_eq!(payment_e["status"], "FUNDED");

    let strangers = [
        ("globex sender", globex.token(Role::Sender).to_owned()),
        ("globex admin", globex.token(Role::Admin).to_owned()),
        ("globex support", globex.token(Role::Support).to_owned()),
        (
            "globex beneficiary",
            globex.token(Role::Beneficiary).to_owned(),
        ),
        ("acme non-party", outsider.token.clone()),
    ];
    for (who, token) in &strangers {
        let attempts = [
            (
                "escrow",
                call(
                    &app,
                    token,
                    "query($id: ID!) { escrow(id: $id) { id } }",
                    json!({ "id": id }),
                )
                .await,
            ),
            (
                "node",
                call(
                    &app,
                    token,
                    "query($id: ID!) { node(id: $id) { id } }",
                    json!({ "id": id }),
                )
                .await,
            ),
            (
                "node milestone",
                call(
                    &app,
                    token,
                    "query($id: ID!) { node(id: $id) { id } }",
                    json!({ "id": m }),
                )
                .await,
            ),
            (
                "node proof",
                call(
                    &app,
                    token,
                    "query($id: ID!) { node(id: $id) { id } }",
                    json!({ "id": proof }),
                )
                .await,
            ),
            ("fund", fund(&app, token, &id, "1.00", &key()).await),
            (
                "cancel",
                call(&app, token, CANCEL, json!({ "id": id, "k": key() })).await,
            ),
            (
                "refund",
                call(&app, token, REFUND, json!({ "id": id, "k": key() })).await,
            ),
            (
                "deliver",
                call(&app, token, DELIVER, json!({ "id": id })).await,
            ),
            (
                "approve",
                call(&app, token, APPROVE, json!({ "id": id })).await,
            ),
            (
                "reject",
                call(&app, token, REJECT, json!({ "id": id })).await,
            ),
            (
                "dispute",
                call(&app, token, DISPUTE, json!({ "id": id })).await,
            ),
            (
                "decide",
                call(&app, token, DECIDE, json!({ "p": proof, "a": true })).await,
            ),
            (
                "submit",
                app.gql_upload(token, SUBMIT, json!({ "m": m }), "file", "x.pdf", pdf(who))
                    .await,
            ),
        ];
        for (what, r) in attempts {
            // Guards may refuse first (a role without the scope): never a leak either way.
            let code = r.code();
            assert!(
                code == Some("NOT_FOUND")
                    || (code == Some("FORBIDDEN") && r.body["errors"][0]["path"].is_array()),
                "{who} / {what}: {}",
                r.body
            );
            if matches!(
                what,
                "escrow"
                    | "node"
                    | "node milestone"
                    | "node proof"
                    | "fund"
                    | "deliver"
                    | "dispute"
                    | "submit"
            ) && !who.contains("support")
            {
                assert_eq!(code, Some("NOT_FOUND"), "{who} / {what}: {}", r.body);
            }
        }
        let list = call(
            &app,
            token,
            "{ escrows(first: 50) { edges { node { id } } } }",
            json!({}),
        )
        .await;
        if list.code().is_none() {
            assert_eq!(
                list.data()["escrows"]["edges"],
                json!([]),
                "{who} lists nothing"
            );
        }
    }
    // Strangers who pass the step-up still find nothing to release or resolve.
    for token in [
        globex.token(Role::Sender).to_owned(),
        outsider.token.clone(),
    ] {
        enrol(&app, &token).await;
        let r = call(
            &app,
            &token,
            RELEASE_ESCROW,
            json!({ "id": id, "k": key() }),
        )
        .await;
        assert_eq!(r.code(), Some("NOT_FOUND"), "{}", r.body);
        let r = call(
            &app,
            &token,
            RELEASE_MILESTONE,
            json!({ "id": m, "k": key() }),
        )
        .await;
        assert_eq!(r.code(), Some("NOT_FOUND"), "{}", r.body);
    }
    let g_admin = globex.token(Role::Admin).to_owned();
    enrol(&app, &g_admin).await;
    let r = call(
        &app,
        &g_admin,
        RESOLVE,
        json!({ "id": id, "o": "REFUND", "k": key() }),
    )
    .await;
    assert_eq!(r.code(), Some("NOT_FOUND"), "{}", r.body);
    // A provider of another tenant is as missing as any other id.
    let r = app
        .gql(
            Some(&sender),
            "mutation($i: CreateEscrowInput!) { createEscrow(input: $i) { escrow { id } } }",
            json!({ "i": { "idempotencyKey": "foreign-1",
                "providerId": user_gid(globex.user(Role::Beneficiary).id), "amount": "10.00", "currency": "EUR",
                "description": "x", "deadline": (Utc::now() + Duration::days(1)).to_rfc3339() } }),
        )
        .await;
    assert_eq!(r.code(), Some("NOT_FOUND"), "{}", r.body);
    // Support and admins of the tenant see it; the parties list it on their side.
    for role in [Role::Support, Role::Admin, Role::Beneficiary] {
        let r = call(
            &app,
            acme.token(role),
            "{ escrows(first: 10) { edges { node { id } } } }",
            json!({}),
        )
        .await;
        assert_eq!(
            r.ok()["escrows"]["edges"].as_array().unwrap().len(),
            1,
            "{role:?}"
        );
    }
    let r = call(
        &app,
        &sender,
        "{ escrows(filter: { role: PROVIDER }) { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(r.ok()["escrows"]["edges"], json!([]));
    let r = call(
        &app,
        &sender,
        "{ escrows(filter: { role: SENDER, status: FUNDED }) { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(r.ok()["escrows"]["edges"].as_array().unwrap().len(), 1);
    let by_time = "query($a: DateTime, $b: DateTime) { escrows(filter: { createdAfter: $a, createdBefore: $b }) { edges { node { id } } } }";
    let soon = (Utc::now() + Duration::minutes(1)).to_rfc3339();
    let earlier = (Utc::now() - Duration::hours(1)).to_rfc3339();
    let r = call(&app, &sender, by_time, json!({ "a": soon })).await;
    assert_eq!(r.ok()["escrows"]["edges"], json!([]));
    let r = call(&app, &sender, by_time, json!({ "a": earlier, "b": soon })).await;
    assert_eq!(r.ok()["escrows"]["edges"].as_array().unwrap().len(), 1);
    let r = call(
        &app,
        &sender,
        "{ escrows(filter: { status: DRAFT }) { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(r.ok()["escrows"]["edges"], json!([]));
    let r = call(
        &app,
        &sender,
        "query($id: ID!) { node(id: $id) { ... on Escrow { status } } }",
        json!({ "id": id }),
    )
    .await;
    assert_eq!(r.ok()["node"]["status"], "FUNDED");
}

async fn escrow_pages_cost_the_same_statements_for_any_size(app: TestApp) {
    let t = app.tenant("acme").await;
    let sender = t.token(Role::Sender).to_owned();
    let provider = t.token(Role::Beneficiary).to_owned();
    enrol(&app, &sender).await;
    for i in 0..50 {
        let e = create_escrow(
            &app,
            &t,
            "30.00",
            json!([{ "title": "a", "amount": "10.00" }, { "title": "b", "amount": "20.00" }]),
            None,
            Duration::days(7),
        )
        .await;
        let id = e["id"].as_str().unwrap();
        fund(&app, &sender, id, "30.00", &key()).await.ok();
        let m = e["milestones"][0]["id"].as_str().unwrap();
        call(
            &app,
            &provider,
            SUBMIT,
            json!({ "m": m, "n": format!("done {i}") }),
        )
        .await
        .ok();
        if i % 2 == 0 {
            call(
                &app,
                &sender,
                RELEASE_ESCROW,
                json!({ "id": id, "k": key() }),
            )
            .await
            .ok();
        }
    }

    let mut counts = Vec::new();
    for n in [5, 50] {
        let (count, json) = app
            .count_statements(
                t.id,
                t.user(Role::Sender).id,
                &[Role::Sender],
                &format!(
                    "{{ escrows(first: {n}) {{ edges {{ node {{ id status sender {{ email }} provider {{ userId email }} milestones {{ id amount {{ amount }} proofs {{ id }} escrow {{ id }} }} payments {{ id payee {{ email }} }} events {{ kind }} deposits {{ id }} }} }} }} }}"
                ),
            )
            .await;
        let edges = json["escrows"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), n);
        assert!(
            edges
                .iter()
                .any(|e| !e["node"]["payments"].as_array().unwrap().is_empty())
        );
        // Relations are objects, read in batches: the escrow's parties, a milestone's
        // escrow, a payment's payee.
        assert!(edges.iter().all(|e| {
            e["node"]["sender"]["email"] == t.user(Role::Sender).email.as_str()
                && e["node"]["provider"]["email"] == t.user(Role::Beneficiary).email.as_str()
                && e["node"]["milestones"][0]["escrow"]["id"] == e["node"]["id"]
                && e["node"]["payments"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|p| p["payee"]["email"] == t.user(Role::Beneficiary).email.as_str())
        }));
        assert!(edges.iter().all(|e| {
            e["node"]["milestones"][0]["proofs"]
                .as_array()
                .unwrap()
                .len()
                == 1
        }));
        counts.push(count);
    }
    crate::harness::report(&format!(
        "escrow page with parties, milestones' escrows and payees: {counts:?} statements for 5 and 50 escrows"
    ));
    assert_eq!(
        counts[0], counts[1],
        "statements for 5 and 50 escrows: {counts:?}"
    );
    assert!(
        counts[0] <= 9,
        "a page, one query per nested list and one per batch of related objects: {counts:?}"
    );
}

/// Two processes finding the same lapsed escrow at once: one pays, the other finds
/// nothing left to do (no lease involved: the conditional updates alone).
async fn two_concurrent_auto_releases_pay_once(app: TestApp) {
    use sequestra::{
        audit::{Actor, Origin},
        db::TenantDb,
        escrow::rules::{self, Act},
        ids::TenantId,
    };
    let t = app.tenant("acme").await;
    let sender = t.token(Role::Sender).to_owned();
    let e = create_escrow(
        &app,
        &t,
        "90.00",
        json!([{ "title": "a", "amount": "30.00" }, { "title": "b", "amount": "60.00" }]),
        Some(1),
        Duration::days(7),
    )
    .await;
    let id = e["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &id, "90.00", &key()).await.ok();
    call(
        &app,
        t.token(Role::Beneficiary),
        DELIVER,
        json!({ "id": id }),
    )
    .await
    .ok();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let uuid = sequestra::ids::decode_as(sequestra::ids::Kind::Escrow, &id).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let db = TenantDb::new(app.reconnect().await, TenantId::from_uuid(t.id));
        tasks.push(tokio::spawn(async move {
            let origin = Origin::default();
            let act = Act {
                actor: Actor::System,
                origin: &origin,
                psp: "simulated",
            };
            let txn = db.begin().await?;
            let effect = rules::auto_release(&txn, act, uuid).await?;
            txn.commit().await?;
            Ok::<_, sequestra::error::Error>(effect)
        }));
    }
    let mut paid = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(Some(effect)) => paid += effect.payments.len(),
            Ok(None) => {}
            // The loser may also be told the state moved under it: still no effect.
            Err(sequestra::error::Error::InvalidState { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(paid, 2, "two milestones, paid once");
    let e = escrow(&app, &sender, &id).await;
    assert_eq!(e["status"], "RELEASED");
    assert_eq!(e["payments"].as_array().unwrap().len(), 2);
    assert_eq!(e["released"]["amount"], "90.00");
}

async fn uploads_are_checked(app: TestApp) {
    let t = app.tenant("acme").await;
    let sender = t.token(Role::Sender).to_owned();
    let provider = t.token(Role::Beneficiary).to_owned();
    let e = create_escrow(
        &app,
        &t,
        "20.00",
        json!([{ "title": "a", "amount": "20.00", "proof": "PHOTO" }]),
        None,
        Duration::days(7),
    )
    .await;
    let id = e["id"].as_str().unwrap().to_owned();
    let m = e["milestones"][0]["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &id, "20.00", &key()).await.ok();
    // A PDF is not a photo; an HTML file named .jpg is not a JPEG; no file at all is refused.
    let r = app
        .gql_upload(
            &provider,
            SUBMIT,
            json!({ "m": m }),
            "file",
            "a.pdf",
            pdf("x"),
        )
        .await;
    assert_eq!(
        r.body["errors"][0]["extensions"]["field"], "file",
        "{}",
        r.body
    );
    let r = app
        .gql_upload(
            &provider,
            SUBMIT,
            json!({ "m": m }),
            "file",
            "a.jpg",
            b"<html>hi</html>".to_vec(),
        )
        .await;
    assert_eq!(
        r.body["errors"][0]["extensions"]["field"], "file",
        "{}",
        r.body
    );
    let r = call(&app, &provider, SUBMIT, json!({ "m": m, "n": "trust me" })).await;
    assert_eq!(
        r.body["errors"][0]["extensions"]["field"], "file",
        "{}",
        r.body
    );
    // Larger than SEQUESTRA_PROOF_MAX_BYTES (10 MiB by default).
    let mut big = sample_photo(1.0, 1.0, Utc::now());
    big.resize(10 * 1024 * 1024 + 1, 0);
    let r = app
        .gql_upload(&provider, SUBMIT, json!({ "m": m }), "file", "big.jpg", big)
        .await;
    assert!(
        r.status == 413 || r.code() == Some("BAD_USER_INPUT"),
        "{} {}",
        r.status,
        r.body
    );
    // A photo without EXIF is accepted for review, not approved.
    let r = app
        .gql_upload(
            &provider,
            SUBMIT,
            json!({ "m": m }),
            "file",
            "plain.png",
            include_bytes!("../../assets/sample-photo.jpg").to_vec(),
        )
        .await;
    let p = r.ok()["submitProof"]["proof"].clone();
    assert_eq!(p["status"], "PENDING");
    assert_eq!(p["latitude"], Value::Null);
    assert_eq!(
        p["contentType"], "image/jpeg",
        "the bytes decide, not the name"
    );
    let e = escrow(&app, &sender, &id).await;
    assert_eq!(e["milestones"][0]["status"], "PENDING_REVIEW");

    // Refused, then the whole delivery accepted: REJECTED → APPROVED.
    let r = call(&app, &sender, DECIDE, json!({ "p": p["id"], "a": false })).await;
    assert_eq!(r.ok()["decideProof"]["proof"]["status"], "REJECTED");
    call(&app, &provider, DELIVER, json!({ "id": id }))
        .await
        .ok();
    let r = call(&app, &sender, APPROVE, json!({ "id": id })).await;
    assert_eq!(r.ok()["approveEscrow"]["escrow"]["status"], "RELEASABLE");
    let e = escrow(&app, &sender, &id).await;
    let approved = e["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ev| ev["kind"] == "MILESTONE_APPROVED")
        .unwrap();
    assert_eq!(approved["fromStatus"], "REJECTED");
    // A provider may (re)declare delivery of a RELEASABLE escrow only once.
    let again = call(&app, &provider, DELIVER, json!({ "id": id })).await;
    assert_eq!(
        again.body["errors"][0]["extensions"]["reason"],
        "ALREADY_DELIVERED"
    );
}

/// With `SEQUESTRA_PROOF_STORE=s3`, proof files land in the bucket. Runs against the
/// S3-compatible server at `SEQUESTRA_TEST_S3_ENDPOINT` (CI starts moto's); skipped,
/// saying so, when that is unset (unless `SEQUESTRA_TEST_REQUIRE_S3=1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_go_to_s3_compatible_storage() {
    let Ok(endpoint) = std::env::var("SEQUESTRA_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var("SEQUESTRA_TEST_REQUIRE_S3").as_deref() != Ok("1"),
            "SEQUESTRA_TEST_REQUIRE_S3=1 but SEQUESTRA_TEST_S3_ENDPOINT is not set"
        );
        crate::harness::skipped_because(
            "escrow::proofs_go_to_s3_compatible_storage",
            "set SEQUESTRA_TEST_S3_ENDPOINT",
        );
        return;
    };
    let endpoint = endpoint.trim_end_matches('/').to_owned();
    let bucket = format!("sq-{}", uuid::Uuid::now_v7().simple());
    let http = reqwest::Client::new();
    let created = http
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("create bucket");
    assert!(
        created.status().is_success(),
        "create bucket: {}",
        created.status()
    );
    let app = TestApp::spawn_with(
        crate::harness::Backend::Sqlite,
        &[
            ("SEQUESTRA_PROOF_STORE", "s3"),
            ("SEQUESTRA_S3_BUCKET", &bucket),
            ("SEQUESTRA_S3_ENDPOINT", &endpoint),
            ("SEQUESTRA_S3_ACCESS_KEY_ID", "test"),
            ("SEQUESTRA_S3_SECRET_ACCESS_KEY", "test"),
            ("SEQUESTRA_S3_PREFIX", "proofs/"),
        ],
    )
    .await
    .expect("sqlite");
    let t = app.tenant("acme").await;
    let e = create_escrow(
        &app,
        &t,
        "20.00",
        json!([{ "title": "a", "amount": "20.00", "proof": "DOCUMENT" }]),
        None,
        Duration::days(7),
    )
    .await;
    let id = e["id"].as_str().unwrap().to_owned();
    let m = e["milestones"][0]["id"].as_str().unwrap().to_owned();
    fund(&app, t.token(Role::Sender), &id, "20.00", &key())
        .await
        .ok();
    let file = pdf("s3");
    let r = app
        .gql_upload(
            t.token(Role::Beneficiary),
            SUBMIT,
            json!({ "m": m }),
            "file",
            "a.pdf",
            file.clone(),
        )
        .await;
    let sha = r.ok()["submitProof"]["proof"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    // Read it back through the S3 API with the same settings.
    use sequestra::escrow::storage::{ObjectStoreProofs, ProofStore};
    let store = ObjectStoreProofs::s3(&sequestra::config::S3Config {
        bucket: bucket.clone(),
        region: "us-east-1".into(),
        endpoint: Some(endpoint.clone()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".to_owned().into()),
        prefix: "proofs/".into(),
    })
    .unwrap();
    let stored = store
        .get(&format!("{}/{sha}", t.id.simple()))
        .await
        .unwrap();
    assert_eq!(stored, file);
    assert!(matches!(
        store
            .get(&format!("{}/{}", t.id.simple(), "0".repeat(64)))
            .await,
        Err(sequestra::error::Error::NotFound)
    ));
}
