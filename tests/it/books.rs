//! The books (DESIGN §8): the ledger under the money flows, and the audit trail's hash
//! chain, checked by the operator's commands on a real database. Every other test
//! that runs on both backends also ends with `ledger verify` and `audit verify`
//! (`harness::Books`); these tests show what the commands say when the books were
//! edited behind the server's back.

use chrono::Duration;
use migration::MigratorTrait;
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DbBackend};
use sequestra::auth::Role;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::escrow::{create_escrow, fund};
use crate::harness::{TestApp, TestTenant};
use crate::mfa::enrol;
use crate::{on_both_backends, on_both_backends_with};

on_both_backends!(
    entries_balance_and_a_tampered_entry_is_named,
    the_audit_export_verifies_outside_and_an_edited_row_is_named,
);
on_both_backends_with!(
    the_journal_folds_into_one_row_per_movement_and_back,
    &[("SEQUESTRA_JOBS_ENABLED", "false")]
);
on_both_backends_with!(
    a_database_from_before_the_ledger_gets_its_books_on_upgrade,
    &[("SEQUESTRA_JOBS_ENABLED", "false")]
);
on_both_backends_with!(
    the_jobs_check_the_books_and_a_discrepancy_shows_in_the_metrics,
    &[
        ("SEQUESTRA_JOBS_ENABLED", "true"),
        ("SEQUESTRA_BOOKS_CHECK_INTERVAL_SECS", "1"),
        ("SEQUESTRA_JOBS_INTERVAL_MS", "200"),
    ]
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
pub async fn money_moves(app: &TestApp, t: &TestTenant) -> String {
    let sender = t.token(Role::Sender).to_owned();
    enrol(app, &sender).await;
    let e = create_escrow(
        app,
        t,
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
        "mutation($id: ID!, $k: String!) { releaseEscrow(input: { escrowId: $id, idempotencyKey: $k }) { escrow { status } } }",
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

/// `edit` of `table` is refused even as the tables' owner (append-only); then the
/// owner drops the guard, as only the owner can, and the test's books are marked
/// damaged on purpose.
async fn refused_then_guard_lifted(app: &TestApp, table: &str, edit: &str) {
    let refused = as_owner(app, edit).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("append-only")),
        "{refused:?}"
    );
    app.tampered();
    let lift = match app.db.get_database_backend() {
        DbBackend::Postgres => format!("ALTER TABLE {table} DISABLE TRIGGER {table}_no_update"),
        _ => format!("DROP TRIGGER {table}_no_update"),
    };
    as_owner(app, &lift).await.unwrap();
}

async fn entries_balance_and_a_tampered_entry_is_named(app: TestApp) {
    money_moves(&app, &app.tenant("acme").await).await;
    let (code, out, err) = command(&app, &["ledger", "verify"]).await;
    assert_eq!(code, 0, "ledger verify: {out}{err}");
    assert!(out.contains("acme: ok"), "{out}");

    // The journal refuses edits, even the table's owner's; someone with the owner's
    // keys lifts the guard and adds a cent to one entry into the escrow.
    let edit = "UPDATE ledger_entries SET amount_minor = amount_minor + 1 \
                WHERE to_kind = 'ESCROW'";
    refused_then_guard_lifted(&app, "ledger_entries", edit).await;
    let one = match app.db.get_database_backend() {
        DbBackend::Postgres => {
            "UPDATE ledger_entries SET amount_minor = amount_minor + 1 WHERE id = \
             (SELECT id FROM ledger_entries WHERE to_kind = 'ESCROW' ORDER BY id LIMIT 1)"
        }
        _ => {
            "UPDATE ledger_entries SET amount_minor = amount_minor + 1 WHERE rowid = \
             (SELECT rowid FROM ledger_entries WHERE to_kind = 'ESCROW' ORDER BY id LIMIT 1)"
        }
    };
    as_owner(&app, one).await.unwrap();
    let (code, out, err) = command(&app, &["ledger", "verify", "--tenant", "acme"]).await;
    assert_eq!(code, 1, "ledger verify after the edit: {out}{err}");
    assert!(
        out.contains("acme: DISCREPANCY: ledger entry led_")
            && out.contains("(DEPOSIT) moves 12.51 EUR, its deposit dep_")
            && out.contains(" is of 12.50 EUR"),
        "{out}"
    );
    assert!(err.contains("the ledger does not hold"), "{err}");
}

/// The journal as one row per movement (m20261201_000017) unfolds into entries and
/// their postings when that migration is undone and folds back when it runs again,
/// entry for entry; an entry whose postings are not one balanced pair stops it.
async fn the_journal_folds_into_one_row_per_movement_and_back(app: TestApp) {
    money_moves(&app, &app.tenant("acme").await).await;
    let count = |table: &'static str| {
        let db = app.db.clone();
        async move {
            let row = db
                .query_one(sea_orm::Statement::from_string(
                    db.get_database_backend(),
                    format!("SELECT COUNT(*) AS n FROM {table}"),
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get::<i64>("", "n").unwrap()
        }
    };
    let entries = count("ledger_entries").await;
    assert!(entries >= 4, "{entries} entries");
    let (_, before, _) = command(&app, &["ledger", "verify", "--tenant", "acme"]).await;

    let undo_fold = || async {
        migration::Migrator::down(&app.db, Some(1)).await.unwrap();
    };
    let last = migration::Migrator::migrations()
        .last()
        .unwrap()
        .name()
        .to_owned();
    assert_eq!(last, "m20261201_000017_ledger_one_row_per_movement");
    undo_fold().await;
    assert_eq!(count("ledger_entries").await, entries);
    assert_eq!(count("ledger_postings").await, 2 * entries);
    app.migrate().await;
    assert_eq!(count("ledger_entries").await, entries);
    let (code, after, err) = command(&app, &["ledger", "verify", "--tenant", "acme"]).await;
    assert_eq!(code, 0, "ledger verify after folding again: {after}{err}");
    assert_eq!(after, before);

    // Unfolded again, one posting edited: the fold refuses the journal, naming the
    // entry, and changes nothing.
    undo_fold().await;
    app.tampered();
    let lift = match app.db.get_database_backend() {
        DbBackend::Postgres => {
            "ALTER TABLE ledger_postings DISABLE TRIGGER ledger_postings_no_update"
        }
        _ => "DROP TRIGGER ledger_postings_no_update",
    };
    as_owner(&app, lift).await.unwrap();
    as_owner(
        &app,
        "UPDATE ledger_postings SET amount_minor = amount_minor + 1 WHERE amount_minor > 0",
    )
    .await
    .unwrap();
    let refused = migration::Migrator::up(&app.db, None).await;
    let message = format!("{refused:?}");
    assert!(
        message.contains("cannot be folded into one row per movement: entry ")
            && message.contains("is not one balanced pair of postings"),
        "{message}"
    );
    assert_eq!(count("ledger_postings").await, 2 * entries);
    let pending = migration::Migrator::get_pending_migrations(&app.db)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "the fold is still to run");
}

/// Waits (up to 15 s) for `/metrics` to hold `line`; answers the page.
async fn metrics_until(app: &TestApp, line: &str) -> String {
    let mut page = String::new();
    for _ in 0..75 {
        page = app.metrics().await;
        if page.lines().any(|l| l == line) {
            return page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("no `{line}` in /metrics:\n{page}");
}

async fn the_jobs_check_the_books_and_a_discrepancy_shows_in_the_metrics(app: TestApp) {
    // The metrics recorder is one per test process: a slug no other test uses.
    let slug = format!("books-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let t = app.tenant(&slug).await;
    money_moves(&app, &t).await;
    metrics_until(&app, &format!("ledger_discrepancy{{tenant=\"{slug}\"}} 0")).await;
    metrics_until(&app, &format!("audit_chain_broken{{tenant=\"{slug}\"}} 0")).await;

    // Someone with the owner's keys adds a cent to an entry: within the next
    // interval the jobs' check names the tenant.
    let edit = "UPDATE ledger_entries SET amount_minor = amount_minor + 1 \
                WHERE to_kind = 'ESCROW'";
    refused_then_guard_lifted(&app, "ledger_entries", edit).await;
    as_owner(&app, edit).await.unwrap();
    let page = metrics_until(&app, &format!("ledger_discrepancy{{tenant=\"{slug}\"}} 1")).await;
    assert!(
        page.lines()
            .any(|l| l.starts_with("books_checks_total{outcome=\"problem\"}")),
        "{page}"
    );
}

async fn the_audit_export_verifies_outside_and_an_edited_row_is_named(app: TestApp) {
    money_moves(&app, &app.tenant("acme").await).await;
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
    // Lane after lane: each a chain from 64 zeros.
    let mut lanes: std::collections::BTreeMap<i64, (i64, String)> = Default::default();
    for row in &rows {
        let lane = row["lane"].as_i64().unwrap();
        let (seq, prev) = lanes.entry(lane).or_insert((0, "0".repeat(64)));
        assert_eq!(row["seq"], json!(*seq + 1), "{row}");
        assert_eq!(row["prev_hash"], json!(prev), "{row}");
        let canonical = row["canonical"].as_str().unwrap();
        let fields: Vec<Value> = serde_json::from_str(canonical).unwrap();
        assert_eq!(
            (&fields[1], &fields[2]),
            (&row["lane"], &row["seq"]),
            "{row}"
        );
        assert_eq!(fields[6], row["action"], "{row}");
        assert_eq!(fields[11], row["details"], "{row}");
        let hash = hex::encode(Sha256::digest(format!("{prev}{canonical}")));
        assert_eq!(row["hash"], json!(hash), "{row}");
        *seq += 1;
        *prev = hash;
    }
    // An export from a point in time starts there in each lane and still links to
    // what came before.
    let third = &rows[2];
    let (_, since, _) = command(
        &app,
        &[
            "audit",
            "export",
            "--tenant",
            "acme",
            "--since",
            third["created_at"].as_str().unwrap(),
        ],
    )
    .await;
    let first: Value = serde_json::from_str(since.lines().next().unwrap()).unwrap();
    assert_eq!(first["lane"], third["lane"], "{first}");
    assert!(first["seq"].as_i64().unwrap() <= 3, "{first}");
    assert_eq!(
        first["prev_hash"],
        rows[first["seq"].as_u64().unwrap() as usize - 1]["prev_hash"]
    );

    // The log refuses edits, even the owner's; with the guard lifted, an edit is
    // named by its row.
    refused_then_guard_lifted(&app, "audit_log", "UPDATE audit_log SET action = 'x'").await;
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
        "lane {} row {} (id {}): hash does not match the row's content",
        victim["lane"],
        victim["seq"],
        victim["id"].as_str().unwrap()
    );
    assert!(
        out.contains("acme: BROKEN after ") && out.contains(&named),
        "{out}\nexpected: {named}"
    );
}

/// A database written before the ledger existed (this migration undone: no journal,
/// no chain) is upgraded: the migration replays its money history into the ledger and
/// seals its audit rows, so both commands hold at once — here after deposits, a
/// release with its settlement, a mandate's purchases and payout, its revocation, and
/// a transfer. (The harness checks the books once more after the test.)
async fn a_database_from_before_the_ledger_gets_its_books_on_upgrade(app: TestApp) {
    let t = app.tenant("acme").await;
    money_moves(&app, &t).await;
    let (sender, beneficiary) = (t.token(Role::Sender), t.token(Role::Beneficiary));
    enrol(&app, beneficiary).await;
    let shops = crate::spend::catalog(&app, &t).await;
    let r = crate::spend::grant(
        &app,
        &t,
        json!({ "total": "50.00", "currency": "EUR", "allowedMerchantIds": [shops.fresh_mart] }),
    )
    .await;
    let mandate = r.ok()["grantMandate"]["mandate"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    crate::spend::buy(
        &app,
        beneficiary,
        &mandate,
        &shops.fresh_mart,
        "7.25",
        &key(),
    )
    .await
    .ok();
    let r = app
        .gql(
            Some(sender),
            "mutation($m: ID!) { addPayee(input: { mandateId: $m, reference: \"up-1\", name: \"Up Ltd\" }) { payee { id } } }",
            json!({ "m": mandate }),
        )
        .await;
    let payee = r.ok()["addPayee"]["payee"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.gql(
        Some(beneficiary),
        PAY,
        json!({ "p": payee, "a": "3.00", "k": key() }),
    )
    .await
    .ok();
    app.gql(
        Some(sender),
        "mutation($m: ID!) { revokeMandate(input: { mandateId: $m }) { mandate { status } } }",
        json!({ "m": mandate }),
    )
    .await
    .ok();

    // Back to before the ledger migration (those after it go too).
    let undo = migration::Migrator::migrations()
        .iter()
        .rev()
        .position(|m| m.name() == "m20261130_000012_ledger_and_audit_chain")
        .expect("the ledger migration")
        + 1;
    migration::Migrator::down(&app.db, Some(undo as u32))
        .await
        .unwrap();
    let gone = app
        .db
        .execute_unprepared("SELECT COUNT(*) FROM ledger_entries")
        .await;
    assert!(gone.is_err(), "the journal is still there: {gone:?}");
    app.migrate().await;
    for args in [["ledger", "verify"], ["audit", "verify"]] {
        let (code, out, err) = command(&app, &args).await;
        assert_eq!(code, 0, "{args:?} after the upgrade: {out}{err}");
        assert!(out.contains("acme: ok"), "{out}");
    }
    let (_, out, _) = command(&app, &["ledger", "verify", "--tenant", "acme"]).await;
    assert!(!out.contains("(0 entries"), "nothing was replayed: {out}");
}

// ------------------------------------------------------------------ crash consistency

const RELEASE: &str = "mutation($id: ID!, $k: String!) { releaseEscrow(input: { escrowId: $id, idempotencyKey: $k }) { escrow { id status } payments { id } } }";
const FUND: &str = "mutation($id: ID!, $a: Decimal!, $k: String!) { fundEscrow(input: { escrowId: $id, amount: $a, idempotencyKey: $k }) { deposit { id } } }";
const PURCHASE: &str = "mutation($m: ID!, $s: ID!, $a: Decimal!, $k: String!) { createPurchase(input: { mandateId: $m, merchantId: $s, amount: $a, idempotencyKey: $k }) { purchase { id } } }";
const PAY: &str = "mutation($p: ID!, $a: Decimal!, $k: String!) { payPayee(input: { payeeId: $p, amount: $a, idempotencyKey: $k }) { payout { id payment { id } } } }";

/// One money-moving request of the load, with its idempotency key.
struct Op {
    token: String,
    query: &'static str,
    vars: Value,
}

/// The answer to `op`, asked of whichever process is up, again and again (same key)
/// until one answers: a request cut by a crash has no answer and is retried.
async fn until_answered(
    http: &reqwest::Client,
    listen: &tokio::sync::RwLock<String>,
    op: &Op,
) -> (Value, u32) {
    let mut tries = 0;
    loop {
        tries += 1;
        let url = format!("http://{}/graphql", listen.read().await);
        let sent = http
            .post(url)
            .bearer_auth(&op.token)
            .json(&json!({ "query": op.query, "variables": op.vars }))
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await;
        if let Ok(response) = sent
            && let Ok(body) = response.json::<Value>().await
        {
            return (body, tries);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Deposits, releases, purchases and payouts run concurrently against a `serve`
/// process on PostgreSQL that is killed with SIGKILL three times mid-load and
/// restarted; every request without an answer is retried with its idempotency key.
/// Then every acknowledged request is present exactly once and `ledger verify`
/// passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_survives_sigkill_mid_load() {
    use crate::harness::Backend;
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let mut settings: Vec<(&str, &str)> = crate::principal_cache::SECRETS.to_vec();
    settings.push(("SEQUESTRA_JOBS_ENABLED", "false"));
    let Some(app) = TestApp::spawn_with(Backend::Postgres, &settings).await else {
        crate::harness::skipped("books::money_survives_sigkill_mid_load");
        return;
    };
    let books = app.books();
    let t = app.tenant("acme").await;
    let sender = t.token(Role::Sender).to_owned();
    let beneficiary = t.token(Role::Beneficiary).to_owned();
    enrol(&app, &sender).await;
    enrol(&app, &beneficiary).await;
    let shops = crate::spend::catalog(&app, &t).await;
    let r = crate::spend::grant(
        &app,
        &t,
        json!({ "total": "1000.00", "currency": "EUR", "allowedMerchantIds": [shops.fresh_mart] }),
    )
    .await;
    let mandate = r.ok()["grantMandate"]["mandate"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .gql(
            Some(&sender),
            "mutation($m: ID!) { addPayee(input: { mandateId: $m, reference: \"crash-payee\", name: \"Crash Ltd\" }) { payee { id } } }",
            json!({ "m": mandate }),
        )
        .await;
    let payee = r.ok()["addPayee"]["payee"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut to_fund, mut to_release) = (Vec::new(), Vec::new());
    for i in 0..24 {
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
        if i % 2 == 0 {
            fund(&app, &sender, &id, "10.00", &key()).await.ok();
            to_release.push(id);
        } else {
            to_fund.push(id);
        }
    }
    let op = |token: &str, query: &'static str, vars: Value| Op {
        token: token.to_owned(),
        query,
        vars,
    };
    let deposits = to_fund.iter().flat_map(|id| {
        [0, 1].map(|_| op(&sender, FUND, json!({ "id": id, "a": "5.00", "k": key() })))
    });
    let releases = to_release
        .iter()
        .map(|id| op(&sender, RELEASE, json!({ "id": id, "k": key() })));
    let purchases = (0..120).map(|_| {
        let vars = json!({ "m": mandate, "s": shops.fresh_mart, "a": "1.00", "k": key() });
        op(&beneficiary, PURCHASE, vars)
    });
    let payouts = (0..24).map(|_| {
        op(
            &beneficiary,
            PAY,
            json!({ "p": payee, "a": "2.00", "k": key() }),
        )
    });
    // Interleaved, so every kind is in flight at every kill.
    let mut kinds: Vec<std::collections::VecDeque<Op>> = vec![
        deposits.collect(),
        releases.collect(),
        purchases.collect(),
        payouts.collect(),
    ];
    let mut mixed = Vec::new();
    while kinds.iter().any(|k| !k.is_empty()) {
        for kind in &mut kinds {
            // Purchases are the most: five of them per round.
            let take = if kind.len() > 30 { 5 } else { 1 };
            mixed.extend((0..take).filter_map(|_| kind.pop_front()));
        }
    }
    let n = mixed.len();
    let ops = Arc::new(mixed);

    let db = app.database_url();
    let owner = app
        .database_owner_url()
        .expect("PostgreSQL has an owner URL");
    let mut child_settings = settings.clone();
    child_settings.push(("SEQUESTRA_DATABASE_OWNER_URL", owner.as_str()));
    child_settings.push(("SEQUESTRA_RATE_LIMIT_PER_SECOND", "100000"));
    child_settings.push(("SEQUESTRA_RATE_LIMIT_BURST", "100000"));
    let (mut child, listen) = crate::cli::serve_with(&[], &db, &child_settings).await;
    let listen = Arc::new(tokio::sync::RwLock::new(listen));
    let done = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(tokio::sync::Mutex::new(vec![(Value::Null, 0u32); n]));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (ops, listen, done, next, answers) = (
            ops.clone(),
            listen.clone(),
            done.clone(),
            next.clone(),
            answers.clone(),
        );
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= ops.len() {
                    return;
                }
                let answer = until_answered(&http, &listen, &ops[i]).await;
                answers.lock().await[i] = answer;
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // Three kills, at a quarter, half and three quarters of the load.
    let mut kills = 0;
    for quarter in 1..=3 {
        while done.load(Ordering::SeqCst) < n * quarter / 4 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        child.start_kill().expect("SIGKILL");
        child.wait().await.ok();
        kills += 1;
        let (restarted, at) = crate::cli::serve_with(&[], &db, &child_settings).await;
        child = restarted;
        *listen.write().await = at;
    }
    for w in workers {
        w.await.unwrap();
    }
    child.start_kill().ok();

    let answers = answers.lock().await.clone();
    let retried = answers.iter().filter(|(_, tries)| *tries > 1).count();
    for (i, (body, _)) in answers.iter().enumerate() {
        assert!(
            body.get("errors").is_none(),
            "request {i} ({}) was refused: {body}",
            ops[i].query
        );
    }
    crate::harness::report(&format!(
        "crash test: {n} requests, {kills} SIGKILLs mid-load, {retried} retried with their key"
    ));
    assert!(retried > 0, "no request was cut by a kill");

    // Everything acknowledged is there, once.
    let state = app
        .gql(
            Some(&sender),
            "query($m: ID!) { mandate(id: $m) { spent { amount } purchases { id } ledgerEntries { kind } } escrows(first: 100) { edges { node { id status funded { amount } deposits { id } payments { id } } } } }",
            json!({ "m": mandate }),
        )
        .await;
    let state = state.ok();
    let purchases: std::collections::HashSet<&str> = state["mandate"]["purchases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    for (op, (body, _)) in ops.iter().zip(&answers) {
        if op.query == PURCHASE {
            assert!(
                purchases.contains(
                    body["data"]["createPurchase"]["purchase"]["id"]
                        .as_str()
                        .unwrap()
                ),
                "an acknowledged purchase is missing: {body}"
            );
        }
    }
    assert_eq!(purchases.len(), 120, "purchases applied once each");
    // 120 purchases of 1.00 and 24 payouts of 2.00.
    assert_eq!(state["mandate"]["spent"]["amount"], "168.00", "{state}");
    for edge in state["escrows"]["edges"].as_array().unwrap() {
        let e = &edge["node"];
        let id = e["id"].as_str().unwrap();
        if to_fund.iter().any(|f| f == id) {
            assert_eq!(e["deposits"].as_array().unwrap().len(), 2, "{e}");
            assert_eq!(e["funded"]["amount"], "10.00", "{e}");
            assert_eq!(e["status"], "FUNDED", "{e}");
        } else if to_release.iter().any(|r| r == id) {
            assert_eq!(e["status"], "RELEASED", "{e}");
            assert_eq!(e["payments"].as_array().unwrap().len(), 1, "paid once: {e}");
        }
    }
    let (code, out, err) = command(&app, &["ledger", "verify"]).await;
    assert_eq!(code, 0, "ledger verify after the crashes: {out}{err}");
    let (code, out, err) = command(&app, &["audit", "verify"]).await;
    assert_eq!(code, 0, "audit verify after the crashes: {out}{err}");
    drop(app);
    books.check().await;
}
