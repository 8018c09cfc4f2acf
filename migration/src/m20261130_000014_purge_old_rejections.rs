//! The server may purge refused webhook deliveries once they are old (retention,
//! `SEQUESTRA_RETAIN_WEBHOOK_EVENTS_DAYS`): `webhook_rejections` stays append-only for
//! anything younger than 7 days, so a refused delivery is never erased while it may
//! still be looked into. PostgreSQL only (SQLite has no row-level security).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
            return Ok(());
        }
        // A DELETE that filters reads the rows: both policies are needed.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE POLICY old_rows_read ON webhook_rejections FOR SELECT \
                   USING (received_at < now() - interval '7 days');\n\
                 CREATE POLICY old_rows_purge ON webhook_rejections FOR DELETE \
                   USING (received_at < now() - interval '7 days');",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(
                "DROP POLICY old_rows_read ON webhook_rejections;\n\
                 DROP POLICY old_rows_purge ON webhook_rejections;",
            )
            .await?;
        Ok(())
    }
}
