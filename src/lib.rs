//! Sequestra: a multi-tenant GraphQL API server for escrow and conditional payments.
//!
//! [`Application::build`] turns a [`config::Config`] into a running server; `main.rs`
//! and the integration tests both start from it.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod config;
pub mod db;
pub mod demo;
pub mod dev_secrets;
pub mod domain;
pub mod entity;
pub mod error;
pub mod escrow;
pub mod events;
pub mod graphql;
pub mod hooks;
pub mod http;
pub mod idempotency;
pub mod identity;
pub mod ids;
pub mod jobs;
pub mod kinds;
pub mod ledger;
pub mod money;
pub mod notify;
pub mod payments;
pub mod rules;
pub mod spend;
pub mod telemetry;

// The global allocator: jemalloc (the default feature) serves `{ __typename }` about
// twice as fast as glibc's malloc on this stack for ~2 MiB more idle RSS; mimalloc is
// as fast but doubles idle RSS (README, "Benchmarks"). Without either, glibc's.
#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!(
    "features `mimalloc` and `jemalloc` each set the global allocator: \
     use --no-default-features --features mimalloc"
);
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

use crate::{auth::TokenService, config::Config, http::AppState};

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    /// `SEQUESTRA_METRICS_LISTEN`: `/metrics` on an address of its own.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    /// Forwards PostgreSQL notifications to the bus (none on SQLite).
    update_listener: AbortOnDrop,
}

/// Stops a background task when the server that owns it goes away.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl Application {
    /// Connects to the database (migrating it when configured to), builds the schema
    /// and binds the listener. Nothing is served until [`Application::run_until`].
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = db::open(&config.database, config.migrate_on_start).await?;
        if !config.migrate_on_start {
            let pending = db::pending_migrations(&db).await?;
            if !pending.is_empty() {
                tracing::warn!(?pending, "migrations are pending; /ready reports not ready");
            }
        }
        Self::with_database(config, db).await
    }

    /// Like [`Application::build`], over an already opened (and migrated) database.
    pub async fn with_database(config: Config, mut db: DatabaseConnection) -> anyhow::Result<Self> {
        // Every statement the server's pool runs is counted (tests assert how many an
        // operation costs; see `Services::statements`).
        let statements = db::StatementTap::attach(&mut db);
        let listener = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.http.listen))?;
        let metrics_listener =
            match config.http.metrics_listen {
                Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
                    format!("cannot listen on {addr} (SEQUESTRA_METRICS_LISTEN)")
                })?),
                None => None,
            };
        let tokens = TokenService::new(&config.auth);
        let services = graphql::context::Services {
            db,
            statements,
            tokens,
            sealer: auth::crypto::Sealer::new(config.auth.mfa_keys.clone()),
            step_up_window: config.auth.step_up_window,
            credential_limiter: Arc::new(governor::RateLimiter::keyed(
                governor::Quota::per_minute(
                    std::num::NonZeroU32::new(config.http.credential_attempts_per_minute)
                        .unwrap_or(std::num::NonZeroU32::MIN),
                ),
            )),
            psp: match &config.payments.psp {
                config::PspChoice::Simulated => Arc::new(payments::SimulatedPsp::new(
                    config.simulated_psp.clone(),
                    simulated_webhooks(&config, listener.local_addr()?),
                )),
                config::PspChoice::Http(http) => Arc::new(
                    payments::http_psp::HttpPsp::new(http.clone())
                        .context("cannot set up the HTTP PSP client")?,
                ),
            },
            proofs: escrow::storage::from_config(&config.escrow.proof_storage)
                .context("cannot set up proof storage")?,
            proof_max_bytes: config.escrow.proof_max_bytes,
            payments: Arc::new(config.payments.clone()),
            bus: events::Bus::default(),
            mail: Arc::new(config.mail.clone()),
            mailer: Arc::new(
                notify::deliver::Mailer::new(&config.mail).context("cannot set up mail")?,
            ),
            reset_limiter: Arc::new(governor::RateLimiter::keyed(governor::Quota::per_hour(
                std::num::NonZeroU32::new(config.mail.resets_per_address_per_hour)
                    .unwrap_or(std::num::NonZeroU32::MIN),
            ))),
        };
        let update_listener = services
            .bus
            .listen(&services.db)
            .await
            .context("cannot listen for updates (LISTEN)")?;
        let schema =
            graphql::build_schema(&config.graphql, config.is_production(), services.clone());
        let state = AppState::new(http::Shared {
            rate_limiter: http::rate_limit::shared(&config.http),
            ws_operations: http::ws::PerUser::default(),
            subscriptions: http::fanout::Groups::default(),
            persisted: Arc::new(graphql::persisted::Persisted::new(
                services.db.clone(),
                config.graphql.persisted_only,
            )),
            config: Arc::new(config),
            services,
            schema,
            metrics: telemetry::metrics_handle(),
            jobs: jobs::Heartbeat::default(),
            requests: http::metrics::Requests::default(),
        });
        Ok(Self {
            listener,
            metrics_listener,
            state,
            update_listener: AbortOnDrop(update_listener),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/metrics` is served when `SEQUESTRA_METRICS_LISTEN` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.state.services.db
    }

    /// The services the schema runs with (database, tokens, sealer, limits).
    pub fn services(&self) -> &graphql::context::Services {
        &self.state.services
    }

    pub fn schema(&self) -> &graphql::AppSchema {
        &self.state.schema
    }

    /// What the server's pool has run since it started (a count; a capture of the
    /// text on request).
    pub fn statements(&self) -> Arc<db::StatementTap> {
        self.state.services.statements.clone()
    }

    /// Operations running over each user's WebSockets (the per-user cap's tally).
    pub fn ws_operations(&self) -> &http::ws::PerUser {
        &self.state.ws_operations
    }

    /// The subscriptions running for WebSockets, each once for the sockets sharing it.
    pub fn subscriptions(&self) -> &http::fanout::Groups {
        &self.state.subscriptions
    }

    pub fn tokens(&self) -> &TokenService {
        &self.state.services.tokens
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish for at
    /// most the configured grace period.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let _update_listener = self.update_listener;
        let grace = self.state.config.http.shutdown_grace;
        let (stop_jobs, jobs_stop) = tokio::sync::watch::channel(false);
        let jobs = self.state.config.escrow.jobs_enabled.then(|| {
            tokio::spawn(jobs::run(
                self.state.services.clone(),
                self.state.config.escrow.jobs_interval,
                self.state.config.escrow.books_check_interval,
                self.state.config.retention.clone(),
                self.state.jobs.clone(),
                jobs_stop.clone(),
            ))
        });
        // `/metrics` on its own address, stopped when the jobs are.
        let metrics_stop = jobs_stop.clone();
        let metrics_router = http::metrics_router(self.state.clone());
        let _metrics_server = self.metrics_listener.map(|listener| {
            AbortOnDrop(Some(tokio::spawn(async move {
                let mut stop = metrics_stop;
                let served = axum::serve(listener, metrics_router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.changed().await;
                    })
                    .await;
                if let Err(err) = served {
                    tracing::error!(error = %err, "the metrics listener failed");
                }
            })))
        });
        // Mail is sent by the jobs too (its own loop and lease: a slow SMTP server
        // never delays a payment's retry).
        let mail = self.state.config.escrow.jobs_enabled.then(|| {
            let transport = self.state.services.mailer.describe();
            if transport == "log" && self.state.config.is_production() {
                tracing::warn!(
                    "no SEQUESTRA_SMTP_URL: mail is only logged, nobody receives a reset or a notice"
                );
            } else {
                tracing::info!(transport, "mail sender started");
            }
            tokio::spawn(notify::deliver::run(
                self.state.services.clone(),
                self.state.services.mailer.clone(),
                self.state.services.mail.clone(),
                jobs_stop,
            ))
        });
        let router = http::router(self.state);
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
            let _ = stopping_tx.send(());
        });
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            result = &mut server => {
                let _ = stop_jobs.send(true);
                return result.context("server failed");
            }
            _ = stopping_rx => {}
        }
        // No new job ticks once shutdown starts; a tick in progress finishes.
        let _ = stop_jobs.send(true);
        for task in [jobs, mail].into_iter().flatten() {
            let _ = tokio::time::timeout(grace, task).await;
        }
        match tokio::time::timeout(grace, server).await {
            Ok(result) => result.context("server failed"),
            Err(_) => {
                tracing::warn!(
                    grace_secs = grace.as_secs(),
                    "grace period over; closing remaining connections"
                );
                Ok(())
            }
        }
    }
}

/// The simulated PSP posts its webhooks to this server's own route, signed with
/// the first webhook secret; none when settlement is switched off.
fn simulated_webhooks(config: &Config, addr: SocketAddr) -> Option<payments::psp::Webhooks> {
    config.simulated_psp.settle_after?;
    let secret = config.webhook_secrets.first()?.clone();
    let host = if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    Some(payments::psp::Webhooks {
        url: format!("http://{}/webhooks/psp", SocketAddr::new(host, addr.port())),
        secret,
        client: reqwest::Client::new(),
    })
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
