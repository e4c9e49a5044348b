//! Errors of the job system: the backing services failing, or records that
//! are not there.

use thiserror::Error;

pub type Result<T, E = JobsError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum JobsError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("object storage: {0}")]
    Storage(#[from] object_store::Error),
    #[error("storage URL `{url}`: {reason}")]
    StorageUrl { url: String, reason: String },
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

impl JobsError {
    /// A stable snake_case name, used in logs and as a metric label.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Database(_) => "database",
            Self::Migration(_) => "migration",
            Self::Redis(_) => "redis",
            Self::Storage(_) => "storage",
            Self::StorageUrl { .. } => "storage_url",
            Self::Corrupt(_) => "corrupt_record",
        }
    }

    /// True when the service behind it is down or unreachable (worth a 503).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Database(e) => matches!(
                e,
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            ),
            Self::Redis(e) => e.is_io_error() || e.is_timeout() || e.is_connection_dropped(),
            _ => false,
        }
    }
}

impl From<serde_json::Error> for JobsError {
    fn from(e: serde_json::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}
