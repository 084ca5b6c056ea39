//! svc-gateway: the HTTP face of the mesh. REST + SSE + the AG-UI endpoint for browsers and
//! scripts; it authenticates callers and forwards a signed identity to the gRPC services.

mod admin;
mod agui;
mod api;
mod api_keys;
mod auth;
pub mod config;
pub mod control_ws;
mod devices;
mod dto;
mod integrations;
mod memories;
pub mod oidc;
pub mod openapi;
mod problem;
mod public_grpc;
mod sse;
mod state;
mod users;

pub mod static_files;

use axum::Router;
use axum::extract::State;
use axum::http::Method;
use axum::http::StatusCode;
use axum::routing::MethodRouter;
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

/// One registered endpoint: a method, a path and its handler. The router is built from this
/// table and nothing else, so `routes()` is exactly what the gateway serves — the OpenAPI test
/// holds the document to it, and a new endpoint without docs fails that test.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    endpoint: MethodRouter<AppState>,
}

macro_rules! route_fns {
    ($($name:ident => $method:ident),*) => {$(
        fn $name<H, T>(path: &'static str, handler: H) -> Route
        where
            H: axum::handler::Handler<T, AppState>,
            T: 'static,
        {
            Route { method: Method::$method, path, endpoint: axum::routing::$name(handler) }
        }
    )*};
}
route_fns!(get => GET, post => POST, put => PUT, patch => PATCH, delete => DELETE);

fn table() -> Vec<Route> {
    vec![
        get("/", root),
        get("/v1", index),
        get("/v1/openapi.json", openapi::serve),
        get("/metrics", metrics),
        get("/v1/control", control_ws::control),
        get("/healthz", healthz),
        get("/readyz", readyz),
        get("/v1/auth/config", auth_config),
        post("/v1/chats", api::create_chat),
        get("/v1/chats", api::list_chats),
        get("/v1/chats/{id}", api::get_chat),
        patch("/v1/chats/{id}", api::rename_chat),
        delete("/v1/chats/{id}", api::delete_chat),
        get("/v1/chats/{id}/messages", api::list_messages),
        post("/v1/chats/{id}/runs", api::create_run),
        get("/v1/runs/{id}", api::get_run),
        post("/v1/runs/{id}/cancel", api::cancel_run),
        post(
            "/v1/runs/{id}/approvals/{tool_call_id}",
            api::decide_tool_call,
        ),
        get("/v1/runs/{id}/events", api::run_events),
        get("/v1/models", api::list_models),
        post("/v1/me/api-keys", api_keys::create),
        get("/v1/me/api-keys", api_keys::list),
        delete("/v1/me/api-keys/{id}", api_keys::revoke),
        get("/v1/me/keys", admin::list_keys),
        put("/v1/me/keys/{provider}", admin::put_key),
        delete("/v1/me/keys/{provider}", admin::delete_key),
        post("/v1/me/keys/{provider}/confirm", admin::confirm_key),
        get("/v1/me/usage", admin::my_usage),
        get("/v1/admin/usage", admin::tenant_usage),
        get("/v1/admin/providers", admin::list_providers),
        post("/v1/admin/providers", admin::upsert_provider),
        get("/v1/admin/models", admin::list_all_models),
        post("/v1/admin/models", admin::upsert_model),
        patch("/v1/admin/models/{label}", admin::patch_model),
        put("/v1/admin/model-overlays/{label}", admin::put_model_overlay),
        get("/v1/admin/policies", admin::list_policies),
        put("/v1/admin/policies/{classification}", admin::put_policy),
        get("/v1/admin/schedules", admin::list_schedules),
        get("/v1/admin/users", users::list),
        patch("/v1/admin/users/{user_id}", users::patch),
        post("/v1/admin/schedules/{id}/trigger", admin::trigger_schedule),
        post("/v1/ag-ui", agui::run_agent),
        get("/v1/me/integrations", integrations::list),
        post("/v1/me/integrations", integrations::create),
        get("/v1/me/integrations/{id}", integrations::get),
        patch("/v1/me/integrations/{id}", integrations::patch),
        delete("/v1/me/integrations/{id}", integrations::delete),
        post("/v1/me/devices/enrollments", devices::create_enrollment),
        get("/v1/me/devices", devices::list),
        delete("/v1/me/devices/{id}", devices::delete),
        post("/v1/devices/enroll", devices::enroll),
        get("/v1/devices/connect", devices::connect),
        get("/v1/chats/{id}/tools", integrations::get_selection),
        put("/v1/chats/{id}/tools", integrations::put_selection),
        get("/v1/me/memories", memories::list),
        post("/v1/me/memories", memories::create),
        patch("/v1/me/memories/{id}", memories::patch),
        delete("/v1/me/memories/{id}", memories::delete),
        {
            let mut upload = post("/v1/chats/{id}/files", memories::upload_file);
            upload.endpoint = upload.endpoint.layer(axum::extract::DefaultBodyLimit::max(
                memories::MAX_UPLOAD_BYTES,
            ));
            upload
        },
    ]
}

/// Every (method, path) the router serves, in registration order.
pub fn routes() -> Vec<(Method, &'static str)> {
    table().into_iter().map(|r| (r.method, r.path)).collect()
}

pub fn router(state: AppState) -> Router {
    // axum merges the method routers of one path, so one entry per method is enough.
    table()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.endpoint))
        .fallback(static_files::fallback)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(axum::middleware::from_fn(pa_kit::metrics::track_http))
        .layer(axum::middleware::from_fn(trace_http))
        .with_state(state)
}

/// Every request's span: the root of a run's trace (or a child of the caller's W3C
/// `traceparent`); the calls it makes to the services continue it.
async fn trace_http(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let span = tracing::info_span!(
        "http.server",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        pa.service = "svc-gateway",
    );
    pa_kit::trace::adopt_from_headers(&span, request.headers());
    tracing::Instrument::instrument(next.run(request), span).await
}

/// The web app when it is built, else the API's index.
#[utoipa::path(get, path = "/", tag = "meta",
    responses((status = 200, description = "The web app's index.html when it is built, else the API's index (JSON)")))]
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

#[utoipa::path(get, path = "/v1", tag = "meta",
    responses((status = 200, description = "The API's name, version, endpoints and where its OpenAPI document is", body = serde_json::Value)))]
async fn index() -> axum::Json<serde_json::Value> {
    let endpoints: Vec<String> = routes()
        .into_iter()
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    axum::Json(json!({
        "name": "Personal Agent",
        "version": env!("CARGO_PKG_VERSION"),
        "openapi": "/v1/openapi.json",
        "endpoints": endpoints,
    }))
}

/// Prometheus metrics of this process (`PA_METRICS=off`: 404).
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text exposition (version 0.0.4)", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    if state.metrics {
        pa_kit::metrics::serve().await
    } else {
        pa_kit::metrics::disabled().await
    }
}

#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "The gateway process is alive", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// How clients log in (public): the mode, and for OIDC the issuer, client id and audience.
#[utoipa::path(get, path = "/v1/auth/config", tag = "meta",
    responses((status = 200, description = "`{mode: oidc|dev|disabled}`, and for OIDC `issuer`, `client_id`, `audience`, `scopes`", body = serde_json::Value)))]
async fn auth_config(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(match &state.oidc {
        Some(v) => {
            json!({ "mode": "oidc", "issuer": v.config.issuer, "client_id": v.config.client_id,
                           "audience": v.config.audience, "scopes": ["openid", "profile", "email"],
                           "platform_admin_role": v.config.platform_admin_role })
        }
        None if state.auth_mode == AuthMode::Dev => json!({ "mode": "dev" }),
        None => json!({ "mode": "disabled" }),
    })
}

/// Ready when every backend's tonic-health says SERVING.
#[utoipa::path(get, path = "/readyz", tag = "meta",
    responses(
        (status = 200, description = "Every backend serves: `{ready: true, services: {name: serving}}`", body = serde_json::Value),
        (status = 503, description = "Some backend is down: `{ready: false, services: {name: serving|down}}`", body = serde_json::Value)))]
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

/// How long a replica trusts what it last read about a user (a disable reaches every replica
/// within it).
pub const USER_RECHECK: std::time::Duration = users::RECHECK;

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
        metrics: config.common.metrics,
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
        users: db
            .clone()
            .map(|pool| std::sync::Arc::new(users::UserDirectory::new(pool))),
        api_keys: db.map(api_keys::ApiKeyStore::new),
        oidc: match (&config.auth_mode, &config.oidc) {
            (AuthMode::Oidc, Some(oidc)) => Some(std::sync::Arc::new(
                oidc::OidcVerifier::new(oidc.clone())
                    .map_err(|e| StartError::Other(format!("OIDC HTTP client: {e}")))?,
            )),
            _ => None,
        },
        redis: pa_kit::redis::pool(&config.common.redis_url, 512)?,
        redis_url: config.common.redis_url.clone(),
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
                .named("svc-gateway")
                .metrics(config.common.metrics)
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
