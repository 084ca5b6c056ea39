use std::time::Duration;

use pa_kit::config::{CommonConfig, ConfigError, env_or, env_parse};

/// svc-models settings, from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    /// `PA_MODELS_ADDR`, default `127.0.0.1:50052`.
    pub listen_addr: String,
    /// `PA_OFFLINE_TOKEN_DELAY_MS`, default 15: the pause between the offline model's tokens,
    /// so streaming is visible in a UI. 0 in tests and benchmarks.
    pub offline_token_delay: Duration,
    /// `PA_REQUEST_TIMEOUT_MS`, default 30000: bound on unary calls.
    pub request_timeout: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(),
            listen_addr: env_or("PA_MODELS_ADDR", "127.0.0.1:50052"),
            offline_token_delay: Duration::from_millis(env_parse("PA_OFFLINE_TOKEN_DELAY_MS", 15)?),
            request_timeout: Duration::from_millis(env_parse("PA_REQUEST_TIMEOUT_MS", 30_000)?),
        })
    }
}
