//! The append-only audit log. Every change of state writes its row through the same
//! scoped handle (and so the same transaction) as the change itself.

use chrono::Utc;
use sea_orm::{ActiveValue::Set, ConnectionTrait};
use uuid::Uuid;

use crate::{db::Scoped, entity::audit_log, error::Result, ids::new_id};

/// Who did it.
#[derive(Debug, Clone, Copy)]
pub enum Actor {
    User(Uuid),
    /// The command line (`bootstrap`, `--demo`) or a background job.
    System,
}

/// Where the request came from, for the audit row.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

pub struct Entry<'a> {
    pub actor: Actor,
    pub action: &'static str,
    pub subject: Option<(&'static str, Uuid)>,
    pub details: serde_json::Value,
    pub origin: &'a Origin,
}

pub async fn record<C: ConnectionTrait>(db: &Scoped<C>, entry: Entry<'_>) -> Result<()> {
    let (actor_type, actor_id) = match entry.actor {
        Actor::User(id) => ("USER", Some(id)),
        Actor::System => ("SYSTEM", None),
    };
    db.insert(audit_log::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(db.tenant().as_uuid()),
        actor_type: Set(actor_type.to_owned()),
        actor_id: Set(actor_id),
        action: Set(entry.action.to_owned()),
        subject_type: Set(entry.subject.map(|(t, _)| t.to_owned())),
        subject_id: Set(entry.subject.map(|(_, id)| id)),
        ip: Set(entry.origin.ip.clone()),
        request_id: Set(entry.origin.request_id.clone()),
        details: Set(entry.details),
        created_at: Set(Utc::now()),
    })
    .await?;
    Ok(())
}
