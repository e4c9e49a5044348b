//! Model folders in the object storage: a registered model version's
//! diffusers folder is uploaded file by file under a prefix with a
//! manifest (path, size, SHA-256 of each file; the digest is the SHA-256
//! of the manifest), and a worker on another machine downloads it once
//! into a local cache folder named by that digest, checking every file.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{JobsError, Result};
use crate::storage::Storage;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// `/`-separated, relative to the folder.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<ManifestFile>,
}

impl Manifest {
    /// The SHA-256 of the sorted `path size sha256` lines.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for f in &self.files {
            h.update(format!("{} {} {}\n", f.path, f.bytes, f.sha256));
        }
        hex(&h.finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn io(path: &Path, e: std::io::Error) -> JobsError {
    JobsError::Io(format!("{}: {e}", path.display()))
}

/// Every file of `dir` but those under `skip` folders, sorted by path.
fn walk(dir: &Path, at: &str, skip: &[&str], out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if at.is_empty() {
            name.clone()
        } else {
            format!("{at}/{name}")
        };
        let path = entry.path();
        if path.is_dir() {
            if !skip.contains(&rel.as_str()) {
                walk(&path, &rel, skip, out)?;
            }
        } else {
            out.push((rel, path));
        }
    }
    Ok(())
}

/// The manifest of `dir` (folders named in `skip`, such as a run's
/// `training/`, left out).
pub fn manifest(dir: &Path, skip: &[&str]) -> Result<Manifest> {
    let mut files = Vec::new();
    walk(dir, "", skip, &mut files)?;
    let files = files
        .into_iter()
        .map(|(rel, path)| {
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            Ok(ManifestFile {
                path: rel,
                bytes: bytes.len() as u64,
                sha256: hex(&Sha256::digest(&bytes)),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Manifest { files })
}

/// Uploads the manifest's files of `dir` under `prefix/`.
pub async fn upload(
    storage: &Storage,
    prefix: &str,
    dir: &Path,
    manifest: &Manifest,
) -> Result<()> {
    for f in &manifest.files {
        let path = dir.join(&f.path);
        let bytes = tokio::fs::read(&path).await.map_err(|e| io(&path, e))?;
        storage
            .put(&format!("{prefix}/{}", f.path), Bytes::from(bytes))
            .await?;
    }
    Ok(())
}

/// Whether `dir` holds exactly the manifest's files, each with its digest.
pub fn verify(dir: &Path, manifest: &Manifest) -> Result<std::result::Result<(), String>> {
    for f in &manifest.files {
        let path = dir.join(&f.path);
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(Err(format!("{} is missing", f.path)));
        };
        if bytes.len() as u64 != f.bytes || hex(&Sha256::digest(&bytes)) != f.sha256 {
            return Ok(Err(format!("{} does not match its SHA-256", f.path)));
        }
    }
    Ok(Ok(()))
}

/// The folder of `manifest` in `cache`: reused when it is there and checks
/// out, else downloaded from `prefix/` into a temporary folder, checked
/// file by file, and moved into place (a download cut short leaves no
/// folder that could be taken for a complete one).
pub async fn fetch(
    storage: &Storage,
    prefix: &str,
    manifest: &Manifest,
    cache: &Path,
) -> Result<PathBuf> {
    let digest = manifest.digest();
    let target = cache.join(&digest);
    if target.is_dir() {
        match verify(&target, manifest)? {
            Ok(()) => return Ok(target),
            Err(why) => {
                tracing::warn!(folder = %target.display(), %why, "cached model is damaged: downloading it again");
                std::fs::remove_dir_all(&target).map_err(|e| io(&target, e))?;
            }
        }
    }
    let partial = cache.join(format!("{digest}.partial-{}", std::process::id()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| io(&partial, e))?;
    }
    for f in &manifest.files {
        let bytes = storage.get(&format!("{prefix}/{}", f.path)).await?;
        if bytes.len() as u64 != f.bytes || hex(&Sha256::digest(&bytes)) != f.sha256 {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(JobsError::Io(format!(
                "{prefix}/{} in the storage does not match the registered SHA-256: the stored model is damaged",
                f.path
            )));
        }
        let path = partial.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&path, &bytes).map_err(|e| io(&path, e))?;
    }
    std::fs::rename(&partial, &target).map_err(|e| io(&target, e))?;
    Ok(target)
}
