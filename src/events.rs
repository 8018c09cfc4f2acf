//! Live updates for subscriptions (DESIGN §4): what changed, published when the
//! transaction that changed it commits, and never before.
//!
//! A rule calls [`Scoped::publish`](crate::db::Scoped::publish) inside its
//! transaction. On PostgreSQL the commit first runs `pg_notify` in that same
//! transaction, so the notification is delivered to every process that LISTENs
//! exactly when the change is visible (and dropped with a rollback); each process
//! forwards what its listener receives to its local [`Bus`]. On SQLite (one
//! process owns the file) the commit hands the updates to the local bus directly.
//!
//! Delivery is live only: a subscriber that lags or reconnects re-reads the state
//! through the queries. An update carries ids and, for payments, the committed row,
//! so a subscriber sees each transition in order without re-reading.

use std::sync::Arc;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::entity::payment;

/// The PostgreSQL channel every process listens on.
pub const CHANNEL: &str = "sequestra_updates";
/// How many updates a slow subscriber may fall behind before it skips some.
const CAPACITY: usize = 4096;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Update {
    /// A payment was created or moved; `parties` are the users who may see it.
    Payment {
        payment: Box<payment::Model>,
        parties: Vec<Uuid>,
    },
    /// Something about an escrow changed (its state, a milestone, a payment).
    Escrow {
        tenant_id: Uuid,
        escrow_id: Uuid,
        event: String,
    },
    /// Something a principal is built from changed in this tenant (a session, a user,
    /// roles, MFA, an API key): every process drops the tenant's cached principals.
    /// `None`: updates may have been missed (the listener reconnected), drop them all.
    Access { tenant_id: Option<Uuid> },
}

impl Update {
    pub fn tenant_id(&self) -> Uuid {
        match self {
            Update::Payment { payment, .. } => payment.tenant_id,
            Update::Escrow { tenant_id, .. } => *tenant_id,
            Update::Access { tenant_id } => tenant_id.unwrap_or_default(),
        }
    }
}

/// One process's fan-out of committed updates to its subscribers.
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Update>>,
}

impl Default for Bus {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Bus {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Update>> {
        self.tx.subscribe()
    }

    /// Hands committed updates to this process's subscribers (and applies a change of
    /// access to this process's cached principals first).
    pub fn deliver(&self, updates: impl IntoIterator<Item = Update>) {
        for update in updates {
            if let Update::Access { tenant_id } = update {
                crate::auth::cache::invalidate_local(tenant_id);
            }
            // No receiver is not an error: nobody is subscribed.
            let _ = self.tx.send(Arc::new(update));
        }
    }

    /// On PostgreSQL, LISTENs on [`CHANNEL`] and forwards every notification to
    /// this bus until the returned task is aborted. `None` on SQLite.
    pub async fn listen(
        &self,
        db: &DatabaseConnection,
    ) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        if db.get_database_backend() != DbBackend::Postgres {
            return Ok(None);
        }
        let pool = db.get_postgres_connection_pool();
        let mut listener = sea_orm::sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        let bus = self.clone();
        Ok(Some(tokio::spawn(async move {
            loop {
                // `try_recv` answers None when the connection dropped; the listener
                // reconnects on the next call (updates in between are lost, which
                // live delivery allows: subscribers re-read on reconnect).
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        match serde_json::from_str::<Update>(notification.payload()) {
                            Ok(update) => bus.deliver([update]),
                            Err(err) => {
                                tracing::warn!(error = %err, "unreadable update notification")
                            }
                        }
                    }
                    Ok(None) => {
                        tracing::warn!("update listener lost its connection; reconnecting");
                        // What was missed meanwhile is unknown: no cached principal
                        // is trusted any more.
                        bus.deliver([Update::Access { tenant_id: None }]);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "update listener failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        })))
    }
}
