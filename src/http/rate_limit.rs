//! Per client address on the GraphQL routes (tower-governor), keyed on the resolved
//! client address; over the limit: 429 with a GraphQL error body and `Retry-After`.
//! The same limiter counts every operation a WebSocket starts (`ws.rs`), so a socket
//! is no way around it.

use std::sync::Arc;

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::IntoResponse,
};
use governor::{clock::QuantaInstant, middleware::NoOpMiddleware};
use tower_governor::{GovernorError, GovernorLayer, governor::GovernorConfigBuilder};

use super::client_ip::ClientIpKey;
use crate::config::HttpConfig;

pub type Layer = GovernorLayer<ClientIpKey, NoOpMiddleware<QuantaInstant>, Body>;
/// The limiter's configuration and state, shared by the HTTP layer and the WebSocket.
pub type Shared =
    Arc<tower_governor::governor::GovernorConfig<ClientIpKey, NoOpMiddleware<QuantaInstant>>>;

/// The HTTP layer over the shared limiter.
pub fn layer(shared: &Shared) -> Layer {
    GovernorLayer::new(shared.clone()).error_handler(too_many_requests)
}

/// Counts one operation of `client` (a WebSocket `subscribe`): `Err(seconds to wait)`
/// over the limit.
pub fn check(shared: &Shared, client: std::net::IpAddr) -> Result<(), u64> {
    shared.limiter().check_key(&client).map_err(|not_until| {
        use governor::clock::{Clock, DefaultClock};
        not_until
            .wait_time_from(DefaultClock::default().now())
            .as_secs()
            .max(1)
    })
}

/// The limiter, and a background task that forgets idle clients every minute so the
/// map of addresses stays small. `None` only for settings governor cannot express.
pub fn shared(http: &HttpConfig) -> Option<Shared> {
    let period_ms = (1000 / u64::from(http.rate_limit_per_second)).max(1);
    let config = GovernorConfigBuilder::default()
        .per_millisecond(period_ms)
        .burst_size(http.rate_limit_burst)
        .key_extractor(ClientIpKey {
            trusted: Arc::new(http.trusted_proxies.clone()),
        })
        .finish()?;
    let limiter = config.limiter().clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            limiter.retain_recent();
        }
    });
    Some(Arc::new(config))
}

fn too_many_requests(err: GovernorError) -> axum::response::Response {
    let wait = match err {
        GovernorError::TooManyRequests { wait_time, .. } => wait_time.max(1),
        _ => 1,
    };
    let body = serde_json::json!({ "errors": [{
        "message": "too many requests; retry later",
        "extensions": { "code": "RATE_LIMITED", "retryAfter": wait },
    }] });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
        headers.insert(header::RETRY_AFTER, value);
    }
    response
}
