use sea_orm::entity::prelude::*;

/// One money movement: `amount_minor` (> 0) of `currency` out of one account
/// (`from_*`) into another (`to_*`) — the two legs of a double entry, which sum to
/// zero by construction. Append-only: the database refuses UPDATE and DELETE on this
/// table.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_entries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub currency: String,
    /// What moved the money (`crate::ledger::EntryKind`).
    pub kind: String,
    /// The business row the movement belongs to (`escrow`, `payment`, `mandate`, …).
    pub subject_type: String,
    pub subject_id: Uuid,
    pub created_at: DateTimeUtc,
    /// The account debited: `crate::ledger::Account`'s kind and reference.
    pub from_kind: String,
    pub from_ref: String,
    /// The account credited.
    pub to_kind: String,
    pub to_ref: String,
    pub amount_minor: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::Id;
}
