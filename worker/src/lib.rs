//! The ByteEdit worker: loads models once, takes job ids from the Redis
//! queue, claims each job in Postgres, runs it on the burn engine while
//! streaming progress, stores the outputs, records the result, and only then
//! acknowledges the queue entry.
//!
//! One module per concern:
//! - [`worker`]: the assembled worker (settings, shared parts), `start`,
//!   and the [`WorkerHandle`] that stops it;
//! - [`delivery`]: the queue loop: read, sweep and reclaim entries, run
//!   one batch after another, settle each entry;
//! - [`batching`]: a batch gathered: the entry at hand, then compatible
//!   queued jobs of its model (looked at before they are claimed);
//! - [`claim`]: the claim state machine in Postgres and the attempt limit;
//! - [`execution`]: a batch's run: inputs from storage, [`inputs::prepare`],
//!   the engine call with each job's progress relay, PNG outputs into
//!   storage, each job recorded as its answer comes;
//! - [`lease`]: the running jobs and their cancel flags, the heartbeat,
//!   cancel requests;
//! - [`recording`]: success, failure or cancel written (retried while
//!   Postgres is down), the retry-with-backoff policy, hand-back at shutdown;
//! - [`failure`]: why a run failed, as a job failure code;
//! - [`engine`]: the thread owning the models (an actor), one batch at a time;
//! - [`inputs`]: a stored job turned into an engine request.

mod batching;
mod claim;
pub mod config;
mod delivery;
pub mod engine;
pub mod error;
mod execution;
mod failure;
pub mod inputs;
mod lease;
mod recording;
pub mod registry;
mod worker;

pub use config::{ModelSpec, WorkerArgs};
pub use error::WorkerError;
pub use worker::{DEFAULT_SHUTDOWN_GRACE, Worker, WorkerHandle};
