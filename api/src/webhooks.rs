//! Webhook delivery: the dispatcher that drains the outbox.
//!
//! The outbox row is written by a Postgres trigger in the same transaction
//! that makes a job's status final (migration 0007), so no process can crash
//! between "job done" and "webhook recorded". The dispatcher runs in the API
//! process: it claims due rows (`FOR UPDATE SKIP LOCKED`, with a lease), posts
//! the job as JSON signed with HMAC-SHA256, and on failure schedules the next
//! attempt with exponential backoff until `--webhook-max-attempts`. Delivery
//! is at least once: receivers dedupe on `ByteEdit-Delivery`.

use std::time::Duration;

use byteedit_jobs::db::{self, webhooks};
use byteedit_jobs::{Backends, JobStatus, JobsError};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use uuid::Uuid;

use crate::settings::WebhookSettings;
use crate::state::AppState;
use crate::views::JobOut;

/// How often the outbox is polled when it was empty.
const POLL: Duration = Duration::from_millis(500);
/// Deliveries claimed (and sent concurrently) at once.
const BATCH: i64 = 16;
/// Longest wait between two attempts.
const MAX_BACKOFF_SECS: f64 = 3600.0;

/// The body of a delivery.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct WebhookEvent {
    /// Unique per delivery (also the `ByteEdit-Delivery` header): a retry
    /// repeats it, so receivers can drop duplicates.
    pub id: Uuid,
    /// `job.succeeded`, `job.failed` or `job.canceled`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The job as `GET /v1/jobs/{id}` returns it (output URLs absolute when
    /// `--public-url` is set).
    pub job: JobOut,
}

/// `v1=` and the hex HMAC-SHA256 of `{timestamp}.{body}` under `secret`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v1={hex}")
}

/// Wait before attempt `attempts + 1`: `base * 2^(attempts - 1)`, capped;
/// `None` once `max_attempts` were made.
pub fn backoff(base_secs: f64, attempts: i32, max_attempts: u32) -> Option<f64> {
    if attempts as i64 >= max_attempts as i64 {
        return None;
    }
    let doublings = attempts.saturating_sub(1).clamp(0, 30);
    Some((base_secs.max(0.0) * 2f64.powi(doublings)).min(MAX_BACKOFF_SECS))
}

/// Delivers due webhooks until stopped.
pub async fn run(state: AppState) {
    let settings = &state.settings.webhooks;
    let client = match reqwest::Client::builder()
        .timeout(settings.timeout)
        // A redirect is an answer the receiver must fix, not one to follow.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ByteEdit-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(
                "cannot build the webhook HTTP client; webhooks are not delivered: {e}"
            );
            return;
        }
    };
    if settings.secret.is_none() {
        tracing::warn!("no --webhook-secret: webhook deliveries are not signed");
    }
    loop {
        match deliver_due(&state, &client).await {
            Ok(n) if n as i64 == BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!("webhook dispatch failed (retried shortly): {e}"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Claims and delivers one batch; answers how many were claimed.
pub async fn deliver_due(state: &AppState, client: &reqwest::Client) -> Result<usize, JobsError> {
    let settings = &state.settings.webhooks;
    // The lease outlasts one attempt, so a live dispatcher never sees its
    // own rows due again.
    let lease = settings.timeout.as_secs_f64() + 30.0;
    let due = webhooks::claim_due(&state.backends.db, lease, BATCH).await?;
    let n = due.len();
    let sends = due
        .into_iter()
        .map(|d| deliver(&state.backends, settings, client, d));
    for result in futures_util::future::join_all(sends).await {
        result?;
    }
    Ok(n)
}

async fn deliver(
    backends: &Backends,
    settings: &WebhookSettings,
    client: &reqwest::Client,
    delivery: webhooks::Delivery,
) -> Result<(), JobsError> {
    let db = &backends.db;
    let Some(job) = db::jobs::get(db, delivery.job_id).await? else {
        // Jobs are never deleted, but a hand-edited database could.
        return webhooks::failed(db, delivery.id, None, "the job no longer exists", None).await;
    };
    let outputs = if job.status == JobStatus::Succeeded {
        db::jobs::outputs(db, job.id).await?
    } else {
        Vec::new()
    };
    let mut out = JobOut::new(job, &outputs, None);
    if let Some(base) = &settings.public_url {
        out = out.with_base_url(base);
    }
    let event = WebhookEvent {
        id: delivery.id,
        kind: format!("job.{}", delivery.status),
        job: out,
    };
    let body = serde_json::to_vec(&event)?;
    let timestamp = chrono::Utc::now().timestamp();
    let mut request = client
        .post(&delivery.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("ByteEdit-Delivery", delivery.id.to_string())
        .header("ByteEdit-Event", &event.kind)
        .header("ByteEdit-Timestamp", timestamp.to_string());
    if let Some(secret) = &settings.secret {
        request = request.header(
            "ByteEdit-Signature",
            signature(secret.as_bytes(), timestamp, &body),
        );
    }
    let outcome = request.body(body).send().await;
    let (status, error) = match outcome {
        Ok(r) if r.status().is_success() => {
            tracing::info!(job = %delivery.job_id, delivery = %delivery.id, attempt = delivery.attempts, "webhook delivered");
            return webhooks::delivered(db, delivery.id, r.status().as_u16()).await;
        }
        Ok(r) => (
            Some(r.status().as_u16()),
            format!("the receiver answered {}", r.status()),
        ),
        Err(e) => (None, format!("cannot reach the receiver: {e}")),
    };
    let retry_in = backoff(
        settings.backoff.as_secs_f64(),
        delivery.attempts,
        settings.max_attempts,
    );
    match retry_in {
        Some(secs) => {
            tracing::warn!(job = %delivery.job_id, delivery = %delivery.id, attempt = delivery.attempts, "webhook failed, retrying in {secs:.1} s: {error}")
        }
        None => {
            tracing::warn!(job = %delivery.job_id, delivery = %delivery.id, attempt = delivery.attempts, "webhook failed, giving up: {error}")
        }
    }
    webhooks::failed(db, delivery.id, status, &error, retry_in).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_stops_at_the_last_attempt() {
        assert_eq!(backoff(10.0, 1, 4), Some(10.0));
        assert_eq!(backoff(10.0, 2, 4), Some(20.0));
        assert_eq!(backoff(10.0, 3, 4), Some(40.0));
        assert_eq!(backoff(10.0, 4, 4), None);
        assert_eq!(backoff(10.0, 20, 100), Some(MAX_BACKOFF_SECS));
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // What a receiver computes over the raw timestamp and body.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            signature(b"Jefe", 1_700_000_000, b"{\"a\":1}"),
            format!("v1={expected}")
        );
        assert_ne!(
            signature(b"other", 1_700_000_000, b"{\"a\":1}"),
            format!("v1={expected}")
        );
    }
}
