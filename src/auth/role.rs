use sea_orm::entity::prelude::*;

/// A role a user holds within its tenant. A user may hold several.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    async_graphql::Enum,
    serde::Serialize,
    serde::Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    /// Manages the tenant: users, roles, keys, catalog, disputes.
    #[sea_orm(string_value = "ADMIN")]
    Admin,
    /// Reads the tenant's escrows and spending and reviews proofs.
    #[sea_orm(string_value = "SUPPORT")]
    Support,
    /// Puts money in escrow and grants mandates.
    #[sea_orm(string_value = "SENDER")]
    Sender,
    /// Receives escrow payments and spends mandates.
    #[sea_orm(string_value = "BENEFICIARY")]
    Beneficiary,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Support, Role::Sender, Role::Beneficiary];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::Support => "SUPPORT",
            Role::Sender => "SENDER",
            Role::Beneficiary => "BENEFICIARY",
        }
    }
}
