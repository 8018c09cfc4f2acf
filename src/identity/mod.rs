//! Identity: sign-in, sessions, refresh-token rotation and MFA (rules and GraphQL types).

pub mod graphql;
pub mod mfa;
pub mod rules;
