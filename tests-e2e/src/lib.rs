//! Runs the real mesh in-process against the real dev stack: `Mesh::builder().start()` gives a
//! fresh Postgres database, every service on its own loopback port, and helpers to talk to them
//! over HTTP, SSE and gRPC. Used by the end-to-end tests and by pa-bench.

use std::time::Duration;

use futures::StreamExt;
use pa_kit::config::CommonConfig;
use pa_kit::{InternalAuth, Shutdown};
use pa_proto::v1::{AuthMethod, Identity};
use serde_json::Value;
use sqlx::Connection;
use tokio::net::TcpListener;

pub use pa_kit::config::{DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL};

pub mod chaos;
mod stores;
pub use stores::{OwnPostgres, OwnRedis, OwnTemporal};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Replaces the database name of a Postgres URL.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let server = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{database}?{q}"),
        None => format!("{server}/{database}"),
    }
}

pub struct MeshBuilder {
    offline_token_delay: Duration,
    models_config: Option<String>,
    provider_first_byte_timeout: Option<Duration>,
    oidc: Option<svc_gateway::oidc::OidcConfig>,
    rate_limits: pa_kit::limits::RateLimits,
    daily_token_budget: u64,
    auth_mode: svc_gateway::AuthMode,
    worker: bool,
    schedules: bool,
    tools: svc_tools::ToolsSettings,
    web_dir: Option<std::path::PathBuf>,
    deleted_chat_retention: Duration,
    approval_timeout: Duration,
    curator: bool,
    /// How long the Curator waits for more turns of a chat (tests: 200 ms).
    curator_debounce: Duration,
    /// Where svc-runs asks svc-worker to start durable runs, instead of this mesh's worker.
    runs_worker_url: Option<String>,
    worker_process: bool,
    /// svc-runs reaches svc-memory through a proxy holding each answer this long (0: directly).
    recall_delay: Duration,
    /// svc-models' `PA_MODELS_NET_ALLOW` (None: the test default, loopback allowed).
    models_net_allow: Option<String>,
    /// svc-runs' inline run leases.
    run_leases: svc_runs::lease::LeaseSettings,
    /// The Postgres server (an admin URL) the mesh creates its database on (None: DATABASE_URL).
    database_url: Option<String>,
    /// None: REDIS_URL.
    redis_url: Option<String>,
    /// None: TEMPORAL_ADDRESS.
    temporal_address: Option<String>,
    /// How many of a chat's latest messages a run sees (svc-runs' `PA_HISTORY_MESSAGES`).
    history_messages: u32,
    /// svc-runs reaches Postgres through a [`CutProxy`] (`Mesh::runs_db`).
    runs_db_proxy: bool,
}

impl MeshBuilder {
    /// The mesh creates its database on this Postgres server (`url` as DATABASE_URL: a role
    /// that may create databases), e.g. [`OwnPostgres::url`], instead of `DATABASE_URL`'s.
    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_string());
        self
    }

    /// Redis at `url` (e.g. [`OwnRedis::url`]) instead of `REDIS_URL`.
    pub fn redis_url(mut self, url: &str) -> Self {
        self.redis_url = Some(url.to_string());
        self
    }

    /// The Temporal frontend at `address` (e.g. [`OwnTemporal::address`]) instead of
    /// `TEMPORAL_ADDRESS`.
    pub fn temporal_address(mut self, address: &str) -> Self {
        self.temporal_address = Some(address.to_string());
        self
    }

    /// Also runs svc-worker in-process, for durable runs (each mesh has its own task queue).
    /// Without it, durable runs wait for a worker started by the test (see
    /// [`Mesh::spawn_worker_process`]).
    /// svc-runs reaches Postgres through a proxy the test can cut ([`Mesh::runs_db`]).
    pub fn runs_db_behind_proxy(mut self) -> Self {
        self.runs_db_proxy = true;
        self
    }

    /// How many of a chat's latest messages a run sees (default 50).
    pub fn history_messages(mut self, messages: u32) -> Self {
        self.history_messages = messages;
        self
    }

    pub fn worker(mut self) -> Self {
        self.worker = true;
        self
    }

    /// svc-worker runs as a process the test starts (and kills) with
    /// [`Mesh::spawn_worker_process`], on an address reserved now, which svc-runs asks for
    /// durable runs. The gateway does not wait for it to be ready.
    pub fn worker_process(mut self) -> Self {
        self.worker_process = true;
        self
    }

    /// svc-runs and the gateway ask `url` (not this mesh's worker) for durable runs and
    /// schedules: an address nobody answers at makes durable starts unavailable.
    pub fn runs_worker_url(mut self, url: &str) -> Self {
        self.runs_worker_url = Some(url.to_string());
        self
    }

    /// svc-models' network guard admits exactly `allow` (`PA_MODELS_NET_ALLOW`; "" = only public
    /// addresses) instead of the test default (loopback).
    pub fn models_net_allow(mut self, allow: &str) -> Self {
        self.models_net_allow = Some(allow.to_string());
        self
    }

    /// svc-runs reaches svc-memory through a proxy that holds every piece of its answers for
    /// `delay`: recall is still running when a run is ready to start (its timeout is 30 s then,
    /// not the default 3 s).
    pub fn slow_recall(mut self, delay: Duration) -> Self {
        self.recall_delay = delay;
        self
    }

    /// [`MeshBuilder::worker`], and the worker creates its maintenance schedules (the test
    /// should delete them at the end: they outlive the mesh in Temporal).
    pub fn worker_with_schedules(mut self) -> Self {
        self.worker = true;
        self.schedules = true;
        self
    }

    /// svc-tools' settings (network allow-list, DNS overrides, stdio MCP commands, time limits).
    /// How long svc-runs keeps a deleted chat before `purge_deleted_chats` removes it
    /// (default 30 days).
    pub fn deleted_chat_retention(mut self, retention: Duration) -> Self {
        self.deleted_chat_retention = retention;
        self
    }

    pub fn tools_settings(mut self, settings: svc_tools::ToolsSettings) -> Self {
        self.tools = settings;
        self
    }

    /// Pause between the offline model's tokens (default 0).
    pub fn offline_token_delay(mut self, delay: Duration) -> Self {
        self.offline_token_delay = delay;
        self
    }

    /// A declarative catalog file for svc-models (as `PA_MODELS_CONFIG`).
    pub fn models_config(mut self, path: impl Into<String>) -> Self {
        self.models_config = Some(path.into());
        self
    }

    /// How long svc-models waits for a provider's first byte (default 30 s in tests).
    pub fn provider_first_byte_timeout(mut self, timeout: Duration) -> Self {
        self.provider_first_byte_timeout = Some(timeout);
        self
    }

    /// Requests per minute per user and per tenant (default: unlimited).
    pub fn rate_limits(mut self, per_user: u64, per_tenant: u64) -> Self {
        self.rate_limits = pa_kit::limits::RateLimits {
            per_user_per_minute: per_user,
            per_tenant_per_minute: per_tenant,
        };
        self
    }

    /// Tokens a user may spend per day (default: unlimited).
    pub fn daily_token_budget(mut self, tokens: u64) -> Self {
        self.daily_token_budget = tokens;
        self
    }

    /// Bearer JWTs from this OpenID Provider instead of the dev identity.
    pub fn oidc(mut self, config: svc_gateway::oidc::OidcConfig) -> Self {
        self.oidc = Some(config);
        self.auth_mode = svc_gateway::AuthMode::Oidc;
        self
    }

    pub fn auth_mode(mut self, mode: svc_gateway::AuthMode) -> Self {
        self.auth_mode = mode;
        self
    }

    /// No Curator after durable-mesh turns: it asks the chat's model too, which would take
    /// replies a test scripted for its runs.
    pub fn without_curator(mut self) -> Self {
        self.curator = false;
        self
    }

    /// How long the Curator waits for more turns of a chat before it curates (tests default to
    /// 200 ms; the product to `svc_worker::signals::DEFAULT_CURATOR_DEBOUNCE_MS`).
    pub fn curator_debounce(mut self, debounce: Duration) -> Self {
        self.curator_debounce = debounce;
        self
    }

    /// How long a tool call held by the untrusted-content gate waits for approval (default 60 s).
    /// svc-runs' inline run leases (lease, renewal and reaper intervals).
    pub fn run_leases(mut self, leases: svc_runs::lease::LeaseSettings) -> Self {
        self.run_leases = leases;
        self
    }

    pub fn approval_timeout(mut self, timeout: Duration) -> Self {
        self.approval_timeout = timeout;
        self
    }

    /// Serve this built web app at `/` (default: none, the API only).
    pub fn web_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.web_dir = Some(dir.into());
        self
    }

    pub async fn start(self) -> Result<Mesh, BoxError> {
        let admin_url = match &self.database_url {
            Some(url) => url.clone(),
            None => std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into()),
        };
        let redis_url = match &self.redis_url {
            Some(url) => url.clone(),
            None => std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.into()),
        };
        // The creation time is in the name so `make clean-test-dbs` drops only
        // databases left behind by old runs, never those of a run in progress.
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let database = format!("pa_e2e_{created}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&mut admin)
            .await?;
        let _ = admin.close().await;
        let database_url = with_database(&admin_url, &database);
        let secret = format!("e2e-{}", uuid::Uuid::new_v4());
        let common = CommonConfig {
            database_url: database_url.clone(),
            redis_url,
            internal_secret: secret.clone(),
            metrics: true,
        };
        let timeout = Duration::from_secs(30);
        let runs_db = if self.runs_db_proxy {
            let url = reqwest::Url::parse(&database_url)?;
            let upstream = format!(
                "{}:{}",
                url.host_str().unwrap_or("127.0.0.1"),
                url.port().unwrap_or(5432)
            );
            Some(CutProxy::start(upstream).await?)
        } else {
            None
        };
        let runs_common = match &runs_db {
            Some(proxy) => {
                let mut url = reqwest::Url::parse(&database_url)?;
                url.set_host(Some("127.0.0.1"))?;
                url.set_port(Some(proxy.addr.port()))
                    .map_err(|()| "cannot set the proxy's port")?;
                CommonConfig {
                    database_url: url.to_string(),
                    ..common.clone()
                }
            }
            None => common.clone(),
        };

        let mut services = Vec::new();
        let (models_listener, models_url) = listen().await?;
        let (tools_listener, tools_url) = listen().await?;
        let (memory_listener, memory_url) = listen().await?;
        let (runs_listener, runs_url) = listen().await?;
        let runs_memory_url = if self.recall_delay.is_zero() {
            memory_url.clone()
        } else {
            let upstream = memory_url.trim_start_matches("http://").to_string();
            slow_answers_proxy(upstream, self.recall_delay).await?
        };
        let (gateway_listener, gateway_addr) = listen().await?;
        let (public_grpc_listener, public_grpc_url) = listen().await?;
        // The worker's address is known before the gateway starts (it lists its schedules).
        let worker_listener = if self.worker {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            Some(listener)
        } else {
            None
        };

        let worker_url = worker_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| format!("http://{a}"));
        // A worker the test starts as a process listens on an address reserved here.
        let worker_process_addr = if self.worker_process {
            Some(format!("127.0.0.1:{}", port_below_ephemeral_range()?))
        } else {
            None
        };

        let shutdown = Shutdown::new();
        services.push((
            "svc-models",
            shutdown.clone(),
            tokio::spawn({
                let mut config = svc_models::Config::for_tests(common.clone());
                config.offline_token_delay = self.offline_token_delay;
                config.models_config = self.models_config.clone();
                if let Some(t) = self.provider_first_byte_timeout {
                    config.provider_first_byte_timeout = t;
                }
                if let Some(allow) = &self.models_net_allow {
                    config.net_allow = svc_tools::netguard::AllowList::parse(allow)?;
                }
                let s = shutdown.clone();
                async move {
                    svc_models::run(config, models_listener, s)
                        .await
                        .map_err(|e| e.to_string())
                }
            }),
        ));
        let shutdown = Shutdown::new();
        services.push((
            "svc-tools",
            shutdown.clone(),
            tokio::spawn({
                let mut config = svc_tools::Config::for_tests(common.clone(), timeout, &memory_url);
                config.tools = self.tools.clone();
                // The test MCP servers live in this checkout, which may sit under /tmp (a CI
                // clone): the sandbox's own /tmp would hide them.
                config
                    .tools
                    .mcp_sandbox
                    .expose
                    .push(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/mcp"));
                let s = shutdown.clone();
                async move {
                    svc_tools::run(config, tools_listener, s)
                        .await
                        .map_err(|e| e.to_string())
                }
            }),
        ));
        let shutdown = Shutdown::new();
        services.push((
            "svc-memory",
            shutdown.clone(),
            tokio::spawn({
                let config = svc_memory::Config {
                    common: common.clone(),
                    listen_addr: String::new(),
                    request_timeout: timeout,
                    models_url: models_url.clone(),
                    embed_label: String::new(),
                };
                let s = shutdown.clone();
                async move {
                    svc_memory::run(config, memory_listener, s)
                        .await
                        .map_err(|e| e.to_string())
                }
            }),
        ));
        // Durable runs go to this mesh's own task queue, so parallel tests never take each
        // other's workflows.
        let temporal = svc_worker::TemporalConfig {
            address: match &self.temporal_address {
                Some(address) => address.clone(),
                None => {
                    std::env::var("TEMPORAL_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7233".into())
                }
            },
            namespace: "default".into(),
            task_queue: format!("pa-runs-{database}"),
        };
        let runs_config: Option<svc_runs::Config>;
        let shutdown = Shutdown::new();
        services.push((
            "svc-runs",
            shutdown.clone(),
            tokio::spawn({
                let mut config = svc_runs::Config {
                    common: runs_common.clone(),
                    listen_addr: String::new(),
                    models_url: models_url.clone(),
                    tools_url: tools_url.clone(),
                    memory_url: runs_memory_url.clone(),
                    request_timeout: timeout,
                    limits: pa_proto::v1::UsageLimits {
                        max_model_requests: 16,
                        max_tool_calls: 32,
                        max_total_tokens: 0,
                        max_subagent_depth: 2,
                    },
                    history_messages: self.history_messages,
                    recall: Default::default(),
                    daily_token_budget: self.daily_token_budget,
                    deleted_chat_retention: self.deleted_chat_retention,
                    approval_timeout: self.approval_timeout,
                    // This mesh's in-process worker: durable runs and the Curator (ADR 0190).
                    worker_url: self
                        .runs_worker_url
                        .clone()
                        .or_else(|| worker_url.clone())
                        .or_else(|| worker_process_addr.as_ref().map(|a| format!("http://{a}"))),
                    leases: self.run_leases,
                };
                if !self.recall_delay.is_zero() {
                    // A slowed recall gets time to answer however loaded the machine is: its
                    // test wants the recall still running at the start, not timed out.
                    config.recall.timeout = Duration::from_secs(30);
                }
                runs_config = Some(config.clone());
                let s = shutdown.clone();
                async move {
                    svc_runs::run(config, runs_listener, s)
                        .await
                        .map_err(|e| e.to_string())
                }
            }),
        ));
        // The gateway's /metrics has a listener of its own (never the public port).
        let gateway_metrics_addr = format!("127.0.0.1:{}", port_below_ephemeral_range()?);
        let gateway_config = svc_gateway::Config {
            common: common.clone(),
            listen_addr: String::new(),
            grpc_listen_addr: None,
            metrics_listen_addr: Some(gateway_metrics_addr.clone()),
            runs_url: runs_url.clone(),
            models_url: models_url.clone(),
            tools_url: tools_url.clone(),
            memory_url: memory_url.clone(),
            worker_url: self.runs_worker_url.clone().or_else(|| worker_url.clone()),
            auth_mode: self.auth_mode,
            oidc: self.oidc.clone(),
            rate_limits: self.rate_limits,
            sse_keepalive: Duration::from_secs(15),
            web_dir: self.web_dir.clone(),
        };
        let shutdown = Shutdown::new();
        services.push((
            "svc-gateway",
            shutdown.clone(),
            tokio::spawn({
                let config = gateway_config.clone();
                let s = shutdown.clone();
                async move {
                    svc_gateway::run(config, gateway_listener, Some(public_grpc_listener), s)
                        .await
                        .map_err(|e| e.to_string())
                }
            }),
        ));

        let worker_config = svc_worker::Config {
            common: common.clone(),
            temporal: temporal.clone(),
            listen_addr: worker_process_addr.clone().unwrap_or_default(),
            runs_url: runs_url.clone(),
            models_url: models_url.clone(),
            tools_url: tools_url.clone(),
            memory_url: memory_url.clone(),
            schedules: self.schedules,
            sticky_timeout: Duration::from_millis(500),
            background_activities: 4,
            turn_retry: svc_worker::activities::TurnRetry {
                attempts: 3,
                first_delay: Duration::from_millis(200),
            },
            claim_threshold: svc_worker::claims::DEFAULT_THRESHOLD,
            curator: self
                .curator
                .then_some(svc_worker::signals::CuratorSettings {
                    debounce_ms: self.curator_debounce.as_millis() as u64,
                    max_signals: 50,
                }),
        };
        if self.worker {
            let shutdown = Shutdown::new();
            // The Temporal worker's future is not Send: it gets a runtime of its own.
            services.push((
                "svc-worker",
                shutdown.clone(),
                spawn_on_own_thread({
                    let config = worker_config.clone();
                    let s = shutdown.clone();
                    move || {
                        let runtime = tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(2)
                            .enable_all()
                            .build()
                            .map_err(|e| e.to_string())?;
                        runtime.block_on(async move {
                            let listener = match worker_listener {
                                Some(l) => TcpListener::from_std(l).map_err(|e| e.to_string())?,
                                None => return Err("no worker listener".to_string()),
                            };
                            svc_worker::run(config, listener, s)
                                .await
                                .map_err(|e| e.to_string())
                        })
                    }
                }),
            ));
        }

        let mesh = Mesh {
            gateway_config,
            runs_config: runs_config.ok_or("svc-runs was not configured")?,
            gateway_url: gateway_addr,
            gateway_metrics_url: format!("http://{gateway_metrics_addr}"),
            worker_config,
            public_grpc_url,
            runs_url,
            models_url,
            memory_url,
            tools_url,
            admin_url,
            database,
            database_url,
            auth: InternalAuth::new(&secret),
            worker_url: worker_url.clone(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()?,
            services,
            runs_db,
        };
        mesh.wait_ready(Duration::from_secs(60)).await?;
        Ok(mesh)
    }
}

/// Runs `body` on a thread of its own (not tokio's blocking pool, which a test's runtime would
/// wait for at exit, hanging a failed test), as a task the mesh can await.
fn spawn_on_own_thread<F>(body: F) -> ServiceTask
where
    F: FnOnce() -> Result<(), String> + Send + 'static,
{
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = done.send(body());
    });
    tokio::spawn(async move {
        finished
            .await
            .unwrap_or_else(|_| Err("the service thread panicked".into()))
    })
}

async fn listen() -> Result<(TcpListener, String), BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    Ok((listener, url))
}

type ServiceTask = tokio::task::JoinHandle<Result<(), String>>;

/// A running mesh. Call [`Mesh::stop`] at the end to shut it down and drop its database.
pub struct Mesh {
    pub gateway_url: String,
    /// The gateway's metrics listener (`GET /metrics`).
    pub gateway_metrics_url: String,
    /// The gateway's public gRPC API.
    pub public_grpc_url: String,
    pub runs_url: String,
    pub models_url: String,
    pub memory_url: String,
    pub tools_url: String,
    pub database_url: String,
    admin_url: String,
    database: String,
    pub auth: InternalAuth,
    /// This mesh's in-process svc-worker, if it runs one.
    pub worker_url: Option<String>,
    pub http: reqwest::Client,
    /// How this mesh's svc-worker is (or would be) configured.
    pub worker_config: svc_worker::Config,
    services: Vec<(&'static str, Shutdown, ServiceTask)>,
    /// The gateway's configuration, to start more replicas of it.
    gateway_config: svc_gateway::Config,
    /// svc-runs' configuration, to start more replicas of it (see [`RunsReplica`]).
    pub runs_config: svc_runs::Config,
    /// The proxy between svc-runs and Postgres ([`MeshBuilder::runs_db_behind_proxy`]).
    pub runs_db: Option<CutProxy>,
}

impl Mesh {
    /// Starts one more gateway replica (same backends, Redis and secret); returns its URL.
    /// Replicas share nothing but Redis and the services, like separate pods.
    pub async fn add_gateway(&mut self) -> Result<String, BoxError> {
        let (listener, url) = listen().await?;
        let shutdown = Shutdown::new();
        let mut config = self.gateway_config.clone();
        config.metrics_listen_addr = None;
        let s = shutdown.clone();
        let task = tokio::spawn(async move {
            svc_gateway::run(config, listener, None, s)
                .await
                .map_err(|e| e.to_string())
        });
        self.services.push(("svc-gateway-replica", shutdown, task));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !matches!(self.http.get(format!("{url}/healthz")).send().await, Ok(r) if r.status().is_success())
        {
            if tokio::time::Instant::now() > deadline {
                return Err("the extra gateway did not start".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(url)
    }

    pub fn builder() -> MeshBuilder {
        MeshBuilder {
            offline_token_delay: Duration::ZERO,
            models_config: None,
            provider_first_byte_timeout: None,
            oidc: None,
            rate_limits: pa_kit::limits::RateLimits {
                per_user_per_minute: 0,
                per_tenant_per_minute: 0,
            },
            daily_token_budget: 0,
            auth_mode: svc_gateway::AuthMode::Dev,
            worker: false,
            schedules: false,
            tools: svc_tools::ToolsSettings::default(),
            web_dir: None,
            deleted_chat_retention: Duration::from_secs(30 * 24 * 3600),
            approval_timeout: Duration::from_secs(60),
            curator: true,
            runs_worker_url: None,
            worker_process: false,
            curator_debounce: Duration::from_millis(200),
            recall_delay: Duration::ZERO,
            models_net_allow: None,
            run_leases: Default::default(),
            database_url: None,
            redis_url: None,
            temporal_address: None,
            history_messages: 50,
            runs_db_proxy: false,
        }
    }

    /// Starts svc-worker for this mesh as a separate process (`worker_binary`, e.g. the
    /// `pa-e2e-worker` binary of this crate), so a test can kill it with SIGKILL.
    pub fn spawn_worker_process(
        &self,
        worker_binary: &str,
    ) -> Result<std::process::Child, BoxError> {
        let c = &self.worker_config;
        Ok(std::process::Command::new(worker_binary)
            .env("DATABASE_URL", &c.common.database_url)
            .env("REDIS_URL", &c.common.redis_url)
            .env("PA_INTERNAL_SECRET", &c.common.internal_secret)
            .env("TEMPORAL_ADDRESS", &c.temporal.address)
            .env("PA_TEMPORAL_NAMESPACE", &c.temporal.namespace)
            .env("PA_TEMPORAL_TASK_QUEUE", &c.temporal.task_queue)
            .env(
                "PA_WORKER_ADDR",
                if c.listen_addr.is_empty() {
                    "127.0.0.1:0"
                } else {
                    &c.listen_addr
                },
            )
            .env("PA_RUNS_URL", &c.runs_url)
            .env("PA_MODELS_URL", &c.models_url)
            .env("PA_TOOLS_URL", &c.tools_url)
            .env("PA_MEMORY_URL", &c.memory_url)
            .env(
                "PA_WORKER_STICKY_TIMEOUT_MS",
                c.sticky_timeout.as_millis().to_string(),
            )
            .env("PA_MODEL_TURN_ATTEMPTS", c.turn_retry.attempts.to_string())
            .env(
                "PA_MODEL_TURN_RETRY_MS",
                c.turn_retry.first_delay.as_millis().to_string(),
            )
            .env("PA_CLAIM_CHECK_BYTES", c.claim_threshold.to_string())
            .env("PA_CURATOR", if c.curator.is_some() { "on" } else { "off" })
            .env(
                "PA_CURATOR_DEBOUNCE_MS",
                c.curator
                    .map(|s| s.debounce_ms)
                    .unwrap_or(svc_worker::signals::DEFAULT_CURATOR_DEBOUNCE_MS)
                    .to_string(),
            )
            .env(
                "RUST_LOG",
                std::env::var("PA_E2E_WORKER_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stderr(std::process::Stdio::null())
            .stdout(match std::env::var_os("PA_E2E_WORKER_LOG") {
                Some(path) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?
                    .into(),
                None => std::process::Stdio::null(),
            })
            .spawn()?)
    }

    /// Waits until the worker process started by [`Self::spawn_worker_process`] serves (a
    /// mesh built with [`MeshBuilder::worker_process`]).
    pub async fn wait_worker_process(&self, within: Duration) -> Result<(), BoxError> {
        let addr = &self.worker_config.listen_addr;
        if addr.is_empty() {
            return Err(
                "this mesh reserved no worker address (MeshBuilder::worker_process)".into(),
            );
        }
        let channel = pa_kit::grpc::channel(&format!("http://{addr}"))?;
        let deadline = tokio::time::Instant::now() + within;
        while !pa_kit::grpc::is_serving(channel.clone()).await {
            if tokio::time::Instant::now() > deadline {
                return Err(format!("the worker process did not serve within {within:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn wait_ready(&self, within: Duration) -> Result<(), BoxError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            for (name, _, task) in &self.services {
                if task.is_finished() {
                    return Err(format!("{name} stopped during start-up").into());
                }
            }
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err("mesh not ready in time".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway_url)
    }

    /// A dev identity as the gateway would build it.
    pub fn identity(tenant: &str, user: &str) -> Identity {
        Identity {
            tenant_id: tenant.into(),
            user_id: user.into(),
            roles: vec!["user".into()],
            scopes: vec![],
            auth_method: AuthMethod::Dev as i32,
            display_name: user.into(),
        }
    }

    /// Stops one service (as SIGTERM would) and waits for it to exit.
    pub async fn stop_service(&mut self, name: &str) -> Result<(), BoxError> {
        let Some(pos) = self.services.iter().position(|(n, _, _)| *n == name) else {
            return Err(format!("no service {name}").into());
        };
        let (_, shutdown, task) = self.services.remove(pos);
        shutdown.trigger();
        task.await?.map_err(|e| -> BoxError { e.into() })
    }

    /// Stops every service and drops the mesh's database.
    pub async fn stop(mut self) -> Result<(), BoxError> {
        // Front to back, like an orderly `make down`.
        for (_, shutdown, _) in self.services.iter().rev() {
            shutdown.trigger();
        }
        for (name, _, task) in self.services.drain(..).rev() {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(format!("{name}: {e}").into()),
                Ok(Err(e)) => return Err(format!("{name} panicked: {e}").into()),
                Err(_) => return Err(format!("{name} did not stop in 30 s").into()),
            }
        }
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.database
        )))
        .execute(&mut admin)
        .await?;
        Ok(())
    }

    // ---- HTTP helpers -------------------------------------------------------------------

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<(u16, Value), BoxError> {
        json_answer(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn get_json(&self, path: &str) -> Result<(u16, Value), BoxError> {
        json_answer(self.http.get(self.url(path))).await
    }

    /// Registers an OpenAI-compatible provider `fp` at `base_url` (a scripted fake) with one
    /// tool-calling model, `fp:m`, through the admin API.
    pub async fn add_fake_model(&self, base_url: &str) -> Result<(), BoxError> {
        let body = serde_json::json!({ "id": "fp", "kind": "openai_compatible", "base_url": base_url,
                           "tags": [], "platform_api_key": "sk-test" });
        let (status, saved) = self.post_json("/v1/admin/providers", &body).await?;
        if status != 200 {
            return Err(format!("provider: {status} {saved}").into());
        }
        let body = serde_json::json!({ "label": "fp:m", "context_window": 32000, "input_price_micros": 1,
                           "output_price_micros": 1, "capabilities": ["tools"] });
        let (status, saved) = self.post_json("/v1/admin/models", &body).await?;
        if status != 200 {
            return Err(format!("model: {status} {saved}").into());
        }
        Ok(())
    }

    /// Starts a run (`body` as POSTed to `/v1/chats/{chat}/runs`) and reads its stream to the
    /// end, within `timeout`; returns the run id and its events.
    pub async fn run_to_end(
        &self,
        chat: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<(String, Vec<SseEvent>), BoxError> {
        let (status, accepted) = self
            .post_json(&format!("/v1/chats/{chat}/runs"), body)
            .await?;
        if status != 202 {
            return Err(format!("start run: {status} {accepted}").into());
        }
        let run_id = accepted["run_id"].as_str().unwrap_or_default().to_string();
        let events = tokio::time::timeout(timeout, self.read_events(&run_id, None, None)).await??;
        Ok((run_id, events))
    }

    pub async fn create_chat(&self, title: &str) -> Result<String, BoxError> {
        let (status, chat) = self
            .post_json("/v1/chats", &serde_json::json!({ "title": title }))
            .await?;
        if status != 201 {
            return Err(format!("create chat: {status} {chat}").into());
        }
        Ok(chat["id"].as_str().unwrap_or_default().to_string())
    }

    pub async fn start_run(&self, chat_id: &str, message: &str) -> Result<String, BoxError> {
        let body = serde_json::json!({ "message": message, "model": "auto" });
        let (status, run) = self
            .post_json(&format!("/v1/chats/{chat_id}/runs"), &body)
            .await?;
        if status != 202 {
            return Err(format!("start run: {status} {run}").into());
        }
        Ok(run["run_id"].as_str().unwrap_or_default().to_string())
    }

    /// Follows a run's stream to its end, answering every approval request (the CUSTOM
    /// `tool_call_approval` event of a call the untrusted-content gate holds; a sub-run's on the
    /// sub-run) with `approve`; returns the run's events and the names of the tools it asked
    /// about, in order.
    pub async fn answer_approvals(
        &self,
        run_id: &str,
        approve: bool,
        timeout: Duration,
    ) -> Result<(Vec<SseEvent>, Vec<String>), BoxError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_id: Option<String> = None;
        let mut events = Vec::new();
        let mut asked = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // One event at a time, so a request is answered as soon as it is announced.
            let next =
                tokio::time::timeout(left, self.read_events(run_id, last_id.as_deref(), Some(1)))
                    .await
                    .map_err(|_| format!("run {run_id} did not end in time: {asked:?}"))??;
            let Some(event) = next.into_iter().next() else {
                continue;
            };
            last_id = event.id.clone().or(last_id);
            let kind = event.event_type().to_string();
            if kind == "CUSTOM" && event.data["name"] == "tool_call_approval" {
                let call = event.data["value"]["toolCallId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                asked.push(
                    event.data["value"]["toolCallName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
                let target = event.data["subagentRunId"].as_str().unwrap_or(run_id);
                let (status, answer) = self
                    .post_json(
                        &format!("/v1/runs/{target}/approvals/{call}"),
                        &serde_json::json!({ "approve": approve }),
                    )
                    .await?;
                if status != 200 {
                    return Err(format!("approval of {call}: {status} {answer}").into());
                }
            }
            events.push(event);
            if kind == "RUN_FINISHED" || kind == "RUN_ERROR" {
                return Ok((events, asked));
            }
        }
    }

    /// Reads a run's SSE stream after `last_event_id`, until its end or `max` events.
    pub async fn read_events(
        &self,
        run_id: &str,
        last_event_id: Option<&str>,
        max: Option<usize>,
    ) -> Result<Vec<SseEvent>, BoxError> {
        let mut request = self
            .http
            .get(self.url(&format!("/v1/runs/{run_id}/events")));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await?;
        if response.status() != 200 {
            return Err(format!("events: {}", response.status()).into());
        }
        read_sse(response, max).await
    }
}

/// Sends `request`; its status and JSON body (`null` when the body is not JSON).
pub async fn json_answer(request: reqwest::RequestBuilder) -> Result<(u16, Value), BoxError> {
    let r = request.send().await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Serves `html` at `http://127.0.0.1:<port>/page` until the test ends: a page with an
/// instruction planted in it, as a hostile site would serve.
pub async fn serve_page(html: &'static str) -> Result<std::net::SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/page",
        axum::routing::get(move || async move {
            ([(axum::http::header::CONTENT_TYPE, "text/html")], html)
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// The content of the TOOL_CALL_RESULT of tool call `call_id` among `events` ("" if none).
/// A TCP proxy to `upstream` (host:port) that holds every piece of the answers for `delay`
/// before passing it on: a slow dependency. Returns its `http://` URL.
pub async fn slow_answers_proxy(upstream: String, delay: Duration) -> Result<String, BoxError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let asks = tokio::io::copy(&mut client_read, &mut server_write);
                let answers = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                        tokio::time::sleep(delay).await;
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let _ = tokio::join!(asks, answers);
            });
        }
    });
    Ok(url)
}

/// A run's events with what differs between two runs of the same conversation blanked out:
/// ids (run, thread, message) and timestamps.
pub fn normalized(events: &[SseEvent]) -> Vec<Value> {
    let run_id = events
        .first()
        .and_then(|e| e.data["runId"].as_str())
        .unwrap_or("?")
        .to_string();
    events
        .iter()
        .map(|e| {
            let mut data = e.data.clone();
            if let Some(obj) = data.as_object_mut() {
                for key in [
                    "runId",
                    "threadId",
                    "messageId",
                    "timestamp",
                    "parentMessageId",
                ] {
                    obj.remove(key);
                }
            }
            // Tool errors name the run's toolset snapshot.
            serde_json::from_str(&data.to_string().replace(&run_id, "<run>")).unwrap_or(data)
        })
        .collect()
}

pub fn tool_result(events: &[SseEvent], call_id: &str) -> String {
    events
        .iter()
        .find(|e| e.event_type() == "TOOL_CALL_RESULT" && e.data["toolCallId"] == call_id)
        .and_then(|e| e.data["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// One Server-Sent Event.
#[derive(Clone, Debug, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub data: Value,
}

impl SseEvent {
    pub fn event_type(&self) -> &str {
        self.data["type"].as_str().unwrap_or("")
    }
}

/// Parses an SSE response body until a terminal AG-UI event, the end, or `max` events.
pub async fn read_sse(
    response: reqwest::Response,
    max: Option<usize>,
) -> Result<Vec<SseEvent>, BoxError> {
    let mut events = Vec::new();
    read_sse_until(response, &mut events, &mut |_| {}, max).await?;
    Ok(events)
}

/// Parses an SSE response body into `events` (calling `seen` on each) until a terminal AG-UI
/// event (returns true) or the end of the body (false). Events read before a broken connection
/// stay in `events`, so a client can resume after the last one.
pub async fn read_sse_into(
    response: reqwest::Response,
    events: &mut Vec<SseEvent>,
    seen: &mut (dyn FnMut(&SseEvent) + Send),
) -> Result<bool, BoxError> {
    read_sse_until(response, events, seen, None).await
}

async fn read_sse_until(
    response: reqwest::Response,
    events: &mut Vec<SseEvent>,
    seen: &mut (dyn FnMut(&SseEvent) + Send),
    max: Option<usize>,
) -> Result<bool, BoxError> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut read = 0usize;
    while let Some(chunk) = stream.next().await {
        buffer.push_str(std::str::from_utf8(&chunk?)?);
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if data.is_empty() {
                continue; // a keep-alive comment
            }
            let event = SseEvent {
                id,
                data: serde_json::from_str(&data)?,
            };
            let terminal = matches!(event.event_type(), "RUN_FINISHED" | "RUN_ERROR");
            seen(&event);
            events.push(event);
            read += 1;
            if terminal {
                return Ok(true);
            }
            if max.is_some_and(|m| read >= m) {
                return Ok(false);
            }
        }
    }
    Ok(false)
}

/// A free port below the kernel's ephemeral range, for a process that must be told its port
/// before it starts (the dev IdP, whose issuer URL the gateways are configured with). A port
/// reserved with `bind(":0")` and released comes from the ephemeral range, where a mesh started
/// in between can take it; ports below the range are only ever taken on purpose.
pub fn port_below_ephemeral_range() -> Result<u16, BoxError> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768u16);
    let (from, to) = (low.saturating_sub(12_000).max(1024), low);
    let span = u32::from(to - from).max(1);
    let seed = uuid::Uuid::new_v4().as_u128();
    for attempt in 0..200u32 {
        let offset = ((seed >> (attempt % 96)) as u32).wrapping_add(attempt * 7919) % span;
        let port = from + offset as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() && claim_port(port) {
            return Ok(port);
        }
    }
    Err(format!("no free port in {from}..{to}").into())
}

/// Claims `port` for this test process among all test processes of the machine: a file named
/// after it holds the claimant's pid, and a claim of a process that is gone lapses. Between
/// choosing a port and the child binding it (and while a killed child is down), another test
/// process choosing at random could otherwise take the same port.
fn claim_port(port: u16) -> bool {
    use std::io::Write;
    let dir = std::env::temp_dir().join("pa-test-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let path = dir.join(port.to_string());
    let me = std::process::id();
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => return write!(file, "{me}").is_ok(),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|p| p.trim().parse::<u32>().ok());
                match holder {
                    Some(pid) if pid == me => return true,
                    Some(pid) if std::path::Path::new(&format!("/proc/{pid}")).exists() => {
                        return false;
                    }
                    // Being written by its claimant: taken.
                    None => return false,
                    // Lapsed: its process is gone.
                    Some(_) => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            Err(_) => return true,
        }
    }
    false
}

/// The value of the Prometheus sample `name{labels…}` in `text` (every given label must match;
/// the largest when several series do), if present.
pub fn metric_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .reduce(f64::max)
}

impl Mesh {
    /// How many calls of `service`/`method` the service at `base` (a gRPC URL) has answered
    /// (its `/metrics`), 0 before the first.
    pub async fn grpc_calls(
        &self,
        base: &str,
        service: &str,
        method: &str,
    ) -> Result<f64, BoxError> {
        let text = self
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(metric_sample(
            &text,
            "pa_grpc_server_handling_seconds_count",
            &[("grpc_service", service), ("grpc_method", method)],
        )
        .unwrap_or(0.0))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            super::with_database("postgres://pa@h:1/db", "x"),
            "postgres://pa@h:1/x"
        );
        assert_eq!(
            super::with_database("postgres://pa@h:1/db?sslmode=disable", "x"),
            "postgres://pa@h:1/x?sslmode=disable"
        );
        assert_eq!(
            super::with_database("postgres://pa@h:1", "x"),
            "postgres://pa@h:1/x"
        );
    }
}

/// The real dev OpenID Provider (deploy/dev-idp, npm oidc-provider) on a free port, with its
/// realm's users (alice and bob of acme, carol of globex, pat the platform administrator).
pub struct DevIdp {
    pub issuer: String,
    _process: tokio::process::Child,
}

impl DevIdp {
    pub async fn start() -> Result<DevIdp, BoxError> {
        use tokio::io::AsyncBufReadExt;
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev-idp");
        if !dir.join("node_modules/oidc-provider").exists() {
            return Err(
                "deploy/dev-idp has no node_modules: run `make test` (it installs them)".into(),
            );
        }
        let mut process = tokio::process::Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .env("PA_IDP_PORT", "0")
            .env("PA_IDP_JWKS_FILE", "memory")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = process.stdout.take().ok_or("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let issuer = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("dev IdP listening")
                    && let Some(issuer) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("issuer="))
                {
                    return Ok::<_, std::io::Error>(issuer.to_string());
                }
            }
            Err(std::io::Error::other("the IdP exited"))
        })
        .await??;
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(DevIdp {
            issuer,
            _process: process,
        })
    }

    /// The gateway's OIDC settings for this provider (RS256, audience `pa-api`).
    pub fn oidc_config(&self) -> Result<svc_gateway::oidc::OidcConfig, BoxError> {
        Ok(svc_gateway::oidc::OidcConfig {
            issuer: self.issuer.clone(),
            audience: "pa-api".into(),
            client_id: "pa-web".into(),
            tenant_claim: "tenant".into(),
            roles_claim: "roles".into(),
            platform_admin_role: "platform-admin".into(),
            algorithms: svc_gateway::oidc::parse_algorithms("RS256")?,
            leeway_secs: 30,
            jwks_min_refetch: Duration::from_secs(10),
            jwks_max_age: Duration::from_secs(600),
        })
    }

    /// An access token for `user` (password grant of the `pa-cli` client).
    pub async fn token(&self, http: &reqwest::Client, user: &str) -> Result<String, BoxError> {
        let body =
            format!("grant_type=password&username={user}&password={user}-password&scope=openid");
        let r = http
            .post(format!("{}/token", self.issuer))
            .basic_auth("pa-cli", Some("pa-cli-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let answer: Value = r.json().await?;
        let token = answer["access_token"]
            .as_str()
            .ok_or_else(|| format!("{status}: {answer}"))?;
        Ok(token.to_string())
    }
}

/// An HTTP client of the mesh's gateway acting as one signed-in user (a bearer token).
#[derive(Clone)]
pub struct AsUser {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl AsUser {
    pub fn new(mesh: &Mesh, token: String) -> AsUser {
        AsUser {
            http: mesh.http.clone(),
            base: mesh.gateway_url.clone(),
            token,
        }
    }

    /// Sends `method path` with an optional JSON body; returns the status and the JSON answer
    /// (`Null` when the body is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), BoxError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let r = request.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value), BoxError> {
        self.call(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), BoxError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> Result<(u16, Value), BoxError> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: &Value) -> Result<(u16, Value), BoxError> {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    /// Creates a chat, runs `body` in it and reads the run's events to the end (30 s at most).
    pub async fn run_in_new_chat(&self, body: &Value) -> Result<(Value, Vec<SseEvent>), BoxError> {
        let (status, chat) = self.post("/v1/chats", &serde_json::json!({})).await?;
        if status != 201 {
            return Err(format!("create chat: {status} {chat}").into());
        }
        let chat_id = chat["id"].as_str().unwrap_or_default().to_string();
        let (status, run) = self
            .post(&format!("/v1/chats/{chat_id}/runs"), body)
            .await?;
        if status != 202 {
            return Err(format!("start run: {status} {run}").into());
        }
        let run_id = run["run_id"].as_str().unwrap_or_default().to_string();
        let response = self
            .http
            .get(format!("{}/v1/runs/{run_id}/events", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let events =
            tokio::time::timeout(Duration::from_secs(30), read_sse(response, None)).await??;
        let (_, run) = self.get(&format!("/v1/runs/{run_id}")).await?;
        Ok((run, events))
    }
}

/// One more svc-runs replica on a runtime of its own, which [`RunsReplica::kill`] drops at once:
/// its tasks die where they are, without draining — as a `kill -9` of the process would leave
/// its runs.
pub struct RunsReplica {
    runtime: Option<tokio::runtime::Runtime>,
    pub url: String,
}

impl RunsReplica {
    /// Starts svc-runs with `config` (e.g. [`Mesh::runs_config`] with another database URL)
    /// and waits until it answers.
    pub async fn start(config: svc_runs::Config) -> Result<RunsReplica, BoxError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.spawn(async move {
            let result = match TcpListener::from_std(listener) {
                Ok(listener) => svc_runs::run(config, listener, Shutdown::new())
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(err) = result {
                tracing::error!(%err, "svc-runs replica stopped");
            }
        });
        let replica = RunsReplica {
            runtime: Some(runtime),
            url,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Any answer (this one is refused: no identity) means it serves.
            let mut runs = pa_proto::v1::run_service_client::RunServiceClient::new(
                tonic::transport::Endpoint::from_shared(replica.url.clone())?.connect_lazy(),
            );
            let asked = tokio::time::timeout(
                Duration::from_secs(1),
                runs.get_run(pa_proto::v1::GetRunRequest::default()),
            )
            .await;
            if let Ok(answer) = asked
                && !matches!(&answer, Err(s) if s.code() == tonic::Code::Unavailable)
            {
                return Ok(replica);
            }
            if tokio::time::Instant::now() > deadline {
                return Err("the svc-runs replica did not start".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the replica: its runtime goes at once, every task of it with it.
    pub fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for RunsReplica {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A TCP proxy to `upstream` (host:port) whose connections a test can cut, as the death of the
/// process behind it would (every open connection reset at once); while it is `down`, new
/// connections are refused too (dropped on accept), until [`CutProxy::up`].
#[derive(Clone)]
pub struct CutProxy {
    pub addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CutProxy {
    pub async fn start(upstream: String) -> Result<CutProxy, BoxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let proxy = CutProxy {
            addr,
            cut: cut.clone(),
            down: down.clone(),
        };
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if down.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cuts = cut.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let asks = tokio::io::copy(&mut client_read, &mut server_write);
                    let answers = tokio::io::copy(&mut server_read, &mut client_write);
                    // Either side closing (or a cut) ends the connection on both.
                    tokio::select! {
                        _ = asks => {}
                        _ = answers => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Ok(proxy)
    }

    /// The proxy's `http://` URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resets every open connection and refuses new ones.
    pub fn down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Resets every open connection; new ones go through (a process killed and restarted).
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn up(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `url` (a Postgres URL) with its host and port replaced by `addr`.
pub fn with_host_port(url: &str, addr: std::net::SocketAddr) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let userinfo = authority
        .rfind('@')
        .map(|i| &authority[..=i])
        .unwrap_or_default();
    format!(
        "{}{userinfo}{addr}{}",
        &url[..scheme_end],
        &rest[authority_end..]
    )
}
