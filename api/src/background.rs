//! The loops an API process runs beside its handlers: the event relay
//! (`dispatch.rs`, which SSE streams and the job metrics depend on), the
//! retention sweep (`retention.rs`) and the webhook dispatcher
//! (`webhooks.rs`). Started explicitly by whoever runs the API, never as a
//! side effect of building its state, so a state (or a router for a test)
//! can be made without tasks it does not want.

use tokio::task::JoinHandle;

use crate::state::AppState;

/// The running loops; stopped by [`Background::stop`] or when dropped.
#[derive(Debug)]
pub struct Background {
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Background {
    /// Starts the three loops on the current runtime.
    pub fn start(state: &AppState) -> Self {
        let tasks = vec![
            (
                "event relay",
                tokio::spawn(crate::dispatch::relay_events(state.clone())),
            ),
            (
                "retention sweep",
                tokio::spawn(crate::retention::run(state.clone())),
            ),
            (
                "webhook dispatcher",
                tokio::spawn(crate::webhooks::run(state.clone())),
            ),
        ];
        Self { tasks }
    }

    /// Stops the loops and waits until they are gone. Each can be cut at
    /// any point: a sweep is repeatable, and a claimed webhook's lease makes
    /// it due again (deliveries are at least once).
    pub async fn stop(mut self) {
        for (name, task) in std::mem::take(&mut self.tasks) {
            task.abort();
            match task.await {
                Err(e) if e.is_panic() => tracing::error!("the {name} had panicked: {e}"),
                _ => tracing::debug!("{name} stopped"),
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
    }
}
