//! Notifications and mailed tokens: the outbox of mails written in the business transaction that causes
//! them (one INSERT: the kind and its data; rendered when sent) and sent by the jobs
//! (`notifications`), the single-use tokens those mails carry
//! (`mail_tokens`: password reset, email verification and change, stored as a
//! SHA-256 only), when a user's address was verified (`users.email_verified_at`), and what each user
//! turned off (`notification_opt_outs`). All three are tenant-owned: `tenant_id NOT
//! NULL`, the user referenced by `(tenant_id, user_id)`, and on PostgreSQL the same
//! `tenant_wall` policy as every tenant table.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    TenantId,
    EmailVerifiedAt,
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Id,
    TenantId,
    UserId,
    Kind,
    ToAddress,
    Data,
    Status,
    Attempts,
    NextAttemptAt,
    ClaimedUntil,
    SentAt,
    LastError,
    CreatedAt,
}

#[derive(DeriveIden)]
enum MailTokens {
    Table,
    Id,
    TenantId,
    UserId,
    Purpose,
    NewEmail,
    TokenHash,
    ExpiresAt,
    UsedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum NotificationOptOuts {
    Table,
    Id,
    TenantId,
    UserId,
    Kind,
    CreatedAt,
}

const TABLES: [&str; 3] = ["notifications", "mail_tokens", "notification_opt_outs"];

/// The tenant the transaction entered (as in the row-level security migration).
const CURRENT_TENANT: &str = "NULLIF(current_setting('sequestra.tenant_id', true), '')::uuid";

fn user_key(name: &str, table: impl IntoIden + 'static) -> ForeignKeyCreateStatement {
    #[derive(DeriveIden)]
    enum Col {
        TenantId,
        UserId,
    }
    ForeignKey::create()
        .name(name)
        .from(table, (Col::TenantId, Col::UserId))
        .to(Users::Table, (Users::TenantId, Users::Id))
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

fn at(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn at_or_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Notifications::Table)
                    .col(
                        ColumnDef::new(Notifications::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Notifications::TenantId).uuid().not_null())
                    .col(ColumnDef::new(Notifications::UserId).uuid().not_null())
                    .col(
                        ColumnDef::new(Notifications::Kind)
                            .string_len(40)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Notifications::ToAddress)
                            .string_len(320)
                            .null(),
                    )
                    .col(ColumnDef::new(Notifications::Data).text().not_null())
                    .col(
                        ColumnDef::new(Notifications::Status)
                            .string_len(16)
                            .not_null()
                            .check(Expr::cust(
                                "status IN ('PENDING','SENT','SKIPPED','FAILED')",
                            )),
                    )
                    .col(
                        ColumnDef::new(Notifications::Attempts)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(at(Notifications::NextAttemptAt))
                    .col(at_or_null(Notifications::ClaimedUntil))
                    .col(at_or_null(Notifications::SentAt))
                    .col(
                        ColumnDef::new(Notifications::LastError)
                            .string_len(500)
                            .null(),
                    )
                    .col(at(Notifications::CreatedAt))
                    .foreign_key(&mut user_key("fk_notifications_user", Notifications::Table))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_notifications_due")
                    .table(Notifications::Table)
                    .col(Notifications::TenantId)
                    .col(Notifications::Status)
                    .col(Notifications::NextAttemptAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(MailTokens::Table)
                    .col(
                        ColumnDef::new(MailTokens::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(MailTokens::TenantId).uuid().not_null())
                    .col(ColumnDef::new(MailTokens::UserId).uuid().not_null())
                    .col(
                        ColumnDef::new(MailTokens::Purpose)
                            .string_len(24)
                            .not_null(),
                    )
                    .col(ColumnDef::new(MailTokens::NewEmail).string_len(320).null())
                    .col(
                        ColumnDef::new(MailTokens::TokenHash)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(at(MailTokens::ExpiresAt))
                    .col(at_or_null(MailTokens::UsedAt))
                    .col(at(MailTokens::CreatedAt))
                    .foreign_key(&mut user_key("fk_mail_tokens_user", MailTokens::Table))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_mail_tokens_user")
                    .table(MailTokens::Table)
                    .col(MailTokens::TenantId)
                    .col(MailTokens::UserId)
                    .col(MailTokens::CreatedAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(NotificationOptOuts::Table)
                    .col(
                        ColumnDef::new(NotificationOptOuts::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(NotificationOptOuts::TenantId)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(NotificationOptOuts::UserId)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(NotificationOptOuts::Kind)
                            .string_len(40)
                            .not_null(),
                    )
                    .col(at(NotificationOptOuts::CreatedAt))
                    .foreign_key(&mut user_key(
                        "fk_notification_opt_outs_user",
                        NotificationOptOuts::Table,
                    ))
                    .index(
                        Index::create()
                            .name("uq_notification_opt_outs")
                            .col(NotificationOptOuts::TenantId)
                            .col(NotificationOptOuts::UserId)
                            .col(NotificationOptOuts::Kind)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;

        // When the user proved the address is theirs (a mailed token); NULL: not yet.
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(at_or_null(Users::EmailVerifiedAt))
                    .to_owned(),
            )
            .await?;

        if manager.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            let mut sql = String::new();
            for table in TABLES {
                sql.push_str(&format!(
                    "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;\n\
                     ALTER TABLE {table} FORCE ROW LEVEL SECURITY;\n\
                     CREATE POLICY tenant_wall ON {table} \
                       USING (tenant_id = {CURRENT_TENANT}) \
                       WITH CHECK (tenant_id = {CURRENT_TENANT});\n"
                ));
            }
            manager.get_connection().execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::EmailVerifiedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(NotificationOptOuts::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(MailTokens::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Notifications::Table).to_owned())
            .await
    }
}
