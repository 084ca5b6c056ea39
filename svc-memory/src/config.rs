use std::time::Duration;

use pa_kit::config::{CommonConfig, ConfigError, env_or, env_parse};

/// svc-memory settings, from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    /// `PA_MEMORY_ADDR`, default `127.0.0.1:50054`.
    pub listen_addr: String,
    /// `PA_REQUEST_TIMEOUT_MS`, default 30000.
    pub request_timeout: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(),
            listen_addr: env_or("PA_MEMORY_ADDR", "127.0.0.1:50054"),
            request_timeout: Duration::from_millis(env_parse("PA_REQUEST_TIMEOUT_MS", 30_000)?),
        })
    }
}
