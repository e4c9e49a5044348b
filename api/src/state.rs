//! What every handler shares.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use byteedit_jobs::db::{self, ModelStatus};
use byteedit_jobs::{Backends, EventMessage};
use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::settings::Settings;

#[derive(Clone)]
pub struct AppState {
    pub backends: Backends,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// Job events from every worker, fanned out to SSE clients.
    pub events: broadcast::Sender<Arc<EventMessage>>,
    /// The models table, re-read at most once a second for submissions.
    models: ModelsCache,
}

/// When the model list was read, and what it said.
type ModelsCache = Arc<RwLock<Option<(Instant, Arc<Vec<ModelStatus>>)>>>;

/// How stale the model list used to check submissions may be.
const MODELS_TTL: Duration = Duration::from_secs(1);

impl AppState {
    /// Only builds the state: the loops that feed it (event relay, retention
    /// sweep, webhooks) are started by whoever runs the API, see
    /// [`crate::background::Background`].
    pub fn new(settings: Settings, backends: Backends) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            backends,
            settings: Arc::new(settings),
            metrics: Arc::new(Metrics::new()),
            events,
            models: Arc::default(),
        }
    }

    /// The served models, from a cache of at most [`MODELS_TTL`]; `refresh`
    /// forces a read (a name missing from the cache may be brand new).
    pub async fn models(
        &self,
        refresh: bool,
    ) -> Result<Arc<Vec<ModelStatus>>, byteedit_jobs::JobsError> {
        if !refresh
            && let Ok(cache) = self.models.read()
            && let Some((at, models)) = cache.as_ref()
            && at.elapsed() < MODELS_TTL
        {
            return Ok(models.clone());
        }
        let models = Arc::new(db::models::list(&self.backends.db).await?);
        if let Ok(mut cache) = self.models.write() {
            *cache = Some((Instant::now(), models.clone()));
        }
        Ok(models)
    }
}
