//! Volunteer tokens: `Authorization: Bearer <token>` on the voting and
//! rating routes. They identify who voted; they grant nothing else (API
//! keys for submitting edits are a separate credential).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use byteedit_jobs::db::feedback::{self, Volunteer};

use crate::error::ApiError;
use crate::state::AppState;

/// The volunteer behind the request's bearer token.
pub struct VolunteerAuth(pub Volunteer);

impl FromRequestParts<AppState> for VolunteerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "send your volunteer token as `Authorization: Bearer <token>` (tokens come from POST /v1/volunteers)".into(),
                )
            })?;
        feedback::volunteer_by_token(&state.backends.db, token)
            .await?
            .map(Self)
            .ok_or_else(|| ApiError::Unauthorized("unknown volunteer token".into()))
    }
}
