//! The generation of what a user's toolsets are made of (ADR 0251).
//!
//! svc-tools assembles a run's toolset from the user's integrations, the chat's selection and
//! the user's devices. Whenever any of them changes, svc-tools gives the user a new generation:
//! a fresh random token (never a counter, so a token lost with Redis and made again can never
//! equal an old one). An assembly reads the token *before* it reads what the toolset is made
//! of; a toolset assembled under a token describes the user's state at least as new as the
//! token, so svc-runs may reuse it for the same chat while the token stays. No token (Redis
//! restarted, the key evicted or expired) means nothing is reused. A generation is a user's of
//! one deployment (named by its `database`): deployments sharing one Redis never share one.

use deadpool_redis::redis;
use pa_kit::PaError;
use pa_kit::redis::Pool;

use crate::keys;

/// A token outlives any reuse of it by far; an idle user's key goes away by itself.
const TOKEN_TTL_SECS: u64 = 24 * 60 * 60;

fn redis_error(err: impl std::fmt::Display) -> PaError {
    tracing::warn!(%err, "redis (toolset generation)");
    PaError::unavailable("Redis (toolset generations) is unavailable; retry shortly")
        .with_retry_after_ms(1000)
}

fn fresh_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The user's current token, made if there is none (one round trip). For an assembly: call it
/// before reading what the toolset is made of.
pub async fn current(
    pool: &Pool,
    database: &str,
    tenant: &str,
    user: &str,
) -> Result<String, PaError> {
    let key = keys::toolset_generation(database, tenant, user);
    let token = fresh_token();
    let (current,): (Option<String>,) = pa_kit::redis::bounded(pool, move |conn| {
        Box::pin(async move {
            redis::pipe()
                .cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("EX")
                .arg(TOKEN_TTL_SECS)
                .ignore()
                .cmd("GET")
                .arg(&key)
                .query_async(&mut *conn)
                .await
        })
    })
    .await
    .map_err(redis_error)?;
    // Between the SET and the GET only another token can be written (never a delete), so the
    // key is there; an empty answer is refused all the same.
    current.ok_or_else(|| redis_error("the generation vanished between SET and GET"))
}

/// The user's current token, without making one: `None` when there is none.
pub async fn peek(
    pool: &Pool,
    database: &str,
    tenant: &str,
    user: &str,
) -> Result<Option<String>, PaError> {
    let key = keys::toolset_generation(database, tenant, user);
    pa_kit::redis::bounded(pool, move |conn| {
        Box::pin(async move { redis::cmd("GET").arg(&key).query_async(&mut *conn).await })
    })
    .await
    .map_err(redis_error)
}

/// Gives the user a new token: every toolset assembled before stops being reusable.
pub async fn renew(pool: &Pool, database: &str, tenant: &str, user: &str) -> Result<(), PaError> {
    let key = keys::toolset_generation(database, tenant, user);
    let token = fresh_token();
    pa_kit::redis::bounded(pool, move |conn| {
        Box::pin(async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("EX")
                .arg(TOKEN_TTL_SECS)
                .query_async::<()>(&mut *conn)
                .await
        })
    })
    .await
    .map_err(redis_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_stays_until_renewed_and_is_per_user() {
        let pool = pa_kit::redis::real_redis(4);
        let tenant = format!("t-{}", uuid::Uuid::new_v4());
        assert_eq!(peek(&pool, "db", &tenant, "u").await.unwrap(), None);
        let first = current(&pool, "db", &tenant, "u").await.unwrap();
        assert_eq!(current(&pool, "db", &tenant, "u").await.unwrap(), first);
        assert_eq!(
            peek(&pool, "db", &tenant, "u").await.unwrap(),
            Some(first.clone())
        );
        // Another user of the tenant has a generation of their own.
        let other = current(&pool, "db", &tenant, "v").await.unwrap();
        assert_ne!(other, first);
        renew(&pool, "db", &tenant, "u").await.unwrap();
        let second = peek(&pool, "db", &tenant, "u").await.unwrap().unwrap();
        assert_ne!(second, first);
        assert_eq!(current(&pool, "db", &tenant, "u").await.unwrap(), second);
        assert_eq!(peek(&pool, "db", &tenant, "v").await.unwrap(), Some(other));
        // The same user of another deployment sharing the Redis is someone else.
        assert_eq!(peek(&pool, "db2", &tenant, "u").await.unwrap(), None);
    }
}
