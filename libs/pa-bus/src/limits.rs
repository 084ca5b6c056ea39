//! Rate limits and quotas in Redis: fixed-window request counters (per user, per tenant) and
//! per-user daily token counters. Shared by every replica, so limits hold across the mesh.

use std::time::{SystemTime, UNIX_EPOCH};

use deadpool_redis::redis;
use pa_kit::redis::Pool;

use pa_kit::{ErrorCode, PaError};

fn redis_error(err: impl std::fmt::Display) -> PaError {
    tracing::warn!(%err, "redis (limits)");
    PaError::unavailable("Redis (rate limits) is unavailable; retry shortly")
        .with_retry_after_ms(1000)
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
    let user_key = crate::keys::rate_user(tenant, user, window);
    let tenant_key = crate::keys::rate_tenant(tenant, window);
    let (user_count, _, tenant_count, _): (u64, i64, u64, i64) =
        pa_kit::redis::bounded(pool, move |conn| {
            Box::pin(async move {
                redis::pipe()
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
            })
        })
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

const DAY_MS: u64 = 86_400_000;

fn day_key_of(tenant: &str, user: &str, day: u64) -> String {
    crate::keys::quota_tokens(tenant, user, day)
}

/// A run's share of its user's daily token budget, taken before the run starts and settled
/// against what it used when it ends (ADR 0131).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenReservation {
    /// Tokens held for the run.
    pub tokens: u64,
    /// The UTC day (days since the epoch) whose counter holds them.
    pub day: u64,
}

/// Takes the reservation and the check in one step, so runs started together cannot together
/// pass a budget that each of them alone fits: grants min(want, what is left), or -1.
const RESERVE_SCRIPT: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local budget = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
if used >= budget then return {-1, used} end
local grant = math.min(want, budget - used)
redis.call('INCRBY', KEYS[1], grant)
redis.call('EXPIRE', KEYS[1], 172800)
return {grant, used}
"#;

/// Reserves up to `want` tokens (at least 1) of the user's daily `budget` for one run; refuses
/// (429, retry at the next UTC day) when the budget is used up. `budget` 0 = unlimited: no
/// reservation. The run must not spend more than the reservation (its token limit is set to
/// it), and [`settle_tokens`] replaces the reservation by what it used.
pub async fn reserve_tokens(
    pool: &Pool,
    tenant: &str,
    user: &str,
    budget: u64,
    want: u64,
) -> Result<Option<TokenReservation>, PaError> {
    if budget == 0 {
        return Ok(None);
    }
    let now = now_ms();
    let day = now / DAY_MS;
    let until_tomorrow_ms = (day + 1) * DAY_MS - now;
    let day_key = day_key_of(tenant, user, day);
    let (grant, used): (i64, i64) = pa_kit::redis::bounded(pool, move |conn| {
        Box::pin(async move {
            redis::Script::new(RESERVE_SCRIPT)
                .key(&day_key)
                .arg(budget)
                .arg(want.max(1))
                .invoke_async(&mut *conn)
                .await
        })
    })
    .await
    .map_err(redis_error)?;
    if grant < 0 {
        return Err(PaError::new(
            ErrorCode::TooManyRequests,
            format!(
                "daily token budget used up ({used} of {budget} tokens, including runs still \
                 going); it resets at 00:00 UTC"
            ),
        )
        .with_retry_after_ms(until_tomorrow_ms));
    }
    Ok(Some(TokenReservation {
        tokens: grant as u64,
        day,
    }))
}

/// Replaces a run's reservation by the tokens it `used` (without a reservation, adds them to
/// today's count). A reservation of a day that is over is settled on that day's counter.
pub async fn settle_tokens(
    pool: &Pool,
    tenant: &str,
    user: &str,
    reservation: Option<TokenReservation>,
    used: u64,
) -> Result<(), PaError> {
    let (day, reserved) = match reservation {
        Some(r) => (r.day, r.tokens),
        None => (now_ms() / DAY_MS, 0),
    };
    let delta = used as i64 - reserved as i64;
    if delta == 0 {
        return Ok(());
    }
    let key = day_key_of(tenant, user, day);
    let _: (i64, i64) = pa_kit::redis::bounded(pool, move |conn| {
        Box::pin(async move {
            redis::pipe()
                .cmd("INCRBY")
                .arg(&key)
                .arg(delta)
                .cmd("EXPIRE")
                .arg(&key)
                .arg(2 * 86_400)
                .query_async(&mut *conn)
                .await
        })
    })
    .await
    .map_err(redis_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pa_kit::redis::real_redis;

    /// Fifty runs reserving at once never hold more than the budget, and settling gives back
    /// what a run did not use.
    #[tokio::test]
    async fn concurrent_reservations_never_pass_the_budget() {
        let pool = real_redis(8);
        let (tenant, user) = ("t-budget", format!("u-{}", uuid::Uuid::now_v7()));
        let budget = 1_000;
        let attempts = (0..50).map(|_| {
            let (pool, user) = (pool.clone(), user.clone());
            tokio::spawn(async move { reserve_tokens(&pool, tenant, &user, budget, 150).await })
        });
        let mut granted = Vec::new();
        let mut refused = 0;
        for attempt in attempts {
            match attempt.await.expect("task") {
                Ok(Some(r)) => granted.push(r),
                Ok(None) => panic!("a budget is set"),
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::TooManyRequests);
                    refused += 1;
                }
            }
        }
        let held: u64 = granted.iter().map(|r| r.tokens).sum();
        assert_eq!(held, budget, "the budget is handed out exactly, never more");
        assert_eq!(granted.len(), 7, "six of 150 and one of the 100 left");
        assert_eq!(refused, 43);
        // A run that used 50 of its 150 gives 100 back: the next run gets them.
        let first = granted[0];
        settle_tokens(&pool, tenant, &user, Some(first), first.tokens - 100)
            .await
            .expect("settle");
        let next = reserve_tokens(&pool, tenant, &user, budget, 500)
            .await
            .expect("room again");
        assert_eq!(next.map(|r| r.tokens), Some(100));
        // Unlimited: no reservation, nothing counted.
        assert_eq!(
            reserve_tokens(&pool, tenant, &user, 0, 500)
                .await
                .expect("unlimited"),
            None
        );
    }
}
