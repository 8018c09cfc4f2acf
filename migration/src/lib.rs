//! One migration per schema change. A migration that has landed is never edited:
//! add a new one instead.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_tenants_users_audit;
mod m20261122_000002_sessions;
mod m20261122_000003_mfa;
mod m20261122_000004_api_keys;
mod m20261122_000005_platform_tenant;
mod m20261122_000006_idempotency_keys;
mod m20261122_000007_escrow;
mod m20261122_000008_spend;
mod m20261122_000009_webhook_events;
mod m20261122_000010_payment_attempts;
mod m20261130_000011_row_level_security;
mod m20261130_000012_ledger_and_audit_chain;
mod m20261130_000013_persisted_operations;
mod m20261130_000014_purge_old_rejections;
mod m20261201_000015_notifications;
mod m20261201_000016_payment_disputes;
mod m20261201_000017_ledger_one_row_per_movement;

pub mod audit_chain;
pub mod statement;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_tenants_users_audit::Migration),
            Box::new(m20261122_000002_sessions::Migration),
            Box::new(m20261122_000003_mfa::Migration),
            Box::new(m20261122_000004_api_keys::Migration),
            Box::new(m20261122_000005_platform_tenant::Migration),
            Box::new(m20261122_000006_idempotency_keys::Migration),
            Box::new(m20261122_000007_escrow::Migration),
            Box::new(m20261122_000008_spend::Migration),
            Box::new(m20261122_000009_webhook_events::Migration),
            Box::new(m20261122_000010_payment_attempts::Migration),
            Box::new(m20261130_000011_row_level_security::Migration),
            Box::new(m20261130_000012_ledger_and_audit_chain::Migration),
            Box::new(m20261130_000013_persisted_operations::Migration),
            Box::new(m20261130_000014_purge_old_rejections::Migration),
            Box::new(m20261201_000015_notifications::Migration),
            Box::new(m20261201_000016_payment_disputes::Migration),
            Box::new(m20261201_000017_ledger_one_row_per_movement::Migration),
        ]
    }
}
