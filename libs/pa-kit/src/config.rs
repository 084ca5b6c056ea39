//! Environment configuration helpers. Every service has one `Config` struct built from these,
//! with defaults that work on the embedded dev stack.

use std::str::FromStr;

/// The dev stack's Postgres (see `scripts/stack.sh`).
pub const DEFAULT_DATABASE_URL: &str = "postgres://pa@127.0.0.1:55432/personal_agent";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Used only when `PA_INTERNAL_SECRET` is unset; services log a warning when they fall back to it.
pub const DEV_INTERNAL_SECRET: &str = "pa-dev-internal-secret-change-me";

#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

pub fn env_parse<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value.parse().map_err(|e: T::Err| ConfigError {
            name: name.to_string(),
            value,
            reason: e.to_string(),
        }),
        _ => Ok(default),
    }
}

/// Settings every service reads the same way.
#[derive(Clone, Debug)]
pub struct CommonConfig {
    pub database_url: String,
    pub redis_url: String,
    pub internal_secret: String,
    /// `PA_METRICS`, default on: `GET /metrics` (Prometheus) on the service's port; `off` hides it.
    pub metrics: bool,
}

impl CommonConfig {
    pub fn from_env() -> Self {
        let internal_secret = std::env::var("PA_INTERNAL_SECRET")
            .ok()
            .filter(|s| !s.is_empty());
        if internal_secret.is_none() {
            tracing::warn!(
                "PA_INTERNAL_SECRET is unset: using the dev secret; set it in production"
            );
        }
        Self {
            database_url: env_or("DATABASE_URL", DEFAULT_DATABASE_URL),
            redis_url: env_or("REDIS_URL", DEFAULT_REDIS_URL),
            internal_secret: internal_secret.unwrap_or_else(|| DEV_INTERNAL_SECRET.to_string()),
            metrics: !matches!(
                env_or("PA_METRICS", "on").to_ascii_lowercase().as_str(),
                "off" | "false" | "0" | "no"
            ),
        }
    }
}

/// The settings of a gRPC service that needs nothing beyond the common ones.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub common: CommonConfig,
    /// From the service's `PA_<NAME>_ADDR`.
    pub listen_addr: String,
    /// `PA_REQUEST_TIMEOUT_MS`, default 30000: bound on unary calls.
    pub request_timeout: std::time::Duration,
}

impl ServiceConfig {
    /// `addr_var` names the listen-address variable, `default_addr` its default.
    pub fn from_env(addr_var: &str, default_addr: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(),
            listen_addr: env_or(addr_var, default_addr),
            request_timeout: std::time::Duration::from_millis(env_parse(
                "PA_REQUEST_TIMEOUT_MS",
                30_000,
            )?),
        })
    }
}
