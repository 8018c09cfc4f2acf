use sea_orm::entity::prelude::*;

/// Where a milestone stands.
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
pub enum MilestoneStatus {
    /// No proof yet.
    #[sea_orm(string_value = "WAITING")]
    Waiting,
    /// A proof waits for the sender's (or support's) decision.
    #[sea_orm(string_value = "PENDING_REVIEW")]
    PendingReview,
    /// Accepted: it can be released.
    #[sea_orm(string_value = "APPROVED")]
    Approved,
    /// The proof was refused; the provider may submit another.
    #[sea_orm(string_value = "REJECTED")]
    Rejected,
    /// A payment to the provider is on its way.
    #[sea_orm(string_value = "PAYING")]
    Paying,
    /// Its payment to the provider settled.
    #[sea_orm(string_value = "PAID")]
    Paid,
}

impl MilestoneStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "WAITING",
            Self::PendingReview => "PENDING_REVIEW",
            Self::Approved => "APPROVED",
            Self::Rejected => "REJECTED",
            Self::Paying => "PAYING",
            Self::Paid => "PAID",
        }
    }
}

/// What a milestone must be proven with.
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
pub enum ProofRequirement {
    /// A note is enough; the sender decides.
    #[sea_orm(string_value = "NONE")]
    None,
    /// A JPEG, PNG or PDF file.
    #[sea_orm(string_value = "DOCUMENT")]
    Document,
    /// A JPEG or PNG photo; one taken inside the geofence and time window is
    /// approved automatically.
    #[sea_orm(string_value = "PHOTO")]
    Photo,
}

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "milestones")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub escrow_id: Uuid,
    pub position: i32,
    pub title: String,
    pub amount_minor: i64,
    pub status: MilestoneStatus,
    pub proof_kind: ProofRequirement,
    pub geo_latitude: Option<f64>,
    pub geo_longitude: Option<f64>,
    pub geo_radius_m: Option<f64>,
    pub window_start: Option<DateTimeUtc>,
    pub window_end: Option<DateTimeUtc>,
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
