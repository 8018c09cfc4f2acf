//! GraphQL types for payments.

use async_graphql::{ID, Object};
use chrono::{DateTime, Utc};

use crate::{
    entity::payment::{self, PaymentPurpose, PaymentStatus},
    graphql::{node::global_id, scalars::MoneyValue},
    ids::Kind,
};

/// Money leaving through the PSP.
pub struct PaymentNode(pub payment::Model);

#[Object(name = "Payment")]
impl PaymentNode {
    pub async fn id(&self) -> ID {
        global_id(Kind::Payment, self.0.id)
    }

    async fn purpose(&self) -> PaymentPurpose {
        self.0.purpose
    }

    async fn status(&self) -> PaymentStatus {
        self.0.status
    }

    async fn amount(&self) -> MoneyValue {
        MoneyValue::new(self.0.amount_minor, &self.0.currency)
    }

    /// The user paid (none for an external payee).
    async fn payee_id(&self) -> Option<ID> {
        self.0.payee_id.map(|id| global_id(Kind::User, id))
    }

    /// An external payee's reference (spend payouts).
    async fn payee_reference(&self) -> Option<&str> {
        self.0.payee_reference.as_deref()
    }

    async fn escrow_id(&self) -> Option<ID> {
        self.0.escrow_id.map(|id| global_id(Kind::Escrow, id))
    }

    async fn milestone_id(&self) -> Option<ID> {
        self.0.milestone_id.map(|id| global_id(Kind::Milestone, id))
    }

    /// Which PSP carries it.
    async fn psp(&self) -> &str {
        &self.0.psp
    }

    /// The PSP's reference, once it accepted the payment.
    async fn psp_reference(&self) -> Option<&str> {
        self.0.psp_reference.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}
