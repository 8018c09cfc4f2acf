//! Payments grow what settlement needs: when the PSP accepted them (`sent_at`) and
//! when reconciliation last asked about them (`checked_at`), which try they are
//! (`attempt`) and which failed payment they retry (`retry_of`, unique: a failed
//! payment is retried at most once, whatever number of processes try). Every
//! exchange with the PSP about a payment is kept in `payment_attempts`.
//!
//! Webhook events keep their failure reason, so an event that arrived before its
//! payment's reference was stored can be applied later as it came.
//!
//! `retry_of` has no foreign key: SQLite cannot add a composite one to an existing
//! table. The rule that sets it reads the failed payment through the tenant scope.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Payments {
    Table,
    Id,
    TenantId,
    Status,
    RetryOf,
    Attempt,
    SentAt,
    CheckedAt,
}

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    FailureReason,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum PaymentAttempts {
    Table,
    Id,
    TenantId,
    PaymentId,
    Kind,
    Outcome,
    Detail,
    At,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        for column in [
            ColumnDef::new(Payments::RetryOf).uuid().null().to_owned(),
            ColumnDef::new(Payments::Attempt)
                .integer()
                .not_null()
                .default(1)
                .check(Expr::cust("attempt >= 1"))
                .to_owned(),
            ColumnDef::new(Payments::SentAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(Payments::CheckedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Payments::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookEvents::Table)
                    .add_column(ColumnDef::new(WebhookEvents::FailureReason).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_payments_retry_of")
                    .table(Payments::Table)
                    .col(Payments::RetryOf)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_payments_status_sent_at")
                    .table(Payments::Table)
                    .col(Payments::Status)
                    .col(Payments::SentAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(PaymentAttempts::Table)
                    .col(
                        ColumnDef::new(PaymentAttempts::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(PaymentAttempts::TenantId).uuid().not_null())
                    .col(ColumnDef::new(PaymentAttempts::PaymentId).uuid().not_null())
                    .col(
                        ColumnDef::new(PaymentAttempts::Kind)
                            .string_len(24)
                            .not_null()
                            .check(Expr::cust("kind IN ('SUBMIT','STATUS_CHECK','WEBHOOK')")),
                    )
                    .col(
                        ColumnDef::new(PaymentAttempts::Outcome)
                            .string_len(24)
                            .not_null()
                            .check(Expr::cust(
                                "outcome IN ('ACCEPTED','ERROR','SENT','SETTLED','FAILED','PROCESSING','UNKNOWN')",
                            )),
                    )
                    .col(ColumnDef::new(PaymentAttempts::Detail).text().null())
                    .col(
                        ColumnDef::new(PaymentAttempts::At)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_payment_attempts_tenant")
                            .from(PaymentAttempts::Table, PaymentAttempts::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_payment_attempts_payment")
                            .from(
                                PaymentAttempts::Table,
                                (PaymentAttempts::TenantId, PaymentAttempts::PaymentId),
                            )
                            .to(Payments::Table, (Payments::TenantId, Payments::Id)),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_payment_attempts_payment")
                    .table(PaymentAttempts::Table)
                    .col(PaymentAttempts::TenantId)
                    .col(PaymentAttempts::PaymentId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PaymentAttempts::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookEvents::Table)
                    .drop_column(WebhookEvents::FailureReason)
                    .to_owned(),
            )
            .await?;
        for name in ["ix_payments_status_sent_at", "uq_payments_retry_of"] {
            manager
                .drop_index(Index::drop().name(name).table(Payments::Table).to_owned())
                .await?;
        }
        for column in [
            Payments::CheckedAt,
            Payments::SentAt,
            Payments::Attempt,
            Payments::RetryOf,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Payments::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
