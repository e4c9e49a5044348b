//! Serving a registered model version: look it up in Postgres, download
//! its folder from the object storage into the local cache once (checked
//! against its digest), and serve it with the version's default steps.

use std::path::Path;

use byteedit_jobs::config::Backends;
use byteedit_jobs::db;
use byteedit_jobs::model_store;

use crate::config::{ModelSpec, RegistryRef};
use crate::error::WorkerError;

/// Fills in `spec.dir` (the cached folder) and `spec.default_steps`.
pub async fn resolve(
    spec: &mut ModelSpec,
    reference: &RegistryRef,
    backends: &Backends,
    cache: &Path,
) -> Result<(), WorkerError> {
    let version = db::versions::get(&backends.db, &reference.line, reference.version)
        .await?
        .ok_or_else(|| WorkerError::NotRegistered {
            name: spec.name.clone(),
            reference: match reference.version {
                Some(v) => format!("{}:{v}", reference.line),
                None => format!("of `{}`", reference.line),
            },
        })?;
    let manifest = version.manifest()?;
    std::fs::create_dir_all(cache)
        .map_err(|e| byteedit_jobs::error::JobsError::Io(format!("{}: {e}", cache.display())))?;
    tracing::info!(model = %spec.name, version = %version.label(), digest = %version.digest, "fetching registered model");
    spec.dir =
        model_store::fetch(&backends.storage, &version.storage_prefix, &manifest, cache).await?;
    spec.default_steps = Some(version.default_steps as u32);
    Ok(())
}
