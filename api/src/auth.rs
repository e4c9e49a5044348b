//! Who is calling: every route except health, metrics, the docs and the
//! vote page needs `Authorization: Bearer <API key>`. The extractors here
//! check the key, its role and its rate limit, in that order.
//!
//! - [`Caller`]: any live key (reading the model list).
//! - [`ClientAuth`]: `client` or `admin` (submitting and reading jobs;
//!   clients see only their own).
//! - [`AdminAuth`]: `admin` (keys, comparisons, statistics, exports).
//! - [`VolunteerAuth`]: `volunteer` (voting; rating, if an expert).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use byteedit_jobs::JobRecord;
use byteedit_jobs::access::Role;
use byteedit_jobs::db::api_keys::{self, ApiKey};
use byteedit_jobs::db::feedback::Volunteer;

use crate::error::ApiError;
use crate::state::AppState;

/// The live API key behind the request.
#[derive(Debug, Clone)]
pub struct Caller(pub ApiKey);

impl Caller {
    /// Whether this caller may see `job` at all. Clients see their own jobs;
    /// admins every job. Others' jobs are "not found", not "forbidden", so
    /// ids cannot be probed.
    pub fn may_see(&self, job: &JobRecord) -> bool {
        match self.0.role {
            Role::Admin => true,
            Role::Client => job.owner_key == Some(self.0.id),
            Role::Volunteer => false,
        }
    }

    /// The owner filter for listings: `None` (all) for admins.
    pub fn owner_filter(&self) -> Option<uuid::Uuid> {
        (self.0.role != Role::Admin).then_some(self.0.id)
    }

    fn require(self, allowed: &[Role], what: &str) -> Result<Self, ApiError> {
        if allowed.contains(&self.0.role) {
            return Ok(self);
        }
        let roles: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        Err(ApiError::Forbidden(format!(
            "{what} needs a key with the role {}; this key (`{}`) is a `{}` key",
            roles.join(" or "),
            self.0.name,
            self.0.role
        )))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Extracted once per request even when a handler asks twice.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme name is case-insensitive (RFC 9110).
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "send an API key as `Authorization: Bearer <key>` (an admin makes keys with `byteedit keys create` or POST /v1/keys)".into(),
                )
            })?;
        let key = api_keys::authenticate(&state.backends.db, presented)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("unknown or revoked API key".into()))?;
        crate::limits::check_rate(state, &key).await?;
        let caller = Caller(key);
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// A `client` or `admin` key.
pub struct ClientAuth(pub Caller);

impl FromRequestParts<AppState> for ClientAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(Self(
            caller.require(&[Role::Client, Role::Admin], "this route")?,
        ))
    }
}

/// An `admin` key.
pub struct AdminAuth(pub Caller);

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(Self(caller.require(&[Role::Admin], "this route")?))
    }
}

/// A `volunteer` key, as the volunteer it votes for.
pub struct VolunteerAuth(pub Volunteer);

impl FromRequestParts<AppState> for VolunteerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let caller = caller.require(&[Role::Volunteer], "voting and rating")?;
        caller.0.volunteer.map(Self).ok_or_else(|| {
            ApiError::Internal(format!("volunteer key {} has no volunteer", caller.0.id))
        })
    }
}
