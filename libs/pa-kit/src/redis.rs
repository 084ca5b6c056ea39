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
