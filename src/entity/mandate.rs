use sea_orm::entity::prelude::*;

/// Whether a mandate can still be spent.
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
pub enum MandateStatus {
    /// Spendable.
    #[sea_orm(string_value = "ACTIVE")]
    Active,
    /// Spent reached the total.
    #[sea_orm(string_value = "CONSUMED")]
    Consumed,
    /// Past its expiry (set by the jobs).
    #[sea_orm(string_value = "EXPIRED")]
    Expired,
    /// Ended by its sender; what remained is released.
    #[sea_orm(string_value = "REVOKED")]
    Revoked,
}

impl MandateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Consumed => "CONSUMED",
            Self::Expired => "EXPIRED",
            Self::Revoked => "REVOKED",
        }
    }
}

/// A sender's budget a beneficiary may spend only where it allows.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "mandates")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub sender_id: Uuid,
    pub beneficiary_id: Uuid,
    pub currency: String,
    pub total_minor: i64,
    pub spent_minor: i64,
    pub per_purchase_limit_minor: Option<i64>,
    pub daily_limit_minor: Option<i64>,
    /// The UTC day (`YYYY-MM-DD`) `day_spent_minor` counts.
    pub spend_day: String,
    pub day_spent_minor: i64,
    pub certified_only: bool,
    pub status: MandateStatus,
    pub expires_at: DateTimeUtc,
    pub ended_at: Option<DateTimeUtc>,
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
