//! GraphQL over HTTP: media types, status codes, GET rules, error codes and limits.

use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::on_both_backends;

on_both_backends!(
    post_and_get_answer_typename,
    get_refuses_mutations,
    request_errors_use_status_by_media_type,
    limits_refuse_deep_and_aliased_documents,
    invalid_tokens_are_refused,
    guards_answer_unauthenticated_and_forbidden,
);

async fn post_and_get_answer_typename(app: TestApp) {
    let r = app.gql(None, "{ __typename }", json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.ok(), &json!({ "__typename": "Query" }));

    let get = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", "{ __typename }")])
        .header("accept", "application/graphql-response+json")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(
        get.headers()["content-type"],
        "application/graphql-response+json; charset=utf-8"
    );
    assert_eq!(
        get.json::<Value>().await.unwrap()["data"]["__typename"],
        "Query"
    );
}

async fn get_refuses_mutations(app: TestApp) {
    let get = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", "mutation { __typename }")])
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
}

async fn request_errors_use_status_by_media_type(app: TestApp) {
    // graphql-response+json: a document that cannot run is a 400 without `data`.
    let r = app.gql(None, "{ noSuchField }", json!({})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), Some("BAD_USER_INPUT"));
    assert!(r.body.get("data").is_none());

    // application/json: the same document is a 200 with errors.
    let legacy = app
        .http
        .post(app.url("/graphql"))
        .header("accept", "application/json")
        .json(&json!({ "query": "{ noSuchField }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.status(), 200);
    assert_eq!(
        legacy.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let body: Value = legacy.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    // Not JSON at all, or the wrong content type.
    let garbage = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    let text = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", "text/plain")
        .body("{ __typename }")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);

    // Batches are not accepted: one operation per request.
    let batch = app
        .http
        .post(app.url("/graphql"))
        .json(&json!([{ "query": "{ __typename }" }, { "query": "{ __typename }" }]))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 400);
}

async fn limits_refuse_deep_and_aliased_documents(app: TestApp) {
    let aliases: Vec<String> = (0..31).map(|i| format!("a{i}: __typename")).collect();
    let r = app
        .gql(None, &format!("{{ {} }}", aliases.join(" ")), json!({}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), Some("BAD_USER_INPUT"));
    assert!(
        r.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("aliases")
    );

    let ok_aliases: Vec<String> = (0..30).map(|i| format!("a{i}: __typename")).collect();
    let r = app
        .gql(None, &format!("{{ {} }}", ok_aliases.join(" ")), json!({}))
        .await;
    assert_eq!(r.status, 200);

    // Depth 17 against a limit of 16 (GraphiQL's own introspection query needs 14).
    let deep = format!(
        "{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}",
        "ofType { ".repeat(12),
        "} ".repeat(12)
    );
    let r = app.gql(None, &deep, json!({})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), Some("BAD_USER_INPUT"));
}

async fn invalid_tokens_are_refused(app: TestApp) {
    for token in ["not-a-jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."] {
        let r = app.gql(Some(token), "{ __typename }", json!({})).await;
        assert_eq!(r.status, 401, "{token}");
        assert_eq!(r.code(), Some("UNAUTHENTICATED"));
    }
    // A well-signed token for a user that does not exist.
    let ghost = app
        .tokens
        .issue(
            sequestra::ids::TenantId::from_uuid(uuid::Uuid::now_v7()),
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
        )
        .unwrap();
    let r = app
        .gql(Some(&ghost.token), "{ __typename }", json!({}))
        .await;
    assert_eq!(r.status, 401);
}

async fn guards_answer_unauthenticated_and_forbidden(app: TestApp) {
    use sequestra::auth::Role;
    let acme = app.tenant("acme").await;

    let r = app
        .gql(
            None,
            "{ users(first: 5) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.code(), Some("UNAUTHENTICATED"));

    let r = app
        .gql(
            Some(acme.token(Role::Sender)),
            "{ users(first: 5) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(r.code(), Some("FORBIDDEN"));
    assert_eq!(r.body["errors"][0]["message"], "not allowed");

    let r = app
        .gql(
            Some(acme.token(Role::Sender)),
            "{ viewer { email roles tenant { slug } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        r.ok()["viewer"],
        json!({ "email": "sender@acme.test", "roles": ["SENDER"], "tenant": { "slug": "acme" } })
    );
}
