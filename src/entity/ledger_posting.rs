use sea_orm::entity::prelude::*;

/// One leg of a ledger entry: `amount_minor` (never zero) into (+) or out of (−) one
/// account, in the entry's currency. Append-only, like its entry.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_postings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub entry_id: Uuid,
    pub currency: String,
    /// `crate::ledger::Account`'s kind and reference.
    pub account_kind: String,
    pub account_ref: String,
    pub amount_minor: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::Id;
}
