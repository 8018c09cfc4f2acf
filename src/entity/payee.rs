use sea_orm::entity::prelude::*;

/// Someone outside the tenant a mandate (or an escrow) may pay, within limits.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "payees")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub mandate_id: Option<Uuid>,
    pub escrow_id: Option<Uuid>,
    /// The payee's reference at the PSP (an account or IBAN-like identifier).
    pub reference: String,
    pub name: String,
    pub currency: String,
    pub daily_limit_minor: Option<i64>,
    pub total_limit_minor: Option<i64>,
    pub paid_minor: i64,
    /// The UTC day (`YYYY-MM-DD`) `day_paid_minor` counts.
    pub pay_day: String,
    pub day_paid_minor: i64,
    pub enabled: bool,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::Id;
}
