//! Typed ids for the functions that take several of them in a row (a job's
//! and a worker's, as in `claim(db, job, worker, lease)`): swapping them is a
//! compile error rather than a write that silently matches no row.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::JobRecord;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id; UUIDv7, so ids sort by creation time.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_uuid(self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, uuid::Error> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A job (`jobs.id`).
    JobId
);
uuid_id!(
    /// A worker process (`workers.id`, `jobs.worker_id`).
    WorkerId
);

impl JobRecord {
    /// The job's id, typed.
    pub fn job_id(&self) -> JobId {
        JobId(self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_parse_and_serialize_as_their_uuid() {
        let uuid = Uuid::now_v7();
        let job = JobId::from(uuid);
        assert_eq!(job.to_string(), uuid.to_string());
        assert_eq!(job.to_string().parse::<JobId>().unwrap(), job);
        assert_eq!(
            serde_json::to_string(&job).unwrap(),
            serde_json::to_string(&uuid).unwrap()
        );
        assert_eq!(Uuid::from(WorkerId::from(uuid)), uuid);
    }
}
