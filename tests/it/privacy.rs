//! Personal data (GDPR): a person's export holds what the server holds about them;
//! erasure waits for their money to stop moving, then forgets them and keeps the
//! books.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use sequestra::{
    auth::Role,
    entity::{notification, session, user},
    graphql::context::Services,
};
use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::on_both_backends;

on_both_backends!(
    a_demo_users_export_holds_what_the_server_holds_about_them,
    erasure_waits_for_money_in_flight_and_keeps_the_books,
);

const EXPORT: &str = "{ exportMyData }";

async fn a_demo_users_export_holds_what_the_server_holds_about_them(app: TestApp) {
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
    let acme = demo.tenants.iter().find(|t| t.slug == "acme").unwrap();
    let who = acme
        .users
        .iter()
        .find(|u| u.roles == [Role::Beneficiary])
        .expect("the demo beneficiary");
    let token = app.sign_in("acme", &who.email, &who.password).await;
    let r = app.gql(Some(&token), EXPORT, json!({})).await;
    let doc = r.ok()["exportMyData"].clone();

    // What the API shows the same person, to hold the export against.
    let r = app
        .gql(
            Some(&token),
            "{ viewer { id email createdAt } mySessions { id }
               escrows(first: 100) { edges { node { id status description amount { amount currency }
                 payments { id status amount { amount } payee { userId } } } } }
               mandates(first: 100) { edges { node { id status total { amount } spent { amount } } } }
               purchases(first: 100) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    let api = r.ok().clone();
    let me = api["viewer"]["id"].as_str().unwrap();

    assert_eq!(
        doc["tenant"],
        json!({ "slug": "acme", "name": "Acme Corporation" })
    );
    assert_eq!(
        doc["profile"],
        json!({
            "id": me,
            "email": "beneficiary@acme.example",
            "emailVerified": false,
            "isActive": true,
            "createdAt": doc["profile"]["createdAt"],
        })
    );
    assert!(
        doc["profile"]["createdAt"]
            .as_str()
            .unwrap()
            .starts_with(&api["viewer"]["createdAt"].as_str().unwrap()[..19])
    );
    assert_eq!(doc["roles"], json!(["BENEFICIARY"]));
    assert_eq!(doc["mfa"], json!({ "enabled": false, "enabledAt": null }));
    let sessions: Vec<&Value> = doc["sessions"].as_array().unwrap().iter().collect();
    let listed: Vec<&Value> = api["mySessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["id"])
        .collect();
    assert_eq!(
        sessions.iter().map(|s| &s["id"]).collect::<Vec<_>>(),
        listed
    );
    assert!(
        sessions
            .iter()
            .all(|s| s["revokedAt"].is_null() && s["expiresAt"].is_string())
    );

    // Every escrow the person is party to, as the API lists them.
    let escrows: Vec<Value> = api["escrows"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let n = &e["node"];
            json!({
                "id": n["id"],
                "role": "PROVIDER",
                "description": n["description"],
                "amount": n["amount"]["amount"],
                "currency": n["amount"]["currency"],
                "status": n["status"],
            })
        })
        .collect();
    let exported: Vec<Value> = doc["escrows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.as_object_mut().unwrap().remove("createdAt");
            e
        })
        .collect();
    assert!(!escrows.is_empty());
    assert_eq!(exported, escrows);
    let mandates: Vec<Value> = api["mandates"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            json!([
                e["node"]["id"],
                "BENEFICIARY",
                e["node"]["total"]["amount"],
                e["node"]["spent"]["amount"],
                e["node"]["status"]
            ])
        })
        .collect();
    let exported: Vec<Value> = doc["mandates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| json!([m["id"], m["role"], m["total"], m["spent"], m["status"]]))
        .collect();
    assert!(!mandates.is_empty());
    assert_eq!(exported, mandates);
    // The payments to them (the escrows' payments whose payee they are).
    let paid: Vec<Value> = api["escrows"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["node"]["payments"].as_array().unwrap().clone())
        .filter(|p| p["payee"]["userId"] == me)
        .map(|p| json!([p["id"], "PAYEE", p["amount"]["amount"], p["status"]]))
        .collect();
    let exported: Vec<Value> = doc["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json!([p["id"], p["role"], p["amount"], p["status"]]))
        .collect();
    assert!(!paid.is_empty());
    assert_eq!(exported, paid);
    // The audit entries by them: their purchases and this sign-in among them.
    let entries = doc["auditEntries"].as_array().unwrap();
    let purchases = entries
        .iter()
        .filter(|a| a["action"] == "purchase.created" && a["by"] == "YOU")
        .count();
    assert_eq!(
        purchases,
        api["purchases"]["edges"].as_array().unwrap().len()
    );
    assert!(
        entries
            .iter()
            .any(|a| a["action"] == "auth.sign_in.succeeded" && a["by"] == "YOU")
    );
    // Their notifications, this sign-in's among them.
    assert!(
        doc["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["kind"] == "SIGN_IN")
    );
    assert_eq!(doc["notificationsTurnedOff"], json!([]));

    // The operator's command writes the same document.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sequestra"))
        .args([
            "gdpr",
            "export",
            "--tenant",
            "acme",
            "--email",
            "beneficiary@acme.example",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SEQUESTRA_DATABASE_URL", app.database_url())
        .env("SEQUESTRA_DEV_SECRETS_FILE", "none")
        .output()
        .await
        .expect("run sequestra gdpr export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).expect("a JSON document");
    for field in [
        "tenant",
        "profile",
        "roles",
        "mfa",
        "escrows",
        "mandates",
        "payments",
        "auditEntries",
    ] {
        assert_eq!(cli[field], doc[field], "{field}");
    }
}
async fn erasure_waits_for_money_in_flight_and_keeps_the_books(app: TestApp) {
    let books = app.books();
    let t = app.tenant("acme").await;
    let admin = t.token(Role::Admin).to_owned();
    let sender = t.token(Role::Sender).to_owned();
    let provider = t.user(Role::Beneficiary).clone();
    crate::mfa::enrol(&app, &admin).await;
    crate::mfa::enrol(&app, &sender).await;
    let provider_gid = sequestra::ids::encode(sequestra::ids::Kind::User, provider.id);

    let erase = async |id: &str| {
        app.gql(
            Some(&admin),
            "mutation($i: EraseUserInput!) { eraseUser(input: $i) { userId } }",
            json!({ "i": { "userId": id } }),
        )
        .await
    };
    let refused = |r: &crate::harness::GqlResponse, what: &str| {
        assert_eq!(r.code(), Some("CONFLICT"), "{}", r.body);
        assert_eq!(
            r.body["errors"][0]["extensions"]["reason"],
            "FUNDS_IN_FLIGHT"
        );
        assert!(
            r.body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(what),
            "{}",
            r.body
        );
    };

    // Money held for the provider: not yet.
    let id = crate::escrow::funded_escrow(&app, &t, "120.00", "f-1").await;
    refused(&erase(&provider_gid).await, "is FUNDED");
    let own = app
        .gql(
            Some(&provider.token),
            "mutation($i: EraseMyAccountInput!) { eraseMyAccount(input: $i) { userId } }",
            json!({ "i": { "password": provider.password } }),
        )
        .await;
    refused(&own, "is FUNDED");

    // Released: the payment to them is still on its way.
    let r = app
        .gql(
            Some(&sender),
            "mutation($id: ID!, $k: String!) { releaseEscrow(input: { escrowId: $id, idempotencyKey: $k }) { payments { pspReference } } }",
            json!({ "id": id, "k": "r-1" }),
        )
        .await;
    let reference = r.ok()["releaseEscrow"]["payments"][0]["pspReference"]
        .as_str()
        .unwrap()
        .to_owned();
    refused(&erase(&provider_gid).await, "is SENT");

    // Settled: nothing moves any more.
    let body = crate::webhooks::event("evt_erase", "payout.settled", &reference);
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
    assert_eq!(
        erase(&provider_gid).await.ok()["eraseUser"]["userId"],
        provider_gid.as_str()
    );

    // Gone as a person: the token, the password and the address lead nowhere.
    let r = app
        .gql(Some(&provider.token), "{ viewer { id } }", json!({}))
        .await;
    assert_eq!(r.code(), Some("UNAUTHENTICATED"));
    let r = app
        .gql(
            None,
            "mutation($i: SignInInput!) { signIn(input: $i) { accessToken } }",
            json!({ "i": { "tenant": "acme", "email": provider.email, "password": provider.password } }),
        )
        .await;
    assert_eq!(r.code(), Some("UNAUTHENTICATED"));
    let row = user::Entity::find_by_id(provider.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.email,
        format!("erased+{}@erased.invalid", provider.id.simple())
    );
    assert!(!row.is_active && row.email_verified_at.is_none());
    let sessions = session::Entity::find()
        .filter(session::Column::UserId.eq(provider.id))
        .all(&app.db)
        .await
        .unwrap();
    assert!(!sessions.is_empty());
    assert!(
        sessions
            .iter()
            .all(|s| s.revoked_at.is_some() && s.ip.is_none() && s.user_agent.is_none())
    );
    let mails = notification::Entity::find()
        .filter(notification::Column::UserId.eq(provider.id))
        .all(&app.db)
        .await
        .unwrap();
    assert!(mails.is_empty(), "{mails:?}");

    // The money stays on record: the sender still sees the escrow and who was paid,
    // under the pseudonymous address.
    let r = app
        .gql(
            Some(&sender),
            "query($id: ID!) { escrow(id: $id) { status provider { userId email } payments { status amount { amount } } } }",
            json!({ "id": id }),
        )
        .await;
    let escrow = r.ok()["escrow"].clone();
    assert_eq!(escrow["status"], "RELEASED");
    assert_eq!(escrow["provider"]["userId"], provider_gid.as_str());
    assert_eq!(escrow["provider"]["email"], row.email.as_str());
    assert_eq!(
        escrow["payments"],
        json!([{ "status": "SETTLED", "amount": { "amount": "120.00" } }])
    );
    let actions = app.audit_actions(&t).await;
    assert!(actions.iter().any(|a| a == "user.erased"), "{actions:?}");

    // The last active ADMIN cannot be erased.
    let admin_gid = sequestra::ids::encode(sequestra::ids::Kind::User, t.user(Role::Admin).id);
    let last = erase(&admin_gid).await;
    assert_eq!(
        (last.code(), &last.body["errors"][0]["extensions"]["reason"]),
        (Some("CONFLICT"), &json!("LAST_ADMIN"))
    );
    // The ledger and the audit chain still verify.
    books.check().await;
}
