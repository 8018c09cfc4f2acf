use sea_orm::entity::prelude::*;

/// An API key. Only an HMAC-SHA256 of the key is stored; `prefix` is what lists show.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub created_by: Uuid,
    pub name: String,
    #[sea_orm(unique)]
    pub key_hash: String,
    pub prefix: String,
    /// A JSON array of scope names, e.g. `["escrow:read"]`.
    pub scopes: Json,
    pub created_at: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
    pub last_used_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::Id;
    const GUARDS_ACCESS: bool = true;
}
