//! One Redis subscription per API process, fanned out to every SSE client
//! through a broadcast channel, and counted into the job metrics.

use std::sync::Arc;
use std::time::Duration;

use byteedit_jobs::{JobEvent, events};
use futures_util::StreamExt;

use crate::state::AppState;

/// Runs for the life of the runtime, reconnecting when Redis drops. Events
/// missed while disconnected cost SSE clients nothing: they re-read Postgres.
pub async fn relay_events(state: AppState) {
    loop {
        match events::subscribe(&state.backends.redis, &state.backends.prefix).await {
            Ok(stream) => {
                let mut stream = std::pin::pin!(stream);
                while let Some(message) = stream.next().await {
                    record_metrics(&state, &message);
                    // No receivers is fine: nobody is watching.
                    let _ = state.events.send(Arc::new(message));
                }
                tracing::warn!("job event subscription ended; reconnecting");
            }
            Err(e) => tracing::warn!("cannot subscribe to job events: {e}; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn record_metrics(state: &AppState, message: &byteedit_jobs::EventMessage) {
    let m = &state.metrics;
    let (model, task) = (message.model.as_str(), message.task.as_str());
    match &message.event {
        JobEvent::Succeeded { timings } => {
            m.jobs_finished
                .with_label_values(&[model, task, "succeeded"])
                .inc();
            m.job_duration
                .with_label_values(&[model, task])
                .observe((timings.queue_ms + timings.run_ms) / 1000.0);
            m.job_queue_time
                .with_label_values(&[model])
                .observe(timings.queue_ms / 1000.0);
            m.worker_step_time
                .with_label_values(&[model])
                .observe(timings.step_ms / 1000.0);
        }
        JobEvent::Failed { .. } => {
            m.jobs_finished
                .with_label_values(&[model, task, "failed"])
                .inc();
        }
        JobEvent::Canceled => {
            m.jobs_finished
                .with_label_values(&[model, task, "canceled"])
                .inc();
        }
        _ => {}
    }
}
