//! Conditional spending through HTTP: the catalog, mandates, every refusal code with
//! its alert, revocation, expiry by the job, payees, restricted transfers, tenancy,
//! and purchases racing on one mandate.

use chrono::{Duration, Utc};
use sequestra::auth::Role;
use serde_json::{Value, json};

use crate::escrow::user_gid;
use crate::harness::{GqlResponse, TestApp, TestTenant};
use crate::mfa::enrol;
use crate::on_both_backends;

on_both_backends!(
    catalog_mandates_and_every_refusal,
    mandates_expire_once_by_the_job,
    concurrent_purchases_never_overspend,
    payees_and_restricted_transfers,
    foreign_and_unrelated_mandates_are_not_found,
);

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn call(app: &TestApp, token: &str, query: &str, vars: Value) -> GqlResponse {
    app.gql(Some(token), query, vars).await
}

fn reason(r: &GqlResponse) -> &str {
    r.body["errors"][0]["extensions"]["reason"]
        .as_str()
        .unwrap_or("")
}

pub struct Catalog {
    pub groceries: String,
    pub pharmacy: String,
    pub fresh_mart: String,
    pub corner_shop: String,
    pub pill_box: String,
    pub casino: String,
}

const CATEGORY: &str = "mutation($c: String!, $l: String!) { createSpendCategory(input: { code: $c, label: $l }) { category { id code enabled } } }";
const MERCHANT: &str = "mutation($n: String!, $c: ID!, $x: Boolean) { createMerchant(input: { name: $n, categoryId: $c, certified: $x }) { merchant { id name certified enabled } } }";
const GRANT: &str = "mutation($i: GrantMandateInput!) { grantMandate(input: $i) { mandate { id status total { amount currency } spent { amount } remaining { amount } allowedCategoryIds allowedMerchantIds } } }";
const PURCHASE: &str = "mutation($m: ID!, $s: ID!, $a: Decimal!, $k: String!) { createPurchase(input: { mandateId: $m, merchantId: $s, amount: $a, idempotencyKey: $k }) { purchase { id amount { amount } mandate { status spent { amount } remaining { amount } } } } }";
const MANDATE: &str = "query($id: ID!) { mandate(id: $id) { id status spent { amount } remaining { amount } purchases { id amount { amount } } payees { id paid { amount } } } }";

pub async fn catalog(app: &TestApp, t: &TestTenant) -> Catalog {
    let admin = t.token(Role::Admin);
    let support = t.token(Role::Support);
    let cat = |token: &str, code: &str| {
        let token = token.to_owned();
        let code = code.to_owned();
        async move {
            let r = call(
                app,
                &token,
                CATEGORY,
                json!({ "c": code, "l": code.to_lowercase() }),
            )
            .await;
            r.ok()["createSpendCategory"]["category"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let groceries = cat(admin, "GROCERIES").await;
    let pharmacy = cat(support, "PHARMACY").await;
    let gambling = cat(admin, "GAMBLING").await;
    let shop = |name: &str, category: &str, certified: bool| {
        let (name, category) = (name.to_owned(), category.to_owned());
        let admin = admin.to_owned();
        async move {
            let r = call(
                app,
                &admin,
                MERCHANT,
                json!({ "n": name, "c": category, "x": certified }),
            )
            .await;
            r.ok()["createMerchant"]["merchant"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    Catalog {
        fresh_mart: shop("FreshMart", &groceries, true).await,
        corner_shop: shop("CornerShop", &groceries, false).await,
        pill_box: shop("PillBox", &pharmacy, false).await,
        casino: shop("Casino", &gambling, false).await,
        groceries,
        pharmacy,
    }
}

pub async fn grant(app: &TestApp, t: &TestTenant, input: Value) -> GqlResponse {
    let mut input = input;
    if input.get("beneficiaryId").is_none() {
        input["beneficiaryId"] = json!(user_gid(t.user(Role::Beneficiary).id));
    }
    if input.get("idempotencyKey").is_none() {
        input["idempotencyKey"] = json!(key());
    }
    if input.get("expiresAt").is_none() {
        input["expiresAt"] = json!((Utc::now() + Duration::days(30)).to_rfc3339());
    }
    call(app, t.token(Role::Sender), GRANT, json!({ "i": input })).await
}

pub async fn buy(
    app: &TestApp,
    token: &str,
    mandate: &str,
    shop: &str,
    amount: &str,
    key: &str,
) -> GqlResponse {
    call(
        app,
        token,
        PURCHASE,
        json!({ "m": mandate, "s": shop, "a": amount, "k": key }),
    )
    .await
}

async fn catalog_mandates_and_every_refusal(app: TestApp) {
    let t = app.tenant("acme").await;
    let c = catalog(&app, &t).await;
    let (sender, beneficiary) = (
        t.token(Role::Sender).to_owned(),
        t.token(Role::Beneficiary).to_owned(),
    );

    // The catalog is kept by ADMIN and SUPPORT only; names and codes are unique.
    let r = call(
        &app,
        &sender,
        CATEGORY,
        json!({ "c": "TRAVEL", "l": "travel" }),
    )
    .await;
    assert_eq!(r.code(), Some("FORBIDDEN"));
    let r = call(
        &app,
        t.token(Role::Admin),
        MERCHANT,
        json!({ "n": "FreshMart", "c": c.groceries }),
    )
    .await;
    assert_eq!(reason(&r), "ALREADY_EXISTS", "{}", r.body);
    let r = call(
        &app,
        t.token(Role::Admin),
        CATEGORY,
        json!({ "c": "groceries", "l": "again" }),
    )
    .await;
    assert_eq!(
        reason(&r),
        "ALREADY_EXISTS",
        "codes are upper-cased, then unique"
    );

    // A mandate needs at least one category or merchant.
    let r = grant(&app, &t, json!({ "total": "50.00", "currency": "EUR" })).await;
    assert_eq!(
        r.body["errors"][0]["extensions"]["field"],
        "allowedCategoryIds"
    );
    let r = grant(
        &app,
        &t,
        json!({
            "total": "50.00", "currency": "EUR", "allowedCategoryIds": [c.groceries],
            "allowedMerchantIds": [c.pill_box], "perPurchaseLimit": "30.00", "dailyLimit": "45.50",
        }),
    )
    .await;
    let m = r.ok()["grantMandate"]["mandate"].clone();
    assert_eq!(m["status"], "ACTIVE");
    assert_eq!(m["remaining"]["amount"], "50.00");
    let id = m["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("mnd_"));
    // One ACTIVE mandate per sender, beneficiary and currency.
    let dup = grant(
        &app,
        &t,
        json!({ "total": "5.00", "currency": "EUR", "allowedCategoryIds": [c.pharmacy] }),
    )
    .await;
    assert_eq!(reason(&dup), "MANDATE_EXISTS", "{}", dup.body);

    // Only the beneficiary spends.
    assert_eq!(
        buy(&app, &sender, &id, &c.fresh_mart, "1.00", &key())
            .await
            .code(),
        Some("FORBIDDEN")
    );

    let k = key();
    let r = buy(&app, &beneficiary, &id, &c.fresh_mart, "20.00", &k).await;
    let first = r.ok()["createPurchase"]["purchase"].clone();
    assert_eq!(first["mandate"]["spent"]["amount"], "20.00");
    // A retry with the same key charges nothing more; another input under it is refused.
    let again = buy(&app, &beneficiary, &id, &c.fresh_mart, "20.00", &k).await;
    assert_eq!(again.ok()["createPurchase"]["purchase"]["id"], first["id"]);
    assert_eq!(
        again.ok()["createPurchase"]["purchase"]["mandate"]["spent"]["amount"],
        "20.00"
    );
    assert_eq!(
        reason(&buy(&app, &beneficiary, &id, &c.fresh_mart, "21.00", &k).await),
        "IDEMPOTENCY_KEY_REUSED"
    );

    let refusals = [
        (c.casino.clone(), "5.00", "MERCHANT_NOT_ALLOWED"),
        (c.fresh_mart.clone(), "31.00", "LIMIT_EXCEEDED"),
        (c.pill_box.clone(), "26.00", "LIMIT_EXCEEDED"),
    ];
    for (shop, amount, expected) in &refusals {
        let r = buy(&app, &beneficiary, &id, shop, amount, &key()).await;
        assert_eq!(r.code(), Some("CONFLICT"), "{}", r.body);
        assert_eq!(reason(&r), *expected, "{amount}: {}", r.body);
    }
    let r = buy(&app, &beneficiary, &id, &c.pill_box, "25.00", &key()).await;
    assert_eq!(
        r.ok()["createPurchase"]["purchase"]["mandate"]["spent"]["amount"],
        "45.00"
    );
    let r = buy(&app, &beneficiary, &id, &c.fresh_mart, "6.00", &key()).await;
    assert_eq!(reason(&r), "MANDATE_EXHAUSTED", "{}", r.body);

    // Disabling a merchant or a category closes it.
    call(
        &app,
        t.token(Role::Support),
        "mutation($id: ID!) { updateMerchant(input: { id: $id, enabled: false }) { merchant { enabled } } }",
        json!({ "id": c.fresh_mart }),
    )
    .await
    .ok();
    assert_eq!(
        reason(&buy(&app, &beneficiary, &id, &c.fresh_mart, "1.00", &key()).await),
        "MERCHANT_NOT_ALLOWED"
    );
    assert!(
        buy(&app, &beneficiary, &id, &c.corner_shop, "0.50", &key())
            .await
            .code()
            .is_none()
    );
    call(
        &app,
        t.token(Role::Admin),
        "mutation($id: ID!) { setSpendCategoryEnabled(input: { id: $id, enabled: false }) { category { enabled } } }",
        json!({ "id": c.groceries }),
    )
    .await
    .ok();
    assert_eq!(
        reason(&buy(&app, &beneficiary, &id, &c.corner_shop, "1.00", &key()).await),
        "MERCHANT_NOT_ALLOWED"
    );

    // Refusals left the budget alone: 20 + 25 + 0.50.
    let m = call(&app, &sender, MANDATE, json!({ "id": id })).await;
    let m = m.ok()["mandate"].clone();
    assert_eq!(m["spent"]["amount"], "45.50");
    assert_eq!(m["purchases"].as_array().unwrap().len(), 3);

    // Revocation: the rest is released, nothing more is spent, a new mandate may follow.
    assert_eq!(
        call(
            &app,
            &beneficiary,
            "mutation($id: ID!) { revokeMandate(input: { mandateId: $id }) { mandate { status } } }",
            json!({ "id": id })
        )
        .await
        .code(),
        Some("FORBIDDEN")
    );
    let r = call(&app, &sender, "mutation($id: ID!) { revokeMandate(input: { mandateId: $id }) { mandate { status remaining { amount } endedAt } } }", json!({ "id": id })).await;
    assert_eq!(r.ok()["revokeMandate"]["mandate"]["status"], "REVOKED");
    assert_eq!(
        r.ok()["revokeMandate"]["mandate"]["remaining"]["amount"],
        "0.00"
    );
    assert_eq!(
        reason(&buy(&app, &beneficiary, &id, &c.pill_box, "1.00", &key()).await),
        "MANDATE_REVOKED"
    );
    let r = call(
        &app,
        &sender,
        "mutation($id: ID!) { revokeMandate(input: { mandateId: $id }) { mandate { status } } }",
        json!({ "id": id }),
    )
    .await;
    assert_eq!(r.body["errors"][0]["extensions"]["state"], "REVOKED");
    grant(
        &app,
        &t,
        json!({ "total": "5.00", "currency": "EUR", "allowedCategoryIds": [c.pharmacy] }),
    )
    .await
    .ok();

    // Certified merchants only; spending it all consumes the mandate.
    call(
        &app,
        t.token(Role::Admin),
        "mutation($id: ID!) { setSpendCategoryEnabled(input: { id: $id, enabled: true }) { category { enabled } } }",
        json!({ "id": c.groceries }),
    )
    .await
    .ok();
    call(
        &app,
        t.token(Role::Admin),
        "mutation($id: ID!) { updateMerchant(input: { id: $id, enabled: true }) { merchant { enabled } } }",
        json!({ "id": c.fresh_mart }),
    )
    .await
    .ok();
    let r = grant(&app, &t, json!({ "total": "10.00", "currency": "USD", "allowedCategoryIds": [c.groceries], "certifiedMerchantsOnly": true })).await;
    let usd = r.ok()["grantMandate"]["mandate"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        reason(&buy(&app, &beneficiary, &usd, &c.corner_shop, "1.00", &key()).await),
        "MERCHANT_NOT_ALLOWED"
    );
    assert_eq!(
        buy(&app, &beneficiary, &usd, &c.fresh_mart, "10.001", &key())
            .await
            .code(),
        Some("BAD_USER_INPUT")
    );
    let r = buy(&app, &beneficiary, &usd, &c.fresh_mart, "10.00", &key()).await;
    assert_eq!(
        r.ok()["createPurchase"]["purchase"]["mandate"]["status"],
        "CONSUMED"
    );
    assert_eq!(
        reason(&buy(&app, &beneficiary, &usd, &c.fresh_mart, "0.01", &key()).await),
        "MANDATE_EXHAUSTED"
    );

    // Every refusal alerted the sender; the beneficiary sees none; support sees all.
    let alerts = |token: String, filter: Value| {
        let app = &app;
        async move {
            let r = call(app, &token, "query($f: AlertFilter) { alerts(filter: $f, first: 100) { edges { node { kind senderId mandateId message details } } } }", json!({ "f": filter })).await;
            r.ok()["alerts"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"].clone())
                .collect::<Vec<Value>>()
        }
    };
    let mine = alerts(sender.clone(), Value::Null).await;
    let kinds: Vec<&str> = mine.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    for expected in [
        "MERCHANT_NOT_ALLOWED",
        "LIMIT_EXCEEDED",
        "MANDATE_EXHAUSTED",
        "MANDATE_REVOKED",
    ] {
        assert!(kinds.contains(&expected), "{expected} in {kinds:?}");
    }
    assert!(
        mine.iter()
            .all(|a| a["senderId"] == json!(user_gid(t.user(Role::Sender).id)))
    );
    assert!(
        mine[0]["details"]["merchantId"]
            .as_str()
            .unwrap()
            .starts_with("mer_")
    );
    assert!(alerts(beneficiary.clone(), Value::Null).await.is_empty());
    assert_eq!(
        alerts(t.token(Role::Support).to_owned(), Value::Null)
            .await
            .len(),
        mine.len()
    );
    let exhausted = alerts(sender.clone(), json!({ "kind": "MANDATE_EXHAUSTED" })).await;
    assert_eq!(exhausted.len(), 2);

    // Both sides list the mandates on their side.
    let r = call(
        &app,
        &beneficiary,
        "{ mandates(filter: { role: BENEFICIARY }) { edges { node { id status } } } }",
        json!({}),
    )
    .await;
    assert_eq!(r.ok()["mandates"]["edges"].as_array().unwrap().len(), 3);
    let r = call(
        &app,
        &beneficiary,
        "{ mandates(filter: { role: SENDER }) { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(r.ok()["mandates"]["edges"], json!([]));
    let r = call(
        &app,
        &sender,
        "{ mandates(filter: { status: ACTIVE }) { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(r.ok()["mandates"]["edges"].as_array().unwrap().len(), 1);
    let r = call(&app, &sender, "{ purchases(first: 50) { edges { node { id } } } merchants { edges { node { name } } } spendCategories { edges { node { code } } } }", json!({})).await;
    assert_eq!(r.ok()["purchases"]["edges"].as_array().unwrap().len(), 4);
    assert_eq!(r.ok()["merchants"]["edges"].as_array().unwrap().len(), 4);
    let audit = app.audit_actions(&t).await;
    for action in [
        "mandate.granted",
        "purchase.created",
        "mandate.revoked",
        "mandate.consumed",
        "spend.merchant_updated",
    ] {
        assert!(audit.iter().any(|a| a == action), "{action} audited");
    }
}

async fn mandates_expire_once_by_the_job(app: TestApp) {
    let t = app.tenant("acme").await;
    let c = catalog(&app, &t).await;
    let beneficiary = t.token(Role::Beneficiary).to_owned();
    let r = grant(
        &app,
        &t,
        json!({
            "total": "50.00", "currency": "EUR", "allowedCategoryIds": [c.groceries],
            "expiresAt": (Utc::now() + Duration::seconds(2)).to_rfc3339(),
        }),
    )
    .await;
    let id = r.ok()["grantMandate"]["mandate"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    buy(&app, &beneficiary, &id, &c.fresh_mart, "5.00", &key())
        .await
        .ok();
    let peer_a = app.peer(&[("SEQUESTRA_JOBS_INTERVAL_MS", "50")]).await;
    let peer_b = app.peer(&[("SEQUESTRA_JOBS_INTERVAL_MS", "50")]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let m = call(&app, t.token(Role::Sender), MANDATE, json!({ "id": id })).await;
        if m.ok()["mandate"]["status"] == "EXPIRED" {
            assert_eq!(m.ok()["mandate"]["remaining"]["amount"], "0.00");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job did not expire it: {}",
            m.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let r = buy(&app, &beneficiary, &id, &c.fresh_mart, "1.00", &key()).await;
    assert_eq!(reason(&r), "MANDATE_EXPIRED");
    let expired = app
        .audit_actions(&t)
        .await
        .into_iter()
        .filter(|a| a == "mandate.expired")
        .count();
    assert_eq!(
        expired, 1,
        "exactly once, with two processes running the job"
    );
    peer_a.stop().await;
    peer_b.stop().await;
}

async fn concurrent_purchases_never_overspend(app: TestApp) {
    let t = app.tenant("acme").await;
    let c = catalog(&app, &t).await;
    let beneficiary = t.token(Role::Beneficiary).to_owned();
    let r = grant(
        &app,
        &t,
        json!({ "total": "100.00", "currency": "EUR", "allowedCategoryIds": [c.groceries] }),
    )
    .await;
    let id = r.ok()["grantMandate"]["mandate"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let app = std::sync::Arc::new(app);
    // 200 purchases adding up to 300.00 (three times the budget), 40 of them sent
    // twice with the same key.
    let amounts = ["0.50", "1.00", "2.00", "2.50"];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let k = format!("purchase-{i}");
        let sends = if i % 5 == 0 { 2 } else { 1 };
        for _ in 0..sends {
            let (app, token, id, shop, k) = (
                app.clone(),
                beneficiary.clone(),
                id.clone(),
                c.fresh_mart.clone(),
                k.clone(),
            );
            let amount = amounts[i % 4];
            tasks.push(tokio::spawn(async move {
                (k.clone(), buy(&app, &token, &id, &shop, amount, &k).await)
            }));
        }
    }
    let mut accepted: std::collections::HashMap<String, (String, rust_decimal::Decimal)> =
        Default::default();
    for task in tasks {
        let (k, r) = task.await.unwrap();
        match r.code() {
            None => {
                let p = &r.ok()["createPurchase"]["purchase"];
                let entry = (
                    p["id"].as_str().unwrap().to_owned(),
                    p["amount"]["amount"].as_str().unwrap().parse().unwrap(),
                );
                if let Some(previous) = accepted.insert(k, entry.clone()) {
                    assert_eq!(previous.0, entry.0, "one key, one purchase");
                }
            }
            Some("CONFLICT") => assert!(
                matches!(reason(&r), "MANDATE_EXHAUSTED" | "MANDATE_EXPIRED"),
                "{}",
                r.body
            ),
            other => panic!("unexpected {other:?}: {}", r.body),
        }
    }
    let total: rust_decimal::Decimal = accepted.values().map(|(_, a)| *a).sum();
    let m = call(&app, t.token(Role::Sender), MANDATE, json!({ "id": id })).await;
    let m = m.ok()["mandate"].clone();
    let spent: rust_decimal::Decimal = m["spent"]["amount"].as_str().unwrap().parse().unwrap();
    assert!(
        spent <= rust_decimal::Decimal::new(10000, 2),
        "never above the total: {spent}"
    );
    assert_eq!(total, spent, "accepted purchases add up exactly to spent");
    assert_eq!(
        m["purchases"].as_array().unwrap().len(),
        accepted.len(),
        "no double charge"
    );
    assert!(
        spent >= rust_decimal::Decimal::new(9750, 2),
        "the budget was (nearly) used up: {spent}"
    );
}

async fn payees_and_restricted_transfers(app: TestApp) {
    let t = app.tenant("acme").await;
    let c = catalog(&app, &t).await;
    let (sender, beneficiary) = (
        t.token(Role::Sender).to_owned(),
        t.token(Role::Beneficiary).to_owned(),
    );
    let r = grant(
        &app,
        &t,
        json!({ "total": "100.00", "currency": "EUR", "allowedMerchantIds": [c.pill_box] }),
    )
    .await;
    let id = r.ok()["grantMandate"]["mandate"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    const ADD: &str = "mutation($m: ID!) { addPayee(input: { mandateId: $m, reference: \"school-fees-42\", name: \"City School\", dailyLimit: \"20.00\", totalLimit: \"30.00\" }) { payee { id reference } } }";
    assert_eq!(
        call(&app, &beneficiary, ADD, json!({ "m": id }))
            .await
            .code(),
        Some("FORBIDDEN")
    );
    let payee = call(&app, &sender, ADD, json!({ "m": id })).await.ok()["addPayee"]["payee"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    const PAY: &str = "mutation($p: ID!, $a: Decimal!, $k: String!) { payPayee(input: { payeeId: $p, amount: $a, idempotencyKey: $k }) { payout { id amount { amount } payment { status purpose payeeReference payeeId } } } }";
    assert_eq!(
        call(
            &app,
            &beneficiary,
            PAY,
            json!({ "p": payee, "a": "1.00", "k": key() })
        )
        .await
        .code(),
        Some("MFA_REQUIRED")
    );
    enrol(&app, &beneficiary).await;
    let r = call(
        &app,
        &beneficiary,
        PAY,
        json!({ "p": payee, "a": "15.00", "k": key() }),
    )
    .await;
    let paid = r.ok()["payPayee"]["payout"].clone();
    assert_eq!(paid["payment"]["status"], "SENT");
    assert_eq!(paid["payment"]["purpose"], "SPEND_PAYOUT");
    assert_eq!(paid["payment"]["payeeReference"], "school-fees-42");
    assert_eq!(paid["payment"]["payeeId"], Value::Null);
    let r = call(
        &app,
        &beneficiary,
        PAY,
        json!({ "p": payee, "a": "10.00", "k": key() }),
    )
    .await;
    assert_eq!(
        reason(&r),
        "LIMIT_EXCEEDED",
        "the payee's daily limit: {}",
        r.body
    );
    let m = call(&app, &sender, MANDATE, json!({ "id": id })).await;
    assert_eq!(
        m.ok()["mandate"]["spent"]["amount"],
        "15.00",
        "a refused payout takes nothing"
    );
    assert_eq!(m.ok()["mandate"]["payees"][0]["paid"]["amount"], "15.00");

    // Transfers: only to allowlisted or certified recipients.
    const TRANSFER: &str = "mutation($r: ID!, $a: Decimal!, $k: String!) { createTransfer(input: { recipientId: $r, amount: $a, currency: \"EUR\", idempotencyKey: $k }) { transfer { id amount { amount } payment { status purpose payeeId } } } }";
    let to_beneficiary =
        json!({ "r": user_gid(t.user(Role::Beneficiary).id), "a": "12.00", "k": key() });
    assert_eq!(
        call(&app, &sender, TRANSFER, to_beneficiary.clone())
            .await
            .code(),
        Some("MFA_REQUIRED")
    );
    enrol(&app, &sender).await;
    let r = call(&app, &sender, TRANSFER, to_beneficiary.clone()).await;
    assert_eq!(reason(&r), "TRANSFER_NOT_ALLOWED", "{}", r.body);
    call(
        &app,
        &sender,
        "mutation($r: ID!) { allowTransferRecipient(input: { recipientId: $r }) { recipient { userId } } }",
        json!({ "r": user_gid(t.user(Role::Beneficiary).id) }),
    )
    .await
    .ok();
    let r = call(
        &app,
        &sender,
        TRANSFER,
        json!({ "r": user_gid(t.user(Role::Beneficiary).id), "a": "12.00", "k": key() }),
    )
    .await;
    assert_eq!(
        r.ok()["createTransfer"]["transfer"]["payment"]["status"],
        "SENT"
    );
    assert_eq!(
        r.ok()["createTransfer"]["transfer"]["payment"]["purpose"],
        "TRANSFER"
    );
    let support = json!({ "r": user_gid(t.user(Role::Support).id), "a": "3.00", "k": key() });
    assert_eq!(
        reason(&call(&app, &sender, TRANSFER, support.clone()).await),
        "TRANSFER_NOT_ALLOWED"
    );
    crate::mfa::enrol(&app, t.token(Role::Admin)).await;
    call(
        &app,
        t.token(Role::Admin),
        "mutation($u: ID!) { certifyTransferRecipient(input: { userId: $u }) { recipient { userId } } }",
        json!({ "u": user_gid(t.user(Role::Support).id) }),
    )
    .await
    .ok();
    let support = json!({ "r": user_gid(t.user(Role::Support).id), "a": "3.00", "k": key() });
    assert!(
        call(&app, &sender, TRANSFER, support)
            .await
            .code()
            .is_none()
    );
    let r = call(&app, &sender, "{ transfers { edges { node { amount { amount } } } } alerts(filter: { kind: \"TRANSFER_NOT_ALLOWED\" }) { edges { node { kind details } } } }", json!({})).await;
    assert_eq!(r.ok()["transfers"]["edges"].as_array().unwrap().len(), 2);
    assert_eq!(
        r.ok()["alerts"]["edges"].as_array().unwrap().len(),
        2,
        "every refused attempt alerts"
    );
    let r = call(
        &app,
        &beneficiary,
        "{ transfers { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r.ok()["transfers"]["edges"].as_array().unwrap().len(),
        1,
        "the recipient sees what it received"
    );

    // A payee on an escrow, paid by the escrow's sender from what it holds.
    let e =
        crate::escrow::create_escrow(&app, &t, "50.00", json!([]), None, Duration::days(7)).await;
    let eid = e["id"].as_str().unwrap().to_owned();
    crate::escrow::fund(&app, &sender, &eid, "50.00", &key())
        .await
        .ok();
    let r = call(&app, &sender, "mutation($e: ID!) { addPayee(input: { escrowId: $e, reference: \"supplier-7\", name: \"Tiles Ltd\", totalLimit: \"30.00\" }) { payee { id escrowId mandateId } } }", json!({ "e": eid })).await;
    let supplier = r.ok()["addPayee"]["payee"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(r.ok()["addPayee"]["payee"]["escrowId"], json!(eid));
    let r = call(
        &app,
        &beneficiary,
        PAY,
        json!({ "p": supplier, "a": "5.00", "k": key() }),
    )
    .await;
    assert_eq!(
        r.code(),
        Some("FORBIDDEN"),
        "only the escrow's sender pays its payees"
    );
    let r = call(
        &app,
        &sender,
        PAY,
        json!({ "p": supplier, "a": "20.00", "k": key() }),
    )
    .await;
    assert_eq!(r.ok()["payPayee"]["payout"]["payment"]["status"], "SENT");
    let r = call(
        &app,
        &sender,
        PAY,
        json!({ "p": supplier, "a": "20.00", "k": key() }),
    )
    .await;
    assert_eq!(reason(&r), "LIMIT_EXCEEDED", "{}", r.body);
    let e = crate::escrow::escrow(&app, &sender, &eid).await;
    assert_eq!(e["released"]["amount"], "20.00");
    assert_eq!(e["held"]["amount"], "30.00");
    assert!(
        e["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|ev| ev["kind"] == "ESCROW_PAYEE_PAID")
    );
}

async fn foreign_and_unrelated_mandates_are_not_found(app: TestApp) {
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let c = catalog(&app, &acme).await;
    let outsider = app
        .add_user(&acme, "other@acme.test", &[Role::Sender, Role::Beneficiary])
        .await;
    let r = grant(
        &app,
        &acme,
        json!({ "total": "40.00", "currency": "EUR", "allowedCategoryIds": [c.groceries] }),
    )
    .await;
    let id = r.ok()["grantMandate"]["mandate"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    buy(
        &app,
        acme.token(Role::Beneficiary),
        &id,
        &c.fresh_mart,
        "5.00",
        &key(),
    )
    .await
    .ok();
    let payee = call(&app, acme.token(Role::Sender), "mutation($m: ID!) { addPayee(input: { mandateId: $m, reference: \"p-1\", name: \"P\" }) { payee { id } } }", json!({ "m": id })).await;
    let payee = payee.ok()["addPayee"]["payee"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let strangers = [
        ("globex sender", globex.token(Role::Sender).to_owned()),
        (
            "globex beneficiary",
            globex.token(Role::Beneficiary).to_owned(),
        ),
        ("acme non-party", outsider.token.clone()),
    ];
    for (who, token) in &strangers {
        let attempts = [
            ("mandate", call(&app, token, "query($id: ID!) { mandate(id: $id) { id } }", json!({ "id": id })).await),
            ("purchases", call(&app, token, "query($id: ID!) { purchases(mandateId: $id) { edges { node { id } } } }", json!({ "id": id })).await),
            ("purchase", buy(&app, token, &id, &c.fresh_mart, "1.00", &key()).await),
            ("revoke", call(&app, token, "mutation($id: ID!) { revokeMandate(input: { mandateId: $id }) { mandate { id } } }", json!({ "id": id })).await),
            ("add payee", call(&app, token, "mutation($m: ID!) { addPayee(input: { mandateId: $m, reference: \"x\", name: \"x\" }) { payee { id } } }", json!({ "m": id })).await),
        ];
        for (what, r) in attempts {
            assert_eq!(r.code(), Some("NOT_FOUND"), "{who} / {what}: {}", r.body);
        }
        let r = call(
            &app,
            token,
            "{ mandates { edges { node { id } } } purchases { edges { node { id } } } }",
            json!({}),
        )
        .await;
        assert_eq!(r.ok()["mandates"]["edges"], json!([]), "{who}");
        assert_eq!(r.ok()["purchases"]["edges"], json!([]), "{who}");
    }
    // An admin of another tenant reads nothing either.
    let admin = globex.token(Role::Admin);
    let r = call(
        &app,
        admin,
        "query($id: ID!) { mandate(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
    assert_eq!(r.code(), Some("NOT_FOUND"));
    let r = call(&app, admin, "{ mandates { edges { node { id } } } purchases { edges { node { id } } } alerts { edges { node { id } } } }", json!({})).await;
    assert_eq!(r.ok()["mandates"]["edges"], json!([]));
    assert_eq!(r.ok()["purchases"]["edges"], json!([]));
    // Naming another tenant's user, category or merchant: NOT_FOUND too.
    let foreign_user = user_gid(globex.user(Role::Beneficiary).id);
    let r = grant(&app, &acme, json!({ "beneficiaryId": foreign_user, "total": "1.00", "currency": "CHF", "allowedCategoryIds": [c.groceries] })).await;
    assert_eq!(r.code(), Some("NOT_FOUND"), "{}", r.body);
    let g_cat = call(
        &app,
        globex.token(Role::Admin),
        CATEGORY,
        json!({ "c": "FOREIGN", "l": "foreign" }),
    )
    .await;
    let g_cat = g_cat.ok()["createSpendCategory"]["category"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = grant(
        &app,
        &acme,
        json!({ "total": "1.00", "currency": "CHF", "allowedCategoryIds": [g_cat] }),
    )
    .await;
    assert_eq!(r.code(), Some("NOT_FOUND"), "{}", r.body);
    let r = call(
        &app,
        acme.token(Role::Admin),
        MERCHANT,
        json!({ "n": "Elsewhere", "c": g_cat }),
    )
    .await;
    assert_eq!(r.code(), Some("NOT_FOUND"), "{}", r.body);
    let acme_sender = acme.token(Role::Sender).to_owned();
    enrol(&app, &acme_sender).await;
    let r = call(&app, &acme_sender, "mutation($r: ID!) { createTransfer(input: { recipientId: $r, amount: \"1.00\", currency: \"EUR\", idempotencyKey: \"t-1\" }) { transfer { id } } }", json!({ "r": foreign_user })).await;
    assert_eq!(r.code(), Some("NOT_FOUND"), "{}", r.body);
    let r = call(
        &app,
        &acme_sender,
        "mutation($r: ID!) { allowTransferRecipient(input: { recipientId: $r }) { recipient { userId } } }",
        json!({ "r": foreign_user }),
    )
    .await;
    assert_eq!(r.code(), Some("NOT_FOUND"), "{}", r.body);
    // A foreign merchant is as missing as any other id.
    let g = catalog(&app, &globex).await;
    let r = buy(
        &app,
        acme.token(Role::Beneficiary),
        &id,
        &g.fresh_mart,
        "1.00",
        &key(),
    )
    .await;
    assert_eq!(r.code(), Some("NOT_FOUND"), "{}", r.body);
    // Payouts to another tenant's payee: NOT_FOUND (after the step-up).
    let g_benef = globex.token(Role::Beneficiary).to_owned();
    enrol(&app, &g_benef).await;
    let r = call(&app, &g_benef, "mutation($p: ID!) { payPayee(input: { payeeId: $p, amount: \"1.00\", idempotencyKey: \"k-1\" }) { payout { id } } }", json!({ "p": payee })).await;
    assert_eq!(r.code(), Some("NOT_FOUND"), "{}", r.body);
}
