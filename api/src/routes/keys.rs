//! `/v1/keys`: API keys, for admins. `byteedit keys` does the same from a
//! shell with database access (which is how the first admin key is made).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use byteedit_jobs::access::Role;
use byteedit_jobs::db::api_keys::{self, ApiKey, NewKey};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::body::json;
use crate::auth::AdminAuth;
use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyIn {
    /// Who or what the key is for (for volunteers, the name shown in
    /// exports); 1 to 100 characters.
    pub name: String,
    pub role: Role,
    /// Volunteer keys only: may also rate single outputs.
    #[serde(default)]
    pub expert: bool,
    /// Volunteer keys only: another key for this existing volunteer (a new
    /// device, or after revoking a leaked key), who keeps their votes and
    /// expert flag; otherwise a new volunteer is registered.
    pub volunteer_id: Option<Uuid>,
    /// Requests a minute for this key (1 to 1,000,000); default: the API's
    /// `--rate-limit`.
    pub rate_limit: Option<u32>,
}

/// A key's record (never its secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyOut {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    /// Volunteer keys: the volunteer id their votes are recorded under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volunteer_id: Option<Uuid>,
    pub expert: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for KeyOut {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            volunteer_id: k.volunteer.as_ref().map(|v| v.id),
            expert: k.volunteer.as_ref().is_some_and(|v| v.expert),
            name: k.name,
            role: k.role,
            rate_limit: k.rate_limit,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A new key: the record and, this once, the key itself.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IssuedKeyOut {
    #[serde(flatten)]
    pub record: KeyOut,
    /// Send as `Authorization: Bearer <key>`. Shown only now: only a hash of
    /// it is stored.
    pub key: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyOut>,
}

/// Checks a new key's fields; shared with `byteedit keys create`.
pub fn check_new_key(
    name: &str,
    role: Role,
    expert: bool,
    volunteer: Option<Uuid>,
    rate_limit: Option<u32>,
) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid(
            "invalid_field",
            "`name` must be 1 to 100 characters",
        ));
    }
    // Postgres text cannot hold NUL, and no name needs control characters.
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "invalid_field",
            "`name` must not contain control characters",
        ));
    }
    if expert && role != Role::Volunteer {
        return Err(ApiError::invalid(
            "invalid_field",
            "`expert` applies to `volunteer` keys only",
        ));
    }
    if volunteer.is_some() && (role != Role::Volunteer || expert) {
        return Err(ApiError::invalid(
            "invalid_field",
            "`volunteer_id` applies to `volunteer` keys only, without `expert` (the volunteer keeps their own flag)",
        ));
    }
    if rate_limit.is_some_and(|n| !(1..=1_000_000).contains(&n)) {
        return Err(ApiError::invalid(
            "invalid_field",
            "`rate_limit` must be 1 to 1000000 requests a minute",
        ));
    }
    Ok(())
}

/// Makes a key. For the `volunteer` role this also registers the volunteer
/// (give them the key; they paste it into `/vote`).
#[utoipa::path(post, path = "/v1/keys", tag = "keys",
    request_body = KeyIn,
    responses(
        (status = 201, description = "Created; `key` is shown only now", body = IssuedKeyOut),
        (status = 422, description = "A bad field", body = ErrorResponse),
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    _admin: AdminAuth,
    body: Result<Json<KeyIn>, JsonRejection>,
) -> Result<(StatusCode, Json<IssuedKeyOut>), ApiError> {
    let body = json(body)?;
    check_new_key(
        &body.name,
        body.role,
        body.expert,
        body.volunteer_id,
        body.rate_limit,
    )?;
    if let Some(id) = body.volunteer_id
        && !api_keys::volunteer_exists(&state.backends.db, id).await?
    {
        return Err(ApiError::invalid(
            "invalid_field",
            format!("no volunteer `{id}`; see `volunteer_id` in GET /v1/keys"),
        ));
    }
    let (record, key) = api_keys::create(
        &state.backends.db,
        &NewKey {
            name: body.name.trim(),
            role: body.role,
            expert: body.expert,
            volunteer: body.volunteer_id,
            rate_limit: body.rate_limit,
        },
    )
    .await?;
    tracing::info!(key = %record.id, role = %record.role, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(IssuedKeyOut {
            record: record.into(),
            key,
        }),
    ))
}

/// Every key, newest first, revoked ones included.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, description = "The keys", body = KeyList)))]
pub async fn list_keys(
    State(state): State<AppState>,
    _admin: AdminAuth,
) -> Result<Json<KeyList>, ApiError> {
    let keys = api_keys::list(&state.backends.db).await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(KeyOut::from).collect(),
    }))
}

/// Revokes a key at once (its jobs and votes are kept).
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = Uuid, Path, description = "Key id")),
    responses(
        (status = 200, description = "Revoked", body = KeyOut),
        (status = 404, description = "No such key", body = ErrorResponse),
    ))]
pub async fn revoke_key(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<KeyOut>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no key `{id}`"));
    let key_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let key = api_keys::revoke(&state.backends.db, key_id)
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(key = %key.id, "API key revoked");
    Ok(Json(key.into()))
}
