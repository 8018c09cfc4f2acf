//! Where proof files live. A small trait so the local directory (the default) and an
//! object store can stand behind the same calls. Keys are content addresses
//! (`<tenant>/<sha256>`), so writing the same file twice is harmless.

use std::path::PathBuf;

use crate::error::{Error, Result};

#[async_trait::async_trait]
pub trait ProofStore: Send + Sync {
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<()>;
    async fn get(&self, key: &str) -> Result<Vec<u8>>;
}

/// Files in a local directory, written atomically (temporary file, then rename).
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        let safe = !key.is_empty()
            && key
                .split('/')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !safe {
            return Err(Error::internal(anyhow::anyhow!(
                "unsafe storage key {key:?}"
            )));
        }
        Ok(self.root.join(key))
    }
}

#[async_trait::async_trait]
impl ProofStore for LocalDir {
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(Error::internal)?;
        }
        let tmp = path.with_extension(format!("tmp{}", uuid::Uuid::now_v7().simple()));
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(Error::internal)?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(Error::internal)?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        match tokio::fs::read(self.path(key)?).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound),
            Err(e) => Err(Error::internal(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_and_reads_back_and_refuses_odd_keys() {
        let dir = std::env::temp_dir().join(format!("sq-store-{}", uuid::Uuid::now_v7().simple()));
        let store = LocalDir::new(&dir);
        store.put("t1/abc", b"hello").await.unwrap();
        assert_eq!(store.get("t1/abc").await.unwrap(), b"hello");
        assert!(matches!(store.get("t1/zzz").await, Err(Error::NotFound)));
        for bad in ["../x", "a//b", "", "a/./b", "/abs"] {
            assert!(store.put(bad, b"x").await.is_err(), "{bad}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
