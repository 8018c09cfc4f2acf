use sea_orm::entity::prelude::*;

/// One mail in the outbox: written in the transaction of the change it tells about,
/// sent by the jobs (`crate::notify::deliver`). `PENDING` until sent, then `SENT`;
/// `SKIPPED` when its user was deactivated or turned the kind off meanwhile; `FAILED`
/// when the server refused it for good or the tries ran out.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notifications")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Whom it is about (and, unless `to_address` says otherwise, for).
    pub user_id: Uuid,
    /// A `crate::notify::NoticeKind`.
    pub kind: String,
    /// Where it goes when not to the user's address of the moment of sending.
    pub to_address: Option<String>,
    /// What the template is filled with (JSON). May carry a single-use token until
    /// sent; emptied once sent for the kinds that do.
    pub data: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTimeUtc,
    /// A sender working on it holds it until then.
    pub claimed_until: Option<DateTimeUtc>,
    pub sent_at: Option<DateTimeUtc>,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
}

// Hand-written: `data` may carry a reset token, which must never reach a log.
impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notification")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("user_id", &self.user_id)
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl crate::db::TenantEntity for Entity {
    const TENANT: Column = Column::TenantId;
    const ID: Column = Column::Id;
}
