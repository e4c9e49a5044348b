//! The `idempotency_keys` table: one job per `Idempotency-Key`.

use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;

/// What a key says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// First use: this request owns the key and must `complete` or `release` it.
    Reserved,
    /// Used before for the same request, which created this job.
    Done(Uuid),
    /// Used before for the same request, which is still being handled.
    InFlight,
    /// Used before for a different request.
    Mismatch,
}

pub async fn reserve(db: &PgPool, key: &str, fingerprint: &str) -> Result<KeyState> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (key, fingerprint) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(fingerprint)
    .execute(db)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(KeyState::Reserved);
    }
    let row: Option<(String, Option<Uuid>)> =
        sqlx::query_as("SELECT fingerprint, job_id FROM idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_optional(db)
            .await?;
    Ok(match row {
        Some((f, _)) if f != fingerprint => KeyState::Mismatch,
        Some((_, Some(job))) => KeyState::Done(job),
        Some((_, None)) => KeyState::InFlight,
        // Released between the two statements: the caller may try again.
        None => KeyState::InFlight,
    })
}

/// Records the job the key's request created.
pub async fn complete(db: &PgPool, key: &str, job: Uuid) -> Result<()> {
    sqlx::query("UPDATE idempotency_keys SET job_id = $2 WHERE key = $1")
        .bind(key)
        .bind(job)
        .execute(db)
        .await?;
    Ok(())
}

/// Frees a key whose request failed, so a retry can use it.
pub async fn release(db: &PgPool, key: &str) -> Result<()> {
    sqlx::query("DELETE FROM idempotency_keys WHERE key = $1 AND job_id IS NULL")
        .bind(key)
        .execute(db)
        .await?;
    Ok(())
}
