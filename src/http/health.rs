//! `/health` (alive), `/ready` (database, migrations, background jobs), `/metrics` (Prometheus).

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
            "checks": { "database": database, "migrations": migrations, "jobs": jobs },
        })),
    )
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
