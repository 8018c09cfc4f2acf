//! Notifications by mail, through an outbox.
//!
//! A rule that has something to tell a user calls [`enqueue`] inside its transaction:
//! one INSERT of the kind and the data the template needs, committed (or rolled back)
//! with the change it tells about, so no mail is sent for a change that did not happen
//! and none is lost for one that did. The jobs send the outbox ([`deliver`]): rendered
//! from the templates in `templates/mail/` (plain text + HTML, the tenant's name as the
//! sender's), to the user's address of the moment, with retries and backoff, one
//! sender at a time across processes (a lease) and each mail claimed by a conditional
//! UPDATE before it is sent.
//!
//! What users are told: a payee when a payment to them is SENT, SETTLED or FAILED
//! (each kind can be turned off: [`graphql`]), and, always, the security notices (a
//! new sign-in, a password changed or reset, two-factor authentication turned off)
//! and the password reset mail they asked for.

pub mod deliver;
pub mod graphql;
pub mod templates;

use chrono::Utc;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    db::{Scoped, TenantTxn},
    entity::{
        notification, notification_opt_out,
        payment::{self, PaymentStatus},
    },
    error::Result,
    ids::{self, Kind, new_id},
    money::{Currency, Money},
};

crate::text_enum! {
    /// What a notification tells its user.
    pub enum NoticeKind {
        /// A payment to you was handed to the payment provider.
        PaymentSent = "PAYMENT_SENT",
        /// A payment to you arrived (the provider confirmed it).
        PaymentSettled = "PAYMENT_SETTLED",
        /// A payment to you failed.
        PaymentFailed = "PAYMENT_FAILED",
        /// The PSP opened or closed a dispute on a payment you pay or are paid.
        PaymentDisputed = "PAYMENT_DISPUTED",
        /// The other party of an escrow you are party to opened a dispute.
        EscrowDisputed = "ESCROW_DISPUTED",
        /// Your escrow was released to its provider when its inspection period ended.
        EscrowAutoReleased = "ESCROW_AUTO_RELEASED",
        /// You were granted a mandate to spend.
        MandateGranted = "MANDATE_GRANTED",
        /// A mandate of yours is nine-tenths spent.
        MandateNearlySpent = "MANDATE_NEARLY_SPENT",
        /// Someone signed in to your account (a security notice: always sent).
        SignIn = "SIGN_IN",
        /// Your password was changed or reset (a security notice: always sent).
        PasswordChanged = "PASSWORD_CHANGED",
        /// Two-factor authentication was turned off for your account (a security
        /// notice: always sent).
        MfaDisabled = "MFA_DISABLED",
        /// The password reset you asked for (always sent).
        PasswordReset = "PASSWORD_RESET",
        /// Confirm your address (always sent).
        EmailVerification = "EMAIL_VERIFICATION",
        /// Confirm the new address you asked for, sent to it (always sent).
        EmailChangeConfirmation = "EMAIL_CHANGE_CONFIRMATION",
        /// A change of your address was asked for, sent to the old one (a security
        /// notice: always sent).
        EmailChangeRequested = "EMAIL_CHANGE_REQUESTED",
    }
}

impl NoticeKind {
    /// Security notices and mails the user asked for: sent whatever the user turned
    /// off.
    pub fn always_sent(self) -> bool {
        self.is_security()
    }

    /// A security notice or a mail the user asked for (the mail offers no opt-out).
    pub fn is_security(self) -> bool {
        matches!(
            self,
            Self::SignIn
                | Self::PasswordChanged
                | Self::MfaDisabled
                | Self::PasswordReset
                | Self::EmailVerification
                | Self::EmailChangeConfirmation
                | Self::EmailChangeRequested
        )
    }

    /// Its data carries a single-use secret: emptied once the mail is sent.
    pub fn carries_secret(self) -> bool {
        matches!(
            self,
            Self::PasswordReset | Self::EmailVerification | Self::EmailChangeConfirmation
        )
    }

    /// The templates' base name (`payment_settled` → `payment_settled.txt/.html`).
    pub fn template(self) -> String {
        self.as_str().to_ascii_lowercase()
    }
}

/// Writes a notification for `user` into the outbox of `db`'s transaction: sent once
/// it commits, never if it rolls back. `data` fills the kind's templates.
pub async fn enqueue<C: ConnectionTrait>(
    db: &Scoped<C>,
    user: Uuid,
    kind: NoticeKind,
    data: Value,
) -> Result<()> {
    enqueue_to(db, user, kind, data, None).await
}

/// Like [`enqueue`], to `to` instead of the user's address of the moment of sending
/// (a new address to confirm; the old one, told of a change).
pub async fn enqueue_to<C: ConnectionTrait>(
    db: &Scoped<C>,
    user: Uuid,
    kind: NoticeKind,
    data: Value,
    to: Option<&str>,
) -> Result<()> {
    let now = Utc::now();
    db.insert(notification::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(db.tenant().as_uuid()),
        user_id: Set(user),
        kind: Set(kind.as_str().to_owned()),
        to_address: Set(to.map(str::to_owned)),
        data: Set(data.to_string()),
        status: Set(deliver::PENDING.to_owned()),
        attempts: Set(0),
        next_attempt_at: Set(now),
        claimed_until: Set(None),
        sent_at: Set(None),
        last_error: Set(None),
        created_at: Set(now),
    })
    .await?;
    // The sender wakes when this commits (in the same notification statement as the
    // transaction's other updates).
    db.publish(crate::events::Update::Mail {
        tenant_id: db.tenant().as_uuid(),
    });
    Ok(())
}

/// An amount in minor units as a mail shows it (`12.50`).
pub fn amount(minor: i64, currency: &str) -> String {
    Currency::parse(currency)
        .map(|c| Money::from_minor(minor, c).to_decimal().to_string())
        .unwrap_or_else(|_| minor.to_string())
}

/// Whether `user` turned `kind` off.
pub async fn is_opted_out<C: ConnectionTrait>(
    db: &Scoped<C>,
    user: Uuid,
    kind: NoticeKind,
) -> Result<bool> {
    Ok(db
        .count::<notification_opt_out::Entity>(|q| {
            q.filter(notification_opt_out::Column::UserId.eq(user))
                .filter(notification_opt_out::Column::Kind.eq(kind.as_str()))
        })
        .await?
        > 0)
}

/// When and from where something happened to an account, for a security notice.
pub fn security_data(ip: Option<&str>) -> Value {
    json!({
        "at": Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        "ip": ip,
    })
}

fn payment_moved<'a>(
    txn: &'a TenantTxn,
    p: &'a payment::Model,
    _from: Option<PaymentStatus>,
) -> futures_util::future::BoxFuture<'a, Result<()>> {
    Box::pin(tell_payee(txn, p))
}

/// A payment to a user of the tenant moved: its payee is told (SENT, SETTLED, FAILED).
async fn tell_payee(txn: &TenantTxn, p: &payment::Model) -> Result<()> {
    let Some(payee) = p.payee_id else {
        return Ok(());
    };
    let kind = match p.status {
        PaymentStatus::Sent => NoticeKind::PaymentSent,
        PaymentStatus::Settled => NoticeKind::PaymentSettled,
        PaymentStatus::Failed => NoticeKind::PaymentFailed,
        PaymentStatus::Pending => return Ok(()),
    };
    let amount = Currency::parse(&p.currency)
        .map(|c| {
            Money::from_minor(p.amount_minor, c)
                .to_decimal()
                .to_string()
        })
        .unwrap_or_else(|_| p.amount_minor.to_string());
    enqueue(
        txn,
        payee,
        kind,
        json!({
            "amount": amount,
            "currency": p.currency,
            "payment_id": ids::encode(Kind::Payment, p.id),
            "reason": p.failure_reason.as_deref().unwrap_or("refused"),
        }),
    )
    .await
}

inventory::submit! {
    crate::hooks::PaymentMoved { name: "notify", run: payment_moved }
}

fn payment_disputed<'a>(
    txn: &'a TenantTxn,
    p: &'a payment::Model,
    what: crate::payments::Dispute,
    reason: Option<&'a str>,
) -> futures_util::future::BoxFuture<'a, Result<()>> {
    Box::pin(tell_of_dispute(txn, p, what, reason))
}

/// The PSP opened or closed a dispute on a payment: its payer and its payee (users of
/// the tenant) are told.
async fn tell_of_dispute(
    txn: &TenantTxn,
    p: &payment::Model,
    what: crate::payments::Dispute,
    reason: Option<&str>,
) -> Result<()> {
    let payer = crate::payments::parties(txn, p).await?.payer;
    let mut told: Vec<Uuid> = payer.into_iter().chain(p.payee_id).collect();
    told.dedup();
    for user in told {
        enqueue(
            txn,
            user,
            NoticeKind::PaymentDisputed,
            json!({
                "amount": amount(p.amount_minor, &p.currency),
                "currency": p.currency,
                "payment_id": ids::encode(Kind::Payment, p.id),
                "outcome": what.as_str(),
                "reason": reason.unwrap_or("no reason given"),
            }),
        )
        .await?;
    }
    Ok(())
}

inventory::submit! {
    crate::hooks::PaymentDisputed { name: "notify", run: payment_disputed }
}
