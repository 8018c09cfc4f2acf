//! `/graphql/ws` with a real WebSocket client speaking graphql-transport-ws.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{
    Message, client::IntoClientRequest, protocol::frame::coding::CloseCode,
};

use crate::harness::TestApp;
use crate::on_both_backends;

on_both_backends!(
    heartbeat_subscription_streams,
    bad_credentials_close_with_4403,
    protocol_violations_close_with_the_protocols_codes,
    request_errors_are_error_messages_without_complete,
    a_ping_renews_the_sockets_credential,
);

crate::on_both_backends_with!(
    operations_are_capped_per_socket_and_per_user,
    &[
        ("SEQUESTRA_WS_MAX_OPERATIONS_PER_SOCKET", "2"),
        ("SEQUESTRA_WS_MAX_OPERATIONS_PER_USER", "3"),
    ]
);

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(app: &TestApp) -> Socket {
    let mut request = app.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    socket
}

pub async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next())
            .await
            .expect("a message within 5 s")
            .expect("socket open")
            .expect("frame");
        match msg {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn heartbeat_subscription_streams(app: TestApp) {
    let acme = app.tenant("acme").await;
    let mut socket = connect(&app).await;
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {}", acme.token(sequestra::auth::Role::Sender)) } });
    socket.send(Message::text(init.to_string())).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");

    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { serverTime(intervalSeconds: 1) }" } });
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    let mut times = Vec::new();
    for _ in 0..2 {
        let msg = next_json(&mut socket).await;
        assert_eq!(msg["type"], "next", "{msg}");
        assert_eq!(msg["id"], "1");
        let t = msg["payload"]["data"]["serverTime"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(chrono::DateTime::parse_from_rfc3339(&t).is_ok(), "{t}");
        times.push(t);
    }
    assert!(times[0] < times[1]);
    socket
        .send(Message::text(
            json!({ "id": "1", "type": "complete" }).to_string(),
        ))
        .await
        .unwrap();
}

/// Sends `connection_init` with `token` and waits for the ack.
pub async fn init(socket: &mut Socket, token: &str) {
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    socket.send(Message::text(init.to_string())).await.unwrap();
    let ack = next_json(socket).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
}

pub async fn subscribe(socket: &mut Socket, id: &str, query: &str, variables: Value) {
    let msg = json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } });
    socket.send(Message::text(msg.to_string())).await.unwrap();
}

/// The close code the server ends the socket with (within `secs`).
pub async fn close_code(socket: &mut Socket, secs: u64) -> (Option<CloseCode>, String) {
    tokio::time::timeout(std::time::Duration::from_secs(secs), async {
        while let Some(Ok(msg)) = socket.next().await {
            if let Message::Close(frame) = msg {
                return frame
                    .map(|f| (Some(f.code), f.reason.to_string()))
                    .unwrap_or((None, String::new()));
            }
        }
        (None, String::new())
    })
    .await
    .expect("closed in time")
}

async fn bad_credentials_close_with_4403(app: TestApp) {
    let mut socket = connect(&app).await;
    let init = json!({ "type": "connection_init", "payload": { "Authorization": "Bearer forged.token.here" } });
    socket.send(Message::text(init.to_string())).await.unwrap();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(Ok(msg)) = socket.next().await {
            if let Message::Close(frame) = msg {
                return frame.map(|f| f.code);
            }
        }
        None
    })
    .await
    .expect("closed within 5 s");
    assert_eq!(closed, Some(CloseCode::Library(4403)));
}

/// graphql-transport-ws (the graphql-ws project's PROTOCOL.md): `subscribe` before the
/// acknowledgement closes with 4401; an id reused while its operation runs with 4409
/// (a completed one may be reused); a message that is not JSON, of an unknown type,
/// a `subscribe` without an id, or a `connection_init` whose payload is not an object,
/// with 4400 and a reason within RFC 6455's 123 bytes.
async fn protocol_violations_close_with_the_protocols_codes(app: TestApp) {
    let acme = app.tenant("acme").await;
    let token = acme.token(sequestra::auth::Role::Sender).to_owned();
    const TICKS: &str = "subscription { serverTime(intervalSeconds: 1) }";

    let mut socket = connect(&app).await;
    subscribe(&mut socket, "1", TICKS, json!({})).await;
    let (code, reason) = close_code(&mut socket, 5).await;
    assert_eq!(code, Some(CloseCode::Library(4401)), "{reason}");
    assert_eq!(reason, "Unauthorized");

    let mut socket = connect(&app).await;
    init(&mut socket, &token).await;
    subscribe(&mut socket, "a", TICKS, json!({})).await;
    assert_eq!(next_json(&mut socket).await["type"], "next");
    // Completed by the client: the id is free again.
    socket
        .send(Message::text(
            json!({ "id": "a", "type": "complete" }).to_string(),
        ))
        .await
        .unwrap();
    subscribe(&mut socket, "a", TICKS, json!({})).await;
    // The server answers the first `complete`, then the new operation streams.
    let mut msg = next_json(&mut socket).await;
    if msg["type"] == "complete" {
        msg = next_json(&mut socket).await;
    }
    assert_eq!(
        (msg["type"].as_str(), msg["id"].as_str()),
        (Some("next"), Some("a")),
        "{msg}"
    );
    // A query completes by itself: its id is free again too.
    for _ in 0..2 {
        subscribe(&mut socket, "q", "{ serverTime }", json!({})).await;
        loop {
            let msg = next_json(&mut socket).await;
            if msg["id"] == "q" && msg["type"] == "complete" {
                break;
            }
        }
    }
    // Reusing the id of the subscription still running: closed.
    subscribe(&mut socket, "a", TICKS, json!({})).await;
    let (code, reason) = close_code(&mut socket, 5).await;
    assert_eq!(code, Some(CloseCode::Library(4409)), "{reason}");
    assert_eq!(reason, "Subscriber for a already exists");

    let long_id = "x".repeat(300);
    let mut socket = connect(&app).await;
    init(&mut socket, &token).await;
    subscribe(&mut socket, &long_id, TICKS, json!({})).await;
    assert_eq!(next_json(&mut socket).await["type"], "next");
    subscribe(&mut socket, &long_id, TICKS, json!({})).await;
    let (code, reason) = close_code(&mut socket, 5).await;
    assert_eq!(code, Some(CloseCode::Library(4409)));
    assert!(reason.len() <= 123, "{} bytes", reason.len());

    for (message, why) in [
        ("{not json".to_owned(), "not JSON"),
        (
            json!({ "type": "start", "id": "1" }).to_string(),
            "unknown type",
        ),
        (
            json!({ "type": "subscribe", "payload": { "query": "{ serverTime }" } }).to_string(),
            "no id",
        ),
    ] {
        let mut socket = connect(&app).await;
        init(&mut socket, &token).await;
        socket.send(Message::text(message)).await.unwrap();
        let (code, reason) = close_code(&mut socket, 5).await;
        assert_eq!(code, Some(CloseCode::Library(4400)), "{why}: {reason}");
        assert!(reason.contains(why), "{reason}");
    }
    let mut socket = connect(&app).await;
    socket
        .send(Message::text(
            json!({ "type": "connection_init", "payload": "Bearer x" }).to_string(),
        ))
        .await
        .unwrap();
    let (code, reason) = close_code(&mut socket, 5).await;
    assert_eq!(code, Some(CloseCode::Library(4400)), "{reason}");
}

/// The next text message, or `None` when none comes within `ms`.
async fn maybe_json(socket: &mut Socket, ms: u64) -> Option<Value> {
    tokio::time::timeout(std::time::Duration::from_millis(ms), next_json(socket))
        .await
        .ok()
}

/// graphql-transport-ws: "Operation execution error(s) in response to the Subscribe
/// message. This can occur before execution starts, usually due to validation
/// errors" is an `error` message, and the operation is over: no `complete` follows.
async fn request_errors_are_error_messages_without_complete(app: TestApp) {
    let acme = app.tenant("acme").await;
    let mut socket = connect(&app).await;
    init(&mut socket, acme.token(sequestra::auth::Role::Sender)).await;
    subscribe(
        &mut socket,
        "bad",
        "subscription { noSuchField }",
        json!({}),
    )
    .await;
    let msg = next_json(&mut socket).await;
    assert_eq!(msg["type"], "error", "{msg}");
    assert_eq!(msg["id"], "bad");
    let errors = msg["payload"].as_array().expect("payload is the errors");
    assert_eq!(errors[0]["extensions"]["code"], "BAD_USER_INPUT", "{msg}");
    // Variables that do not coerce: the same.
    subscribe(
        &mut socket,
        "vars",
        "subscription($s: Int!) { serverTime(intervalSeconds: $s) }",
        json!({ "s": "soon" }),
    )
    .await;
    let msg = next_json(&mut socket).await;
    assert_eq!(
        (msg["type"].as_str(), msg["id"].as_str()),
        (Some("error"), Some("vars")),
        "{msg}"
    );
    // A required variable left out: the operation never starts (GraphQL's
    // CoerceVariableValues), as over HTTP.
    subscribe(
        &mut socket,
        "missing",
        "subscription($s: Int!) { serverTime(intervalSeconds: $s) }",
        json!({}),
    )
    .await;
    let msg = next_json(&mut socket).await;
    assert_eq!(
        (msg["type"].as_str(), msg["id"].as_str()),
        (Some("error"), Some("missing")),
        "{msg}"
    );
    assert!(
        msg["payload"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("$s")),
        "{msg}"
    );
    // The document limits hold over the socket as over HTTP: a fragment bomb is
    // refused before it runs.
    let mut bomb = String::from("subscription { ...F0 }");
    for i in 0..30 {
        bomb.push_str(&format!(
            " fragment F{i} on Subscription {{ ...F{} ...F{} }}",
            i + 1,
            i + 1
        ));
    }
    bomb.push_str(" fragment F30 on Subscription { serverTime }");
    let msg = json!({ "id": "bomb", "type": "subscribe", "payload": { "query": bomb } });
    socket.send(Message::text(msg.to_string())).await.unwrap();
    let msg = next_json(&mut socket).await;
    assert_eq!(
        (msg["type"].as_str(), msg["id"].as_str()),
        (Some("error"), Some("bomb")),
        "{msg}"
    );
    assert_eq!(
        msg["payload"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
        "{msg}"
    );
    assert!(
        maybe_json(&mut socket, 300).await.is_none(),
        "nothing after an error"
    );
    // The id is free again, and a good operation on it runs.
    subscribe(
        &mut socket,
        "bad",
        "subscription { serverTime(intervalSeconds: 1) }",
        json!({}),
    )
    .await;
    let msg = next_json(&mut socket).await;
    assert_eq!(
        (msg["type"].as_str(), msg["id"].as_str()),
        (Some("next"), Some("bad")),
        "{msg}"
    );
}

/// Operations running at once: at most 2 on one socket, 3 for one user over all
/// their sockets; over either, that operation gets an `error` (RATE_LIMITED) and the
/// socket stays open; a completed operation frees its place.
async fn operations_are_capped_per_socket_and_per_user(app: TestApp) {
    let acme = app.tenant("acme").await;
    let token = acme.token(sequestra::auth::Role::Sender);
    let user = acme.user(sequestra::auth::Role::Sender).id;
    let ticking = "subscription { serverTime(intervalSeconds: 60) }";
    let mut a = connect(&app).await;
    init(&mut a, token).await;
    subscribe(&mut a, "a1", ticking, json!({})).await;
    subscribe(&mut a, "a2", ticking, json!({})).await;
    subscribe(&mut a, "a3", ticking, json!({})).await;
    let msg = past_ticks(&mut a).await;
    assert_eq!(
        (msg["type"].as_str(), msg["id"].as_str()),
        (Some("error"), Some("a3")),
        "{msg}"
    );
    assert_eq!(msg["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    assert!(
        msg["payload"][0]["message"]
            .as_str()
            .unwrap()
            .contains("one socket")
    );

    let mut b = connect(&app).await;
    init(&mut b, token).await;
    subscribe(&mut b, "b1", ticking, json!({})).await;
    subscribe(&mut b, "b2", ticking, json!({})).await;
    let msg = past_ticks(&mut b).await;
    assert_eq!(
        (msg["type"].as_str(), msg["id"].as_str()),
        (Some("error"), Some("b2")),
        "{msg}"
    );
    assert!(
        msg["payload"][0]["message"]
            .as_str()
            .unwrap()
            .contains("one user")
    );
    assert_eq!(app_running(&app, user).await, 3);

    // One of a's ends: b may start one more; closing a frees its other.
    a.send(Message::text(
        json!({ "id": "a1", "type": "complete" }).to_string(),
    ))
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    subscribe(&mut b, "b3", ticking, json!({})).await;
    let msg = past_ticks_of_others(&mut b, "b3").await;
    assert_eq!(
        (msg["type"].as_str(), msg["id"].as_str()),
        (Some("next"), Some("b3")),
        "{msg}"
    );
    drop(a);
    let mut freed = false;
    for _ in 0..50 {
        if app_running(&app, user).await == 2 {
            freed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(freed, "a closed socket frees its operations");
}

/// The first message that is not a `next` (the serverTime subscriptions tick once
/// at start).
async fn past_ticks(socket: &mut Socket) -> Value {
    loop {
        let msg = next_json(socket).await;
        if msg["type"] != "next" {
            return msg;
        }
    }
}

/// The first message that is not a `next` of another operation than `id`.
async fn past_ticks_of_others(socket: &mut Socket, id: &str) -> Value {
    loop {
        let msg = next_json(socket).await;
        if msg["type"] != "next" || msg["id"] == id {
            return msg;
        }
    }
}

/// How many operations the app counts as running for `user` now.
async fn app_running(app: &TestApp, user: uuid::Uuid) -> usize {
    app.ws_operations().running(user)
}

/// A `ping` carrying a fresh token of the same user renews the socket (answered with
/// a `pong` naming the new expiry); another user's token closes it with 4403.
async fn a_ping_renews_the_sockets_credential(app: TestApp) {
    let acme = app.tenant("acme").await;
    let sender = acme.user(sequestra::auth::Role::Sender).clone();
    let mut socket = connect(&app).await;
    init(&mut socket, &sender.token).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let fresh = app.sign_in("acme", &sender.email, &sender.password).await;
    let ping = json!({ "type": "ping", "payload": { "Authorization": format!("Bearer {fresh}") } });
    socket.send(Message::text(ping.to_string())).await.unwrap();
    let pong = next_json(&mut socket).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    let renewed =
        chrono::DateTime::parse_from_rfc3339(pong["payload"]["expiresAt"].as_str().unwrap())
            .unwrap();
    let first = app.tokens.verify(&sender.token).unwrap().exp;
    assert!(renewed.timestamp() > first, "the new expiry is later");
    // A plain ping is still answered by the protocol's pong.
    socket
        .send(Message::text(json!({ "type": "ping" }).to_string()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "pong");
    // Someone else's token is refused, and the socket closes.
    let other = acme.token(sequestra::auth::Role::Admin);
    let ping = json!({ "type": "ping", "payload": { "Authorization": format!("Bearer {other}") } });
    socket.send(Message::text(ping.to_string())).await.unwrap();
    let (code, reason) = close_code(&mut socket, 5).await;
    assert_eq!(code, Some(CloseCode::Library(4403)), "{reason}");
}
