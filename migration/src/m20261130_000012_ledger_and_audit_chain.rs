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
//! - `audit_log` gains `lane`, `seq`, `prev_hash` and `hash` (see `audit_chain`), and
//!   `audit_chain_heads` keeps the last link of each of a tenant's lanes (the chain is
//!   a few parallel chains, so concurrent writers of one tenant do not queue on one
//!   row), updated in the transaction that appends rows. Rows written before this
//!   migration are sealed here into lane 0, in `(created_at, id)` order.

use sea_orm::{DbBackend, Statement};
use sea_orm_migration::prelude::*;

use crate::{audit_chain, statement::statement as sql};

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
    Lane,
    Seq,
    Hash,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    TenantId,
    Lane,
    Seq,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

const CURRENT_TENANT: &str = "NULLIF(current_setting('sequestra.tenant_id', true), '')::uuid";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for statement in ledger_tables(manager.get_database_backend()) {
            manager.get_connection().execute(statement).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(AuditChainHeads::Table)
                    .col(ColumnDef::new(AuditChainHeads::TenantId).uuid().not_null())
                    .col(
                        ColumnDef::new(AuditChainHeads::Lane)
                            .small_integer()
                            .not_null()
                            .check(Expr::cust("lane >= 0")),
                    )
                    .primary_key(
                        Index::create()
                            .col(AuditChainHeads::TenantId)
                            .col(AuditChainHeads::Lane),
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
            ColumnDef::new(AuditLog::Lane)
                .small_integer()
                .null()
                .to_owned(),
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
                    .name("uq_audit_log_tenant_lane_seq")
                    .table(AuditLog::Table)
                    .col(AuditLog::TenantId)
                    .col(AuditLog::Lane)
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
                     BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END; $$;\n",
                );
                for table in ["ledger_entries", "ledger_postings"] {
                    for statement in guard_sql(backend, table) {
                        sql.push_str(&statement);
                        sql.push_str(";\n");
                    }
                }
                sql.push_str(&format!(
                    "ALTER TABLE audit_chain_heads ENABLE ROW LEVEL SECURITY;\n\
                     ALTER TABLE audit_chain_heads FORCE ROW LEVEL SECURITY;\n\
                     CREATE POLICY tenant_wall ON audit_chain_heads \
                     USING (tenant_id = {CURRENT_TENANT}) \
                     WITH CHECK (tenant_id = {CURRENT_TENANT});\n"
                ));
                db.execute_unprepared(&sql).await?;
            }
            DbBackend::Sqlite => {
                for table in ["ledger_entries", "ledger_postings"] {
                    for statement in guard_sql(backend, table) {
                        db.execute_unprepared(&statement).await?;
                    }
                }
            }
            DbBackend::MySql => return Err(DbErr::Migration("MySQL is not supported".into())),
        }
        backfill(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("uq_audit_log_tenant_lane_seq")
                    .table(AuditLog::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            AuditLog::Lane,
            AuditLog::Seq,
            AuditLog::PrevHash,
            AuditLog::Hash,
        ] {
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
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("DROP FUNCTION IF EXISTS ledger_append_only();")
                .await?;
        }
        Ok(())
    }
}

/// `ledger_entries` and `ledger_postings` as this migration creates them, with their
/// indexes, in an order that works (the postings' foreign key needs the entries'
/// unique index): an entry without its legs, which are rows of `ledger_postings`
/// (m20261201_000017 folds them into the entry; its `down` builds this shape again).
pub(crate) fn ledger_tables(backend: DbBackend) -> Vec<Statement> {
    let [unique, subject, account, entry] = ledger_indexes();
    vec![
        backend.build(&entries_table(LedgerEntries::Table.into_iden())),
        backend.build(&unique),
        backend.build(&subject),
        backend.build(&postings_table()),
        backend.build(&account),
        backend.build(&entry),
    ]
}

/// The entry's own columns, as a table named `name` (m20261201_000017 builds its
/// one-row journal from them and adds the legs).
pub(crate) fn entries_table(name: DynIden) -> TableCreateStatement {
    Table::create()
        .table(name.clone())
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
                .from(name, LedgerEntries::TenantId)
                .to(Tenants::Table, Tenants::Id)
                .on_delete(ForeignKeyAction::Restrict),
        )
        .to_owned()
}

fn postings_table() -> TableCreateStatement {
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
        .to_owned()
}

fn ledger_indexes() -> [IndexCreateStatement; 4] {
    [
        Index::create()
            .name("uq_ledger_entries_tenant_id_currency")
            .table(LedgerEntries::Table)
            .col(LedgerEntries::TenantId)
            .col(LedgerEntries::Id)
            .col(LedgerEntries::Currency)
            .unique()
            .to_owned(),
        Index::create()
            .name("ix_ledger_entries_subject")
            .table(LedgerEntries::Table)
            .col(LedgerEntries::TenantId)
            .col(LedgerEntries::SubjectId)
            .to_owned(),
        Index::create()
            .name("ix_ledger_postings_account")
            .table(LedgerPostings::Table)
            .col(LedgerPostings::TenantId)
            .col(LedgerPostings::AccountKind)
            .col(LedgerPostings::AccountRef)
            .col(LedgerPostings::Currency)
            .to_owned(),
        Index::create()
            .name("ix_ledger_postings_entry")
            .table(LedgerPostings::Table)
            .col(LedgerPostings::TenantId)
            .col(LedgerPostings::EntryId)
            .to_owned(),
    ]
}

/// The append-only guard and (PostgreSQL) the tenant wall on `table`, as this
/// migration puts them on its ledger tables: one statement each.
pub(crate) fn guard_sql(backend: DbBackend, table: &str) -> Vec<String> {
    match backend {
        DbBackend::Postgres => vec![
            format!(
                "CREATE TRIGGER {table}_no_update BEFORE UPDATE OR DELETE ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
            ),
            format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"),
            format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY"),
            format!(
                "CREATE POLICY tenant_wall ON {table} \
                 USING (tenant_id = {CURRENT_TENANT}) WITH CHECK (tenant_id = {CURRENT_TENANT})"
            ),
        ],
        _ => vec![
            format!(
                "CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} \
                 BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            ),
            format!(
                "CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} \
                 BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            ),
        ],
    }
}

/// The tables the backfill reads or writes; on PostgreSQL their row-level security is
/// lifted for the table owner for the backfill's transaction only.
const BACKFILL_TABLES: &[&str] = &[
    "audit_log",
    "audit_chain_heads",
    "ledger_entries",
    "ledger_postings",
    "deposits",
    "mandates",
    "purchases",
    "payments",
    "payouts",
    "transfers",
];

/// What a database written before this migration needs so that `ledger verify` and
/// `audit verify` hold at once: its audit rows sealed into each tenant's chain, and
/// its money history replayed into the ledger. One transaction, on one connection.
async fn backfill(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    use sea_orm::TransactionTrait;
    let backend = manager.get_database_backend();
    let txn = manager.get_connection().begin().await?;
    let rows = |table: &str| format!("SELECT COUNT(*) AS n FROM {table}");
    let mut any = false;
    for table in ["audit_log", "deposits", "mandates", "payments"] {
        let n: i64 = txn
            .query_one(Statement::from_string(backend, rows(table)))
            .await?
            .map(|r| r.try_get("", "n"))
            .transpose()?
            .unwrap_or_default();
        any |= n > 0;
    }
    if !any {
        return txn.commit().await;
    }
    if backend == DbBackend::Postgres {
        for table in BACKFILL_TABLES {
            txn.execute_unprepared(&format!("ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"))
                .await?;
        }
    }
    seal_existing(&txn, backend).await?;
    replay_ledger(&txn, backend).await?;
    if backend == DbBackend::Postgres {
        for table in BACKFILL_TABLES {
            txn.execute_unprepared(&format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY"))
                .await?;
        }
    }
    txn.commit().await
}

/// Links every audit row already written, tenant by tenant in `(created_at, id)`
/// order, and records each tenant's head. The append-only guard is lifted for
/// exactly this and put back.
async fn seal_existing(
    txn: &sea_orm::DatabaseTransaction,
    backend: DbBackend,
) -> Result<(), DbErr> {
    use sea_orm::prelude::Uuid;
    let rows = txn
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
            txn.execute_unprepared("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
                .await?;
        }
        _ => {
            txn.execute_unprepared("DROP TRIGGER IF EXISTS audit_log_no_update")
                .await?;
        }
    }
    let mut head: Option<(Uuid, i64, String)> = None;
    let mut heads = Vec::new();
    for row in rows {
        let id: Uuid = row.try_get("", "id")?;
        let tenant_id: Uuid = row.try_get("", "tenant_id")?;
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
                lane: 0,
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
        txn.execute(sql(
            backend,
            "UPDATE audit_log SET lane = 0, seq = $1, prev_hash = $2, hash = $3 WHERE id = $4",
            vec![seq.into(), prev.into(), hash.clone().into(), id.into()],
        ))
        .await?;
        head = Some((tenant_id, seq, hash));
    }
    heads.extend(head);
    for (tenant_id, seq, hash) in heads {
        txn.execute(sql(
            backend,
            "INSERT INTO audit_chain_heads (tenant_id, lane, seq, hash) VALUES ($1, 0, $2, $3)",
            vec![tenant_id.into(), seq.into(), hash.into()],
        ))
        .await?;
    }
    match backend {
        DbBackend::Postgres => {
            txn.execute_unprepared("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update")
                .await?;
        }
        _ => {
            txn.execute_unprepared(
                "CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
                 BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;",
            )
            .await?;
        }
    }
    Ok(())
}

/// One movement of the replayed history.
struct Movement<'a> {
    tenant: sea_orm::prelude::Uuid,
    currency: String,
    kind: &'static str,
    subject: (&'static str, sea_orm::prelude::Uuid),
    at: sea_orm::prelude::DateTimeUtc,
    amount: i64,
    from: (&'a str, String),
    to: (&'a str, String),
}

async fn post(
    txn: &sea_orm::DatabaseTransaction,
    backend: DbBackend,
    m: Movement<'_>,
) -> Result<(), DbErr> {
    use sea_orm::prelude::Uuid;
    if m.amount <= 0 {
        return Ok(());
    }
    let entry = Uuid::now_v7();
    txn.execute(sql(
        backend,
        "INSERT INTO ledger_entries (id, tenant_id, currency, kind, subject_type, subject_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            entry.into(),
            m.tenant.into(),
            m.currency.clone().into(),
            m.kind.into(),
            m.subject.0.into(),
            m.subject.1.into(),
            m.at.into(),
        ],
    ))
    .await?;
    txn.execute(sql(
        backend,
        "INSERT INTO ledger_postings (id, tenant_id, entry_id, currency, account_kind, account_ref, amount_minor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7), ($8, $9, $10, $11, $12, $13, $14)",
        vec![
            Uuid::now_v7().into(),
            m.tenant.into(),
            entry.into(),
            m.currency.clone().into(),
            m.from.0.into(),
            m.from.1.into(),
            (-m.amount).into(),
            Uuid::now_v7().into(),
            m.tenant.into(),
            entry.into(),
            m.currency.into(),
            m.to.0.into(),
            m.to.1.into(),
            m.amount.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Replays the money history already in the business tables into the ledger, the
/// way the server posts it (`src/ledger`): deposits, mandate budgets and what came
/// back from ended mandates, purchases, payments (from their escrow, mandate or
/// payer) with their settlement, failure and retry.
async fn replay_ledger(
    txn: &sea_orm::DatabaseTransaction,
    backend: DbBackend,
) -> Result<(), DbErr> {
    use sea_orm::prelude::{DateTimeUtc, Uuid};
    let all = |q: &str| txn.query_all(Statement::from_string(backend, q.to_owned()));
    for r in all("SELECT tenant_id, id, escrow_id, depositor_id, amount_minor, currency, created_at FROM deposits").await? {
        let escrow: Uuid = r.try_get("", "escrow_id")?;
        let depositor: Uuid = r.try_get("", "depositor_id")?;
        post(txn, backend, Movement {
            tenant: r.try_get("", "tenant_id")?,
            currency: r.try_get("", "currency")?,
            kind: "DEPOSIT",
            subject: ("deposit", r.try_get("", "id")?),
            at: r.try_get("", "created_at")?,
            amount: r.try_get("", "amount_minor")?,
            from: ("FUNDING", depositor.to_string()),
            to: ("ESCROW", escrow.to_string()),
        })
        .await?;
    }
    for r in all("SELECT tenant_id, id, sender_id, currency, total_minor, spent_minor, status, created_at, updated_at FROM mandates").await? {
        let id: Uuid = r.try_get("", "id")?;
        let sender: Uuid = r.try_get("", "sender_id")?;
        let tenant: Uuid = r.try_get("", "tenant_id")?;
        let currency: String = r.try_get("", "currency")?;
        let total: i64 = r.try_get("", "total_minor")?;
        let spent: i64 = r.try_get("", "spent_minor")?;
        let status: String = r.try_get("", "status")?;
        post(txn, backend, Movement {
            tenant,
            currency: currency.clone(),
            kind: "MANDATE_GRANTED",
            subject: ("mandate", id),
            at: r.try_get("", "created_at")?,
            amount: total,
            from: ("FUNDING", sender.to_string()),
            to: ("MANDATE", id.to_string()),
        })
        .await?;
        if status != "ACTIVE" {
            post(txn, backend, Movement {
                tenant,
                currency,
                kind: "MANDATE_ENDED",
                subject: ("mandate", id),
                at: r.try_get("", "updated_at")?,
                amount: total - spent,
                from: ("MANDATE", id.to_string()),
                to: ("FUNDING", sender.to_string()),
            })
            .await?;
        }
    }
    for r in all("SELECT tenant_id, id, mandate_id, merchant_id, amount_minor, currency, created_at FROM purchases").await? {
        let mandate: Uuid = r.try_get("", "mandate_id")?;
        let merchant: Uuid = r.try_get("", "merchant_id")?;
        post(txn, backend, Movement {
            tenant: r.try_get("", "tenant_id")?,
            currency: r.try_get("", "currency")?,
            kind: "PURCHASE",
            subject: ("purchase", r.try_get("", "id")?),
            at: r.try_get("", "created_at")?,
            amount: r.try_get("", "amount_minor")?,
            from: ("MANDATE", mandate.to_string()),
            to: ("MERCHANT", merchant.to_string()),
        })
        .await?;
    }
    let payments = all(
        "SELECT p.tenant_id, p.id, p.escrow_id, p.payee_id, p.payee_reference, p.amount_minor, \
         p.currency, p.status, p.retry_of, p.created_at, p.updated_at, \
         po.mandate_id AS payout_mandate, t.sender_id AS transfer_sender \
         FROM payments p \
         LEFT JOIN payouts po ON po.tenant_id = p.tenant_id AND po.payment_id = p.id \
         LEFT JOIN transfers t ON t.tenant_id = p.tenant_id AND t.payment_id = p.id \
         ORDER BY p.created_at, p.id",
    )
    .await?;
    for r in payments {
        let id: Uuid = r.try_get("", "id")?;
        let tenant: Uuid = r.try_get("", "tenant_id")?;
        let currency: String = r.try_get("", "currency")?;
        let amount: i64 = r.try_get("", "amount_minor")?;
        let created: DateTimeUtc = r.try_get("", "created_at")?;
        let updated: DateTimeUtc = r.try_get("", "updated_at")?;
        let escrow: Option<Uuid> = r.try_get("", "escrow_id")?;
        let retry_of: Option<Uuid> = r.try_get("", "retry_of")?;
        let mandate: Option<Uuid> = r.try_get("", "payout_mandate")?;
        let sender: Option<Uuid> = r.try_get("", "transfer_sender")?;
        let (kind, from) = match (retry_of, escrow, mandate, sender) {
            (Some(_), ..) => ("PAYMENT_RETRIED", ("PSP_RETURNED", String::new())),
            (None, Some(e), ..) => ("PAYMENT_CREATED", ("ESCROW", e.to_string())),
            (None, None, Some(m), _) => ("PAYMENT_CREATED", ("MANDATE", m.to_string())),
            (None, None, None, Some(s)) => ("PAYMENT_CREATED", ("FUNDING", s.to_string())),
            // A payer the tables do not name: the nil user's funding.
            (None, None, None, None) => ("PAYMENT_CREATED", ("FUNDING", Uuid::nil().to_string())),
        };
        post(
            txn,
            backend,
            Movement {
                tenant,
                currency: currency.clone(),
                kind,
                subject: ("payment", id),
                at: created,
                amount,
                from,
                to: ("PSP_CLEARING", String::new()),
            },
        )
        .await?;
        let status: String = r.try_get("", "status")?;
        let payee: Option<Uuid> = r.try_get("", "payee_id")?;
        let reference: Option<String> = r.try_get("", "payee_reference")?;
        let paid = match payee {
            Some(u) => ("PAID_USER", u.to_string()),
            None => ("PAID_EXTERNAL", reference.unwrap_or_default()),
        };
        let ended = match status.as_str() {
            "SETTLED" => Some(("PAYMENT_SETTLED", paid)),
            "FAILED" => Some(("PAYMENT_FAILED", ("PSP_RETURNED", String::new()))),
            _ => None,
        };
        if let Some((kind, to)) = ended {
            post(
                txn,
                backend,
                Movement {
                    tenant,
                    currency,
                    kind,
                    subject: ("payment", id),
                    at: updated,
                    amount,
                    from: ("PSP_CLEARING", String::new()),
                    to,
                },
            )
            .await?;
        }
    }
    Ok(())
}
