//! `/playground`: GraphiQL for admin dashboards, built from `playground/` into
//! `assets/playground/` (committed; CI checks it matches a rebuild) and embedded
//! in the binary, so a Rust-only machine builds it and an offline network runs it.
//!
//! Everything is served from this origin under a strict Content-Security-Policy:
//! scripts and workers only from here (no inline script), connections only to
//! here (HTTP and WebSocket), no framing. Styles may be inline (the editor sets
//! them at run time) and fonts may be data: URIs (GraphiQL's stylesheet bundles
//! them); neither can run code.

use axum::{
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "assets/playground/"]
struct Assets;

/// The policy every `/playground` response carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    worker-src 'self'; style-src 'self' 'unsafe-inline'; font-src 'self' data:; \
    img-src 'self' data:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The page's own policy (`nosniff` and `no-referrer` come with every answer, see
/// `http::security`).
fn secure(mut headers: HeaderMap) -> HeaderMap {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
}

fn file(path: &str) -> Response {
    let Some(asset) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, secure(HeaderMap::new()), "not found").into_response();
    };
    let mut headers = HeaderMap::new();
    let mime = asset.metadata.mimetype();
    if let Ok(value) = HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    // Built assets carry a content hash in their names; the page itself does not.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    (secure(headers), asset.data.into_owned()).into_response()
}

/// `/playground` → `/playground/` (the page's relative paths need the slash).
pub async fn redirect() -> Redirect {
    Redirect::permanent("/playground/")
}

pub async fn index() -> Response {
    file("index.html")
}

pub async fn asset(Path(path): Path<String>) -> Response {
    file(&format!("assets/{path}"))
}
