//! What browsers and proxies are told on every answer, and who may call from where.
//!
//! - **CORS** (tower-http's layer): only the origins in `SEQUESTRA_CORS_ORIGINS` may call
//!   the API from a browser page of another origin (none by default); credentials
//!   (cookies) are never allowed — tokens travel in `Authorization`; a preflight is
//!   cached for `SEQUESTRA_CORS_MAX_AGE_SECS`.
//! - **WebSocket upgrades** carry an `Origin` from browsers but are not covered by CORS:
//!   [`origin_allowed`] admits the same list, the server's own origin (the playground),
//!   and clients that send none (not a browser).
//! - **Headers on every response**: `X-Content-Type-Options: nosniff`,
//!   `Referrer-Policy: no-referrer`, a Content-Security-Policy that lets nothing load or
//!   frame (`default-src 'none'; frame-ancestors 'none'`) unless the answer set its own
//!   (the playground's HTML), `Strict-Transport-Security` when `SEQUESTRA_HSTS` says the
//!   server is reached over TLS, and `Cache-Control: no-store` on every answer to a
//!   request that carried credentials.
//! - **Trusted hosts** (`SEQUESTRA_TRUSTED_HOSTS`, optional): a request naming another
//!   `Host` is refused with 400 before it reaches a route.

use axum::{
    extract::Request,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::HttpConfig;

/// The policy for answers that are not HTML pages: nothing may be loaded or framed.
pub const API_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";
const HSTS: &str = "max-age=63072000; includeSubDomains";

/// The request headers a cross-origin caller may send.
const ALLOWED_HEADERS: [&str; 5] = [
    "authorization",
    "content-type",
    "idempotency-key",
    "x-request-id",
    "sequestra-signature",
];

/// tower-http's CORS layer for `cfg`'s allow-list (empty: no cross-origin access).
pub fn cors(cfg: &HttpConfig) -> CorsLayer {
    let origins: Vec<HeaderValue> = cfg
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(ALLOWED_HEADERS.map(header::HeaderName::from_static))
        .expose_headers([header::HeaderName::from_static("x-request-id")])
        .allow_credentials(false)
        .max_age(cfg.cors_max_age)
}

/// Whether a WebSocket upgrade with these headers may proceed: no `Origin` (not a
/// browser), an allowed origin, or the server's own (its `Host`).
pub fn origin_allowed(headers: &HeaderMap, cfg: &HttpConfig) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    if cfg
        .cors_origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

/// The host a request names, without its port, lower-cased.
fn host_name(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = match host.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080`.
        Some(rest) => rest.split(']').next()?,
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    Some(name.to_ascii_lowercase())
}

/// A request naming a host outside `SEQUESTRA_TRUSTED_HOSTS`: answered 400.
pub(super) struct UntrustedHost;

impl IntoResponse for UntrustedHost {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, "untrusted host").into_response()
    }
}

/// Refuses a request naming an untrusted host; otherwise whether it carries
/// credentials (its answer must not be cached).
pub(super) fn admit(cfg: &HttpConfig, request: &Request) -> Result<bool, UntrustedHost> {
    if !cfg.trusted_hosts.is_empty()
        && !host_name(request.headers()).is_some_and(|name| cfg.trusted_hosts.contains(&name))
    {
        return Err(UntrustedHost);
    }
    Ok(request.headers().contains_key(header::AUTHORIZATION))
}

/// Sets the security headers on whatever answered a request [`admit`] let through.
pub(super) fn set_headers(cfg: &HttpConfig, credentials: bool, response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(API_CONTENT_SECURITY_POLICY),
        );
    }
    if cfg.hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    if credentials {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(origins: &[&str]) -> HttpConfig {
        let mut cfg = crate::config::Config::from_lookup(|_| None)
            .expect("defaults")
            .http;
        cfg.cors_origins = origins.iter().map(|o| (*o).to_owned()).collect();
        cfg
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn websocket_origins() {
        let cfg = cfg(&["https://app.example"]);
        let host = (header::HOST, "api.example:8443");
        assert!(
            origin_allowed(&headers(std::slice::from_ref(&host)), &cfg),
            "no Origin: not a browser"
        );
        assert!(origin_allowed(
            &headers(&[host.clone(), (header::ORIGIN, "https://app.example")]),
            &cfg
        ));
        assert!(
            origin_allowed(
                &headers(&[host.clone(), (header::ORIGIN, "https://api.example:8443")]),
                &cfg
            ),
            "the server's own pages"
        );
        assert!(!origin_allowed(
            &headers(&[host.clone(), (header::ORIGIN, "https://evil.example")]),
            &cfg
        ));
        assert!(!origin_allowed(
            &headers(&[host, (header::ORIGIN, "https://app.example.evil")]),
            &cfg
        ));
    }

    #[test]
    fn host_names_lose_their_port() {
        let name = |h: &str| host_name(&headers(&[(header::HOST, h)]));
        assert_eq!(name("API.example:8080").as_deref(), Some("api.example"));
        assert_eq!(name("api.example").as_deref(), Some("api.example"));
        assert_eq!(name("[::1]:8080").as_deref(), Some("::1"));
    }
}
