//! Tracing (JSON in production, readable in development), Prometheus metrics and Sentry.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use secrecy::ExposeSecret;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{Config, LogFormat};

/// Installs the global subscriber once. Spans' fields (the request id among them)
/// appear on every line logged inside them.
pub fn init_tracing(config: &Config) {
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Errors become Sentry events, warnings and info lines the breadcrumbs before them
    // (what sentry-tracing's former combined layer did; spans are not sent).
    let sentry_layer = config.sentry_dsn.as_ref().map(|_| {
        use sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer};
        use tracing_subscriber::{Layer, filter};
        ErrorLayer::new()
            .with_filter(filter::LevelFilter::ERROR)
            .and_then(
                BreadcrumbLayer::new().with_filter(filter::filter_fn(|meta| {
                    matches!(*meta.level(), tracing::Level::WARN | tracing::Level::INFO)
                })),
            )
    });
    let registry = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::filter_fn(|meta| {
            !carries_bind_values(meta)
        }))
        .with(filter)
        .with(sentry_layer);
    let result = match config.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .try_init(),
    };
    if result.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    }
}

/// Spans that record a statement with its bind values, and so would put password,
/// token and key hashes and sealed TOTP seeds into the log: SeaORM's `trace` spans
/// around each statement (its connections' and drivers' `execute`, `query_one`, …)
/// record the whole `Statement`, values included. They are never enabled, whatever
/// `SEQUESTRA_LOG` says. Statements are still logged, as SQL text without values, by
/// sqlx (`sqlx::query` at `debug`).
fn carries_bind_values(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("sea_orm") && *meta.level() == tracing::Level::TRACE
}

/// Starts Sentry when a DSN is configured; keep the guard alive for the process.
pub fn init_sentry(config: &Config) -> Option<sentry::ClientInitGuard> {
    let dsn = config.sentry_dsn.as_ref()?;
    // Config already refused a malformed DSN.
    let dsn = dsn.expose_secret().parse::<sentry::types::Dsn>().ok()?;
    let mut options = sentry::ClientOptions::default();
    options.dsn = Some(dsn);
    options.release = sentry::release_name!();
    options.environment = Some(
        if config.is_production() {
            "production"
        } else {
            "development"
        }
        .into(),
    );
    options.send_default_pii = false;
    Some(sentry::init(options))
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder (the `metrics` facade is global).
pub fn metrics_handle() -> PrometheusHandle {
    METRICS
        .get_or_init(|| {
            // Every `…_duration_seconds` histogram: the HTTP requests, the GraphQL
            // operations.
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".to_owned()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0,
                    ],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}
