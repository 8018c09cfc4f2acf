//! SeaORM entities: the one place table shapes live. Tenant-owned entities implement
//! [`crate::db::TenantEntity`] so the scoped layer can filter and stamp them.

pub mod alert;
pub mod api_key;
pub mod audit_log;
pub mod auth_failure;
pub mod certified_recipient;
pub mod deposit;
pub mod escrow;
pub mod escrow_event;
pub mod idempotency_key;
pub mod job_lease;
pub mod mandate;
pub mod mandate_category;
pub mod mandate_merchant;
pub mod merchant;
pub mod mfa_challenge;
pub mod mfa_totp;
pub mod milestone;
pub mod payee;
pub mod payment;
pub mod payment_attempt;
pub mod payout;
pub mod proof;
pub mod purchase;
pub mod recovery_code;
pub mod refresh_token;
pub mod session;
pub mod spend_category;
pub mod tenant;
pub mod tenant_mfa_policy;
pub mod transfer;
pub mod transfer_recipient;
pub mod user;
pub mod user_role;
pub mod webhook_event;
pub mod webhook_rejection;
