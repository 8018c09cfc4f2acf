//! The one integration test binary (one link, not one per file). Each module is a
//! feature's tests; all of them start from `harness::TestApp`.

mod harness;

mod access;
mod accounts;
mod api_keys;
mod books;
mod browser;
mod cli;
mod credentials;
mod dataloader;
mod escrow;
mod graphql_http;
mod idempotency;
mod identity;
mod invariants;
mod logs;
mod mail;
mod metrics;
mod mfa;
mod nodes;
mod payments;
mod persisted;
mod platform;
mod playground;
mod principal_cache;
mod privacy;
mod rate_limit;
mod retention;
mod row_security;
mod schema;
mod smtp;
mod spend;
mod tenancy;
mod tenancy_matrix;
mod traces;
mod visibility;
mod webhooks;
mod ws;
