//! Row-level security on PostgreSQL, the third tenant wall (DESIGN §3).
//!
//! Every table whose rows belong to a tenant gets `ENABLE` and `FORCE ROW LEVEL
//! SECURITY` (FORCE: the table's owner is held to it too) and one policy, `tenant_wall`:
//! a row is seen and written only when its `tenant_id` equals the transaction's
//! `sequestra.tenant_id` setting, which the server's scoped handle sets in every
//! transaction (`SELECT set_config('sequestra.tenant_id', …, true)`). Without the
//! setting a session sees no tenant's rows. Superusers and roles with BYPASSRLS are
//! not held by any policy: the server must connect as neither (README, "Database
//! roles").
//!
//! The platform tables are listed with their own policies:
//! - `tenants`: readable by all (sign-in finds a tenant by its slug before any tenant
//!   is known; the jobs walk the tenants); written only from inside the tenant's own
//!   wall (a new tenant is inserted by a transaction that entered its new id).
//! - `webhook_events`: the PSP deduplication log. An event not yet matched to a payment
//!   (`tenant_id` NULL) is visible to every session (deduplication, early events);
//!   a matched one only inside its tenant's wall.
//! - `job_leases`: open (a lease names a job, never a tenant's data).
//! - `webhook_rejections`: append-only for the server (refused deliveries, no tenant).
//!
//! Two tenant tables admit one read each before the tenant is known, by a setting that
//! names the single row asked for: `api_keys` by `sequestra.api_key_hash` (the edge
//! authenticating a key) and `payments` by `sequestra.psp_reference` (a webhook finding
//! its payment). Both are SELECT-only.
//!
//! SQLite has no row-level security; this migration does nothing there.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Every table with a `tenant_id NOT NULL` column when this migration was written.
/// A later table adds its own policy in its own migration; a test over `pg_class`
/// fails for a table with a `tenant_id` and no row-level security.
const TENANT_TABLES: &[&str] = &[
    "alerts",
    "api_keys",
    "audit_log",
    "auth_failures",
    "certified_recipients",
    "deposits",
    "escrow_events",
    "escrows",
    "idempotency_keys",
    "mandate_categories",
    "mandate_merchants",
    "mandates",
    "merchants",
    "mfa_challenges",
    "mfa_totp",
    "milestones",
    "payees",
    "payment_attempts",
    "payments",
    "payouts",
    "proofs",
    "purchases",
    "recovery_codes",
    "refresh_tokens",
    "sessions",
    "spend_categories",
    "tenant_mfa_policies",
    "transfer_recipients",
    "transfers",
    "user_roles",
    "users",
];

const PLATFORM_TABLES: &[&str] = &[
    "tenants",
    "webhook_events",
    "job_leases",
    "webhook_rejections",
];

/// The tenant the transaction entered; NULL (no row) when none was set.
const CURRENT_TENANT: &str = "NULLIF(current_setting('sequestra.tenant_id', true), '')::uuid";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        let mut sql = String::new();
        for table in TENANT_TABLES.iter().chain(PLATFORM_TABLES) {
            sql.push_str(&format!(
                "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;\n\
                 ALTER TABLE {table} FORCE ROW LEVEL SECURITY;\n"
            ));
        }
        for table in TENANT_TABLES {
            sql.push_str(&format!(
                "CREATE POLICY tenant_wall ON {table} \
                 USING (tenant_id = {CURRENT_TENANT}) \
                 WITH CHECK (tenant_id = {CURRENT_TENANT});\n"
            ));
        }
        sql.push_str(&format!(
            "CREATE POLICY key_lookup ON api_keys FOR SELECT \
               USING (key_hash = current_setting('sequestra.api_key_hash', true));\n\
             CREATE POLICY reference_lookup ON payments FOR SELECT \
               USING (psp_reference = current_setting('sequestra.psp_reference', true));\n\
             CREATE POLICY registry_read ON tenants FOR SELECT USING (true);\n\
             CREATE POLICY own_row_insert ON tenants FOR INSERT \
               WITH CHECK (id = {CURRENT_TENANT});\n\
             CREATE POLICY own_row_update ON tenants FOR UPDATE \
               USING (id = {CURRENT_TENANT}) WITH CHECK (id = {CURRENT_TENANT});\n\
             CREATE POLICY own_row_delete ON tenants FOR DELETE \
               USING (id = {CURRENT_TENANT});\n\
             CREATE POLICY unmatched_or_own ON webhook_events \
               USING (tenant_id IS NULL OR tenant_id = {CURRENT_TENANT}) \
               WITH CHECK (tenant_id IS NULL OR tenant_id = {CURRENT_TENANT});\n\
             CREATE POLICY leases ON job_leases USING (true) WITH CHECK (true);\n\
             CREATE POLICY append_only ON webhook_rejections FOR INSERT WITH CHECK (true);\n"
        ));
        db.execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        let mut sql = String::new();
        for table in TENANT_TABLES {
            sql.push_str(&format!("DROP POLICY tenant_wall ON {table};\n"));
        }
        sql.push_str(
            "DROP POLICY key_lookup ON api_keys;\n\
             DROP POLICY reference_lookup ON payments;\n\
             DROP POLICY registry_read ON tenants;\n\
             DROP POLICY own_row_insert ON tenants;\n\
             DROP POLICY own_row_update ON tenants;\n\
             DROP POLICY own_row_delete ON tenants;\n\
             DROP POLICY unmatched_or_own ON webhook_events;\n\
             DROP POLICY leases ON job_leases;\n\
             DROP POLICY append_only ON webhook_rejections;\n",
        );
        for table in TENANT_TABLES.iter().chain(PLATFORM_TABLES) {
            sql.push_str(&format!(
                "ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY;\n\
                 ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;\n"
            ));
        }
        db.execute_unprepared(&sql).await?;
        Ok(())
    }
}
