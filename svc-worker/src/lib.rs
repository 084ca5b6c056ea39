//! svc-worker: the Temporal worker. It runs ChatAgentWorkflow (durable runs) on the task queue
//! svc-runs starts them on, with the activities that reach svc-models, svc-tools and Redis.

pub mod activities;
pub mod chat;
pub mod claims;
pub mod curation;
pub mod curator;
pub mod early;
pub mod maintenance;
pub mod payloads;
pub mod running;
pub mod schedules;
mod service;
pub mod signals;
pub mod start;
pub mod sweeper;
pub mod temporal;

use std::time::Duration;

use pa_bus::run_events::EventSink;
use pa_kit::config::{CommonConfig, ConfigError, env_or, env_parse};
use pa_kit::grpc::{GrpcServer, channel};
use pa_kit::{InternalAuth, Shutdown, StartError};
use pa_proto::v1::maintenance_service_client::MaintenanceServiceClient;
use pa_proto::v1::model_service_client::ModelServiceClient;
use pa_proto::v1::run_ledger_service_client::RunLedgerServiceClient;
use pa_proto::v1::tool_service_client::ToolServiceClient;
use pa_turn_io::RunIo;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tonic_health::ServingStatus;

pub use chat::{ChatAgentWorkflow, ChatRunInput};
pub use temporal::TemporalConfig;

/// svc-worker settings, from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    pub temporal: TemporalConfig,
    /// `PA_WORKER_ADDR`, default `127.0.0.1:50055`: health, durable run starts (svc-runs) and
    /// schedules (the gateway).
    pub listen_addr: String,
    /// `PA_RUNS_URL`, `PA_MODELS_URL`, `PA_TOOLS_URL`: the services the activities call.
    pub runs_url: String,
    pub models_url: String,
    pub tools_url: String,
    /// `PA_MEMORY_URL`: where the Curator writes.
    pub memory_url: String,
    /// `PA_WORKER_SCHEDULES` (`on`/`off`, default on): create the maintenance schedules.
    pub schedules: bool,
    /// `PA_WORKER_STICKY_TIMEOUT_MS`, default 2000: how long a workflow cached on a worker that
    /// died waits before another worker takes it.
    pub sticky_timeout: Duration,
    /// `PA_WORKER_BACKGROUND_ACTIVITIES`, default 4: maintenance activities run at once on the
    /// background task queue, and as many curations at once in the Curator's sweep.
    pub background_activities: usize,
    /// `PA_MODEL_TURN_ATTEMPTS` (default 4) and `PA_MODEL_TURN_RETRY_MS` (default 500): how a
    /// durable model turn that broke off (svc-models or the provider stream died) is retried.
    pub turn_retry: activities::TurnRetry,
    /// `PA_CLAIM_CHECK_BYTES`, default 65536: histories and tool results above this size travel
    /// through Temporal by reference (stored once in Redis).
    pub claim_threshold: usize,
    /// `PA_CURATOR` (`on`/`off`, default on), `PA_CURATOR_DEBOUNCE_MS`, `PA_CURATOR_LEASE_MS`:
    /// the Curator's sweep over the chats svc-runs queues after each successful turn (ADR 0242).
    pub curator: Option<sweeper::CuratorSettings>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(),
            temporal: TemporalConfig::from_env(),
            listen_addr: env_or("PA_WORKER_ADDR", "127.0.0.1:50055"),
            runs_url: env_or("PA_RUNS_URL", "http://127.0.0.1:50051"),
            models_url: env_or("PA_MODELS_URL", "http://127.0.0.1:50052"),
            tools_url: env_or("PA_TOOLS_URL", "http://127.0.0.1:50053"),
            memory_url: env_or("PA_MEMORY_URL", "http://127.0.0.1:50054"),
            schedules: env_or("PA_WORKER_SCHEDULES", "on") != "off",
            sticky_timeout: Duration::from_millis(env_parse("PA_WORKER_STICKY_TIMEOUT_MS", 2000)?),
            background_activities: env_parse::<usize>("PA_WORKER_BACKGROUND_ACTIVITIES", 4)?.max(1),
            turn_retry: activities::TurnRetry {
                attempts: env_parse::<u32>("PA_MODEL_TURN_ATTEMPTS", 4)?.max(1),
                first_delay: Duration::from_millis(env_parse("PA_MODEL_TURN_RETRY_MS", 500)?),
            },
            claim_threshold: env_parse("PA_CLAIM_CHECK_BYTES", claims::DEFAULT_THRESHOLD)?,
            curator: if env_or("PA_CURATOR", "on") == "off" {
                None
            } else {
                Some(sweeper::CuratorSettings {
                    debounce_ms: env_parse(
                        "PA_CURATOR_DEBOUNCE_MS",
                        sweeper::DEFAULT_CURATOR_DEBOUNCE_MS,
                    )?,
                    lease_ms: env_parse("PA_CURATOR_LEASE_MS", sweeper::DEFAULT_CURATOR_LEASE_MS)?
                        .max(1000),
                })
            },
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Temporal(#[from] temporal::TemporalError),
    #[error("Temporal worker: {0}")]
    Worker(String),
}

impl From<WorkerError> for StartError {
    fn from(err: WorkerError) -> Self {
        StartError::Other(err.to_string())
    }
}

/// The activities' clients (connected lazily) and an empty set of early turns.
pub fn run_activities(
    config: &Config,
    redis: pa_kit::redis::Pool,
    auth: InternalAuth,
) -> Result<activities::RunActivities, tonic::transport::Error> {
    let memory =
        pa_proto::v1::memory_service_client::MemoryServiceClient::new(channel(&config.memory_url)?);
    let ledger = RunLedgerServiceClient::new(channel(&config.runs_url)?);
    let runs = pa_proto::v1::run_service_client::RunServiceClient::new(channel(&config.runs_url)?);
    Ok(activities::RunActivities {
        io: RunIo {
            models: ModelServiceClient::new(channel(&config.models_url)?),
            tools: ToolServiceClient::new(channel(&config.tools_url)?),
            memory: memory.clone(),
            auth: auth.clone(),
            subagents: pa_turn_io::SubAgentIo {
                ledger: ledger.clone(),
                runs: runs.clone(),
                redis: redis.clone(),
                auth: auth.clone(),
            },
        },
        ledger,
        runs,
        memory,
        sink: EventSink::new(redis.clone()),
        claims: claims::Claims::new(redis.clone(), config.claim_threshold),
        turn_retry: config.turn_retry,
        redis,
        early: early::EarlyTurns::default(),
        running: running::RunningActivities::default(),
        maintenance: maintenance::MaintenanceClients {
            runs: MaintenanceServiceClient::new(channel(&config.runs_url)?),
            models: MaintenanceServiceClient::new(channel(&config.models_url)?),
            memory: MaintenanceServiceClient::new(channel(&config.memory_url)?),
            tools: MaintenanceServiceClient::new(channel(&config.tools_url)?),
            auth: auth.clone(),
        },
    })
}

/// Runs the worker (and its health endpoint on `listener`) until `shutdown` fires.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    let auth = InternalAuth::new(&config.common.internal_secret);
    let redis = pa_kit::redis::pool(&config.common.redis_url, 64)?;
    let readiness =
        pa_kit::readiness::Readiness::probe(Vec::new(), Some(redis.clone()), shutdown.clone());
    let activities = run_activities(&config, redis, auth.clone())?;
    activities.running.watch(shutdown.clone());
    let client = temporal::connect(&config.temporal)
        .await
        .map_err(WorkerError::from)?;
    let background_queue = config.temporal.background_queue();
    if config.schedules {
        schedules::ensure(&client, &config.temporal.task_queue, &background_queue)
            .await
            .map_err(WorkerError::Worker)?;
    }
    let schedule_service = service::Schedules {
        client: client.clone(),
        task_queue: config.temporal.task_queue.clone(),
    };
    let signals = signals::Signals::new(client.clone());
    let sweeping = match config.curator {
        Some(settings) => Some(
            sweeper::CurationSweeper {
                queue: pa_proto::v1::curation_service_client::CurationServiceClient::new(channel(
                    &config.runs_url,
                )?),
                auth: auth.clone(),
                activities: std::sync::Arc::new(activities.clone()),
                settings,
                concurrency: config.background_activities,
            }
            .spawn(shutdown.clone()),
        ),
        None => None,
    };
    // Once stopped, the sweep hands its unfinished claims back before the process ends.
    let swept = async {
        if let Some(sweeping) = sweeping {
            let _ = sweeping.await;
        }
    };
    let durable_runs = service::DurableRuns {
        client: client.clone(),
        task_queue: config.temporal.task_queue.clone(),
        activities: std::sync::Arc::new(activities.clone()),
        signals,
    };
    let runtime = Runtime::from_current_tokio(Default::default())
        .map_err(|e| WorkerError::Worker(e.to_string()))?;
    fn worker_error(e: impl std::fmt::Display) -> WorkerError {
        WorkerError::Worker(e.to_string())
    }
    // Runs' queue: their workflows and turns. The Curator workflow (only Curators opened before
    // ADR 0242 run it) and maintenance are registered here too, for those started on it before
    // they had a queue of their own.
    let options = WorkerOptions::new(config.temporal.task_queue.clone())
        .sticky_queue_schedule_to_start_timeout(config.sticky_timeout)
        .graceful_shutdown_period(Duration::from_secs(5))
        .register_workflow::<ChatAgentWorkflow>()
        .map_err(worker_error)?
        .register_workflow::<curator::CuratorWorkflow>()
        .map_err(worker_error)?
        .register_workflow::<schedules::MaintenanceWorkflow>()
        .map_err(worker_error)?
        .register_activities(activities.clone())
        .build();
    // Background queue: maintenance (and Curators opened before ADR 0242), a few activities at a
    // time.
    let background_options = WorkerOptions::new(background_queue.clone())
        .sticky_queue_schedule_to_start_timeout(config.sticky_timeout)
        .graceful_shutdown_period(Duration::from_secs(5))
        .tuner(background_tuner(config.background_activities))
        .register_workflow::<curator::CuratorWorkflow>()
        .map_err(worker_error)?
        .register_workflow::<schedules::MaintenanceWorkflow>()
        .map_err(worker_error)?
        .register_activities(activities)
        .build();
    let mut worker = Worker::new(&runtime, client.clone(), options)
        .map_err(|e| WorkerError::Worker(e.to_string()))?;
    let mut background = Worker::new(&runtime, client, background_options)
        .map_err(|e| WorkerError::Worker(e.to_string()))?;
    let stop_worker = worker.shutdown_handle();
    let stop_background = background.shutdown_handle();

    let server = GrpcServer::new(Duration::from_secs(30))?
        .named("svc-worker")
        .metrics(config.common.metrics)
        .readiness(readiness)
        .add_service(
            pa_proto::v1::durable_run_service_server::DurableRunServiceServer::with_interceptor(
                durable_runs,
                pa_kit::identity::RequireIdentity(auth.clone()),
            ),
        )
        .add_service(
            pa_proto::v1::schedule_service_server::ScheduleServiceServer::with_interceptor(
                schedule_service,
                pa_kit::identity::RequireIdentity(pa_kit::InternalAuth::new(
                    &config.common.internal_secret,
                )),
            ),
        );
    server
        .health
        .set_service_status("temporal", ServingStatus::Serving)
        .await;
    let token = shutdown.token();
    tokio::spawn(async move {
        token.cancelled().await;
        stop_worker();
        stop_background();
    });
    tracing::info!(task_queue = %config.temporal.task_queue, %background_queue, "Temporal worker polling");
    let health = server.serve(listener, shutdown.clone());
    let worked = async {
        // Either worker stopping on its own stops the process (below).
        let worked = tokio::select! {
            worked = worker.run() => worked,
            worked = background.run() => worked,
        };
        if !shutdown.is_triggered() {
            // A worker that gave up polling (e.g. Temporal unreachable past its retries) must
            // not leave a process that looks healthy and runs nothing: stop, so it is
            // restarted (docs/src/adr/0170-2026-12-03-store-outages.md).
            tracing::error!(result = ?worked.as_ref().err(), "the Temporal worker stopped on its own; stopping svc-worker");
            shutdown.trigger();
        }
        worked
    };
    let (worked, served, ()) = tokio::join!(worked, health, swept);
    worked.map_err(|e| WorkerError::Worker(e.to_string()))?;
    served?;
    Ok(())
}

/// The background worker's slots: `activities` at once; the SDK's defaults for the rest.
fn background_tuner(activities: usize) -> temporalio_sdk::runtime::worker_tuner::WorkerTuner {
    use temporalio_sdk::runtime::worker_tuner::{FixedSizeSlotSupplier, TunerHolder};
    TunerHolder::builder()
        .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(100))
        .activity_task_slot_supplier(FixedSizeSlotSupplier::new(activities))
        .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(100))
        .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(100))
        .build()
        .into()
}

/// The service as its binary runs it: configuration from the environment, listeners bound,
/// served until SIGTERM/SIGINT. `main.rs` calls this, and so does the e2e harness's
/// `pa-e2e-service` (one binary that can be any service, started and killed as a process).
pub async fn main_from_env() -> std::process::ExitCode {
    pa_kit::service_main("svc-worker", |shutdown| async move {
        let config = crate::Config::from_env()?;
        let listener = pa_kit::grpc::bind(&config.listen_addr).await?;
        crate::run(config, listener, shutdown).await?;
        Ok(())
    })
    .await
}
