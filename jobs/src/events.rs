//! Job events between processes over Redis pub/sub: workers publish
//! progress and results, the API publishes cancellation requests. Events are
//! notifications only; Postgres holds the state, so a missed event costs a
//! client a re-read, never a result.

use futures_util::{Stream, StreamExt};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::Result;
use crate::job::{JobError, JobTimings, Task};

/// What happened to a job. These are also the SSE event names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    /// Waiting; `position` 1 runs next.
    Queued {
        position: u32,
    },
    /// A worker took it.
    Started,
    /// A denoising step finished (`step` counts over all outputs).
    Progress {
        step: u32,
        total: u32,
    },
    Succeeded {
        timings: JobTimings,
    },
    Failed {
        error: JobError,
    },
    Canceled,
    /// The API asks the job's worker to stop it (not sent to clients).
    CancelRequested,
}

impl JobEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Queued { .. } => "queued",
            Self::Started => "started",
            Self::Progress { .. } => "progress",
            Self::Succeeded { .. } => "succeeded",
            Self::Failed { .. } => "failed",
            Self::Canceled => "canceled",
            Self::CancelRequested => "cancel_requested",
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Succeeded { .. } | Self::Failed { .. } | Self::Canceled
        )
    }
}

/// An event with the job it is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    pub job: Uuid,
    pub model: String,
    pub task: Task,
    pub event: JobEvent,
}

fn channel(prefix: &str) -> String {
    format!("{prefix}:events")
}

pub async fn publish(conn: &ConnectionManager, prefix: &str, message: &EventMessage) -> Result<()> {
    let mut conn = conn.clone();
    redis::cmd("PUBLISH")
        .arg(channel(prefix))
        .arg(serde_json::to_string(message)?)
        .query_async::<i64>(&mut conn)
        .await?;
    Ok(())
}

/// Every event published under `prefix` from now on. The stream ends when
/// the connection drops; callers reconnect.
pub async fn subscribe(
    client: &redis::Client,
    prefix: &str,
) -> Result<impl Stream<Item = EventMessage> + Send + 'static> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel(prefix)).await?;
    Ok(pubsub.into_on_message().filter_map(|msg| async move {
        let payload: String = msg.get_payload().ok()?;
        match serde_json::from_str(&payload) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!("ignoring unreadable job event: {e}");
                None
            }
        }
    }))
}
