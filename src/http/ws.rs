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
//! the acknowledgement, 4409 for a running operation's id reused.

use std::{
    net::SocketAddr,
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

use super::{AppState, RequestId, graphql::request_context};
use crate::{
    auth::{Principal, authenticate_bearer},
    error::Error,
    graphql::loaders,
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
    close: tokio::sync::mpsc::UnboundedSender<(u16, String)>,
}

/// The operation ids a socket uses.
#[derive(Default)]
struct Ids {
    /// Running: a `subscribe` with one of these is a duplicate.
    running: std::collections::HashSet<String>,
    /// Completed by the client; the pump still answers each with a `complete` of its
    /// own, which must not end a new operation that reused the id meanwhile.
    completing: std::collections::HashSet<String>,
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
    /// Whether `data` may go on to the pump; when not, the close is requested and the
    /// input ends.
    fn admit(&self, data: &[u8]) -> bool {
        if !self.strict {
            return true;
        }
        match self.check(data) {
            Ok(()) => true,
            Err((code, reason)) => {
                let _ = self.close.send((code, close_reason(reason)));
                false
            }
        }
    }

    fn check(&self, data: &[u8]) -> Result<(), (u16, String)> {
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
        match kind {
            "connection_init" => match message.get("payload") {
                None | Some(serde_json::Value::Null | serde_json::Value::Object(_)) => Ok(()),
                Some(_) => Err(invalid("the connection_init payload must be an object")),
            },
            "ping" | "pong" => Ok(()),
            "subscribe" => {
                let id = id()?;
                if !message.get("payload").is_some_and(|p| p.is_object()) {
                    return Err(invalid("subscribe needs a payload object"));
                }
                if self.accepted.lock().expect("ws lock").is_none() {
                    return Err((CLOSE_UNAUTHORIZED, "Unauthorized".to_owned()));
                }
                if !self
                    .active
                    .lock()
                    .expect("ws lock")
                    .running
                    .insert(id.to_owned())
                {
                    return Err((
                        CLOSE_DUPLICATE_ID,
                        format!("Subscriber for {id} already exists"),
                    ));
                }
                Ok(())
            }
            "complete" => {
                let id = id()?;
                let mut ids = self.active.lock().expect("ws lock");
                if ids.running.remove(id) {
                    ids.completing.insert(id.to_owned());
                }
                Ok(())
            }
            other => Err(invalid(&format!("unknown type `{other}`"))),
        }
    }
}

/// A close frame with `code` and `reason`.
fn close_frame(code: u16, reason: impl Into<String>) -> Message {
    let reason: String = reason.into();
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// An operation the server ended (`complete`, or `error` before it ran) frees its id.
fn note_outgoing(active: &Mutex<Ids>, text: &str) {
    if !(text.contains("\"complete\"") || text.contains("\"error\"")) {
        return;
    }
    if let Ok(message) = serde_json::from_str::<serde_json::Value>(text)
        && matches!(message["type"].as_str(), Some("complete" | "error"))
        && let Some(id) = message["id"].as_str()
    {
        let mut ids = active.lock().expect("ws lock");
        // The answer to the client's own `complete` frees nothing more.
        if !ids.completing.remove(id) {
            ids.running.remove(id);
        }
    }
}

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
    let client = super::client_ip::resolve(peer.ip(), &headers, &state.config.http.trusted_proxies);
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            let refused = Arc::new(AtomicBool::new(false));
            // Set once `connection_init` is accepted.
            let accepted: Arc<Mutex<Option<Accepted>>> = Arc::default();
            let (db, tokens) = (state.services.db.clone(), state.services.tokens.clone());
            let recheck_every = state.config.http.ws_recheck;
            let mut recheck = tokio::time::interval_at(
                tokio::time::Instant::now() + recheck_every,
                recheck_every,
            );
            let init_deadline = tokio::time::Instant::now() + state.config.http.ws_init_timeout;
            let (mut sink, stream) = socket.split();
            let (close_tx, mut close_rx) = tokio::sync::mpsc::unbounded_channel();
            let gate = Gate {
                strict: protocol == WebSocketProtocols::GraphQLWS,
                accepted: accepted.clone(),
                active: Arc::default(),
                close: close_tx,
            };
            let active = gate.active.clone();
            let input = stream
                .take_while(|frame| future::ready(frame.is_ok()))
                .filter_map(|frame| {
                    future::ready(match frame {
                        Ok(msg @ (Message::Text(_) | Message::Binary(_))) => Some(msg.into_data()),
                        _ => None,
                    })
                })
                .take_while(move |data| future::ready(gate.admit(data)));
            let schema = state.schema.clone();
            let init_refused = refused.clone();
            let init_accepted = accepted.clone();
            let on_init = move |payload: serde_json::Value| async move {
                let authorization = payload
                    .get("Authorization")
                    .or_else(|| payload.get("authorization"))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
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
                let expires_at = match &principal {
                    Principal::User(user) => user.expires_at,
                    Principal::Anonymous => None,
                };
                *init_accepted.lock().expect("ws lock") = Some(Accepted {
                    expires_at,
                    authorization,
                });
                let context = request_context(&state, principal, request_id, client);
                let mut data = Data::default();
                loaders::attach(&mut data, context.db.as_ref(), None);
                data.insert(context);
                Ok(data)
            };
            let mut outgoing =
                std::pin::pin!(WebSocket::new(schema, input, protocol).on_connection_init(on_init));
            loop {
                // Read per frame: whether init was accepted, and its expiry (the
                // credential itself is cloned only when it is re-checked).
                let expiry = accepted.lock().expect("ws lock").as_ref().map(|a| a.expires_at);
                let deadline = match expiry {
                    None => Some((
                        init_deadline,
                        CLOSE_INIT_TIMEOUT,
                        "Connection initialisation timeout",
                    )),
                    Some(Some(expires_at)) => {
                        let left = (expires_at - Utc::now()).to_std().unwrap_or_default();
                        Some((
                            tokio::time::Instant::now() + left,
                            CLOSE_FORBIDDEN,
                            "Token expired",
                        ))
                    }
                    Some(None) => None,
                };
                let message = tokio::select! {
                    biased;
                    Some((code, reason)) = close_rx.recv() => {
                        let _ = sink.send(close_frame(code, reason)).await;
                        break;
                    }
                    message = outgoing.next() => message,
                    _ = recheck.tick(), if expiry.is_some() => {
                        let Some(current) = accepted.lock().expect("ws lock").clone() else {
                            continue;
                        };
                        let expired = current.expires_at.is_some_and(|at| at <= Utc::now());
                        match authenticate_bearer(&db, &tokens, current.authorization.as_deref()).await {
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
                    (code, reason) = async {
                        match deadline {
                            Some((at, code, reason)) => {
                                tokio::time::sleep_until(at).await;
                                (code, reason)
                            }
                            None => std::future::pending().await,
                        }
                    } => {
                        let _ = sink.send(close_frame(code, reason)).await;
                        break;
                    }
                };
                let Some(message) = message else {
                    // The input ended because the gate refused a message: its close.
                    if let Ok((code, reason)) = close_rx.try_recv() {
                        let _ = sink.send(close_frame(code, reason)).await;
                    }
                    break;
                };
                let frame = match message {
                    WsMessage::Text(text) => {
                        note_outgoing(&active, &text);
                        Message::Text(text.into())
                    }
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
