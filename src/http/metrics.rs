//! Request count and latency per route, for `/metrics`. The route label is the
//! matched route template, so label cardinality stays bounded. Also what is read at
//! each scrape (the database pool, the jobs' last tick) and the open WebSockets.

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    response::Response,
};

/// `http_requests_total{method, route, status}` and
/// `http_request_duration_seconds{method, route}`, their handles made once per
/// series ([`Handles`](crate::telemetry::Handles)).
#[derive(Default)]
pub struct Requests(crate::telemetry::Handles<(&'static str, u16), Series>);

#[derive(Clone)]
pub struct Series {
    requests: metrics::Counter,
    latency: metrics::Histogram,
}

/// A request being counted: its labels, taken before it runs.
pub(super) struct Tracked {
    method: &'static str,
    route: Option<MatchedPath>,
    started: std::time::Instant,
}

/// The method's label: the standard methods by name, any other `OTHER` (a client
/// could otherwise mint a series per made-up method).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

impl Tracked {
    /// Starts counting `request`, which arrived at `started`. The route label is the
    /// matched route's template (`unmatched` when none), so the labels stay bounded.
    pub(super) fn start(request: &Request, started: std::time::Instant) -> Self {
        Self {
            method: method_label(request.method()),
            route: request.extensions().get::<MatchedPath>().cloned(),
            started,
        }
    }

    /// Counts the answer and its latency.
    pub(super) fn finish(self, requests: &Requests, response: &Response) {
        let route = self.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        let status = response.status().as_u16();
        let series = requests.0.get(route, (self.method, status), || Series {
            requests: metrics::counter!(
                "http_requests_total",
                "method" => self.method,
                "route" => route.to_owned(),
                "status" => status.to_string()
            ),
            latency: metrics::histogram!(
                "http_request_duration_seconds",
                "method" => self.method,
                "route" => route.to_owned()
            ),
        });
        series.requests.increment(1);
        series.latency.record(self.started.elapsed().as_secs_f64());
    }
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
