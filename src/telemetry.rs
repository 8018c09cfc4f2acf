//! Tracing (JSON in production, readable in development), OpenTelemetry traces over
//! OTLP when configured, Prometheus metrics and Sentry.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use secrecy::ExposeSecret;
use tracing_subscriber::{EnvFilter, Layer, filter, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{Config, LogFormat};

/// Installs the global subscriber once. Spans' fields (the request id among them)
/// appear on every line logged inside them. With `SEQUESTRA_OTLP_ENDPOINT` set, spans
/// also go out as OpenTelemetry traces ([`Traces`]); keep the returned handle alive for
/// the process (dropping it sends what is left).
pub fn init_tracing(config: &Config) -> Traces {
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Errors become Sentry events, warnings and info lines the breadcrumbs before them
    // (what sentry-tracing's former combined layer did; spans are not sent).
    let sentry_layer = config.sentry_dsn.as_ref().map(|_| {
        use sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer};
        ErrorLayer::new()
            .with_filter(filter::LevelFilter::ERROR)
            .and_then(
                BreadcrumbLayer::new().with_filter(filter::filter_fn(|meta| {
                    matches!(*meta.level(), tracing::Level::WARN | tracing::Level::INFO)
                })),
            )
    });
    let log_layer = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
    };
    let (provider, trace_layer) = match config.otlp.as_ref().map(traces::provider) {
        Some(Ok(provider)) => {
            let layer = traces::layer(&provider);
            (Some(provider), Some(layer))
        }
        Some(Err(err)) => {
            eprintln!("traces are not exported: {err}");
            (None, None)
        }
        None => (None, None),
    };
    // `SEQUESTRA_LOG` filters the log and Sentry only: the traces take their own
    // spans (the request's, the operation's, each root field's) whatever the log level.
    // The most verbose level any layer takes: the log's (and Sentry's) filter's, or all
    // of them when traces are exported. Said as the subscriber's hint, it is also the
    // `log` crate's maximum level (the bridge is set to it), so a dependency's
    // `log::trace!` (tungstenite's, per WebSocket frame) is dropped at a comparison
    // instead of being handed to the subscriber to refuse.
    let most = if trace_layer.is_some() {
        filter::LevelFilter::TRACE
    } else {
        tracing_subscriber::layer::Filter::<tracing_subscriber::Registry>::max_level_hint(&filter)
            .unwrap_or(filter::LevelFilter::TRACE)
    };
    let result = tracing_subscriber::registry()
        .with(filter::filter_fn(|meta| !carries_bind_values(meta)).with_max_level_hint(most))
        .with(log_layer.and_then(sentry_layer).with_filter(filter))
        .with(trace_layer)
        .try_init();
    if result.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    }
    if let Some(otlp) = &config.otlp
        && provider.is_some()
    {
        tracing::info!(
            endpoint = %otlp.traces_url,
            sample_ratio = otlp.sample_ratio,
            "traces are exported over OTLP/HTTP"
        );
    }
    Traces { provider }
}

/// The trace exporter's lifetime: dropping it sends the spans still buffered.
pub struct Traces {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Traces {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // The batch processor's thread does the export and shutdown blocks until
            // it has: off the async runtime's threads.
            let _ = std::thread::spawn(move || provider.shutdown()).join();
        }
    }
}

/// OpenTelemetry traces: the exporter, the `traceparent` of incoming requests, and a
/// span per SQL statement.
pub mod traces {
    use std::sync::OnceLock;
    use std::time::SystemTime;

    use opentelemetry::{
        KeyValue,
        trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _},
    };
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::{Layer, filter, registry::LookupSpan};

    use crate::config::OtlpConfig;

    /// Set once traces are exported: the statement spans' tracer.
    static TRACER: OnceLock<SdkTracer> = OnceLock::new();

    pub(super) fn provider(config: &OtlpConfig) -> anyhow::Result<SdkTracerProvider> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(config.traces_url.clone())
            .build()?;
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("sequestra");
        }
        let resource = resource
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let _ = TRACER.set(provider.tracer("sequestra"));
        Ok(provider)
    }

    /// The layer that turns this crate's spans into OpenTelemetry spans; the events
    /// logged inside them (info and above) become their events. Other crates' spans
    /// are not traced (SeaORM's would carry bind values) but for the DataLoader's;
    /// their warnings are.
    pub(super) fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("sequestra"))
            .with_threads(false)
            .with_location(false)
            .with_filter(filter::filter_fn(|meta| {
                let ours = meta.target().starts_with("sequestra");
                if meta.is_span() {
                    // A DataLoader's batch runs on a task of its own in spans of
                    // async-graphql's (`start_fetch` or `immediate_load`, then
                    // `do_load`): traced, so its statements have a parent in the
                    // trace (not the per-key `load_one`/`load_many`).
                    ours || (meta.target().starts_with("async_graphql::dataloader")
                        && matches!(meta.name(), "start_fetch" | "immediate_load" | "do_load"))
                } else {
                    *meta.level()
                        <= if ours {
                            tracing::Level::INFO
                        } else {
                            tracing::Level::WARN
                        }
                }
            }))
    }

    /// Whether traces are exported (what is worth doing per request only then).
    pub fn enabled() -> bool {
        TRACER.get().is_some()
    }

    /// Makes `span` (a request's) the child of the trace its `traceparent` header
    /// names, when traces are exported and the header is well formed (W3C Trace
    /// Context); otherwise the request starts a trace of its own.
    pub fn continue_from(span: &tracing::Span, headers: &axum::http::HeaderMap) {
        if !enabled() || !headers.contains_key("traceparent") {
            return;
        }
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&opentelemetry_http::HeaderExtractor(headers))
        });
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }

    /// Records an attribute on `span`'s trace (not its log lines), when traced.
    pub fn record(span: &tracing::Span, key: &'static str, value: i64) {
        if enabled() {
            span.set_attribute(key, value);
        }
    }

    /// A span for one SQL statement that just ran, as the child of the span it ran in
    /// (a root field's, a request's) when that one is sampled; nothing otherwise (the
    /// jobs' statements outside a span are not traced). The statement's text is its
    /// SQL with placeholders: bind values are never recorded.
    pub fn statement(info: &sea_orm::metric::Info<'_>) {
        let Some(tracer) = TRACER.get() else {
            return;
        };
        let parent = tracing::Span::current().context();
        if !parent.span().span_context().is_sampled() {
            return;
        }
        let end = SystemTime::now();
        let sql = &info.statement.sql;
        let operation = sql
            .split(|c: char| !c.is_ascii_alphabetic())
            .find(|word| !word.is_empty())
            .unwrap_or("SQL")
            .to_ascii_uppercase();
        let system = match info.statement.db_backend {
            sea_orm::DbBackend::Postgres => "postgresql",
            sea_orm::DbBackend::Sqlite => "sqlite",
            sea_orm::DbBackend::MySql => "mysql",
        };
        let mut span = tracer
            .span_builder(operation.clone())
            .with_kind(SpanKind::Client)
            .with_start_time(end.checked_sub(info.elapsed).unwrap_or(end))
            .with_attributes([
                KeyValue::new("db.system.name", system),
                KeyValue::new("db.operation.name", operation),
                KeyValue::new("db.query.text", sql.clone()),
            ])
            .start_with_context(tracer, &parent);
        if info.failed {
            opentelemetry::trace::Span::set_status(
                &mut span,
                Status::error("the statement failed"),
            );
        }
        opentelemetry::trace::Span::end_with_timestamp(&mut span, end);
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

/// Metric handles by their labels, made once: registering a labelled metric builds its
/// key and looks it up in the recorder's registry, which cost a request more than the
/// recording itself. Keyed by a name (a route, a root field) and a few small labels;
/// bounded by what its callers label with (routes, root fields and status codes the
/// server has, methods folded to the standard ones).
pub struct Handles<K, H>(std::sync::RwLock<ByName<K, H>>);

/// Each name's series: its small labels and their handle.
type ByName<K, H> = std::collections::HashMap<Box<str>, Vec<(K, H)>>;

impl<K, H> Default for Handles<K, H> {
    fn default() -> Self {
        Self(std::sync::RwLock::default())
    }
}

impl<K: PartialEq + Copy, H: Clone> Handles<K, H> {
    /// The handle for `(name, key)`, made by `make` the first time.
    pub fn get(&self, name: &str, key: K, make: impl FnOnce() -> H) -> H {
        let found = |map: &ByName<K, H>| {
            map.get(name)
                .and_then(|series| series.iter().find(|(k, _)| *k == key))
                .map(|(_, handle)| handle.clone())
        };
        // A poisoned lock only means a panic elsewhere while it was held; the map is
        // whole (an insert is one push), so it is read all the same.
        if let Some(handle) = found(&self.0.read().unwrap_or_else(|e| e.into_inner())) {
            return handle;
        }
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = found(&map) {
            return handle;
        }
        let handle = make();
        map.entry(name.into())
            .or_default()
            .push((key, handle.clone()));
        handle
    }
}
