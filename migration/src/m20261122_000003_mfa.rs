//! TOTP enrolments, recovery codes, sign-in MFA challenges and per-tenant MFA policy.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    TenantId,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum MfaTotp {
    Table,
    TenantId,
    UserId,
    SecretSealed,
    EnabledAt,
    LastUsedStep,
    CreatedAt,
}

#[derive(DeriveIden)]
enum RecoveryCodes {
    Table,
    Id,
    TenantId,
    UserId,
    CodeHash,
    CreatedAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum MfaChallenges {
    Table,
    Id,
    TenantId,
    UserId,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    ConsumedAt,
}

#[derive(DeriveIden)]
enum TenantMfaPolicies {
    Table,
    TenantId,
    Role,
    CreatedAt,
}

fn user_fk(
    name: &str,
    table: impl IntoIden + 'static,
    tenant: impl IntoIden + 'static,
    user: impl IntoIden + 'static,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(table, (tenant, user))
        .to(Users::Table, (Users::TenantId, Users::Id))
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(MfaTotp::Table)
                    .col(ColumnDef::new(MfaTotp::TenantId).uuid().not_null())
                    .col(
                        ColumnDef::new(MfaTotp::UserId)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(MfaTotp::SecretSealed)
                            .string_len(512)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(MfaTotp::EnabledAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(MfaTotp::LastUsedStep).big_integer().null())
                    .col(
                        ColumnDef::new(MfaTotp::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(&mut user_fk(
                        "fk_mfa_totp_user",
                        MfaTotp::Table,
                        MfaTotp::TenantId,
                        MfaTotp::UserId,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RecoveryCodes::Table)
                    .col(
                        ColumnDef::new(RecoveryCodes::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(RecoveryCodes::TenantId).uuid().not_null())
                    .col(ColumnDef::new(RecoveryCodes::UserId).uuid().not_null())
                    .col(
                        ColumnDef::new(RecoveryCodes::CodeHash)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(RecoveryCodes::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RecoveryCodes::UsedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .foreign_key(&mut user_fk(
                        "fk_recovery_codes_user",
                        RecoveryCodes::Table,
                        RecoveryCodes::TenantId,
                        RecoveryCodes::UserId,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(MfaChallenges::Table)
                    .col(
                        ColumnDef::new(MfaChallenges::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(MfaChallenges::TenantId).uuid().not_null())
                    .col(ColumnDef::new(MfaChallenges::UserId).uuid().not_null())
                    .col(
                        ColumnDef::new(MfaChallenges::TokenHash)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(MfaChallenges::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(MfaChallenges::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(MfaChallenges::ConsumedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .foreign_key(&mut user_fk(
                        "fk_mfa_challenges_user",
                        MfaChallenges::Table,
                        MfaChallenges::TenantId,
                        MfaChallenges::UserId,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(TenantMfaPolicies::Table)
                    .col(
                        ColumnDef::new(TenantMfaPolicies::TenantId)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TenantMfaPolicies::Role)
                            .string_len(32)
                            .not_null()
                            .check(Expr::cust(
                                "role IN ('ADMIN','SUPPORT','SENDER','BENEFICIARY')",
                            )),
                    )
                    .col(
                        ColumnDef::new(TenantMfaPolicies::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(TenantMfaPolicies::TenantId)
                            .col(TenantMfaPolicies::Role),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_tenant_mfa_policies_tenant")
                            .from(TenantMfaPolicies::Table, TenantMfaPolicies::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            TenantMfaPolicies::Table.into_iden(),
            MfaChallenges::Table.into_iden(),
            RecoveryCodes::Table.into_iden(),
            MfaTotp::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
