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
    /// `PA_MODELS_CONFIG`: the declarative catalog file; default `models.toml` if it exists.
    pub models_config: Option<String>,
    /// `PA_KEK` (base64 of 32 bytes) and `PA_KEK_ID` (default `kek-1`): the key-encryption key
    /// for stored provider keys; `PA_KEK_PREVIOUS` = `id:base64,…` of older KEKs, for rotation.
    /// Unset PA_KEK = a fixed dev KEK, with a warning.
    pub kek: Option<(String, String, String)>,
    /// `PA_PROVIDER_FIRST_BYTE_TIMEOUT_MS` (default 30000), `PA_PROVIDER_IDLE_TIMEOUT_MS`
    /// (default 60000), `PA_PROVIDER_CONNECT_TIMEOUT_MS` (default 5000).
    pub provider_first_byte_timeout: Duration,
    pub provider_idle_timeout: Duration,
    pub provider_connect_timeout: Duration,
    /// `PA_EMBED_MODEL_DIR`: all-MiniLM-L6-v2 for offline embeddings; default
    /// `.dev/models/all-MiniLM-L6-v2` if it exists. None = a hashed fallback (logged).
    pub embed_model_dir: Option<std::path::PathBuf>,
    /// `PA_MODELS_NET_ALLOW`: CIDRs and host names provider base URLs may reach although they
    /// are private, loopback or link-local (e.g. `127.0.0.1, ollama.internal`); default none.
    /// Every other non-public address is refused, like web_fetch's (ADR 0130).
    pub net_allow: pa_netguard::AllowList,
}

fn embed_model_dir(default: std::path::PathBuf) -> Option<std::path::PathBuf> {
    match std::env::var("PA_EMBED_MODEL_DIR") {
        Ok(dir) if !dir.is_empty() => Some(dir.into()),
        _ => default.exists().then_some(default),
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let models_config = match std::env::var("PA_MODELS_CONFIG") {
            Ok(path) if !path.is_empty() => Some(path),
            _ => std::path::Path::new("models.toml")
                .exists()
                .then(|| "models.toml".to_string()),
        };
        let kek = std::env::var("PA_KEK")
            .ok()
            .filter(|k| !k.is_empty())
            .map(|k| {
                (
                    env_or("PA_KEK_ID", "kek-1"),
                    k,
                    env_or("PA_KEK_PREVIOUS", ""),
                )
            });
        let ms = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_millis(env_parse(name, default)?))
        };
        Ok(Self {
            common: CommonConfig::from_env(),
            listen_addr: env_or("PA_MODELS_ADDR", "127.0.0.1:50052"),
            offline_token_delay: ms("PA_OFFLINE_TOKEN_DELAY_MS", 15)?,
            request_timeout: ms("PA_REQUEST_TIMEOUT_MS", 30_000)?,
            models_config,
            kek,
            provider_first_byte_timeout: ms("PA_PROVIDER_FIRST_BYTE_TIMEOUT_MS", 30_000)?,
            provider_idle_timeout: ms("PA_PROVIDER_IDLE_TIMEOUT_MS", 60_000)?,
            provider_connect_timeout: ms("PA_PROVIDER_CONNECT_TIMEOUT_MS", 5_000)?,
            embed_model_dir: embed_model_dir(".dev/models/all-MiniLM-L6-v2".into()),
            net_allow: {
                let value = env_or("PA_MODELS_NET_ALLOW", "");
                pa_netguard::AllowList::parse(&value).map_err(|reason| ConfigError {
                    name: "PA_MODELS_NET_ALLOW".into(),
                    value,
                    reason,
                })?
            },
        })
    }

    /// Defaults for tests and embedding: no catalog file, dev KEK, provider timeouts generous
    /// enough for a loaded machine.
    pub fn for_tests(common: CommonConfig) -> Self {
        Self {
            common,
            listen_addr: String::new(),
            offline_token_delay: Duration::ZERO,
            request_timeout: Duration::from_secs(30),
            models_config: None,
            kek: None,
            // Generous: a loaded test machine must not trip them (a test that wants one to
            // fire sets its own).
            provider_first_byte_timeout: Duration::from_secs(30),
            provider_idle_timeout: Duration::from_secs(30),
            provider_connect_timeout: Duration::from_secs(10),
            // The workspace's dev stack copy, when there is one.
            embed_model_dir: embed_model_dir(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../.dev/models/all-MiniLM-L6-v2"),
            ),
            // Tests' scripted providers listen on loopback.
            net_allow: pa_netguard::AllowList::parse("127.0.0.1, localhost").unwrap_or_default(),
        }
    }
}
