//! `GET /v1/jobs/{id}/events`: a job's life as Server-Sent Events.
//!
//! The stream starts with the job's current state read from Postgres, then
//! relays live events from the workers; it ends after the final event. Every
//! 10 s without news, and whenever the relay fell behind, it re-reads
//! Postgres, so a lost notification delays an event but never loses it.

use std::convert::Infallible;
use std::time::Duration;

use async_stream::stream;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use byteedit_jobs::{JobEvent, JobRecord, JobStatus, db};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::jobs::find_job;
use crate::auth::ClientAuth;
use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;
use crate::views::{JobOut, job_out};

const RESYNC: Duration = Duration::from_secs(10);

/// Follows a job: `queued` (with `position`), `started`, `progress` (`step`,
/// `total`), then one of `succeeded`, `failed`, `canceled` carrying the job as
/// `GET /v1/jobs/{id}` returns it. A late client gets the current state first.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "An SSE stream; each event's data is JSON with a `type` equal to the event name", content_type = "text/event-stream"),
        (status = 404, description = "No such job", body = ErrorResponse),
        (status = 410, description = "The job has expired", body = ErrorResponse),
    ))]
pub async fn job_events(
    State(state): State<AppState>,
    ClientAuth(caller): ClientAuth,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Subscribe before reading the snapshot, so nothing falls between.
    let mut live = state.events.subscribe();
    let job = find_job(&state, &caller, &id).await?;
    let stream = stream! {
        let mut seen = Seen::default();
        let mut job = job;
        loop {
            match seen.catch_up(&state, job).await {
                Ok((events, done)) => {
                    for e in events { yield Ok(e); }
                    if done { return; }
                }
                Err(e) => {
                    tracing::warn!("SSE: cannot read job: {e}");
                }
            }
            // Relay live events until something calls for a re-read.
            loop {
                match tokio::time::timeout(RESYNC, live.recv()).await {
                    Ok(Ok(message)) if message.job == seen.id => match &message.event {
                        JobEvent::CancelRequested => {}
                        JobEvent::Progress { step, .. } => {
                            seen.status = Some(JobStatus::Running);
                            seen.step = Some(*step);
                            yield Ok(sse(&message.event, None));
                        }
                        JobEvent::Started => {
                            if seen.status != Some(JobStatus::Running) {
                                seen.status = Some(JobStatus::Running);
                                yield Ok(sse(&message.event, None));
                            }
                        }
                        // Final, or back in the queue (a hand-back or a
                        // retry): the record has the whole job, or its position.
                        event => {
                            debug_assert!(event.is_final() || matches!(event, JobEvent::Queued { .. }));
                            break;
                        }
                    },
                    // Another job of the same model started or ended: ours may have moved up.
                    Ok(Ok(message)) if seen.status == Some(JobStatus::Queued)
                        && message.model == seen.model
                        && !matches!(message.event, JobEvent::Progress { .. }) => break,
                    Ok(Ok(_)) => {}
                    Ok(Err(RecvError::Lagged(_))) | Err(_) => break,
                    Ok(Err(RecvError::Closed)) => return,
                }
            }
            // Postgres down: keep the client and try again.
            job = loop {
                match db::jobs::get(&state.backends.db, seen.id).await {
                    Ok(Some(job)) => break job,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!("SSE: cannot re-read job {}: {e}", seen.id);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// What this client has been told so far.
#[derive(Default)]
struct Seen {
    id: uuid::Uuid,
    model: String,
    status: Option<JobStatus>,
    position: Option<u32>,
    step: Option<u32>,
}

impl Seen {
    /// Events that bring the client from what it was told to `job`'s state;
    /// `true` when the job has ended.
    async fn catch_up(
        &mut self,
        state: &AppState,
        job: JobRecord,
    ) -> Result<(Vec<Event>, bool), ApiError> {
        self.id = job.id;
        self.model.clone_from(&job.model);
        let mut events = Vec::new();
        match job.status {
            JobStatus::Queued => {
                let position = db::jobs::queue_position(&state.backends.db, &job).await?;
                if self.position != Some(position) {
                    events.push(sse(&JobEvent::Queued { position }, None));
                    self.position = Some(position);
                }
            }
            JobStatus::Running => {
                if self.status != Some(JobStatus::Running) {
                    events.push(sse(&JobEvent::Started, None));
                }
                if self.step != Some(job.progress_step) && job.progress_step > 0 {
                    let progress = JobEvent::Progress {
                        step: job.progress_step,
                        total: job.progress_total,
                    };
                    events.push(sse(&progress, None));
                    self.step = Some(job.progress_step);
                }
            }
            status => {
                let event = match status {
                    JobStatus::Succeeded => JobEvent::Succeeded {
                        timings: job.timings.clone().unwrap_or_default(),
                    },
                    JobStatus::Failed => JobEvent::Failed {
                        error: job.error.clone().unwrap_or(byteedit_jobs::JobError {
                            code: "unknown".into(),
                            message: "the job failed".into(),
                        }),
                    },
                    _ => JobEvent::Canceled,
                };
                let out = job_out(state, job).await?;
                events.push(sse(&event, Some(&out)));
                return Ok((events, true));
            }
        }
        self.status = Some(job.status);
        Ok((events, false))
    }
}

/// An SSE event named like the job event, whose data is the event as JSON
/// (final events also carry the whole job under `job`).
fn sse(event: &JobEvent, job: Option<&JobOut>) -> Event {
    let mut data = serde_json::to_value(event).unwrap_or_default();
    if let (Some(job), Some(map)) = (job, data.as_object_mut()) {
        map.insert("job".into(), serde_json::to_value(job).unwrap_or_default());
    }
    Event::default().event(event.name()).data(data.to_string())
}
