//! svc-runs: chats, messages and runs. `launch_run` is the one chokepoint that builds a RunSpec;
//! the inline driver runs pa-agent's loop and streams AG-UI events to Redis.

mod approvals;
pub mod config;
mod confirm;
mod curations;
pub mod durable;
mod error;
mod histories;
mod inline;
mod launch;
pub mod lease;
mod ledger;
mod maintenance;
mod memo;
pub mod mode;
mod outbox;
mod reaper;
mod roles;
mod run_start;
mod service;
mod store;
mod subagents;

pub use config::Config;
use pa_bus::run_events::EventSink;
use pa_kit::grpc::{GrpcServer, channel};
use pa_kit::identity::RequireIdentity;
use pa_kit::{InternalAuth, Shutdown};
use pa_proto::v1::control_service_server::ControlServiceServer;
use pa_proto::v1::memory_service_client::MemoryServiceClient;
use pa_proto::v1::model_service_client::ModelServiceClient;
use pa_proto::v1::run_ledger_service_server::RunLedgerServiceServer;
use pa_proto::v1::run_service_server::RunServiceServer;
use pa_proto::v1::tool_service_client::ToolServiceClient;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub use pa_kit::StartError;

pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    let pools =
        pa_kit::db::connect_schema_rls(&config.common.database_url, "runs", &MIGRATOR, 20).await?;
    let redis = pa_kit::redis::pool(&config.common.redis_url, 256)?;
    let readiness = pa_kit::readiness::Readiness::probe(
        vec![pools.app.clone()],
        Some(redis.clone()),
        shutdown.clone(),
    );
    let auth = InternalAuth::new(&config.common.internal_secret);
    let database = pa_kit::db::database_name(&pools.owner)
        .await
        .map_err(StartError::Db)?;
    let leases = std::sync::Arc::new(lease::Leases::new(
        config.leases,
        pools.owner.clone(),
        redis.clone(),
        &database,
    ));
    let curations = curations::CurationQueue {
        owner: pools.owner.clone(),
    };
    let maintenance = maintenance::Maintenance {
        owner: pools.owner,
        retention: config.deleted_chat_retention,
    };
    // Turns are queued for the Curator only where a worker can curate them (ADR 0242).
    let store = store::RunStore::new(pools.app).curating_turns(config.worker_url.is_some());
    let models = ModelServiceClient::new(channel(&config.models_url)?);
    let tools = ToolServiceClient::new(channel(&config.tools_url)?);
    let memory = MemoryServiceClient::new(channel(&config.memory_url)?);
    // Sub-agent calls of inline runs reach StartSubRun like the worker's do: over gRPC, to
    // this very process (its listener), so both drivers share one path.
    let own_url = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().map_err(StartError::from)?.port()
    );
    let own = channel(&own_url)?;
    let subagents = pa_turn_io::SubAgentIo {
        ledger: pa_proto::v1::run_ledger_service_client::RunLedgerServiceClient::new(own.clone()),
        runs: pa_proto::v1::run_service_client::RunServiceClient::new(own),
        redis: redis.clone(),
        auth: auth.clone(),
    };
    let sink = EventSink::new(redis.clone());
    let durable = durable::DurableDriver::new(
        redis.clone(),
        config.approval_timeout,
        config.worker_url.as_deref().map(channel).transpose()?,
        auth.clone(),
    );
    let driver = inline::InlineDriver::new(
        inline::InlineOptions {
            history_messages: config.history_messages,
            approval_timeout: config.approval_timeout,
            recall: config.recall,
        },
        inline::InlineDeps {
            store: store.clone(),
            io: pa_turn_io::RunIo {
                models: models.clone(),
                tools: tools.clone(),
                memory: memory.clone(),
                auth: auth.clone(),
                subagents,
            },
            sink: sink.clone(),
            redis: redis.clone(),
            shutdown: shutdown.clone(),
            leases: leases.clone(),
        },
    );
    // This instance beats before it takes any run, so its runs are never seen without an owner
    // that beats; then it beats, reaps runs of gone owners and drains the outbox until it exits.
    if let Err(err) = leases.beat_pg(&[]).await {
        tracing::warn!(%err, "cannot write this instance's first beat");
    }
    reaper::spawn(driver.clone());
    let launcher = launch::Launcher::new(
        launch::LaunchOptions {
            database: database.clone(),
            limits: config.limits,
            daily_token_budget: config.daily_token_budget,
        },
        launch::LaunchDeps {
            store,
            models,
            tools,
            memory,
            auth: auth.clone(),
            driver,
            durable: durable.clone(),
            sink,
            shutdown: shutdown.clone(),
            redis: redis.clone(),
        },
    );
    let service = service::RunServiceImpl::new(launcher, redis);
    GrpcServer::new(config.request_timeout)?
        .named("svc-runs")
        .metrics(config.common.metrics)
        .readiness(readiness)
        .add_service(RunServiceServer::with_interceptor(
            service.clone(),
            RequireIdentity(auth.clone()),
        ))
        .add_service(ControlServiceServer::with_interceptor(
            service.clone(),
            RequireIdentity(auth.clone()),
        ))
        .add_service(RunLedgerServiceServer::with_interceptor(
            service,
            RequireIdentity(auth.clone()),
        ))
        .add_service(
            pa_proto::v1::curation_service_server::CurationServiceServer::with_interceptor(
                curations,
                RequireIdentity(auth.clone()),
            ),
        )
        .add_service(
            pa_proto::v1::maintenance_service_server::MaintenanceServiceServer::with_interceptor(
                maintenance,
                RequireIdentity(auth),
            ),
        )
        .serve(listener, shutdown)
        .await?;
    Ok(())
}

/// The service as its binary runs it: configuration from the environment, listeners bound,
/// served until SIGTERM/SIGINT. `main.rs` calls this, and so does the e2e harness's
/// `pa-e2e-service` (one binary that can be any service, started and killed as a process).
pub async fn main_from_env() -> std::process::ExitCode {
    pa_kit::service_main("svc-runs", |shutdown| async move {
        let config = crate::Config::from_env()?;
        let listener = pa_kit::grpc::bind(&config.listen_addr).await?;
        crate::run(config, listener, shutdown).await?;
        Ok(())
    })
    .await
}
