//! Principals, roles, passwords and access tokens.

pub mod cache;
pub mod crypto;
pub mod password;
pub mod policy;
mod principal;
mod role;
mod scope;
pub mod token;

pub use principal::{API_KEY_PREFIX, Credential, Principal, UserPrincipal, authenticate_bearer};
pub use role::Role;
pub use scope::{PLATFORM_ADMIN_SCOPES, Scope, scopes_of};
pub use token::TokenService;
