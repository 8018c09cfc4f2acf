//! The tenancy matrix, generated from the schema: every root field argument that takes
//! an id (directly, in a list, or inside an input object) is called by every role of
//! tenant A (stepped up, so only the tenant wall can refuse) with each of tenant B's
//! ids of the kinds the argument can name, and with a random id of the same kind as
//! the control. A foreign id must answer exactly as a missing one does (the same code,
//! reason and data), and B's rows must be byte-for-byte unchanged afterwards. A new
//! id-taking field is covered without editing this test.

use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, JsonValue, Statement};
use sequestra::{
    auth::Role,
    graphql::{access::Root, context::Services},
    ids::{self, Kind},
};
use serde_json::{Value, json};

use crate::access::{IdSlot, Shape, subscribe};
use crate::harness::TestApp;
use crate::mfa::{enrol, sign_in_with_totp};
use crate::on_both_backends_with;

on_both_backends_with!(
    foreign_ids_answer_exactly_like_missing_ones,
    &[
        // The demo's payments stay as seeded (no simulated settlement mid-test), and
        // the stepped-up users enrol from one test client.
        ("SEQUESTRA_SIM_PSP_SETTLE_AFTER_MS", "0"),
        ("SEQUESTRA_CREDENTIAL_ATTEMPTS_PER_MINUTE", "100000"),
    ]
);

/// Each kind with a global id, and its table.
const KINDS: [(Kind, &str); 18] = [
    (Kind::Tenant, "tenants"),
    (Kind::User, "users"),
    (Kind::Session, "sessions"),
    (Kind::ApiKey, "api_keys"),
    (Kind::Escrow, "escrows"),
    (Kind::Milestone, "milestones"),
    (Kind::Deposit, "deposits"),
    (Kind::Proof, "proofs"),
    (Kind::Payment, "payments"),
    (Kind::EscrowEvent, "escrow_events"),
    (Kind::Category, "spend_categories"),
    (Kind::Merchant, "merchants"),
    (Kind::Mandate, "mandates"),
    (Kind::Purchase, "purchases"),
    (Kind::Payee, "payees"),
    (Kind::Payout, "payouts"),
    (Kind::Transfer, "transfers"),
    (Kind::Alert, "alerts"),
];

/// The kinds an argument can name, from its name; every kind when the name says
/// nothing (`id`, say).
fn kinds_for(slot: &IdSlot) -> Vec<Kind> {
    let name = slot.path.last().unwrap().to_lowercase();
    let by_name = [
        ("escrow", Kind::Escrow),
        ("milestone", Kind::Milestone),
        ("proof", Kind::Proof),
        ("payment", Kind::Payment),
        ("mandate", Kind::Mandate),
        ("payee", Kind::Payee),
        ("merchant", Kind::Merchant),
        ("categor", Kind::Category),
        ("user", Kind::User),
        ("provider", Kind::User),
        ("beneficiary", Kind::User),
        ("recipient", Kind::User),
        ("session", Kind::Session),
    ];
    match by_name.iter().find(|(word, _)| name.contains(word)) {
        Some((_, kind)) => vec![*kind],
        None => KINDS.iter().map(|(k, _)| *k).collect(),
    }
}

/// One id of tenant `tenant` per kind (kinds it has no row of are left out).
async fn ids_of(app: &TestApp, tenant: uuid::Uuid) -> Vec<(Kind, String)> {
    let backend = app.db.get_database_backend();
    let mut out = vec![(Kind::Tenant, ids::encode(Kind::Tenant, tenant))];
    for (kind, table) in KINDS.iter().skip(1) {
        let sql = match backend {
            DbBackend::Postgres => {
                format!("SELECT id FROM {table} WHERE tenant_id = $1 ORDER BY id LIMIT 1")
            }
            _ => format!("SELECT id FROM {table} WHERE tenant_id = ? ORDER BY id LIMIT 1"),
        };
        let row = app
            .db
            .query_one(Statement::from_sql_and_values(
                backend,
                sql,
                [tenant.into()],
            ))
            .await
            .unwrap();
        if let Some(row) = row {
            let id: uuid::Uuid = row.try_get("", "id").unwrap();
            out.push((*kind, ids::encode(*kind, id)));
        }
    }
    out
}

/// Every row of `tenant` in every table that has a `tenant_id`, as JSON.
async fn snapshot(app: &TestApp, tenant: uuid::Uuid) -> Vec<(String, Vec<JsonValue>)> {
    let backend = app.db.get_database_backend();
    let tables_sql = match backend {
        DbBackend::Postgres => {
            "SELECT table_name AS name FROM information_schema.columns WHERE column_name = 'tenant_id' AND table_schema = current_schema() ORDER BY 1"
        }
        _ => {
            "SELECT m.name AS name FROM sqlite_master m JOIN pragma_table_info(m.name) p WHERE m.type = 'table' AND p.name = 'tenant_id' ORDER BY 1"
        }
    };
    let tables = JsonValue::find_by_statement(Statement::from_string(backend, tables_sql))
        .all(&app.db)
        .await
        .unwrap();
    let mut out = Vec::new();
    for t in tables {
        let table = t["name"].as_str().unwrap().to_owned();
        let sql = match backend {
            DbBackend::Postgres => {
                format!("SELECT * FROM {table} WHERE tenant_id = $1 ORDER BY 1, 2")
            }
            _ => format!("SELECT * FROM {table} WHERE tenant_id = ? ORDER BY 1, 2"),
        };
        let rows = JsonValue::find_by_statement(Statement::from_sql_and_values(
            backend,
            sql,
            [tenant.into()],
        ))
        .all(&app.db)
        .await
        .unwrap();
        out.push((table, rows));
    }
    assert!(out.len() >= 20, "tenant tables found: {}", out.len());
    out
}

/// What a caller can tell from an answer: the code, the reason, and the data with the
/// probed id blanked out.
fn outcome(body: &Value, id: &str) -> String {
    let text = json!({
        "code": body["errors"][0]["extensions"]["code"],
        "reason": body["errors"][0]["extensions"]["reason"],
        "data": body.get("data"),
    })
    .to_string();
    text.replace(id, "<id>")
}

async fn foreign_ids_answer_exactly_like_missing_ones(app: TestApp) {
    let services = app.schema.data::<Services>().expect("services").clone();
    let demo = sequestra::demo::seed(
        &app.db,
        &app.tokens,
        &services.sealer,
        services.proofs.as_ref(),
        services.psp.as_ref(),
    )
    .await
    .expect("demo seed");
    let b = sequestra::accounts::rules::find_tenant_by_slug(&app.db, "globex")
        .await
        .unwrap()
        .expect("the demo's second tenant")
        .id;
    let acme = demo.tenants.iter().find(|t| t.slug == "acme").unwrap();
    let mut callers = Vec::new();
    for role in Role::ALL {
        // One demo user per role, with a step-up: the demo SENDER has MFA already
        // (its sign-in is the step-up), the others enrol.
        let user = acme
            .users
            .iter()
            .find(|u| u.roles == [role] && (u.totp_secret.is_none() || role == Role::Sender))
            .unwrap();
        let token = match &user.totp_secret {
            Some(secret) => {
                sign_in_with_totp(&app, "acme", &user.email, &user.password, secret).await
            }
            None => {
                let token = app.sign_in("acme", &user.email, &user.password).await;
                enrol(&app, &token).await;
                token
            }
        };
        callers.push((role, token));
    }

    let foreign = ids_of(&app, b).await;
    let before = snapshot(&app, b).await;
    let shape = Shape::load();
    let slots = shape.id_slots();
    let (mut probes, mut not_found) = (0usize, 0usize);
    let mut failures = Vec::new();
    for slot in &slots {
        for kind in kinds_for(slot) {
            let Some((_, id)) = foreign.iter().find(|(k, _)| *k == kind) else {
                continue;
            };
            let missing = ids::encode(kind, uuid::Uuid::now_v7());
            let documents = [
                shape.document(slot.root, &slot.field, Some((slot, id))),
                shape.document(slot.root, &slot.field, Some((slot, &missing))),
            ];
            for (role, token) in &callers {
                let (theirs, nobodys) = if slot.root == Root::Subscription {
                    let a = subscribe(&app, Some(token), &documents[0]).await;
                    let b = subscribe(&app, Some(token), &documents[1]).await;
                    (json!(a).to_string(), json!(b).to_string())
                } else {
                    let a = app.gql(Some(token), &documents[0], json!({})).await;
                    let b = app.gql(Some(token), &documents[1], json!({})).await;
                    (outcome(&a.body, id), outcome(&b.body, &missing))
                };
                probes += 1;
                if theirs.contains("NOT_FOUND") {
                    not_found += 1;
                }
                if theirs != nobodys {
                    failures.push(format!(
                        "{} as {}: another tenant's {kind:?} answers {theirs}, a missing one {nobodys}",
                        documents[0],
                        role.as_str()
                    ));
                }
            }
        }
    }
    let after = snapshot(&app, b).await;
    for ((table, rows), (_, later)) in before.iter().zip(after.iter()) {
        if rows != later {
            failures.push(format!("tenant B's {table} changed"));
        }
    }
    let line = format!(
        "tenancy matrix: {probes} (field argument, id, role) probes over {} id-taking arguments, {not_found} answered NOT_FOUND\n",
        slots.len()
    );
    crate::harness::report(line.trim_end());
    assert!(
        failures.is_empty(),
        "{} foreign ids told apart from missing ones:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(slots.len() >= 30, "only {} id slots", slots.len());
}
