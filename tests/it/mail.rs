//! Notifications by mail, through a real SMTP conversation with the tests' sink
//! (`smtp.rs`): security notices, the password reset, payments told to their payee,
//! what a user may turn off, and retries when the server refuses.

use std::time::Duration;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use sequestra::{
    auth::Role,
    entity::{mail_token, notification},
};
use serde_json::json;

use crate::harness::{Backend, TestApp};
use crate::smtp::SmtpSink;

/// Runs `$name(backend)` on SQLite and on PostgreSQL (when configured).
macro_rules! on_both_backends_by_hand {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::harness::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::harness::Backend::Postgres).await;
            }
        }
    )*};
}

on_both_backends_by_hand!(
    a_forgotten_password_is_reset_by_mail,
    a_payee_is_told_when_a_payment_moves,
    mail_the_server_refuses_is_retried_then_given_up,
    parties_are_told_of_disputes_auto_releases_and_mandates,
    an_address_is_verified_and_changed_only_once_confirmed,
    two_processes_send_each_mail_once,
);

/// The app with its jobs sweeping the outboxes for mail to `sink` every 100 ms (the
/// other jobs rarely).
async fn spawn(backend: Backend, sink: &SmtpSink, extra: &[(&str, &str)]) -> Option<TestApp> {
    let url = sink.url();
    let mut settings = vec![
        ("SEQUESTRA_JOBS_ENABLED", "true"),
        ("SEQUESTRA_JOBS_INTERVAL_MS", "600000"),
        ("SEQUESTRA_BOOKS_CHECK_INTERVAL_SECS", "0"),
        ("SEQUESTRA_RETENTION_INTERVAL_SECS", "0"),
        ("SEQUESTRA_MAIL_POLL_MS", "100"),
        ("SEQUESTRA_SMTP_URL", url.as_str()),
        ("SEQUESTRA_CREDENTIAL_ATTEMPTS_PER_MINUTE", "1000"),
    ];
    settings.extend_from_slice(extra);
    let app = TestApp::spawn_with(backend, &settings).await;
    if app.is_none() {
        crate::harness::skipped("mail (PostgreSQL)");
    }
    app
}

/// The token (`prefix…`) a mail carries.
fn token_in(text: &str, prefix: &str) -> String {
    let start = text.find(prefix).expect("a token in the mail");
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

async fn notifications(app: &TestApp, kind: &str) -> Vec<notification::Model> {
    notification::Entity::find()
        .filter(notification::Column::Kind.eq(kind))
        .all(&app.db)
        .await
        .expect("notifications")
}

/// Polls (10 s at most) until every `kind` notification has left `PENDING`.
async fn settled(app: &TestApp, kind: &str) -> Vec<notification::Model> {
    for _ in 0..200 {
        let rows = notifications(app, kind).await;
        if !rows.is_empty() && rows.iter().all(|n| n.status != "PENDING") {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{kind} notifications still pending: {:?}",
        notifications(app, kind).await
    );
}

/// The sweep runs once at start and then not for a minute: every mail below goes
/// because its write woke the sender.
const WAKE_UPS_ONLY: (&str, &str) = ("SEQUESTRA_MAIL_POLL_MS", "60000");

async fn a_forgotten_password_is_reset_by_mail(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = spawn(backend, &sink, &[WAKE_UPS_ONLY]).await else {
        return;
    };
    let books = app.books();
    let t = app.tenant("acme").await;
    let sender = t.user(Role::Sender).clone();

    // A sign-in is told to the account's owner at once, from the tenant's name.
    app.gql(
        None,
        "mutation($i: SignInInput!) { signIn(input: $i) { accessToken } }",
        json!({ "i": { "tenant": "acme", "email": sender.email, "password": sender.password } }),
    )
    .await
    .ok();
    let notice = sink.wait_for(&sender.email, "New sign-in").await;
    assert_eq!(notice.from, "acme <no-reply@sequestra.localhost>");
    assert!(
        notice.text.contains("Someone signed in to your account"),
        "{}",
        notice.text
    );
    assert!(notice.html.contains("Someone signed in to your account"));

    let ask = async |tenant: &str, email: &str| {
        app.gql(
            None,
            "mutation($i: RequestPasswordResetInput!) { requestPasswordReset(input: $i) { accepted } }",
            json!({ "i": { "tenant": tenant, "email": email } }),
        )
        .await
    };
    // A known address, an unknown one, an unknown tenant: one answer.
    let answers = [
        ask("acme", &sender.email).await,
        ask("acme", "nobody@acme.test").await,
        ask("nope", &sender.email).await,
    ];
    for r in &answers {
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            json!({ "data": { "requestPasswordReset": { "accepted": true } } })
        );
    }

    let mail = sink
        .wait_for(&sender.email, "Reset your acme password")
        .await;
    let token = token_in(&mail.text, "sq_pr_");
    assert!(mail.html.contains(&token), "{}", mail.html);
    assert!(mail.text.contains("within 30 minutes"), "{}", mail.text);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.mails_to("nobody@acme.test").is_empty());
    assert_eq!(
        sink.mails_to(&sender.email)
            .iter()
            .filter(|m| m.subject.starts_with("Reset"))
            .count(),
        1
    );
    // The outbox kept the token only until the mail left; the database has its hash.
    let rows = settled(&app, "PASSWORD_RESET").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].status.as_str(), rows[0].data.as_str()),
        ("SENT", "{}")
    );
    let stored = mail_token::Entity::find()
        .all(&app.db)
        .await
        .expect("mail tokens");
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].token_hash, token);
    assert!(!stored[0].token_hash.contains(&token[6..20]));

    let reset = async |token: &str, password: &str| {
        app.gql(
            None,
            "mutation($i: ResetPasswordInput!) { resetPassword(input: $i) { sessionsEnded } }",
            json!({ "i": { "token": token, "newPassword": password } }),
        )
        .await
    };
    let viewer = async |token: &str| {
        app.gql(Some(token), "{ viewer { email } }", json!({}))
            .await
    };

    // A weak password is refused and does not spend the token.
    let weak = reset(&token, "short").await;
    assert_eq!(weak.code(), Some("BAD_USER_INPUT"));
    assert_eq!(weak.body["errors"][0]["extensions"]["field"], "password");
    viewer(&sender.token).await.ok();

    let done = reset(&token, "a brand new passphrase 99").await;
    assert!(
        done.ok()["resetPassword"]["sessionsEnded"]
            .as_i64()
            .unwrap()
            >= 1
    );
    // Every session ended: the old access token is refused at once.
    assert_eq!(viewer(&sender.token).await.code(), Some("UNAUTHENTICATED"));
    // The token worked once; a made-up one never.
    for bad in [
        token.clone(),
        format!("sq_pr_{}_{}", uuid::Uuid::nil().simple(), "0".repeat(64)),
        "nonsense".to_owned(),
    ] {
        let again = reset(&bad, "yet another passphrase 123").await;
        assert_eq!(again.code(), Some("BAD_USER_INPUT"), "{bad}");
        assert_eq!(again.body["errors"][0]["extensions"]["field"], "token");
    }

    let sign_in = async |password: &str| {
        app.gql(
            None,
            "mutation($i: SignInInput!) { signIn(input: $i) { accessToken } }",
            json!({ "i": { "tenant": "acme", "email": sender.email, "password": password } }),
        )
        .await
    };
    assert_eq!(
        sign_in(&sender.password).await.code(),
        Some("UNAUTHENTICATED")
    );
    let fresh = sign_in("a brand new passphrase 99").await;
    let fresh = fresh.ok()["signIn"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    viewer(&fresh).await.ok();

    let changed = sink.wait_for(&sender.email, "password was changed").await;
    assert!(
        changed.text.contains("Your password was reset"),
        "{}",
        changed.text
    );
    let actions = app.audit_actions(&t).await;
    for action in ["user.password_reset_requested", "user.password_reset"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    books.check().await;
}

async fn a_payee_is_told_when_a_payment_moves(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = spawn(backend, &sink, &[WAKE_UPS_ONLY]).await else {
        return;
    };
    let books = app.books();
    let t = app.tenant("acme").await;
    let provider = t.user(Role::Beneficiary).clone();

    // The provider turns "on its way" off; a security notice cannot be.
    let set = async |kind: &str, enabled: bool| {
        app.gql(
            Some(&provider.token),
            "mutation($i: SetNotificationEnabledInput!) { setNotificationEnabled(input: $i) { settings { kind enabled alwaysSent } } }",
            json!({ "i": { "kind": kind, "enabled": enabled } }),
        )
        .await
    };
    let r = set("PAYMENT_SENT", false).await;
    let settings = r.ok()["setNotificationEnabled"]["settings"].clone();
    assert!(
        settings
            .as_array()
            .unwrap()
            .contains(&json!({ "kind": "PAYMENT_SENT", "enabled": false, "alwaysSent": false })),
        "{settings}"
    );
    let refused = set("SIGN_IN", false).await;
    assert_eq!(refused.code(), Some("BAD_USER_INPUT"));
    let r = app
        .gql(
            Some(&provider.token),
            "{ notificationSettings { kind enabled alwaysSent } }",
            json!({}),
        )
        .await;
    let listed = r.ok()["notificationSettings"].clone();
    assert!(
        listed
            .as_array()
            .unwrap()
            .contains(&json!({ "kind": "SIGN_IN", "enabled": true, "alwaysSent": true }))
    );
    assert!(
        listed
            .as_array()
            .unwrap()
            .contains(&json!({ "kind": "PAYMENT_SETTLED", "enabled": true, "alwaysSent": false }))
    );

    // Release an escrow to the provider; the PSP settles it.
    let sender = t.token(Role::Sender).to_owned();
    crate::mfa::enrol(&app, &sender).await;
    let id = crate::escrow::funded_escrow(&app, &t, "100.00", "f-1").await;
    let r = app
        .gql(
            Some(&sender),
            "mutation($id: ID!, $k: String!) { releaseEscrow(input: { escrowId: $id, idempotencyKey: $k }) { payments { id pspReference } } }",
            json!({ "id": id, "k": "r-1" }),
        )
        .await;
    let payment = r.ok()["releaseEscrow"]["payments"][0].clone();
    let reference = payment["pspReference"].as_str().unwrap().to_owned();
    let body = crate::webhooks::event("evt_mail", "payout.settled", &reference);
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

    let paid = sink
        .wait_for(&provider.email, "You were paid 100.00 EUR")
        .await;
    assert!(
        paid.text.contains(payment["id"].as_str().unwrap()),
        "{}",
        paid.text
    );
    assert!(paid.html.contains("100.00 EUR"));
    assert!(paid.html.contains("notification settings"));
    // "On its way" was turned off: skipped, never mailed.
    let sent = settled(&app, "PAYMENT_SENT").await;
    assert_eq!(
        sent.iter().map(|n| n.status.as_str()).collect::<Vec<_>>(),
        ["SKIPPED"]
    );
    assert!(
        sink.mails_to(&provider.email)
            .iter()
            .all(|m| !m.subject.contains("on its way"))
    );
    books.check().await;
}

async fn mail_the_server_refuses_is_retried_then_given_up(backend: Backend) {
    let sink = SmtpSink::start().await;
    // The first two transactions are refused for now.
    sink.refuse_for_now(2);
    let Some(app) = spawn(
        backend,
        &sink,
        &[
            ("SEQUESTRA_MAIL_RETRY_BASE_SECS", "0"),
            ("SEQUESTRA_MAIL_MAX_ATTEMPTS", "3"),
        ],
    )
    .await
    else {
        return;
    };
    let books = app.books();
    let t = app.tenant("acme").await;
    for role in Role::ALL {
        sink.wait_for(&t.user(role).email, "New sign-in").await;
    }
    let rows = settled(&app, "SIGN_IN").await;
    assert!(rows.iter().all(|n| n.status == "SENT"), "{rows:?}");
    assert_eq!(rows.iter().map(|n| n.attempts).sum::<i32>(), 4 + 2);
    assert_eq!(sink.mails().len(), 4, "each mail delivered once");

    // Refused for good: given up after one try, and counted.
    sink.refuse_for_good(1);
    let before = sink.attempts();
    app.add_user(&t, "late@acme.test", &[Role::Sender]).await;
    let failed = loop {
        let rows = notifications(&app, "SIGN_IN").await;
        if let Some(f) = rows.iter().find(|n| n.status == "FAILED") {
            break f.clone();
        }
        assert!(sink.attempts() < before + 5, "not given up: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failed.attempts, 1);
    assert!(
        failed
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("550"),
        "{failed:?}"
    );
    assert!(sink.mails_to("late@acme.test").is_empty());
    // (The metrics are the process's: the other backend's run counts there too.)
    assert!(
        app.metrics()
            .await
            .contains("notifications_failed_total{kind=\"SIGN_IN\"} ")
    );
    books.check().await;
}

async fn parties_are_told_of_disputes_auto_releases_and_mandates(backend: Backend) {
    let sink = SmtpSink::start().await;
    // The other jobs every 200 ms: the auto-release is theirs.
    let Some(app) = spawn(backend, &sink, &[("SEQUESTRA_JOBS_INTERVAL_MS", "200")]).await else {
        return;
    };
    let books = app.books();
    let t = app.tenant("acme").await;
    let sender = t.user(Role::Sender).clone();
    let provider = t.user(Role::Beneficiary).clone();

    // The provider opens a dispute: the sender is told, with the reason.
    let e = crate::escrow::create_escrow(
        &app,
        &t,
        "80.00",
        json!([]),
        None,
        chrono::Duration::days(7),
    )
    .await;
    let disputed = e["id"].as_str().unwrap().to_owned();
    crate::escrow::fund(&app, &sender.token, &disputed, "80.00", "f-d")
        .await
        .ok();
    app.gql(
        Some(&provider.token),
        "mutation($id: ID!) { openDispute(input: { escrowId: $id, reason: \"never <b>paid</b> for parts\" }) { escrow { status } } }",
        json!({ "id": disputed }),
    )
    .await
    .ok();
    let mail = sink
        .wait_for(
            &sender.email,
            "A dispute was opened on \"Kitchen renovation\"",
        )
        .await;
    assert!(
        mail.text.contains("never <b>paid</b> for parts"),
        "{}",
        mail.text
    );
    assert!(
        mail.html
            .contains("never &lt;b&gt;paid&lt;&#x2f;b&gt; for parts"),
        "{}",
        mail.html
    );
    assert!(mail.text.contains(&disputed), "{}", mail.text);
    // The one who opened it is not told of their own dispute.
    assert!(
        sink.mails_to(&provider.email)
            .iter()
            .all(|m| !m.subject.contains("dispute"))
    );

    // An inspection that lapses: the jobs release it, the sender is told.
    let e = crate::escrow::create_escrow(
        &app,
        &t,
        "30.00",
        json!([]),
        Some(1),
        chrono::Duration::days(7),
    )
    .await;
    let lapsing = e["id"].as_str().unwrap().to_owned();
    crate::escrow::fund(&app, &sender.token, &lapsing, "30.00", "f-l")
        .await
        .ok();
    app.gql(
        Some(&provider.token),
        "mutation($id: ID!) { markDelivered(input: { escrowId: $id, note: \"done\" }) { escrow { status } } }",
        json!({ "id": lapsing }),
    )
    .await
    .ok();
    let mail = sink
        .wait_for(&sender.email, "was released automatically")
        .await;
    assert!(
        mail.text.contains("30.00 EUR") && mail.text.contains(&lapsing),
        "{}",
        mail.text
    );

    // A mandate granted, then spent past nine-tenths: the beneficiary is told each
    // once (the purchases below the line and after it tell nothing).
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
    let mail = sink
        .wait_for(&provider.email, "You can spend 50.00 EUR")
        .await;
    assert!(mail.text.contains(&mandate), "{}", mail.text);
    for (amount, key) in [("40.00", "p-1"), ("6.00", "p-2"), ("1.00", "p-3")] {
        crate::spend::buy(&app, &provider.token, &mandate, &c.fresh_mart, amount, key)
            .await
            .ok();
    }
    sink.wait_for(&provider.email, "Only 4.00 EUR left on your mandate")
        .await;
    settled(&app, "MANDATE_NEARLY_SPENT").await;
    assert_eq!(notifications(&app, "MANDATE_NEARLY_SPENT").await.len(), 1);
    books.check().await;
}

async fn an_address_is_verified_and_changed_only_once_confirmed(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = spawn(backend, &sink, &[]).await else {
        return;
    };
    let books = app.books();
    let t = app.tenant("acme").await;
    let admin = t.token(Role::Admin).to_owned();
    crate::mfa::enrol(&app, &admin).await;

    // A new user is mailed a token that verifies the address.
    let r = app
        .gql(
            Some(&admin),
            "mutation($i: CreateUserInput!) { createUser(input: $i) { user { emailVerified } oneTimePassword } }",
            json!({ "i": { "email": "new@acme.test", "roles": ["SENDER"] } }),
        )
        .await;
    let created = r.ok()["createUser"].clone();
    assert_eq!(created["user"]["emailVerified"], false);
    let newcomer = app
        .sign_in(
            "acme",
            "new@acme.test",
            created["oneTimePassword"].as_str().unwrap(),
        )
        .await;
    let mail = sink.wait_for("new@acme.test", "Confirm your address").await;
    let token = token_in(&mail.text, "sq_ev_");
    let verify = async |token: &str| {
        app.gql(
            None,
            "mutation($i: MailedTokenInput!) { verifyEmail(input: $i) { confirmed } }",
            json!({ "i": { "token": token } }),
        )
        .await
    };
    assert_eq!(verify(&token).await.ok()["verifyEmail"]["confirmed"], true);
    assert_eq!(verify(&token).await.code(), Some("BAD_USER_INPUT"));
    let me = async |token: &str| {
        app.gql(Some(token), "{ viewer { email emailVerified } }", json!({}))
            .await
            .ok()["viewer"]
            .clone()
    };
    assert_eq!(
        me(&newcomer).await,
        json!({ "email": "new@acme.test", "emailVerified": true })
    );

    // A change needs a recent step-up and the password, and waits for the new address.
    let sender = t.user(Role::Sender).clone();
    let change = async |email: &str, password: &str| {
        app.gql(
            Some(&sender.token),
            "mutation($i: ChangeEmailInput!) { changeEmail(input: $i) { confirmationSent } }",
            json!({ "i": { "newEmail": email, "password": password } }),
        )
        .await
    };
    assert_eq!(
        change("s.new@acme.test", &sender.password).await.code(),
        Some("MFA_REQUIRED")
    );
    crate::mfa::enrol(&app, &sender.token).await;
    assert_eq!(
        change("s.new@acme.test", "wrong password here")
            .await
            .code(),
        Some("UNAUTHENTICATED")
    );
    let taken = change("admin@acme.test", &sender.password).await;
    assert_eq!(
        (
            taken.code(),
            &taken.body["errors"][0]["extensions"]["reason"]
        ),
        (Some("CONFLICT"), &json!("EMAIL_TAKEN"))
    );
    let asked = change("s.new@acme.test", &sender.password).await;
    assert_eq!(asked.ok()["changeEmail"]["confirmationSent"], true);
    let notice = sink
        .wait_for(&sender.email, "A new address was asked for")
        .await;
    assert!(notice.text.contains("s.new@acme.test"), "{}", notice.text);
    let confirm = sink
        .wait_for("s.new@acme.test", "Confirm your new address")
        .await;
    let token = token_in(&confirm.text, "sq_ec_");
    // Nothing changed yet.
    assert_eq!(me(&sender.token).await["email"], sender.email.as_str());

    let confirm_change = async |token: &str| {
        app.gql(
            None,
            "mutation($i: MailedTokenInput!) { confirmEmailChange(input: $i) { confirmed } }",
            json!({ "i": { "token": token } }),
        )
        .await
    };
    // A verification token is not a change token.
    assert_eq!(
        confirm_change(&token.replace("sq_ec_", "sq_ev_"))
            .await
            .code(),
        Some("BAD_USER_INPUT")
    );
    assert_eq!(
        confirm_change(&token).await.ok()["confirmEmailChange"]["confirmed"],
        true
    );
    assert_eq!(confirm_change(&token).await.code(), Some("BAD_USER_INPUT"));
    assert_eq!(
        me(&sender.token).await,
        json!({ "email": "s.new@acme.test", "emailVerified": true })
    );
    let sign_in = async |email: &str| {
        app.gql(
            None,
            "mutation($i: SignInInput!) { signIn(input: $i) { mfaChallenge } }",
            json!({ "i": { "tenant": "acme", "email": email, "password": sender.password } }),
        )
        .await
    };
    assert!(sign_in("s.new@acme.test").await.ok()["signIn"]["mfaChallenge"].is_string());
    assert_eq!(sign_in(&sender.email).await.code(), Some("UNAUTHENTICATED"));

    let actions = app.audit_actions(&t).await;
    for action in [
        "user.email_verified",
        "user.email_change_requested",
        "user.email_changed",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    books.check().await;
}

async fn two_processes_send_each_mail_once(backend: Backend) {
    let sink = SmtpSink::start().await;
    let Some(app) = spawn(backend, &sink, &[("SEQUESTRA_MAIL_POLL_MS", "50")]).await else {
        return;
    };
    // A second replica on the same database, sending to the same server as often.
    let url = sink.url();
    let _peer = app
        .peer(&[
            ("SEQUESTRA_JOBS_ENABLED", "true"),
            ("SEQUESTRA_JOBS_INTERVAL_MS", "600000"),
            ("SEQUESTRA_MAIL_POLL_MS", "50"),
            ("SEQUESTRA_SMTP_URL", url.as_str()),
        ])
        .await;
    let t = app.tenant("acme").await;
    let mut addresses: Vec<String> = Role::ALL.iter().map(|r| t.user(*r).email.clone()).collect();
    for i in 0..12 {
        let email = format!("user{i}@acme.test");
        app.add_user(&t, &email, &[Role::Sender]).await;
        addresses.push(email);
    }
    let rows = settled(&app, "SIGN_IN").await;
    assert_eq!(rows.len(), addresses.len());
    assert!(
        rows.iter().all(|n| n.status == "SENT" && n.attempts == 1),
        "{rows:?}"
    );
    // Each mail arrived once, though two processes were sending.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.mails().len(), addresses.len());
    for address in &addresses {
        assert_eq!(sink.mails_to(address).len(), 1, "{address}");
    }
}
