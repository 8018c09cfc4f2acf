use sea_orm::entity::prelude::*;

/// Where a payment stands; it only moves forward.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    async_graphql::Enum,
    serde::Serialize,
    serde::Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(24))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// Recorded; not yet accepted by the PSP.
    #[sea_orm(string_value = "PENDING")]
    Pending,
    /// Accepted by the PSP.
    #[sea_orm(string_value = "SENT")]
    Sent,
    /// The PSP confirmed the money arrived (final).
    #[sea_orm(string_value = "SETTLED")]
    Settled,
    /// The PSP refused or returned it (final; it may be retried as a new payment).
    #[sea_orm(string_value = "FAILED")]
    Failed,
}

impl PaymentStatus {
    /// No event moves it any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Settled | Self::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Sent => "SENT",
            Self::Settled => "SETTLED",
            Self::Failed => "FAILED",
        }
    }
}

/// Why a payment was made.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    async_graphql::Enum,
    serde::Serialize,
    serde::Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(24))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentPurpose {
    /// Escrowed money paid out to the provider.
    #[sea_orm(string_value = "ESCROW_RELEASE")]
    EscrowRelease,
    /// Escrowed money returned to the sender.
    #[sea_orm(string_value = "ESCROW_REFUND")]
    EscrowRefund,
    /// A mandate's money paid to one of its allowed payees.
    #[sea_orm(string_value = "SPEND_PAYOUT")]
    SpendPayout,
    /// A restricted transfer to another user of the tenant.
    #[sea_orm(string_value = "TRANSFER")]
    Transfer,
}

/// Money leaving through the PSP.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "payments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub escrow_id: Option<Uuid>,
    pub milestone_id: Option<Uuid>,
    /// The user paid; none for an external payee (see `payee_reference`).
    pub payee_id: Option<Uuid>,
    pub payee_reference: Option<String>,
    pub purpose: PaymentPurpose,
    pub amount_minor: i64,
    pub currency: String,
    pub status: PaymentStatus,
    /// Which PSP carries it (`simulated`, …).
    pub psp: String,
    pub psp_reference: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub failure_reason: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The failed payment this one retries (a failed payment is retried once).
    pub retry_of: Option<Uuid>,
    /// 1 for the first try, 2 for its retry, …
    pub attempt: i32,
    /// When the PSP accepted it.
    pub sent_at: Option<DateTimeUtc>,
    /// When reconciliation last asked the PSP about it.
    pub checked_at: Option<DateTimeUtc>,
    /// When the PSP opened a dispute on it (`dispute.opened`). (`serde(default)`: the
    /// update bus may carry a payment from a process of the version before.)
    #[serde(default)]
    pub dispute_opened_at: Option<DateTimeUtc>,
    /// When the PSP closed that dispute (`dispute.closed`).
    #[serde(default)]
    pub dispute_closed_at: Option<DateTimeUtc>,
    /// How it closed: `WON` (the payout stands) or `LOST` (the PSP took it back).
    #[serde(default)]
    pub dispute_outcome: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::Id;
}
