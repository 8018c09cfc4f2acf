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

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::{entity::payment, kinds::EscrowUpdateEvent};

/// The PostgreSQL channel every process listens on.
pub const CHANNEL: &str = "sequestra_updates";

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
        event: EscrowUpdateEvent,
    },
    /// Something a principal is built from changed in this tenant (a session, a user,
    /// roles, MFA, an API key): every process drops the tenant's cached principals.
    /// `None`: updates may have been missed (the listener reconnected), drop them all.
    Access { tenant_id: Option<Uuid> },
    /// A notification was written into this tenant's outbox: the mail sender wakes
    /// (instead of waiting for its next sweep).
    Mail { tenant_id: Uuid },
}

impl Update {
    pub fn tenant_id(&self) -> Uuid {
        match self {
            Update::Payment { payment, .. } => payment.tenant_id,
            Update::Escrow { tenant_id, .. } => *tenant_id,
            Update::Access { tenant_id } => tenant_id.unwrap_or_default(),
            Update::Mail { tenant_id } => *tenant_id,
        }
    }
}

/// What a subscriber follows; an update reaches only the subscribers of the topics
/// it belongs to (a payment's own topic, its tenant's, each of its parties'), so a
/// socket is never woken for another tenant's or another user's money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// One payment's moves: (tenant, payment).
    Payment(Uuid, Uuid),
    /// One escrow's changes: (tenant, escrow).
    Escrow(Uuid, Uuid),
    /// The payments a user takes part in: (tenant, user).
    PartyPayments(Uuid, Uuid),
    /// Every payment of a tenant (what its staff follow).
    TenantPayments(Uuid),
    /// Outboxes that received mail, any tenant (what the mail sender follows).
    Mail,
}

impl Topic {
    /// How many updates a subscriber of this topic may fall behind before it skips
    /// some (a tenant's whole payment flow is busier than one user's or one object's).
    fn capacity(self) -> usize {
        match self {
            Topic::TenantPayments(_) => 1024,
            _ => 64,
        }
    }
}

/// The topics an update is delivered to.
fn topics(update: &Update) -> Vec<Topic> {
    match update {
        Update::Payment { payment, parties } => {
            let t = payment.tenant_id;
            let mut topics = vec![Topic::Payment(t, payment.id), Topic::TenantPayments(t)];
            topics.extend(parties.iter().map(|u| Topic::PartyPayments(t, *u)));
            topics
        }
        Update::Escrow {
            tenant_id,
            escrow_id,
            ..
        } => vec![Topic::Escrow(*tenant_id, *escrow_id)],
        Update::Access { .. } => vec![],
        Update::Mail { .. } => vec![Topic::Mail],
    }
}

type Topics = HashMap<Topic, broadcast::Sender<Arc<Update>>>;

/// One process's fan-out of committed updates to its subscribers: a map from topic
/// to a channel that exists while someone subscribes to it.
#[derive(Clone, Default)]
pub struct Bus {
    topics: Arc<Mutex<Topics>>,
}

/// A subscriber's end of one topic; the topic's channel goes when its last
/// subscription is dropped.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Update>>,
    topic: Topic,
    topics: Arc<Mutex<Topics>>,
}

impl Subscription {
    pub async fn recv(&mut self) -> Result<Arc<Update>, broadcast::error::RecvError> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut topics = self.topics.lock().expect("bus lock");
        // Subscribing takes the same lock, so no one joins between the count and
        // the removal; the count still includes this subscription's receiver.
        if topics
            .get(&self.topic)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            topics.remove(&self.topic);
        }
    }
}

impl Bus {
    /// Follows `topic` from now on.
    pub fn subscribe(&self, topic: Topic) -> Subscription {
        let rx = self
            .topics
            .lock()
            .expect("bus lock")
            .entry(topic)
            .or_insert_with(|| broadcast::channel(topic.capacity()).0)
            .subscribe();
        Subscription {
            rx,
            topic,
            topics: self.topics.clone(),
        }
    }

    /// How many topics have subscribers now (a gauge for tests and metrics).
    pub fn topic_count(&self) -> usize {
        self.topics.lock().expect("bus lock").len()
    }

    /// Hands committed updates to this process's subscribers of their topics (and
    /// applies a change of access to this process's cached principals first).
    pub fn deliver(&self, updates: impl IntoIterator<Item = Update>) {
        for update in updates {
            if let Update::Access { tenant_id } = update {
                crate::auth::cache::invalidate_local(tenant_id);
                continue;
            }
            let topics = topics(&update);
            let update = Arc::new(update);
            let map = self.topics.lock().expect("bus lock");
            for topic in topics {
                if let Some(tx) = map.get(&topic) {
                    // A topic whose last subscriber is leaving is not an error.
                    let _ = tx.send(update.clone());
                }
            }
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

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use tokio::sync::broadcast::error::TryRecvError;

    use super::*;
    use crate::entity::payment::{PaymentPurpose, PaymentStatus};

    fn payment(tenant: Uuid, payee: Uuid) -> payment::Model {
        payment::Model {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            escrow_id: None,
            milestone_id: None,
            payee_id: Some(payee),
            payee_reference: None,
            purpose: PaymentPurpose::Transfer,
            amount_minor: 100,
            currency: "EUR".to_owned(),
            status: PaymentStatus::Settled,
            psp: "simulated".to_owned(),
            psp_reference: None,
            failure_reason: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            retry_of: None,
            attempt: 1,
            sent_at: None,
            checked_at: None,
            dispute_opened_at: None,
            dispute_closed_at: None,
            dispute_outcome: None,
        }
    }

    #[tokio::test]
    async fn an_update_wakes_only_the_subscribers_of_its_topics() {
        let bus = Bus::default();
        let (t, other_tenant) = (Uuid::now_v7(), Uuid::now_v7());
        let (payee, bystander) = (Uuid::now_v7(), Uuid::now_v7());
        let p = payment(t, payee);
        let mut party = bus.subscribe(Topic::PartyPayments(t, payee));
        let mut own = bus.subscribe(Topic::Payment(t, p.id));
        let mut staff = bus.subscribe(Topic::TenantPayments(t));
        let mut other_user = bus.subscribe(Topic::PartyPayments(t, bystander));
        let mut other_staff = bus.subscribe(Topic::TenantPayments(other_tenant));
        let mut same_user_elsewhere = bus.subscribe(Topic::PartyPayments(other_tenant, payee));
        bus.deliver([Update::Payment {
            payment: Box::new(p.clone()),
            parties: vec![payee],
        }]);
        for rx in [&mut party, &mut own, &mut staff] {
            assert!(
                matches!(&*rx.recv().await.unwrap(), Update::Payment { payment, .. } if payment.id == p.id)
            );
        }
        for rx in [&mut other_user, &mut other_staff, &mut same_user_elsewhere] {
            assert!(matches!(rx.rx.try_recv(), Err(TryRecvError::Empty)));
        }
    }

    #[test]
    fn a_topic_lives_while_someone_follows_it() {
        let bus = Bus::default();
        let (t, e) = (Uuid::now_v7(), Uuid::now_v7());
        let first = bus.subscribe(Topic::Escrow(t, e));
        let second = bus.subscribe(Topic::Escrow(t, e));
        assert_eq!(bus.topic_count(), 1);
        drop(first);
        assert_eq!(bus.topic_count(), 1, "one subscriber left");
        drop(second);
        assert_eq!(bus.topic_count(), 0, "no channel kept for nobody");
        // Delivering to a topic nobody follows is not an error.
        bus.deliver([Update::Escrow {
            tenant_id: t,
            escrow_id: e,
            event: EscrowUpdateEvent::EscrowReleased,
        }]);
    }
}
