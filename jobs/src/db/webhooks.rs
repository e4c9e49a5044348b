//! The webhook outbox. Rows are written by a trigger with the job's final
//! state (migration 0007); dispatchers claim due rows, deliver, and record
//! the outcome.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;

/// A delivery a dispatcher has claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub job_id: Uuid,
    pub url: String,
    pub status: String,
    /// Attempts started, this one included.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// Claims up to `limit` due deliveries. The claim moves `next_attempt_at`
/// `lease_secs` ahead and counts the attempt, in one statement, so a
/// dispatcher that dies mid-delivery leaves the row due again later, and two
/// dispatchers never claim one row (`FOR UPDATE SKIP LOCKED`).
pub async fn claim_due(db: &PgPool, lease_secs: f64, limit: i64) -> Result<Vec<Delivery>> {
    Ok(sqlx::query_as(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, \
           next_attempt_at = now() + make_interval(secs => $1) \
         WHERE id IN ( \
           SELECT id FROM webhook_deliveries \
           WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= now() \
           ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING id, job_id, url, status, attempts, created_at",
    )
    .bind(lease_secs)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

pub async fn delivered(db: &PgPool, id: Uuid, http_status: u16) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET delivered_at = now(), last_status = $2, last_error = NULL \
         WHERE id = $1",
    )
    .bind(id)
    .bind(http_status as i32)
    .execute(db)
    .await?;
    Ok(())
}

/// Records a failed attempt: due again after `retry_in_secs`, or given up
/// when that is `None`.
pub async fn failed(
    db: &PgPool,
    id: Uuid,
    http_status: Option<u16>,
    error: &str,
    retry_in_secs: Option<f64>,
) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET last_status = $2, last_error = $3, \
           next_attempt_at = now() + make_interval(secs => coalesce($4, 0)), \
           gave_up_at = CASE WHEN $4 IS NULL THEN now() END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(http_status.map(i32::from))
    .bind(error)
    .bind(retry_in_secs)
    .execute(db)
    .await?;
    Ok(())
}

/// A job's deliveries as recorded (for tests and operators).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryState {
    pub id: Uuid,
    pub status: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub gave_up_at: Option<DateTime<Utc>>,
}

pub async fn of_job(db: &PgPool, job: Uuid) -> Result<Vec<DeliveryState>> {
    Ok(sqlx::query_as(
        "SELECT id, status, attempts, last_status, last_error, delivered_at, gave_up_at \
         FROM webhook_deliveries WHERE job_id = $1 ORDER BY created_at",
    )
    .bind(job)
    .fetch_all(db)
    .await?)
}
