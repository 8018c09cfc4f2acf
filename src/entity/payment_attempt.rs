use sea_orm::entity::prelude::*;

/// One exchange with the PSP about a payment: a submission, a status check, or a
/// webhook that moved it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "payment_attempts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub payment_id: Uuid,
    /// `SUBMIT`, `STATUS_CHECK` or `WEBHOOK`.
    pub kind: String,
    /// `ACCEPTED`, `ERROR`, `SENT`, `SETTLED`, `FAILED`, `PROCESSING` or `UNKNOWN`.
    pub outcome: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub detail: Option<String>,
    pub at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::Id;
}
