//! What every business area's rules share: who acts ([`Caller`]), on whose behalf
//! and from where ([`Act`]), and the small checks inputs go through.

use uuid::Uuid;

use crate::{
    audit::{Actor, Origin},
    auth::Role,
    error::{Error, Result},
};

/// The signed-in user a rule acts for.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: Uuid,
    pub roles: Vec<Role>,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Support and admins see (and support reviews) the whole tenant's business.
    pub fn is_staff(&self) -> bool {
        self.has(Role::Admin) || self.has(Role::Support)
    }

    pub fn is_admin(&self) -> bool {
        self.has(Role::Admin)
    }
}

/// Who acts and from where, for events and audit rows; and the PSP new payments
/// are recorded for.
#[derive(Clone, Copy)]
pub struct Act<'a> {
    pub actor: Actor,
    pub origin: &'a Origin,
    pub psp: &'a str,
}

impl Act<'_> {
    pub fn actor_id(&self) -> Option<Uuid> {
        match self.actor {
            Actor::User(id) => Some(id),
            Actor::System => None,
        }
    }
}

/// What a money-moving rule returns: it names the payments to hand to the PSP once
/// its transaction has committed.
pub trait MovesMoney {
    fn payments(&self) -> &[Uuid];
}

/// FORBIDDEN unless `allowed` (the caller may see the object, but not do this).
pub fn require(allowed: bool) -> Result<()> {
    if allowed {
        Ok(())
    } else {
        Err(Error::Forbidden)
    }
}

/// Trimmed text of 1 to `max` characters.
pub fn text(field: &'static str, value: &str, max: usize) -> Result<String> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max {
        return Err(Error::bad_field(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    Ok(value.to_owned())
}
