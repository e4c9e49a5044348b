//! A per-key request meter in Redis, shared by every API process.
//!
//! GCRA ("leaky bucket as a meter"): one value per key, the theoretical
//! arrival time of the next request. Redis's clock is used so that API
//! processes on different machines agree.

use redis::Script;
use redis::aio::ConnectionManager;

use crate::error::Result;

const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then return allow_at - now end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now + 1000)
return 0
";

/// Spends one request of `id`'s allowance (`per_minute`, in bursts of up to
/// `burst`): `0` when allowed, else the milliseconds until it would be.
pub async fn spend(
    conn: &ConnectionManager,
    prefix: &str,
    id: &str,
    per_minute: u32,
    burst: u32,
) -> Result<u64> {
    let interval_ms = (60_000 / per_minute.max(1)).max(1);
    let mut conn = conn.clone();
    Ok(Script::new(GCRA)
        .key(format!("{prefix}:ratelimit:{id}"))
        .arg(interval_ms)
        .arg(burst.max(1))
        .invoke_async(&mut conn)
        .await?)
}
