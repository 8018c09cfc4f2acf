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
