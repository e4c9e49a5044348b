//! Postgres records: one module per table family.

pub mod api_keys;
pub mod feedback;
pub mod idempotency;
pub mod jobs;
pub mod models;
pub mod retention;
pub mod rewards;
pub mod versions;
pub mod webhooks;

pub use models::ModelStatus;

pub use jobs::{CancelOutcome, Claim, NewJob, Page};
