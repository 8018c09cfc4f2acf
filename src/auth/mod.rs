//! Principals, roles, passwords and access tokens.

pub mod password;
mod principal;
mod role;
pub mod token;

pub use principal::{Principal, UserPrincipal, authenticate_bearer};
pub use role::Role;
pub use token::TokenService;
