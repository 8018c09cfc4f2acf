//! Escrow: money held until delivery is proven, then released to the provider or
//! refunded to the sender. Rules (`rules`) are plain functions over a tenant-scoped
//! transaction, shared by resolvers (`graphql`) and the deadline job.

pub mod graphql;
pub mod inspect;
pub mod machine;
pub mod rules;
pub mod storage;
