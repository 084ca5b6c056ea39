//! The Redis pool.

use std::time::Duration;

use deadpool_redis::{Config, Pool, Runtime};

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid REDIS_URL: {0}")]
    Config(#[from] deadpool_redis::CreatePoolError),
}

/// A pool sized for blocking readers: each following SSE stream holds one connection while it
/// waits in XREAD BLOCK.
///
/// deadpool-redis recycles a pooled connection with a PING before handing it out, so a
/// connection broken by a Redis restart is replaced, never used. Opening and recycling are
/// bounded in time, so an unreachable Redis fails a request (`unavailable`) instead of holding
/// it; waiting for a free connection is not (a full pool of followers is not an outage).
pub fn pool(url: &str, max_size: usize) -> Result<Pool, RedisError> {
    let mut config = Config::from_url(url);
    let mut pool = deadpool_redis::PoolConfig::new(max_size);
    pool.timeouts.create = Some(Duration::from_secs(3));
    pool.timeouts.recycle = Some(Duration::from_secs(2));
    config.pool = Some(pool);
    Ok(config.create_pool(Some(Runtime::Tokio1))?)
}

/// Whether `err` says the connection to Redis failed (refused, dropped, timed out, or Redis
/// still loading its data after a restart), rather than anything about the command.
pub fn is_connection_error(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.is_timeout()
        || err.is_unrecoverable_error()
        || matches!(
            err.kind(),
            redis::ErrorKind::BusyLoadingError | redis::ErrorKind::TryAgain
        )
}

/// A failure to get a pooled Redis connection or to run an idempotent command on it.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("Redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl From<CommandError> for crate::PaError {
    fn from(err: CommandError) -> Self {
        match err {
            CommandError::Pool(e) => e.into(),
            CommandError::Redis(e) => e.into(),
        }
    }
}

/// Runs an idempotent command (a read, or a write whose repetition changes nothing) on a pooled
/// connection and, when the connection fails under it, once more on another one.
pub async fn retry_idempotent<T, F>(pool: &Pool, mut command: F) -> Result<T, CommandError>
where
    F: for<'c> FnMut(
        &'c mut deadpool_redis::Connection,
    ) -> futures::future::BoxFuture<'c, redis::RedisResult<T>>,
{
    let mut conn = pool.get().await?;
    match command(&mut conn).await {
        Err(err) if is_connection_error(&err) => {
            tracing::info!(%err, "Redis connection failed; retrying once on another one");
            // The broken connection must not go back to the pool.
            drop(deadpool_redis::Connection::take(conn));
            let mut conn = pool.get().await?;
            Ok(command(&mut conn).await?)
        }
        other => Ok(other?),
    }
}

/// A pool of `size` on the real Redis (REDIS_URL, default 127.0.0.1:6379), for tests.
#[cfg(test)]
pub(crate) fn real_redis(size: usize) -> deadpool_redis::Pool {
    let url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| crate::config::DEFAULT_REDIS_URL.to_string());
    let Ok(pool) = pool(&url, size) else {
        panic!("REDIS_URL is not valid");
    };
    pool
}
