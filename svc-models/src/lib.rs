//! svc-models: the only service that talks to model providers and the only one that ever holds
//! a provider key. Catalog and governance, `auto`, BYOK, fallback, provider calls, usage.

mod breaker;
mod catalog;
pub mod config;
pub mod embedder;
mod governance;
mod keys;
mod offline;
mod provider;
mod relay;
mod resolver;
mod seed;
mod service;
mod usage;

use std::sync::Arc;

pub use config::Config;
use pa_kit::Shutdown;
use pa_kit::grpc::GrpcServer;
use pa_kit::identity::RequireIdentity;
use pa_proto::v1::key_service_server::KeyServiceServer;
use pa_proto::v1::model_admin_service_server::ModelAdminServiceServer;
use pa_proto::v1::model_service_server::ModelServiceServer;
use pa_proto::v1::usage_service_server::UsageServiceServer;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] pa_kit::db::DbError),
    #[error(transparent)]
    Serve(#[from] pa_kit::grpc::ServeError),
    #[error("key-encryption key: {0}")]
    Kek(#[from] keys::KeyError),
    #[error(transparent)]
    Seed(#[from] seed::SeedError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Runs svc-models on `listener` until `shutdown` fires.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    let pools =
        pa_kit::db::connect_schema_rls(&config.common.database_url, "models", &MIGRATOR, 10)
            .await?;
    let pool = pools.app.clone();
    let readiness = pa_kit::readiness::Readiness::probe(vec![pool.clone()], None, shutdown.clone());
    let enc = Arc::new(match &config.kek {
        Some((id, key, previous)) => {
            keys::KeyEncryption::from_config(id, key, previous).map_err(keys::KeyError::from)?
        }
        None => {
            tracing::warn!(
                "PA_KEK is unset: provider keys are encrypted with the fixed dev KEK; set PA_KEK in production"
            );
            keys::KeyEncryption::dev_default()
        }
    });
    let catalog = catalog::Catalog::new(pool.clone());
    if let Some(path) = &config.models_config {
        let text = std::fs::read_to_string(path).map_err(|source| seed::SeedError::Read {
            path: path.clone(),
            source,
        })?;
        let file = seed::parse(path, &text)?;
        seed::apply(&catalog, &enc, path, &file).await?;
    }
    let keys = keys::KeyStore::new(pool.clone(), enc.clone());
    // Rotation: keys still sealed under an older KEK move to the current one.
    let moved = keys.rewrap_all(&pools.owner).await?;
    if moved > 0 {
        tracing::info!(
            moved,
            kek = enc.current_id(),
            "re-encrypted stored keys under the current KEK"
        );
    }
    let net_guard = pa_netguard::AddressGuard::new(config.net_allow.clone(), &[]);
    let relay = relay::Relay {
        catalog,
        keys,
        enc,
        usage: usage::UsageStore::new(pool),
        http: provider::http_client(&net_guard, config.provider_connect_timeout)?,
        net_guard,
        breakers: breaker::Breakers::default(),
        timeouts: relay::Timeouts {
            first_byte: config.provider_first_byte_timeout,
            idle: config.provider_idle_timeout,
        },
        offline_token_delay: config.offline_token_delay,
        shutdown: shutdown.clone(),
    };
    let services = service::Services {
        relay,
        embedder: embedder::OfflineEmbedder::new(config.embed_model_dir.clone()),
    };
    let auth = pa_kit::InternalAuth::new(&config.common.internal_secret);
    let guard = RequireIdentity(auth);
    GrpcServer::new(config.request_timeout)?
        .named("svc-models")
        .metrics(config.common.metrics)
        .readiness(readiness)
        .add_service(ModelServiceServer::with_interceptor(
            services.clone(),
            guard.clone(),
        ))
        .add_service(ModelAdminServiceServer::with_interceptor(
            services.clone(),
            guard.clone(),
        ))
        .add_service(KeyServiceServer::with_interceptor(
            services.clone(),
            guard.clone(),
        ))
        .add_service(UsageServiceServer::with_interceptor(
            services,
            guard.clone(),
        ))
        .add_service(
            pa_proto::v1::maintenance_service_server::MaintenanceServiceServer::with_interceptor(
                usage::UsageRollup { owner: pools.owner },
                guard,
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
    // A binary's entry point only: it may replace the process (see the constant).
    pa_kit::process::exec_with_env_defaults(embedder::KERNEL_THREADS_ENV);
    pa_kit::service_main_with_secrets("svc-models", &["PA_KEK"], |shutdown| async move {
        let config = crate::Config::from_env()?;
        let listener = pa_kit::grpc::bind(&config.listen_addr).await?;
        crate::run(config, listener, shutdown).await?;
        Ok(())
    })
    .await
}
