//! Environment configuration helpers. Every service has one `Config` struct built from these,
//! with defaults that work on the embedded dev stack.

use std::str::FromStr;

/// The dev stack's Postgres (see `scripts/stack.sh`).
pub const DEFAULT_DATABASE_URL: &str = "postgres://pa@127.0.0.1:55432/personal_agent";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Used only when `PA_INTERNAL_SECRET` is unset in dev mode (`PA_AUTH_MODE=dev`); services log a
/// warning when they fall back to it, and refuse to start without the variable in any other mode
/// (see [`check_secrets`]).
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

/// Whether the process runs in dev mode (`PA_AUTH_MODE=dev`, what `make up` sets): the only
/// mode in which the public dev secrets may stand in for unset ones.
pub fn is_dev_mode(lookup: impl Fn(&str) -> Option<String>) -> bool {
    lookup("PA_AUTH_MODE").is_some_and(|m| m.trim() == "dev")
}

/// Outside dev mode, a one-line error naming the first secret `service` needs that is unset or
/// empty: `PA_INTERNAL_SECRET` for every service (`svc-*`: each signs or checks the internal
/// credential), then its own `secrets` (svc-models and svc-tools seal secrets under `PA_KEK`).
pub fn check_secrets(
    service: &str,
    secrets: &[&str],
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(), String> {
    if is_dev_mode(&lookup) {
        return Ok(());
    }
    let internal: &[&str] = if service.starts_with("svc-") {
        &["PA_INTERNAL_SECRET"]
    } else {
        &[]
    };
    match internal
        .iter()
        .chain(secrets)
        .find(|name| lookup(name).is_none_or(|v| v.trim().is_empty()))
    {
        Some(name) => Err(format!(
            "{name} is not set; it is required unless PA_AUTH_MODE=dev (the dev stack)"
        )),
        None => Ok(()),
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
                "PA_INTERNAL_SECRET is unset: using the public dev secret (PA_AUTH_MODE=dev only)"
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    /// A service's own secret (svc-models and svc-tools pass `PA_KEK`).
    const OWN: &[&str] = &["X_SEALING_KEY"];

    #[test]
    fn outside_dev_mode_services_need_their_secrets() {
        let err = check_secrets("svc-runs", &[], env(&[])).unwrap_err();
        assert!(err.starts_with("PA_INTERNAL_SECRET "), "{err}");
        assert!(!err.contains('\n'));
        let blank = env(&[("PA_AUTH_MODE", "oidc"), ("PA_INTERNAL_SECRET", " ")]);
        let err = check_secrets("svc-runs", &[], blank).unwrap_err();
        assert!(err.starts_with("PA_INTERNAL_SECRET "), "{err}");
        assert!(check_secrets("svc-runs", &[], env(&[("PA_INTERNAL_SECRET", "s")])).is_ok());
        let err =
            check_secrets("svc-models", OWN, env(&[("PA_INTERNAL_SECRET", "s")])).unwrap_err();
        assert!(err.starts_with("X_SEALING_KEY "), "{err}");
        let both = env(&[("PA_INTERNAL_SECRET", "s"), ("X_SEALING_KEY", "k")]);
        assert!(check_secrets("svc-tools", OWN, both).is_ok());
        for service in ["svc-gateway", "svc-memory", "svc-worker"] {
            assert!(check_secrets(service, &[], env(&[])).is_err(), "{service}");
        }
    }

    #[test]
    fn dev_mode_keeps_the_dev_secrets() {
        for service in [
            "svc-gateway",
            "svc-runs",
            "svc-models",
            "svc-tools",
            "svc-memory",
            "svc-worker",
        ] {
            let dev = env(&[("PA_AUTH_MODE", "dev")]);
            assert!(check_secrets(service, OWN, dev).is_ok(), "{service}");
        }
        // Tools that are not services (pa-migrate) need no internal secret.
        assert!(check_secrets("pa-migrate", &[], env(&[])).is_ok());
    }
}
