//! Per client address on the GraphQL routes (tower-governor), keyed on the resolved
//! client address; over the limit: 429 with a GraphQL error body and `Retry-After`.

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

/// The layer, and a background task that forgets idle clients every minute so the
/// map of addresses stays small. `None` only for settings governor cannot express.
pub fn layer(http: &HttpConfig) -> Option<Layer> {
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
    Some(GovernorLayer::new(config).error_handler(too_many_requests))
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
