//! The `model_versions` table: editing models fine-tuned with feedback
//! (`byteedit finetune --register`), served by name and version
//! (`byteedit worker --model NAME=registry:LINE[:VERSION]`).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{JobsError, Result};
use crate::model_store::Manifest;

/// A version to register; it gets the next version number of its name.
#[derive(Debug, Clone)]
pub struct NewModelVersion {
    /// Known before the insert: the storage prefix is named by it.
    pub id: Uuid,
    pub name: String,
    /// The folder it was fine-tuned from; a registered version's download
    /// (named by that version's digest) links the parent.
    pub parent_path: String,
    pub parent_digest: Option<String>,
    pub phase: i16,
    pub steps: i64,
    pub data: serde_json::Value,
    pub config: serde_json::Value,
    pub rewards: serde_json::Value,
    pub default_steps: i32,
    pub storage_prefix: String,
    pub manifest: Manifest,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ModelVersion {
    pub id: Uuid,
    pub name: String,
    pub version: i32,
    pub parent_id: Option<Uuid>,
    pub parent_path: String,
    pub phase: i16,
    pub steps: i64,
    pub data: serde_json::Value,
    pub config: serde_json::Value,
    pub rewards: serde_json::Value,
    pub default_steps: i32,
    pub storage_prefix: String,
    pub files: serde_json::Value,
    pub digest: String,
    pub created_at: DateTime<Utc>,
}

impl ModelVersion {
    pub fn manifest(&self) -> Result<Manifest> {
        serde_json::from_value(self.files.clone())
            .map_err(|e| JobsError::Corrupt(format!("model version {} files: {e}", self.id)))
    }

    /// `name:version`, as workers and `versions` commands name it.
    pub fn label(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

macro_rules! columns {
    () => {
        "id, name, version, parent_id, parent_path, phase, steps, data, config, rewards, \
         default_steps, storage_prefix, files, digest, created_at"
    };
}

/// Registers the next version of `new.name`; retried when two
/// registrations of one name race for a number.
pub async fn register(db: &PgPool, new: &NewModelVersion) -> Result<ModelVersion> {
    const QUERY: &str = concat!(
        "INSERT INTO model_versions (id, name, version, parent_id, parent_path, phase, steps, data, \
         config, rewards, default_steps, storage_prefix, files, digest) \
         SELECT $1, $2, COALESCE((SELECT max(version) FROM model_versions WHERE name = $2), 0) + 1, \
         (SELECT id FROM model_versions WHERE digest = $3 ORDER BY created_at DESC LIMIT 1), \
         $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 RETURNING ",
        columns!()
    );
    let files =
        serde_json::to_value(&new.manifest).map_err(|e| JobsError::Corrupt(e.to_string()))?;
    let mut attempt = 0;
    loop {
        let result = sqlx::query_as::<_, ModelVersion>(QUERY)
            .bind(new.id)
            .bind(&new.name)
            .bind(&new.parent_digest)
            .bind(&new.parent_path)
            .bind(new.phase)
            .bind(new.steps)
            .bind(&new.data)
            .bind(&new.config)
            .bind(&new.rewards)
            .bind(new.default_steps)
            .bind(&new.storage_prefix)
            .bind(&files)
            .bind(new.manifest.digest())
            .fetch_one(db)
            .await;
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() && attempt < 3 => attempt += 1,
            other => return Ok(other?),
        }
    }
}

/// Version `version` of `name`, or its latest when `None`.
pub async fn get(db: &PgPool, name: &str, version: Option<i32>) -> Result<Option<ModelVersion>> {
    const QUERY: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM model_versions WHERE name = $1 AND ($2::integer IS NULL OR version = $2) \
         ORDER BY version DESC LIMIT 1"
    );
    Ok(sqlx::query_as::<_, ModelVersion>(QUERY)
        .bind(name)
        .bind(version)
        .fetch_optional(db)
        .await?)
}

/// Every registered version, newest first.
pub async fn list(db: &PgPool) -> Result<Vec<ModelVersion>> {
    const QUERY: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM model_versions ORDER BY created_at DESC, id DESC"
    );
    Ok(sqlx::query_as::<_, ModelVersion>(QUERY)
        .fetch_all(db)
        .await?)
}
