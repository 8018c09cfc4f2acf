//! The PSP seam. The built-in simulated PSP accepts every payout at once and posts
//! signed webhooks back to this server, so the whole loop works locally; a real
//! adapter implements the same trait.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::{config::SimulatedPspConfig, error::Result};

/// One payout as the PSP sees it.
#[derive(Debug, Clone)]
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

#[async_trait::async_trait]
pub trait Psp: Send + Sync {
    /// A short, stable name stored with each payment (`simulated`, …).
    fn name(&self) -> &'static str;

    async fn submit(&self, payout: &PspPayout) -> Result<PspAccepted>;
}

/// Accepts every payout; the reference is derived from the payment id, so
/// resubmitting the same payment yields the same reference. With a [`Webhooks`]
/// sender it then posts the signed events a real PSP would (settled, or failed for
/// every Nth payout; twice, or with a late `payout.sent`, when configured).
#[derive(Default, Clone)]
pub struct SimulatedPsp {
    webhooks: Option<Arc<Webhooks>>,
}

/// Where and how the simulated PSP posts its webhooks.
pub struct Webhooks {
    pub url: String,
    pub secret: SecretString,
    pub config: SimulatedPspConfig,
    pub client: reqwest::Client,
    pub counter: AtomicU64,
}

impl SimulatedPsp {
    pub fn new(webhooks: Option<Webhooks>) -> Self {
        Self {
            webhooks: webhooks.map(Arc::new),
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

    /// The events for one accepted payout, after the configured delay.
    async fn deliver(self: Arc<Self>, reference: String, delay: std::time::Duration) {
        tokio::time::sleep(delay).await;
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let fails = self.config.fail_every > 0 && n.is_multiple_of(self.config.fail_every);
        let (kind, failure) = if fails {
            ("payout.failed", Some("simulated failure"))
        } else {
            ("payout.settled", None)
        };
        let id = format!(
            "evt_sim_{}_{}",
            kind.trim_start_matches("payout."),
            reference
        );
        let times = if self.config.duplicates { 2 } else { 1 };
        for _ in 0..times {
            self.post(&id, kind, &reference, failure).await;
        }
        if self.config.out_of_order {
            self.post(
                &format!("evt_sim_late_sent_{reference}"),
                "payout.sent",
                &reference,
                None,
            )
            .await;
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
        if let Some(webhooks) = &self.webhooks
            && let Some(delay) = webhooks.config.settle_after
        {
            tokio::spawn(webhooks.clone().deliver(reference.clone(), delay));
        }
        Ok(PspAccepted { reference })
    }
}
