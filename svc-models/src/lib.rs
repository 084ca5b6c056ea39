//! svc-models: the only service that talks to model providers and the only one that ever holds a
//! provider key. Catalog, model resolution, streaming chat.

mod catalog;
pub mod config;
mod offline;
mod service;

pub use config::Config;
use pa_kit::Shutdown;
use pa_kit::grpc::GrpcServer;
use pa_kit::identity::RequireIdentity;
use pa_proto::v1::model_service_server::ModelServiceServer;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] pa_kit::db::DbError),
    #[error(transparent)]
    Serve(#[from] pa_kit::grpc::ServeError),
}

/// Runs svc-models on `listener` until `shutdown` fires.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    let pool =
        pa_kit::db::connect_schema(&config.common.database_url, "models", &MIGRATOR, 10).await?;
    let catalog = catalog::Catalog::new(pool);
    let service =
        service::ModelServiceImpl::new(catalog, config.offline_token_delay, shutdown.clone());
    let auth = pa_kit::InternalAuth::new(&config.common.internal_secret);
    GrpcServer::new(config.request_timeout)?
        .add_service(ModelServiceServer::with_interceptor(
            service,
            RequireIdentity(auth),
        ))
        .serve(listener, shutdown)
        .await?;
    Ok(())
}
