//! The axum router: `/graphql`, `/graphql/ws`, `/webhooks/psp`, `/playground`,
//! `/health`, `/ready`, `/metrics`.
//! One concern per file; [`edge`] is the one middleware that runs the per-request
//! ones (request id, metrics, security headers).

mod client_ip;
mod edge;
pub mod fanout;
mod graphql;
mod health;
pub mod metrics;
mod playground;
pub mod rate_limit;
mod request_id;
pub mod security;
mod webhook;
pub mod ws;

use std::sync::Arc;

use axum::{Router, extract::DefaultBodyLimit, http::StatusCode, middleware, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::timeout::TimeoutLayer;

use crate::{
    config::Config,
    graphql::{AppSchema, context::Services},
};

pub use request_id::RequestId;

/// What every handler shares: one `Arc`, so handing it to a request clones a pointer,
/// not the services inside.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state behind [`AppState`].
pub struct Shared {
    pub config: Arc<Config>,
    /// The database, token service and limits (the same value the schema carries).
    pub services: Services,
    pub schema: AppSchema,
    pub metrics: PrometheusHandle,
    /// When the background jobs last completed a tick.
    pub jobs: crate::jobs::Heartbeat,
    /// The per-client rate limiter, shared by HTTP and WebSocket (none: unlimited).
    pub rate_limiter: Option<rate_limit::Shared>,
    /// Operations running over each user's WebSockets in this process.
    pub ws_operations: ws::PerUser,
    /// Subscriptions run once for the sockets that share them.
    pub subscriptions: fanout::Groups,
    /// Documents named by hash: registered ones and those clients sent (APQ).
    pub persisted: Arc<crate::graphql::persisted::Persisted>,
    /// The request metrics' handles.
    pub requests: metrics::Requests,
}

/// `/metrics` alone, for `SEQUESTRA_METRICS_LISTEN`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .with_state(state)
}

pub fn router(state: AppState) -> Router {
    // Uploads (multipart) may be as large as a proof file plus its form; the JSON
    // handler holds its own bodies to `SEQUESTRA_BODY_LIMIT_BYTES`.
    let body_limit = state.config.http.body_limit_bytes.max(
        state
            .config
            .escrow
            .proof_max_bytes
            .saturating_add(64 * 1024),
    );
    let timeout = state.config.http.request_timeout;
    let cors = security::cors(&state.config.http);
    let mut graphql_routes = Router::new()
        .route(
            "/graphql",
            get(graphql::get_handler).post(graphql::post_handler),
        )
        .route("/graphql/ws", get(ws::handler))
        .route(
            "/webhooks/psp",
            axum::routing::post(webhook::handler).layer(DefaultBodyLimit::max(
                crate::payments::webhook::MAX_BODY_BYTES,
            )),
        );
    if let Some(limiter) = &state.rate_limiter {
        graphql_routes = graphql_routes.layer(rate_limit::layer(limiter));
    }
    let mut router = Router::new().merge(graphql_routes);
    if state.config.http.playground {
        router = router
            .route("/playground", get(playground::redirect))
            .route("/playground/", get(playground::index))
            .route("/playground/assets/{*path}", get(playground::asset));
    }
    if state.config.http.metrics_listen.is_none() {
        router = router.route("/metrics", get(health::metrics));
    }
    router
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(cors)
        .layer(middleware::from_fn_with_state(state.clone(), edge::edge))
        .with_state(state)
}
