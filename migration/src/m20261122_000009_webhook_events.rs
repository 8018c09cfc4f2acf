//! PSP webhook events, one row per event id: the primary key deduplicates them,
//! concurrent deliveries included. Refused deliveries (bad signature) are kept apart
//! in `webhook_rejections`: an unverified event id must never reach the dedup table,
//! or a forger could pre-empt a real event.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    Id,
    Psp,
    Kind,
    Reference,
    CreatedAt,
    ReceivedAt,
    Outcome,
    PaymentId,
    TenantId,
}

#[derive(DeriveIden)]
enum WebhookRejections {
    Table,
    Id,
    Ip,
    Reason,
    ReceivedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookEvents::Table)
                    .col(
                        ColumnDef::new(WebhookEvents::Id)
                            .string_len(255)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(WebhookEvents::Psp).string_len(32).not_null())
                    .col(
                        ColumnDef::new(WebhookEvents::Kind)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebhookEvents::Reference)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebhookEvents::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebhookEvents::ReceivedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebhookEvents::Outcome)
                            .string_len(32)
                            .not_null()
                            .check(Expr::cust(
                                "outcome IN ('RECEIVED','APPLIED','STALE','UNKNOWN_REFERENCE')",
                            )),
                    )
                    .col(ColumnDef::new(WebhookEvents::PaymentId).uuid().null())
                    .col(ColumnDef::new(WebhookEvents::TenantId).uuid().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookRejections::Table)
                    .col(
                        ColumnDef::new(WebhookRejections::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(WebhookRejections::Ip).string_len(64).null())
                    .col(
                        ColumnDef::new(WebhookRejections::Reason)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(WebhookRejections::ReceivedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WebhookRejections::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(WebhookEvents::Table).to_owned())
            .await
    }
}
