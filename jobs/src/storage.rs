//! Image storage through `object_store`: a local folder by default, memory
//! for tests, or any S3-compatible store by URL. Job rows keep keys, not bytes.

use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use crate::error::{JobsError, Result};

#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Prefix inside the store (the path part of an `s3://bucket/prefix` URL).
    base: StorePath,
    /// The root of a local folder store.
    folder: Option<std::path::PathBuf>,
    description: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl Storage {
    /// `./data`, `/var/lib/byteedit`, `file:///path`: a local folder (created
    /// if missing); `memory://`: in memory; `s3://bucket/prefix` and other
    /// object_store URLs: configured from the URL and `AWS_*` variables.
    pub fn from_url(url: &str) -> Result<Self> {
        // Credentials, region and endpoint come from AWS_* variables.
        let options = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v));
        Self::from_url_with_options(url, options)
    }

    /// As [`Storage::from_url`], with object_store options given explicitly
    /// (`aws_endpoint`, `aws_access_key_id`, `aws_allow_http`, ...; unknown
    /// keys are ignored).
    pub fn from_url_with_options(
        url: &str,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let bad = |reason: String| JobsError::StorageUrl {
            url: url.to_owned(),
            reason,
        };
        if url == "memory://" || url == "memory:" {
            return Ok(Self {
                store: Arc::new(InMemory::new()),
                base: StorePath::default(),
                folder: None,
                description: "memory".into(),
            });
        }
        let folder = match url.strip_prefix("file://") {
            Some(path) => Some(std::path::PathBuf::from(path)),
            None if !url.contains("://") => Some(std::path::PathBuf::from(url)),
            None => None,
        };
        if let Some(folder) = folder {
            std::fs::create_dir_all(&folder)
                .map_err(|e| bad(format!("cannot create folder {}: {e}", folder.display())))?;
            let store = LocalFileSystem::new_with_prefix(&folder)?;
            return Ok(Self {
                store: Arc::new(store),
                base: StorePath::default(),
                description: format!("folder {}", folder.display()),
                folder: Some(folder),
            });
        }
        let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let (store, base) =
            object_store::parse_url_opts(&parsed, options).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            store: Arc::from(store),
            base,
            folder: None,
            description: format!("object store {url}"),
        })
    }

    fn path(&self, key: &str) -> StorePath {
        let mut path = self.base.clone();
        for part in key.split('/') {
            path = path.join(part);
        }
        path
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.store
            .put(&self.path(key), PutPayload::from_bytes(bytes))
            .await?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Bytes> {
        match self.store.get(&self.path(key)).await {
            Ok(object) => Ok(object.bytes().await?),
            Err(e @ object_store::Error::NotFound { .. }) => {
                Err(self.missing_root().unwrap_or(e).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A local store whose root folder is gone (or is no folder) reports
    /// every object as not found: that is an outage, not missing objects
    /// (which would read as expired jobs), so it is told apart here.
    fn missing_root(&self) -> Option<object_store::Error> {
        let folder = self.folder.as_ref()?;
        if folder.is_dir() {
            return None;
        }
        let reason = format!("the storage folder {} is missing", folder.display());
        Some(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::new(std::io::ErrorKind::NotFound, reason)),
        })
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.store.delete(&self.path(key)).await?;
        Ok(())
    }

    /// Deletes every object under `prefix` (a job's folder: its uploads and
    /// the outputs of every attempt, including ones a lost worker left);
    /// answers how many. Deleting what is already gone is not an error, so
    /// a purge can simply be repeated.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        use futures_util::TryStreamExt;
        let objects: Vec<_> = self
            .store
            .list(Some(&self.path(prefix)))
            .try_collect()
            .await?;
        let mut deleted = 0;
        for object in objects {
            match self.store.delete(&object.location).await {
                Ok(()) => deleted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn folder_and_memory_stores_round_trip() {
        let dir = std::env::temp_dir().join(format!("byteedit-storage-{}", uuid::Uuid::new_v4()));
        for url in [dir.to_string_lossy().into_owned(), "memory://".to_owned()] {
            let storage = Storage::from_url(&url).unwrap();
            storage
                .put("jobs/a/input", Bytes::from_static(b"png"))
                .await
                .unwrap();
            assert_eq!(
                storage.get("jobs/a/input").await.unwrap(),
                Bytes::from_static(b"png")
            );
            storage.delete("jobs/a/input").await.unwrap();
            assert!(storage.get("jobs/a/input").await.is_err());
            for key in [
                "jobs/b/input",
                "jobs/b/attempt-1/output-0.png",
                "jobs/bb/input",
            ] {
                storage.put(key, Bytes::from_static(b"x")).await.unwrap();
            }
            assert_eq!(storage.delete_prefix("jobs/b").await.unwrap(), 2);
            assert!(storage.get("jobs/b/attempt-1/output-0.png").await.is_err());
            assert!(
                storage.get("jobs/bb/input").await.is_ok(),
                "a sibling prefix stays"
            );
            assert_eq!(storage.delete_prefix("jobs/b").await.unwrap(), 0);
        }
        assert!(dir.join("jobs/a").is_dir());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A folder store that cannot be used (its root removed, or a file in
    /// its place) is an outage; an object that is not there is not.
    #[tokio::test]
    async fn an_unusable_folder_is_an_outage_and_a_missing_object_is_not() {
        let dir = std::env::temp_dir().join(format!("byteedit-storage-{}", uuid::Uuid::new_v4()));
        let storage = Storage::from_url(&dir.to_string_lossy()).unwrap();
        let missing = storage.get("jobs/none/input").await.unwrap_err();
        assert!(
            missing.is_not_found() && !missing.is_unavailable(),
            "{missing}"
        );
        storage
            .put("jobs/a/input", Bytes::from_static(b"png"))
            .await
            .unwrap();

        std::fs::remove_dir_all(&dir).unwrap();
        let gone = storage.get("jobs/a/input").await.unwrap_err();
        assert!(gone.is_unavailable() && !gone.is_not_found(), "{gone}");

        std::fs::write(&dir, b"not a folder").unwrap();
        let put = storage
            .put("jobs/b/input", Bytes::from_static(b"png"))
            .await
            .unwrap_err();
        assert!(put.is_unavailable(), "{put}");
        let get = storage.get("jobs/a/input").await.unwrap_err();
        assert!(get.is_unavailable(), "{get}");
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn unknown_scheme_is_refused_with_the_url() {
        let err = Storage::from_url("ftp://example/x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ftp://example/x"), "{err}");
    }
}
