use std::time::Duration;

use pa_kit::redis::Pool;
use pa_kit::{InternalAuth, Shutdown};
use pa_proto::v1::control_service_client::ControlServiceClient;
use pa_proto::v1::key_service_client::KeyServiceClient;
use pa_proto::v1::model_admin_service_client::ModelAdminServiceClient;
use pa_proto::v1::model_service_client::ModelServiceClient;
use pa_proto::v1::run_service_client::RunServiceClient;
use pa_proto::v1::usage_service_client::UsageServiceClient;
use tonic::transport::Channel;

use crate::config::AuthMode;

/// Shared by every handler: one `Arc`, so a request's clone is one increment. axum clones the
/// state for every request (the `State` extractor), and a stream holds its clone while it is
/// open; cloning the services' clients and the rest field by field cost both (ADR 0236).
#[derive(Clone)]
pub struct AppState(std::sync::Arc<SharedState>);

impl AppState {
    pub fn new(shared: SharedState) -> AppState {
        AppState(std::sync::Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// What the handlers share (see [`AppState`]).
pub struct SharedState {
    /// `PA_METRICS`: whether GET /metrics answers.
    pub metrics: bool,
    pub runs: RunServiceClient<Channel>,
    pub models: ModelServiceClient<Channel>,
    pub model_admin: ModelAdminServiceClient<Channel>,
    pub keys: KeyServiceClient<Channel>,
    pub usage: UsageServiceClient<Channel>,
    pub tools: pa_proto::v1::tool_service_client::ToolServiceClient<Channel>,
    pub memory: pa_proto::v1::memory_service_client::MemoryServiceClient<Channel>,
    /// svc-worker's maintenance schedules (absent when no worker is configured).
    pub schedules: Option<pa_proto::v1::schedule_service_client::ScheduleServiceClient<Channel>>,
    pub auth: InternalAuth,
    pub auth_mode: AuthMode,
    pub rate_limits: pa_bus::limits::RateLimits,
    /// API keys (needs the gateway's database).
    pub api_keys: Option<crate::api_key_store::ApiKeyStore>,
    /// The tenant's users as seen here, and who is disabled (needs the gateway's database).
    pub users: Option<std::sync::Arc<crate::user_directory::UserDirectory>>,
    /// Present in OIDC mode.
    pub oidc: Option<std::sync::Arc<crate::oidc::OidcVerifier>>,
    pub redis: Pool,
    /// Every SSE stream of this replica reads its run's events through it (one Redis reader).
    pub events: pa_bus::event_hub::EventHub,
    /// For the connections that cannot come from the pool (a device socket's subscription).
    pub redis_url: String,
    pub sse_keepalive: Duration,
    /// Whether the gateway's own Postgres and Redis answer (/readyz).
    pub readiness: pa_kit::readiness::Readiness,
    /// (name, channel) of every backend /readyz checks.
    pub backends: Vec<(&'static str, Channel)>,
    /// Open SSE streams end when it fires, so shutdown is not held up by idle followers
    /// (clients resume with Last-Event-ID).
    pub shutdown: Shutdown,
    /// svc-runs' run control (cancel, approve/deny), for the control socket.
    pub control: ControlServiceClient<Channel>,
    /// Presence fan-out of the control socket (one Redis subscription per replica).
    pub presence: std::sync::Arc<crate::presence::PresenceHub>,
    /// The built web app, when there is one.
    pub web: Option<crate::static_files::WebDir>,
    /// Runs this replica just started, so their first SSE read needs no GetRun.
    pub recent_runs: std::sync::Arc<crate::recent_runs::RecentRuns>,
}
