//! Identity: sign-in, sessions, refresh-token rotation and MFA (rules and GraphQL types).

pub mod api_keys;
pub mod email;
pub mod graphql;
pub mod mfa;
pub mod reset;
pub mod rules;
