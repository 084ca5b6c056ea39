//! svc-tools: assembles each run's toolset (a snapshot fixed at run start), executes tool calls,
//! and keeps the registry of integrations and devices.

mod assembler;
pub mod config;
mod service;

pub use config::Config;
use pa_kit::Shutdown;
use pa_kit::grpc::GrpcServer;
use pa_kit::identity::RequireIdentity;
use pa_proto::v1::tool_service_server::ToolServiceServer;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub use pa_kit::StartError;

pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    // Requests run as the application role, under row-level security.
    let pool = pa_kit::db::connect_schema_rls(&config.common.database_url, "tools", &MIGRATOR, 10)
        .await?
        .app;
    let service = service::ToolServiceImpl::new(assembler::ToolsetAssembler::new(pool));
    let auth = pa_kit::InternalAuth::new(&config.common.internal_secret);
    GrpcServer::new(config.request_timeout)?
        .add_service(ToolServiceServer::with_interceptor(
            service,
            RequireIdentity(auth),
        ))
        .serve(listener, shutdown)
        .await?;
    Ok(())
}
