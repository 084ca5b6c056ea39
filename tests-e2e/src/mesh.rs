//! The in-process mesh: [`MeshBuilder`] starts every service on its own loopback port against
//! a fresh Postgres database; [`Mesh`] talks to them and stops them.

use std::time::Duration;

use pa_kit::config::CommonConfig;
use pa_kit::{InternalAuth, Shutdown};
use pa_proto::v1::{AuthMethod, Identity};
use serde_json::Value;
use sqlx::Connection;
use tokio::net::TcpListener;

use crate::{
    BoxError, CutProxy, DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, SseEvent, json_answer,
    port_below_ephemeral_range, read_sse, slow_answers_proxy,
};

/// Replaces the database name of a Postgres URL.
pub(crate) fn with_database(url: &str, database: &str) -> String {
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

/// What a managed Postgres' administrator does before the platform's first start (see
/// [`MeshBuilder::managed_owner`]); returns the owner's URL of `database`.
async fn provision_managed_owner(admin_url: &str, database: &str) -> Result<String, BoxError> {
    let mut admin = sqlx::PgConnection::connect(&with_database(admin_url, database)).await?;
    // Roles are shared by the whole server and tests start meshes in parallel: a role another
    // test just created is fine.
    for role in [
        format!(
            "CREATE ROLE {MANAGED_OWNER} LOGIN PASSWORD '{MANAGED_OWNER}' \
             NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB"
        ),
        "CREATE ROLE pa_app LOGIN NOSUPERUSER NOBYPASSRLS".to_string(),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DO $$ BEGIN {role}; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        )))
        .execute(&mut admin)
        .await?;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE EXTENSION IF NOT EXISTS vector; \
         ALTER DATABASE {database} OWNER TO {MANAGED_OWNER}; \
         ALTER SCHEMA public OWNER TO {MANAGED_OWNER}"
    )))
    .execute(&mut admin)
    .await?;
    let _ = admin.close().await;
    let mut url = reqwest::Url::parse(&with_database(admin_url, database))?;
    url.set_username(MANAGED_OWNER)
        .and_then(|()| url.set_password(Some(MANAGED_OWNER)))
        .map_err(|()| "cannot set the owner in DATABASE_URL")?;
    Ok(url.to_string())
}

pub struct MeshBuilder {
    offline_token_delay: Duration,
    models_config: Option<String>,
    provider_first_byte_timeout: Option<Duration>,
    oidc: Option<svc_gateway::oidc::OidcConfig>,
    rate_limits: pa_bus::limits::RateLimits,
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
    /// How long a Curator's claim on a chat is held (the product's default).
    curator_lease: Duration,
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
    /// The gateway's HTTP port limits (the product's defaults unless a test sets them).
    http_limits: svc_gateway::http_server::HttpLimits,
    /// None: TEMPORAL_ADDRESS.
    temporal_address: Option<String>,
    /// How many of a chat's latest messages a run sees (svc-runs' `PA_HISTORY_MESSAGES`).
    history_messages: u32,
    /// svc-runs reaches Postgres through a [`CutProxy`] (`Mesh::runs_db`).
    runs_db_proxy: bool,
    /// The services connect as [`MANAGED_OWNER`], as on a managed Postgres.
    managed_owner: bool,
}

/// The database owner of a mesh built with [`MeshBuilder::managed_owner`]: what a managed
/// Postgres gives an application (no superuser, no BYPASSRLS, no CREATEROLE).
pub const MANAGED_OWNER: &str = "pa_e2e_owner";

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
    /// The services connect as a database owner that is neither a superuser nor BYPASSRLS nor
    /// allowed to create roles ([`MANAGED_OWNER`]), as on a managed Postgres: the server's
    /// administrator creates the database with the `vector` extension, the application role
    /// (the migration step's job) and the owner, and hands the database to the owner.
    pub fn managed_owner(mut self) -> Self {
        self.managed_owner = true;
        self
    }

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

    /// The worker process a test spawns ([`MeshBuilder::worker_process`]) creates the
    /// maintenance schedules; without this it creates none (the test should delete them at the
    /// end with [`Mesh::delete_schedules`]).
    pub fn worker_process_with_schedules(mut self) -> Self {
        self.worker_process = true;
        self.schedules = true;
        self
    }

    /// The gateway's HTTP port limits (`PA_HTTP_IDLE_TIMEOUT_MS`, `PA_HTTP_MAX_CONNECTIONS`).
    pub fn http_limits(mut self, limits: svc_gateway::http_server::HttpLimits) -> Self {
        self.http_limits = limits;
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
        self.rate_limits = pa_bus::limits::RateLimits {
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
    /// 200 ms; the product to `svc_worker::sweeper::DEFAULT_CURATOR_DEBOUNCE_MS`).
    pub fn curator_debounce(mut self, debounce: Duration) -> Self {
        self.curator_debounce = debounce;
        self
    }

    /// How long the Curator holds a claimed chat; a curation whose worker died is taken up again
    /// after it (default: the product's, `svc_worker::sweeper::DEFAULT_CURATOR_LEASE_MS`).
    pub fn curator_lease(mut self, lease: Duration) -> Self {
        self.curator_lease = lease;
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
        let database_url = if self.managed_owner {
            provision_managed_owner(&admin_url, &database).await?
        } else {
            with_database(&admin_url, &database)
        };
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
            auth: Default::default(),
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
            http_limits: self.http_limits,
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
                .then_some(svc_worker::sweeper::CuratorSettings {
                    debounce_ms: self.curator_debounce.as_millis() as u64,
                    lease_ms: self.curator_lease.as_millis() as u64,
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
pub(crate) fn spawn_on_own_thread<F>(body: F) -> ServiceTask
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

pub(crate) async fn listen() -> Result<(TcpListener, String), BoxError> {
    // The services' own bind (its listen backlog), as their binaries do.
    let listener = pa_kit::grpc::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    Ok((listener, url))
}

pub(crate) type ServiceTask = tokio::task::JoinHandle<Result<(), String>>;

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
            rate_limits: pa_bus::limits::RateLimits {
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
            curator_lease: Duration::from_millis(svc_worker::sweeper::DEFAULT_CURATOR_LEASE_MS),
            recall_delay: Duration::ZERO,
            models_net_allow: None,
            run_leases: Default::default(),
            database_url: None,
            redis_url: None,
            http_limits: Default::default(),
            temporal_address: None,
            history_messages: 50,
            runs_db_proxy: false,
            managed_owner: false,
        }
    }

    /// The mesh's database as the server's administrator (DATABASE_URL's role) sees it, e.g. to
    /// seed or inspect rows of every tenant whatever role the services connect as.
    pub fn admin_database_url(&self) -> String {
        with_database(&self.admin_url, &self.database)
    }

    /// Starts svc-worker for this mesh as a separate process (`worker_binary`, e.g. the
    /// `pa-e2e-worker` binary of this crate), so a test can kill it with SIGKILL.
    pub fn spawn_worker_process(
        &self,
        worker_binary: &str,
    ) -> Result<std::process::Child, BoxError> {
        Ok(self.worker_process_command(worker_binary)?.spawn()?)
    }

    /// The command [`Mesh::spawn_worker_process`] runs, for a test to change (e.g. the worker's
    /// `TEMPORAL_ADDRESS`, to reach Temporal through a proxy it can stall).
    pub fn worker_process_command(
        &self,
        worker_binary: &str,
    ) -> Result<std::process::Command, BoxError> {
        let c = &self.worker_config;
        let mut command = std::process::Command::new(worker_binary);
        command
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
            .env(
                "PA_WORKER_SCHEDULES",
                if c.schedules { "on" } else { "off" },
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
                    .unwrap_or(svc_worker::sweeper::DEFAULT_CURATOR_DEBOUNCE_MS)
                    .to_string(),
            )
            .env(
                "PA_CURATOR_LEASE_MS",
                c.curator
                    .map(|s| s.lease_ms)
                    .unwrap_or(svc_worker::sweeper::DEFAULT_CURATOR_LEASE_MS)
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
            });
        Ok(command)
    }

    /// The address the mesh's worker reaches Temporal at.
    pub fn temporal_address(&self) -> &str {
        &self.worker_config.temporal.address
    }

    /// Removes this mesh's maintenance schedules, which outlive it in Temporal.
    pub async fn delete_schedules(&self) -> Result<(), BoxError> {
        let client = svc_worker::temporal::connect(&self.worker_config.temporal).await?;
        for task in svc_worker::schedules::TASKS {
            let id = svc_worker::schedules::schedule_id(
                &self.worker_config.temporal.task_queue,
                task.name,
            );
            let _ = client
                .get_schedule_handle(id)
                .delete(Default::default())
                .await;
        }
        Ok(())
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

    /// DELETE /v1/chats/{chat_id} as the dev user; the status.
    pub async fn delete_chat(&self, chat_id: &str) -> Result<u16, BoxError> {
        let response = self
            .http
            .delete(self.url(&format!("/v1/chats/{chat_id}")))
            .send()
            .await?;
        Ok(response.status().as_u16())
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

    /// The turn the chat's summary was last curated from, if the Curator wrote one.
    pub async fn curated_from(&self, chat: &str) -> Result<Option<String>, BoxError> {
        let (_, page) = self.get_json("/v1/me/memories").await?;
        Ok(page["items"].as_array().and_then(|items| {
            items
                .iter()
                .find(|m| m["kind"] == "summary" && m["chat_id"].as_str() == Some(chat))
                .and_then(|m| m["source"]["run_id"].as_str().map(str::to_string))
        }))
    }

    /// Waits until the chat's summary was curated from the turn `run_id` (the Curator rewrites
    /// a chat's summary in place, with the last curated turn as its source).
    pub async fn await_curated(&self, chat: &str, run_id: &str) -> Result<(), BoxError> {
        let mut last = None;
        for _ in 0..300 {
            last = self.curated_from(chat).await?;
            if last.as_deref() == Some(run_id) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("turn {run_id} was not curated (the summary is from {last:?})").into())
    }

    /// Enrolls a device named `name` for the dev user (a code, then the device's redemption of
    /// it): the enrollment answer (`device_id`, `device_token`, `name`).
    pub async fn enroll_device(&self, name: &str) -> Result<serde_json::Value, BoxError> {
        let (status, enrollment) = self
            .post_json(
                "/v1/me/devices/enrollments",
                &serde_json::json!({ "name": name }),
            )
            .await?;
        if status != 201 {
            return Err(format!("enrollment code: {status} {enrollment}").into());
        }
        let (status, enrolled) = self
            .post_json(
                "/v1/devices/enroll",
                &serde_json::json!({ "code": enrollment["code"], "platform": "linux-x86_64" }),
            )
            .await?;
        if status != 200 {
            return Err(format!("enroll: {status} {enrolled}").into());
        }
        Ok(enrolled)
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

/// The toolset snapshot a run records in svc-runs' row (an earlier run's when its toolset was
/// used again, ADR 0251), read straight from the database.
pub async fn recorded_snapshot(
    db: &mut sqlx::PgConnection,
    run_id: &str,
) -> Result<String, BoxError> {
    Ok(
        sqlx::query_scalar("SELECT toolset_snapshot_id FROM runs.runs WHERE id = $1")
            .bind(run_id)
            .fetch_one(db)
            .await?,
    )
}
