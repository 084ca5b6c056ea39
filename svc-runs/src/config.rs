use std::time::Duration;

use pa_kit::config::{CommonConfig, ConfigError, env_or, env_parse};
use pa_proto::v1::UsageLimits;

/// svc-runs settings, from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    /// `PA_RUNS_ADDR`, default `127.0.0.1:50051`.
    pub listen_addr: String,
    /// `PA_MODELS_URL`, default `http://127.0.0.1:50052`.
    pub models_url: String,
    /// `PA_TOOLS_URL`, default `http://127.0.0.1:50053`.
    pub tools_url: String,
    /// `PA_MEMORY_URL`, default `http://127.0.0.1:50054`: automatic recall, and forgetting a
    /// deleted chat's memories.
    pub memory_url: String,
    /// `PA_REQUEST_TIMEOUT_MS`, default 30000.
    pub request_timeout: Duration,
    /// `PA_RUN_MAX_MODEL_REQUESTS` (default 16), `PA_RUN_MAX_TOOL_CALLS` (default 32),
    /// `PA_RUN_MAX_TOTAL_TOKENS` (default 0 = unlimited), `PA_RUN_MAX_SUBAGENT_DEPTH` (default
    /// 2): per-run limits. A sub-agent run gets what is left of its parent's.
    pub limits: UsageLimits,
    /// `PA_DAILY_TOKEN_BUDGET`, default 0 (unlimited): tokens a user may spend per UTC day;
    /// checked before a run starts.
    pub daily_token_budget: u64,
    /// `PA_HISTORY_MESSAGES`, default 50: how many earlier messages of a chat the model sees.
    pub history_messages: u32,
    /// `PA_TOOL_APPROVAL_TIMEOUT_MS`, default 300000: how long a high-privilege tool call after
    /// untrusted content waits for a human's approval before it is refused (both run modes).
    pub approval_timeout: Duration,
    /// `PA_RECALL_TOKEN_BUDGET`, `PA_RECALL_LIMIT`, `PA_RECALL_MIN_SCORE`,
    /// `PA_RECALL_TIMEOUT_MS`: automatic recall at run start (see [`pa_turn_io::RecallSettings`]).
    pub recall: pa_turn_io::RecallSettings,
    /// `PA_WORKER_URL`, default `http://127.0.0.1:50055`: svc-worker, Temporal's only client,
    /// which starts, cancels and signals durable runs for svc-runs (ADR 0190) and curates the
    /// chats svc-runs queues for it (ADR 0242); `none` = no durable runs (503) and no Curator (no
    /// turn is queued).
    pub worker_url: Option<String>,
    /// `PA_DELETED_CHAT_RETENTION_HOURS`, default 720 (30 days): how long a deleted chat is
    /// kept (hidden) before the `purge_deleted_chats` schedule removes it for good.
    pub deleted_chat_retention: Duration,
    /// `PA_RUN_LEASE_MS` (default 6000), `PA_RUN_LEASE_RENEW_MS` (2000),
    /// `PA_RUN_REAPER_SCAN_MS` (2000): the lease of an inline run's owner (ADR 0150).
    pub leases: crate::lease::LeaseSettings,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(),
            listen_addr: env_or("PA_RUNS_ADDR", "127.0.0.1:50051"),
            models_url: env_or("PA_MODELS_URL", "http://127.0.0.1:50052"),
            tools_url: env_or("PA_TOOLS_URL", "http://127.0.0.1:50053"),
            memory_url: env_or("PA_MEMORY_URL", "http://127.0.0.1:50054"),
            request_timeout: Duration::from_millis(env_parse("PA_REQUEST_TIMEOUT_MS", 30_000)?),
            limits: UsageLimits {
                max_model_requests: env_parse("PA_RUN_MAX_MODEL_REQUESTS", 16)?,
                max_tool_calls: env_parse("PA_RUN_MAX_TOOL_CALLS", 32)?,
                max_total_tokens: env_parse("PA_RUN_MAX_TOTAL_TOKENS", 0)?,
                max_subagent_depth: env_parse("PA_RUN_MAX_SUBAGENT_DEPTH", 2)?,
            },
            history_messages: env_parse("PA_HISTORY_MESSAGES", 50)?,
            recall: pa_turn_io::RecallSettings {
                limit: env_parse("PA_RECALL_LIMIT", 8)?,
                min_score: env_parse("PA_RECALL_MIN_SCORE", 0.3)?,
                token_budget: env_parse("PA_RECALL_TOKEN_BUDGET", 600)?,
                timeout: Duration::from_millis(env_parse("PA_RECALL_TIMEOUT_MS", 3000)?),
            },
            daily_token_budget: env_parse("PA_DAILY_TOKEN_BUDGET", 0)?,
            deleted_chat_retention: Duration::from_secs(
                3600 * env_parse::<u64>("PA_DELETED_CHAT_RETENTION_HOURS", 720)?,
            ),
            approval_timeout: Duration::from_millis(env_parse(
                "PA_TOOL_APPROVAL_TIMEOUT_MS",
                300_000,
            )?),
            worker_url: Some(env_or("PA_WORKER_URL", "http://127.0.0.1:50055"))
                .filter(|u| u != "none"),
            leases: crate::lease::LeaseSettings {
                lease: Duration::from_millis(env_parse("PA_RUN_LEASE_MS", 6000)?),
                renew_every: Duration::from_millis(env_parse("PA_RUN_LEASE_RENEW_MS", 2000)?),
                scan_every: Duration::from_millis(env_parse("PA_RUN_REAPER_SCAN_MS", 2000)?),
            }
            .check()
            .map_err(|reason| ConfigError {
                name: "PA_RUN_LEASE_MS".into(),
                value: env_or("PA_RUN_LEASE_MS", "6000"),
                reason,
            })?,
        })
    }
}
