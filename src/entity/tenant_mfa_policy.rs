use sea_orm::entity::prelude::*;

use crate::auth::Role;

/// A role whose users must have MFA in this tenant.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenant_mfa_policies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub role: Role,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::TenantId;
    const GUARDS_ACCESS: bool = true;
}
