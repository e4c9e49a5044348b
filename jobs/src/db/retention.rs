//! Retention: which finished jobs lose their images, in two steps (mark
//! expired, then purge the files), so a sweep that dies half-way is simply
//! finished by the next one.

use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;

/// Marks up to `limit` jobs that ended more than `older_than_secs` ago as
/// expired and answers their ids. Jobs that feedback references (a
/// comparison or a rating) are exempt: their images are reward-model
/// training data. Rows another sweeper holds are skipped (`SKIP LOCKED`), so
/// several API replicas share the work.
///
/// Two statements in one transaction, because one would race with new
/// feedback: an `UPDATE` re-checks only the row it locks, not the `NOT
/// EXISTS` conditions, so a rating committed after its snapshot would go
/// unseen. Here the candidates are locked first; feedback inserts share-lock
/// the job and so wait for this transaction (then see it expired); and the
/// second statement takes a fresh snapshot, which holds every rating or
/// comparison committed before the locks were taken.
pub async fn expire_due(db: &PgPool, older_than_secs: f64, limit: i64) -> Result<Vec<Uuid>> {
    let mut tx = db.begin().await?;
    let candidates: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT j.id FROM jobs j \
         WHERE j.expired_at IS NULL AND j.finished_at IS NOT NULL \
           AND j.finished_at < now() - make_interval(secs => $1) \
           AND NOT EXISTS (SELECT 1 FROM comparisons c \
                           WHERE c.candidate_job = j.id OR c.baseline_job = j.id) \
           AND NOT EXISTS (SELECT 1 FROM ratings r WHERE r.job_id = j.id) \
         ORDER BY j.finished_at LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(older_than_secs)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let ids: Vec<Uuid> = candidates.into_iter().map(|(id,)| id).collect();
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "UPDATE jobs j SET expired_at = now() WHERE j.id = ANY($1) \
           AND NOT EXISTS (SELECT 1 FROM comparisons c \
                           WHERE c.candidate_job = j.id OR c.baseline_job = j.id) \
           AND NOT EXISTS (SELECT 1 FROM ratings r WHERE r.job_id = j.id) \
         RETURNING j.id",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Expired jobs whose files may still exist, oldest first.
pub async fn purge_due(db: &PgPool, limit: i64) -> Result<Vec<Uuid>> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM jobs WHERE expired_at IS NOT NULL AND purged_at IS NULL \
         ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Records that every file of `job` is gone.
pub async fn mark_purged(db: &PgPool, job: Uuid) -> Result<()> {
    sqlx::query("UPDATE jobs SET purged_at = now() WHERE id = $1")
        .bind(job)
        .execute(db)
        .await?;
    Ok(())
}
