use sea_orm::entity::prelude::*;

/// A webhook delivery refused for its signature: the audit trail of forgeries.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_rejections")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The client address (behind trusted proxies, the forwarded one).
    pub ip: Option<String>,
    /// MISSING, MALFORMED, STALE or MISMATCH.
    pub reason: String,
    pub received_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
