use std::net::IpAddr;
use std::time::Duration;

use pa_kit::config::{CommonConfig, ConfigError, ServiceConfig, env_or, env_parse};

use crate::netguard::AllowList;
use crate::sandbox::SandboxSettings;

/// svc-tools settings, from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    /// `PA_TOOLS_ADDR`, default `127.0.0.1:50053`.
    pub listen_addr: String,
    /// `PA_REQUEST_TIMEOUT_MS`, default 30000.
    pub request_timeout: Duration,
    /// `PA_MEMORY_URL`, default `http://127.0.0.1:50054`: svc-memory, behind the memory tools.
    pub memory_url: String,
    /// `PA_TOOLSET_SNAPSHOT_RETENTION_DAYS`, default 90: how long a run's toolset snapshot is
    /// kept before the `purge_toolset_snapshots` schedule removes it (0 = kept for good).
    pub snapshot_retention: Duration,
    pub tools: ToolsSettings,
}

/// `PA_TOOLSET_SNAPSHOT_RETENTION_DAYS`' default.
pub const DEFAULT_SNAPSHOT_RETENTION_DAYS: u64 = 90;

/// What the tools may reach and how long they may take.
#[derive(Clone, Debug)]
pub struct ToolsSettings {
    /// `PA_TOOLS_NET_ALLOW`: comma-separated CIDRs and host names that web_fetch, the web APIs
    /// and MCP over HTTP may reach although they are private/loopback/link-local (an operator's
    /// intranet, a local SearXNG). Empty (default) = public addresses only.
    pub allow: AllowList,
    /// `PA_TOOLS_DNS_OVERRIDES`: `name=ip,…` answers used instead of DNS. For tests only (a name
    /// that "resolves" to 10.x without touching /etc/hosts).
    pub dns_overrides: Vec<(String, IpAddr)>,
    /// `PA_TOOLS_FETCH_MAX_BYTES` (default 2 MiB): bytes read of a fetched body.
    pub fetch_max_bytes: usize,
    /// `PA_TOOLS_FETCH_TIMEOUT_MS` (default 15000): one web request, redirects included.
    pub fetch_timeout: Duration,
    /// `PA_TOOLS_MCP_STDIO_COMMANDS`: the commands an `mcp_stdio` integration may start
    /// (comma-separated, matched exactly). Empty (default) = stdio MCP servers are refused:
    /// they run on this host.
    pub mcp_stdio_commands: Vec<String>,
    /// `PA_TOOLS_MCP_TIMEOUT_MS` (default 25000): one MCP tool call, start-up included (below
    /// the 30 s gRPC request timeout, so the model hears about it from us).
    pub mcp_call_timeout: Duration,
    /// `PA_TOOLS_MCP_LIST_TIMEOUT_MS` (default 10000): listing a server's tools at assembly.
    pub mcp_list_timeout: Duration,
    /// `PA_TOOLS_MCP_LIST_CACHE_MS` (default 60000): how long a server's tool listing is reused
    /// by later assemblies (editing the integration or its secrets lists again at once; 0 =
    /// list at every assembly). See `mcp_listings.rs`.
    pub mcp_list_cache: Duration,
    /// `PA_MCP_SANDBOX`, `PA_MCP_BWRAP`, `PA_MCP_ENV_ALLOW`, `PA_MCP_SANDBOX_HIDE`,
    /// `PA_MCP_SANDBOX_USER`, `PA_MCP_NETWORK_ALLOWED`: how stdio MCP servers are confined
    /// (see `sandbox.rs`; default: bubblewrap, no network, environment allow-list `TZ`).
    pub mcp_sandbox: SandboxSettings,
    /// `PA_KEK`, `PA_KEK_ID` (default `kek-1`), `PA_KEK_PREVIOUS`: the same key-encryption
    /// keys as svc-models, for integration secrets. Unset = the dev KEK, with a warning.
    pub kek: Option<(String, String, String)>,
    /// `PA_TOOLS_DEVICE_TIMEOUT_MS` (default 25000): how long a device tool call may take
    /// (below the 30 s gRPC request timeout); the device is told to stop the call after it.
    pub device_call_timeout: Duration,
}

impl Default for ToolsSettings {
    fn default() -> Self {
        Self {
            allow: AllowList::default(),
            dns_overrides: Vec::new(),
            fetch_max_bytes: 2 * 1024 * 1024,
            fetch_timeout: Duration::from_secs(15),
            mcp_stdio_commands: Vec::new(),
            mcp_call_timeout: Duration::from_secs(25),
            mcp_list_timeout: Duration::from_secs(10),
            mcp_list_cache: Duration::from_secs(60),
            mcp_sandbox: SandboxSettings::default(),
            kek: None,
            device_call_timeout: Duration::from_secs(25),
        }
    }
}

fn bad(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        name: name.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// `name=ip,name=ip`.
pub fn parse_dns_overrides(value: &str) -> Result<Vec<(String, IpAddr)>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (name, ip) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?} is not name=ip"))?;
            let ip: IpAddr = ip
                .trim()
                .parse()
                .map_err(|_| format!("{ip:?} is not an IP address"))?;
            Ok((name.trim().to_ascii_lowercase(), ip))
        })
        .collect()
}

fn sandbox_from_env() -> Result<SandboxSettings, ConfigError> {
    let var = |name: &str| std::env::var(name).ok();
    let network_allowed = env_parse("PA_MCP_NETWORK_ALLOWED", false)?;
    let mut settings = SandboxSettings::parse(
        var("PA_MCP_SANDBOX").as_deref(),
        var("PA_MCP_BWRAP").as_deref(),
        var("PA_MCP_ENV_ALLOW").as_deref(),
        var("PA_MCP_SANDBOX_HIDE").as_deref(),
        var("PA_MCP_SANDBOX_USER").as_deref(),
        network_allowed,
    )
    .map_err(|(name, reason)| bad(name, &var(name).unwrap_or_default(), reason))?;
    settings.expose = var("PA_MCP_SANDBOX_EXPOSE")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .collect();
    Ok(settings)
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let base = ServiceConfig::from_env("PA_TOOLS_ADDR", "127.0.0.1:50053")?;
        let allow_raw = env_or("PA_TOOLS_NET_ALLOW", "");
        let allow = AllowList::parse(&allow_raw)
            .map_err(|reason| bad("PA_TOOLS_NET_ALLOW", &allow_raw, reason))?;
        let dns_raw = env_or("PA_TOOLS_DNS_OVERRIDES", "");
        let dns_overrides = parse_dns_overrides(&dns_raw)
            .map_err(|reason| bad("PA_TOOLS_DNS_OVERRIDES", &dns_raw, reason))?;
        let ms = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_millis(env_parse(name, default)?))
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
        Ok(Self {
            common: base.common,
            listen_addr: base.listen_addr,
            request_timeout: base.request_timeout,
            memory_url: env_or("PA_MEMORY_URL", "http://127.0.0.1:50054"),
            snapshot_retention: Duration::from_secs(
                env_parse::<u64>(
                    "PA_TOOLSET_SNAPSHOT_RETENTION_DAYS",
                    DEFAULT_SNAPSHOT_RETENTION_DAYS,
                )?
                .saturating_mul(24 * 3600),
            ),
            tools: ToolsSettings {
                allow,
                dns_overrides,
                fetch_max_bytes: env_parse("PA_TOOLS_FETCH_MAX_BYTES", 2 * 1024 * 1024)?,
                fetch_timeout: ms("PA_TOOLS_FETCH_TIMEOUT_MS", 15_000)?,
                mcp_stdio_commands: env_or("PA_TOOLS_MCP_STDIO_COMMANDS", "")
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect(),
                mcp_call_timeout: ms("PA_TOOLS_MCP_TIMEOUT_MS", 25_000)?,
                mcp_list_timeout: ms("PA_TOOLS_MCP_LIST_TIMEOUT_MS", 10_000)?,
                mcp_list_cache: ms("PA_TOOLS_MCP_LIST_CACHE_MS", 60_000)?,
                mcp_sandbox: sandbox_from_env()?,
                kek,
                device_call_timeout: ms("PA_TOOLS_DEVICE_TIMEOUT_MS", 25_000)?,
            },
        })
    }

    /// For in-process tests: defaults, no listen address, svc-memory at `memory_url`.
    pub fn for_tests(common: CommonConfig, request_timeout: Duration, memory_url: &str) -> Self {
        Self {
            common,
            listen_addr: String::new(),
            request_timeout,
            memory_url: memory_url.to_string(),
            snapshot_retention: Duration::from_secs(24 * 3600 * DEFAULT_SNAPSHOT_RETENTION_DAYS),
            tools: ToolsSettings::default(),
        }
    }
}

pub fn from_env() -> Result<Config, ConfigError> {
    Config::from_env()
}
