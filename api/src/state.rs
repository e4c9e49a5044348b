//! What every handler shares.

use std::sync::Arc;

use byteedit_jobs::{Backends, EventMessage};
use tokio::sync::broadcast;

use crate::config::ApiArgs;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub backends: Backends,
    pub config: Arc<ApiArgs>,
    pub metrics: Arc<Metrics>,
    /// Job events from every worker, fanned out to SSE clients.
    pub events: broadcast::Sender<Arc<EventMessage>>,
}

impl AppState {
    /// Also starts the task that relays job events from Redis.
    pub fn new(config: ApiArgs, backends: Backends) -> Self {
        let (events, _) = broadcast::channel(1024);
        let state = Self {
            backends,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
            events,
        };
        tokio::spawn(crate::dispatch::relay_events(state.clone()));
        state
    }
}
