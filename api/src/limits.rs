//! Keeping greedy clients and floods out: a per-key rate limit (kept in
//! Redis, see `byteedit_jobs::rate_limit`) and an admission limit on the
//! queue's depth. Both answer 429 with `Retry-After`.

use byteedit_jobs::db;
use byteedit_jobs::db::api_keys::ApiKey;

use crate::error::ApiError;
use crate::state::AppState;

/// Spends one request of `key`'s allowance, or refuses with the wait.
pub async fn check_rate(state: &AppState, key: &ApiKey) -> Result<(), ApiError> {
    let limits = &state.settings.rate;
    let per_minute = key.rate_limit.unwrap_or(limits.per_minute).max(1);
    // A key with a low limit of its own gets a burst no larger than it.
    let burst = limits.burst.clamp(1, per_minute);
    let backends = &state.backends;
    let id = key.id.to_string();
    match byteedit_jobs::rate_limit::spend(&backends.conn, &backends.prefix, &id, per_minute, burst)
        .await
    {
        Ok(0) => Ok(()),
        Ok(wait_ms) => Err(ApiError::TooManyRequests {
            code: "rate_limited",
            message: format!(
                "this key may make {per_minute} requests a minute (bursts of {burst}); slow down"
            ),
            retry_after_secs: wait_ms.div_ceil(1000).max(1),
        }),
        // A limiter outage must not take the API down with it: let the
        // request through (the queue itself is still guarded by admission).
        Err(e) => {
            tracing::warn!("rate limiter unavailable, request let through: {e}");
            Ok(())
        }
    }
}

/// Minutes of finished jobs that tell the workers' pace.
const PACE_MINUTES: i32 = 5;

/// Refuses a new job for `model` while its queue is at `--max-queued`.
/// `Retry-After` is the time the workers need, at their recent pace, to
/// bring the queue back under the limit.
pub async fn admit(state: &AppState, model: &str) -> Result<(), ApiError> {
    let limit = state.settings.rate.max_queued;
    let (queued, finished) = db::jobs::backlog(&state.backends.db, model, PACE_MINUTES).await?;
    if queued < limit {
        return Ok(());
    }
    let excess = queued + 1 - limit;
    let window = PACE_MINUTES as u64 * 60;
    let retry_after_secs = if finished > 0 {
        (excess * window).div_ceil(finished).clamp(1, 600)
    } else {
        60
    };
    Err(ApiError::TooManyRequests {
        code: "queue_full",
        message: format!("model `{model}` has {queued} jobs waiting, its limit; retry later"),
        retry_after_secs,
    })
}
