use sea_orm::entity::prelude::*;

/// A single-use token sent by mail (a password reset, an address to verify), stored as a SHA-256 hash only.
/// Used by one conditional UPDATE of `used_at`, so it works once.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "mail_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    /// What it is for (`PASSWORD_RESET`, `EMAIL_VERIFY`, `EMAIL_CHANGE`).
    pub purpose: String,
    /// The address it proves (verification and change).
    pub new_email: Option<String>,
    #[sea_orm(unique)]
    pub token_hash: String,
    pub expires_at: DateTimeUtc,
    pub used_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::Id;
}
