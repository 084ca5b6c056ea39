use pa_kit::config::{ConfigError, ServiceConfig};

/// svc-tools settings: the common ones, listening on `PA_TOOLS_ADDR` (default `127.0.0.1:50053`).
pub type Config = ServiceConfig;

pub fn from_env() -> Result<Config, ConfigError> {
    ServiceConfig::from_env("PA_TOOLS_ADDR", "127.0.0.1:50053")
}
