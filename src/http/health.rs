//! `/health` (alive), `/ready` (database, migrations, background jobs; the PSP's
//! circuit, shown without making the server unready), `/metrics` (Prometheus).

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde_json::json;

use super::AppState;
use crate::db;

pub async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let database = match db::ping(&state.services.db).await {
        Ok(()) => json!({ "status": "ok" }),
        Err(err) => {
            tracing::warn!(error = %err, "readiness: database unreachable");
            json!({ "status": "unavailable" })
        }
    };
    let migrations = match db::pending_migrations(&state.services.db).await {
        Ok(pending) if pending.is_empty() => json!({ "status": "ok" }),
        Ok(pending) => json!({ "status": "pending", "pending": pending }),
        Err(err) => {
            tracing::warn!(error = %err, "readiness: cannot read migrations");
            json!({ "status": "unknown" })
        }
    };
    let jobs = if !state.config.escrow.jobs_enabled {
        json!({ "status": "disabled" })
    } else {
        let stale_after = i64::try_from(state.config.escrow.jobs_interval.as_millis())
            .unwrap_or(i64::MAX)
            .saturating_mul(3)
            .saturating_add(10_000);
        match state.jobs.age_ms() {
            None => json!({ "status": "starting" }),
            Some(age) if age <= stale_after => json!({ "status": "ok", "lastTickMsAgo": age }),
            Some(age) => json!({ "status": "stalled", "lastTickMsAgo": age }),
        }
    };
    // An open circuit does not make the server unready: everything but payouts works,
    // and the payouts wait as PENDING for the jobs; it is shown for operators.
    let psp = match state.services.psp.circuit_open_until() {
        None => json!({ "status": "ok", "name": state.services.psp.name() }),
        Some(until) => json!({
            "status": "circuit_open",
            "name": state.services.psp.name(),
            "until": until.to_rfc3339(),
        }),
    };
    let ok =
        database["status"] == "ok" && migrations["status"] == "ok" && jobs["status"] != "stalled";
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ok { "ready" } else { "not_ready" },
            "checks": { "database": database, "migrations": migrations, "jobs": jobs, "psp": psp },
        })),
    )
}

/// The Prometheus page; behind `SEQUESTRA_METRICS_TOKEN` when one is set.
pub async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if let Some(token) = &state.config.http.metrics_token {
        use secrecy::ExposeSecret;
        use sha2::{Digest, Sha256};
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Digests compared: the time taken tells nothing of the token.
        if Sha256::digest(presented.as_bytes()) != Sha256::digest(token.expose_secret().as_bytes())
        {
            return (
                axum::http::StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a metrics token is required",
            )
                .into_response();
        }
    }
    super::metrics::refresh(&state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
