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
    /// A local file of a model folder (upload, download cache).
    #[error("model files: {0}")]
    Io(String),
}

/// A backing service, as outages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Postgres.
    Database,
    /// Redis (queue, events, rate limits).
    Queue,
    /// The object store holding the images.
    Storage,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Database => "database",
            Self::Queue => "queue",
            Self::Storage => "storage",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
            Self::Io(_) => "model_files",
        }
    }

    /// True when the service behind it is down or unreachable (worth a 503,
    /// and worth retrying), as opposed to a bad query or record.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable_service().is_some()
    }

    /// A stored object that does not exist (retrying will not bring it).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Storage(object_store::Error::NotFound { .. }))
    }

    /// The service that is down, unreachable, or starting or shutting down,
    /// if that is what this error is.
    pub fn unavailable_service(&self) -> Option<Service> {
        match self {
            Self::Database(e) if database_unavailable(e) => Some(Service::Database),
            Self::Redis(e) if redis_unavailable(e) => Some(Service::Queue),
            Self::Storage(e) if storage_unavailable(e) => Some(Service::Storage),
            _ => None,
        }
    }
}

fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08 (connection exception) and 57P01-57P03: the
        // server is shutting down, crashed, or not accepting connections yet.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

fn redis_unavailable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        // Still loading its data after a restart.
        || e.code() == Some("LOADING")
}

/// An object store that cannot be reached or used at all: a local folder's
/// I/O failing (permission denied, not a directory, disk full or gone), or a
/// remote store refusing connections or timing out. An object that is not
/// there, a conflict, or a request the store rejects (credentials, paths) is
/// no outage: retrying would give the same answer.
fn storage_unavailable(e: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let object_store::Error::Generic { source, .. } = e else {
        return false;
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(error) = cause {
        if error.is::<std::io::Error>() {
            return true;
        }
        if let Some(http) = error.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            );
        }
        cause = error.source();
    }
    false
}

impl From<serde_json::Error> for JobsError {
    fn from(e: serde_json::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_told_apart_from_bugs() {
        let refused = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(refused()),
        ] {
            assert_eq!(
                JobsError::Database(e).unavailable_service(),
                Some(Service::Database)
            );
        }
        assert_eq!(
            JobsError::Redis(redis::RedisError::from(refused())).unavailable_service(),
            Some(Service::Queue)
        );
        // How object_store wraps a local folder's I/O failure.
        let local = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        };
        assert_eq!(
            JobsError::Storage(local).unavailable_service(),
            Some(Service::Storage)
        );
        for e in [
            JobsError::Database(sqlx::Error::RowNotFound),
            JobsError::Corrupt("bad".into()),
            JobsError::Redis(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "unexpected reply",
            ))),
            // Missing objects keep their meaning (404, 410, `input_missing`).
            JobsError::Storage(object_store::Error::NotFound {
                path: "jobs/a/input".into(),
                source: Box::new(std::io::Error::from(std::io::ErrorKind::NotFound)),
            }),
            JobsError::Storage(object_store::Error::Generic {
                store: "S3",
                source: "the store answered 400".into(),
            }),
        ] {
            assert!(!e.is_unavailable(), "{e}");
        }
    }
}
