//! GraphQL over HTTP: media types, status codes, GET rules, error codes and limits.

use sequestra::graphql::limits::fragment_chain as fragment_bomb;
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
    fragment_bombs_are_refused_before_any_work,
    responses_are_shaped_as_the_spec_says,
    page_sizes_weigh_in_the_cost,
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

/// Refused with QUERY_TOO_COMPLEX as soon as it is parsed (the expansion is counted
/// with each fragment measured once), in milliseconds, while `/health` keeps answering.
/// Before, 24 levels cost 2.4–2.9 s of CPU and two at once stalled the server.
async fn fragment_bombs_are_refused_before_any_work(app: TestApp) {
    use std::time::{Duration, Instant};
    for levels in [24, 30, 60] {
        let document = fragment_bomb(levels);
        let started = Instant::now();
        let r = app.gql(None, &document, json!({})).await;
        let took = started.elapsed();
        assert_eq!(r.code(), Some("QUERY_TOO_COMPLEX"), "{levels}: {}", r.body);
        assert!(r.body.get("data").is_none_or(Value::is_null));
        assert!(r.body["errors"][0].get("locations").is_none(), "{}", r.body);
        assert!(
            took < Duration::from_millis(50),
            "{levels} levels took {took:?}"
        );
    }
    // Two bombs at once, and a health check in between.
    let bombs: Vec<_> = [24, 60]
        .into_iter()
        .map(|levels| {
            let (http, url, document) =
                (app.http.clone(), app.url("/graphql"), fragment_bomb(levels));
            tokio::spawn(async move {
                let body: Value = http
                    .post(url)
                    .json(&json!({ "query": document }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                body["errors"][0]["extensions"]["code"].clone()
            })
        })
        .collect();
    let started = Instant::now();
    let health = app.http.get(app.url("/health")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(health.status(), 200);
    assert!(took < Duration::from_millis(100), "/health took {took:?}");
    for bomb in bombs {
        assert_eq!(bomb.await.unwrap(), "QUERY_TOO_COMPLEX");
    }
    // An ordinary document of the same shape but small still runs.
    let r = app.gql(None, &fragment_bomb(3), json!({})).await;
    assert!(r.ok()["serverTime"].is_string(), "{}", r.body);
}

/// GraphQL spec §7 and GraphQL-over-HTTP: fields come back in the order the document
/// asked for them; a nullable field whose resolver failed is present as `null` next to
/// its error; variables that cannot be coerced are a request error (no `data`).
async fn responses_are_shaped_as_the_spec_says(app: TestApp) {
    let acme = app.tenant("acme").await;
    let admin = acme.token(sequestra::auth::Role::Admin);
    let raw = |query: &'static str, variables: Value| {
        let request = app
            .http
            .post(app.url("/graphql"))
            .header("accept", "application/graphql-response+json")
            .bearer_auth(admin)
            .json(&json!({ "query": query, "variables": variables }));
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };

    // Order as requested, at every level, whatever the alphabet says.
    let (status, body) = raw(
        "{ zeta: __typename alpha: __typename viewer { roles id email } mid: serverTime }",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let at = |needle: &str| {
        body.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {body}"))
    };
    assert!(at("\"zeta\"") < at("\"alpha\""), "{body}");
    assert!(
        at("\"alpha\"") < at("\"viewer\"") && at("\"viewer\"") < at("\"mid\""),
        "{body}"
    );
    assert!(
        at("\"roles\"") < at("\"id\"") && at("\"id\"") < at("\"email\""),
        "{body}"
    );

    // A nullable field that errored is there, as null, beside its error.
    let (status, body) = raw(
        "{ first: __typename gone: node(id: \"usr_00000000000000000000000000000000\") { id } last: __typename }",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let parsed: Value = serde_json::from_str(&body).unwrap();
    let data = parsed["data"].as_object().expect("data");
    assert!(data.contains_key("gone"), "{body}");
    assert!(data["gone"].is_null());
    assert_eq!(parsed["errors"][0]["path"], json!(["gone"]), "{body}");
    assert!(
        at_order(&body, &["\"first\"", "\"gone\"", "\"last\""]),
        "{body}"
    );

    // A non-null field that errored makes its parent null, up to `data` itself at the
    // root (§6.4.4): the request ran, so it is a 200 with `data: null`.
    let (status, body) = raw(
        "{ first: __typename escrow(id: \"esc_00000000000000000000000000000000\") { id } }",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let parsed: Value = serde_json::from_str(&body).unwrap();
    assert!(parsed.get("data").is_some_and(Value::is_null), "{body}");
    assert_eq!(parsed["errors"][0]["path"], json!(["escrow"]), "{body}");

    // A variable of the wrong type never executes: 400, no `data` entry.
    let (status, body) = raw(
        "query($id: ID!) { node(id: $id) { id } }",
        json!({ "id": { "not": "an id" } }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let parsed: Value = serde_json::from_str(&body).unwrap();
    assert!(parsed.get("data").is_none(), "{body}");
    assert_eq!(
        parsed["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    let (status, body) = raw(
        "query($n: Int!) { users(first: $n) { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .get("data")
            .is_none(),
        "{body}"
    );
}

fn at_order(body: &str, needles: &[&str]) -> bool {
    let positions: Vec<_> = needles.iter().map(|n| body.find(n)).collect();
    positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1])
}

/// A connection's selection counts once per item of the page it asks for: twenty
/// aliased pages of 100 escrows with their milestones, proofs, payments and events are
/// refused before anything runs; the same with pages of 10 fits.
async fn page_sizes_weigh_in_the_cost(app: TestApp) {
    let acme = app.tenant("acme").await;
    let admin = acme.token(sequestra::auth::Role::Admin);
    let doc = |page: &str| {
        let mut doc = String::from(if page == "$n" {
            "query($n: Int) {"
        } else {
            "{"
        });
        for i in 0..20 {
            doc.push_str(&format!(
                " e{i}: escrows(first: {page}) {{ edges {{ node {{ milestones {{ proofs {{ id }} }} payments {{ id }} events {{ kind }} }} }} }}"
            ));
        }
        doc.push_str(" }");
        doc
    };
    let started = std::time::Instant::now();
    let big = app.gql(Some(admin), &doc("100"), json!({})).await;
    assert_eq!(big.code(), Some("QUERY_TOO_COMPLEX"), "{}", big.body);
    assert!(
        big.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("18020"),
        "{}",
        big.body
    );
    let by_variable = app.gql(Some(admin), &doc("$n"), json!({ "n": 100 })).await;
    assert_eq!(
        by_variable.code(),
        Some("QUERY_TOO_COMPLEX"),
        "{}",
        by_variable.body
    );
    let refused_in = started.elapsed();
    let small = app.gql(Some(admin), &doc("10"), json!({})).await;
    small.ok();
    // No page named: the default page (20) is what is weighed.
    let default = app.gql(Some(admin), &doc("$n"), json!({})).await;
    default.ok();
    crate::harness::report(&format!(
        "cost: 20 aliased escrow pages of 100 (18020 weighed fields) refused twice in {refused_in:?}"
    ));
}
