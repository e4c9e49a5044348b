//! The `models` and `workers` tables: which models exist and who serves them.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::Result;
use crate::ids::WorkerId;
use crate::job::ModelInfo;

/// A worker that has not been seen for this long no longer counts as serving.
pub const WORKER_TIMEOUT_SECS: i64 = 30;

/// Records a starting worker and the models it serves (their defaults are
/// updated, so a new model version's defaults take effect).
pub async fn register_worker(
    db: &PgPool,
    id: WorkerId,
    name: &str,
    models: &[ModelInfo],
) -> Result<()> {
    let mut tx = db.begin().await?;
    for m in models {
        sqlx::query(
            "INSERT INTO models (name, vae_scale_factor, default_steps, max_steps, \
             default_guidance_scale, default_scheduler, schedulers, native_size, \
             erase_negative_prompt) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (name) DO UPDATE SET vae_scale_factor = $2, default_steps = $3, \
             max_steps = $4, default_guidance_scale = $5, default_scheduler = $6, \
             schedulers = $7, native_size = $8, erase_negative_prompt = $9, updated_at = now()",
        )
        .bind(&m.name)
        .bind(m.vae_scale_factor as i32)
        .bind(m.default_steps as i32)
        .bind(m.max_steps as i32)
        .bind(m.default_guidance_scale)
        .bind(&m.default_scheduler)
        .bind(&m.schedulers)
        .bind(m.native_size as i32)
        .bind(&m.erase_negative_prompt)
        .execute(&mut *tx)
        .await?;
    }
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    sqlx::query("INSERT INTO workers (id, name, models) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(&names)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn worker_seen(db: &PgPool, id: WorkerId) -> Result<()> {
    sqlx::query("UPDATE workers SET last_seen_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn worker_stopped(db: &PgPool, id: WorkerId) -> Result<()> {
    sqlx::query("UPDATE workers SET stopped_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// A model and how many live workers serve it.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub info: ModelInfo,
    pub workers: u32,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ModelRow {
    name: String,
    vae_scale_factor: i32,
    default_steps: i32,
    max_steps: i32,
    default_guidance_scale: f64,
    default_scheduler: String,
    schedulers: Vec<String>,
    native_size: i32,
    erase_negative_prompt: String,
    updated_at: DateTime<Utc>,
    workers: i64,
}

impl From<ModelRow> for ModelStatus {
    fn from(r: ModelRow) -> Self {
        Self {
            info: ModelInfo {
                name: r.name,
                vae_scale_factor: r.vae_scale_factor as u32,
                default_steps: r.default_steps as u32,
                max_steps: r.max_steps as u32,
                default_guidance_scale: r.default_guidance_scale,
                default_scheduler: r.default_scheduler,
                schedulers: r.schedulers,
                native_size: r.native_size as u32,
                erase_negative_prompt: r.erase_negative_prompt,
            },
            workers: r.workers as u32,
            updated_at: r.updated_at,
        }
    }
}

macro_rules! model_query {
    ($where:literal) => {
        concat!(
            "SELECT m.name, m.vae_scale_factor, m.default_steps, m.max_steps, \
             m.default_guidance_scale, m.default_scheduler, m.schedulers, m.native_size, \
             m.erase_negative_prompt, m.updated_at, \
             (SELECT count(*) FROM workers w WHERE m.name = ANY(w.models) \
              AND w.stopped_at IS NULL \
              AND w.last_seen_at > now() - make_interval(secs => $1)) AS workers \
             FROM models m ",
            $where
        )
    };
}

/// Every model ever served, with its live worker count, by name.
pub async fn list(db: &PgPool) -> Result<Vec<ModelStatus>> {
    let rows: Vec<ModelRow> = sqlx::query_as(model_query!("ORDER BY m.name"))
        .bind(WORKER_TIMEOUT_SECS as f64)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(ModelStatus::from).collect())
}

pub async fn get(db: &PgPool, name: &str) -> Result<Option<ModelStatus>> {
    let row: Option<ModelRow> = sqlx::query_as(model_query!("WHERE m.name = $2"))
        .bind(WORKER_TIMEOUT_SECS as f64)
        .bind(name)
        .fetch_optional(db)
        .await?;
    Ok(row.map(ModelStatus::from))
}
