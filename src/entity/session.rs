use sea_orm::entity::prelude::*;

/// A signed-in session. Access tokens name it (`sid`); revoking it ends them at once.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTimeUtc,
    /// Absolute end of the session, however often it is refreshed.
    pub expires_at: DateTimeUtc,
    pub last_seen_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
    pub revoke_reason: Option<String>,
    pub mfa_verified_at: Option<DateTimeUtc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::Id;
    const GUARDS_ACCESS: bool = true;
}
