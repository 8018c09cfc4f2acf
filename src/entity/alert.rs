use sea_orm::entity::prelude::*;

/// Something a sender should know: a refused purchase, a refused transfer, …
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "alerts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The sender concerned.
    pub sender_id: Uuid,
    /// `MANDATE_EXHAUSTED`, `MERCHANT_NOT_ALLOWED`, `TRANSFER_NOT_ALLOWED`, …
    pub kind: String,
    pub mandate_id: Option<Uuid>,
    pub message: String,
    pub details: Json,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::Id;
}
