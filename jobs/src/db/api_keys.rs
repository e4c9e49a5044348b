//! The `api_keys` table (and the volunteer a `volunteer` key votes as).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::access::{self, IssuedKey, Role};
use crate::db::feedback::Volunteer;
use crate::error::{JobsError, Result};

/// A key's record; never its secret.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    /// Set for `volunteer` keys.
    pub volunteer: Option<Volunteer>,
    /// Requests per minute; `None`: the API's default.
    pub rate_limit: Option<u32>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    name: String,
    role: String,
    secret_hash: Vec<u8>,
    volunteer_id: Option<Uuid>,
    volunteer_name: Option<String>,
    expert: Option<bool>,
    rate_limit: Option<i32>,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<KeyRow> for ApiKey {
    type Error = JobsError;
    fn try_from(r: KeyRow) -> Result<Self> {
        Ok(Self {
            volunteer: r.volunteer_id.map(|id| Volunteer {
                id,
                name: r.volunteer_name.clone().unwrap_or_default(),
                expert: r.expert.unwrap_or(false),
            }),
            id: r.id,
            name: r.name,
            role: r.role.parse().map_err(JobsError::Corrupt)?,
            rate_limit: r.rate_limit.map(|n| n as u32),
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        })
    }
}

macro_rules! key_select {
    () => {
        "SELECT k.id, k.name, k.role, k.secret_hash, k.volunteer_id, v.name AS volunteer_name, \
         v.expert, k.rate_limit, \
         k.created_at, k.last_used_at, k.revoked_at \
         FROM api_keys k LEFT JOIN volunteers v ON v.id = k.volunteer_id "
    };
}

/// What a new key is for.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    pub name: &'a str,
    pub role: Role,
    /// Volunteer keys only: may also rate single outputs.
    pub expert: bool,
    /// Volunteer keys only: a new key for this existing volunteer (who keeps
    /// their votes and expert flag) instead of a new volunteer.
    pub volunteer: Option<Uuid>,
    pub rate_limit: Option<u32>,
}

/// Records a key (and, for the `volunteer` role, its volunteer) and returns
/// it with the key text, which is shown only now.
pub async fn create(db: &PgPool, new: &NewKey<'_>) -> Result<(ApiKey, String)> {
    let issued = IssuedKey::generate();
    let mut tx = db.begin().await?;
    let volunteer = if let Some(existing) = new.volunteer {
        Some(existing)
    } else if new.role == Role::Volunteer {
        let id = Uuid::now_v7();
        sqlx::query("INSERT INTO volunteers (id, name, expert) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(new.name)
            .bind(new.expert)
            .execute(&mut *tx)
            .await?;
        Some(id)
    } else {
        None
    };
    sqlx::query(
        "INSERT INTO api_keys (id, name, role, secret_hash, volunteer_id, rate_limit) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(issued.id)
    .bind(new.name)
    .bind(new.role.as_str())
    .bind(&issued.secret_hash)
    .bind(volunteer)
    .bind(new.rate_limit.map(|n| n as i32))
    .execute(&mut *tx)
    .await?;
    let row: KeyRow = sqlx::query_as(concat!(key_select!(), "WHERE k.id = $1"))
        .bind(issued.id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((row.try_into()?, issued.text))
}

/// The live key that `presented` is, or `None` for anything else (malformed,
/// unknown, wrong secret, revoked): callers must not tell these apart.
pub async fn authenticate(db: &PgPool, presented: &str) -> Result<Option<ApiKey>> {
    let Some((id, secret)) = access::parse(presented) else {
        return Ok(None);
    };
    let row: Option<KeyRow> = sqlx::query_as(concat!(
        key_select!(),
        "WHERE k.id = $1 AND k.revoked_at IS NULL"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?;
    let Some(row) = row.filter(|r| access::verify(secret, &r.secret_hash)) else {
        return Ok(None);
    };
    // Written at most once a minute per key, not on every request.
    let stale = row
        .last_used_at
        .is_none_or(|t| Utc::now() - t > chrono::Duration::minutes(1));
    if stale {
        sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = $1")
            .bind(id)
            .execute(db)
            .await?;
    }
    row.try_into().map(Some)
}

/// Whether volunteer `id` exists (to give them another key).
pub async fn volunteer_exists(db: &PgPool, id: Uuid) -> Result<bool> {
    let (found,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM volunteers WHERE id = $1)")
            .bind(id)
            .fetch_one(db)
            .await?;
    Ok(found)
}

/// Every key, newest first (revoked ones too, for the record).
pub async fn list(db: &PgPool) -> Result<Vec<ApiKey>> {
    let rows: Vec<KeyRow> = sqlx::query_as(concat!(key_select!(), "ORDER BY k.id DESC"))
        .fetch_all(db)
        .await?;
    rows.into_iter().map(ApiKey::try_from).collect()
}

/// Revokes a key at once; `None` if there is no such key. Revoking twice
/// keeps the first time.
pub async fn revoke(db: &PgPool, id: Uuid) -> Result<Option<ApiKey>> {
    sqlx::query("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    let row: Option<KeyRow> = sqlx::query_as(concat!(key_select!(), "WHERE k.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.map(ApiKey::try_from).transpose()
}
