//! GraphQL for a user's notification settings.

use async_graphql::{Context, InputObject, Object, SimpleObject};
use chrono::Utc;
use sea_orm::{ActiveValue::Set, ColumnTrait, QueryFilter};
use serde_json::json;

use super::NoticeKind;
use crate::{
    audit::{self, Actor},
    entity::notification_opt_out,
    error::Error,
    graphql::{access, context::ContextExt},
    ids::new_id,
    kinds::AuditAction,
};

/// Whether one kind of notification is mailed to you.
#[derive(SimpleObject)]
pub struct NotificationSetting {
    /// The kind of notification.
    pub kind: NoticeKind,
    /// Whether it is mailed to you.
    pub enabled: bool,
    /// Security notices and mails you asked for are always sent: they cannot be turned off.
    pub always_sent: bool,
}

/// Turns one kind of notification on or off.
#[derive(InputObject)]
pub struct SetNotificationEnabledInput {
    /// The kind to turn on or off; security notices cannot be turned off.
    pub kind: NoticeKind,
    /// Whether to mail it to you.
    pub enabled: bool,
}

/// The answer to `setNotificationEnabled`.
#[derive(SimpleObject)]
pub struct SetNotificationEnabledPayload {
    /// Your settings after the change, one per kind.
    pub settings: Vec<NotificationSetting>,
}

async fn settings(ctx: &Context<'_>) -> async_graphql::Result<Vec<NotificationSetting>> {
    let me = ctx.user()?;
    let off: Vec<String> = ctx
        .tenant_db()?
        .list::<notification_opt_out::Entity>(|q| {
            q.filter(notification_opt_out::Column::UserId.eq(me.user_id))
        })
        .await?
        .into_iter()
        .map(|o| o.kind)
        .collect();
    Ok(NoticeKind::ALL
        .iter()
        .map(|&kind| NotificationSetting {
            kind,
            enabled: kind.always_sent() || !off.iter().any(|k| k == kind.as_str()),
            always_sent: kind.always_sent(),
        })
        .collect())
}

#[derive(Default)]
pub struct NotifyQuery;

#[Object(guard = "access::Guard(access::Root::Query)")]
impl NotifyQuery {
    /// Which notifications are mailed to you, one entry per kind.
    #[graphql(visible = "access::visible::notification_settings")]
    async fn notification_settings(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<NotificationSetting>> {
        settings(ctx).await
    }
}

#[derive(Default)]
pub struct NotifyMutation;

#[Object(guard = "access::Guard(access::Root::Mutation)")]
impl NotifyMutation {
    /// Turns one kind of notification on or off for you. BAD_USER_INPUT (field
    /// `kind`) for a security notice, which is always sent.
    #[graphql(visible = "access::visible::set_notification_enabled")]
    async fn set_notification_enabled(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The kind and whether to mail it to you.")]
        input: SetNotificationEnabledInput,
    ) -> async_graphql::Result<SetNotificationEnabledPayload> {
        let me = ctx.user()?;
        if input.kind.always_sent() {
            return Err(Error::bad_field("kind", "security notices cannot be turned off").into());
        }
        let txn = ctx.tenant_db()?.begin().await?;
        let changed = if input.enabled {
            txn.delete_where::<notification_opt_out::Entity>(|q| {
                q.filter(notification_opt_out::Column::UserId.eq(me.user_id))
                    .filter(notification_opt_out::Column::Kind.eq(input.kind.as_str()))
            })
            .await?
                > 0
        } else {
            txn.insert_or_skip(
                notification_opt_out::ActiveModel {
                    id: Set(new_id()),
                    tenant_id: Set(txn.tenant().as_uuid()),
                    user_id: Set(me.user_id),
                    kind: Set(input.kind.as_str().to_owned()),
                    created_at: Set(Utc::now()),
                },
                [
                    notification_opt_out::Column::TenantId,
                    notification_opt_out::Column::UserId,
                    notification_opt_out::Column::Kind,
                ],
            )
            .await?
        };
        if changed {
            audit::record(
                &txn,
                audit::Entry {
                    actor: Actor::User(me.user_id),
                    action: AuditAction::UserNotificationsChanged,
                    subject: Some(("user", me.user_id)),
                    details: json!({ "kind": input.kind.as_str(), "enabled": input.enabled }),
                    origin: &ctx.request().origin,
                },
            )
            .await?;
        }
        txn.commit().await?;
        Ok(SetNotificationEnabledPayload {
            settings: settings(ctx).await?,
        })
    }
}
