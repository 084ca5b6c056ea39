//! svc-memory: world memory (about the user, across chats) and per-chat memory.

pub mod config;
mod service;
mod store;

pub use config::Config;
use pa_kit::Shutdown;
use pa_kit::grpc::GrpcServer;
use pa_kit::identity::RequireIdentity;
use pa_proto::v1::memory_service_server::MemoryServiceServer;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub use pa_kit::StartError;

pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    // Requests run as the application role, under row-level security.
    let pools =
        pa_kit::db::connect_schema_rls(&config.common.database_url, "memory", &MIGRATOR, 10)
            .await?;
    let pool = pools.app;
    let service = service::MemoryServiceImpl::new(store::MemoryStore::new(pool));
    let auth = pa_kit::InternalAuth::new(&config.common.internal_secret);
    GrpcServer::new(config.request_timeout)?
        .add_service(MemoryServiceServer::with_interceptor(
            service,
            RequireIdentity(auth),
        ))
        .serve(listener, shutdown)
        .await?;
    Ok(())
}
