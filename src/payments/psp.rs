//! The PSP seam. The built-in simulated PSP accepts every payout at once, so the
//! whole loop works locally; a real adapter implements the same trait.

use uuid::Uuid;

use crate::error::Result;

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
/// resubmitting the same payment yields the same reference.
#[derive(Debug, Default, Clone)]
pub struct SimulatedPsp;

#[async_trait::async_trait]
impl Psp for SimulatedPsp {
    fn name(&self) -> &'static str {
        "simulated"
    }

    async fn submit(&self, payout: &PspPayout) -> Result<PspAccepted> {
        Ok(PspAccepted {
            reference: format!("sim_{}", payout.payment_id.simple()),
        })
    }
}
