//! Traces over OTLP: a real `serve --demo` process exports to an OTLP/HTTP receiver
//! started here (protobuf, decoded with the protocol's own types). A request that
//! carries a W3C `traceparent` continues the caller's trace: its request span, the
//! operation's span, each root field's span and each SQL statement's span all carry
//! the caller's trace id, each the child of the one before. No span holds a secret.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{Router, body::Bytes, extract::State, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{AnyValue, KeyValue, any_value::Value as Any},
    trace::v1::{Span, span::SpanKind},
};
use prost::Message;
use serde_json::{Value, json};

/// What the receiver got: each span with its resource's `service.name`.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

async fn export(State(received): State<Received>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut received = received.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| text(&r.attributes, "service.name"))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push((service.clone(), span));
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

/// An OTLP/HTTP receiver on a free port: its base URL and what it received.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(export))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => Some(s.clone()),
            Any::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

/// Every string an exported span carries: its name, attributes and events'.
fn strings(span: &Span) -> Vec<String> {
    let mut out = vec![span.name.clone()];
    let values = |attributes: &[KeyValue]| -> Vec<String> {
        attributes
            .iter()
            .filter_map(|kv| kv.value.as_ref())
            .map(|v: &AnyValue| format!("{:?}", v.value))
            .collect()
    };
    out.extend(values(&span.attributes));
    for event in &span.events {
        out.push(event.name.clone());
        out.extend(values(&event.attributes));
    }
    out
}

async fn post_traced(listen: &str, token: Option<&str>, traceparent: &str, query: &str) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("http://{listen}/graphql"))
        .header("traceparent", traceparent)
        .json(&json!({ "query": query }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    assert!(body.get("errors").is_none(), "{body}");
    body
}

#[tokio::test]
async fn a_traced_request_exports_its_spans_down_to_each_statement() {
    let (collector, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/traces.db?mode=rwc", dir.path().display());
    let creds = dir.path().join("creds.json");
    let (mut child, listen) = crate::cli::serve_with(
        &["--demo", "--demo-credentials", creds.to_str().unwrap()],
        &db,
        &[
            ("SEQUESTRA_OTLP_ENDPOINT", collector.as_str()),
            // The batch processor's standard setting: export every 100 ms.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let demo: Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    let tenant = &demo["tenants"][0];
    let support = tenant["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["roles"] == json!(["SUPPORT"]))
        .expect("the demo's SUPPORT user");
    let password = support["password"].as_str().unwrap();
    let key = tenant["apiKeys"][0]["key"].as_str().unwrap();

    // The caller's trace: W3C Trace Context, sampled.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let signed_in = post_traced(
        &listen,
        None,
        &traceparent,
        &format!(
            r#"mutation {{ signIn(input: {{ tenant: "{}", email: "{}", password: "{password}" }}) {{ accessToken }} }}"#,
            tenant["slug"].as_str().unwrap(),
            support["email"].as_str().unwrap(),
        ),
    )
    .await;
    let access = signed_in["data"]["signIn"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = post_traced(
        &listen,
        Some(key),
        &traceparent,
        "query Page { escrows(first: 5) { edges { node { id status sender { email } } } } }",
    )
    .await;
    assert!(page["data"]["escrows"]["edges"][0]["node"]["sender"]["email"].is_string());

    // Wait for both requests' spans.
    let trace_id_bytes = hex::decode(trace_id).unwrap();
    let mut spans: Vec<(String, Span)> = Vec::new();
    for _ in 0..100 {
        spans = received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.trace_id == trace_id_bytes)
            .cloned()
            .collect();
        // Each request's span ends after everything under it.
        if spans.iter().filter(|(_, s)| s.name == "request").count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let by_id = |id: &[u8]| spans.iter().map(|(_, s)| s).find(|s| s.span_id == id);
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();

    // Every span of the trace comes from this service.
    assert!(
        !spans.is_empty(),
        "no span with the caller's trace id arrived"
    );
    assert!(
        spans.iter().all(|(service, _)| service == "sequestra"),
        "{names:?}"
    );

    // The page request: the caller's span → request (SERVER) → operation → root
    // field → statement (CLIENT).
    let statement = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| {
            s.kind == SpanKind::Client as i32
                && text(&s.attributes, "db.query.text").is_some_and(|q| q.contains("escrows"))
        })
        .unwrap_or_else(|| panic!("no statement span on escrows in {names:?}"));
    assert_eq!(
        text(&statement.attributes, "db.system.name").as_deref(),
        Some("sqlite")
    );
    assert_eq!(statement.name, "SELECT");
    assert!(statement.end_time_unix_nano >= statement.start_time_unix_nano);
    let field = by_id(&statement.parent_span_id).expect("the statement's parent arrived");
    assert_eq!(field.name, "Query.escrows", "{names:?}");
    assert_eq!(
        text(&field.attributes, "graphql.field.name").as_deref(),
        Some("escrows")
    );
    // The senders, batched by a DataLoader on a task of its own (its span under the
    // same field).
    let under_field = |span: &Span| {
        let mut parent_id = span.parent_span_id.clone();
        while let Some(parent) = by_id(&parent_id) {
            if parent.span_id == field.span_id {
                return true;
            }
            parent_id = parent.parent_span_id.clone();
        }
        false
    };
    assert!(
        spans
            .iter()
            .any(|(_, s)| text(&s.attributes, "db.query.text")
                .is_some_and(|q| q.starts_with("SELECT \"users\""))
                && by_id(&s.parent_span_id).is_some_and(|p| p.name == "do_load")
                && under_field(s)),
        "no statement on users under the field's batch in {names:?}"
    );
    let operation = by_id(&field.parent_span_id).expect("the field's parent arrived");
    assert_eq!(operation.name, "query escrows", "{names:?}");
    assert_eq!(
        text(&operation.attributes, "graphql.operation.name").as_deref(),
        Some("Page")
    );
    let request = by_id(&operation.parent_span_id).expect("the operation's parent arrived");
    assert_eq!(request.name, "request");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(request.parent_span_id, hex::decode(caller_span).unwrap());
    assert_eq!(
        text(&request.attributes, "path").as_deref(),
        Some("/graphql")
    );
    assert_eq!(
        text(&request.attributes, "http.response.status_code").as_deref(),
        Some("200")
    );

    // The sign-in was traced too (same trace): its root field and its statements.
    assert!(names.contains(&"mutation signIn"), "{names:?}");
    assert!(names.contains(&"Mutation.signIn"), "{names:?}");
    let requests = spans
        .iter()
        .filter(|(_, s)| s.name == "request" && s.parent_span_id == request.parent_span_id)
        .count();
    assert_eq!(requests, 2, "both requests continue the caller's trace");

    // Nothing secret in any span: statements carry their SQL, never bind values.
    let mut secrets = vec![password.to_owned(), key.to_owned(), access];
    let db_conn = sea_orm::Database::connect(&db).await.unwrap();
    use sea_orm::{ConnectionTrait, Statement};
    for row in db_conn
        .query_all(Statement::from_string(
            db_conn.get_database_backend(),
            "SELECT password_hash AS v FROM users UNION ALL SELECT key_hash FROM api_keys",
        ))
        .await
        .unwrap()
    {
        secrets.push(row.try_get::<String>("", "v").unwrap());
    }
    let all: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, s)| strings(s))
        .collect();
    assert!(
        all.iter().any(|s| s.contains("password_hash")),
        "the sign-in's statements are traced"
    );
    for secret in &secrets {
        assert!(
            !all.iter().any(|s| s.contains(secret.as_str())),
            "a credential appears in an exported span"
        );
    }

    // A request without `traceparent` starts a trace of its own.
    let before = received.lock().unwrap().len();
    crate::cli::gql_at(
        &listen,
        Some(key),
        "{ escrows(first: 1) { edges { cursor } } }",
        json!({}),
    )
    .await;
    let mut own = None;
    for _ in 0..100 {
        own = received.lock().unwrap()[before..]
            .iter()
            .find(|(_, s)| s.name == "request")
            .map(|(_, s)| s.clone());
        if own.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let own = own.expect("the untraced request's span arrived");
    assert_ne!(own.trace_id, trace_id_bytes);
    assert!(own.parent_span_id.is_empty(), "a root span");

    child.kill().await.ok();
}
