//! Plumbing every Personal Agent service shares. Nothing here knows a service's domain.

pub mod config;
pub mod crypto;
pub mod db;
pub mod endpoints;
pub mod error;
pub mod grpc;
pub mod identity;
pub mod maintenance;
pub mod metrics;
pub mod process;
pub mod readiness;
pub mod redis;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod validate;

pub use error::{ErrorCode, PaError, Store};
pub use identity::{InternalAuth, RequestIdentity};
pub use shutdown::Shutdown;

/// The allocator every binary of the platform declares as its `#[global_allocator]` (ADR 0232).
pub type Allocator = mimalloc::MiMalloc;
/// The [`Allocator`] value.
pub const ALLOCATOR: Allocator = mimalloc::MiMalloc;

/// The body of every service's `main`: logging, a signal-driven [`Shutdown`], and one clear log
/// line plus a failure exit code when the service cannot run.
pub async fn service_main<F, Fut>(service: &'static str, body: F) -> std::process::ExitCode
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: std::future::Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>,
{
    service_main_with_secrets(service, &[], body).await
}

/// [`service_main`] for a service that also holds `secrets` (e.g. `PA_KEK`): outside
/// `PA_AUTH_MODE=dev` it refuses to start, with one line naming the variable, when one of them
/// (or `PA_INTERNAL_SECRET`) is unset.
pub async fn service_main_with_secrets<F, Fut>(
    service: &'static str,
    secrets: &'static [&'static str],
    body: F,
) -> std::process::ExitCode
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: std::future::Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>,
{
    telemetry::init(service);
    process::raise_open_files_limit_and_log(service);
    // Outside dev mode a service never runs on the public dev secrets.
    if let Err(err) = config::check_secrets(service, secrets, |name| std::env::var(name).ok()) {
        tracing::error!(service, "cannot run: {err}");
        telemetry::flush();
        return std::process::ExitCode::FAILURE;
    }
    let code = match body(Shutdown::on_signals()).await {
        Ok(()) => {
            tracing::info!(service, "stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(service, %err, "cannot run");
            std::process::ExitCode::FAILURE
        }
    };
    telemetry::flush();
    code
}

/// Why a service could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("client channel: {0}")]
    Channel(#[from] tonic::transport::Error),
    #[error(transparent)]
    Serve(#[from] grpc::ServeError),
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
    /// A service-specific cause, already described.
    #[error("{0}")]
    Other(String),
}
