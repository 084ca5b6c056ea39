use pa_kit::config::{CommonConfig, ConfigError, ServiceConfig, env_or};

/// svc-memory settings, from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    /// `PA_MEMORY_ADDR`, default `127.0.0.1:50054`.
    pub listen_addr: String,
    /// `PA_REQUEST_TIMEOUT_MS`, default 30000: bound on unary calls.
    pub request_timeout: std::time::Duration,
    /// `PA_MODELS_URL`, default `http://127.0.0.1:50052`: svc-models, for embeddings.
    pub models_url: String,
    /// `PA_MEMORY_EMBED_MODEL`: the model label memories are embedded with; empty (default) =
    /// the platform's default embedding model (the offline all-MiniLM-L6-v2).
    pub embed_label: String,
}

pub fn from_env() -> Result<Config, ConfigError> {
    let base = ServiceConfig::from_env("PA_MEMORY_ADDR", "127.0.0.1:50054")?;
    Ok(Config {
        common: base.common,
        listen_addr: base.listen_addr,
        request_timeout: base.request_timeout,
        models_url: env_or("PA_MODELS_URL", "http://127.0.0.1:50052"),
        embed_label: env_or("PA_MEMORY_EMBED_MODEL", ""),
    })
}
