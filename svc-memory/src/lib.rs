//! svc-memory: world memory (about the user, across chats), per-chat memory and chat
//! documents, with hybrid (pgvector + full-text) search.

pub mod config;
pub mod documents;
mod embed;
mod memories;
mod reembed;
mod service;
mod store;

pub use config::Config;
use pa_kit::Shutdown;
use pa_kit::grpc::GrpcServer;
use pa_kit::identity::RequireIdentity;
use pa_proto::v1::memory_service_server::MemoryServiceServer;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub use pa_kit::StartError;

/// Uploaded documents arrive in one message (the gateway caps files at 10 MiB).
const MAX_MESSAGE_BYTES: usize = documents::MAX_BYTES + 1024 * 1024;

pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    // Requests run as the application role, under row-level security.
    let pools =
        pa_kit::db::connect_schema_rls(&config.common.database_url, "memory", &MIGRATOR, 10)
            .await?;
    let readiness =
        pa_kit::readiness::Readiness::probe(vec![pools.app.clone()], None, shutdown.clone());
    let auth = pa_kit::InternalAuth::new(&config.common.internal_secret);
    let models = pa_kit::grpc::channel(&config.models_url)
        .map_err(|e| StartError::Other(format!("PA_MODELS_URL: {e}")))?;
    let embedder = embed::Embedder::new(models, auth.clone(), config.embed_label.clone());
    let reembed = reembed::Reembed {
        owner: pools.owner,
        embedder: embedder.clone(),
    };
    let memories = memories::Memories {
        store: store::MemoryStore::new(pools.app),
        embedder,
    };
    let server = MemoryServiceServer::new(service::MemoryServiceImpl::new(memories))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    GrpcServer::new(config.request_timeout)?
        .named("svc-memory")
        .metrics(config.common.metrics)
        .readiness(readiness)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            server,
            RequireIdentity(auth.clone()),
        ))
        .add_service(
            pa_proto::v1::maintenance_service_server::MaintenanceServiceServer::with_interceptor(
                reembed,
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
    pa_kit::service_main("svc-memory", |shutdown| async move {
        let config = crate::config::from_env()?;
        let listener = pa_kit::grpc::bind(&config.listen_addr).await?;
        crate::run(config, listener, shutdown).await?;
        Ok(())
    })
    .await
}
