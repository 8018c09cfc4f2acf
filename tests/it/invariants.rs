//! Invariants under concurrency: two decisions on one escrow never both win, a
//! DISPUTED escrow moves money only through its resolution, and a tenant always keeps
//! an active ADMIN, however its admins race. Each race runs 20 times per backend.

use chrono::Duration;
use sea_orm::ConnectionTrait;
use sequestra::auth::Role;
use serde_json::{Value, json};

use crate::escrow::{create_escrow, fund};
use crate::harness::{GqlResponse, TestApp};
use crate::mfa::enrol;
use crate::{on_both_backends, on_both_backends_with};

on_both_backends!(
    a_dispute_racing_a_release_has_one_winner,
    a_disputed_escrow_cannot_be_refunded,
    nul_in_text_is_refused_at_the_edge,
);
// Twenty admins enrol MFA from one test client: past the per-address limiter.
on_both_backends_with!(
    admins_deactivating_each_other_leave_one,
    &[("SEQUESTRA_CREDENTIAL_ATTEMPTS_PER_MINUTE", "100000")]
);

const RUNS: usize = 20;

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

const DISPUTE: &str = "mutation($id: ID!) { openDispute(input: { escrowId: $id, reason: \"not what we agreed\" }) { escrow { status } } }";
const RELEASE: &str = "mutation($id: ID!, $k: String!) { releaseEscrow(input: { escrowId: $id, idempotencyKey: $k }) { escrow { status } } }";
const REFUND: &str = "mutation($id: ID!, $k: String!) { refundEscrow(input: { escrowId: $id, idempotencyKey: $k }) { escrow { status } } }";
const STATE: &str =
    "query($id: ID!) { escrow(id: $id) { status payments { id } events { kind } } }";

fn won(r: &GqlResponse) -> bool {
    r.body.get("errors").is_none()
}

async fn a_dispute_racing_a_release_has_one_winner(app: TestApp) {
    let t = app.tenant("acme").await;
    let sender = t.token(Role::Sender).to_owned();
    let provider = t.token(Role::Beneficiary).to_owned();
    enrol(&app, &sender).await;
    let (mut disputes, mut releases) = (0, 0);
    for run in 0..RUNS {
        let e = create_escrow(
            &app,
            &t,
            "10.00",
            json!([{ "title": "all", "amount": "10.00" }]),
            None,
            Duration::days(7),
        )
        .await;
        let id = e["id"].as_str().unwrap().to_owned();
        fund(&app, &sender, &id, "10.00", &key()).await.ok();
        let (dispute, release) = tokio::join!(
            app.gql(Some(&provider), DISPUTE, json!({ "id": id })),
            app.gql(Some(&sender), RELEASE, json!({ "id": id, "k": key() })),
        );
        let state = app.gql(Some(&sender), STATE, json!({ "id": id })).await;
        let state = &state.ok()["escrow"];
        assert!(
            won(&dispute) != won(&release),
            "run {run}: exactly one wins: dispute {} release {} state {state}",
            dispute.body,
            release.body
        );
        let loser = if won(&dispute) { &release } else { &dispute };
        assert_eq!(loser.code(), Some("CONFLICT"), "run {run}: {}", loser.body);
        let payments = state["payments"].as_array().unwrap().len();
        if won(&dispute) {
            disputes += 1;
            assert_eq!(state["status"], "DISPUTED", "run {run}: {state}");
            assert_eq!(payments, 0, "run {run}: a disputed escrow paid: {state}");
        } else {
            releases += 1;
            assert_eq!(state["status"], "RELEASED", "run {run}: {state}");
            assert_eq!(payments, 1, "run {run}: {state}");
            let kinds = state["events"].to_string();
            assert!(!kinds.contains("ESCROW_DISPUTED"), "run {run}: {kinds}");
        }
    }
    assert_eq!(disputes + releases, RUNS);
}

/// The deadline passed (the escrow became refundable), then the provider disputed:
/// the sender's refund must wait for the dispute's resolution.
async fn a_disputed_escrow_cannot_be_refunded(app: TestApp) {
    let t = app.tenant("acme").await;
    let sender = t.token(Role::Sender).to_owned();
    let provider = t.token(Role::Beneficiary).to_owned();
    let e = create_escrow(&app, &t, "40.00", json!([]), None, Duration::days(7)).await;
    let id = e["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &id, "40.00", &key()).await.ok();
    // What the deadline job does once the deadline has passed without a delivery.
    let (_, uuid) = sequestra::ids::decode(&id).unwrap();
    let marked = app
        .db
        .execute(sea_orm::Statement::from_sql_and_values(
            app.db.get_database_backend(),
            match app.db.get_database_backend() {
                sea_orm::DbBackend::Postgres => {
                    "UPDATE escrows SET refundable_at = $1 WHERE id = $2"
                }
                _ => "UPDATE escrows SET refundable_at = ? WHERE id = ?",
            },
            [chrono::Utc::now().into(), uuid.into()],
        ))
        .await
        .unwrap();
    assert_eq!(marked.rows_affected(), 1);
    let r = app.gql(Some(&provider), DISPUTE, json!({ "id": id })).await;
    assert_eq!(r.ok()["openDispute"]["escrow"]["status"], "DISPUTED");
    let r = app
        .gql(Some(&sender), REFUND, json!({ "id": id, "k": key() }))
        .await;
    assert_eq!(r.code(), Some("CONFLICT"), "{}", r.body);
    assert_eq!(r.body["errors"][0]["extensions"]["reason"], "INVALID_STATE");
    let state = app.gql(Some(&sender), STATE, json!({ "id": id })).await;
    assert_eq!(state.ok()["escrow"]["status"], "DISPUTED");
    assert_eq!(
        state.ok()["escrow"]["payments"].as_array().unwrap().len(),
        0
    );
}

const DEACTIVATE: &str =
    "mutation($u: ID!) { deactivateUser(input: { userId: $u }) { user { isActive } } }";

async fn is_active(app: &TestApp, token: &str, id: uuid::Uuid) -> bool {
    let r = app
        .gql(
            Some(token),
            "query($id: ID!) { node(id: $id) { ... on User { isActive } } }",
            json!({ "id": sequestra::ids::encode(sequestra::ids::Kind::User, id) }),
        )
        .await;
    r.ok()["node"]["isActive"].as_bool().unwrap()
}

/// The tenant's only two active ADMINs deactivate each other at the same moment:
/// one wins, the other gets LAST_ADMIN; the survivor then races a newly added admin.
async fn admins_deactivating_each_other_leave_one(app: TestApp) {
    let t = app.tenant("acme").await;
    let mut survivor = t.user(Role::Admin).clone();
    enrol(&app, &survivor.token).await;
    let watcher = t.token(Role::Support).to_owned();
    for run in 0..RUNS {
        let other = app
            .add_user(&t, &format!("admin{run}@acme.test"), &[Role::Admin])
            .await;
        enrol(&app, &other.token).await;
        let gid = |id| sequestra::ids::encode(sequestra::ids::Kind::User, id);
        let (a, b): (GqlResponse, GqlResponse) = tokio::join!(
            app.gql(
                Some(&survivor.token),
                DEACTIVATE,
                json!({ "u": gid(other.id) })
            ),
            app.gql(
                Some(&other.token),
                DEACTIVATE,
                json!({ "u": gid(survivor.id) })
            ),
        );
        let results: Vec<&Value> = vec![&a.body, &b.body];
        assert!(
            won(&a) != won(&b),
            "run {run}: exactly one deactivation wins: {results:?}"
        );
        let loser = if won(&a) { &b } else { &a };
        // The loser either saw the other's deactivation as LAST_ADMIN, or was itself
        // already deactivated (its session ended with it).
        assert!(
            loser.body["errors"][0]["extensions"]["reason"] == "LAST_ADMIN"
                || loser.code() == Some("UNAUTHENTICATED"),
            "run {run}: {}",
            loser.body
        );
        let (alive_a, alive_b) = (
            is_active(&app, &watcher, survivor.id).await,
            is_active(&app, &watcher, other.id).await,
        );
        assert!(
            alive_a != alive_b,
            "run {run}: exactly one active ADMIN remains"
        );
        if alive_b {
            survivor = other;
        }
    }
}

/// A NUL character in any text input is the caller's mistake, refused before anything
/// runs, on both backends alike (PostgreSQL cannot store one): in a variable, in a
/// literal of the document, and in a signed webhook.
async fn nul_in_text_is_refused_at_the_edge(app: TestApp) {
    use crate::harness::WEBHOOK_SECRETS;
    use crate::webhooks::{post, signed};
    let t = app.tenant("acme").await;
    let admin = t.token(Role::Admin).to_owned();
    let sender = t.token(Role::Sender).to_owned();
    let provider = t.token(Role::Beneficiary).to_owned();
    let e = create_escrow(&app, &t, "10.00", json!([]), None, Duration::days(7)).await;
    let escrow_id = e["id"].as_str().unwrap().to_owned();
    let nul = "bad\u{0}text";
    // (who, document taking `$v: String!`, the same with `{}` where a literal goes)
    let cases: Vec<(Option<&str>, &str)> = vec![
        (
            None,
            "mutation($v: String!) { signIn(input: { tenant: $v, email: \"a@b.test\", password: \"long enough passphrase\" }) { accessToken } }",
        ),
        (
            Some(&admin),
            "query($v: String!) { auditLog(action: $v) { edges { cursor } } }",
        ),
        (
            Some(&sender),
            "query($v: String!) { alerts(filter: { kind: $v }) { edges { cursor } } }",
        ),
        (
            Some(&admin),
            "mutation($v: String!) { createSpendCategory(input: { code: \"TOOLS\", label: $v }) { category { id } } }",
        ),
        (
            Some(&admin),
            "mutation($v: String!) { createMerchant(input: { name: $v, categoryId: \"cat_0\" }) { merchant { id } } }",
        ),
        (
            Some(&provider),
            "mutation($v: String!, $id: ID!) { openDispute(input: { escrowId: $id, reason: $v }) { escrow { status } } }",
        ),
    ];
    let audit_before = app.audit_actions(&t).await.len();
    for (token, document) in &cases {
        let r = app
            .gql(*token, document, json!({ "v": nul, "id": escrow_id }))
            .await;
        assert_eq!(r.code(), Some("BAD_USER_INPUT"), "{document}: {}", r.body);
        // The same text as a literal of the document (GraphQL's `\u0000` escape).
        let literal = document
            .replacen("$v: String!", "$unused: String", 1)
            .replace("$v", "\"bad\\u0000text\"");
        let r = app.gql(*token, &literal, json!({ "id": escrow_id })).await;
        assert_eq!(r.code(), Some("BAD_USER_INPUT"), "{literal}: {}", r.body);
    }
    // Nested in an input object, as a variable.
    let r = app
        .gql(
            Some(&sender),
            "mutation($i: CreateEscrowInput!) { createEscrow(input: $i) { escrow { id } } }",
            json!({ "i": {
                "idempotencyKey": "k-nul",
                "providerId": crate::escrow::user_gid(t.user(Role::Beneficiary).id),
                "amount": "5.00", "currency": "EUR", "description": nul,
                "deadline": (chrono::Utc::now() + Duration::days(3)).to_rfc3339(),
                "milestones": []
            } }),
        )
        .await;
    assert_eq!(r.code(), Some("BAD_USER_INPUT"), "{}", r.body);
    assert_eq!(
        app.audit_actions(&t).await.len(),
        audit_before,
        "nothing was written"
    );

    // A correctly signed webhook whose id or reference carries NUL: 400.
    for (id, reference) in [("evt\u{0}1", "ref-1"), ("evt-2", "ref\u{0}2")] {
        let body =
            json!({ "id": id, "type": "payout.settled", "created": chrono::Utc::now().timestamp(),
            "data": { "reference": reference, "failureReason": null } })
            .to_string()
            .into_bytes();
        let (status, answer) = post(&app, &body, signed(WEBHOOK_SECRETS[0], &body)).await;
        assert_eq!(status, 400, "{answer}");
    }
}

/// A state column is written only through `Scoped::transition` (one conditional
/// UPDATE on the expected previous states): any other `col_expr(…::Column::Status …)`
/// in the code fails here, so a new transition cannot be written as read, decide,
/// write.
#[test]
fn state_columns_are_written_only_through_transition() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    assert!(files.len() > 30, "{} source files", files.len());
    let mut offenders = Vec::new();
    for file in files {
        if file.ends_with("db/scoped.rs") {
            continue; // the helper itself
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // `col_expr(` then, past whitespace, `<entity>::Column::Status`.
        for (at, _) in text.match_indices("col_expr(") {
            let rest = text[at + "col_expr(".len()..].trim_start();
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if path.ends_with("::Column::Status") {
                let line = text[..at].lines().count() + 1;
                offenders.push(format!("{}:{line}", file.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "state written outside Scoped::transition: {offenders:?}"
    );
}
