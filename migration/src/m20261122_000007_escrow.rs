//! Escrows and what hangs off them: milestones, deposits, proofs, payments and the
//! event timeline; plus the job leases background work coordinates through.
//!
//! Invariants live here too, not only in the rules: positive amounts, deposits never
//! above the total, paid plus refunded never above funded, states from a closed list,
//! and composite `(tenant_id, id)` foreign keys so no row points into another tenant.

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
    SenderId,
    ProviderId,
    Description,
    Currency,
    AmountMinor,
    FundedMinor,
    ReleasedMinor,
    RefundedMinor,
    Status,
    DisputedFrom,
    DisputeReason,
    Deadline,
    InspectionSeconds,
    DeliveredAt,
    InspectionEndsAt,
    RefundableAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Milestones {
    Table,
    Id,
    TenantId,
    EscrowId,
    Position,
    Title,
    AmountMinor,
    Status,
    ProofKind,
    GeoLatitude,
    GeoLongitude,
    GeoRadiusM,
    WindowStart,
    WindowEnd,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Deposits {
    Table,
    Id,
    TenantId,
    EscrowId,
    DepositorId,
    AmountMinor,
    Currency,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Proofs {
    Table,
    Id,
    TenantId,
    EscrowId,
    MilestoneId,
    SubmittedBy,
    Kind,
    Filename,
    ContentType,
    SizeBytes,
    Sha256,
    StorageKey,
    Note,
    Latitude,
    Longitude,
    CapturedAt,
    Status,
    DecidedBy,
    DecidedAutomatically,
    DecisionNote,
    DecidedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Payments {
    Table,
    Id,
    TenantId,
    EscrowId,
    MilestoneId,
    PayeeId,
    /// An external payee (a spend payout), when the payee is not a user.
    PayeeReference,
    Purpose,
    AmountMinor,
    Currency,
    Status,
    Psp,
    PspReference,
    FailureReason,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum EscrowEvents {
    Table,
    Id,
    TenantId,
    EscrowId,
    MilestoneId,
    Kind,
    FromStatus,
    ToStatus,
    ActorId,
    Data,
    CreatedAt,
}

#[derive(DeriveIden)]
enum JobLeases {
    Table,
    Name,
    Holder,
    ExpiresAt,
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

fn time_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

fn positive_amount(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .check(Expr::cust("amount_minor > 0"))
        .to_owned()
}

fn currency(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .string_len(3)
        .not_null()
        .check(Expr::cust("length(currency) = 3"))
        .to_owned()
}

fn one_of(col: impl IntoIden, name: &str, values: &[&str]) -> ColumnDef {
    let list = values
        .iter()
        .map(|v| format!("'{v}'"))
        .collect::<Vec<_>>()
        .join(",");
    ColumnDef::new(col)
        .string_len(24)
        .not_null()
        .check(Expr::cust(format!("{name} IN ({list})")))
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

const ESCROW_STATES: &[&str] = &[
    "DRAFT",
    "FUNDED",
    "RELEASABLE",
    "RELEASED",
    "CANCELLED",
    "REFUNDED",
    "DISPUTED",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Escrows::Table)
                    .col(id(Escrows::Id))
                    .col(uuid(Escrows::TenantId))
                    .col(uuid(Escrows::SenderId))
                    .col(uuid(Escrows::ProviderId))
                    .col(ColumnDef::new(Escrows::Description).text().not_null())
                    .col(currency(Escrows::Currency))
                    .col(positive_amount(Escrows::AmountMinor))
                    .col(
                        ColumnDef::new(Escrows::FundedMinor)
                            .big_integer()
                            .not_null()
                            .default(0)
                            .check(Expr::cust("funded_minor >= 0")),
                    )
                    .col(
                        ColumnDef::new(Escrows::ReleasedMinor)
                            .big_integer()
                            .not_null()
                            .default(0)
                            .check(Expr::cust("released_minor >= 0")),
                    )
                    .col(
                        ColumnDef::new(Escrows::RefundedMinor)
                            .big_integer()
                            .not_null()
                            .default(0)
                            .check(Expr::cust("refunded_minor >= 0")),
                    )
                    .col(one_of(Escrows::Status, "status", ESCROW_STATES))
                    .col(ColumnDef::new(Escrows::DisputedFrom).string_len(24).null())
                    .col(ColumnDef::new(Escrows::DisputeReason).text().null())
                    .col(time(Escrows::Deadline))
                    .col(
                        ColumnDef::new(Escrows::InspectionSeconds)
                            .big_integer()
                            .null()
                            .check(Expr::cust("inspection_seconds > 0")),
                    )
                    .col(time_null(Escrows::DeliveredAt))
                    .col(time_null(Escrows::InspectionEndsAt))
                    .col(time_null(Escrows::RefundableAt))
                    .col(time(Escrows::CreatedAt))
                    .col(time(Escrows::UpdatedAt))
                    .check(Expr::cust("funded_minor <= amount_minor"))
                    .check(Expr::cust(
                        "released_minor + refunded_minor <= funded_minor",
                    ))
                    .check(Expr::cust("sender_id <> provider_id"))
                    .foreign_key(&mut tenant_fk(
                        Escrows::Table,
                        Escrows::TenantId,
                        "fk_escrows_tenant",
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_escrows_sender")
                            .from(Escrows::Table, (Escrows::TenantId, Escrows::SenderId))
                            .to(Users::Table, (Users::TenantId, Users::Id)),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_escrows_provider")
                            .from(Escrows::Table, (Escrows::TenantId, Escrows::ProviderId))
                            .to(Users::Table, (Users::TenantId, Users::Id)),
                    )
                    .index(
                        Index::create()
                            .name("uq_escrows_tenant_id")
                            .col(Escrows::TenantId)
                            .col(Escrows::Id)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("ix_escrows_sender", Escrows::SenderId),
            ("ix_escrows_provider", Escrows::ProviderId),
            ("ix_escrows_status", Escrows::Status),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Escrows::Table)
                        .col(Escrows::TenantId)
                        .col(col)
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(Milestones::Table)
                    .col(id(Milestones::Id))
                    .col(uuid(Milestones::TenantId))
                    .col(uuid(Milestones::EscrowId))
                    .col(
                        ColumnDef::new(Milestones::Position)
                            .integer()
                            .not_null()
                            .check(Expr::cust("position >= 1")),
                    )
                    .col(ColumnDef::new(Milestones::Title).string_len(200).not_null())
                    .col(positive_amount(Milestones::AmountMinor))
                    .col(one_of(
                        Milestones::Status,
                        "status",
                        &["WAITING", "PENDING_REVIEW", "APPROVED", "REJECTED", "PAYING", "PAID"],
                    ))
                    .col(one_of(
                        Milestones::ProofKind,
                        "proof_kind",
                        &["NONE", "DOCUMENT", "PHOTO"],
                    ))
                    .col(ColumnDef::new(Milestones::GeoLatitude).double().null())
                    .col(ColumnDef::new(Milestones::GeoLongitude).double().null())
                    .col(ColumnDef::new(Milestones::GeoRadiusM).double().null())
                    .col(time_null(Milestones::WindowStart))
                    .col(time_null(Milestones::WindowEnd))
                    .col(time(Milestones::CreatedAt))
                    .col(time(Milestones::UpdatedAt))
                    .check(Expr::cust(
                        "(geo_latitude IS NULL AND geo_longitude IS NULL AND geo_radius_m IS NULL) \
                         OR (geo_latitude BETWEEN -90 AND 90 AND geo_longitude BETWEEN -180 AND 180 \
                         AND geo_radius_m > 0)",
                    ))
                    .foreign_key(&mut tenant_fk(Milestones::Table, Milestones::TenantId, "fk_milestones_tenant"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_milestones_escrow")
                            .from(Milestones::Table, (Milestones::TenantId, Milestones::EscrowId))
                            .to(Escrows::Table, (Escrows::TenantId, Escrows::Id))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .index(
                        Index::create()
                            .name("uq_milestones_tenant_id")
                            .col(Milestones::TenantId)
                            .col(Milestones::Id)
                            .unique(),
                    )
                    .index(
                        Index::create()
                            .name("uq_milestones_position")
                            .col(Milestones::EscrowId)
                            .col(Milestones::Position)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Deposits::Table)
                    .col(id(Deposits::Id))
                    .col(uuid(Deposits::TenantId))
                    .col(uuid(Deposits::EscrowId))
                    .col(uuid(Deposits::DepositorId))
                    .col(positive_amount(Deposits::AmountMinor))
                    .col(currency(Deposits::Currency))
                    .col(time(Deposits::CreatedAt))
                    .foreign_key(&mut tenant_fk(
                        Deposits::Table,
                        Deposits::TenantId,
                        "fk_deposits_tenant",
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_deposits_escrow")
                            .from(Deposits::Table, (Deposits::TenantId, Deposits::EscrowId))
                            .to(Escrows::Table, (Escrows::TenantId, Escrows::Id))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_deposits_depositor")
                            .from(Deposits::Table, (Deposits::TenantId, Deposits::DepositorId))
                            .to(Users::Table, (Users::TenantId, Users::Id)),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_deposits_escrow")
                    .table(Deposits::Table)
                    .col(Deposits::TenantId)
                    .col(Deposits::EscrowId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Proofs::Table)
                    .col(id(Proofs::Id))
                    .col(uuid(Proofs::TenantId))
                    .col(uuid(Proofs::EscrowId))
                    .col(uuid(Proofs::MilestoneId))
                    .col(uuid(Proofs::SubmittedBy))
                    .col(one_of(Proofs::Kind, "kind", &["NOTE", "DOCUMENT", "PHOTO"]))
                    .col(ColumnDef::new(Proofs::Filename).string_len(255).null())
                    .col(ColumnDef::new(Proofs::ContentType).string_len(64).null())
                    .col(
                        ColumnDef::new(Proofs::SizeBytes)
                            .big_integer()
                            .null()
                            .check(Expr::cust("size_bytes > 0")),
                    )
                    .col(ColumnDef::new(Proofs::Sha256).string_len(64).null())
                    .col(ColumnDef::new(Proofs::StorageKey).string_len(255).null())
                    .col(ColumnDef::new(Proofs::Note).text().null())
                    .col(ColumnDef::new(Proofs::Latitude).double().null())
                    .col(ColumnDef::new(Proofs::Longitude).double().null())
                    .col(time_null(Proofs::CapturedAt))
                    .col(one_of(
                        Proofs::Status,
                        "status",
                        &["PENDING", "ACCEPTED", "REJECTED"],
                    ))
                    .col(uuid_null(Proofs::DecidedBy))
                    .col(
                        ColumnDef::new(Proofs::DecidedAutomatically)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(ColumnDef::new(Proofs::DecisionNote).text().null())
                    .col(time_null(Proofs::DecidedAt))
                    .col(time(Proofs::CreatedAt))
                    .check(Expr::cust(
                        "(kind = 'NOTE' AND sha256 IS NULL) OR (kind <> 'NOTE' AND sha256 IS NOT NULL \
                         AND storage_key IS NOT NULL AND size_bytes IS NOT NULL)",
                    ))
                    .foreign_key(&mut tenant_fk(Proofs::Table, Proofs::TenantId, "fk_proofs_tenant"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_proofs_escrow")
                            .from(Proofs::Table, (Proofs::TenantId, Proofs::EscrowId))
                            .to(Escrows::Table, (Escrows::TenantId, Escrows::Id))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_proofs_milestone")
                            .from(Proofs::Table, (Proofs::TenantId, Proofs::MilestoneId))
                            .to(Milestones::Table, (Milestones::TenantId, Milestones::Id))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_proofs_submitter")
                            .from(Proofs::Table, (Proofs::TenantId, Proofs::SubmittedBy))
                            .to(Users::Table, (Users::TenantId, Users::Id)),
                    )
                    .index(
                        Index::create()
                            .name("uq_proofs_tenant_id")
                            .col(Proofs::TenantId)
                            .col(Proofs::Id)
                            .unique(),
                    )
                    .index(
                        Index::create()
                            .name("uq_proofs_sha256")
                            .col(Proofs::TenantId)
                            .col(Proofs::Sha256)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_proofs_milestone")
                    .table(Proofs::Table)
                    .col(Proofs::TenantId)
                    .col(Proofs::MilestoneId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Payments::Table)
                    .col(id(Payments::Id))
                    .col(uuid(Payments::TenantId))
                    .col(uuid_null(Payments::EscrowId))
                    .col(uuid_null(Payments::MilestoneId))
                    .col(uuid_null(Payments::PayeeId))
                    .col(
                        ColumnDef::new(Payments::PayeeReference)
                            .string_len(64)
                            .null(),
                    )
                    .col(one_of(
                        Payments::Purpose,
                        "purpose",
                        &[
                            "ESCROW_RELEASE",
                            "ESCROW_REFUND",
                            "SPEND_PAYOUT",
                            "TRANSFER",
                        ],
                    ))
                    .col(positive_amount(Payments::AmountMinor))
                    .col(currency(Payments::Currency))
                    .col(one_of(
                        Payments::Status,
                        "status",
                        &["PENDING", "SENT", "SETTLED", "FAILED"],
                    ))
                    .col(ColumnDef::new(Payments::Psp).string_len(32).not_null())
                    .col(
                        ColumnDef::new(Payments::PspReference)
                            .string_len(128)
                            .null(),
                    )
                    .col(ColumnDef::new(Payments::FailureReason).text().null())
                    .col(time(Payments::CreatedAt))
                    .col(time(Payments::UpdatedAt))
                    .check(Expr::cust(
                        "payee_id IS NOT NULL OR payee_reference IS NOT NULL",
                    ))
                    .foreign_key(&mut tenant_fk(
                        Payments::Table,
                        Payments::TenantId,
                        "fk_payments_tenant",
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_payments_escrow")
                            .from(Payments::Table, (Payments::TenantId, Payments::EscrowId))
                            .to(Escrows::Table, (Escrows::TenantId, Escrows::Id)),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_payments_milestone")
                            .from(Payments::Table, (Payments::TenantId, Payments::MilestoneId))
                            .to(Milestones::Table, (Milestones::TenantId, Milestones::Id)),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_payments_payee")
                            .from(Payments::Table, (Payments::TenantId, Payments::PayeeId))
                            .to(Users::Table, (Users::TenantId, Users::Id)),
                    )
                    .index(
                        Index::create()
                            .name("uq_payments_tenant_id")
                            .col(Payments::TenantId)
                            .col(Payments::Id)
                            .unique(),
                    )
                    .index(
                        Index::create()
                            .name("uq_payments_psp_reference")
                            .col(Payments::Psp)
                            .col(Payments::PspReference)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("ix_payments_escrow", Payments::EscrowId),
            ("ix_payments_status", Payments::Status),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Payments::Table)
                        .col(Payments::TenantId)
                        .col(col)
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(EscrowEvents::Table)
                    .col(id(EscrowEvents::Id))
                    .col(uuid(EscrowEvents::TenantId))
                    .col(uuid(EscrowEvents::EscrowId))
                    .col(uuid_null(EscrowEvents::MilestoneId))
                    .col(ColumnDef::new(EscrowEvents::Kind).string_len(48).not_null())
                    .col(
                        ColumnDef::new(EscrowEvents::FromStatus)
                            .string_len(24)
                            .null(),
                    )
                    .col(ColumnDef::new(EscrowEvents::ToStatus).string_len(24).null())
                    .col(uuid_null(EscrowEvents::ActorId))
                    .col(ColumnDef::new(EscrowEvents::Data).json().not_null())
                    .col(time(EscrowEvents::CreatedAt))
                    .foreign_key(&mut tenant_fk(
                        EscrowEvents::Table,
                        EscrowEvents::TenantId,
                        "fk_escrow_events_tenant",
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_escrow_events_escrow")
                            .from(
                                EscrowEvents::Table,
                                (EscrowEvents::TenantId, EscrowEvents::EscrowId),
                            )
                            .to(Escrows::Table, (Escrows::TenantId, Escrows::Id))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_escrow_events_escrow")
                    .table(EscrowEvents::Table)
                    .col(EscrowEvents::TenantId)
                    .col(EscrowEvents::EscrowId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(JobLeases::Table)
                    .col(
                        ColumnDef::new(JobLeases::Name)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(JobLeases::Holder).string_len(64).not_null())
                    .col(time(JobLeases::ExpiresAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            JobLeases::Table.into_iden(),
            EscrowEvents::Table.into_iden(),
            Payments::Table.into_iden(),
            Proofs::Table.into_iden(),
            Deposits::Table.into_iden(),
            Milestones::Table.into_iden(),
            Escrows::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
