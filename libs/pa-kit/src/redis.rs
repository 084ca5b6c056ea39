//! The Redis pool.

use deadpool_redis::{Config, Pool, Runtime};

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid REDIS_URL: {0}")]
    Config(#[from] deadpool_redis::CreatePoolError),
}

/// A pool sized for blocking readers: each following SSE stream holds one connection while it
/// waits in XREAD BLOCK.
pub fn pool(url: &str, max_size: usize) -> Result<Pool, RedisError> {
    let mut config = Config::from_url(url);
    config.pool = Some(deadpool_redis::PoolConfig::new(max_size));
    Ok(config.create_pool(Some(Runtime::Tokio1))?)
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
