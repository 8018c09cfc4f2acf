//! Where proof files live. A small trait so the local directory (the default) and an
//! S3-compatible object store stand behind the same calls. Keys are content
//! addresses (`<tenant>/<sha256>`), so writing the same file twice is harmless.

use std::{path::PathBuf, sync::Arc};

use object_store::{ObjectStore, ObjectStoreExt, PutPayload, aws::AmazonS3Builder, path::Path};
use secrecy::ExposeSecret;

use crate::{
    config::{ProofStorage, S3Config},
    error::{Error, Result},
};

/// The store the configuration names.
pub fn from_config(storage: &ProofStorage) -> anyhow::Result<Arc<dyn ProofStore>> {
    Ok(match storage {
        ProofStorage::Local(dir) => Arc::new(LocalDir::new(dir)),
        ProofStorage::S3(s3) => Arc::new(ObjectStoreProofs::s3(s3)?),
    })
}

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

/// Any `object_store` backend; built for S3 and S3-compatible services.
pub struct ObjectStoreProofs {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl ObjectStoreProofs {
    pub fn s3(cfg: &S3Config) -> anyhow::Result<Self> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region);
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(id) = &cfg.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &cfg.secret_access_key {
            builder = builder.with_secret_access_key(secret.expose_secret());
        }
        Ok(Self {
            store: Arc::new(builder.build()?),
            prefix: cfg.prefix.clone(),
        })
    }

    fn path(&self, key: &str) -> Path {
        Path::from(format!("{}{key}", self.prefix))
    }
}

#[async_trait::async_trait]
impl ProofStore for ObjectStoreProofs {
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.store
            .put(&self.path(key), PutPayload::from(bytes.to_vec()))
            .await
            .map_err(Error::internal)?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>> {
        match self.store.get(&self.path(key)).await {
            Ok(found) => Ok(found.bytes().await.map_err(Error::internal)?.to_vec()),
            Err(object_store::Error::NotFound { .. }) => Err(Error::NotFound),
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
