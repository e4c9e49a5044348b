//! `POST /v1/volunteers`: a token for voting (and, for experts, rating).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use byteedit_jobs::db::feedback;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::body::json;
use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVolunteer {
    /// Shown in exports and logs; 1 to 100 characters.
    pub name: String,
    /// Experts may also rate single outputs (`POST /v1/jobs/{id}/ratings`);
    /// registering one needs the `X-Admin-Token` header.
    #[serde(default)]
    pub expert: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VolunteerOut {
    pub id: Uuid,
    pub name: String,
    pub expert: bool,
    /// The bearer token; shown only now (only its hash is stored).
    pub token: String,
}

/// Registers a volunteer and returns their token.
#[utoipa::path(post, path = "/v1/volunteers", tag = "feedback",
    request_body = NewVolunteer,
    responses(
        (status = 201, description = "Registered", body = VolunteerOut),
        (status = 400, description = "The body is not JSON", body = ErrorResponse),
        (status = 403, description = "An expert without the admin token", body = ErrorResponse),
        (status = 413, description = "The body is larger than the route's limit", body = ErrorResponse),
        (status = 422, description = "Bad name", body = ErrorResponse),
    ))]
pub async fn create_volunteer(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<NewVolunteer>, JsonRejection>,
) -> Result<(StatusCode, Json<VolunteerOut>), ApiError> {
    let body = json(body)?;
    if body.expert {
        let given = headers.get("x-admin-token").and_then(|v| v.to_str().ok());
        // Compare digests, so the time taken says nothing about the secret.
        let digest = |s: &str| Sha256::digest(s.as_bytes());
        let allowed = match (&state.config.admin_token, given) {
            (Some(secret), Some(given)) => digest(secret) == digest(given),
            _ => false,
        };
        if !allowed {
            return Err(ApiError::Forbidden(
                "registering an expert needs the `X-Admin-Token` header with the API's `--admin-token`".into(),
            ));
        }
    }
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
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
    let (v, token) = feedback::create_volunteer(&state.backends.db, name, body.expert).await?;
    Ok((
        StatusCode::CREATED,
        Json(VolunteerOut {
            id: v.id,
            name: v.name,
            expert: v.expert,
            token,
        }),
    ))
}
