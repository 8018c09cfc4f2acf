//! A ledger entry is one row: every movement Sequestra records is two-legged (from one
//! account to another), so the entry carries both legs itself — `from_kind`/`from_ref`
//! (the account debited), `to_kind`/`to_ref` (the account credited) and
//! `amount_minor` (> 0) — and `ledger_postings` goes. The legs sum to zero by
//! construction, and a movement costs one row where it cost three (an entry and two
//! postings): the purchase on a hot mandate paid for those rows (issue 18's
//! measurement). Balances are `SUM(amount) WHERE to = account − SUM(amount) WHERE
//! from = account`, served by one index per side.
//!
//! The journal stays append-only (the same trigger) and behind the tenant wall. The
//! existing entries are folded, each with its two postings; an entry that is not
//! exactly one balanced pair of legs stops the migration, naming it (books that were
//! edited are not carried over silently). `down` splits each row into its entry and
//! two postings again.

use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
use sea_orm_migration::prelude::*;

use crate::m20261130_000012_ledger_and_audit_chain as v1;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum LedgerEntries {
    Table,
    TenantId,
    SubjectId,
    FromKind,
    FromRef,
    ToKind,
    ToRef,
    AmountMinor,
}

/// The table built beside the one it replaces, renamed once filled.
const NEXT: &str = "ledger_entries_next";
/// Where `down` puts the one-row journal while it splits it.
const FOLDED: &str = "ledger_entries_folded";

/// Migration 12's entry with both legs and the amount.
fn one_row_entries(name: &str) -> TableCreateStatement {
    v1::entries_table(Alias::new(name).into_iden())
        .col(
            ColumnDef::new(LedgerEntries::FromKind)
                .string_len(24)
                .not_null(),
        )
        .col(
            ColumnDef::new(LedgerEntries::FromRef)
                .string_len(200)
                .not_null(),
        )
        .col(
            ColumnDef::new(LedgerEntries::ToKind)
                .string_len(24)
                .not_null(),
        )
        .col(
            ColumnDef::new(LedgerEntries::ToRef)
                .string_len(200)
                .not_null(),
        )
        .col(
            ColumnDef::new(LedgerEntries::AmountMinor)
                .big_integer()
                .not_null()
                .check(Expr::cust("amount_minor > 0")),
        )
        .check(Expr::cust("from_kind <> to_kind OR from_ref <> to_ref"))
        .to_owned()
}

fn one_row_indexes() -> [IndexCreateStatement; 3] {
    [
        Index::create()
            .name("ix_ledger_entries_subject")
            .table(LedgerEntries::Table)
            .col(LedgerEntries::TenantId)
            .col(LedgerEntries::SubjectId)
            .to_owned(),
        Index::create()
            .name("ix_ledger_entries_from")
            .table(LedgerEntries::Table)
            .col(LedgerEntries::TenantId)
            .col(LedgerEntries::FromKind)
            .col(LedgerEntries::FromRef)
            .to_owned(),
        Index::create()
            .name("ix_ledger_entries_to")
            .table(LedgerEntries::Table)
            .col(LedgerEntries::TenantId)
            .col(LedgerEntries::ToKind)
            .col(LedgerEntries::ToRef)
            .to_owned(),
    ]
}

async fn count<C: ConnectionTrait>(db: &C, table: &str) -> Result<i64, DbErr> {
    let backend = db.get_database_backend();
    Ok(db
        .query_one(Statement::from_string(
            backend,
            format!("SELECT COUNT(*) AS n FROM {table}"),
        ))
        .await?
        .map(|r| r.try_get("", "n"))
        .transpose()?
        .unwrap_or_default())
}

/// On PostgreSQL the owner running the migration is behind the tenant wall too
/// (`FORCE ROW LEVEL SECURITY`): lifted on the tables being copied, which are dropped
/// after.
async fn see_every_tenant<C: ConnectionTrait>(db: &C, tables: &[&str]) -> Result<(), DbErr> {
    if db.get_database_backend() == DbBackend::Postgres {
        for table in tables {
            db.execute_unprepared(&format!("ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"))
                .await?;
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        // SQLite runs a migration outside a transaction: this one is all or nothing.
        let txn = manager.get_connection().begin().await?;
        see_every_tenant(&txn, &["ledger_entries", "ledger_postings"]).await?;
        txn.execute(backend.build(&one_row_entries(NEXT))).await?;
        txn.execute_unprepared(&format!(
            "INSERT INTO {NEXT} (id, tenant_id, currency, kind, subject_type, subject_id, \
               created_at, from_kind, from_ref, to_kind, to_ref, amount_minor) \
             SELECT e.id, e.tenant_id, e.currency, e.kind, e.subject_type, e.subject_id, \
               e.created_at, d.account_kind, d.account_ref, c.account_kind, c.account_ref, \
               c.amount_minor \
             FROM ledger_entries e \
             JOIN ledger_postings d ON d.tenant_id = e.tenant_id AND d.entry_id = e.id \
               AND d.amount_minor < 0 \
             JOIN ledger_postings c ON c.tenant_id = e.tenant_id AND c.entry_id = e.id \
               AND c.amount_minor = -d.amount_minor"
        ))
        .await?;
        let (entries, postings, folded) = (
            count(&txn, "ledger_entries").await?,
            count(&txn, "ledger_postings").await?,
            count(&txn, NEXT).await?,
        );
        if folded != entries || postings != 2 * entries {
            let odd = txn
                .query_one(Statement::from_string(
                    backend,
                    format!(
                        "SELECT e.id AS id, e.kind AS kind FROM ledger_entries e \
                         WHERE NOT EXISTS (SELECT 1 FROM {NEXT} n WHERE n.id = e.id) \
                         OR (SELECT COUNT(*) FROM ledger_postings p \
                             WHERE p.tenant_id = e.tenant_id AND p.entry_id = e.id) <> 2 \
                         ORDER BY e.id LIMIT 1"
                    ),
                ))
                .await?;
            let named = match odd {
                Some(row) => format!(
                    "entry {} ({})",
                    row.try_get::<sea_orm::prelude::Uuid>("", "id")?,
                    row.try_get::<String>("", "kind")?
                ),
                None => "a posting without its entry".to_owned(),
            };
            return Err(DbErr::Migration(format!(
                "the ledger cannot be folded into one row per movement: {named} is not one \
                 balanced pair of postings ({entries} entries, {postings} postings); run \
                 `sequestra ledger verify` on the previous version"
            )));
        }
        txn.execute_unprepared("DROP TABLE ledger_postings").await?;
        txn.execute_unprepared("DROP TABLE ledger_entries").await?;
        txn.execute_unprepared(&format!("ALTER TABLE {NEXT} RENAME TO ledger_entries"))
            .await?;
        if backend == DbBackend::Postgres {
            txn.execute_unprepared(&format!(
                "ALTER INDEX {NEXT}_pkey RENAME TO ledger_entries_pkey"
            ))
            .await?;
        }
        for index in one_row_indexes() {
            txn.execute(backend.build(&index)).await?;
        }
        for statement in v1::guard_sql(backend, "ledger_entries") {
            txn.execute_unprepared(&statement).await?;
        }
        txn.commit().await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let txn = manager.get_connection().begin().await?;
        see_every_tenant(&txn, &["ledger_entries"]).await?;
        for name in [
            "ix_ledger_entries_subject",
            "ix_ledger_entries_from",
            "ix_ledger_entries_to",
        ] {
            txn.execute(
                backend.build(
                    &Index::drop()
                        .name(name)
                        .table(LedgerEntries::Table)
                        .to_owned(),
                ),
            )
            .await?;
        }
        txn.execute_unprepared(&format!("ALTER TABLE ledger_entries RENAME TO {FOLDED}"))
            .await?;
        if backend == DbBackend::Postgres {
            txn.execute_unprepared(&format!(
                "ALTER INDEX ledger_entries_pkey RENAME TO {FOLDED}_pkey"
            ))
            .await?;
        }
        for statement in v1::ledger_tables(backend) {
            txn.execute(statement).await?;
        }
        txn.execute_unprepared(&format!(
            "INSERT INTO ledger_entries (id, tenant_id, currency, kind, subject_type, \
               subject_id, created_at) \
             SELECT id, tenant_id, currency, kind, subject_type, subject_id, created_at \
             FROM {FOLDED}"
        ))
        .await?;
        // Two postings per row; their ids are made here.
        let rows = txn
            .query_all(Statement::from_string(
                backend,
                format!(
                    "SELECT id, tenant_id, currency, from_kind, from_ref, to_kind, to_ref, \
                     amount_minor FROM {FOLDED} ORDER BY id"
                ),
            ))
            .await?;
        for chunk in rows.chunks(200) {
            let mut insert = Query::insert()
                .into_table(Alias::new("ledger_postings"))
                .columns(
                    [
                        "id",
                        "tenant_id",
                        "entry_id",
                        "currency",
                        "account_kind",
                        "account_ref",
                        "amount_minor",
                    ]
                    .map(Alias::new),
                )
                .to_owned();
            for row in chunk {
                let entry: sea_orm::prelude::Uuid = row.try_get("", "id")?;
                let tenant: sea_orm::prelude::Uuid = row.try_get("", "tenant_id")?;
                let currency: String = row.try_get("", "currency")?;
                let amount: i64 = row.try_get("", "amount_minor")?;
                for (side, signed) in [("from", -amount), ("to", amount)] {
                    insert.values_panic([
                        uuid::Uuid::now_v7().into(),
                        tenant.into(),
                        entry.into(),
                        currency.clone().into(),
                        row.try_get::<String>("", &format!("{side}_kind"))?.into(),
                        row.try_get::<String>("", &format!("{side}_ref"))?.into(),
                        signed.into(),
                    ]);
                }
            }
            txn.execute(backend.build(&insert)).await?;
        }
        txn.execute_unprepared(&format!("DROP TABLE {FOLDED}"))
            .await?;
        for table in ["ledger_entries", "ledger_postings"] {
            for statement in v1::guard_sql(backend, table) {
                txn.execute_unprepared(&statement).await?;
            }
        }
        txn.commit().await
    }
}
