//! `/graphql/ws`: graphql-transport-ws. Credentials come in `connection_init`
//! (`{"Authorization": "Bearer …"}`); bad ones close the socket with 4403, as the
//! protocol specifies (async-graphql's own pump would close with 1002). A socket
//! without `connection_init` in time is closed with 4408, and a socket whose
//! credential expires is closed with 4403 ("Token expired"): the client reconnects
//! with a fresh token, and every subscription is authorized again. The credential is
//! also checked again every `SEQUESTRA_WS_RECHECK_MS`: a socket whose session was
//! revoked (signed out, password changed, user deactivated) or whose API key was
//! revoked is closed with 4403 ("Session ended").
//!
//! What the client sends is held to graphql-transport-ws before async-graphql's pump
//! sees it (see [`Gate`]): 4400 for an invalid message, 4401 for `subscribe` before
//! the acknowledgement, 4409 for a running operation's id reused. Every `subscribe`
//! counts against the client address's rate limit (the one HTTP requests count
//! against) and against caps on operations running at once per socket and per user;
//! over either, that operation gets an `error` message with `RATE_LIMITED` and the
//! socket stays open. A request error (a document that does not validate, variables
//! that do not coerce, a document over the limits) is answered with an `error`
//! message and no `complete`, as the protocol says (async-graphql's pump would send
//! `next` and `complete`).
//!
//! A client hands the socket a fresh token before the old one expires with a `ping`
//! whose payload carries it (`{"type":"ping","payload":{"Authorization":"Bearer …"}}`):
//! the token must be valid and of the same user; the socket then lives to the new
//! token's expiry and answers `pong` with `{"expiresAt": …}`. Any other credential
//! there closes the socket with 4403.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use async_graphql::{
    Data,
    http::{ALL_WEBSOCKET_PROTOCOLS, WebSocket, WebSocketProtocols, WsMessage},
};
use axum::{
    Extension,
    extract::{
        ConnectInfo, State, WebSocketUpgrade,
        ws::{CloseFrame, Message},
    },
    http::{HeaderMap, header},
    response::Response,
};
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt, future};
use uuid::Uuid;

use super::{AppState, RequestId, graphql::request_context};
use crate::{
    auth::{Principal, authenticate_bearer},
    error::Error,
    graphql::{loaders, persisted::Persisted},
};

/// graphql-transport-ws: a message of a type or shape the protocol does not define.
const CLOSE_BAD_REQUEST: u16 = 4400;
/// graphql-transport-ws: `subscribe` before the connection was acknowledged.
const CLOSE_UNAUTHORIZED: u16 = 4401;
/// graphql-transport-ws: the client's `connection_init` was refused.
const CLOSE_FORBIDDEN: u16 = 4403;
/// graphql-transport-ws: a `subscribe` reused the id of an operation still running.
const CLOSE_DUPLICATE_ID: u16 = 4409;
/// graphql-transport-ws: no `connection_init` in time.
const CLOSE_INIT_TIMEOUT: u16 = 4408;

/// What an accepted `connection_init` brought.
#[derive(Clone)]
struct Accepted {
    /// When the credential expires (none: an API key without expiry).
    expires_at: Option<DateTime<Utc>>,
    /// The credential itself, to check it again.
    authorization: Option<String>,
    /// Whose socket it is (none: anonymous).
    user: Option<Uuid>,
}

/// Operations running over each user's WebSockets in this process.
#[derive(Clone, Default)]
pub struct PerUser(Arc<Mutex<HashMap<Uuid, usize>>>);

impl PerUser {
    /// Counts one more operation of `user` unless they already run `max`.
    fn try_add(&self, user: Uuid, max: usize) -> bool {
        let mut counts = self.0.lock().expect("ws lock");
        let count = counts.entry(user).or_default();
        if *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    fn remove(&self, user: Uuid, n: usize) {
        let mut counts = self.0.lock().expect("ws lock");
        if let Some(count) = counts.get_mut(&user) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                counts.remove(&user);
            }
        }
    }

    /// Operations `user` runs now (for tests and metrics).
    pub fn running(&self, user: Uuid) -> usize {
        self.0
            .lock()
            .expect("ws lock")
            .get(&user)
            .copied()
            .unwrap_or(0)
    }
}

/// Where the gate's requests go to the socket's loop. futures-channel's queue
/// allocates per message; tokio's allocates a block of 32 slots and a padded channel
/// up front (~1.5 KiB for every idle socket).
type Controls = futures_channel::mpsc::UnboundedSender<Control>;

/// What the gate asks the socket's loop to do.
enum Control {
    /// Send this text frame (an answer the pump does not give).
    Reply(String),
    /// Check this credential, of the same user, and live to its expiry.
    Renew(Option<String>),
    /// Close with this code and reason.
    Close(u16, String),
}

/// The limits a socket's operations are held to.
struct OperationLimits {
    rate: Option<super::rate_limit::Shared>,
    client: IpAddr,
    per_socket: usize,
    per_user: usize,
    users: PerUser,
}

/// The protocol's own rules on what the client sends (graphql-transport-ws, as the
/// graphql-ws project's PROTOCOL.md states them), checked before a message reaches
/// async-graphql's pump: an invalid message closes with 4400, `subscribe` before the
/// connection is acknowledged with 4401, a `subscribe` reusing a running operation's
/// id with 4409. The legacy `graphql-ws` sub-protocol is passed through unchecked.
struct Gate {
    strict: bool,
    accepted: Arc<Mutex<Option<Accepted>>>,
    /// Ids of operations still running (added on `subscribe`, removed on either
    /// side's `complete` and on the server's `error`).
    active: Arc<Mutex<Ids>>,
    limits: OperationLimits,
    control: Controls,
    /// Set once a close was asked for: nothing more reaches the pump.
    closed: AtomicBool,
}

/// The operation ids a socket uses.
#[derive(Default)]
struct Ids {
    /// Running: a `subscribe` with one of these is a duplicate.
    running: HashSet<String>,
    /// Completed by the client; the pump still answers each with a `complete` of its
    /// own, which must not end a new operation that reused the id meanwhile.
    completing: HashSet<String>,
    /// Answered with `error` (a request error): the pump's `complete` after it is not
    /// sent.
    errored: HashSet<String>,
    /// Whose operations these are, counted in the process-wide tally.
    owner: Option<(Uuid, PerUser)>,
}

impl Ids {
    /// `id` stopped running: its place in the per-user tally is freed.
    fn end(&mut self, id: &str) -> bool {
        let ended = self.running.remove(id);
        if ended && let Some((user, users)) = &self.owner {
            users.remove(*user, 1);
        }
        ended
    }
}

impl Drop for Ids {
    fn drop(&mut self) {
        if let Some((user, users)) = &self.owner {
            users.remove(*user, self.running.len());
        }
    }
}

/// An `error` message for operation `id`: `RATE_LIMITED`, with `retryAfter` seconds.
fn rate_limited(id: &str, message: &str, retry_after: u64) -> String {
    serde_json::json!({
        "id": id,
        "type": "error",
        "payload": [{
            "message": message,
            "extensions": { "code": "RATE_LIMITED", "retryAfter": retry_after },
        }],
    })
    .to_string()
}

/// Persisted operations over WebSocket: a `subscribe` (or the legacy protocol's
/// `start`) whose document is named only by `extensions.persistedQuery`, or that must
/// be registered (`SEQUESTRA_PERSISTED_ONLY`), gets its document put in place, or is
/// answered with an `error` for its id and goes no further. Anything else (other
/// messages, a `subscribe` before the acknowledgement or reusing a running id, which
/// the [`Gate`] closes the socket for) passes unchanged.
async fn persisted_subscribe(
    persisted: &Persisted,
    accepted: &Mutex<Option<Accepted>>,
    active: &Mutex<Ids>,
    control: &Controls,
    data: axum::body::Bytes,
) -> Option<axum::body::Bytes> {
    if !persisted.only() && !data.windows(14).any(|w| w == b"persistedQuery") {
        return Some(data);
    }
    let Ok(mut message) = serde_json::from_slice::<serde_json::Value>(&data) else {
        return Some(data);
    };
    let kind = message.get("type").and_then(|t| t.as_str());
    if !matches!(kind, Some("subscribe" | "start")) || accepted.lock().expect("ws lock").is_none() {
        return Some(data);
    }
    let Some(id) = message
        .get("id")
        .and_then(|i| i.as_str())
        .map(str::to_owned)
    else {
        return Some(data);
    };
    if active.lock().expect("ws lock").running.contains(&id) {
        return Some(data);
    }
    let Some(payload) = message.get_mut("payload").and_then(|p| p.as_object_mut()) else {
        return Some(data);
    };
    let query = payload
        .get("query")
        .and_then(|q| q.as_str())
        .map(str::to_owned);
    let extensions = payload.get("extensions").cloned();
    match persisted.document(query.clone(), extensions.as_ref()).await {
        Ok(document) if query.as_ref() == Some(&document) => Some(data),
        Ok(document) => {
            payload.insert("query".to_owned(), serde_json::Value::String(document));
            serde_json::to_vec(&message).ok().map(Into::into)
        }
        Err(refused) => {
            if let crate::graphql::persisted::Refused::Internal(err) = &refused {
                tracing::error!(error = ?err, "cannot read the persisted operations");
            }
            let _ = control.unbounded_send(Control::Reply(
                serde_json::json!({
                    "id": id,
                    "type": "error",
                    "payload": [{
                        "message": refused.message(),
                        "extensions": { "code": refused.code().as_str() },
                    }],
                })
                .to_string(),
            ));
            None
        }
    }
}

/// A close reason fits RFC 6455's 123 bytes.
fn close_reason(text: String) -> String {
    if text.len() <= 123 {
        return text;
    }
    let mut end = 120;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

impl Gate {
    /// Whether `data` goes on to the pump. When not, the gate has either answered it
    /// itself or asked for the socket to close (after which nothing passes).
    fn admit(&self, data: &[u8]) -> bool {
        if self.closed.load(Ordering::SeqCst) {
            return false;
        }
        if !self.strict {
            return true;
        }
        match self.check(data) {
            Ok(pass) => pass,
            Err((code, reason)) => {
                self.closed.store(true, Ordering::SeqCst);
                let _ = self
                    .control
                    .unbounded_send(Control::Close(code, close_reason(reason)));
                false
            }
        }
    }

    /// `Ok(true)`: pass it on; `Ok(false)`: answered here; `Err`: close.
    fn check(&self, data: &[u8]) -> Result<bool, (u16, String)> {
        let invalid = |why: &str| {
            (
                CLOSE_BAD_REQUEST,
                format!("Invalid message received: {why}"),
            )
        };
        let message: serde_json::Value =
            serde_json::from_slice(data).map_err(|_| invalid("not JSON"))?;
        let kind = message
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or_else(|| invalid("no type"))?;
        let id = || {
            message
                .get("id")
                .and_then(|i| i.as_str())
                .filter(|i| !i.is_empty())
                .ok_or_else(|| invalid("no id"))
        };
        let payload = message.get("payload");
        match kind {
            "connection_init" => match payload {
                None | Some(serde_json::Value::Null | serde_json::Value::Object(_)) => Ok(true),
                Some(_) => Err(invalid("the connection_init payload must be an object")),
            },
            "ping" => match payload.and_then(authorization_in) {
                // A fresh credential for this socket: the loop checks it and answers
                // the `pong` itself once it holds.
                Some(authorization) if self.accepted.lock().expect("ws lock").is_some() => {
                    let _ = self.control.unbounded_send(Control::Renew(authorization));
                    Ok(false)
                }
                _ => Ok(true),
            },
            "pong" => Ok(true),
            "subscribe" => {
                let id = id()?;
                if !payload.is_some_and(|p| p.is_object()) {
                    return Err(invalid("subscribe needs a payload object"));
                }
                let Some(user) = self
                    .accepted
                    .lock()
                    .expect("ws lock")
                    .as_ref()
                    .map(|a| a.user)
                else {
                    return Err((CLOSE_UNAUTHORIZED, "Unauthorized".to_owned()));
                };
                let mut ids = self.active.lock().expect("ws lock");
                if ids.running.contains(id) {
                    return Err((
                        CLOSE_DUPLICATE_ID,
                        format!("Subscriber for {id} already exists"),
                    ));
                }
                let limits = &self.limits;
                let refuse = |message: &str, wait: u64| {
                    let _ = self
                        .control
                        .unbounded_send(Control::Reply(rate_limited(id, message, wait)));
                    Ok(false)
                };
                if let Some(rate) = &limits.rate
                    && let Err(wait) = super::rate_limit::check(rate, limits.client)
                {
                    return refuse("too many requests; retry later", wait);
                }
                if ids.running.len() >= limits.per_socket {
                    return refuse(
                        &format!(
                            "at most {} operations run at once on one socket",
                            limits.per_socket
                        ),
                        1,
                    );
                }
                if let Some(user) = user {
                    if !limits.users.try_add(user, limits.per_user) {
                        return refuse(
                            &format!(
                                "at most {} operations run at once for one user",
                                limits.per_user
                            ),
                            1,
                        );
                    }
                    ids.owner
                        .get_or_insert_with(|| (user, limits.users.clone()));
                }
                ids.running.insert(id.to_owned());
                Ok(true)
            }
            "complete" => {
                let id = id()?;
                let mut ids = self.active.lock().expect("ws lock");
                if ids.end(id) {
                    ids.completing.insert(id.to_owned());
                }
                Ok(true)
            }
            other => Err(invalid(&format!("unknown type `{other}`"))),
        }
    }
}

/// The credential a `connection_init` or `ping` payload carries: `None` when it
/// names none, `Some(None)` when the key is there but not a string.
fn authorization_in(payload: &serde_json::Value) -> Option<Option<String>> {
    let value = payload
        .get("Authorization")
        .or_else(|| payload.get("authorization"))?;
    Some(value.as_str().map(str::to_owned))
}

/// A close frame with `code` and `reason`.
fn close_frame(code: u16, reason: impl Into<String>) -> Message {
    let reason: String = reason.into();
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// What the pump sends, as the protocol wants it sent: an operation the server ended
/// (`complete`, or `error`) frees its id; a `next` that carries a request error (no
/// data, errors without a path: the operation never ran) becomes `error`, and the
/// `complete` after it is dropped. `None`: send nothing.
fn shape_outgoing(active: &Mutex<Ids>, text: String) -> Option<String> {
    let interesting = text.contains("\"complete\"")
        || text.contains("\"error\"")
        || (text.contains("\"next\"") && text.contains("\"errors\""));
    if !interesting {
        return Some(text);
    }
    let Ok(message) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Some(text);
    };
    let Some(id) = message["id"].as_str() else {
        return Some(text);
    };
    let mut ids = active.lock().expect("ws lock");
    match message["type"].as_str() {
        Some("next") => {
            let payload = &message["payload"];
            let errors = payload["errors"].as_array();
            let not_run = payload.get("data").is_none_or(serde_json::Value::is_null)
                && errors
                    .is_some_and(|e| !e.is_empty() && e.iter().all(|e| e.get("path").is_none()));
            if !not_run {
                return Some(text);
            }
            ids.end(id);
            ids.errored.insert(id.to_owned());
            Some(
                serde_json::json!({ "id": id, "type": "error", "payload": payload["errors"] })
                    .to_string(),
            )
        }
        Some("complete") => {
            if ids.errored.remove(id) {
                return None;
            }
            // The answer to the client's own `complete` frees nothing more.
            if !ids.completing.remove(id) {
                ids.end(id);
            }
            Some(text)
        }
        Some("error") => {
            ids.end(id);
            Some(text)
        }
        _ => Some(text),
    }
}

/// A fresh credential for an open socket: valid, of the socket's user; the socket
/// then expires with it. `Ok(new expiry)`, or `Err(close reason)`.
async fn renew(
    db: &sea_orm::DatabaseConnection,
    tokens: &crate::auth::TokenService,
    accepted: &Mutex<Option<Accepted>>,
    authorization: Option<String>,
) -> Result<Option<DateTime<Utc>>, &'static str> {
    let user = accepted
        .lock()
        .expect("ws lock")
        .as_ref()
        .and_then(|a| a.user);
    let principal = authenticate_bearer(db, tokens, authorization.as_deref())
        .await
        .map_err(|err| {
            if !matches!(err, Error::Unauthenticated) {
                tracing::error!(error = ?err, "websocket credential renewal failed");
            }
            "Forbidden"
        })?;
    let Principal::User(renewed) = principal else {
        return Err("Forbidden");
    };
    if Some(renewed.user_id) != user {
        return Err("Forbidden: a renewed credential must be the same user's");
    }
    if let Some(current) = accepted.lock().expect("ws lock").as_mut() {
        current.expires_at = renewed.expires_at;
        current.authorization = authorization;
    }
    Ok(renewed.expires_at)
}

/// What a socket reads into per call (tungstenite's default is 128 KiB). Kept for the
/// socket's life, so small: `connection_init` with a token and a `subscribe` fit in
/// one read; a longer message takes a few.
const WS_READ_BUFFER: usize = 1024;

pub async fn handler(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The first sub-protocol we speak; graphql-transport-ws when none is named.
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|list| {
            list.split(',')
                .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
        })
        .unwrap_or(WebSocketProtocols::GraphQLWS);
    if !super::security::origin_allowed(&headers, &state.config.http) {
        use axum::response::IntoResponse;
        return (
            axum::http::StatusCode::FORBIDDEN,
            "this origin may not open a WebSocket here",
        )
            .into_response();
    }
    let client = super::client_ip::resolve(peer.ip(), &headers, &state.config.http.trusted_proxies);
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        // tungstenite reserves 128 KiB to read into and buffers writes up to 128 KiB
        // per socket by default: most of an idle socket's memory. A GraphQL message
        // is small; a larger one is read in several chunks, and each answer is
        // written as it comes. A message is bounded like an HTTP request body.
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(state.config.http.body_limit_bytes)
        .on_upgrade(move |socket| async move {
            // Counted in `websocket_connections` until this task ends.
            let _open = super::metrics::OpenSocket::count();
            let refused = Arc::new(AtomicBool::new(false));
            // Set once `connection_init` is accepted.
            let accepted: Arc<Mutex<Option<Accepted>>> = Arc::default();
            // The services the loop re-checks credentials with, behind the state's one
            // `Arc` (a clone of the token service itself would copy its keys per socket).
            let shared = state.clone();
            let recheck_every = state.config.http.ws_recheck;
            let mut recheck = tokio::time::interval_at(
                tokio::time::Instant::now() + recheck_every,
                recheck_every,
            );
            let init_deadline = tokio::time::Instant::now() + state.config.http.ws_init_timeout;
            let (mut sink, stream) = socket.split();
            let (control_tx, mut control_rx) = futures_channel::mpsc::unbounded();
            let gate = Gate {
                strict: protocol == WebSocketProtocols::GraphQLWS,
                accepted: accepted.clone(),
                active: Arc::default(),
                limits: OperationLimits {
                    rate: state.rate_limiter.clone(),
                    client,
                    per_socket: state.config.http.ws_max_operations_per_socket,
                    per_user: state.config.http.ws_max_operations_per_user,
                    users: state.ws_operations.clone(),
                },
                control: control_tx,
                closed: AtomicBool::new(false),
            };
            let active = gate.active.clone();
            let persisted = (
                state.persisted.clone(),
                accepted.clone(),
                gate.active.clone(),
                gate.control.clone(),
            );
            let input = stream
                .take_while(|frame| future::ready(frame.is_ok()))
                .filter_map(|frame| {
                    future::ready(match frame {
                        Ok(msg @ (Message::Text(_) | Message::Binary(_))) => Some(msg.into_data()),
                        _ => None,
                    })
                })
                .then(move |data| {
                    let (persisted, accepted, active, control) = persisted.clone();
                    // Boxed: the lookup may read the database, and a future held inline
                    // would size every socket's task for it while it idles.
                    Box::pin(async move {
                        persisted_subscribe(&persisted, &accepted, &active, &control, data).await
                    })
                })
                .filter_map(future::ready)
                .filter(move |data| future::ready(gate.admit(data)));
            let executor = super::fanout::Executor {
                schema: state.schema.clone(),
                groups: state.subscriptions.clone(),
            };
            let init_refused = refused.clone();
            let init_accepted = accepted.clone();
            let on_init = move |payload: serde_json::Value| async move {
                let authorization = authorization_in(&payload).flatten();
                let principal = match authenticate_bearer(
                    &state.services.db,
                    &state.services.tokens,
                    authorization.as_deref(),
                )
                .await
                {
                    Ok(principal) => principal,
                    Err(err) => {
                        if !matches!(err, Error::Unauthenticated) {
                            tracing::error!(error = ?err, "websocket authentication failed");
                        }
                        init_refused.store(true, Ordering::SeqCst);
                        return Err(async_graphql::Error::new("Forbidden"));
                    }
                };
                let (expires_at, user) = match &principal {
                    Principal::User(user) => (user.expires_at, Some(user.user_id)),
                    Principal::Anonymous => (None, None),
                };
                *init_accepted.lock().expect("ws lock") = Some(Accepted {
                    expires_at,
                    authorization,
                    user,
                });
                let audience = super::fanout::Audience::of(&principal, client);
                let context = request_context(&state, principal, request_id, client);
                let mut data = Data::default();
                if let Some(audience) = audience {
                    data.insert(audience);
                }
                loaders::attach(&mut data, context.db.as_ref(), None);
                data.insert(context);
                Ok(data)
            };
            let mut outgoing =
                std::pin::pin!(WebSocket::new(executor, input, protocol).on_connection_init(on_init));
            // One timer for the socket's life, moved when what it waits for changes (a
            // timer made per frame was a registration in the runtime's timer wheel and
            // its removal for every message sent).
            let timer = tokio::time::sleep_until(init_deadline);
            tokio::pin!(timer);
            // The expiry the timer is set for (`None`: the `connection_init` deadline).
            let mut timed: Option<Option<DateTime<Utc>>> = None;
            loop {
                // Read per frame: whether init was accepted, and its expiry (the
                // credential itself is cloned only when it is re-checked).
                let expiry = accepted.lock().expect("ws lock").as_ref().map(|a| a.expires_at);
                if expiry != timed {
                    if let Some(Some(expires_at)) = expiry {
                        let left = (expires_at - Utc::now()).to_std().unwrap_or_default();
                        timer.as_mut().reset(tokio::time::Instant::now() + left);
                    }
                    timed = expiry;
                }
                let (timeout_code, timeout_reason) = match expiry {
                    None => (CLOSE_INIT_TIMEOUT, "Connection initialisation timeout"),
                    _ => (CLOSE_FORBIDDEN, "Token expired"),
                };
                // An API key without expiry: nothing to wait for.
                let armed = !matches!(expiry, Some(None));
                let message = tokio::select! {
                    biased;
                    Some(control) = control_rx.next() => match control {
                        Control::Close(code, reason) => {
                            let _ = sink.send(close_frame(code, reason)).await;
                            break;
                        }
                        Control::Reply(text) => {
                            if sink.send(Message::Text(text.into())).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        Control::Renew(authorization) => {
                            let renewed = Box::pin(renew(
                                &shared.services.db,
                                &shared.services.tokens,
                                &accepted,
                                authorization,
                            ));
                            match renewed.await {
                                Ok(expires_at) => {
                                    let pong = serde_json::json!({
                                        "type": "pong",
                                        "payload": { "expiresAt": expires_at },
                                    });
                                    if sink.send(Message::Text(pong.to_string().into())).await.is_err() {
                                        break;
                                    }
                                    continue;
                                }
                                Err(reason) => {
                                    let _ = sink.send(close_frame(CLOSE_FORBIDDEN, reason)).await;
                                    break;
                                }
                            }
                        }
                    },
                    message = outgoing.next() => message,
                    _ = recheck.tick(), if expiry.is_some() => {
                        let Some(current) = accepted.lock().expect("ws lock").clone() else {
                            continue;
                        };
                        let expired = current.expires_at.is_some_and(|at| at <= Utc::now());
                        // Boxed, as above: the check is rare, the socket's task lives long.
                        let check = Box::pin(authenticate_bearer(
                            &shared.services.db,
                            &shared.services.tokens,
                            current.authorization.as_deref(),
                        ));
                        match check.await {
                            Err(Error::Unauthenticated) => {
                                let reason = if expired { "Token expired" } else { "Session ended" };
                                let _ = sink.send(close_frame(CLOSE_FORBIDDEN, reason)).await;
                                break;
                            }
                            Err(err) => {
                                tracing::warn!(error = ?err, "websocket credential re-check failed; keeping the socket");
                            }
                            Ok(_) => {}
                        }
                        continue;
                    }
                    () = &mut timer, if armed => {
                        let _ = sink.send(close_frame(timeout_code, timeout_reason)).await;
                        break;
                    }
                };
                let Some(message) = message else {
                    // The input ended: if the gate asked for a close meanwhile, send it.
                    if let Ok(Control::Close(code, reason)) = control_rx.try_recv() {
                        let _ = sink.send(close_frame(code, reason)).await;
                    }
                    break;
                };
                let frame = match message {
                    WsMessage::Text(text) => match shape_outgoing(&active, text) {
                        Some(text) => Message::Text(text.into()),
                        None => continue,
                    },
                    WsMessage::Close(code, reason) => {
                        let code = if refused.load(Ordering::SeqCst) {
                            CLOSE_FORBIDDEN
                        } else {
                            code
                        };
                        close_frame(code, reason)
                    }
                };
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
        })
}
