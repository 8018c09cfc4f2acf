use sea_orm::entity::prelude::*;

/// A PSP webhook event, once per event id (not tenant-owned: the PSP posts for all).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_events")]
pub struct Model {
    /// The PSP's event id (`evt_…`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub psp: String,
    /// `payout.sent`, `payout.settled`, `payout.failed`, `payout.returned`,
    /// `payment.refunded`, `dispute.opened` or `dispute.closed`.
    pub kind: String,
    pub reference: String,
    /// When the PSP says the event happened.
    pub created_at: DateTimeUtc,
    pub received_at: DateTimeUtc,
    /// RECEIVED, then APPLIED, STALE (it would move a payment backwards) or
    /// UNKNOWN_REFERENCE.
    pub outcome: String,
    pub payment_id: Option<Uuid>,
    pub tenant_id: Option<Uuid>,
    #[sea_orm(column_type = "Text", nullable)]
    pub failure_reason: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
