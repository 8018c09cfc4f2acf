//! Persisted operations over the real edges: Apollo's automatic persisted queries
//! (the protocol its `createPersistedQueryLink` speaks, step by step: hash only,
//! `PersistedQueryNotFound`, then hash and document, then hash only again, over POST
//! and GET) and the allow-list of `SEQUESTRA_PERSISTED_ONLY`, over HTTP, uploads and
//! WebSocket, registered with the `sequestra operations` command.

use futures_util::SinkExt;
use sequestra::{auth::Role, graphql::persisted};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::books::command;
use crate::harness::TestApp;
use crate::ws::{connect, init, next_json};
use crate::{on_both_backends, on_both_backends_with};

on_both_backends!(automatic_persisted_queries_round_trip);
on_both_backends_with!(
    only_registered_operations_run,
    &[("SEQUESTRA_PERSISTED_ONLY", "true")]
);

fn extensions(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

/// A POST as Apollo's link sends it: `query` left out when only the hash goes.
async fn post(app: &TestApp, token: &str, query: Option<&str>, hash: &str) -> (u16, Value) {
    let mut body = json!({ "extensions": extensions(hash), "variables": {} });
    if let Some(query) = query {
        body["query"] = json!(query);
    }
    let response = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .header("accept", "application/graphql-response+json")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A GET with the hash only (what `useGETForHashedQueries` sends).
async fn get(app: &TestApp, token: &str, hash: &str) -> (u16, Value) {
    let response = app
        .http
        .get(app.url("/graphql"))
        .query(&[("extensions", extensions(hash).to_string())])
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

async fn automatic_persisted_queries_round_trip(app: TestApp) {
    let acme = app.tenant("acme").await;
    let token = acme.token(Role::Sender);
    let query = "query Me { viewer { email } }";
    let hash = persisted::sha256_hex(query);

    // 1. The hash alone: not known yet. A 200 (Apollo's link gives up on persisted
    //    queries after a 400) with the message and the code clients look for.
    let (status, body) = post(&app, token, None, &hash).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    assert_eq!(code(&body), Some("PERSISTED_QUERY_NOT_FOUND"));
    assert!(body.get("data").is_none(), "{body}");
    let (status, body) = get(&app, token, &hash).await;
    assert_eq!(
        (status, code(&body)),
        (200, Some("PERSISTED_QUERY_NOT_FOUND"))
    );

    // 2. The link sends the document with its hash: it runs, and is remembered.
    let (status, body) = post(&app, token, Some(query), &hash).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["viewer"]["email"],
        acme.user(Role::Sender).email
    );

    // 3. From now on the hash is enough, over POST and over GET.
    let (_, body) = post(&app, token, None, &hash).await;
    assert_eq!(
        body["data"]["viewer"]["email"],
        acme.user(Role::Sender).email
    );
    let (status, body) = get(&app, token, &hash).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["viewer"]["email"],
        acme.user(Role::Sender).email
    );

    // A hash that is not the document's, a version the server does not speak, and
    // a mutation named by hash over GET are refused.
    let (status, body) = post(&app, token, Some("{ serverTime }"), &hash).await;
    assert_eq!(
        (status, code(&body)),
        (400, Some("BAD_USER_INPUT")),
        "{body}"
    );
    let response = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "extensions": { "persistedQuery": { "version": 2, "sha256Hash": hash } } }))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(code(&body), Some("BAD_USER_INPUT"), "{body}");
    let mutation = "mutation { __typename }";
    let mutation_hash = persisted::sha256_hex(mutation);
    post(&app, token, Some(mutation), &mutation_hash).await;
    let (status, _) = get(&app, token, &mutation_hash).await;
    assert_eq!(status, 405, "a mutation named by hash is still not a GET");
}

async fn only_registered_operations_run(app: TestApp) {
    let acme = app.tenant("acme").await;
    let token = acme.token(Role::Sender);
    let me = "query Me { viewer { email } }";
    let ticks = "subscription Ticks { serverTime(intervalSeconds: 1) }";

    // Registered from a manifest file, as a frontend build writes it.
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.json");
    std::fs::write(
        &manifest,
        json!({
            "format": "apollo-persisted-query-manifest",
            "version": 1,
            "operations": [
                { "id": persisted::sha256_hex(me), "name": "Me", "type": "query", "body": me },
                { "id": persisted::sha256_hex(ticks), "name": "Ticks", "type": "subscription", "body": ticks },
            ],
        })
        .to_string(),
    )
    .unwrap();
    let manifest = manifest.to_str().unwrap();
    let (status, stdout, stderr) = command(&app, &["operations", "register", manifest]).await;
    assert_eq!(status, 0, "{stdout}{stderr}");
    assert!(stdout.contains(&persisted::sha256_hex(me)), "{stdout}");
    assert!(stdout.contains("2 newly registered"), "{stdout}");
    let (_, stdout, _) = command(&app, &["operations", "register", manifest]).await;
    assert!(stdout.contains("0 newly registered"), "{stdout}");
    // A document that does not parse is refused, and nothing of its file is kept.
    let broken = dir.path().join("broken.graphql");
    std::fs::write(&broken, "query { viewer { ").unwrap();
    let (status, _, stderr) =
        command(&app, &["operations", "register", broken.to_str().unwrap()]).await;
    assert_ne!(status, 0, "{stderr}");
    // The allow-list comes back out as a manifest a frontend team can pull.
    let (_, export, _) = command(&app, &["operations", "export"]).await;
    let exported: Value = serde_json::from_str(&export).unwrap();
    assert_eq!(exported["format"], "apollo-persisted-query-manifest");
    assert_eq!(exported["operations"].as_array().unwrap().len(), 2);
    assert_eq!(exported["operations"][0]["body"], me);
    assert_eq!(exported["operations"][0]["type"], "query");

    // Registered: runs sent in full, by hash over POST and over GET.
    let r = app.gql(Some(token), me, json!({})).await;
    assert_eq!(r.ok()["viewer"]["email"], acme.user(Role::Sender).email);
    let (_, body) = post(&app, token, None, &persisted::sha256_hex(me)).await;
    assert_eq!(
        body["data"]["viewer"]["email"],
        acme.user(Role::Sender).email
    );
    let (_, body) = get(&app, token, &persisted::sha256_hex(me)).await;
    assert_eq!(
        body["data"]["viewer"]["email"],
        acme.user(Role::Sender).email
    );

    // Anything else is refused before it runs, and is not remembered from a client.
    let other = "query { viewer { id } }";
    let r = app.gql(Some(token), other, json!({})).await;
    assert_eq!(r.code(), Some("PERSISTED_QUERY_NOT_ALLOWED"), "{}", r.body);
    let (status, body) = post(&app, token, Some(other), &persisted::sha256_hex(other)).await;
    assert_eq!(
        (status, code(&body)),
        (400, Some("PERSISTED_QUERY_NOT_ALLOWED")),
        "{body}"
    );
    let (_, body) = post(&app, token, None, &persisted::sha256_hex(other)).await;
    assert_eq!(code(&body), Some("PERSISTED_QUERY_NOT_FOUND"), "{body}");
    // Introspection is an operation like any other.
    let r = app
        .gql(None, "{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(r.code(), Some("PERSISTED_QUERY_NOT_ALLOWED"));
    // An upload (multipart) is held to the same list.
    let upload = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .multipart(
            reqwest::multipart::Form::new()
                .text(
                    "operations",
                    json!({ "query": other, "variables": {} }).to_string(),
                )
                .text("map", "{}"),
        )
        .send()
        .await
        .unwrap();
    let body: Value = upload.json().await.unwrap();
    assert_eq!(code(&body), Some("PERSISTED_QUERY_NOT_ALLOWED"), "{body}");

    // Over WebSocket: an unregistered subscription gets an `error` for its id (the
    // socket stays up); the registered one runs, named by its hash alone.
    let mut socket = connect(&app).await;
    init(&mut socket, token).await;
    let send = |msg: Value| Message::text(msg.to_string());
    socket
        .send(send(json!({ "id": "a", "type": "subscribe", "payload": { "query": "subscription { serverTime(intervalSeconds: 2) }" } })))
        .await
        .unwrap();
    let refused = next_json(&mut socket).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "a");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_ALLOWED"
    );
    socket
        .send(send(json!({ "id": "b", "type": "subscribe", "payload": { "extensions": extensions(&persisted::sha256_hex(ticks)) } })))
        .await
        .unwrap();
    let tick = next_json(&mut socket).await;
    assert_eq!(tick["type"], "next", "{tick}");
    assert_eq!(tick["id"], "b");
    assert!(tick["payload"]["data"]["serverTime"].is_string(), "{tick}");
}
