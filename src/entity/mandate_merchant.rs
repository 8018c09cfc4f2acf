use sea_orm::entity::prelude::*;

/// A merchant a mandate allows.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "mandate_merchants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub mandate_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub merchant_id: Uuid,
    pub tenant_id: Uuid,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::MandateId;
}
