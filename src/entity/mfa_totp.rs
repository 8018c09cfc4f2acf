use sea_orm::entity::prelude::*;

/// A user's TOTP enrolment. The seed is sealed (AES-256-GCM); `enabled_at` is null
/// until a first valid code activates it; `last_used_step` makes each code single-use.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "mfa_totp")]
pub struct Model {
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    pub secret_sealed: String,
    pub enabled_at: Option<DateTimeUtc>,
    pub last_used_step: Option<i64>,
    pub created_at: DateTimeUtc,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaTotp")
            .field("user_id", &self.user_id)
            .field("enabled_at", &self.enabled_at)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::UserId;
    const GUARDS_ACCESS: bool = true;
}
