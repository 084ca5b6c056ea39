//! svc-tools: assembles each run's toolset (a snapshot fixed at run start), executes tool calls,
//! and keeps the registry of integrations and devices.

mod assembler;
pub mod config;
pub mod devices;
mod error;
mod executor;
pub mod gate;
mod generation;
mod integrations;
mod maintenance;
pub mod mcp;
mod mcp_listings;
pub mod memory;
/// The network guard lives in `pa-netguard` (svc-models guards provider base URLs with it too).
pub use pa_netguard as netguard;
pub mod sandbox;
mod service;
pub mod subagent;
pub mod web;

use std::sync::Arc;

pub use config::{Config, ToolsSettings};
use pa_kit::Shutdown;
use pa_kit::crypto::KeyEncryption;
use pa_kit::grpc::{GrpcServer, channel};
use pa_kit::identity::RequireIdentity;
use pa_proto::v1::memory_service_client::MemoryServiceClient;
use pa_proto::v1::tool_service_server::ToolServiceServer;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub use pa_kit::StartError;

pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    let settings = config.tools.clone();
    let enc = Arc::new(match &settings.kek {
        Some((id, key, previous)) => KeyEncryption::from_config(id, key, previous)
            .map_err(|e| StartError::Other(e.to_string()))?,
        None => {
            tracing::warn!(
                "PA_KEK is unset: integration secrets are encrypted with the fixed dev KEK; set PA_KEK in production"
            );
            KeyEncryption::dev_default()
        }
    });
    let guard = netguard::NetGuard::new(
        settings.allow.clone(),
        &settings.dns_overrides,
        settings.fetch_max_bytes,
        settings.fetch_timeout,
    )
    .map_err(|e| StartError::Other(format!("HTTP client: {e}")))?;
    // Requests run as the application role, under row-level security.
    let pools =
        pa_kit::db::connect_schema_rls(&config.common.database_url, "tools", &MIGRATOR, 10).await?;
    let pool = pools.app;
    let maintenance = maintenance::Maintenance {
        owner: pools.owner,
        retention: config.snapshot_retention,
    };
    // Tried once at start: where the sandbox does not work, stdio MCP servers are refused with
    // the reason (logged now).
    let sandbox = sandbox::Sandbox::start(settings.mcp_sandbox.clone()).await;
    let redis = pa_kit::redis::pool(&config.common.redis_url, 64)
        .map_err(|e| StartError::Other(e.to_string()))?;
    // The deployment's name for its Redis keys: its database (ADR 0251).
    let database = pa_kit::db::database_name(&maintenance.owner)
        .await
        .map_err(StartError::Db)?;
    let generations = generation::Generations::new(redis.clone(), &database);
    let store = integrations::IntegrationStore::new(
        pool.clone(),
        enc,
        integrations::StdioPolicy {
            commands: settings.mcp_stdio_commands.clone(),
            sandbox,
        },
        generations.clone(),
    );
    let auth = pa_kit::InternalAuth::new(&config.common.internal_secret);
    let memory = memory::MemoryTools::new(
        MemoryServiceClient::new(
            channel(&config.memory_url)
                .map_err(|e| StartError::Other(format!("PA_MEMORY_URL: {e}")))?,
        ),
        auth.clone(),
    );
    let readiness = pa_kit::readiness::Readiness::probe(
        vec![pool.clone()],
        Some(redis.clone()),
        shutdown.clone(),
    );
    let devices =
        devices::DeviceRegistry::new(pool.clone(), generations, settings.device_call_timeout);
    let assembler = assembler::ToolsetAssembler::new(pool, store, guard, settings, memory, devices);
    let service = service::ToolServiceImpl::new(assembler);
    GrpcServer::new(config.request_timeout)?
        .named("svc-tools")
        .metrics(config.common.metrics)
        .readiness(readiness)
        .add_service(ToolServiceServer::with_interceptor(
            service,
            RequireIdentity(auth.clone()),
        ))
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
    pa_kit::service_main_with_secrets("svc-tools", &["PA_KEK"], |shutdown| async move {
        let config = crate::config::from_env()?;
        let listener = pa_kit::grpc::bind(&config.listen_addr).await?;
        crate::run(config, listener, shutdown).await?;
        Ok(())
    })
    .await
}
