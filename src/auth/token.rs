//! Access tokens: short-lived JWTs, HS256 only, with `iss`, `aud`, `exp`, `iat`, `jti`
//! and a `kid` header so signing keys can rotate.

use std::collections::HashMap;

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    config::AuthConfig,
    error::{Error, Result},
    identity::rules::LockoutPolicy,
    ids::TenantId,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: Uuid,
    /// The user's tenant.
    pub tid: Uuid,
    /// The session this token belongs to; revoking it ends the token.
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
}

/// Issues and verifies access tokens.
#[derive(Clone)]
pub struct TokenService {
    signing_kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: chrono::Duration,
    api_key_secret: secrecy::SecretString,
    session_lifetime: chrono::Duration,
    refresh_token_ttl: chrono::Duration,
    lockout: LockoutPolicy,
    /// Principals this process authenticated recently (`auth::cache`).
    principals: std::sync::Arc<super::cache::PrincipalCache>,
}

/// What an issued token is, for the response that carries it.
pub struct IssuedToken {
    pub token: String,
    pub expires_at: chrono::DateTime<Utc>,
    pub jti: Uuid,
}

impl TokenService {
    pub fn new(cfg: &AuthConfig) -> Self {
        let key_bytes = |s: &secrecy::SecretString| s.expose_secret().as_bytes().to_vec();
        let mut decoding = HashMap::new();
        decoding.insert(
            cfg.jwt_signing_key.kid.clone(),
            DecodingKey::from_secret(&key_bytes(&cfg.jwt_signing_key.secret)),
        );
        for retired in &cfg.jwt_retired_keys {
            decoding.insert(
                retired.kid.clone(),
                DecodingKey::from_secret(&key_bytes(&retired.secret)),
            );
        }
        // Only HS256 is ever accepted: no `none`, no algorithm confusion.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&cfg.jwt_issuer]);
        validation.set_audience(&[&cfg.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub", "sid"]);
        validation.leeway = 30;
        Self {
            signing_kid: cfg.jwt_signing_key.kid.clone(),
            encoding: EncodingKey::from_secret(&key_bytes(&cfg.jwt_signing_key.secret)),
            decoding,
            validation,
            issuer: cfg.jwt_issuer.clone(),
            audience: cfg.jwt_audience.clone(),
            ttl: chrono::Duration::from_std(cfg.access_token_ttl)
                .unwrap_or_else(|_| chrono::Duration::minutes(15)),
            api_key_secret: cfg.api_key_secret.clone(),
            session_lifetime: chrono::Duration::from_std(cfg.session_lifetime)
                .unwrap_or_else(|_| chrono::Duration::days(30)),
            refresh_token_ttl: chrono::Duration::from_std(cfg.refresh_token_ttl)
                .unwrap_or_else(|_| chrono::Duration::days(7)),
            lockout: cfg.lockout,
            principals: super::cache::PrincipalCache::new(cfg.principal_cache_ttl),
        }
    }

    /// Principals authenticated recently, reused until a change drops them.
    pub fn principals(&self) -> &super::cache::PrincipalCache {
        &self.principals
    }

    /// How long a session lives at most, however often it is refreshed.
    pub fn session_lifetime(&self) -> chrono::Duration {
        self.session_lifetime
    }

    /// How long a refresh token lives from its issue (inside the session's lifetime).
    pub fn refresh_token_ttl(&self) -> chrono::Duration {
        self.refresh_token_ttl
    }

    /// When repeated credential failures lock an account.
    pub fn lockout(&self) -> &LockoutPolicy {
        &self.lockout
    }

    /// Signs an access token for `user` of `tenant` in `session` with the current key.
    pub fn issue(&self, tenant: TenantId, user: Uuid, session: Uuid) -> Result<IssuedToken> {
        let now = Utc::now();
        let expires_at = now + self.ttl;
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user,
            tid: tenant.as_uuid(),
            sid: session,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            jti: Uuid::now_v7(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing_kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(Error::internal)?;
        Ok(IssuedToken {
            token,
            expires_at,
            jti: claims.jti,
        })
    }

    /// The keyed hash (HMAC-SHA256) an API key is stored and looked up by: a leaked
    /// table alone does not let anyone check guesses.
    pub fn api_key_hash(&self, key: &str) -> String {
        use hmac::{Mac, digest::KeyInit};
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(
            self.api_key_secret.expose_secret().as_bytes(),
        )
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(key.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Verifies signature, algorithm, `kid`, issuer, audience and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::Unauthenticated)?;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.decoding.get(kid))
            .ok_or(Error::Unauthenticated)?;
        jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| Error::Unauthenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn service(vars: &[(&str, &str)]) -> TokenService {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cfg = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
        TokenService::new(&cfg.auth)
    }

    #[test]
    fn issues_and_verifies_and_rotates() {
        let old = service(&[
            ("SEQUESTRA_JWT_SECRET", "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7"),
            ("SEQUESTRA_JWT_KID", "k1"),
        ]);
        let rotated = service(&[
            ("SEQUESTRA_JWT_SECRET", "f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3"),
            ("SEQUESTRA_JWT_KID", "k2"),
            (
                "SEQUESTRA_JWT_RETIRED_KEYS",
                "k1:a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7",
            ),
        ]);
        let tenant = TenantId::from_uuid(Uuid::now_v7());
        let user = Uuid::now_v7();
        let issued = old.issue(tenant, user, Uuid::now_v7()).unwrap();
        assert_eq!(old.verify(&issued.token).unwrap().sub, user);
        // A token from the retired key still verifies after rotation.
        assert_eq!(rotated.verify(&issued.token).unwrap().tid, tenant.as_uuid());
        // A token from the new key does not verify where that key is unknown.
        let fresh = rotated.issue(tenant, user, Uuid::now_v7()).unwrap();
        assert!(old.verify(&fresh.token).is_err());
    }

    #[test]
    fn refuses_tampered_and_unsigned_tokens() {
        let svc = service(&[("SEQUESTRA_JWT_SECRET", "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7")]);
        let issued = svc
            .issue(
                TenantId::from_uuid(Uuid::now_v7()),
                Uuid::now_v7(),
                Uuid::now_v7(),
            )
            .unwrap();
        let mut parts: Vec<&str> = issued.token.split('.').collect();
        let forged_sig = "AAAA";
        parts[2] = forged_sig;
        assert!(svc.verify(&parts.join(".")).is_err());
        // alg=none with the same claims
        let none_header = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"alg":"none","typ":"JWT","kid":"primary"}"#,
        );
        let unsigned = format!("{none_header}.{}.", issued.token.split('.').nth(1).unwrap());
        assert!(svc.verify(&unsigned).is_err());
    }
}
