//! argon2id password hashing with OWASP parameters, run off the async runtime.

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::SaltString,
};
use rand::{Rng, distr::Alphanumeric};
use secrecy::{ExposeSecret, SecretString};
use std::sync::LazyLock;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// OWASP: m = 19 MiB, t = 2, p = 1.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

fn hasher() -> Argon2<'static> {
    // The parameters are constants within argon2's bounds; `new` cannot fail for them.
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .unwrap_or_else(|_| Params::default());
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// argon2 computations allowed at once: one core is always left for everything else,
/// so a burst of sign-ins waits its turn instead of stalling cheap requests.
static HASHING: LazyLock<Semaphore> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Semaphore::new(cores.saturating_sub(1).max(1))
});

async fn permit() -> Result<tokio::sync::SemaphorePermit<'static>> {
    HASHING.acquire().await.map_err(Error::internal)
}

/// Hashes `password` into a PHC string on the blocking pool.
pub async fn hash(password: SecretString) -> Result<String> {
    let _permit = permit().await?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        hasher()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::internal(anyhow::anyhow!("password hashing failed: {e}")))
    })
    .await
    .map_err(Error::internal)?
}

/// Checks `password` against a stored PHC string on the blocking pool.
pub async fn verify(password: SecretString, phc: String) -> Result<bool> {
    let _permit = permit().await?;
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&phc)
            .map_err(|e| Error::internal(anyhow::anyhow!("stored hash unreadable: {e}")))?;
        Ok(hasher()
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(Error::internal)?
}

/// A hash of a random secret, made once, to verify against when there is no user:
/// an unknown email costs the same time as a wrong password.
static DUMMY_HASH: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// Verifies `password` against the dummy hash and throws the answer away.
pub async fn verify_dummy(password: SecretString) {
    let dummy = DUMMY_HASH
        .get_or_try_init(|| hash(generate()))
        .await
        .cloned()
        .unwrap_or_default();
    let _ = verify(password, dummy).await;
}

/// True when `phc` was made with other parameters than today's (rehash on sign-in).
pub fn needs_rehash(phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => {
            let current = hasher();
            let params = current.params();
            parsed.algorithm != argon2::Algorithm::Argon2id.ident()
                || parsed.params.get_decimal("m") != Some(params.m_cost())
                || parsed.params.get_decimal("t") != Some(params.t_cost())
                || parsed.params.get_decimal("p") != Some(params.p_cost())
        }
        Err(_) => true,
    }
}

/// A random password of 24 alphanumeric characters (about 143 bits), for one-time
/// secrets printed by `bootstrap` and the demo seed. Never a default.
pub fn generate() -> SecretString {
    let value: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    SecretString::from(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let pw = generate();
        let phc = hash(pw.clone()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify(pw, phc.clone()).await.unwrap());
        assert!(
            !verify(SecretString::from("wrong".to_owned()), phc)
                .await
                .unwrap()
        );
    }
}
