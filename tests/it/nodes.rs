//! The graph a frontend walks: every object with a global id is a `Node`, resolved
//! by `node(id:)` and `nodes(ids:)` for whoever may read it, NOT_FOUND for anyone
//! else. The types are taken from the schema, so a new `Node` type without an object
//! here fails the test.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Duration;
use sequestra::auth::Role;
use serde_json::{Value, json};

use crate::escrow::{create_escrow, fund, user_gid};
use crate::harness::{TestApp, TestTenant};
use crate::on_both_backends;

on_both_backends!(
    every_node_type_resolves_for_who_may_read_it,
    connections_page_either_way_and_count_when_asked,
    nested_lists_that_grow_page_as_connections,
);

const NODE: &str = "query($id: ID!) { node(id: $id) { __typename id } }";

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Every type the schema says implements `Node`.
fn node_types() -> BTreeSet<String> {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
    let sdl = sequestra::graphql::sdl();
    let doc = async_graphql::parser::parse_schema(&sdl).expect("the SDL parses");
    let mut types = BTreeSet::new();
    for def in &doc.definitions {
        if let TypeSystemDefinition::Type(ty) = def
            && let TypeKind::Object(o) = &ty.node.kind
            && o.implements.iter().any(|i| i.node == "Node")
        {
            types.insert(ty.node.name.node.to_string());
        }
    }
    types
}

/// Every object type with an `id: ID!` implements `Node` (so none is left out of
/// `node(id:)`), and the test below has an object of each.
#[test]
fn every_object_with_a_global_id_is_a_node() {
    use async_graphql::parser::types::{BaseType, TypeKind, TypeSystemDefinition};
    let sdl = sequestra::graphql::sdl();
    let doc = async_graphql::parser::parse_schema(&sdl).expect("the SDL parses");
    let nodes = node_types();
    for def in &doc.definitions {
        if let TypeSystemDefinition::Type(ty) = def
            && let TypeKind::Object(o) = &ty.node.kind
        {
            let has_id = o.fields.iter().any(|f| {
                f.node.name.node == "id"
                    && !f.node.ty.node.nullable
                    && matches!(&f.node.ty.node.base, BaseType::Named(n) if n == "ID")
            });
            let name = ty.node.name.node.as_str();
            assert_eq!(
                has_id,
                nodes.contains(name),
                "{name}: an object with a global id must implement Node (and only those)"
            );
        }
    }
}

/// One object of every `Node` type: (typename, id, a token that may read it).
async fn one_of_each(app: &TestApp, t: &TestTenant) -> BTreeMap<String, (String, String)> {
    let sender = t.token(Role::Sender).to_owned();
    let beneficiary = t.token(Role::Beneficiary).to_owned();
    let admin = t.token(Role::Admin).to_owned();
    let mut found: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut put = |ty: &str, id: &Value, token: &str| {
        let id = id.as_str().unwrap_or_else(|| panic!("{ty} id: {id}"));
        found.insert(ty.to_owned(), (id.to_owned(), token.to_owned()));
    };

    // An escrow funded in deposits, released (payments, ledger entries, events).
    let escrow = crate::books::money_moves(app, t).await;
    let r = app
        .gql(
            Some(&sender),
            "query($id: ID!) { viewer { id tenant { id } } escrow(id: $id) { id senderId \
             milestones { id } deposits { id } payments { id } events { id } \
             ledgerEntries { id } } mySessions { id } }",
            json!({ "id": escrow }),
        )
        .await;
    let d = r.ok();
    put("User", &d["viewer"]["id"], &sender);
    put("Tenant", &d["viewer"]["tenant"]["id"], &sender);
    put("Session", &d["mySessions"][0]["id"], &sender);
    let e = &d["escrow"];
    put("Escrow", &e["id"], &sender);
    assert_eq!(
        e["senderId"], d["viewer"]["id"],
        "the escrow's sender is the viewer"
    );
    put("Milestone", &e["milestones"][0]["id"], &sender);
    put("Deposit", &e["deposits"][0]["id"], &sender);
    put("Payment", &e["payments"][0]["id"], &sender);
    put("EscrowEvent", &e["events"][0]["id"], &sender);
    put("LedgerEntry", &e["ledgerEntries"][0]["id"], &sender);

    // A proof on a second, funded escrow.
    let second = create_escrow(
        app,
        t,
        "10.00",
        json!([{ "title": "tiles", "amount": "10.00" }]),
        None,
        Duration::days(7),
    )
    .await;
    let second_id = second["id"].as_str().unwrap();
    fund(app, &sender, second_id, "10.00", &key()).await.ok();
    let proof = app
        .gql_upload(
            &beneficiary,
            "mutation($m: ID!, $file: Upload) { submitProof(input: { milestoneId: $m, file: $file }) { proof { id } } }",
            json!({ "m": second["milestones"][0]["id"] }),
            "file",
            "plans.pdf",
            b"%PDF-1.7\n% proof\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n".to_vec(),
        )
        .await;
    put(
        "Proof",
        &proof.ok()["submitProof"]["proof"]["id"],
        &beneficiary,
    );

    // Spending: the catalog, a mandate with a purchase, a refusal (an alert), a payee
    // and a payout; a transfer.
    let c = crate::spend::catalog(app, t).await;
    put("SpendCategory", &json!(c.groceries), &beneficiary);
    put("Merchant", &json!(c.fresh_mart), &beneficiary);
    let m = crate::spend::grant(
        app,
        t,
        json!({ "total": "100.00", "currency": "EUR", "allowedMerchantIds": [c.fresh_mart] }),
    )
    .await;
    let mandate = m.ok()["grantMandate"]["mandate"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    put("Mandate", &json!(mandate), &beneficiary);
    let bought =
        crate::spend::buy(app, &beneficiary, &mandate, &c.fresh_mart, "5.00", &key()).await;
    put(
        "Purchase",
        &bought.ok()["createPurchase"]["purchase"]["id"],
        &beneficiary,
    );
    crate::spend::buy(app, &beneficiary, &mandate, &c.casino, "5.00", &key()).await;
    let alerts = app
        .gql(
            Some(&sender),
            "{ alerts { edges { node { id } } } }",
            json!({}),
        )
        .await;
    put(
        "Alert",
        &alerts.ok()["alerts"]["edges"][0]["node"]["id"],
        &sender,
    );
    let payee = app
        .gql(
            Some(&sender),
            "mutation($m: ID!) { addPayee(input: { mandateId: $m, reference: \"school-42\", name: \"City School\" }) { payee { id } } }",
            json!({ "m": mandate }),
        )
        .await;
    let payee = payee.ok()["addPayee"]["payee"]["id"].clone();
    put("Payee", &payee, &beneficiary);
    crate::mfa::enrol(app, &beneficiary).await;
    let payout = app
        .gql(
            Some(&beneficiary),
            "mutation($p: ID!, $k: String!) { payPayee(input: { payeeId: $p, amount: \"3.00\", idempotencyKey: $k }) { payout { id } } }",
            json!({ "p": payee, "k": key() }),
        )
        .await;
    put(
        "Payout",
        &payout.ok()["payPayee"]["payout"]["id"],
        &beneficiary,
    );
    app.gql(
        Some(&sender),
        "mutation($r: ID!) { allowTransferRecipient(input: { recipientId: $r }) { recipient { userId } } }",
        json!({ "r": user_gid(t.user(Role::Beneficiary).id) }),
    )
    .await
    .ok();
    let transfer = app
        .gql(
            Some(&sender),
            "mutation($r: ID!, $k: String!) { createTransfer(input: { recipientId: $r, amount: \"2.00\", currency: \"EUR\", idempotencyKey: $k }) { transfer { id } } }",
            json!({ "r": user_gid(t.user(Role::Beneficiary).id), "k": key() }),
        )
        .await;
    put(
        "Transfer",
        &transfer.ok()["createTransfer"]["transfer"]["id"],
        &beneficiary,
    );

    // An API key, read by the admin who manages keys.
    crate::mfa::enrol(app, &admin).await;
    app.gql(
        Some(&admin),
        "mutation { createApiKey(input: { name: \"integration\", scopes: [ESCROW_READ] }) { key } }",
        json!({}),
    )
    .await
    .ok();
    let keys = app
        .gql(
            Some(&admin),
            "{ apiKeys { edges { node { id } } } }",
            json!({}),
        )
        .await;
    put(
        "ApiKey",
        &keys.ok()["apiKeys"]["edges"][0]["node"]["id"],
        &admin,
    );
    found
}

async fn node(app: &TestApp, token: &str, id: &str) -> crate::harness::GqlResponse {
    app.gql(Some(token), NODE, json!({ "id": id })).await
}

async fn every_node_type_resolves_for_who_may_read_it(app: TestApp) {
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let objects = one_of_each(&app, &acme).await;
    let types: BTreeSet<String> = objects.keys().cloned().collect();
    assert_eq!(types, node_types(), "an object of every Node type");

    // Each resolves, as itself, for a reader it has.
    for (ty, (id, token)) in &objects {
        let r = node(&app, token, id).await;
        assert_eq!(
            r.ok()["node"]["__typename"],
            ty.as_str(),
            "{ty} {id}: {}",
            r.body
        );
        assert_eq!(r.ok()["node"]["id"], id.as_str());
    }
    // The walk: viewer → its escrows → an escrow's sender, milestones and payments as
    // objects → back through node(id:) to each of them.
    let reader = &objects["Escrow"].1;
    let r = app
        .gql(
            Some(reader),
            "{ viewer { id } escrows(first: 5) { edges { node { id \
             sender { userId email } provider { userId } \
             milestones { id escrow { id } } payments { id payee { userId } escrow { id } } } } } }",
            json!({}),
        )
        .await;
    let viewer = r.ok()["viewer"]["id"].clone();
    let walked = r.ok()["escrows"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node"]["id"] == objects["Escrow"].0.as_str())
        .expect("the escrow is among the viewer's")["node"]
        .clone();
    assert_eq!(walked["sender"]["userId"], viewer, "the viewer sent it");
    assert_eq!(
        node(&app, reader, walked["sender"]["userId"].as_str().unwrap())
            .await
            .ok()["node"]["__typename"],
        "User"
    );
    for milestone in walked["milestones"].as_array().unwrap() {
        assert_eq!(milestone["escrow"]["id"], walked["id"]);
        let back = node(&app, reader, milestone["id"].as_str().unwrap()).await;
        assert_eq!(back.ok()["node"]["__typename"], "Milestone");
    }
    for payment in walked["payments"].as_array().unwrap() {
        assert_eq!(payment["escrow"]["id"], walked["id"]);
        assert_eq!(payment["payee"]["userId"], walked["provider"]["userId"]);
        let back = node(&app, reader, payment["id"].as_str().unwrap()).await;
        assert_eq!(back.ok()["node"]["__typename"], "Payment");
    }
    let back = node(&app, reader, walked["id"].as_str().unwrap()).await;
    assert_eq!(back.ok()["node"]["__typename"], "Escrow");

    // A payout's payee and the payee's mandate are objects too.
    let (payout, reader) = &objects["Payout"];
    let r = app
        .gql(
            Some(reader),
            "query($id: ID!) { node(id: $id) { ... on Payout { payee { id mandate { id } escrow { id } } } } }",
            json!({ "id": payout }),
        )
        .await;
    let payee = &r.ok()["node"]["payee"];
    assert_eq!(payee["id"], objects["Payee"].0.as_str());
    assert_eq!(payee["mandate"]["id"], objects["Mandate"].0.as_str());
    assert!(payee["escrow"].is_null());

    // Another tenant's reader: every one is NOT_FOUND, like a missing id.
    let outsider = globex.token(Role::Admin);
    for (ty, (id, _)) in &objects {
        assert_eq!(
            node(&app, outsider, id).await.code(),
            Some("NOT_FOUND"),
            "{ty}"
        );
    }
    // A sender of the same tenant with no part in any of it: the catalog (the tenant's
    // for every spender) resolves, the tenant too; nothing else does.
    let stranger = app
        .add_user(&acme, "stranger@acme.test", &[Role::Sender])
        .await;
    for (ty, (id, _)) in &objects {
        let r = node(&app, &stranger.token, id).await;
        if ["SpendCategory", "Merchant", "Tenant"].contains(&ty.as_str()) {
            assert_eq!(r.ok()["node"]["__typename"], ty.as_str(), "{ty}");
        } else {
            assert_eq!(
                r.code(),
                Some("NOT_FOUND"),
                "{ty} seen by a stranger: {}",
                r.body
            );
        }
    }

    // nodes(ids:): in order, null with a NOT_FOUND error at the index of each id the
    // caller may not read. The admin (staff) reads all but another user's session.
    let ids: Vec<&str> = objects.values().map(|(id, _)| id.as_str()).collect();
    let r = app
        .gql(
            Some(acme.token(Role::Admin)),
            "query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }",
            json!({ "ids": ids }),
        )
        .await;
    let listed = r.body["data"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.body))
        .clone();
    assert_eq!(listed.len(), ids.len());
    let session_at = objects.keys().position(|t| t == "Session").unwrap();
    for (i, (ty, (id, _))) in objects.iter().enumerate() {
        if i == session_at {
            assert!(listed[i].is_null(), "another user's session: {}", listed[i]);
        } else {
            assert_eq!(listed[i]["id"], id.as_str(), "{ty}");
        }
    }
    let errors = r.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{}", r.body);
    assert_eq!(errors[0]["path"], json!(["nodes", session_at]));
    assert_eq!(errors[0]["extensions"]["code"], "NOT_FOUND");
    let many: Vec<String> = (0..101).map(|_| objects["User"].0.clone()).collect();
    let r = app
        .gql(
            Some(acme.token(Role::Admin)),
            "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
            json!({ "ids": many }),
        )
        .await;
    assert_eq!(r.code(), Some("BAD_USER_INPUT"), "{}", r.body);
}

/// `orderBy: NEWEST_FIRST` pages from the newest, forward and backward with cursors;
/// `totalCount` counts the whole filtered list, and costs its one statement only when
/// a client asks for it.
async fn connections_page_either_way_and_count_when_asked(app: TestApp) {
    let t = app.tenant("acme").await;
    let admin = t.token(Role::Admin);
    for code in ["A", "B", "C", "D", "E"] {
        app.gql(
            Some(admin),
            "mutation($c: String!) { createSpendCategory(input: { code: $c, label: $c }) { category { id } } }",
            json!({ "c": code }),
        )
        .await
        .ok();
    }
    let page = |args: &str| {
        format!(
            "{{ spendCategories({args}) {{ totalCount edges {{ node {{ code }} }} \
             pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} }} }}"
        )
    };
    let codes = |r: &Value| -> Vec<String> {
        r["spendCategories"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["code"].as_str().unwrap().to_owned())
            .collect()
    };
    let app = &app;
    let call = |q: String| async move { app.gql(Some(admin), &q, json!({})).await.ok().clone() };

    let newest = call(page("first: 2, orderBy: NEWEST_FIRST")).await;
    assert_eq!(codes(&newest), ["E", "D"]);
    assert_eq!(newest["spendCategories"]["totalCount"], 5);
    assert_eq!(newest["spendCategories"]["pageInfo"]["hasNextPage"], true);
    let end = newest["spendCategories"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap();
    let next = call(page(&format!(
        "first: 2, after: \"{end}\", orderBy: NEWEST_FIRST"
    )))
    .await;
    assert_eq!(codes(&next), ["C", "B"]);
    let start = next["spendCategories"]["pageInfo"]["startCursor"]
        .as_str()
        .unwrap();
    let back = call(page(&format!(
        "last: 5, before: \"{start}\", orderBy: NEWEST_FIRST"
    )))
    .await;
    assert_eq!(codes(&back), ["E", "D"], "before C, newest first: E then D");
    let tail = call(page("last: 2, orderBy: NEWEST_FIRST")).await;
    assert_eq!(codes(&tail), ["B", "A"]);
    assert_eq!(tail["spendCategories"]["pageInfo"]["hasPreviousPage"], true);
    let oldest = call(page("first: 2")).await;
    assert_eq!(codes(&oldest), ["A", "B"], "oldest first by default");

    // The count is one statement, and only when asked for.
    let admin_id = t.user(Role::Admin).id;
    let (plain, _) = app
        .count_statements(
            t.id,
            admin_id,
            &[Role::Admin],
            "{ spendCategories(first: 2) { edges { node { code } } } }",
        )
        .await;
    let (counted, data) = app
        .count_statements(
            t.id,
            admin_id,
            &[Role::Admin],
            "{ spendCategories(first: 2) { totalCount edges { node { code } } } }",
        )
        .await;
    assert_eq!(data["spendCategories"]["totalCount"], 5);
    assert_eq!(
        counted,
        plain + 1,
        "totalCount: {plain} → {counted} statements"
    );
}

/// An escrow's events and payments and a mandate's purchases page like the root
/// connections (the unbounded lists stay, deprecated): the same items, a page at a
/// time, counted on request.
async fn nested_lists_that_grow_page_as_connections(app: TestApp) {
    let t = app.tenant("acme").await;
    let sender = t.token(Role::Sender).to_owned();
    crate::mfa::enrol(&app, &sender).await;
    let e = create_escrow(&app, &t, "40.00", json!([]), None, Duration::days(3)).await;
    let id = e["id"].as_str().unwrap().to_owned();
    fund(&app, &sender, &id, "15.00", &key()).await.ok();
    fund(&app, &sender, &id, "25.00", &key()).await.ok();
    app.gql(
        Some(&sender),
        "mutation($id: ID!, $k: String!) { releaseEscrow(input: { escrowId: $id, idempotencyKey: $k }) { escrow { status } } }",
        json!({ "id": id, "k": key() }),
    )
    .await
    .ok();

    let page = async |after: Option<&str>| {
        let r = app
            .gql(
                Some(&sender),
                "query($id: ID!, $after: String) { escrow(id: $id) {
                   events { kind }
                   eventsConnection(first: 2, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { node { kind } } }
                   payments { id }
                   paymentsConnection(first: 5) { totalCount edges { node { id } } } } }",
                json!({ "id": id, "after": after }),
            )
            .await;
        r.ok()["escrow"].clone()
    };
    let first = page(None).await;
    let all: Vec<Value> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert!(all.len() > 2, "{all:?}");
    let mut paged: Vec<Value> = Vec::new();
    let mut current = first.clone();
    loop {
        let c = &current["eventsConnection"];
        assert_eq!(c["totalCount"], all.len());
        paged.extend(
            c["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["kind"].clone()),
        );
        if c["pageInfo"]["hasNextPage"] != true {
            break;
        }
        let cursor = c["pageInfo"]["endCursor"].as_str().unwrap().to_owned();
        current = page(Some(&cursor)).await;
    }
    assert_eq!(paged, all);
    let listed: Vec<&Value> = first["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["id"])
        .collect();
    let paged: Vec<&Value> = first["paymentsConnection"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"]["id"])
        .collect();
    assert_eq!((paged.len(), &paged), (1, &listed));
    assert_eq!(first["paymentsConnection"]["totalCount"], 1);

    // A mandate's purchases, newest first.
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
    let beneficiary = t.token(Role::Beneficiary).to_owned();
    for amount in ["1.00", "2.00", "3.00"] {
        crate::spend::buy(&app, &beneficiary, &mandate, &c.fresh_mart, amount, &key())
            .await
            .ok();
    }
    let r = app
        .gql(
            Some(&beneficiary),
            "query($id: ID!) { mandate(id: $id) { purchasesConnection(first: 2, orderBy: NEWEST_FIRST) { totalCount pageInfo { hasNextPage } edges { node { amount { amount } } } } } }",
            json!({ "id": mandate }),
        )
        .await;
    let c = &r.ok()["mandate"]["purchasesConnection"];
    assert_eq!(c["totalCount"], 3);
    assert_eq!(c["pageInfo"]["hasNextPage"], true);
    let amounts: Vec<&Value> = c["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"]["amount"]["amount"])
        .collect();
    assert_eq!(amounts, [&json!("3.00"), &json!("2.00")]);
}
