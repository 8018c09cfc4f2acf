//! GraphQL for sign-in and sessions. Resolvers authorize, call a rule, map.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::rules::{self, IssuedSession};
use crate::{
    audit::{self, Actor},
    entity::session,
    error::Error,
    graphql::{
        context::{ContextExt, Services},
        guards::Authenticated,
    },
    ids::{self, Kind},
};

#[derive(InputObject)]
pub struct SignInInput {
    /// The tenant's slug.
    pub tenant: String,
    pub email: String,
    #[graphql(secret)]
    pub password: String,
}

#[derive(InputObject)]
pub struct RefreshSessionInput {
    #[graphql(secret)]
    pub refresh_token: String,
}

/// Tokens of a session: a short-lived access token (send it as
/// `Authorization: Bearer …`) and a single-use refresh token.
#[derive(SimpleObject)]
pub struct SessionTokens {
    pub access_token: String,
    /// Use once with `refreshSession`; a reused one revokes the session.
    pub refresh_token: String,
    /// When the access token expires.
    pub expires_at: DateTime<Utc>,
}

impl From<IssuedSession> for SessionTokens {
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

#[Object(name = "Session")]
impl SessionNode {
    pub async fn id(&self) -> ID {
        ID(ids::encode(Kind::Session, self.model.id))
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.model.created_at
    }

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

#[Object]
impl IdentityQuery {
    /// The caller's live sessions, newest first.
    #[graphql(guard = "Authenticated")]
    async fn my_sessions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SessionNode>> {
        let me = ctx.user()?;
        let sessions = rules::live_sessions(ctx.tenant_db()?, me.user_id).await?;
        Ok(sessions
            .into_iter()
            .map(|model| SessionNode {
                current: model.id == me.session_id,
                model,
            })
            .collect())
    }
}

#[derive(Default)]
pub struct IdentityMutation;

#[Object]
impl IdentityMutation {
    /// Signs in with a password. Any failure answers UNAUTHENTICATED "invalid
    /// credentials"; repeated failures lock the account for a growing time
    /// (RATE_LIMITED with `retryAfter`). One attempt per request: an aliased second
    /// one is refused.
    async fn sign_in(
        &self,
        ctx: &Context<'_>,
        input: SignInInput,
    ) -> async_graphql::Result<SessionTokens> {
        ctx.request().take_credential_attempt()?;
        let services = ctx.data::<Services>()?;
        let issued = rules::sign_in(
            &services.db,
            &services.tokens,
            &ctx.request().origin,
            &input.tenant,
            &input.email,
            SecretString::from(input.password),
        )
        .await?;
        Ok(issued.into())
    }

    /// Exchanges a refresh token for new tokens. Each refresh token works once.
    async fn refresh_session(
        &self,
        ctx: &Context<'_>,
        input: RefreshSessionInput,
    ) -> async_graphql::Result<SessionTokens> {
        ctx.request().take_credential_attempt()?;
        let services = ctx.data::<Services>()?;
        let issued = rules::refresh(
            &services.db,
            &services.tokens,
            &ctx.request().origin,
            SecretString::from(input.refresh_token),
        )
        .await?;
        Ok(issued.into())
    }

    /// Ends the caller's current session.
    #[graphql(guard = "Authenticated")]
    async fn sign_out(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let me = ctx.user()?;
        revoke_audited(ctx, me.session_id, "SIGN_OUT").await?;
        Ok(true)
    }

    /// Ends one of the caller's sessions. Anyone else's session is NOT_FOUND.
    #[graphql(guard = "Authenticated")]
    async fn revoke_session(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let me = ctx.user()?;
        let session_id = ids::decode_as(Kind::Session, &id).ok_or(Error::NotFound)?;
        let session = ctx.tenant_db()?.get::<session::Entity>(session_id).await?;
        if session.user_id != me.user_id {
            return Err(Error::NotFound.into());
        }
        revoke_audited(ctx, session_id, "REVOKED_BY_OWNER").await?;
        Ok(true)
    }

    /// Ends every other session of the caller; returns how many.
    #[graphql(guard = "Authenticated")]
    async fn revoke_other_sessions(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let me = ctx.user()?;
        let db = ctx.tenant_db()?.begin().await?;
        let count =
            rules::revoke_all_except(&db, me.user_id, Some(me.session_id), "REVOKED_BY_OWNER")
                .await?;
        audit::record(
            &db,
            audit::Entry {
                actor: Actor::User(me.user_id),
                action: "auth.sessions.revoked_others",
                subject: Some(("user", me.user_id)),
                details: json!({ "count": count }),
                origin: &ctx.request().origin,
            },
        )
        .await?;
        db.commit().await?;
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }
}

async fn revoke_audited(
    ctx: &Context<'_>,
    session_id: uuid::Uuid,
    reason: &str,
) -> Result<(), Error> {
    let me = ctx.user()?;
    let db = ctx.tenant_db()?.begin().await?;
    if rules::revoke(&db, session_id, reason).await? {
        audit::record(
            &db,
            audit::Entry {
                actor: Actor::User(me.user_id),
                action: "auth.session.revoked",
                subject: Some(("session", session_id)),
                details: json!({ "reason": reason }),
                origin: &ctx.request().origin,
            },
        )
        .await?;
    }
    db.commit().await
}
