//! PSP disputes on payments: when the PSP opened one (`dispute.opened`), when it
//! closed it and how (`dispute.closed`, `WON` or `LOST`). NULL: none.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Payments {
    Table,
    DisputeOpenedAt,
    DisputeClosedAt,
    DisputeOutcome,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for column in [
            ColumnDef::new(Payments::DisputeOpenedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(Payments::DisputeClosedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(Payments::DisputeOutcome)
                .string_len(8)
                .null()
                .check(Expr::cust(
                    "dispute_outcome IS NULL OR dispute_outcome IN ('WON','LOST')",
                ))
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
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Payments::DisputeOutcome,
            Payments::DisputeClosedAt,
            Payments::DisputeOpenedAt,
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
