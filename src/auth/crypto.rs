//! Encryption at rest for small secrets (TOTP seeds): AES-256-GCM under a key from
//! config, with the key id stored beside the ciphertext so keys can rotate. The
//! associated data binds a ciphertext to its owner: a sealed value copied to another
//! row does not open.

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD as B64};
use rand::RngCore;
use secrecy::ExposeSecret;

use crate::{
    config::EncryptionKey,
    error::{Error, Result},
};

#[derive(Clone)]
pub struct Sealer {
    keys: Vec<EncryptionKey>,
}

const VERSION: &str = "v1";

impl Sealer {
    /// `keys[0]` seals; every key opens. Config guarantees at least one.
    pub fn new(keys: Vec<EncryptionKey>) -> Self {
        Self { keys }
    }

    fn cipher(key: &EncryptionKey) -> Aes256Gcm {
        Aes256Gcm::new(key.key.expose_secret().into())
    }

    /// `v1.<kid>.<nonce>.<ciphertext>` (base64).
    pub fn seal(&self, plaintext: &[u8], owner: &[u8]) -> Result<String> {
        let key = self
            .keys
            .first()
            .ok_or_else(|| Error::internal(anyhow::anyhow!("no encryption key configured")))?;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = Self::cipher(key)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: owner,
                },
            )
            .map_err(|_| Error::internal(anyhow::anyhow!("encryption failed")))?;
        Ok(format!(
            "{VERSION}.{}.{}.{}",
            key.kid,
            B64.encode(nonce),
            B64.encode(ciphertext)
        ))
    }

    pub fn open(&self, sealed: &str, owner: &[u8]) -> Result<Vec<u8>> {
        let broken = || Error::internal(anyhow::anyhow!("a sealed secret cannot be opened"));
        let mut parts = sealed.split('.');
        let (Some(VERSION), Some(kid), Some(nonce), Some(ciphertext), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(broken());
        };
        let key = self.keys.iter().find(|k| k.kid == kid).ok_or_else(broken)?;
        let nonce = B64.decode(nonce).map_err(|_| broken())?;
        if nonce.len() != 12 {
            return Err(broken());
        }
        let ciphertext = B64.decode(ciphertext).map_err(|_| broken())?;
        Self::cipher(key)
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: owner,
                },
            )
            .map_err(|_| broken())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, byte: u8) -> EncryptionKey {
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = byte.wrapping_add(u8::try_from(i).unwrap_or(0));
        }
        EncryptionKey {
            kid: kid.into(),
            key: std::sync::Arc::new(secrecy::SecretBox::new(Box::new(k))),
        }
    }

    #[test]
    fn seals_opens_and_rotates() {
        let old = Sealer::new(vec![key("k1", 1)]);
        let sealed = old.seal(b"seed", b"user-a").unwrap();
        assert!(sealed.starts_with("v1.k1."));
        assert!(!sealed.contains("seed"));
        assert_eq!(old.open(&sealed, b"user-a").unwrap(), b"seed");
        // Bound to its owner.
        assert!(old.open(&sealed, b"user-b").is_err());
        // After rotation the new key seals and the old one still opens.
        let rotated = Sealer::new(vec![key("k2", 7), key("k1", 1)]);
        assert_eq!(rotated.open(&sealed, b"user-a").unwrap(), b"seed");
        assert!(rotated.seal(b"x", b"u").unwrap().starts_with("v1.k2."));
        // Tampering is detected.
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(old.open(&tampered, b"user-a").is_err());
    }
}
