use sea_orm::entity::prelude::*;

/// One step in an escrow's timeline, written in the transaction that made it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "escrow_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub escrow_id: Uuid,
    pub milestone_id: Option<Uuid>,
    /// What happened, e.g. `ESCROW_FUNDED`, `MILESTONE_APPROVED`, `DEPOSIT_RECEIVED`.
    pub kind: String,
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    /// The user who acted; none for the system (jobs).
    pub actor_id: Option<Uuid>,
    pub data: Json,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::Id;
}
