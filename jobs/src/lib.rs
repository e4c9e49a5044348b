//! The job system that the API and the workers share.
//!
//! Postgres is the source of truth for jobs ([`db`]); Redis Streams carry job
//! ids to workers ([`queue`]) and Redis pub/sub carries progress and
//! cancellation between processes ([`events`]); images live in object storage
//! ([`storage`]). Nothing here links the model code, so the API stays small.

pub mod access;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod failure;
pub mod feedback;
pub mod ids;
pub mod job;
pub mod model_store;
pub mod queue;
pub mod rate_limit;
pub mod storage;

pub use byteedit_edit::{Geometry, geometry};
pub use config::{Backends, ConnectArgs};
pub use error::{JobsError, Result};
pub use events::{EventMessage, JobEvent};
pub use failure::FailureCode;
pub use ids::{JobId, WorkerId};
pub use job::{
    EditParams, JobError, JobRecord, JobStatus, JobTimings, ModelInfo, OutputRecord, Task,
};
pub use queue::{Delivery, Queue, QueueConsumer, QueueSettler};
pub use storage::Storage;
