use sea_orm::entity::prelude::*;

/// Where an escrow stands. The allowed moves are one table: `escrow::machine`.
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
pub enum EscrowStatus {
    /// Created; deposits may arrive until they reach the total.
    #[sea_orm(string_value = "DRAFT")]
    Draft,
    /// Fully funded; the provider works, proves and delivers.
    #[sea_orm(string_value = "FUNDED")]
    Funded,
    /// The sender accepted the work (or every milestone was approved).
    #[sea_orm(string_value = "RELEASABLE")]
    Releasable,
    /// Everything funded was paid to the provider (or split by a dispute).
    #[sea_orm(string_value = "RELEASED")]
    Released,
    /// Withdrawn before any payment; deposits were refunded.
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
    /// What remained went back to the sender.
    #[sea_orm(string_value = "REFUNDED")]
    Refunded,
    /// Frozen until an admin resolves the dispute.
    #[sea_orm(string_value = "DISPUTED")]
    Disputed,
}

impl EscrowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "DRAFT",
            Self::Funded => "FUNDED",
            Self::Releasable => "RELEASABLE",
            Self::Released => "RELEASED",
            Self::Cancelled => "CANCELLED",
            Self::Refunded => "REFUNDED",
            Self::Disputed => "DISPUTED",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "escrows")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub sender_id: Uuid,
    pub provider_id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub description: String,
    pub currency: String,
    pub amount_minor: i64,
    pub funded_minor: i64,
    pub released_minor: i64,
    pub refunded_minor: i64,
    pub status: EscrowStatus,
    /// The state a dispute froze, for the record.
    pub disputed_from: Option<EscrowStatus>,
    #[sea_orm(column_type = "Text", nullable)]
    pub dispute_reason: Option<String>,
    pub deadline: DateTimeUtc,
    pub inspection_seconds: Option<i64>,
    pub delivered_at: Option<DateTimeUtc>,
    pub inspection_ends_at: Option<DateTimeUtc>,
    /// Set by the deadline job when the deadline passed without a delivery.
    pub refundable_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::Id;
}
