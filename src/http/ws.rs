//! `/graphql/ws`: graphql-transport-ws. Credentials come in `connection_init`
//! (`{"Authorization": "Bearer …"}`); bad ones close the socket with 4403, as the
//! protocol specifies (async-graphql's own pump would close with 1002). A socket
//! without `connection_init` in time is closed with 4408, and a socket whose
//! credential expires is closed with 4403 ("Token expired"): the client reconnects
//! with a fresh token, and every subscription is authorized again. The credential is
//! also checked again every `SEQUESTRA_WS_RECHECK_MS`: a socket whose session was
//! revoked (signed out, password changed, user deactivated) or whose API key was
//! revoked is closed with 4403 ("Session ended").

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

/// graphql-transport-ws: the client's `connection_init` was refused.
const CLOSE_FORBIDDEN: u16 = 4403;
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
            let input = stream
                .take_while(|frame| future::ready(frame.is_ok()))
                .filter_map(|frame| {
                    future::ready(match frame {
                        Ok(msg @ (Message::Text(_) | Message::Binary(_))) => Some(msg.into_data()),
                        _ => None,
                    })
                });
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
                    message = outgoing.next() => message,
                    _ = recheck.tick(), if expiry.is_some() => {
                        let Some(current) = accepted.lock().expect("ws lock").clone() else {
                            continue;
                        };
                        let expired = current.expires_at.is_some_and(|at| at <= Utc::now());
                        match authenticate_bearer(&db, &tokens, current.authorization.as_deref()).await {
                            Err(Error::Unauthenticated) => {
                                let reason = if expired { "Token expired" } else { "Session ended" };
                                let _ = sink
                                    .send(Message::Close(Some(CloseFrame {
                                        code: CLOSE_FORBIDDEN,
                                        reason: reason.into(),
                                    })))
                                    .await;
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
                        let _ = sink
                            .send(Message::Close(Some(CloseFrame {
                                code,
                                reason: reason.into(),
                            })))
                            .await;
                        break;
                    }
                };
                let Some(message) = message else { break };
                let frame = match message {
                    WsMessage::Text(text) => Message::Text(text.into()),
                    WsMessage::Close(code, reason) => {
                        let code = if refused.load(Ordering::SeqCst) {
                            CLOSE_FORBIDDEN
                        } else {
                            code
                        };
                        Message::Close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        }))
                    }
                };
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
        })
}
