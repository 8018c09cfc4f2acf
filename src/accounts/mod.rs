//! Tenants and their users: the rules, and their GraphQL types.

pub mod graphql;
pub mod privacy;
pub mod rules;
