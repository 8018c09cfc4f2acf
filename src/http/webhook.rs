//! `POST /webhooks/psp`: the one business REST route. Signed by the PSP (see
//! `payments::webhook`); answers 2xx for new events, duplicates and unknown
//! references (so the PSP stops retrying), 401 for a bad or missing signature (no
//! detail sent; recorded in `webhook_rejections` with the client address), 400 for
//! a malformed body, 413 for an oversized one.

use std::net::SocketAddr;

use axum::{
    Json,
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::AppState;
use crate::payments::webhook::{self, Event, Received};

pub const SIGNATURE_HEADER: &str = "sequestra-signature";

pub async fn handler(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.len() > webhook::MAX_BODY_BYTES {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({ "error": "body too large" })),
        )
            .into_response();
    }
    let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    if let Err(why) = webhook::verify(header, &body, &state.config.webhook_secrets, now) {
        let ip = super::client_ip::resolve(peer.ip(), &headers, &state.config.http.trusted_proxies);
        tracing::warn!(reason = ?why, %ip, "webhook refused: bad signature");
        metrics::counter!("webhook_refused_total", "reason" => "signature").increment(1);
        if let Err(err) =
            webhook::record_rejection(&state.services.db, Some(ip.to_string()), &why).await
        {
            tracing::error!(error = ?err, "could not record a refused webhook");
        }
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid signature" })),
        )
            .into_response();
    }
    let event = match Event::parse(&body) {
        Ok(event) => event,
        Err(message) => {
            metrics::counter!("webhook_refused_total", "reason" => "malformed").increment(1);
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response();
        }
    };
    match webhook::receive(
        &state.services.db,
        Some(&state.services.bus),
        state.services.psp.name(),
        &event,
    )
    .await
    {
        Ok(received) => {
            let outcome = match received {
                Received::Applied => "applied",
                Received::Duplicate => "duplicate",
                Received::Stale => "stale",
                Received::UnknownReference => {
                    tracing::warn!(event = %event.id, reference = %event.data.reference, "webhook for an unknown payment reference");
                    "unknown_reference"
                }
            };
            metrics::counter!("webhook_events_total", "outcome" => outcome).increment(1);
            (
                StatusCode::OK,
                Json(json!({ "received": true, "outcome": outcome })),
            )
                .into_response()
        }
        Err(err) => {
            tracing::error!(error = ?err, event = %event.id, "webhook could not be recorded");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": "internal error" })),
            )
                .into_response()
        }
    }
}
