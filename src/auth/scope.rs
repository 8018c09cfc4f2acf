//! Scopes: what a token or an API key may do. A role grants a default set; an API key
//! carries at most its creator's.

use std::{collections::BTreeSet, fmt, str::FromStr};

use super::Role;

/// A permission a role (or an API key) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, async_graphql::Enum)]
pub enum Scope {
    /// Read escrows.
    #[graphql(name = "ESCROW_READ")]
    EscrowRead,
    /// Create and move escrows.
    #[graphql(name = "ESCROW_WRITE")]
    EscrowWrite,
    /// Read mandates and purchases.
    #[graphql(name = "SPEND_READ")]
    SpendRead,
    /// Grant mandates and spend them.
    #[graphql(name = "SPEND_WRITE")]
    SpendWrite,
    /// Decide proofs submitted on escrows (review without moving money).
    #[graphql(name = "ESCROW_REVIEW")]
    EscrowReview,
    /// Keep the spend catalog: categories and merchants.
    #[graphql(name = "SPEND_CATALOG")]
    SpendCatalog,
    /// Execute or retry payouts.
    #[graphql(name = "PAYMENTS_EXECUTE")]
    PaymentsExecute,
    /// Read the tenant's users.
    #[graphql(name = "USERS_READ")]
    UsersRead,
    /// Create users, change roles, deactivate users.
    #[graphql(name = "USERS_ADMIN")]
    UsersAdmin,
    /// Create and revoke API keys.
    #[graphql(name = "KEYS_ADMIN")]
    KeysAdmin,
    /// Read the audit log.
    #[graphql(name = "AUDIT_READ")]
    AuditRead,
    /// Create tenants (PLATFORM_ADMIN only).
    #[graphql(name = "TENANTS_ADMIN")]
    TenantsAdmin,
}

impl Scope {
    pub const ALL: [Scope; 12] = [
        Scope::EscrowRead,
        Scope::EscrowWrite,
        Scope::EscrowReview,
        Scope::SpendRead,
        Scope::SpendWrite,
        Scope::SpendCatalog,
        Scope::PaymentsExecute,
        Scope::UsersRead,
        Scope::UsersAdmin,
        Scope::KeysAdmin,
        Scope::AuditRead,
        Scope::TenantsAdmin,
    ];

    /// The wire form used in tokens, keys and the database, e.g. `escrow:read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EscrowRead => "escrow:read",
            Scope::EscrowWrite => "escrow:write",
            Scope::EscrowReview => "escrow:review",
            Scope::SpendRead => "spend:read",
            Scope::SpendWrite => "spend:write",
            Scope::SpendCatalog => "spend:catalog",
            Scope::PaymentsExecute => "payments:execute",
            Scope::UsersRead => "users:read",
            Scope::UsersAdmin => "users:admin",
            Scope::KeysAdmin => "keys:admin",
            Scope::AuditRead => "audit:read",
            Scope::TenantsAdmin => "tenants:admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or(())
    }
}

impl Role {
    /// The scopes a role grants by default.
    pub fn default_scopes(self) -> &'static [Scope] {
        use Scope::*;
        match self {
            Role::Admin => &[
                EscrowRead,
                EscrowWrite,
                SpendRead,
                SpendCatalog,
                UsersRead,
                UsersAdmin,
                KeysAdmin,
                AuditRead,
            ],
            // Support reads everything, reviews proofs and keeps the spend catalog; it
            // moves no money.
            Role::Support => &[
                EscrowRead,
                EscrowReview,
                SpendRead,
                SpendCatalog,
                UsersRead,
                AuditRead,
            ],
            Role::Sender => &[
                EscrowRead,
                EscrowWrite,
                SpendRead,
                SpendWrite,
                PaymentsExecute,
            ],
            // Beneficiaries are also the providers escrows pay: they prove and deliver.
            // They execute payouts from the mandates granted to them (the rules check
            // whose mandate it is), hence payments:execute.
            Role::Beneficiary => &[
                EscrowRead,
                EscrowWrite,
                SpendRead,
                SpendWrite,
                PaymentsExecute,
            ],
        }
    }
}

/// What a PLATFORM_ADMIN (an ADMIN of the platform tenant) holds: tenant creation,
/// and the administration of the platform tenant itself. No business scope at all.
pub const PLATFORM_ADMIN_SCOPES: [Scope; 5] = [
    Scope::TenantsAdmin,
    Scope::UsersRead,
    Scope::UsersAdmin,
    Scope::KeysAdmin,
    Scope::AuditRead,
];

/// The union of the default scopes of `roles`.
pub fn scopes_of(roles: &[Role]) -> BTreeSet<Scope> {
    roles
        .iter()
        .flat_map(|r| r.default_scopes().iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
        }
        assert!("escrow:delete".parse::<Scope>().is_err());
    }

    #[test]
    fn support_reads_but_does_not_move_money() {
        let support = scopes_of(&[Role::Support]);
        assert!(support.contains(&Scope::EscrowRead));
        assert!(!support.contains(&Scope::EscrowWrite));
        assert!(!support.contains(&Scope::PaymentsExecute));
        assert!(!support.contains(&Scope::SpendWrite));
    }
}
