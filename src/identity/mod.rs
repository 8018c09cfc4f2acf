//! Identity: sign-in, sessions and refresh-token rotation (rules and GraphQL types).

pub mod graphql;
pub mod rules;
