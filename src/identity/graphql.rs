//! GraphQL for sign-in and sessions. Resolvers authorize, call a rule, map.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::{
    api_keys,
    mfa::{self, SecondFactor},
    rules::{self, IssuedSession, SignInOutcome},
};
use crate::kinds::AuditAction;
use crate::{
    audit::{self, Actor},
    auth::{Role, Scope},
    entity::{session, user},
    error::Error,
    graphql::{
        access,
        connection::{ListOrder, Page, PageArgs, paginate},
        context::ContextExt,
    },
    ids::{self, Kind},
};

/// A password sign-in.
#[derive(InputObject)]
pub struct SignInInput {
    /// The tenant's slug.
    pub tenant: String,
    /// The user's email.
    pub email: String,
    /// The user's password.
    #[graphql(secret)]
    pub password: String,
}

/// Who asks for a password reset.
#[derive(InputObject)]
pub struct RequestPasswordResetInput {
    /// The tenant's slug.
    pub tenant: String,
    /// The account's email; a reset token is mailed there if it names an active user.
    pub email: String,
}

/// The answer to `requestPasswordReset`: the same whatever the address.
#[derive(SimpleObject)]
pub struct RequestPasswordResetPayload {
    /// Always true: the request was taken. Whether a mail goes out (only to an active
    /// account, a few per hour at most) is not told.
    pub accepted: bool,
}

/// A new password, with the token a reset mail carried.
#[derive(InputObject)]
pub struct ResetPasswordInput {
    /// The token from the reset mail (single use, valid for 30 minutes by default).
    #[graphql(secret)]
    pub token: String,
    /// The new password: at least 12 characters, not a common one.
    #[graphql(secret)]
    pub new_password: String,
}

/// The answer to `resetPassword`.
#[derive(SimpleObject)]
pub struct ResetPasswordPayload {
    /// How many sessions the reset signed out (all of the account's).
    pub sessions_ended: i32,
}

/// A token a verification mail carried.
#[derive(InputObject)]
pub struct MailedTokenInput {
    /// The token from the mail (single use).
    #[graphql(secret)]
    pub token: String,
}

/// The answer to `verifyEmail` and `confirmEmailChange`.
#[derive(SimpleObject)]
pub struct EmailConfirmedPayload {
    /// Always true (a bad token is an error).
    pub confirmed: bool,
}

/// Spends a mailed address token (one credential attempt) for what it confirms.
async fn confirm_mailed(
    ctx: &Context<'_>,
    input: MailedTokenInput,
    what: super::email::Confirm,
) -> async_graphql::Result<EmailConfirmedPayload> {
    ctx.take_credential_attempt()?;
    let services = ctx.services()?;
    super::email::confirm(
        &services.db,
        Some(services.bus.clone()),
        &ctx.request().origin,
        SecretString::from(input.token),
        what,
    )
    .await?;
    Ok(EmailConfirmedPayload { confirmed: true })
}

/// A new address for the signed-in user.
#[derive(InputObject)]
pub struct ChangeEmailInput {
    /// The address to move to; it takes effect once confirmed from it.
    pub new_email: String,
    /// Your password now.
    #[graphql(secret)]
    pub password: String,
}

/// The answer to `changeEmail`.
#[derive(SimpleObject)]
pub struct ChangeEmailPayload {
    /// Always true: a confirmation went to the new address, a notice to the old one.
    pub confirmation_sent: bool,
}

/// A refresh token to trade for new tokens.
#[derive(InputObject)]
pub struct RefreshSessionInput {
    /// The refresh token from the last sign-in or refresh (single use).
    #[graphql(secret)]
    pub refresh_token: String,
}

/// Tokens of a session: a short-lived access token (send it as
/// `Authorization: Bearer …`) and a single-use refresh token.
#[derive(SimpleObject)]
pub struct SessionPayload {
    /// Send as `Authorization: Bearer …`; valid until `expiresAt`.
    pub access_token: String,
    /// Use once with `refreshSession`; a reused one revokes the session.
    pub refresh_token: String,
    /// When the access token expires.
    pub expires_at: DateTime<Utc>,
}

/// The answer to `signIn`: tokens, or, for a user with MFA, only `mfaChallenge` to
/// complete with `verifyMfa`.
#[derive(SimpleObject, Default)]
pub struct SignInPayload {
    /// Send as `Authorization: Bearer …`; absent while a second factor is needed.
    pub access_token: Option<String>,
    /// Trade for new tokens with `refreshSession` (single use); absent while a second factor is needed.
    pub refresh_token: Option<String>,
    /// When the access token expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Present when a second factor is needed; valid for 5 minutes, once.
    pub mfa_challenge: Option<String>,
}

impl From<SignInOutcome> for SignInPayload {
    fn from(outcome: SignInOutcome) -> Self {
        match outcome {
            SignInOutcome::Signed(issued) => {
                let tokens = SessionPayload::from(issued);
                Self {
                    access_token: Some(tokens.access_token),
                    refresh_token: Some(tokens.refresh_token),
                    expires_at: Some(tokens.expires_at),
                    mfa_challenge: None,
                }
            }
            SignInOutcome::MfaRequired(challenge) => Self {
                mfa_challenge: Some(challenge.expose_secret().to_owned()),
                ..Self::default()
            },
        }
    }
}

/// The second step of a sign-in with MFA.
#[derive(InputObject)]
pub struct VerifyMfaInput {
    /// The `mfaChallenge` from `signIn`.
    #[graphql(secret)]
    pub challenge: String,
    /// A current TOTP code; or else
    #[graphql(secret)]
    pub code: Option<String>,
    /// one of the single-use recovery codes.
    #[graphql(secret)]
    pub recovery_code: Option<String>,
}

/// A started TOTP enrolment: add it to an authenticator app, then `activateMfa`.
#[derive(SimpleObject)]
pub struct EnrollMfaPayload {
    /// The seed in base32, for manual entry.
    pub secret: String,
    /// `otpauth://totp/…`
    pub otpauth_uri: String,
    /// The URI as a QR code: an SVG data URL.
    pub qr_code: String,
}

/// A first code to activate an enrolment with.
#[derive(InputObject)]
pub struct ActivateMfaInput {
    /// A current code of the authenticator the enrolment was added to.
    #[graphql(secret)]
    pub code: String,
}

/// What turning MFA off needs.
#[derive(InputObject)]
pub struct DisableMfaInput {
    /// Your password.
    #[graphql(secret)]
    pub password: String,
    /// A current authenticator code.
    #[graphql(secret)]
    pub code: String,
}

/// What `disableMfa` did.
#[derive(SimpleObject)]
pub struct DisableMfaPayload {
    /// Whether MFA is on for you now (false).
    pub mfa_enabled: bool,
}

/// A step-up's code.
#[derive(InputObject)]
pub struct VerifyStepUpInput {
    /// A current authenticator code.
    #[graphql(secret)]
    pub code: String,
}

/// What `verifyStepUp` did.
#[derive(SimpleObject)]
pub struct VerifyStepUpPayload {
    /// When this session was verified: sensitive mutations are allowed for a while
    /// after it.
    pub verified_at: DateTime<Utc>,
}

/// Single-use recovery codes, shown once.
#[derive(SimpleObject)]
pub struct RecoveryCodesPayload {
    /// Ten single-use codes that stand in for an authenticator code: shown once, keep them safe.
    pub codes: Vec<String>,
}

fn reveal(codes: Vec<SecretString>) -> RecoveryCodesPayload {
    RecoveryCodesPayload {
        codes: codes.iter().map(|c| c.expose_secret().to_owned()).collect(),
    }
}

impl From<IssuedSession> for SessionPayload {
    fn from(issued: IssuedSession) -> Self {
        Self {
            access_token: issued.access.token,
            refresh_token: issued.refresh_token.expose_secret().to_owned(),
            expires_at: issued.access.expires_at,
        }
    }
}

/// A signed-in session of the caller.
pub struct SessionNode {
    pub model: session::Model,
    pub current: bool,
}

/// A signed-in device or browser of yours.
#[Object(name = "Session")]
impl SessionNode {
    /// The session's global id (for `revokeSession`).
    pub async fn id(&self) -> ID {
        ID(ids::encode(Kind::Session, self.model.id))
    }

    /// When it was signed in.
    async fn created_at(&self) -> DateTime<Utc> {
        self.model.created_at
    }

    /// When it last refreshed its tokens.
    async fn last_seen_at(&self) -> DateTime<Utc> {
        self.model.last_seen_at
    }

    /// The absolute end of the session.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.model.expires_at
    }

    /// The address it was opened from.
    async fn ip(&self) -> Option<&str> {
        self.model.ip.as_deref()
    }

    /// True for the session of this request.
    async fn current(&self) -> bool {
        self.current
    }
}

#[derive(Default)]
pub struct IdentityQuery;

#[Object(guard = "access::Guard(access::Root::Query)")]
impl IdentityQuery {
    /// Whether the caller has MFA enabled.
    #[graphql(visible = "access::visible::mfa_enabled")]
    async fn mfa_enabled(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let me = ctx.user_may_enrol()?;
        Ok(mfa::is_enabled(ctx.tenant_db()?, me.user_id).await?)
    }

    /// Roles whose users must have MFA in this tenant.
    #[graphql(visible = "access::visible::mfa_required_roles")]
    async fn mfa_required_roles(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Role>> {
        Ok(mfa::required_roles(ctx.tenant_db()?).await?)
    }

    /// The caller's live sessions, newest first.
    #[graphql(visible = "access::visible::my_sessions")]
    async fn my_sessions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SessionNode>> {
        let me = ctx.user()?;
        let sessions = rules::live_sessions(ctx.tenant_db()?, me.user_id).await?;
        Ok(sessions
            .into_iter()
            .map(|model| SessionNode {
                current: me.session().ok() == Some(model.id),
                model,
            })
            .collect())
    }
}

#[derive(Default)]
pub struct IdentityMutation;

#[Object(guard = "access::Guard(access::Root::Mutation)")]
impl IdentityMutation {
    /// Signs in with a password. Any failure answers UNAUTHENTICATED "invalid
    /// credentials"; repeated failures lock the account for a growing time
    /// (RATE_LIMITED with `retryAfter`). One attempt per request: an aliased second
    /// one is refused.
    async fn sign_in(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The tenant, email and password.")] input: SignInInput,
    ) -> async_graphql::Result<SignInPayload> {
        ctx.take_credential_attempt()?;
        let services = ctx.services()?;
        let issued = rules::sign_in(
            &services.db,
            Some(services.bus.clone()),
            &services.tokens,
            &ctx.request().origin,
            &input.tenant,
            &input.email,
            SecretString::from(input.password),
        )
        .await?;
        Ok(issued.into())
    }

    /// Asks for a password reset mail. Answers the same, at once, for any tenant and
    /// address (nothing tells whether an account exists); an active account gets a
    /// single-use token by mail, a few per hour at most. RATE_LIMITED when one address
    /// asks too often.
    async fn request_password_reset(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The tenant and the account's email.")] input: RequestPasswordResetInput,
    ) -> async_graphql::Result<RequestPasswordResetPayload> {
        ctx.take_credential_attempt()?;
        let services = ctx.services()?;
        let key = format!(
            "{}\n{}",
            input.tenant.trim().to_lowercase(),
            input.email.trim().to_lowercase()
        );
        if services.reset_limiter.len() > 100_000 {
            services.reset_limiter.retain_recent();
        }
        services
            .reset_limiter
            .check_key(&key)
            .map_err(|not_until| {
                let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
                Error::RateLimited {
                    retry_after_secs: not_until.wait_time_from(now).as_secs().max(1),
                }
            })?;
        // The work happens after the answer: its time tells nothing either.
        let (db, bus, mail) = (
            services.db.clone(),
            services.bus.clone(),
            services.mail.clone(),
        );
        let origin = ctx.request().origin.clone();
        tokio::spawn(async move {
            let asked =
                super::reset::request(&db, Some(bus), &mail, &origin, &input.tenant, &input.email)
                    .await;
            if let Err(err) = asked {
                tracing::error!(error = ?err, "password reset request failed");
            }
        });
        Ok(RequestPasswordResetPayload { accepted: true })
    }

    /// Sets a new password with the token of a reset mail. Every session of the
    /// account is signed out and the owner is told by mail. BAD_USER_INPUT (field
    /// `token`) for a token that is unknown, used or expired; the password policy as
    /// for `changePassword`.
    async fn reset_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The mailed token and the new password.")] input: ResetPasswordInput,
    ) -> async_graphql::Result<ResetPasswordPayload> {
        ctx.take_credential_attempt()?;
        let services = ctx.services()?;
        let ended = super::reset::reset(
            &services.db,
            Some(services.bus.clone()),
            &ctx.request().origin,
            SecretString::from(input.token),
            SecretString::from(input.new_password),
        )
        .await?;
        Ok(ResetPasswordPayload {
            sessions_ended: i32::try_from(ended).unwrap_or(i32::MAX),
        })
    }

    /// Confirms the address a verification mail went to. BAD_USER_INPUT (field
    /// `token`) for a token that is unknown, used, expired, or for an address that is
    /// no longer the user's.
    async fn verify_email(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The token from the verification mail.")] input: MailedTokenInput,
    ) -> async_graphql::Result<EmailConfirmedPayload> {
        confirm_mailed(ctx, input, super::email::Confirm::Verification).await
    }

    /// Asks to move your address (password and a recent step-up): a confirmation
    /// token goes to the new address, a notice to the old one; nothing changes until
    /// `confirmEmailChange`. CONFLICT `EMAIL_TAKEN` when another user has it.
    #[graphql(visible = "access::visible::change_email")]
    async fn change_email(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new address and your password.")] input: ChangeEmailInput,
    ) -> async_graphql::Result<ChangeEmailPayload> {
        ctx.take_credential_attempt()?;
        let me = ctx.user()?;
        let db = ctx.tenant_db()?;
        let services = ctx.services()?;
        let origin = &ctx.request().origin;
        let new = crate::domain::Email::parse(&input.new_email)
            .map_err(|_| Error::bad_field("newEmail", "is not a valid email address"))?;
        let who = db.get::<user::Entity>(me.user_id).await?;
        rules::confirm_password(
            db,
            services.tokens.lockout(),
            &who,
            origin,
            SecretString::from(input.password),
            "change_email",
        )
        .await?;
        super::email::request_change(db, &services.mail, origin, who.id, &new).await?;
        Ok(ChangeEmailPayload {
            confirmation_sent: true,
        })
    }

    /// Switches the address to the one a change confirmation mail went to (which is
    /// then verified). BAD_USER_INPUT (field `token`) for a bad token; CONFLICT
    /// `EMAIL_TAKEN` when another user took the address meanwhile.
    async fn confirm_email_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The token from the confirmation mail.")] input: MailedTokenInput,
    ) -> async_graphql::Result<EmailConfirmedPayload> {
        confirm_mailed(ctx, input, super::email::Confirm::Change).await
    }

    /// Exchanges a refresh token for new tokens. Each refresh token works once.
    async fn refresh_session(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The refresh token from the last sign-in or refresh.")]
        input: RefreshSessionInput,
    ) -> async_graphql::Result<SessionPayload> {
        ctx.take_credential_attempt()?;
        let services = ctx.services()?;
        let issued = rules::refresh(
            &services.db,
            &services.tokens,
            &ctx.request().origin,
            SecretString::from(input.refresh_token),
        )
        .await?;
        Ok(issued.into())
    }

    /// Completes a sign-in with MFA: the challenge plus a TOTP code or a recovery code.
    async fn verify_mfa(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The challenge from signIn and a code (or a recovery code).")]
        input: VerifyMfaInput,
    ) -> async_graphql::Result<SessionPayload> {
        ctx.take_credential_attempt()?;
        let factor = match (input.code, input.recovery_code) {
            (Some(code), None) => SecondFactor::Code(code),
            (None, Some(code)) => SecondFactor::RecoveryCode(code),
            _ => return Err(Error::bad_input("give either `code` or `recoveryCode`").into()),
        };
        let services = ctx.services()?;
        let issued = mfa::complete_challenge(
            &services.db,
            Some(services.bus.clone()),
            &services.tokens,
            &services.sealer,
            &ctx.request().origin,
            SecretString::from(input.challenge),
            factor,
        )
        .await?;
        Ok(issued.into())
    }

    /// Starts a TOTP enrolment (allowed even while the tenant's policy blocks all else).
    #[graphql(visible = "access::visible::enroll_mfa")]
    async fn enroll_mfa(&self, ctx: &Context<'_>) -> async_graphql::Result<EnrollMfaPayload> {
        let me = ctx.user_may_enrol()?;
        let db = ctx.tenant_db()?;
        let who = db.get::<user::Entity>(me.user_id).await?;
        let enrolment = mfa::start_enrolment(db, &ctx.services()?.sealer, &who).await?;
        Ok(EnrollMfaPayload {
            secret: enrolment.secret_base32.expose_secret().to_owned(),
            otpauth_uri: enrolment.otpauth_uri.expose_secret().to_owned(),
            qr_code: enrolment.qr_code.expose_secret().to_owned(),
        })
    }

    /// Activates the enrolment with a first code; returns ten recovery codes, once.
    #[graphql(visible = "access::visible::activate_mfa")]
    async fn activate_mfa(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A first code.")] input: ActivateMfaInput,
    ) -> async_graphql::Result<RecoveryCodesPayload> {
        let ActivateMfaInput { code } = input;
        ctx.take_credential_attempt()?;
        let me = ctx.user_may_enrol()?;
        let counter = ctx.tenant_db()?;
        let services = ctx.services()?;
        let origin = &ctx.request().origin;
        let who = counter.get::<user::Entity>(me.user_id).await?;
        // The code check is counted before it is made, outside the transaction that
        // activates (so a refusal cannot roll the count back).
        mfa::ensure_enrolling(counter, who.id).await?;
        let lockout = services.tokens.lockout();
        rules::reserve_attempt(counter, lockout, who.id, rules::FailureKind::Totp).await?;
        let db = counter.begin().await?;
        let Some(codes) = mfa::activate(&db, &services.sealer, &who, &code, origin).await? else {
            db.rollback().await?;
            rules::audit_failed_check(
                counter,
                who.id,
                origin,
                AuditAction::AuthMfaFailed,
                "activate_mfa",
            )
            .await?;
            return Err(
                Error::bad_field("code", "the code is not valid for this enrolment").into(),
            );
        };
        mfa::mark_session_verified(&db, me.session()?).await?;
        db.commit().await?;
        rules::clear_failures(counter, who.id, rules::FailureKind::Totp).await?;
        Ok(reveal(codes))
    }

    /// Turns MFA off; needs the password and a current code.
    #[graphql(visible = "access::visible::disable_mfa")]
    async fn disable_mfa(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Your password and a current code.")] input: DisableMfaInput,
    ) -> async_graphql::Result<DisableMfaPayload> {
        let DisableMfaInput { password, code } = input;
        ctx.take_credential_attempt()?;
        let me = ctx.user()?;
        let db = ctx.tenant_db()?;
        let services = ctx.services()?;
        let origin = &ctx.request().origin;
        let who = db.get::<user::Entity>(me.user_id).await?;
        rules::confirm_password(
            db,
            services.tokens.lockout(),
            &who,
            origin,
            SecretString::from(password),
            "disable_mfa",
        )
        .await?;
        mfa::verify_code(
            db,
            services.tokens.lockout(),
            &services.sealer,
            &who,
            &code,
            origin,
            "disable_mfa",
        )
        .await?;
        let txn = db.begin().await?;
        mfa::disable(&txn, who.id, &ctx.request().origin).await?;
        txn.commit().await?;
        Ok(DisableMfaPayload { mfa_enabled: false })
    }

    /// Replaces the recovery codes (step-up required).
    #[graphql(visible = "access::visible::regenerate_recovery_codes")]
    async fn regenerate_recovery_codes(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<RecoveryCodesPayload> {
        let me = ctx.user()?;
        let db = ctx.tenant_db()?.begin().await?;
        if !mfa::is_enabled(&db, me.user_id).await? {
            return Err(Error::conflict("MFA_NOT_ENABLED", "MFA is not enabled").into());
        }
        let codes = mfa::replace_recovery_codes(&db, me.user_id).await?;
        audit::record(
            &db,
            audit::Entry {
                actor: Actor::User(me.user_id),
                action: AuditAction::AuthMfaRecoveryCodesRegenerated,
                subject: Some(("user", me.user_id)),
                details: json!({}),
                origin: &ctx.request().origin,
            },
        )
        .await?;
        db.commit().await?;
        Ok(reveal(codes))
    }

    /// Step-up: a current TOTP code marks this session as recently verified, which
    /// sensitive mutations require. Returns the time of the verification.
    #[graphql(visible = "access::visible::verify_step_up")]
    async fn verify_step_up(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A current authenticator code.")] input: VerifyStepUpInput,
    ) -> async_graphql::Result<VerifyStepUpPayload> {
        let VerifyStepUpInput { code } = input;
        ctx.take_credential_attempt()?;
        let me = ctx.user()?;
        let db = ctx.tenant_db()?;
        let who = db.get::<user::Entity>(me.user_id).await?;
        let services = ctx.services()?;
        mfa::verify_code(
            db,
            services.tokens.lockout(),
            &services.sealer,
            &who,
            &code,
            &ctx.request().origin,
            "step_up",
        )
        .await?;
        mfa::mark_session_verified(db, me.session()?).await?;
        Ok(VerifyStepUpPayload {
            verified_at: Utc::now(),
        })
    }

    /// Sets the roles whose users must have MFA in this tenant (step-up required).
    #[graphql(visible = "access::visible::set_mfa_required_roles")]
    async fn set_mfa_required_roles(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The roles that must enrol.")] input: SetMfaRequiredRolesInput,
    ) -> async_graphql::Result<SetMfaRequiredRolesPayload> {
        let me = ctx.user()?;
        let db = ctx.tenant_db()?.begin().await?;
        mfa::set_required_roles(&db, me.user_id, &input.roles, &ctx.request().origin).await?;
        let roles = mfa::required_roles(&db).await?;
        db.commit().await?;
        Ok(SetMfaRequiredRolesPayload { roles })
    }

    /// Ends the caller's current session.
    #[graphql(visible = "access::visible::sign_out")]
    async fn sign_out(&self, ctx: &Context<'_>) -> async_graphql::Result<SessionEndedPayload> {
        let me = ctx.user_may_enrol()?;
        let session = me.session()?;
        revoke_audited(ctx, session, "SIGN_OUT").await?;
        Ok(SessionEndedPayload {
            session_id: ID(ids::encode(Kind::Session, session)),
        })
    }

    /// Ends one of the caller's sessions. Anyone else's session is NOT_FOUND.
    #[graphql(visible = "access::visible::revoke_session")]
    async fn revoke_session(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The session to end.")] input: RevokeSessionInput,
    ) -> async_graphql::Result<SessionEndedPayload> {
        let me = ctx.user()?;
        let session_id = ids::decode_as(Kind::Session, &input.id)?;
        let session = ctx.tenant_db()?.get::<session::Entity>(session_id).await?;
        if session.user_id != me.user_id {
            return Err(Error::NotFound.into());
        }
        revoke_audited(ctx, session_id, "REVOKED_BY_OWNER").await?;
        Ok(SessionEndedPayload {
            session_id: input.id,
        })
    }

    /// Ends every other session of the caller; returns how many.
    #[graphql(visible = "access::visible::revoke_other_sessions")]
    async fn revoke_other_sessions(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<RevokeOtherSessionsPayload> {
        let me = ctx.user()?;
        let db = ctx.tenant_db()?.begin().await?;
        let count =
            rules::revoke_all_except(&db, me.user_id, Some(me.session()?), "REVOKED_BY_OWNER")
                .await?;
        audit::record(
            &db,
            audit::Entry {
                actor: Actor::User(me.user_id),
                action: AuditAction::AuthSessionsRevokedOthers,
                subject: Some(("user", me.user_id)),
                details: json!({ "count": count }),
                origin: &ctx.request().origin,
            },
        )
        .await?;
        db.commit().await?;
        Ok(RevokeOtherSessionsPayload {
            revoked: i32::try_from(count).unwrap_or(i32::MAX),
        })
    }
}

async fn revoke_audited(
    ctx: &Context<'_>,
    session_id: uuid::Uuid,
    reason: &str,
) -> Result<(), Error> {
    // Also for a user whose MFA enrolment is pending: signing out is allowed then.
    let me = ctx.user_may_enrol()?;
    let db = ctx.tenant_db()?.begin().await?;
    if rules::revoke(&db, session_id, reason).await? {
        audit::record(
            &db,
            audit::Entry {
                actor: Actor::User(me.user_id),
                action: AuditAction::AuthSessionRevoked,
                subject: Some(("session", session_id)),
                details: json!({ "reason": reason }),
                origin: &ctx.request().origin,
            },
        )
        .await?;
    }
    db.commit().await
}

/// An API key of the tenant (never the key itself after creation).
pub struct ApiKeyNode(pub crate::entity::api_key::Model);

/// A key a program authenticates with (`Authorization: Bearer sq_live_…`), holding some of its creator's scopes.
#[Object(name = "ApiKey")]
impl ApiKeyNode {
    /// The key's global id.
    pub async fn id(&self) -> ID {
        ID(ids::encode(Kind::ApiKey, self.0.id))
    }

    /// What the key is for, as its creator named it.
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// The first characters of the key, to recognise it.
    async fn prefix(&self) -> &str {
        &self.0.prefix
    }

    /// What the key may do: at most what its creator could when it was made.
    async fn scopes(&self) -> Vec<Scope> {
        api_keys::scopes_of_key(&self.0).into_iter().collect()
    }

    /// The user who created it.
    #[graphql(deprecation = "Use `creator { userId }`.")]
    async fn created_by(&self) -> ID {
        ID(ids::encode(Kind::User, self.0.created_by))
    }

    /// The user who created it (the key acts with some of their scopes).
    async fn creator(
        &self,
        ctx: &Context<'_>,
    ) -> crate::error::Result<crate::accounts::graphql::PartyNode> {
        crate::accounts::graphql::party(ctx, self.0.created_by).await
    }

    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// When it stops working by itself; none: never.
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at
    }

    /// Updated at most once a minute.
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at
    }

    /// When it was revoked; none: still valid.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }
}

/// A new API key.
#[derive(InputObject)]
pub struct CreateApiKeyInput {
    /// What the key is for.
    pub name: String,
    /// At most the scopes the creator holds.
    pub scopes: Vec<Scope>,
    /// When it should stop working; none: never (revoke it then).
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new key: `key` is shown this once and never again.
#[derive(SimpleObject)]
pub struct CreateApiKeyPayload {
    /// The key's record (without the secret).
    pub api_key: ApiKeyNode,
    /// Send as `Authorization: Bearer sq_live_…`.
    pub key: String,
}

#[derive(Default)]
pub struct ApiKeysQuery;

#[Object(guard = "access::Guard(access::Root::Query)")]
impl ApiKeysQuery {
    /// The tenant's API keys, oldest first.
    #[graphql(visible = "access::visible::api_keys")]
    async fn api_keys(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A cursor from an earlier page: the items after it.")] after: Option<
            String,
        >,
        #[graphql(desc = "A cursor from an earlier page: the items before it.")] before: Option<
            String,
        >,
        #[graphql(
            desc = "At most this many items from the start (or after `after`); at most SEQUESTRA_GRAPHQL_MAX_PAGE_SIZE (100)."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "At most this many items from the end (or before `before`); at most SEQUESTRA_GRAPHQL_MAX_PAGE_SIZE (100)."
        )]
        last: Option<i32>,
        #[graphql(desc = "Oldest first (the default) or newest first.")] order_by: Option<
            ListOrder,
        >,
    ) -> async_graphql::Result<Page<ApiKeyNode>> {
        paginate::<crate::entity::api_key::Entity, _>(
            ctx,
            PageArgs {
                after,
                before,
                first,
                last,
                order: order_by.unwrap_or_default(),
            },
            |q| q,
            |m| (m.id, ApiKeyNode(m)),
        )
        .await
    }
}

/// An API key to revoke.
#[derive(InputObject)]
pub struct RevokeApiKeyInput {
    /// The key to revoke: it stops working at once.
    pub id: ID,
}

/// What `revokeApiKey` did.
#[derive(SimpleObject)]
pub struct RevokeApiKeyPayload {
    /// The key, revoked.
    pub api_key: ApiKeyNode,
}

/// The roles whose users must enrol in MFA.
#[derive(InputObject)]
pub struct SetMfaRequiredRolesInput {
    /// The roles whose users must enrol in MFA before anything else; empty: none.
    pub roles: Vec<Role>,
}

/// What `setMfaRequiredRoles` did.
#[derive(SimpleObject)]
pub struct SetMfaRequiredRolesPayload {
    /// The roles that must enrol, from now on.
    pub roles: Vec<Role>,
}

/// A session of yours to end.
#[derive(InputObject)]
pub struct RevokeSessionInput {
    /// One of your sessions (from `mySessions`).
    pub id: ID,
}

/// What a mutation that ends a session did.
#[derive(SimpleObject)]
pub struct SessionEndedPayload {
    /// The session ended (its tokens no longer work).
    pub session_id: ID,
}

/// What `revokeOtherSessions` did.
#[derive(SimpleObject)]
pub struct RevokeOtherSessionsPayload {
    /// How many sessions were ended.
    pub revoked: i32,
}

#[derive(Default)]
pub struct ApiKeysMutation;

#[Object(guard = "access::Guard(access::Root::Mutation)")]
impl ApiKeysMutation {
    /// Creates an API key (needs `keys:admin` and a recent MFA verification).
    #[graphql(visible = "access::visible::create_api_key")]
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The key's name, scopes and expiry.")] input: CreateApiKeyInput,
    ) -> async_graphql::Result<CreateApiKeyPayload> {
        let me = ctx.user()?;
        let services = ctx.services()?;
        let db = ctx.tenant_db()?.begin().await?;
        let created = api_keys::create(
            &db,
            &services.tokens,
            me,
            &input.name,
            &input.scopes,
            input.expires_at,
            &ctx.request().origin,
        )
        .await?;
        db.commit().await?;
        Ok(CreateApiKeyPayload {
            key: api_keys::reveal(&created),
            api_key: ApiKeyNode(created.model),
        })
    }

    /// Revokes an API key of the tenant.
    #[graphql(visible = "access::visible::revoke_api_key")]
    async fn revoke_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The key to revoke.")] input: RevokeApiKeyInput,
    ) -> async_graphql::Result<RevokeApiKeyPayload> {
        let me = ctx.user()?;
        let key_id = ids::decode_as(Kind::ApiKey, &input.id)?;
        let db = ctx.tenant_db()?.begin().await?;
        let revoked = api_keys::revoke(&db, me.user_id, key_id, &ctx.request().origin).await?;
        db.commit().await?;
        Ok(RevokeApiKeyPayload {
            api_key: ApiKeyNode(revoked),
        })
    }
}
