//! Request count and latency per route, for `/metrics`. The route label is the
//! matched route template, so label cardinality stays bounded. Also what is read at
//! each scrape (the database pool, the jobs' last tick) and the open WebSockets.

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};

pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// One open WebSocket, counted in `websocket_connections` while it lives.
pub struct OpenSocket(());

impl OpenSocket {
    /// Counts a socket that just opened.
    pub fn count() -> Self {
        metrics::gauge!("websocket_connections").increment(1.0);
        OpenSocket(())
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        metrics::gauge!("websocket_connections").decrement(1.0);
    }
}

/// Sets the gauges that are read, not counted: the database pool's connections (in
/// use, idle, the most it may open) and how long ago the jobs last completed a tick.
pub fn refresh(state: &super::Shared) {
    let db = &state.services.db;
    let (size, idle) = match sea_orm::ConnectionTrait::get_database_backend(db) {
        sea_orm::DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        }
        _ => {
            let pool = db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        }
    };
    let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
    metrics::gauge!("db_pool_connections", "state" => "in_use").set(f64::from(size - idle));
    metrics::gauge!("db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("db_pool_max_connections")
        .set(f64::from(state.config.database.max_connections));
    if let Some(age) = state.jobs.age_ms() {
        metrics::gauge!("jobs_last_tick_age_seconds").set(age as f64 / 1000.0);
    }
}
