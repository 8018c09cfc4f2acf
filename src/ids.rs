//! Typed identifiers: `TenantId`, and the opaque, type-prefixed global ids clients see
//! (`usr_…`, `ten_…`). Ids are UUID v7, so they sort by creation time.

use std::fmt;

use uuid::Uuid;

/// The tenant a row or a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantId(Uuid);

impl TenantId {
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub fn as_uuid(self) -> Uuid {
        self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A new time-ordered id.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// The kinds of object a global id can name. The prefix is part of the public
/// contract: never reuse or change one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tenant,
    User,
    Session,
    ApiKey,
    Escrow,
    Milestone,
    Deposit,
    Proof,
    Payment,
    EscrowEvent,
    Category,
    Merchant,
    Mandate,
    Purchase,
    Payee,
    Payout,
    Transfer,
    Alert,
    LedgerEntry,
}

impl Kind {
    const ALL: [Kind; 19] = [
        Kind::Tenant,
        Kind::User,
        Kind::Session,
        Kind::ApiKey,
        Kind::Escrow,
        Kind::Milestone,
        Kind::Deposit,
        Kind::Proof,
        Kind::Payment,
        Kind::EscrowEvent,
        Kind::Category,
        Kind::Merchant,
        Kind::Mandate,
        Kind::Purchase,
        Kind::Payee,
        Kind::Payout,
        Kind::Transfer,
        Kind::Alert,
        Kind::LedgerEntry,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Tenant => "ten",
            Kind::User => "usr",
            Kind::Session => "ses",
            Kind::ApiKey => "key",
            Kind::Escrow => "esc",
            Kind::Milestone => "mst",
            Kind::Deposit => "dep",
            Kind::Proof => "prf",
            Kind::Payment => "pay",
            Kind::EscrowEvent => "evt",
            Kind::Category => "cat",
            Kind::Merchant => "mer",
            Kind::Mandate => "mnd",
            Kind::Purchase => "pur",
            Kind::Payee => "pye",
            Kind::Payout => "pot",
            Kind::Transfer => "trf",
            Kind::Alert => "alr",
            Kind::LedgerEntry => "led",
        }
    }
}

/// Encodes `id` as the global id of a `kind` object, e.g. `usr_0193…`.
pub fn encode(kind: Kind, id: Uuid) -> String {
    format!("{}_{}", kind.prefix(), id.simple())
}

/// Decodes any global id; `None` for anything malformed.
pub fn decode(global: &str) -> Option<(Kind, Uuid)> {
    let (prefix, rest) = global.split_once('_')?;
    let kind = Kind::ALL.into_iter().find(|k| k.prefix() == prefix)?;
    if rest.len() != 32
        || !rest
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    Some((kind, Uuid::parse_str(rest).ok()?))
}

/// Decodes a global id that must be of `kind`; anything else is NOT_FOUND, like an
/// id that names nothing.
pub fn decode_as(kind: Kind, global: &str) -> Result<Uuid, crate::error::Error> {
    decode(global)
        .filter(|(k, _)| *k == kind)
        .map(|(_, id)| id)
        .ok_or(crate::error::Error::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_malformed() {
        let id = new_id();
        let g = encode(Kind::User, id);
        assert!(g.starts_with("usr_"));
        assert_eq!(decode(&g), Some((Kind::User, id)));
        assert!(decode_as(Kind::Tenant, &g).is_err());
        for bad in [
            "",
            "usr_",
            "usr_xyz",
            "zzz_0193",
            &g.to_uppercase(),
            &format!("{g}0"),
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
