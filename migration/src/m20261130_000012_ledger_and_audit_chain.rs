//! Money is conserved by the data model (DESIGN §8), and the audit trail proves it was
//! not edited.
//!
//! - `ledger_entries` / `ledger_postings`: a double-entry journal. An entry is one
//!   movement in one currency (its postings reference `(tenant_id, entry_id, currency)`,
//!   so a posting cannot be in another currency than its entry); a posting moves a
//!   non-zero amount of integer minor units into (+) or out of (−) one account, named
//!   by `account_kind` and `account_ref`. Both tables are append-only, enforced by the
//!   database as for `audit_log`. Balances are derived from the postings (nothing is
//!   cached, so nothing can disagree); `sequestra ledger verify` checks the rest.
//! - `audit_log` gains `seq`, `prev_hash` and `hash` (see `audit_chain`), and
//!   `audit_chain_heads` keeps each tenant's last link, updated in the transaction that
//!   appends rows. Rows written before this migration are sealed here, in
//!   `(created_at, id)` order, so every tenant's chain starts at its first row.

use sea_orm::{DbBackend, Statement};
use sea_orm_migration::prelude::*;

use crate::audit_chain;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum LedgerEntries {
    Table,
    Id,
    TenantId,
    Currency,
    Kind,
    SubjectType,
    SubjectId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum LedgerPostings {
    Table,
    Id,
    TenantId,
    EntryId,
    Currency,
    AccountKind,
    AccountRef,
    AmountMinor,
}

#[derive(DeriveIden)]
enum AuditChainHeads {
    Table,
    TenantId,
    Seq,
    Hash,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    TenantId,
    Seq,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

const NEW_TENANT_TABLES: &[&str] = &["ledger_entries", "ledger_postings", "audit_chain_heads"];
const CURRENT_TENANT: &str = "NULLIF(current_setting('sequestra.tenant_id', true), '')::uuid";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LedgerEntries::Table)
                    .col(
                        ColumnDef::new(LedgerEntries::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(LedgerEntries::TenantId).uuid().not_null())
                    .col(
                        ColumnDef::new(LedgerEntries::Currency)
                            .string_len(3)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LedgerEntries::Kind)
                            .string_len(40)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LedgerEntries::SubjectType)
                            .string_len(40)
                            .not_null(),
                    )
                    .col(ColumnDef::new(LedgerEntries::SubjectId).uuid().not_null())
                    .col(
                        ColumnDef::new(LedgerEntries::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_ledger_entries_tenant")
                            .from(LedgerEntries::Table, LedgerEntries::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_ledger_entries_tenant_id_currency")
                    .table(LedgerEntries::Table)
                    .col(LedgerEntries::TenantId)
                    .col(LedgerEntries::Id)
                    .col(LedgerEntries::Currency)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_ledger_entries_subject")
                    .table(LedgerEntries::Table)
                    .col(LedgerEntries::TenantId)
                    .col(LedgerEntries::SubjectId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(LedgerPostings::Table)
                    .col(
                        ColumnDef::new(LedgerPostings::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(LedgerPostings::TenantId).uuid().not_null())
                    .col(ColumnDef::new(LedgerPostings::EntryId).uuid().not_null())
                    .col(
                        ColumnDef::new(LedgerPostings::Currency)
                            .string_len(3)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LedgerPostings::AccountKind)
                            .string_len(24)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LedgerPostings::AccountRef)
                            .string_len(200)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LedgerPostings::AmountMinor)
                            .big_integer()
                            .not_null()
                            .check(Expr::cust("amount_minor <> 0")),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_ledger_postings_entry")
                            .from(
                                LedgerPostings::Table,
                                (
                                    LedgerPostings::TenantId,
                                    LedgerPostings::EntryId,
                                    LedgerPostings::Currency,
                                ),
                            )
                            .to(
                                LedgerEntries::Table,
                                (
                                    LedgerEntries::TenantId,
                                    LedgerEntries::Id,
                                    LedgerEntries::Currency,
                                ),
                            )
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_ledger_postings_account")
                    .table(LedgerPostings::Table)
                    .col(LedgerPostings::TenantId)
                    .col(LedgerPostings::AccountKind)
                    .col(LedgerPostings::AccountRef)
                    .col(LedgerPostings::Currency)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_ledger_postings_entry")
                    .table(LedgerPostings::Table)
                    .col(LedgerPostings::TenantId)
                    .col(LedgerPostings::EntryId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditChainHeads::Table)
                    .col(
                        ColumnDef::new(AuditChainHeads::TenantId)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(AuditChainHeads::Seq)
                            .big_integer()
                            .not_null()
                            .check(Expr::cust("seq >= 0")),
                    )
                    .col(
                        ColumnDef::new(AuditChainHeads::Hash)
                            .string_len(64)
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_audit_chain_heads_tenant")
                            .from(AuditChainHeads::Table, AuditChainHeads::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        // SQLite takes one column per ALTER TABLE.
        for column in [
            ColumnDef::new(AuditLog::Seq)
                .big_integer()
                .null()
                .to_owned(),
            ColumnDef::new(AuditLog::PrevHash)
                .string_len(64)
                .null()
                .to_owned(),
            ColumnDef::new(AuditLog::Hash)
                .string_len(64)
                .null()
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AuditLog::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("uq_audit_log_tenant_seq")
                    .table(AuditLog::Table)
                    .col(AuditLog::TenantId)
                    .col(AuditLog::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;

        let db = manager.get_connection();
        let backend = manager.get_database_backend();
        match backend {
            DbBackend::Postgres => {
                let mut sql = String::from(
                    "CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END; $$;
                     CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE OR DELETE ON ledger_entries
                     FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
                     CREATE TRIGGER ledger_postings_no_update BEFORE UPDATE OR DELETE ON ledger_postings
                     FOR EACH ROW EXECUTE FUNCTION ledger_append_only();\n",
                );
                for table in NEW_TENANT_TABLES {
                    sql.push_str(&format!(
                        "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;\n\
                         ALTER TABLE {table} FORCE ROW LEVEL SECURITY;\n\
                         CREATE POLICY tenant_wall ON {table} \
                         USING (tenant_id = {CURRENT_TENANT}) \
                         WITH CHECK (tenant_id = {CURRENT_TENANT});\n"
                    ));
                }
                db.execute_unprepared(&sql).await?;
            }
            DbBackend::Sqlite => {
                for table in ["ledger_entries", "ledger_postings"] {
                    db.execute_unprepared(&format!(
                        "CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
                         BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;"
                    ))
                    .await?;
                    db.execute_unprepared(&format!(
                        "CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
                         BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;"
                    ))
                    .await?;
                }
            }
            DbBackend::MySql => return Err(DbErr::Migration("MySQL is not supported".into())),
        }
        seal_existing(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared(
                "DROP TRIGGER IF EXISTS ledger_entries_no_update ON ledger_entries;
                 DROP TRIGGER IF EXISTS ledger_postings_no_update ON ledger_postings;
                 DROP FUNCTION IF EXISTS ledger_append_only();",
            )
            .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("uq_audit_log_tenant_seq")
                    .table(AuditLog::Table)
                    .to_owned(),
            )
            .await?;
        for column in [AuditLog::Seq, AuditLog::PrevHash, AuditLog::Hash] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AuditLog::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        for table in [
            AuditChainHeads::Table.into_iden(),
            LedgerPostings::Table.into_iden(),
            LedgerEntries::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// Links every audit row already written, tenant by tenant, and records each tenant's
/// head. The append-only triggers (and, on PostgreSQL, row-level security for the
/// table's owner) are lifted for exactly this and put back.
async fn seal_existing(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let backend = manager.get_database_backend();
    let rows = db
        .query_all(Statement::from_string(
            backend,
            "SELECT id, tenant_id, actor_type, actor_id, action, subject_type, subject_id, \
             ip, request_id, details, created_at FROM audit_log ORDER BY tenant_id, created_at, id",
        ))
        .await?;
    if rows.is_empty() {
        return Ok(());
    }
    match backend {
        DbBackend::Postgres => {
            db.execute_unprepared(
                "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update;
                 ALTER TABLE audit_log NO FORCE ROW LEVEL SECURITY;
                 ALTER TABLE audit_chain_heads NO FORCE ROW LEVEL SECURITY;",
            )
            .await?;
        }
        _ => {
            db.execute_unprepared("DROP TRIGGER IF EXISTS audit_log_no_update")
                .await?;
            db.execute_unprepared("DROP TRIGGER IF EXISTS audit_log_no_delete")
                .await?;
        }
    }
    let param = |n: usize| match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    };
    let mut head: Option<(sea_orm::prelude::Uuid, i64, String)> = None;
    let mut heads = Vec::new();
    for row in rows {
        let id: sea_orm::prelude::Uuid = row.try_get("", "id")?;
        let tenant_id: sea_orm::prelude::Uuid = row.try_get("", "tenant_id")?;
        let actor_type: String = row.try_get("", "actor_type")?;
        let action: String = row.try_get("", "action")?;
        let subject_type: Option<String> = row.try_get("", "subject_type")?;
        let ip: Option<String> = row.try_get("", "ip")?;
        let request_id: Option<String> = row.try_get("", "request_id")?;
        let details: serde_json::Value = row.try_get("", "details")?;
        let (seq, prev) = match head.take() {
            Some((t, seq, hash)) if t == tenant_id => (seq + 1, hash),
            other => {
                heads.extend(other);
                (1, audit_chain::GENESIS.to_owned())
            }
        };
        let hash = audit_chain::link(
            &prev,
            &audit_chain::Row {
                tenant_id,
                seq,
                id,
                actor_type: &actor_type,
                actor_id: row.try_get("", "actor_id")?,
                action: &action,
                subject_type: subject_type.as_deref(),
                subject_id: row.try_get("", "subject_id")?,
                ip: ip.as_deref(),
                request_id: request_id.as_deref(),
                details: &details,
                created_at: row.try_get("", "created_at")?,
            },
        );
        db.execute(Statement::from_sql_and_values(
            backend,
            format!(
                "UPDATE audit_log SET seq = {}, prev_hash = {}, hash = {} WHERE id = {}",
                param(1),
                param(2),
                param(3),
                param(4)
            ),
            [seq.into(), prev.into(), hash.clone().into(), id.into()],
        ))
        .await?;
        head = Some((tenant_id, seq, hash));
    }
    heads.extend(head);
    for (tenant_id, seq, hash) in heads {
        db.execute(Statement::from_sql_and_values(
            backend,
            format!(
                "INSERT INTO audit_chain_heads (tenant_id, seq, hash) VALUES ({}, {}, {})",
                param(1),
                param(2),
                param(3)
            ),
            [tenant_id.into(), seq.into(), hash.into()],
        ))
        .await?;
    }
    match backend {
        DbBackend::Postgres => {
            db.execute_unprepared(
                "ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update;
                 ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
                 ALTER TABLE audit_chain_heads FORCE ROW LEVEL SECURITY;",
            )
            .await?;
        }
        _ => {
            db.execute_unprepared(
                "CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
                 BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;",
            )
            .await?;
            db.execute_unprepared(
                "CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
                 BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;",
            )
            .await?;
        }
    }
    Ok(())
}
