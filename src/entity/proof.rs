use sea_orm::entity::prelude::*;

/// What a proof is.
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
pub enum ProofKind {
    /// Text only, no file.
    #[sea_orm(string_value = "NOTE")]
    Note,
    /// A PDF.
    #[sea_orm(string_value = "DOCUMENT")]
    Document,
    /// A JPEG or PNG picture (its EXIF position and time are checked against the milestone).
    #[sea_orm(string_value = "PHOTO")]
    Photo,
}

/// Whether a proof was accepted.
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
pub enum ProofStatus {
    /// Waiting for the sender's (or support's) decision.
    #[sea_orm(string_value = "PENDING")]
    Pending,
    /// Accepted: the milestone is approved.
    #[sea_orm(string_value = "ACCEPTED")]
    Accepted,
    /// Refused: the provider may submit another.
    #[sea_orm(string_value = "REJECTED")]
    Rejected,
}

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "proofs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub escrow_id: Uuid,
    pub milestone_id: Uuid,
    pub submitted_by: Uuid,
    pub kind: ProofKind,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub size_bytes: Option<i64>,
    /// Hex SHA-256 of the file; a file is a proof once per tenant.
    pub sha256: Option<String>,
    pub storage_key: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub note: Option<String>,
    /// From the photo's EXIF GPS tags.
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// From the photo's EXIF capture time.
    pub captured_at: Option<DateTimeUtc>,
    pub status: ProofStatus,
    pub decided_by: Option<Uuid>,
    pub decided_automatically: bool,
    #[sea_orm(column_type = "Text", nullable)]
    pub decision_note: Option<String>,
    pub decided_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::Id;
}
