//! Access policy as data: one declaration per root field (query, mutation,
//! subscription) says what a caller needs, and everything else reads it — the one
//! guard ([`Guard`], attached to every root object), introspection visibility (the
//! functions in [`visible`]), the README table (`sequestra policy`) and the generated
//! matrix test. A root field without a declaration is refused at run time and fails
//! the `every_root_field_has_a_policy` test.
//!
//! The rules the declarations follow:
//! - An API key's power is its scopes; a user token's scopes are its roles' defaults.
//!   A role requirement only ever narrows a scope requirement, never replaces it.
//! - Credential, session and MFA management is for signed-in users, never keys.
//! - A step-up (a recent MFA verification of this session) guards every field that
//!   moves money out, grants or removes access, or creates credentials; an API key has
//!   no session, so it never passes a step-up.

use std::fmt::Write as _;

use async_graphql::Context;

use crate::{
    auth::{Credential, PLATFORM_ADMIN_SCOPES, Principal, Role, Scope, UserPrincipal, scopes_of},
    error::Error,
};

use super::context::ContextExt;

/// Which root type a field belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Root {
    Query,
    Mutation,
    Subscription,
}

impl Root {
    pub fn as_str(self) -> &'static str {
        match self {
            Root::Query => "Query",
            Root::Mutation => "Mutation",
            Root::Subscription => "Subscription",
        }
    }
}

/// Who may call a field, before the rules look at the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in principal, even one the tenant still requires to enrol in MFA.
    Enrolling,
    /// Any signed-in principal.
    SignedIn,
    /// Every one of these scopes.
    All(&'static [Scope]),
    /// At least one of these scopes.
    Any(&'static [Scope]),
}

/// The declared policy of one root field.
#[derive(Debug, Clone, Copy)]
pub struct FieldPolicy {
    pub root: Root,
    pub field: &'static str,
    pub need: Need,
    /// One of these roles is needed as well (empty: no role condition). For an API
    /// key these are its creator's roles; the scopes in `need` still apply.
    pub roles: &'static [Role],
    /// May an API key call it at all?
    pub api_key: bool,
    /// Does it need a recent MFA step-up?
    pub step_up: bool,
}

/// A declaration under construction (`const` builders keep the table readable).
#[derive(Clone, Copy)]
pub struct Decl {
    need: Need,
    roles: &'static [Role],
    api_key: bool,
    step_up: bool,
}

impl Decl {
    /// Fields for signed-in users only (never API keys).
    pub const fn user(need: Need) -> Self {
        Decl {
            need,
            roles: &[],
            api_key: false,
            step_up: false,
        }
    }

    /// Fields users and API keys may call.
    pub const fn any(need: Need) -> Self {
        Decl {
            need,
            roles: &[],
            api_key: true,
            step_up: false,
        }
    }

    pub const fn roles(mut self, roles: &'static [Role]) -> Self {
        self.roles = roles;
        self
    }

    /// Needs a recent step-up, which no API key can have.
    pub const fn step_up(mut self) -> Self {
        self.step_up = true;
        self.api_key = false;
        self
    }
}

/// What the decision needs to know about a caller.
#[derive(Debug, Clone)]
pub struct Caller<'a> {
    pub user: Option<&'a UserPrincipal>,
    /// Whether the step-up counts as recent (the guard checks the time; visibility
    /// assumes it could be done).
    pub stepped_up: bool,
}

/// Why a declaration refuses a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unauthenticated,
    EnrolmentRequired,
    Forbidden,
    StepUpRequired,
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unauthenticated => Error::Unauthenticated,
            Refusal::EnrolmentRequired => Error::MfaEnrolmentRequired,
            Refusal::Forbidden => Error::Forbidden,
            Refusal::StepUpRequired => Error::MfaRequired,
        }
    }
}

impl FieldPolicy {
    /// The decision, in the order a caller can fix things: sign in, enrol, use the
    /// right credential and scopes, step up.
    pub fn decide(&self, caller: &Caller<'_>) -> Result<(), Refusal> {
        if self.need == Need::Public {
            return Ok(());
        }
        let user = caller.user.ok_or(Refusal::Unauthenticated)?;
        if user.mfa_enrolment_required && self.need != Need::Enrolling {
            return Err(Refusal::EnrolmentRequired);
        }
        if matches!(user.credential, Credential::ApiKey(_)) && !self.api_key {
            return Err(Refusal::Forbidden);
        }
        let scopes_ok = match self.need {
            Need::Public | Need::Enrolling | Need::SignedIn => true,
            Need::All(all) => all.iter().all(|s| user.scopes.contains(s)),
            Need::Any(any) => any.iter().any(|s| user.scopes.contains(s)),
        };
        let roles_ok = self.roles.is_empty() || user.roles.iter().any(|r| self.roles.contains(r));
        if !scopes_ok || !roles_ok {
            return Err(Refusal::Forbidden);
        }
        if self.step_up && !caller.stepped_up {
            return Err(Refusal::StepUpRequired);
        }
        Ok(())
    }

    /// Shown in introspection exactly when the caller could be allowed (a step-up is
    /// something the caller can do, so it does not hide a field).
    pub fn visible_to(&self, principal: &Principal) -> bool {
        self.decide(&Caller {
            user: user_of(principal),
            stepped_up: true,
        })
        .is_ok()
    }
}

fn user_of(principal: &Principal) -> Option<&UserPrincipal> {
    match principal {
        Principal::User(u) => Some(u),
        Principal::Anonymous => None,
    }
}

/// The policy of `root.field`, if declared.
pub fn policy(root: Root, field: &str) -> Option<&'static FieldPolicy> {
    POLICIES.iter().find(|p| p.root == root && p.field == field)
}

/// The one guard: attached to every root object (`#[Object(guard = …)]`), it reads
/// the called field's name and applies its declaration.
pub struct Guard(pub Root);

impl async_graphql::Guard for Guard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let field = ctx.item.node.name.node.as_str();
        let Some(policy) = policy(self.0, field) else {
            tracing::error!(
                root = self.0.as_str(),
                field,
                "root field without an access policy"
            );
            return Err(Error::Forbidden.into());
        };
        let principal = ctx.principal();
        let user = user_of(principal);
        let stepped_up = match user.and_then(|u| u.mfa_verified_at) {
            Some(at) if policy.step_up => {
                let window = chrono::Duration::from_std(ctx.services()?.step_up_window)
                    .unwrap_or(chrono::Duration::minutes(10));
                chrono::Utc::now() - at <= window
            }
            _ => false,
        };
        policy
            .decide(&Caller { user, stepped_up })
            .map_err(|r| Error::from(r).into())
    }
}

fn check_visible(root: Root, field: &str, ctx: &Context<'_>) -> bool {
    policy(root, field).is_some_and(|p| p.visible_to(ctx.principal()))
}

macro_rules! policies {
    ($( $root:ident $field:literal $vis:ident => $decl:expr ;)*) => {
        /// Every root field's declaration.
        pub static POLICIES: &[FieldPolicy] = &[$({
            let d: Decl = $decl;
            FieldPolicy {
                root: Root::$root,
                field: $field,
                need: d.need,
                roles: d.roles,
                api_key: d.api_key,
                step_up: d.step_up,
            }
        }),*];

        /// Introspection visibility, one function per root field, each reading the
        /// field's declaration (`#[graphql(visible = "access::visible::…")]`).
        pub mod visible {
            use async_graphql::Context;

            use super::Root;
            $(
                pub fn $vis(ctx: &Context<'_>) -> bool {
                    super::check_visible(Root::$root, $field, ctx)
                }
            )*
        }
    };
}

use Need::{All, Any, Enrolling, Public, SignedIn};
use Role::{Admin, Sender, Support};
use Scope::*;

policies! {
    // Queries.
    Query "serverTime" server_time => Decl::any(Public);
    Query "node" node => Decl::any(SignedIn);
    Query "nodes" nodes => Decl::any(SignedIn);
    Query "viewer" viewer => Decl::any(SignedIn);
    Query "auditLog" audit_log => Decl::any(All(&[AuditRead]));
    Query "users" users => Decl::any(All(&[UsersRead]));
    Query "exportMyData" export_my_data => Decl::user(SignedIn);
    Query "mfaEnabled" mfa_enabled => Decl::user(Enrolling);
    Query "mfaRequiredRoles" mfa_required_roles => Decl::any(All(&[UsersRead]));
    Query "mySessions" my_sessions => Decl::user(SignedIn);
    Query "notificationSettings" notification_settings => Decl::user(SignedIn);
    Query "apiKeys" api_keys => Decl::any(All(&[KeysAdmin]));
    Query "escrow" escrow => Decl::any(All(&[EscrowRead]));
    Query "escrows" escrows => Decl::any(All(&[EscrowRead]));
    Query "spendCategories" spend_categories => Decl::any(All(&[SpendRead]));
    Query "merchants" merchants => Decl::any(All(&[SpendRead]));
    Query "mandate" mandate => Decl::any(All(&[SpendRead]));
    Query "mandates" mandates => Decl::any(All(&[SpendRead]));
    Query "purchases" purchases => Decl::any(All(&[SpendRead]));
    Query "transfers" transfers => Decl::any(All(&[SpendRead]));
    Query "alerts" alerts => Decl::any(All(&[SpendRead]));

    // Sign-in, sessions and MFA: the sign-in family is public; the rest is the
    // signed-in user's own business, never an API key's.
    Mutation "signIn" sign_in => Decl::any(Public);
    Mutation "refreshSession" refresh_session => Decl::any(Public);
    Mutation "verifyMfa" verify_mfa => Decl::any(Public);
    Mutation "requestPasswordReset" request_password_reset => Decl::any(Public);
    Mutation "resetPassword" reset_password => Decl::any(Public);
    Mutation "verifyEmail" verify_email => Decl::any(Public);
    Mutation "confirmEmailChange" confirm_email_change => Decl::any(Public);
    Mutation "enrollMfa" enroll_mfa => Decl::user(Enrolling);
    Mutation "activateMfa" activate_mfa => Decl::user(Enrolling);
    Mutation "disableMfa" disable_mfa => Decl::user(SignedIn);
    Mutation "regenerateRecoveryCodes" regenerate_recovery_codes => Decl::user(SignedIn).step_up();
    Mutation "verifyStepUp" verify_step_up => Decl::user(SignedIn);
    Mutation "signOut" sign_out => Decl::user(Enrolling);
    Mutation "revokeSession" revoke_session => Decl::user(SignedIn);
    Mutation "revokeOtherSessions" revoke_other_sessions => Decl::user(SignedIn);
    Mutation "changePassword" change_password => Decl::user(SignedIn);
    Mutation "changeEmail" change_email => Decl::user(SignedIn).step_up();
    Mutation "setNotificationEnabled" set_notification_enabled => Decl::user(SignedIn);

    // Access administration: every grant of access needs a step-up.
    Mutation "setMfaRequiredRoles" set_mfa_required_roles => Decl::any(All(&[UsersAdmin])).step_up();
    Mutation "createApiKey" create_api_key => Decl::any(All(&[KeysAdmin])).step_up();
    Mutation "revokeApiKey" revoke_api_key => Decl::any(All(&[KeysAdmin]));
    Mutation "createTenant" create_tenant => Decl::any(All(&[TenantsAdmin])).step_up();
    Mutation "createUser" create_user => Decl::any(All(&[UsersAdmin])).step_up();
    Mutation "setUserRoles" set_user_roles => Decl::any(All(&[UsersAdmin])).step_up();
    Mutation "deactivateUser" deactivate_user => Decl::any(All(&[UsersAdmin])).step_up();
    Mutation "eraseUser" erase_user => Decl::any(All(&[UsersAdmin])).roles(&[Admin]).step_up();
    Mutation "eraseMyAccount" erase_my_account => Decl::user(SignedIn);

    // Escrows.
    Mutation "createEscrow" create_escrow => Decl::any(All(&[EscrowWrite])).roles(&[Sender]);
    Mutation "fundEscrow" fund_escrow => Decl::any(All(&[EscrowWrite]));
    Mutation "cancelEscrow" cancel_escrow => Decl::any(All(&[EscrowWrite]));
    Mutation "refundEscrow" refund_escrow => Decl::any(All(&[EscrowWrite]));
    Mutation "releaseMilestone" release_milestone => Decl::any(All(&[PaymentsExecute])).step_up();
    Mutation "releaseEscrow" release_escrow => Decl::any(All(&[PaymentsExecute])).step_up();
    Mutation "resolveDispute" resolve_dispute => Decl::any(All(&[EscrowWrite])).roles(&[Admin]).step_up();
    Mutation "markDelivered" mark_delivered => Decl::any(All(&[EscrowWrite]));
    Mutation "approveEscrow" approve_escrow => Decl::any(All(&[EscrowWrite]));
    Mutation "rejectEscrow" reject_escrow => Decl::any(All(&[EscrowWrite]));
    Mutation "openDispute" open_dispute => Decl::any(All(&[EscrowWrite]));
    Mutation "submitProof" submit_proof => Decl::any(All(&[EscrowWrite]));
    Mutation "decideProof" decide_proof => Decl::any(Any(&[EscrowWrite, EscrowReview]));

    // Spending.
    Mutation "createSpendCategory" create_spend_category => Decl::any(All(&[SpendCatalog])).roles(&[Admin, Support]);
    Mutation "setSpendCategoryEnabled" set_spend_category_enabled => Decl::any(All(&[SpendCatalog])).roles(&[Admin, Support]);
    Mutation "createMerchant" create_merchant => Decl::any(All(&[SpendCatalog])).roles(&[Admin, Support]);
    Mutation "updateMerchant" update_merchant => Decl::any(All(&[SpendCatalog])).roles(&[Admin, Support]);
    Mutation "grantMandate" grant_mandate => Decl::any(All(&[SpendWrite])).roles(&[Sender]);
    Mutation "revokeMandate" revoke_mandate => Decl::any(All(&[SpendWrite]));
    Mutation "createPurchase" create_purchase => Decl::any(All(&[SpendWrite]));
    Mutation "addPayee" add_payee => Decl::any(All(&[SpendWrite]));
    Mutation "payPayee" pay_payee => Decl::any(All(&[SpendWrite, PaymentsExecute])).step_up();
    Mutation "allowTransferRecipient" allow_transfer_recipient => Decl::any(All(&[SpendWrite]));
    Mutation "certifyTransferRecipient" certify_transfer_recipient => Decl::any(All(&[UsersAdmin])).roles(&[Admin]).step_up();
    Mutation "createTransfer" create_transfer => Decl::any(All(&[PaymentsExecute])).step_up();

    // Payments.
    Mutation "retryPayment" retry_payment => Decl::any(All(&[PaymentsExecute])).step_up();

    // Subscriptions.
    Subscription "serverTime" server_time_ticks => Decl::any(Public);
    Subscription "paymentUpdated" payment_updated => Decl::any(Any(&[EscrowRead, SpendRead]));
    Subscription "escrowUpdated" escrow_updated => Decl::any(All(&[EscrowRead]));
    Subscription "myPaymentUpdates" my_payment_updates => Decl::any(Any(&[EscrowRead, SpendRead]));
}

/// The callers the README table shows a column for: each business role, and the
/// platform administrator.
pub fn role_principals() -> Vec<(&'static str, Principal)> {
    let mut out: Vec<(&'static str, Principal)> = Role::ALL
        .into_iter()
        .map(|r| (r.as_str(), role_principal(r)))
        .collect();
    out.push((
        "PLATFORM_ADMIN",
        principal_of(vec![Admin], PLATFORM_ADMIN_SCOPES.into_iter().collect()),
    ));
    out
}

/// A signed-in user holding just `role` with its default scopes: what schema-shaped
/// output (the README table, `sequestra schema --role`) is computed for.
pub fn role_principal(role: Role) -> Principal {
    principal_of(vec![role], scopes_of(&[role]))
}

fn principal_of(roles: Vec<Role>, scopes: std::collections::BTreeSet<Scope>) -> Principal {
    let nil = uuid::Uuid::nil();
    Principal::User(UserPrincipal {
        tenant_id: crate::ids::TenantId::from_uuid(nil),
        user_id: nil,
        credential: Credential::Session(nil),
        roles,
        scopes,
        mfa_verified_at: None,
        mfa_enrolment_required: false,
        expires_at: None,
    })
}

fn need_text(need: Need) -> String {
    let list = |scopes: &[Scope], sep: &str| {
        scopes
            .iter()
            .map(|s| format!("`{}`", s.as_str()))
            .collect::<Vec<_>>()
            .join(sep)
    };
    match need {
        Need::Public => "anyone".into(),
        Need::Enrolling => "signed in (also while MFA enrolment is pending)".into(),
        Need::SignedIn => "signed in".into(),
        Need::All(s) => list(s, " and "),
        Need::Any(s) => list(s, " or "),
    }
}

/// The policy of every root field as a Markdown table (printed by `sequestra policy`,
/// kept in the README; a test fails when they differ).
pub fn markdown() -> String {
    let principals = role_principals();
    let mut out = String::from(
        "| field | needs | roles | API key | step-up | visible to |\n|---|---|---|---|---|---|\n",
    );
    for p in POLICIES {
        let roles = if p.roles.is_empty() {
            String::new()
        } else {
            p.roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let visible: Vec<&str> = principals
            .iter()
            .filter(|(_, principal)| p.visible_to(principal))
            .map(|(name, _)| *name)
            .collect();
        let visible = if p.need == Need::Public {
            "everyone".to_owned()
        } else {
            visible.join(", ")
        };
        let _ = writeln!(
            out,
            "| {} `{}` | {} | {} | {} | {} | {} |",
            p.root.as_str(),
            p.field,
            need_text(p.need),
            roles,
            if p.api_key { "yes" } else { "no" },
            if p.step_up { "yes" } else { "" },
            visible,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every root field of the schema has exactly one declaration, and every
    /// declaration names a field that exists.
    #[test]
    fn every_root_field_has_a_policy() {
        let fields: BTreeSet<(&str, String)> = [Root::Query, Root::Mutation, Root::Subscription]
            .into_iter()
            .flat_map(|root| {
                crate::graphql::root_fields(root.as_str())
                    .into_iter()
                    .map(move |field| (root.as_str(), field))
            })
            .collect();
        let declared: BTreeSet<(&str, String)> = POLICIES
            .iter()
            .map(|p| (p.root.as_str(), p.field.to_owned()))
            .collect();
        assert_eq!(declared.len(), POLICIES.len(), "a field is declared twice");
        let missing: Vec<_> = fields.difference(&declared).collect();
        let stale: Vec<_> = declared.difference(&fields).collect();
        assert!(
            missing.is_empty(),
            "root fields without a policy: {missing:?}"
        );
        assert!(stale.is_empty(), "policies for no field: {stale:?}");
    }

    /// A role condition narrows a scope condition; it never stands alone (else a
    /// key's power would come from its creator's role).
    #[test]
    fn roles_only_narrow_scopes() {
        for p in POLICIES {
            if !p.roles.is_empty() {
                assert!(
                    matches!(p.need, Need::All(_) | Need::Any(_)),
                    "{} declares roles without scopes",
                    p.field
                );
            }
            if p.step_up {
                assert!(!p.api_key, "{}: keys cannot step up", p.field);
            }
        }
    }
}
