//! Closed sets of names that the database stores as text and GraphQL shows as enums:
//! what an audit row records, what happened to an escrow, what a subscriber is told.
//!
//! Each is declared once with [`text_enum!`]: the Rust enum (so code can only write a
//! name the set has), its stored text (`escrow.funded`), its GraphQL value (the
//! variant's name in SCREAMING_SNAKE_CASE, `ESCROW_FUNDED`) and its serde form (the
//! stored text, for the update bus). The stored texts are the ones earlier versions
//! wrote; changing one would orphan rows already written (and break the audit chain's
//! hashes, which cover the text).

/// Declares a closed set stored as text: `Variant = "stored.text"`, each with a doc
/// comment (the GraphQL description).
#[macro_export]
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[doc = $doc:literal])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash,
            async_graphql::Enum, serde::Serialize, serde::Deserialize,
        )]
        $(#[$meta])*
        $vis enum $name {
            $( $(#[doc = $doc])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The text the database stores.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// The value a stored text names; `None` for a text outside the set.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }

            /// The value of a text read from the database: a text outside the set
            /// (written by something that bypassed this type) is an internal error.
            pub fn from_stored(text: &str) -> $crate::error::Result<Self> {
                Self::parse(text).ok_or_else(|| {
                    $crate::error::Error::internal(anyhow::anyhow!(
                        "{:?} is not a {}",
                        text,
                        stringify!($name)
                    ))
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// What an audit row records. Stored as the dotted text (`auth.sign_in.failed`).
    pub enum AuditAction {
        /// A program's API key was created (`api_key.created`).
        ApiKeyCreated = "api_key.created",
        /// An API key was revoked (`api_key.revoked`).
        ApiKeyRevoked = "api_key.revoked",
        /// A user turned two-factor authentication off (`auth.mfa.disabled`).
        AuthMfaDisabled = "auth.mfa.disabled",
        /// A user turned two-factor authentication on (`auth.mfa.enabled`).
        AuthMfaEnabled = "auth.mfa.enabled",
        /// A wrong one-time code (`auth.mfa.failed`).
        AuthMfaFailed = "auth.mfa.failed",
        /// A recovery code was used in place of a one-time code (`auth.mfa.recovery_code_used`).
        AuthMfaRecoveryCodeUsed = "auth.mfa.recovery_code_used",
        /// A user's recovery codes were replaced (`auth.mfa.recovery_codes_regenerated`).
        AuthMfaRecoveryCodesRegenerated = "auth.mfa.recovery_codes_regenerated",
        /// A wrong password for a signed-in user's check (`auth.password.failed`).
        AuthPasswordFailed = "auth.password.failed",
        /// A refresh token was presented twice: its session was ended (`auth.refresh.reused`).
        AuthRefreshReused = "auth.refresh.reused",
        /// A session was signed out (`auth.session.revoked`).
        AuthSessionRevoked = "auth.session.revoked",
        /// A user signed out every other session (`auth.sessions.revoked_others`).
        AuthSessionsRevokedOthers = "auth.sessions.revoked_others",
        /// A sign-in was refused (`auth.sign_in.failed`).
        AuthSignInFailed = "auth.sign_in.failed",
        /// A user signed in (`auth.sign_in.succeeded`).
        AuthSignInSucceeded = "auth.sign_in.succeeded",
        /// An escrow was cancelled before funding (`escrow.cancelled`).
        EscrowCancelled = "escrow.cancelled",
        /// An escrow was created (`escrow.created`).
        EscrowCreated = "escrow.created",
        /// An escrow's deadline passed without delivery (`escrow.deadline_passed`).
        EscrowDeadlinePassed = "escrow.deadline_passed",
        /// The provider marked the escrow delivered (`escrow.delivered`).
        EscrowDelivered = "escrow.delivered",
        /// The sender rejected the delivery (`escrow.delivery_rejected`).
        EscrowDeliveryRejected = "escrow.delivery_rejected",
        /// A deposit was received into an escrow (`escrow.deposit_received`).
        EscrowDepositReceived = "escrow.deposit_received",
        /// Staff resolved a dispute (`escrow.dispute_resolved`).
        EscrowDisputeResolved = "escrow.dispute_resolved",
        /// A party opened a dispute (`escrow.disputed`).
        EscrowDisputed = "escrow.disputed",
        /// An escrow's deposits reached its amount (`escrow.funded`).
        EscrowFunded = "escrow.funded",
        /// An escrow paid one of its payees (`escrow.payee_paid`).
        EscrowPayeePaid = "escrow.payee_paid",
        /// An escrow's money went back to its sender (`escrow.refunded`).
        EscrowRefunded = "escrow.refunded",
        /// Every milestone approved: the escrow may be released (`escrow.releasable`).
        EscrowReleasable = "escrow.releasable",
        /// An escrow's money went to its provider (`escrow.released`).
        EscrowReleased = "escrow.released",
        /// A mandate's budget was spent (`mandate.consumed`).
        MandateConsumed = "mandate.consumed",
        /// A mandate passed its end date (`mandate.expired`).
        MandateExpired = "mandate.expired",
        /// A mandate was granted (`mandate.granted`).
        MandateGranted = "mandate.granted",
        /// A mandate was revoked (`mandate.revoked`).
        MandateRevoked = "mandate.revoked",
        /// A milestone was approved (`milestone.approved`).
        MilestoneApproved = "milestone.approved",
        /// A milestone's payment settled (`milestone.paid`).
        MilestonePaid = "milestone.paid",
        /// A milestone's payment was sent to the PSP (`milestone.paying`).
        MilestonePaying = "milestone.paying",
        /// The PSP took a milestone's settled payment back (`milestone.payment_returned`).
        MilestonePaymentReturned = "milestone.payment_returned",
        /// A proof was submitted for a milestone (`milestone.proof_submitted`).
        MilestoneProofSubmitted = "milestone.proof_submitted",
        /// A milestone's proof was rejected (`milestone.rejected`).
        MilestoneRejected = "milestone.rejected",
        /// A payee was added to an escrow (`payee.added`).
        PayeeAdded = "payee.added",
        /// A payment was recorded for the PSP (`payment.created`).
        PaymentCreated = "payment.created",
        /// The PSP closed a dispute on a payment (`payment.dispute_closed`).
        PaymentDisputeClosed = "payment.dispute_closed",
        /// The PSP opened a dispute on a payment (`payment.dispute_opened`).
        PaymentDisputeOpened = "payment.dispute_opened",
        /// The PSP failed a payment (`payment.failed`).
        PaymentFailed = "payment.failed",
        /// A failed payment was tried again (`payment.retried`).
        PaymentRetried = "payment.retried",
        /// The PSP took back a payment it had settled (`payment.returned`).
        PaymentReturned = "payment.returned",
        /// The PSP accepted a payment (`payment.sent`).
        PaymentSent = "payment.sent",
        /// The PSP settled a payment (`payment.settled`).
        PaymentSettled = "payment.settled",
        /// A payout was requested (`payout.created`).
        PayoutCreated = "payout.created",
        /// A purchase was made under a mandate (`purchase.created`).
        PurchaseCreated = "purchase.created",
        /// A merchant category was created (`spend.category_created`).
        SpendCategoryCreated = "spend.category_created",
        /// A merchant category was disabled (`spend.category_disabled`).
        SpendCategoryDisabled = "spend.category_disabled",
        /// A merchant category was enabled again (`spend.category_enabled`).
        SpendCategoryEnabled = "spend.category_enabled",
        /// A merchant was created (`spend.merchant_created`).
        SpendMerchantCreated = "spend.merchant_created",
        /// A merchant was changed (`spend.merchant_updated`).
        SpendMerchantUpdated = "spend.merchant_updated",
        /// The tenant was created with its first admin (`tenant.bootstrapped`).
        TenantBootstrapped = "tenant.bootstrapped",
        /// The tenant's two-factor policy changed (`tenant.mfa_policy.changed`).
        TenantMfaPolicyChanged = "tenant.mfa_policy.changed",
        /// A transfer between users was made (`transfer.created`).
        TransferCreated = "transfer.created",
        /// A transfer recipient was allowed for a user (`transfer.recipient_allowed`).
        TransferRecipientAllowed = "transfer.recipient_allowed",
        /// A transfer recipient was certified by staff (`transfer.recipient_certified`).
        TransferRecipientCertified = "transfer.recipient_certified",
        /// A user was created (`user.created`).
        UserCreated = "user.created",
        /// A user was deactivated (`user.deactivated`).
        UserDeactivated = "user.deactivated",
        /// A user turned a kind of notification off or on (`user.notifications_changed`).
        UserNotificationsChanged = "user.notifications_changed",
        /// A user confirmed a new address (`user.email_changed`).
        UserEmailChanged = "user.email_changed",
        /// A user asked to change their address (`user.email_change_requested`).
        UserEmailChangeRequested = "user.email_change_requested",
        /// A user verified their address (`user.email_verified`).
        UserEmailVerified = "user.email_verified",
        /// A user's personal data was erased (`user.erased`).
        UserErased = "user.erased",
        /// A user's password was changed (`user.password_changed`).
        UserPasswordChanged = "user.password_changed",
        /// A user's password was reset with a mailed token (`user.password_reset`).
        UserPasswordReset = "user.password_reset",
        /// A password reset was mailed to a user (`user.password_reset_requested`).
        UserPasswordResetRequested = "user.password_reset_requested",
        /// A user's roles were changed (`user.roles_changed`).
        UserRolesChanged = "user.roles_changed",
    }
}

/// Declares an enum whose values are every escrow event kind (written here once),
/// followed by `extra` values of its own.
macro_rules! with_escrow_events {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $($extra:tt)* }
    ) => {
        $crate::text_enum! {
            $(#[$meta])*
            $vis enum $name {
                /// The escrow was created.
                EscrowCreated = "escrow.created",
                /// A deposit was received.
                EscrowDepositReceived = "escrow.deposit_received",
                /// The deposits reached the escrow's amount.
                EscrowFunded = "escrow.funded",
                /// The escrow was cancelled before funding.
                EscrowCancelled = "escrow.cancelled",
                /// The provider marked the escrow delivered.
                EscrowDelivered = "escrow.delivered",
                /// The sender rejected the delivery.
                EscrowDeliveryRejected = "escrow.delivery_rejected",
                /// Every milestone is approved: the escrow may be released.
                EscrowReleasable = "escrow.releasable",
                /// The money went to the provider.
                EscrowReleased = "escrow.released",
                /// The money went back to the sender.
                EscrowRefunded = "escrow.refunded",
                /// The escrow paid one of its payees.
                EscrowPayeePaid = "escrow.payee_paid",
                /// A party opened a dispute.
                EscrowDisputed = "escrow.disputed",
                /// Staff resolved the dispute.
                EscrowDisputeResolved = "escrow.dispute_resolved",
                /// The deadline passed without delivery.
                EscrowDeadlinePassed = "escrow.deadline_passed",
                /// A proof was submitted for a milestone.
                MilestoneProofSubmitted = "milestone.proof_submitted",
                /// A milestone was approved.
                MilestoneApproved = "milestone.approved",
                /// A milestone's proof was rejected.
                MilestoneRejected = "milestone.rejected",
                /// A milestone's payment was sent to the PSP.
                MilestonePaying = "milestone.paying",
                /// A milestone's payment settled.
                MilestonePaid = "milestone.paid",
                /// The PSP took a milestone's settled payment back: it is paid again.
                MilestonePaymentReturned = "milestone.payment_returned",
                $($extra)*
            }
        }
    };
}

with_escrow_events! {
    /// What happened to an escrow or one of its milestones (an `EscrowEvent`). Each is
    /// also the audit action of the same name.
    pub enum EscrowEventKind {}
}

impl EscrowEventKind {
    /// The audit action an escrow event is recorded under.
    pub fn action(self) -> AuditAction {
        match self {
            Self::EscrowCreated => AuditAction::EscrowCreated,
            Self::EscrowDepositReceived => AuditAction::EscrowDepositReceived,
            Self::EscrowFunded => AuditAction::EscrowFunded,
            Self::EscrowCancelled => AuditAction::EscrowCancelled,
            Self::EscrowDelivered => AuditAction::EscrowDelivered,
            Self::EscrowDeliveryRejected => AuditAction::EscrowDeliveryRejected,
            Self::EscrowReleasable => AuditAction::EscrowReleasable,
            Self::EscrowReleased => AuditAction::EscrowReleased,
            Self::EscrowRefunded => AuditAction::EscrowRefunded,
            Self::EscrowPayeePaid => AuditAction::EscrowPayeePaid,
            Self::EscrowDisputed => AuditAction::EscrowDisputed,
            Self::EscrowDisputeResolved => AuditAction::EscrowDisputeResolved,
            Self::EscrowDeadlinePassed => AuditAction::EscrowDeadlinePassed,
            Self::MilestoneProofSubmitted => AuditAction::MilestoneProofSubmitted,
            Self::MilestoneApproved => AuditAction::MilestoneApproved,
            Self::MilestoneRejected => AuditAction::MilestoneRejected,
            Self::MilestonePaying => AuditAction::MilestonePaying,
            Self::MilestonePaid => AuditAction::MilestonePaid,
            Self::MilestonePaymentReturned => AuditAction::MilestonePaymentReturned,
        }
    }
}

with_escrow_events! {
    /// What `escrowUpdated` reports: an escrow event, a move of one of the escrow's
    /// payments, or `RESYNC`.
    pub enum EscrowUpdateEvent {
        /// One of the escrow's payments was recorded, waiting for the PSP.
        PaymentPending = "payment.pending",
        /// One of the escrow's payments was accepted by the PSP.
        PaymentSent = "payment.sent",
        /// One of the escrow's payments settled.
        PaymentSettled = "payment.settled",
        /// One of the escrow's payments failed.
        PaymentFailed = "payment.failed",
        /// The subscriber fell behind and some updates were skipped: read the escrow
        /// again (the `escrow` field is as it is now).
        Resync = "resync",
    }
}

impl From<EscrowEventKind> for EscrowUpdateEvent {
    fn from(kind: EscrowEventKind) -> Self {
        // The same stored text, one set inside the other (a unit test walks them all).
        Self::parse(kind.as_str()).unwrap_or(Self::Resync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_escrow_event_is_an_audit_action_and_an_update_of_the_same_text() {
        for kind in EscrowEventKind::ALL {
            assert_eq!(kind.action().as_str(), kind.as_str());
            assert_eq!(EscrowUpdateEvent::from(*kind).as_str(), kind.as_str());
        }
    }

    #[test]
    fn texts_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(*action));
            assert!(seen.insert(action.as_str()), "{action} twice");
        }
        assert_eq!(AuditAction::parse("nope"), None);
        assert_eq!(
            serde_json::to_string(&EscrowUpdateEvent::PaymentSettled).unwrap(),
            "\"payment.settled\""
        );
    }
}
