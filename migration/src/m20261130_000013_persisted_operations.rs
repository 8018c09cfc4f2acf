//! The persisted-operations allow-list: GraphQL documents registered ahead of time
//! (`sequestra operations register`), found by the SHA-256 of their text. Platform
//! data, not a tenant's: no `tenant_id` (an operation is the frontend's code, the same
//! for every tenant). On PostgreSQL it is under row-level security like every table,
//! with one open policy (as `job_leases`): any session may read and register.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PersistedOperations {
    Table,
    Sha256,
    Document,
    Name,
    RegisteredAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PersistedOperations::Table)
                    .col(
                        ColumnDef::new(PersistedOperations::Sha256)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(PersistedOperations::Document)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PersistedOperations::Name)
                            .string_len(255)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(PersistedOperations::RegisteredAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE persisted_operations ENABLE ROW LEVEL SECURITY;\n\
                     ALTER TABLE persisted_operations FORCE ROW LEVEL SECURITY;\n\
                     CREATE POLICY operations ON persisted_operations USING (true) WITH CHECK (true);",
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PersistedOperations::Table).to_owned())
            .await
    }
}
