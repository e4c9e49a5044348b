//! The `idempotency_keys` table: one job per `Idempotency-Key` and client.
//! A key is remembered for [`KEY_LIFETIME_HOURS`]; after that it may be used
//! for a new request (clients retry within minutes, not days).

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

pub const KEY_LIFETIME_HOURS: i32 = 24;

pub async fn reserve(db: &PgPool, owner: Uuid, key: &str, fingerprint: &str) -> Result<KeyState> {
    // Expired keys, and reservations whose request died without releasing
    // them (its process crashed, or Postgres failed under it): a request
    // takes seconds, so one unfinished after two minutes never will finish.
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE owner_key = $1 AND key = $2 \
         AND (created_at < now() - make_interval(hours => $3) \
              OR (job_id IS NULL AND created_at < now() - interval '2 minutes'))",
    )
    .bind(owner)
    .bind(key)
    .bind(KEY_LIFETIME_HOURS)
    .execute(db)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (owner_key, key, fingerprint) VALUES ($1, $2, $3) \
         ON CONFLICT (owner_key, key) DO NOTHING",
    )
    .bind(owner)
    .bind(key)
    .bind(fingerprint)
    .execute(db)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(KeyState::Reserved);
    }
    let row: Option<(String, Option<Uuid>)> = sqlx::query_as(
        "SELECT fingerprint, job_id FROM idempotency_keys WHERE owner_key = $1 AND key = $2",
    )
    .bind(owner)
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
pub async fn complete(db: &PgPool, owner: Uuid, key: &str, job: Uuid) -> Result<()> {
    sqlx::query("UPDATE idempotency_keys SET job_id = $3 WHERE owner_key = $1 AND key = $2")
        .bind(owner)
        .bind(key)
        .bind(job)
        .execute(db)
        .await?;
    Ok(())
}

/// Frees a key whose request failed, so a retry can use it.
pub async fn release(db: &PgPool, owner: Uuid, key: &str) -> Result<()> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE owner_key = $1 AND key = $2 AND job_id IS NULL",
    )
    .bind(owner)
    .bind(key)
    .execute(db)
    .await?;
    Ok(())
}
