//! svc-gateway: the HTTP face of the mesh. REST + SSE + the AG-UI endpoint for browsers and
//! scripts; it authenticates callers and forwards a signed identity to the gRPC services.

mod admin;
mod agui;
mod api;
mod api_keys;
mod auth;
pub mod config;
pub mod control_ws;
mod dto;
mod integrations;
mod memories;
pub mod oidc;
mod problem;
mod public_grpc;
mod sse;
mod state;
pub mod static_files;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch, post, put};
pub use config::{AuthMode, Config};
use pa_kit::grpc::channel;
use pa_kit::{InternalAuth, Shutdown};
use pa_proto::v1::key_service_client::KeyServiceClient;
use pa_proto::v1::model_admin_service_client::ModelAdminServiceClient;
use pa_proto::v1::model_service_client::ModelServiceClient;
use pa_proto::v1::run_service_client::RunServiceClient;
use pa_proto::v1::usage_service_client::UsageServiceClient;
use serde_json::json;
pub use state::AppState;

pub use pa_kit::StartError;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/v1", get(index))
        .route("/v1/control", get(control_ws::control))
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/auth/config", get(auth_config))
        .route("/readyz", get(readyz))
        .route("/v1/chats", post(api::create_chat).get(api::list_chats))
        .route(
            "/v1/chats/{id}",
            get(api::get_chat)
                .patch(api::rename_chat)
                .delete(api::delete_chat),
        )
        .route("/v1/chats/{id}/messages", get(api::list_messages))
        .route("/v1/chats/{id}/runs", post(api::create_run))
        .route("/v1/runs/{id}", get(api::get_run))
        .route("/v1/runs/{id}/cancel", post(api::cancel_run))
        .route("/v1/runs/{id}/events", get(api::run_events))
        .route("/v1/models", get(api::list_models))
        .route(
            "/v1/me/api-keys",
            post(api_keys::create).get(api_keys::list),
        )
        .route(
            "/v1/me/api-keys/{id}",
            axum::routing::delete(api_keys::revoke),
        )
        .route("/v1/me/keys", get(admin::list_keys))
        .route(
            "/v1/me/keys/{provider}",
            put(admin::put_key).delete(admin::delete_key),
        )
        .route("/v1/me/usage", get(admin::my_usage))
        .route("/v1/admin/usage", get(admin::tenant_usage))
        .route(
            "/v1/admin/providers",
            get(admin::list_providers).post(admin::upsert_provider),
        )
        .route(
            "/v1/admin/models",
            get(admin::list_all_models).post(admin::upsert_model),
        )
        .route("/v1/admin/models/{label}", patch(admin::patch_model))
        .route("/v1/admin/policies", get(admin::list_policies))
        .route("/v1/admin/schedules", get(admin::list_schedules))
        .route(
            "/v1/admin/schedules/{id}/trigger",
            post(admin::trigger_schedule),
        )
        .route(
            "/v1/admin/policies/{classification}",
            put(admin::put_policy),
        )
        .route("/v1/ag-ui", post(agui::run_agent))
        .route(
            "/v1/me/integrations",
            get(integrations::list).post(integrations::create),
        )
        .route(
            "/v1/me/integrations/{id}",
            get(integrations::get)
                .patch(integrations::patch)
                .delete(integrations::delete),
        )
        .route(
            "/v1/chats/{id}/tools",
            get(integrations::get_selection).put(integrations::put_selection),
        )
        .route(
            "/v1/me/memories",
            get(memories::list).post(memories::create),
        )
        .route(
            "/v1/me/memories/{id}",
            patch(memories::patch).delete(memories::delete),
        )
        .route(
            "/v1/chats/{id}/files",
            post(memories::upload_file).layer(axum::extract::DefaultBodyLimit::max(
                memories::MAX_UPLOAD_BYTES,
            )),
        )
        .fallback(static_files::fallback)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .with_state(state)
}

/// The web app when it is built, else the API's index.
async fn root(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(web) = &state.web
        && let Some(res) = static_files::serve(web, req.method(), "/").await
    {
        return res;
    }
    index().await.into_response()
}

async fn index() -> axum::Json<serde_json::Value> {
    axum::Json(json!({
        "name": "Personal Agent",
        "version": env!("CARGO_PKG_VERSION"),
        "endpoints": [
            "POST /v1/chats", "GET /v1/chats", "GET /v1/chats/{id}", "DELETE /v1/chats/{id}",
            "PATCH /v1/chats/{id}", "GET /v1/chats/{id}/messages", "POST /v1/chats/{id}/runs", "GET /v1/runs/{id}",
            "POST /v1/runs/{id}/cancel", "GET /v1/runs/{id}/events", "GET /v1/models",
            "POST /v1/ag-ui", "POST /v1/me/api-keys", "GET /v1/me/api-keys", "DELETE /v1/me/api-keys/{id}",
            "GET /v1/auth/config", "GET /v1/me/keys", "PUT /v1/me/keys/{provider}",
            "DELETE /v1/me/keys/{provider}", "GET /v1/me/usage", "GET /v1/admin/usage",
            "GET /v1/admin/providers", "POST /v1/admin/providers", "GET /v1/admin/models",
            "POST /v1/admin/models", "PATCH /v1/admin/models/{label}", "GET /v1/admin/policies",
            "PUT /v1/admin/policies/{classification}", "GET /healthz", "GET /readyz",
            "GET /v1/me/integrations", "POST /v1/me/integrations", "GET /v1/me/integrations/{id}",
            "PATCH /v1/me/integrations/{id}", "DELETE /v1/me/integrations/{id}",
            "GET /v1/chats/{id}/tools", "PUT /v1/chats/{id}/tools",
            "GET /v1/control (WebSocket)", "GET /v1/admin/schedules",
            "POST /v1/admin/schedules/{id}/trigger",
            "GET /v1/me/memories", "POST /v1/me/memories", "PATCH /v1/me/memories/{id}",
            "DELETE /v1/me/memories/{id}", "POST /v1/chats/{id}/files"
        ]
    }))
}

/// How clients log in (public): the mode, and for OIDC the issuer, client id and audience.
async fn auth_config(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(match &state.oidc {
        Some(v) => {
            json!({ "mode": "oidc", "issuer": v.config.issuer, "client_id": v.config.client_id,
                           "audience": v.config.audience, "scopes": ["openid", "profile", "email"] })
        }
        None if state.auth_mode == AuthMode::Dev => json!({ "mode": "dev" }),
        None => json!({ "mode": "disabled" }),
    })
}

/// Ready when every backend's tonic-health says SERVING.
async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<serde_json::Value>) {
    let checks = futures::future::join_all(
        state
            .backends
            .iter()
            .map(|(name, ch)| async move { (*name, pa_kit::grpc::is_serving(ch.clone()).await) }),
    )
    .await;
    let ready = checks.iter().all(|(_, ok)| *ok);
    let detail: serde_json::Map<_, _> = checks
        .into_iter()
        .map(|(name, ok)| (name.to_string(), json!(if ok { "serving" } else { "down" })))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ready": ready, "services": detail })),
    )
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub fn build_state(
    config: &Config,
    shutdown: Shutdown,
    db: Option<sqlx::PgPool>,
) -> Result<AppState, StartError> {
    let runs = channel(&config.runs_url)?;
    let models = channel(&config.models_url)?;
    let tools = channel(&config.tools_url)?;
    let memory = channel(&config.memory_url)?;
    let mut backends = vec![
        ("svc-runs", runs.clone()),
        ("svc-models", models.clone()),
        ("svc-tools", tools.clone()),
        ("svc-memory", memory.clone()),
    ];
    let worker = config.worker_url.as_deref().map(channel).transpose()?;
    if let Some(worker) = &worker {
        backends.push(("svc-worker", worker.clone()));
    }
    let web = config.web_dir.as_deref().and_then(|dir| {
        let web = static_files::WebDir::open(dir);
        match &web {
            Some(_) => tracing::info!(dir = %dir.display(), "serving the web app at /"),
            None => {
                tracing::info!(dir = %dir.display(), "no web app built there; serving the API only")
            }
        }
        web
    });
    Ok(AppState {
        control: pa_proto::v1::control_service_client::ControlServiceClient::new(runs.clone()),
        presence: control_ws::PresenceHub::new(&config.common.redis_url),
        web,
        runs: RunServiceClient::new(runs),
        models: ModelServiceClient::new(models.clone()),
        model_admin: ModelAdminServiceClient::new(models.clone()),
        keys: KeyServiceClient::new(models.clone()),
        usage: UsageServiceClient::new(models),
        tools: pa_proto::v1::tool_service_client::ToolServiceClient::new(tools),
        memory: pa_proto::v1::memory_service_client::MemoryServiceClient::new(memory)
            .max_encoding_message_size(memories::MAX_UPLOAD_BYTES + 1024 * 1024),
        schedules: worker.map(pa_proto::v1::schedule_service_client::ScheduleServiceClient::new),
        auth: InternalAuth::new(&config.common.internal_secret),
        auth_mode: config.auth_mode,
        rate_limits: config.rate_limits,
        api_keys: db.map(api_keys::ApiKeyStore::new),
        oidc: match (&config.auth_mode, &config.oidc) {
            (AuthMode::Oidc, Some(oidc)) => Some(std::sync::Arc::new(
                oidc::OidcVerifier::new(oidc.clone())
                    .map_err(|e| StartError::Other(format!("OIDC HTTP client: {e}")))?,
            )),
            _ => None,
        },
        redis: pa_kit::redis::pool(&config.common.redis_url, 512)?,
        sse_keepalive: config.sse_keepalive,
        backends,
        shutdown,
    })
}

/// Serves until `shutdown` fires; open SSE streams are closed, then in-flight requests finish.
/// Serves HTTP on `listener` and, when given, the public gRPC API on `grpc_listener`, until
/// `shutdown` fires.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    grpc_listener: Option<tokio::net::TcpListener>,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    if config.auth_mode == AuthMode::Dev {
        tracing::warn!(
            "PA_AUTH_MODE=dev: every caller is trusted as a dev user; never expose this gateway"
        );
    }
    let db = pa_kit::db::connect_schema_rls(&config.common.database_url, "gateway", &MIGRATOR, 10)
        .await?
        .app;
    let state = build_state(&config, shutdown.clone(), Some(db))?;
    let grpc = match grpc_listener {
        Some(grpc_listener) => {
            let api = public_grpc::PublicApi {
                state: state.clone(),
            };
            let server = pa_kit::grpc::GrpcServer::new(std::time::Duration::from_secs(30))?
                .add_service(pa_proto::v1::run_service_server::RunServiceServer::new(
                    api.clone(),
                ))
                .add_service(pa_proto::v1::model_service_server::ModelServiceServer::new(
                    api,
                ));
            Some(tokio::spawn(server.serve(grpc_listener, shutdown.clone())))
        }
        None => None,
    };
    let app = router(state);
    tracing::info!(addr = ?listener.local_addr().ok(), "HTTP serving");
    // Small SSE frames must leave at once: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.triggered().await })
        .await?;
    if let Some(grpc) = grpc {
        match grpc.await {
            Ok(result) => result?,
            Err(err) => tracing::error!(%err, "public gRPC server task failed"),
        }
    }
    Ok(())
}
