//! The `reward_models` table: the registry of trained reward checkpoints
//! (`byteedit train-reward --register`), listed by `GET /v1/rewards`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;

/// A checkpoint to register; its version is the next one of its name.
#[derive(Debug, Clone)]
pub struct NewRewardModel {
    pub name: String,
    /// `aesthetic`, `alignment` or `coherence`.
    pub kind: String,
    /// The `--init` folder it started from, if any.
    pub parent_path: Option<String>,
    pub location: String,
    pub data: serde_json::Value,
    /// `accuracy` or `auc`.
    pub metric: String,
    pub held_out_score: f64,
    pub score_mean: f64,
    pub score_std: f64,
    pub steps: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RewardModel {
    pub id: Uuid,
    pub name: String,
    pub kind: String,
    pub version: i32,
    pub parent_id: Option<Uuid>,
    pub parent_path: Option<String>,
    pub location: String,
    pub data: serde_json::Value,
    pub metric: String,
    pub held_out_score: f64,
    pub score_mean: f64,
    pub score_std: f64,
    pub steps: i64,
    pub created_at: DateTime<Utc>,
}

/// The columns of [`RewardModel`], as a literal for `concat!`.
macro_rules! columns {
    () => {
        "id, name, kind, version, parent_id, parent_path, location, data, metric, \
         held_out_score, score_mean, score_std, steps, created_at"
    };
}

/// Registers a checkpoint as the next version of its name. Its parent is
/// the latest registered checkpoint stored in the `--init` folder, if any.
/// Two registrations of one name at once cannot share a version (the
/// unique constraint); the loser retries with the next one.
pub async fn register(db: &PgPool, new: &NewRewardModel) -> Result<RewardModel> {
    const QUERY: &str = concat!(
        "INSERT INTO reward_models (id, name, kind, version, parent_id, parent_path, location, \
         data, metric, held_out_score, score_mean, score_std, steps) \
         SELECT $1, $2, $3, COALESCE((SELECT max(version) FROM reward_models WHERE name = $2), 0) + 1, \
         (SELECT id FROM reward_models WHERE location = $4 ORDER BY created_at DESC LIMIT 1), \
         $4, $5, $6, $7, $8, $9, $10, $11 \
         RETURNING ",
        columns!()
    );
    let mut attempt = 0;
    loop {
        let result = sqlx::query_as::<_, RewardModel>(QUERY)
            .bind(Uuid::now_v7())
            .bind(&new.name)
            .bind(&new.kind)
            .bind(&new.parent_path)
            .bind(&new.location)
            .bind(&new.data)
            .bind(&new.metric)
            .bind(new.held_out_score)
            .bind(new.score_mean)
            .bind(new.score_std)
            .bind(new.steps)
            .fetch_one(db)
            .await;
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() && attempt < 3 => attempt += 1,
            other => return Ok(other?),
        }
    }
}

/// Every registered checkpoint, newest first; `kind` filters.
pub async fn list(db: &PgPool, kind: Option<&str>) -> Result<Vec<RewardModel>> {
    const QUERY: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM reward_models WHERE ($1::text IS NULL OR kind = $1) ORDER BY created_at DESC, id DESC"
    );
    Ok(sqlx::query_as::<_, RewardModel>(QUERY)
        .bind(kind)
        .fetch_all(db)
        .await?)
}
