//! The PSP seam. The built-in simulated PSP accepts every payout at once and posts
//! signed webhooks back to this server, so the whole loop works locally; the HTTP
//! adapter (`http_psp`) talks to a real one through the same trait.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::{config::SimulatedPspConfig, error::Result};

/// One payout as the PSP sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PspPayout {
    /// Also the idempotency key at the PSP: submitting twice pays once.
    pub payment_id: Uuid,
    pub tenant_id: Uuid,
    pub payee_id: Option<Uuid>,
    pub payee_reference: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
}

/// The PSP took the payout; settlement comes later (by webhook).
#[derive(Debug, Clone)]
pub struct PspAccepted {
    pub reference: String,
}

/// What the PSP says of a payout when asked (reconciliation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PspStatus {
    /// Accepted, not settled yet.
    Processing,
    Settled,
    Failed(String),
    /// The PSP does not know the reference.
    Unknown,
}

#[async_trait::async_trait]
pub trait Psp: Send + Sync {
    /// A short, stable name stored with each payment (`simulated`, `http`).
    fn name(&self) -> &'static str;

    async fn submit(&self, payout: &PspPayout) -> Result<PspAccepted>;

    /// Asks what became of an accepted payout.
    async fn status(&self, reference: &str) -> Result<PspStatus>;

    /// Until when the PSP is not called (its circuit is open after it was found down
    /// too many times in a row); `None` while it is called.
    fn circuit_open_until(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        None
    }
}

/// Accepts every payout; the reference is derived from the payment id, so
/// resubmitting the same payment yields the same reference. Each payout is settled,
/// or failed for every Nth one when configured; with a [`Webhooks`] sender it posts
/// the signed events a real PSP would (twice, or with a late `payout.sent`, when
/// configured), and it answers status checks with the same decision.
#[derive(Default, Clone)]
pub struct SimulatedPsp {
    config: SimulatedPspConfig,
    webhooks: Option<Arc<Webhooks>>,
    decisions: Arc<Mutex<HashMap<String, PspStatus>>>,
    counter: Arc<AtomicU64>,
}

/// Where the simulated PSP posts its webhooks.
pub struct Webhooks {
    pub url: String,
    pub secret: SecretString,
    pub client: reqwest::Client,
}

impl SimulatedPsp {
    pub fn new(config: SimulatedPspConfig, webhooks: Option<Webhooks>) -> Self {
        Self {
            config,
            webhooks: webhooks.map(Arc::new),
            decisions: Arc::default(),
            counter: Arc::default(),
        }
    }

    /// Settled or failed, decided once per reference.
    fn decide(&self, reference: &str) -> PspStatus {
        let mut decisions = self.decisions.lock().expect("decisions lock");
        decisions
            .entry(reference.to_owned())
            .or_insert_with(|| {
                let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
                if self.config.fail_every > 0 && n.is_multiple_of(self.config.fail_every) {
                    PspStatus::Failed("simulated failure".to_owned())
                } else {
                    PspStatus::Settled
                }
            })
            .clone()
    }

    /// The events for one accepted payout, after the configured delay.
    async fn deliver(self, reference: String, delay: std::time::Duration) {
        let Some(webhooks) = self.webhooks.clone() else {
            return;
        };
        tokio::time::sleep(delay).await;
        let (kind, failure) = match self.decide(&reference) {
            PspStatus::Failed(reason) => ("payout.failed", Some(reason)),
            _ => ("payout.settled", None),
        };
        let id = format!(
            "evt_sim_{}_{}",
            kind.trim_start_matches("payout."),
            reference
        );
        let times = if self.config.duplicates { 2 } else { 1 };
        for _ in 0..times {
            webhooks
                .post(&id, kind, &reference, failure.as_deref())
                .await;
        }
        if self.config.out_of_order {
            webhooks
                .post(
                    &format!("evt_sim_late_sent_{reference}"),
                    "payout.sent",
                    &reference,
                    None,
                )
                .await;
        }
    }
}

impl Webhooks {
    async fn post(&self, id: &str, kind: &str, reference: &str, failure: Option<&str>) {
        let body = serde_json::json!({
            "id": id,
            "type": kind,
            "created": chrono::Utc::now().timestamp(),
            "data": { "reference": reference, "failureReason": failure },
        })
        .to_string();
        let t = chrono::Utc::now().timestamp();
        let signature = super::webhook::sign(self.secret.expose_secret(), t, body.as_bytes());
        let sent = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("Sequestra-Signature", format!("t={t},v1={signature}"))
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::warn!(status = %r.status(), event = id, "simulated PSP webhook refused")
            }
            Err(err) => {
                tracing::warn!(error = %err, event = id, "simulated PSP webhook not delivered")
            }
        }
    }
}

#[async_trait::async_trait]
impl Psp for SimulatedPsp {
    fn name(&self) -> &'static str {
        "simulated"
    }

    async fn submit(&self, payout: &PspPayout) -> Result<PspAccepted> {
        let reference = format!("sim_{}", payout.payment_id.simple());
        if self.webhooks.is_some()
            && let Some(delay) = self.config.settle_after
        {
            tokio::spawn(self.clone().deliver(reference.clone(), delay));
        }
        Ok(PspAccepted { reference })
    }

    async fn status(&self, reference: &str) -> Result<PspStatus> {
        if !reference.starts_with("sim_") {
            return Ok(PspStatus::Unknown);
        }
        Ok(self.decide(reference))
    }
}
