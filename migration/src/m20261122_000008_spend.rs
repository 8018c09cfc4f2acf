//! Conditional spending: the catalog (categories, merchants), usage mandates with
//! their allowed categories and merchants, purchases, allowed payees and payouts,
//! restricted transfers and the alerts refusals raise.
//!
//! One ACTIVE mandate per (sender, beneficiary, currency) is a partial unique index
//! (same SQL on both backends); `spent_minor <= total_minor` and the day counters are
//! CHECKed, so even a buggy rule cannot overspend.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    TenantId,
}

#[derive(DeriveIden)]
enum Escrows {
    Table,
    Id,
    TenantId,
}

#[derive(DeriveIden)]
enum Payments {
    Table,
    Id,
    TenantId,
}

#[derive(DeriveIden)]
enum SpendCategories {
    Table,
    Id,
    TenantId,
    Code,
    Label,
    Enabled,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Merchants {
    Table,
    Id,
    TenantId,
    Name,
    CategoryId,
    Certified,
    Enabled,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Mandates {
    Table,
    Id,
    TenantId,
    SenderId,
    BeneficiaryId,
    Currency,
    TotalMinor,
    SpentMinor,
    PerPurchaseLimitMinor,
    DailyLimitMinor,
    SpendDay,
    DaySpentMinor,
    CertifiedOnly,
    Status,
    ExpiresAt,
    EndedAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum MandateCategories {
    Table,
    TenantId,
    MandateId,
    CategoryId,
}

#[derive(DeriveIden)]
enum MandateMerchants {
    Table,
    TenantId,
    MandateId,
    MerchantId,
}

#[derive(DeriveIden)]
enum Purchases {
    Table,
    Id,
    TenantId,
    MandateId,
    MerchantId,
    BeneficiaryId,
    AmountMinor,
    Currency,
    Description,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Payees {
    Table,
    Id,
    TenantId,
    MandateId,
    EscrowId,
    Reference,
    Name,
    Currency,
    DailyLimitMinor,
    TotalLimitMinor,
    PaidMinor,
    PayDay,
    DayPaidMinor,
    Enabled,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Payouts {
    Table,
    Id,
    TenantId,
    PayeeId,
    MandateId,
    PaymentId,
    AmountMinor,
    Currency,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum TransferRecipients {
    Table,
    Id,
    TenantId,
    OwnerId,
    RecipientId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CertifiedRecipients {
    Table,
    TenantId,
    UserId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Transfers {
    Table,
    Id,
    TenantId,
    SenderId,
    RecipientId,
    PaymentId,
    AmountMinor,
    Currency,
    Note,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Alerts {
    Table,
    Id,
    TenantId,
    SenderId,
    Kind,
    MandateId,
    Message,
    Details,
    CreatedAt,
}

fn id(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .uuid()
        .not_null()
        .primary_key()
        .to_owned()
}

fn uuid(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).uuid().not_null().to_owned()
}

fn uuid_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).uuid().null().to_owned()
}

fn time(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn minor(col: impl IntoIden, check: &str) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .check(Expr::cust(check))
        .to_owned()
}

fn minor_null(col: impl IntoIden, check: &str) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .null()
        .check(Expr::cust(check))
        .to_owned()
}

fn currency(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .string_len(3)
        .not_null()
        .check(Expr::cust("length(currency) = 3"))
        .to_owned()
}

fn flag(col: impl IntoIden, default: bool) -> ColumnDef {
    ColumnDef::new(col)
        .boolean()
        .not_null()
        .default(default)
        .to_owned()
}

fn tenant_fk(
    table: impl IntoIden + 'static,
    col: impl IntoIden + 'static,
    name: &str,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(table, col)
        .to(Tenants::Table, Tenants::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

fn user_fk(
    table: impl IntoIden + 'static,
    tenant: impl IntoIden + 'static,
    col: impl IntoIden + 'static,
    name: &str,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(table, (tenant, col))
        .to(Users::Table, (Users::TenantId, Users::Id))
        .to_owned()
}

fn unique_tenant_id(name: &str, table: impl IntoIden + 'static) -> IndexCreateStatement {
    Index::create()
        .name(name)
        .table(table)
        .col(Alias::new("tenant_id"))
        .col(Alias::new("id"))
        .unique()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SpendCategories::Table)
                    .col(id(SpendCategories::Id))
                    .col(uuid(SpendCategories::TenantId))
                    .col(
                        ColumnDef::new(SpendCategories::Code)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(SpendCategories::Label)
                            .string_len(200)
                            .not_null(),
                    )
                    .col(flag(SpendCategories::Enabled, true))
                    .col(time(SpendCategories::CreatedAt))
                    .foreign_key(&mut tenant_fk(
                        SpendCategories::Table,
                        SpendCategories::TenantId,
                        "fk_spend_categories_tenant",
                    ))
                    .index(
                        Index::create()
                            .name("uq_spend_categories_code")
                            .col(SpendCategories::TenantId)
                            .col(SpendCategories::Code)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_tenant_id(
                "uq_spend_categories_tenant_id",
                SpendCategories::Table,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Merchants::Table)
                    .col(id(Merchants::Id))
                    .col(uuid(Merchants::TenantId))
                    .col(ColumnDef::new(Merchants::Name).string_len(200).not_null())
                    .col(uuid(Merchants::CategoryId))
                    .col(flag(Merchants::Certified, false))
                    .col(flag(Merchants::Enabled, true))
                    .col(time(Merchants::CreatedAt))
                    .foreign_key(&mut tenant_fk(
                        Merchants::Table,
                        Merchants::TenantId,
                        "fk_merchants_tenant",
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_merchants_category")
                            .from(
                                Merchants::Table,
                                (Merchants::TenantId, Merchants::CategoryId),
                            )
                            .to(
                                SpendCategories::Table,
                                (SpendCategories::TenantId, SpendCategories::Id),
                            ),
                    )
                    .index(
                        Index::create()
                            .name("uq_merchants_name")
                            .col(Merchants::TenantId)
                            .col(Merchants::Name)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_tenant_id("uq_merchants_tenant_id", Merchants::Table))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Mandates::Table)
                    .col(id(Mandates::Id))
                    .col(uuid(Mandates::TenantId))
                    .col(uuid(Mandates::SenderId))
                    .col(uuid(Mandates::BeneficiaryId))
                    .col(currency(Mandates::Currency))
                    .col(minor(Mandates::TotalMinor, "total_minor > 0"))
                    .col(minor(Mandates::SpentMinor, "spent_minor >= 0"))
                    .col(minor_null(
                        Mandates::PerPurchaseLimitMinor,
                        "per_purchase_limit_minor > 0",
                    ))
                    .col(minor_null(
                        Mandates::DailyLimitMinor,
                        "daily_limit_minor > 0",
                    ))
                    .col(ColumnDef::new(Mandates::SpendDay).string_len(10).not_null())
                    .col(minor(Mandates::DaySpentMinor, "day_spent_minor >= 0"))
                    .col(flag(Mandates::CertifiedOnly, false))
                    .col(
                        ColumnDef::new(Mandates::Status)
                            .string_len(24)
                            .not_null()
                            .check(Expr::cust(
                                "status IN ('ACTIVE','CONSUMED','EXPIRED','REVOKED')",
                            )),
                    )
                    .col(time(Mandates::ExpiresAt))
                    .col(
                        ColumnDef::new(Mandates::EndedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(time(Mandates::CreatedAt))
                    .col(time(Mandates::UpdatedAt))
                    .check(Expr::cust("spent_minor <= total_minor"))
                    .check(Expr::cust(
                        "daily_limit_minor IS NULL OR day_spent_minor <= daily_limit_minor",
                    ))
                    .check(Expr::cust("sender_id <> beneficiary_id"))
                    .foreign_key(&mut tenant_fk(
                        Mandates::Table,
                        Mandates::TenantId,
                        "fk_mandates_tenant",
                    ))
                    .foreign_key(&mut user_fk(
                        Mandates::Table,
                        Mandates::TenantId,
                        Mandates::SenderId,
                        "fk_mandates_sender",
                    ))
                    .foreign_key(&mut user_fk(
                        Mandates::Table,
                        Mandates::TenantId,
                        Mandates::BeneficiaryId,
                        "fk_mandates_beneficiary",
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_tenant_id("uq_mandates_tenant_id", Mandates::Table))
            .await?;
        // One ACTIVE mandate per (sender, beneficiary, currency): a partial index, the
        // same statement on PostgreSQL and SQLite.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX uq_mandates_one_active ON mandates \
                 (tenant_id, sender_id, beneficiary_id, currency) WHERE status = 'ACTIVE'",
            )
            .await?;
        for (name, col) in [
            ("ix_mandates_sender", Mandates::SenderId),
            ("ix_mandates_beneficiary", Mandates::BeneficiaryId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Mandates::Table)
                        .col(Mandates::TenantId)
                        .col(col)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("ix_mandates_expiry")
                    .table(Mandates::Table)
                    .col(Mandates::Status)
                    .col(Mandates::ExpiresAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(MandateCategories::Table)
                    .col(uuid(MandateCategories::TenantId))
                    .col(uuid(MandateCategories::MandateId))
                    .col(uuid(MandateCategories::CategoryId))
                    .primary_key(
                        Index::create()
                            .col(MandateCategories::MandateId)
                            .col(MandateCategories::CategoryId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_mandate_categories_mandate")
                            .from(
                                MandateCategories::Table,
                                (MandateCategories::TenantId, MandateCategories::MandateId),
                            )
                            .to(Mandates::Table, (Mandates::TenantId, Mandates::Id))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_mandate_categories_category")
                            .from(
                                MandateCategories::Table,
                                (MandateCategories::TenantId, MandateCategories::CategoryId),
                            )
                            .to(
                                SpendCategories::Table,
                                (SpendCategories::TenantId, SpendCategories::Id),
                            ),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(MandateMerchants::Table)
                    .col(uuid(MandateMerchants::TenantId))
                    .col(uuid(MandateMerchants::MandateId))
                    .col(uuid(MandateMerchants::MerchantId))
                    .primary_key(
                        Index::create()
                            .col(MandateMerchants::MandateId)
                            .col(MandateMerchants::MerchantId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_mandate_merchants_mandate")
                            .from(
                                MandateMerchants::Table,
                                (MandateMerchants::TenantId, MandateMerchants::MandateId),
                            )
                            .to(Mandates::Table, (Mandates::TenantId, Mandates::Id))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_mandate_merchants_merchant")
                            .from(
                                MandateMerchants::Table,
                                (MandateMerchants::TenantId, MandateMerchants::MerchantId),
                            )
                            .to(Merchants::Table, (Merchants::TenantId, Merchants::Id)),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Purchases::Table)
                    .col(id(Purchases::Id))
                    .col(uuid(Purchases::TenantId))
                    .col(uuid(Purchases::MandateId))
                    .col(uuid(Purchases::MerchantId))
                    .col(uuid(Purchases::BeneficiaryId))
                    .col(minor(Purchases::AmountMinor, "amount_minor > 0"))
                    .col(currency(Purchases::Currency))
                    .col(
                        ColumnDef::new(Purchases::Description)
                            .string_len(500)
                            .null(),
                    )
                    .col(time(Purchases::CreatedAt))
                    .foreign_key(&mut tenant_fk(
                        Purchases::Table,
                        Purchases::TenantId,
                        "fk_purchases_tenant",
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_purchases_mandate")
                            .from(
                                Purchases::Table,
                                (Purchases::TenantId, Purchases::MandateId),
                            )
                            .to(Mandates::Table, (Mandates::TenantId, Mandates::Id)),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_purchases_merchant")
                            .from(
                                Purchases::Table,
                                (Purchases::TenantId, Purchases::MerchantId),
                            )
                            .to(Merchants::Table, (Merchants::TenantId, Merchants::Id)),
                    )
                    .foreign_key(&mut user_fk(
                        Purchases::Table,
                        Purchases::TenantId,
                        Purchases::BeneficiaryId,
                        "fk_purchases_beneficiary",
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_purchases_mandate")
                    .table(Purchases::Table)
                    .col(Purchases::TenantId)
                    .col(Purchases::MandateId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Payees::Table)
                    .col(id(Payees::Id))
                    .col(uuid(Payees::TenantId))
                    .col(uuid_null(Payees::MandateId))
                    .col(uuid_null(Payees::EscrowId))
                    .col(ColumnDef::new(Payees::Reference).string_len(64).not_null())
                    .col(ColumnDef::new(Payees::Name).string_len(200).not_null())
                    .col(currency(Payees::Currency))
                    .col(minor_null(Payees::DailyLimitMinor, "daily_limit_minor > 0"))
                    .col(minor_null(Payees::TotalLimitMinor, "total_limit_minor > 0"))
                    .col(minor(Payees::PaidMinor, "paid_minor >= 0"))
                    .col(ColumnDef::new(Payees::PayDay).string_len(10).not_null())
                    .col(minor(Payees::DayPaidMinor, "day_paid_minor >= 0"))
                    .col(flag(Payees::Enabled, true))
                    .col(time(Payees::CreatedAt))
                    .check(Expr::cust("(mandate_id IS NULL) <> (escrow_id IS NULL)"))
                    .check(Expr::cust(
                        "total_limit_minor IS NULL OR paid_minor <= total_limit_minor",
                    ))
                    .check(Expr::cust(
                        "daily_limit_minor IS NULL OR day_paid_minor <= daily_limit_minor",
                    ))
                    .foreign_key(&mut tenant_fk(
                        Payees::Table,
                        Payees::TenantId,
                        "fk_payees_tenant",
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_payees_mandate")
                            .from(Payees::Table, (Payees::TenantId, Payees::MandateId))
                            .to(Mandates::Table, (Mandates::TenantId, Mandates::Id)),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_payees_escrow")
                            .from(Payees::Table, (Payees::TenantId, Payees::EscrowId))
                            .to(Escrows::Table, (Escrows::TenantId, Escrows::Id)),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_tenant_id("uq_payees_tenant_id", Payees::Table))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Payouts::Table)
                    .col(id(Payouts::Id))
                    .col(uuid(Payouts::TenantId))
                    .col(uuid(Payouts::PayeeId))
                    .col(uuid_null(Payouts::MandateId))
                    .col(uuid(Payouts::PaymentId))
                    .col(minor(Payouts::AmountMinor, "amount_minor > 0"))
                    .col(currency(Payouts::Currency))
                    .col(uuid(Payouts::CreatedBy))
                    .col(time(Payouts::CreatedAt))
                    .foreign_key(&mut tenant_fk(
                        Payouts::Table,
                        Payouts::TenantId,
                        "fk_payouts_tenant",
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_payouts_payee")
                            .from(Payouts::Table, (Payouts::TenantId, Payouts::PayeeId))
                            .to(Payees::Table, (Payees::TenantId, Payees::Id)),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_payouts_payment")
                            .from(Payouts::Table, (Payouts::TenantId, Payouts::PaymentId))
                            .to(Payments::Table, (Payments::TenantId, Payments::Id)),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(TransferRecipients::Table)
                    .col(id(TransferRecipients::Id))
                    .col(uuid(TransferRecipients::TenantId))
                    .col(uuid(TransferRecipients::OwnerId))
                    .col(uuid(TransferRecipients::RecipientId))
                    .col(time(TransferRecipients::CreatedAt))
                    .check(Expr::cust("owner_id <> recipient_id"))
                    .foreign_key(&mut user_fk(
                        TransferRecipients::Table,
                        TransferRecipients::TenantId,
                        TransferRecipients::OwnerId,
                        "fk_transfer_recipients_owner",
                    ))
                    .foreign_key(&mut user_fk(
                        TransferRecipients::Table,
                        TransferRecipients::TenantId,
                        TransferRecipients::RecipientId,
                        "fk_transfer_recipients_recipient",
                    ))
                    .index(
                        Index::create()
                            .name("uq_transfer_recipients")
                            .col(TransferRecipients::TenantId)
                            .col(TransferRecipients::OwnerId)
                            .col(TransferRecipients::RecipientId)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CertifiedRecipients::Table)
                    .col(uuid(CertifiedRecipients::TenantId))
                    .col(uuid(CertifiedRecipients::UserId))
                    .col(time(CertifiedRecipients::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(CertifiedRecipients::TenantId)
                            .col(CertifiedRecipients::UserId),
                    )
                    .foreign_key(&mut user_fk(
                        CertifiedRecipients::Table,
                        CertifiedRecipients::TenantId,
                        CertifiedRecipients::UserId,
                        "fk_certified_recipients_user",
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Transfers::Table)
                    .col(id(Transfers::Id))
                    .col(uuid(Transfers::TenantId))
                    .col(uuid(Transfers::SenderId))
                    .col(uuid(Transfers::RecipientId))
                    .col(uuid(Transfers::PaymentId))
                    .col(minor(Transfers::AmountMinor, "amount_minor > 0"))
                    .col(currency(Transfers::Currency))
                    .col(ColumnDef::new(Transfers::Note).string_len(500).null())
                    .col(time(Transfers::CreatedAt))
                    .foreign_key(&mut user_fk(
                        Transfers::Table,
                        Transfers::TenantId,
                        Transfers::SenderId,
                        "fk_transfers_sender",
                    ))
                    .foreign_key(&mut user_fk(
                        Transfers::Table,
                        Transfers::TenantId,
                        Transfers::RecipientId,
                        "fk_transfers_recipient",
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_transfers_payment")
                            .from(
                                Transfers::Table,
                                (Transfers::TenantId, Transfers::PaymentId),
                            )
                            .to(Payments::Table, (Payments::TenantId, Payments::Id)),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Alerts::Table)
                    .col(id(Alerts::Id))
                    .col(uuid(Alerts::TenantId))
                    .col(uuid(Alerts::SenderId))
                    .col(ColumnDef::new(Alerts::Kind).string_len(48).not_null())
                    .col(uuid_null(Alerts::MandateId))
                    .col(ColumnDef::new(Alerts::Message).string_len(500).not_null())
                    .col(ColumnDef::new(Alerts::Details).json().not_null())
                    .col(time(Alerts::CreatedAt))
                    .foreign_key(&mut tenant_fk(
                        Alerts::Table,
                        Alerts::TenantId,
                        "fk_alerts_tenant",
                    ))
                    .foreign_key(&mut user_fk(
                        Alerts::Table,
                        Alerts::TenantId,
                        Alerts::SenderId,
                        "fk_alerts_sender",
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_alerts_sender")
                    .table(Alerts::Table)
                    .col(Alerts::TenantId)
                    .col(Alerts::SenderId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Alerts::Table.into_iden(),
            Transfers::Table.into_iden(),
            CertifiedRecipients::Table.into_iden(),
            TransferRecipients::Table.into_iden(),
            Payouts::Table.into_iden(),
            Payees::Table.into_iden(),
            Purchases::Table.into_iden(),
            MandateMerchants::Table.into_iden(),
            MandateCategories::Table.into_iden(),
            Mandates::Table.into_iden(),
            Merchants::Table.into_iden(),
            SpendCategories::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
