use std::time::Duration;

use pa_kit::config::{CommonConfig, ConfigError, env_or, env_parse};

/// How the gateway authenticates callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Local development: every caller is a dev user (`x-pa-dev-user` / `x-pa-dev-tenant`
    /// headers pick which). Never for a server others can reach.
    Dev,
    /// Bearer JWTs from an OpenID Provider (`PA_AUTH_MODE=oidc`, `PA_OIDC_*`).
    Oidc,
    /// No authenticator configured: every API call is refused with 401.
    Disabled,
}

/// svc-gateway settings, from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    /// `PA_GATEWAY_ADDR`, default `127.0.0.1:8080`.
    pub listen_addr: String,
    /// `PA_GATEWAY_GRPC_ADDR`, default `127.0.0.1:50050`: the public gRPC API; `none` = off.
    pub grpc_listen_addr: Option<String>,
    /// `PA_METRICS_ADDR`, default `127.0.0.1:9464`: `GET /metrics` (Prometheus) on a listener of
    /// its own, never on the public HTTP port; `none` = off.
    pub metrics_listen_addr: Option<String>,
    /// `PA_RUNS_URL`, default `http://127.0.0.1:50051`.
    pub runs_url: String,
    /// `PA_MODELS_URL`, default `http://127.0.0.1:50052`.
    pub models_url: String,
    /// `PA_TOOLS_URL`, default `http://127.0.0.1:50053`.
    pub tools_url: String,
    /// `PA_MEMORY_URL`, default `http://127.0.0.1:50054`.
    pub memory_url: String,
    /// `PA_WORKER_URL`, default `http://127.0.0.1:50055`; `none` = not checked by /readyz.
    pub worker_url: Option<String>,
    /// `PA_AUTH_MODE`: `dev` enables the dev identity; anything else (the default) refuses
    /// unauthenticated calls until OIDC is configured.
    pub auth_mode: AuthMode,
    /// `PA_RATE_USER_PER_MIN` (default 600) and `PA_RATE_TENANT_PER_MIN` (default 6000):
    /// requests per minute; 0 = unlimited.
    pub rate_limits: pa_bus::limits::RateLimits,
    /// Set when `auth_mode` is `Oidc`.
    pub oidc: Option<crate::oidc::OidcConfig>,
    /// `PA_SSE_KEEPALIVE_MS`, default 15000: interval of SSE keep-alive comments.
    pub sse_keepalive: Duration,
    /// `PA_HTTP_IDLE_TIMEOUT_MS` (default 75000: a request's headers arrive within it, its
    /// body pauses no longer, a kept-alive connection idle that long is closed) and
    /// `PA_HTTP_MAX_CONNECTIONS` (default 10000: connections at once on the HTTP port; one more
    /// is closed at once). ADR 0237; the defaults are `HttpLimits::default()`.
    pub http_limits: crate::http_server::HttpLimits,
    /// `PA_WEB_DIR`, default `<repo>/web/dist`: the built web app served at `/`; `none` = off.
    /// Without an index.html there the gateway serves only the API.
    pub web_dir: Option<std::path::PathBuf>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let auth_mode = match env_or("PA_AUTH_MODE", "").as_str() {
            "dev" => AuthMode::Dev,
            "oidc" => AuthMode::Oidc,
            _ => AuthMode::Disabled,
        };
        let oidc = if auth_mode == AuthMode::Oidc {
            let algorithms =
                crate::oidc::parse_algorithms(&env_or("PA_OIDC_ALGORITHMS", "RS256,ES256"))
                    .map_err(|reason| ConfigError {
                        name: "PA_OIDC_ALGORITHMS".into(),
                        value: env_or("PA_OIDC_ALGORITHMS", ""),
                        reason,
                    })?;
            Some(crate::oidc::OidcConfig {
                issuer: env_or("PA_OIDC_ISSUER", "http://127.0.0.1:8090"),
                audience: env_or("PA_OIDC_AUDIENCE", "pa-api"),
                client_id: env_or("PA_OIDC_CLIENT_ID", "pa-web"),
                tenant_claim: env_or("PA_OIDC_TENANT_CLAIM", "tenant"),
                roles_claim: env_or("PA_OIDC_ROLES_CLAIM", "roles"),
                platform_admin_role: env_or("PA_PLATFORM_ADMIN_ROLE", "platform-admin"),
                algorithms,
                leeway_secs: env_parse("PA_OIDC_LEEWAY_SECS", 30)?,
                jwks_min_refetch: Duration::from_secs(env_parse(
                    "PA_OIDC_JWKS_MIN_REFETCH_SECS",
                    10,
                )?),
                jwks_max_age: Duration::from_secs(env_parse("PA_OIDC_JWKS_MAX_AGE_SECS", 600)?),
            })
        } else {
            None
        };
        Ok(Self {
            common: CommonConfig::from_env(),
            listen_addr: env_or("PA_GATEWAY_ADDR", "127.0.0.1:8080"),
            grpc_listen_addr: Some(env_or("PA_GATEWAY_GRPC_ADDR", "127.0.0.1:50050"))
                .filter(|a| a != "none"),
            metrics_listen_addr: Some(env_or("PA_METRICS_ADDR", "127.0.0.1:9464"))
                .filter(|a| a != "none"),
            runs_url: env_or("PA_RUNS_URL", "http://127.0.0.1:50051"),
            models_url: env_or("PA_MODELS_URL", "http://127.0.0.1:50052"),
            tools_url: env_or("PA_TOOLS_URL", "http://127.0.0.1:50053"),
            memory_url: env_or("PA_MEMORY_URL", "http://127.0.0.1:50054"),
            worker_url: Some(env_or("PA_WORKER_URL", "http://127.0.0.1:50055"))
                .filter(|u| u != "none"),
            auth_mode,
            rate_limits: pa_bus::limits::RateLimits {
                per_user_per_minute: env_parse("PA_RATE_USER_PER_MIN", 600)?,
                per_tenant_per_minute: env_parse("PA_RATE_TENANT_PER_MIN", 6000)?,
            },
            oidc,
            sse_keepalive: Duration::from_millis(env_parse("PA_SSE_KEEPALIVE_MS", 15_000)?),
            http_limits: {
                let defaults = crate::http_server::HttpLimits::default();
                crate::http_server::HttpLimits {
                    idle_timeout: Duration::from_millis(
                        env_parse::<u64>(
                            "PA_HTTP_IDLE_TIMEOUT_MS",
                            defaults.idle_timeout.as_millis() as u64,
                        )?
                        .max(1),
                    ),
                    max_connections: env_parse(
                        "PA_HTTP_MAX_CONNECTIONS",
                        defaults.max_connections,
                    )?,
                }
            },
            web_dir: Some(env_or(
                "PA_WEB_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../web/dist"),
            ))
            .filter(|d| d != "none")
            .map(std::path::PathBuf::from),
        })
    }
}
