use pa_kit::config::{ConfigError, ServiceConfig};

/// svc-memory settings: the common ones, listening on `PA_MEMORY_ADDR` (default `127.0.0.1:50054`).
pub type Config = ServiceConfig;

pub fn from_env() -> Result<Config, ConfigError> {
    ServiceConfig::from_env("PA_MEMORY_ADDR", "127.0.0.1:50054")
}
