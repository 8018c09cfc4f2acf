//! The books (DESIGN §8): the ledger under the money flows, and the audit trail's hash
//! chain, checked by the operator's commands on a real database. Every other test
//! that runs on both backends also ends with `ledger verify` and `audit verify`
//! (`harness::Books`); these tests show what the commands say when the books were
//! edited behind the server's back.

use chrono::Duration;
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DbBackend};
use sequestra::auth::Role;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::escrow::{create_escrow, fund};
use crate::harness::TestApp;
use crate::mfa::enrol;
use crate::on_both_backends;

on_both_backends!(
    entries_balance_and_a_tampered_posting_is_named,
    the_audit_export_verifies_outside_and_an_edited_row_is_named,
);

/// `sequestra ARGS` against the app's database: (exit code, stdout, stderr).
pub async fn command(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sequestra"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SEQUESTRA_DATABASE_URL", app.database_url())
        .env("SEQUESTRA_DEV_SECRETS_FILE", "none")
        .env("SEQUESTRA_LOG", "warn")
        .output()
        .await
        .expect("run sequestra");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// An escrow of two milestones, funded in two deposits and released: two payments.
async fn money_moves(app: &TestApp) -> String {
    let t = app.tenant("acme").await;
    let sender = t.token(Role::Sender).to_owned();
    enrol(app, &sender).await;
    let e = create_escrow(
        app,
        &t,
        "30.00",
        json!([{ "title": "one", "amount": "10.00" }, { "title": "two", "amount": "20.00" }]),
        None,
        Duration::days(7),
    )
    .await;
    let id = e["id"].as_str().unwrap().to_owned();
    fund(app, &sender, &id, "12.50", &key()).await.ok();
    fund(app, &sender, &id, "17.50", &key()).await.ok();
    app.gql(
        Some(&sender),
        "mutation($id: ID!, $k: String!) { releaseEscrow(escrowId: $id, idempotencyKey: $k) { escrow { status } } }",
        json!({ "id": id, "k": key() }),
    )
    .await
    .ok();
    let r = app
        .gql(
            Some(&sender),
            "query($id: ID!) { escrow(id: $id) { ledgerEntries { id kind subjectId postings { account { kind ownerId } amount { amount currency } } } } }",
            json!({ "id": id }),
        )
        .await;
    let entries = r.ok()["escrow"]["ledgerEntries"]
        .as_array()
        .unwrap()
        .clone();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        &kinds[..4],
        ["DEPOSIT", "DEPOSIT", "PAYMENT_CREATED", "PAYMENT_CREATED"],
        "{entries:?}"
    );
    for entry in &entries {
        let sum: Decimal = entry["postings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p["amount"]["amount"]
                    .as_str()
                    .unwrap()
                    .parse::<Decimal>()
                    .unwrap()
            })
            .sum();
        assert_eq!(
            sum,
            Decimal::ZERO,
            "an entry that does not balance: {entry}"
        );
    }
    let deposit = &entries[0]["postings"];
    assert_eq!(deposit[0]["account"]["kind"], "FUNDING", "{deposit}");
    assert_eq!(deposit[0]["amount"]["amount"], "-12.50", "{deposit}");
    assert_eq!(deposit[1]["account"]["kind"], "ESCROW", "{deposit}");
    assert_eq!(deposit[1]["account"]["ownerId"], json!(id), "{deposit}");
    id
}

/// Runs `sql` as the database's owner (outside row-level security and the grants
/// the server's role has): what someone with the database's keys could do.
async fn as_owner(app: &TestApp, sql: &str) -> Result<(), sea_orm::DbErr> {
    app.db.execute_unprepared(sql).await.map(|_| ())
}

async fn entries_balance_and_a_tampered_posting_is_named(app: TestApp) {
    money_moves(&app).await;
    let (code, out, err) = command(&app, &["ledger", "verify"]).await;
    assert_eq!(code, 0, "ledger verify: {out}{err}");
    assert!(out.contains("acme: ok"), "{out}");

    // The journal refuses edits, even the tables' owner's.
    let edit = "UPDATE ledger_postings SET amount_minor = amount_minor + 1 \
                WHERE account_kind = 'ESCROW'";
    let refused = as_owner(&app, edit).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("append-only")),
        "{refused:?}"
    );

    // Someone with the owner's keys lifts the guard and adds a cent to one posting.
    app.tampered();
    let lift = match app.db.get_database_backend() {
        DbBackend::Postgres => {
            "ALTER TABLE ledger_postings DISABLE TRIGGER ledger_postings_no_update"
        }
        _ => "DROP TRIGGER ledger_postings_no_update",
    };
    as_owner(&app, lift).await.unwrap();
    let one = match app.db.get_database_backend() {
        DbBackend::Postgres => {
            "UPDATE ledger_postings SET amount_minor = amount_minor + 1 WHERE id = \
             (SELECT id FROM ledger_postings WHERE account_kind = 'ESCROW' ORDER BY id LIMIT 1)"
        }
        _ => {
            "UPDATE ledger_postings SET amount_minor = amount_minor + 1 WHERE rowid = \
             (SELECT rowid FROM ledger_postings WHERE account_kind = 'ESCROW' ORDER BY id LIMIT 1)"
        }
    };
    as_owner(&app, one).await.unwrap();
    let (code, out, err) = command(&app, &["ledger", "verify", "--tenant", "acme"]).await;
    assert_eq!(code, 1, "ledger verify after the edit: {out}{err}");
    assert!(
        out.contains("acme: DISCREPANCY: ledger entry led_") && out.contains("does not balance"),
        "{out}"
    );
    assert!(err.contains("the ledger does not hold"), "{err}");
}

async fn the_audit_export_verifies_outside_and_an_edited_row_is_named(app: TestApp) {
    money_moves(&app).await;
    let (code, out, err) = command(&app, &["audit", "verify"]).await;
    assert_eq!(code, 0, "audit verify: {out}{err}");
    assert!(out.contains("acme: ok ("), "{out}");

    // The export, checked the way an auditor would: SHA-256 over the previous hash
    // and the row's canonical text, nothing of Sequestra's.
    let (code, out, err) = command(&app, &["audit", "export", "--tenant", "acme"]).await;
    assert_eq!(code, 0, "audit export: {err}");
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() > 10, "{} rows", rows.len());
    let mut prev = "0".repeat(64);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["seq"], json!(i + 1), "{row}");
        assert_eq!(row["prev_hash"], json!(prev), "{row}");
        let canonical = row["canonical"].as_str().unwrap();
        let fields: Vec<Value> = serde_json::from_str(canonical).unwrap();
        assert_eq!(fields[5], row["action"], "{row}");
        assert_eq!(fields[10], row["details"], "{row}");
        let hash = hex::encode(Sha256::digest(format!("{prev}{canonical}")));
        assert_eq!(row["hash"], json!(hash), "{row}");
        prev = hash;
    }
    // An export from a point in time starts there and still links to what came before.
    let third_at = rows[2]["created_at"].as_str().unwrap();
    let (_, since, _) = command(
        &app,
        &["audit", "export", "--tenant", "acme", "--since", third_at],
    )
    .await;
    let first: Value = serde_json::from_str(since.lines().next().unwrap()).unwrap();
    assert!(first["seq"].as_i64().unwrap() <= 3, "{first}");

    // The log refuses edits, even the owner's; with the guard lifted, an edit is
    // named by its row.
    let refused = as_owner(&app, "UPDATE audit_log SET action = 'x'").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("append-only")),
        "{refused:?}"
    );
    app.tampered();
    let lift = match app.db.get_database_backend() {
        DbBackend::Postgres => "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update",
        _ => "DROP TRIGGER audit_log_no_update",
    };
    as_owner(&app, lift).await.unwrap();
    let victim = &rows[4];
    as_owner(
        &app,
        &format!(
            "UPDATE audit_log SET details = '{{\"rewritten\":true}}' WHERE hash = '{}'",
            victim["hash"].as_str().unwrap()
        ),
    )
    .await
    .unwrap();
    let (code, out, _) = command(&app, &["audit", "verify", "--tenant", "acme"]).await;
    assert_eq!(code, 1, "audit verify after the edit: {out}");
    let named = format!(
        "acme: BROKEN after 4 good rows: row 5 (id {}): hash does not match",
        victim["id"].as_str().unwrap()
    );
    assert!(out.contains(&named), "{out}\nexpected: {named}");
}
