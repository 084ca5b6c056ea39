//! Rate limits and quotas in Redis: fixed-window request counters (per user, per tenant) and
//! per-user daily token counters. Shared by every replica, so limits hold across the mesh.

use std::time::{SystemTime, UNIX_EPOCH};

use deadpool_redis::Pool;
use deadpool_redis::redis;

use crate::error::{ErrorCode, PaError};

fn redis_error(err: impl std::fmt::Display) -> PaError {
    tracing::warn!(%err, "redis (limits)");
    PaError::unavailable("rate limiter unavailable").with_retry_after_ms(1000)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Per-minute request limits; 0 = unlimited.
#[derive(Clone, Copy, Debug)]
pub struct RateLimits {
    pub per_user_per_minute: u64,
    pub per_tenant_per_minute: u64,
}

/// Counts one request of `user` in `tenant`; refuses with 429 and a retry hint once a limit of
/// the current minute is used up.
pub async fn check_rate(
    pool: &Pool,
    limits: RateLimits,
    tenant: &str,
    user: &str,
) -> Result<(), PaError> {
    if limits.per_user_per_minute == 0 && limits.per_tenant_per_minute == 0 {
        return Ok(());
    }
    let now = now_ms();
    let window = now / 60_000;
    let user_key = format!("pa:rl:u:{tenant}:{user}:{window}");
    let tenant_key = format!("pa:rl:t:{tenant}:{window}");
    let mut conn = pool.get().await.map_err(redis_error)?;
    let (user_count, _, tenant_count, _): (u64, i64, u64, i64) = redis::pipe()
        .cmd("INCR")
        .arg(&user_key)
        .cmd("EXPIRE")
        .arg(&user_key)
        .arg(120)
        .cmd("INCR")
        .arg(&tenant_key)
        .cmd("EXPIRE")
        .arg(&tenant_key)
        .arg(120)
        .query_async(&mut *conn)
        .await
        .map_err(redis_error)?;
    let retry_after_ms = (window + 1) * 60_000 - now;
    let over = |count: u64, limit: u64| limit > 0 && count > limit;
    if over(user_count, limits.per_user_per_minute) {
        return Err(PaError::new(
            ErrorCode::TooManyRequests,
            format!(
                "rate limit: at most {} requests per minute per user",
                limits.per_user_per_minute
            ),
        )
        .with_retry_after_ms(retry_after_ms));
    }
    if over(tenant_count, limits.per_tenant_per_minute) {
        return Err(PaError::new(
            ErrorCode::TooManyRequests,
            format!(
                "rate limit: at most {} requests per minute for the tenant",
                limits.per_tenant_per_minute
            ),
        )
        .with_retry_after_ms(retry_after_ms));
    }
    Ok(())
}

fn day_key(tenant: &str, user: &str) -> (String, u64) {
    let now = now_ms();
    let day = now / 86_400_000;
    (
        format!("pa:quota:tokens:{tenant}:{user}:{day}"),
        (day + 1) * 86_400_000 - now,
    )
}

/// Adds a finished run's tokens to the user's count of the day (UTC).
pub async fn add_tokens(pool: &Pool, tenant: &str, user: &str, tokens: u64) -> Result<(), PaError> {
    if tokens == 0 {
        return Ok(());
    }
    let (key, _) = day_key(tenant, user);
    let mut conn = pool.get().await.map_err(redis_error)?;
    let _: (i64, i64) = redis::pipe()
        .cmd("INCRBY")
        .arg(&key)
        .arg(tokens)
        .cmd("EXPIRE")
        .arg(&key)
        .arg(2 * 86_400)
        .query_async(&mut *conn)
        .await
        .map_err(redis_error)?;
    Ok(())
}

/// Refuses (429, retry at the next UTC day) when the user's daily token budget is used up;
/// `budget` 0 = unlimited.
pub async fn check_token_budget(
    pool: &Pool,
    tenant: &str,
    user: &str,
    budget: u64,
) -> Result<(), PaError> {
    if budget == 0 {
        return Ok(());
    }
    let (key, until_tomorrow_ms) = day_key(tenant, user);
    let mut conn = pool.get().await.map_err(redis_error)?;
    let used: Option<u64> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut *conn)
        .await
        .map_err(redis_error)?;
    let used = used.unwrap_or(0);
    if used >= budget {
        return Err(PaError::new(
            ErrorCode::TooManyRequests,
            format!(
                "daily token budget used up ({used} of {budget} tokens); it resets at 00:00 UTC"
            ),
        )
        .with_retry_after_ms(until_tomorrow_ms));
    }
    Ok(())
}
