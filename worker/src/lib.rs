//! The ByteEdit worker: loads models once, takes job ids from the Redis
//! queue, claims each job in Postgres, runs it on the burn engine while
//! streaming progress, stores the outputs, records the result, and only then
//! acknowledges the queue entry.
//!
//! [`engine`] owns the models on a thread of their own; [`runner`] is the
//! async loop around it; [`inputs`] turns a stored job into an engine request.

pub mod config;
pub mod engine;
pub mod error;
pub mod inputs;
pub mod runner;

pub use config::{ModelSpec, WorkerArgs};
pub use error::WorkerError;
pub use runner::{Worker, WorkerHandle};
