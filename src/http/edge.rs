//! The one middleware every answer passes through, in this order: the request's id
//! and span ([`request_id`](super::request_id)), its count and latency
//! ([`metrics`](super::metrics)), the trusted-host check and the security headers
//! ([`security`](super::security)).
//!
//! One `from_fn` rather than three: axum's `from_fn` clones the whole service stack
//! below it (every layer and the route) and boxes a future for each request it runs,
//! so three of them nested were three deep clones and three boxed futures per
//! request where one is the least a middleware costs.

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tracing::Instrument;

use super::{AppState, metrics::Tracked, request_id, security};

pub async fn edge(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let (id, span) = request_id::assign(&mut request);
    let tracked = Tracked::start(&request, started);
    let cfg = &state.config.http;
    let mut response = match security::admit(cfg, &request) {
        Err(refused) => refused.into_response(),
        Ok(credentials) => {
            let mut response = next.run(request).instrument(span.clone()).await;
            security::set_headers(cfg, credentials, &mut response);
            response
        }
    };
    tracked.finish(&state.requests, &response);
    request_id::finish(&span, &id, started, &mut response);
    response
}
