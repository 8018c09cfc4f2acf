use sea_orm::entity::prelude::*;

/// The first result of a money-moving mutation under one idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The user (or API key) the key belongs to.
    pub principal_id: Uuid,
    pub operation: String,
    pub key: String,
    /// SHA-256 of the operation and its canonical JSON input.
    pub input_hash: String,
    pub response: Json,
    pub created_at: DateTimeUtc,
    /// Kept at least this long; a purge may remove it afterwards.
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::Id;
}
