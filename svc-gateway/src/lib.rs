//! svc-gateway: the HTTP face of the mesh. REST + SSE + the AG-UI endpoint for browsers and
//! scripts; it authenticates callers and forwards a signed identity to the gRPC services.

mod admin;
mod agui;
mod api;
mod api_key_store;
mod api_keys;
mod auth;
pub mod config;
pub mod control_ws;
mod devices;
mod dto;
pub mod http_server;
mod integrations;
mod memories;
pub mod oidc;
pub mod openapi;
pub mod operations;
mod presence;
mod problem;
mod public_grpc;
mod recent_runs;
mod security_headers;
mod sse;
mod state;
mod user_directory;
mod users;
mod validate;

pub mod static_files;

pub use auth::Scope;
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
pub use state::AppState;

pub use pa_kit::StartError;

/// One registered endpoint: a method, a path and its handler. The router is built from this
/// table and nothing else, so `routes()` is exactly what the gateway serves — the OpenAPI test
/// holds the document to it, and a new endpoint without docs fails that test.
/// Every route declares the [`Scope`] an API key needs for it (and whether it is public), so
/// no endpoint falls through to a default.
/// A route that is the HTTP binding of a public operation takes its scope from the operation
/// (ADR 0211), so REST and gRPC cannot grant differently.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub scope: Scope,
    /// The operation this route binds to HTTP (its gRPC twin); `None` for what is HTTP by
    /// nature (health, the OpenAPI document, the web app, WebSocket and AG-UI streams).
    pub twin: Option<&'static operations::Operation>,
    endpoint: MethodRouter<AppState>,
}

/// Who may call a route: a scope of its own (HTTP-only routes) or its operation's.
pub struct Access {
    scope: Scope,
    twin: Option<&'static operations::Operation>,
}

impl From<Scope> for Access {
    fn from(scope: Scope) -> Self {
        Self { scope, twin: None }
    }
}

impl From<&'static operations::Operation> for Access {
    fn from(op: &'static operations::Operation) -> Self {
        Self {
            scope: op.scope,
            twin: Some(op),
        }
    }
}

macro_rules! route_fns {
    ($($name:ident => $method:ident),*) => {$(
        fn $name<H, T>(path: &'static str, access: impl Into<Access>, handler: H) -> Route
        where
            H: axum::handler::Handler<T, AppState>,
            T: 'static,
        {
            let Access { scope, twin } = access.into();
            Route { method: Method::$method, path, scope, twin, endpoint: axum::routing::$name(handler) }
        }
    )*};
}
route_fns!(get => GET, post => POST, put => PUT, patch => PATCH, delete => DELETE);

fn table() -> Vec<Route> {
    use Scope::*;
    use operations as op;
    vec![
        get("/", Public, root),
        get("/v1", Public, index),
        get("/v1/openapi.json", Public, openapi::serve),
        get("/v1/control", &op::SEND_CONTROL, control_ws::control),
        get("/healthz", Public, healthz),
        get("/readyz", Public, readyz),
        get("/v1/auth/config", Public, auth_config),
        post("/v1/chats", &op::CREATE_CHAT, api::create_chat),
        get("/v1/chats", &op::LIST_CHATS, api::list_chats),
        get("/v1/chats/{id}", &op::GET_CHAT, api::get_chat),
        patch("/v1/chats/{id}", &op::RENAME_CHAT, api::rename_chat),
        delete("/v1/chats/{id}", &op::DELETE_CHAT, api::delete_chat),
        get(
            "/v1/chats/{id}/messages",
            &op::LIST_MESSAGES,
            api::list_messages,
        ),
        post("/v1/chats/{id}/runs", &op::CREATE_RUN, api::create_run),
        get("/v1/runs/{id}", &op::GET_RUN, api::get_run),
        post("/v1/runs/{id}/cancel", &op::CANCEL_RUN, api::cancel_run),
        post(
            "/v1/runs/{id}/approvals/{tool_call_id}",
            &op::SEND_CONTROL,
            api::decide_tool_call,
        ),
        get(
            "/v1/runs/{id}/events",
            &op::STREAM_RUN_EVENTS,
            api::run_events,
        ),
        get("/v1/models", &op::LIST_MODELS, api::list_models),
        // Credentials are managed by a signed-in user only, never through an API key.
        post("/v1/me/api-keys", &op::CREATE_API_KEY, api_keys::create),
        get("/v1/me/api-keys", &op::LIST_API_KEYS, api_keys::list),
        delete(
            "/v1/me/api-keys/{id}",
            &op::REVOKE_API_KEY,
            api_keys::revoke,
        ),
        get("/v1/me/keys", &op::LIST_USER_KEYS, admin::list_keys),
        put("/v1/me/keys/{provider}", &op::PUT_USER_KEY, admin::put_key),
        delete(
            "/v1/me/keys/{provider}",
            &op::DELETE_USER_KEY,
            admin::delete_key,
        ),
        post(
            "/v1/me/keys/{provider}/confirm",
            &op::CONFIRM_USER_KEY,
            admin::confirm_key,
        ),
        get("/v1/me/usage", &op::MY_USAGE, admin::my_usage),
        get("/v1/admin/usage", &op::TENANT_USAGE, admin::tenant_usage),
        get(
            "/v1/admin/providers",
            &op::LIST_PROVIDERS,
            admin::list_providers,
        ),
        post(
            "/v1/admin/providers",
            &op::UPSERT_PROVIDER,
            admin::upsert_provider,
        ),
        get(
            "/v1/admin/models",
            &op::LIST_ALL_MODELS,
            admin::list_all_models,
        ),
        post("/v1/admin/models", &op::UPSERT_MODEL, admin::upsert_model),
        patch(
            "/v1/admin/models/{label}",
            &op::PATCH_MODEL,
            admin::patch_model,
        ),
        put(
            "/v1/admin/model-overlays/{label}",
            &op::SET_MODEL_OVERLAY,
            admin::put_model_overlay,
        ),
        get(
            "/v1/admin/policies",
            &op::LIST_POLICIES,
            admin::list_policies,
        ),
        put(
            "/v1/admin/policies/{classification}",
            &op::SET_POLICY,
            admin::put_policy,
        ),
        get(
            "/v1/admin/schedules",
            &op::LIST_SCHEDULES,
            admin::list_schedules,
        ),
        get("/v1/admin/users", &op::LIST_USERS, users::list),
        patch(
            "/v1/admin/users/{user_id}",
            &op::SET_USER_DISABLED,
            users::patch,
        ),
        post(
            "/v1/admin/schedules/{id}/trigger",
            &op::TRIGGER_SCHEDULE,
            admin::trigger_schedule,
        ),
        post("/v1/ag-ui", Runs, agui::run_agent),
        get(
            "/v1/me/integrations",
            &op::LIST_INTEGRATIONS,
            integrations::list,
        ),
        post(
            "/v1/me/integrations",
            &op::CREATE_INTEGRATION,
            integrations::create,
        ),
        get(
            "/v1/me/integrations/{id}",
            &op::GET_INTEGRATION,
            integrations::get,
        ),
        patch(
            "/v1/me/integrations/{id}",
            &op::UPDATE_INTEGRATION,
            integrations::patch,
        ),
        delete(
            "/v1/me/integrations/{id}",
            &op::DELETE_INTEGRATION,
            integrations::delete,
        ),
        post(
            "/v1/me/devices/enrollments",
            &op::CREATE_DEVICE_ENROLLMENT,
            devices::create_enrollment,
        ),
        get("/v1/me/devices", &op::LIST_DEVICES, devices::list),
        delete("/v1/me/devices/{id}", &op::DELETE_DEVICE, devices::delete),
        // A device authenticates with its one-time code, then its own device token.
        post("/v1/devices/enroll", &op::ENROLL_DEVICE, devices::enroll),
        get("/v1/devices/connect", Public, devices::connect),
        get(
            "/v1/chats/{id}/tools",
            &op::GET_TOOL_SELECTION,
            integrations::get_selection,
        ),
        put(
            "/v1/chats/{id}/tools",
            &op::SET_TOOL_SELECTION,
            integrations::put_selection,
        ),
        get("/v1/me/memories", &op::LIST_MEMORIES, memories::list),
        post("/v1/me/memories", &op::CREATE_MEMORY, memories::create),
        patch("/v1/me/memories/{id}", &op::UPDATE_MEMORY, memories::patch),
        delete("/v1/me/memories/{id}", &op::FORGET_MEMORY, memories::delete),
        {
            let mut upload = post(
                "/v1/chats/{id}/files",
                &op::INGEST_DOCUMENT,
                memories::upload_file,
            );
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

/// Every (method, path, twin) of the route table: the public operation each route binds to HTTP.
pub fn route_twins() -> Vec<(Method, &'static str, Option<&'static operations::Operation>)> {
    table()
        .into_iter()
        .map(|r| (r.method, r.path, r.twin))
        .collect()
}

/// Every (method, path, scope) of the route table.
pub fn route_scopes() -> Vec<(Method, &'static str, Scope)> {
    table()
        .into_iter()
        .map(|r| (r.method, r.path, r.scope))
        .collect()
}

pub fn router(state: AppState) -> Router {
    // axum merges the method routers of one path, so one entry per method is enough. Each
    // route carries its scope to the `Caller` extractor; axum's own 405 (with `Allow`) answers
    // an undeclared method.
    let headers = security_headers::SecurityHeaders::new(
        state.oidc.as_ref().map(|o| o.config.issuer.as_str()),
    );
    table()
        .into_iter()
        .fold(Router::new(), |router, r| {
            router.route(r.path, r.endpoint.route_layer(axum::Extension(r.scope)))
        })
        .fallback(fallback)
        .layer(axum::middleware::from_fn(validate::layer))
        .layer(axum::middleware::from_fn(pa_kit::metrics::track_http))
        .layer(axum::middleware::from_fn(problem::ensure_problem))
        .layer(axum::middleware::from_fn_with_state(
            headers,
            security_headers::layer,
        ))
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

/// The router's fallback: the web app, else the API's problem+json 404.
async fn fallback(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(web) = &state.web
        && let Some(res) = static_files::serve(web, req.method(), req.uri().path()).await
    {
        return res;
    }
    problem::not_found().await.into_response()
}

/// The web app when it is built, else the API's index.
#[utoipa::path(get, path = "/", tag = "meta",
    responses((status = 200, description = "The web app's index.html when it is built, else the API's index (JSON)",
        content((String = "text/html"), (ApiIndexJson = "application/json")))))]
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

/// What `GET /v1` says of the API.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ApiIndexJson {
    /// `Personal Agent`.
    name: &'static str,
    /// The gateway's version.
    version: &'static str,
    /// The path of the OpenAPI document.
    openapi: &'static str,
    /// Every route, as `METHOD /path`.
    endpoints: Vec<String>,
}

#[utoipa::path(get, path = "/v1", tag = "meta",
    responses((status = 200, description = "The API's name, version, endpoints and where its OpenAPI document is", body = ApiIndexJson)))]
async fn index() -> axum::Json<ApiIndexJson> {
    let endpoints: Vec<String> = routes()
        .into_iter()
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    axum::Json(ApiIndexJson {
        name: "Personal Agent",
        version: env!("CARGO_PKG_VERSION"),
        openapi: "/v1/openapi.json",
        endpoints,
    })
}

/// Prometheus metrics of this process, served only on the metrics listener
/// (`PA_METRICS_ADDR`), never on the public HTTP port (`PA_METRICS=off`: 404).
pub fn metrics_router(enabled: bool) -> Router {
    Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            if enabled {
                pa_kit::metrics::serve().await
            } else {
                pa_kit::metrics::disabled().await
            }
        }),
    )
}

#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "The gateway process is alive", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// How clients log in (public): the mode, and for OIDC the issuer, client id and audience.
#[utoipa::path(get, path = "/v1/auth/config", tag = "meta",
    responses((status = 200, description = "`{mode: oidc|dev|disabled}`, and for OIDC `issuer`, `client_id`, `audience`, `scopes`, `platform_admin_role`", body = AuthConfigJson)))]
async fn auth_config(State(state): State<AppState>) -> axum::Json<AuthConfigJson> {
    axum::Json(match &state.oidc {
        Some(v) => AuthConfigJson {
            mode: "oidc",
            issuer: Some(v.config.issuer.clone()),
            client_id: Some(v.config.client_id.clone()),
            audience: Some(v.config.audience.clone()),
            scopes: Some(vec!["openid", "profile", "email"]),
            platform_admin_role: Some(v.config.platform_admin_role.clone()),
        },
        None if state.auth_mode == AuthMode::Dev => AuthConfigJson::mode("dev"),
        None => AuthConfigJson::mode("disabled"),
    })
}

/// How clients log in. The OIDC fields are present in `oidc` mode only.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AuthConfigJson {
    /// `oidc`, `dev` (the `x-pa-dev-user` header) or `disabled`.
    mode: &'static str,
    /// The OIDC issuer URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    /// The OIDC client id browser clients use.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    /// The audience the gateway's tokens must have.
    #[serde(skip_serializing_if = "Option::is_none")]
    audience: Option<String>,
    /// The scopes to ask for.
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<Vec<&'static str>>,
    /// The IdP role that makes a user a platform administrator.
    #[serde(skip_serializing_if = "Option::is_none")]
    platform_admin_role: Option<String>,
}

impl AuthConfigJson {
    fn mode(mode: &'static str) -> Self {
        Self {
            mode,
            issuer: None,
            client_id: None,
            audience: None,
            scopes: None,
            platform_admin_role: None,
        }
    }
}

/// The gateway's readiness.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ReadinessJson {
    /// Inline chat can be served.
    ready: bool,
    /// The optional backends (svc-worker, svc-memory) that are down.
    degraded: Vec<&'static str>,
    /// Each backend: `serving` or `down`.
    services: std::collections::BTreeMap<&'static str, &'static str>,
    /// Each store the gateway uses (postgres, redis): `up` or `down`.
    stores: std::collections::BTreeMap<&'static str, &'static str>,
}

/// Ready when the gateway can serve inline chat: its own stores answer and the backends a chat
/// needs (svc-runs, svc-models, svc-tools) say SERVING (each says NOT_SERVING while one of its
/// stores is down: docs/src/adr/0170). svc-worker (durable runs, schedules) and svc-memory
/// (recall, memory tools) being down makes the gateway `degraded`, not unready: inline chat
/// still works, and durable starts answer 503 on their own.
#[utoipa::path(get, path = "/readyz", tag = "meta",
    responses(
        (status = 200, description = "Inline chat can be served: `{ready: true, degraded: [names of optional backends that are down], services: {name: serving|down}, stores: {postgres|redis: up}}`", body = ReadinessJson),
        (status = 503, description = "A backend chat needs, or a store, is down: `{ready: false, degraded: [...], services: {name: serving|down}, stores: {postgres|redis: up|down}}`", body = ReadinessJson)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<ReadinessJson>) {
    let checks = futures::future::join_all(
        state
            .backends
            .iter()
            .map(|(name, ch)| async move { (*name, pa_kit::grpc::is_serving(ch.clone()).await) }),
    )
    .await;
    let stores = state.readiness.current();
    let ready = stores.ready()
        && checks
            .iter()
            .all(|(name, ok)| *ok || OPTIONAL_BACKENDS.contains(name));
    let degraded: Vec<&str> = checks
        .iter()
        .filter(|(name, ok)| !*ok && OPTIONAL_BACKENDS.contains(name))
        .map(|(name, _)| *name)
        .collect();
    let store_detail = stores.detail().into_iter().collect();
    let detail = checks
        .into_iter()
        .map(|(name, ok)| (name, if ok { "serving" } else { "down" }))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(ReadinessJson {
            ready,
            degraded,
            services: detail,
            stores: store_detail,
        }),
    )
}

/// Backends inline chat does without: their outage degrades the gateway, it stays ready.
const OPTIONAL_BACKENDS: &[&str] = &["svc-worker", "svc-memory"];

/// How long a replica trusts what it last read about a user (a disable reaches every replica
/// within it).
pub const USER_RECHECK: std::time::Duration = user_directory::RECHECK;

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
    let redis = pa_kit::redis::pool(&config.common.redis_url, 512)?;
    let readiness = pa_kit::readiness::Readiness::probe(
        db.iter().cloned().collect(),
        Some(redis.clone()),
        shutdown.clone(),
    );
    Ok(AppState::new(state::SharedState {
        metrics: config.common.metrics,
        readiness,
        control: pa_proto::v1::control_service_client::ControlServiceClient::new(runs.clone()),
        presence: presence::PresenceHub::new(&config.common.redis_url),
        web,
        recent_runs: Default::default(),
        events: pa_bus::event_hub::EventHub::new(redis.clone()),
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
            .map(|pool| std::sync::Arc::new(user_directory::UserDirectory::new(pool))),
        api_keys: db.map(api_key_store::ApiKeyStore::new),
        oidc: match (&config.auth_mode, &config.oidc) {
            (AuthMode::Oidc, Some(oidc)) => Some(std::sync::Arc::new(
                oidc::OidcVerifier::new(oidc.clone())
                    .map_err(|e| StartError::Other(format!("OIDC HTTP client: {e}")))?,
            )),
            _ => None,
        },
        redis,
        redis_url: config.common.redis_url.clone(),
        sse_keepalive: config.sse_keepalive,
        backends,
        shutdown,
    }))
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
                .readiness(state.readiness.clone())
                .add_service(pa_proto::v1::run_service_server::RunServiceServer::new(
                    api.clone(),
                ))
                .add_service(pa_proto::v1::model_service_server::ModelServiceServer::new(
                    api.clone(),
                ))
                .add_service(
                    pa_proto::v1::control_service_server::ControlServiceServer::new(api.clone()),
                )
                .add_service(pa_proto::v1::usage_service_server::UsageServiceServer::new(
                    api.clone(),
                ))
                .add_service(pa_proto::v1::key_service_server::KeyServiceServer::new(
                    api.clone(),
                ))
                .add_service(
                    pa_proto::v1::model_admin_service_server::ModelAdminServiceServer::new(
                        api.clone(),
                    ),
                )
                .add_service(
                    pa_proto::v1::schedule_service_server::ScheduleServiceServer::new(api.clone()),
                )
                .add_service(
                    pa_proto::v1::api_key_service_server::ApiKeyServiceServer::new(api.clone()),
                )
                .add_service(
                    pa_proto::v1::user_admin_service_server::UserAdminServiceServer::new(
                        api.clone(),
                    ),
                )
                .add_service(
                    // A document upload is as large over gRPC as over HTTP.
                    pa_proto::v1::memory_service_server::MemoryServiceServer::new(api.clone())
                        .max_decoding_message_size(memories::MAX_UPLOAD_BYTES + 64 * 1024),
                )
                .add_service(pa_proto::v1::tool_service_server::ToolServiceServer::new(
                    api,
                ));
            Some(tokio::spawn(server.serve(grpc_listener, shutdown.clone())))
        }
        None => None,
    };
    let metrics = match &config.metrics_listen_addr {
        Some(addr) => {
            let metrics_listener = pa_kit::grpc::bind(addr).await?;
            tracing::info!(addr = ?metrics_listener.local_addr().ok(), "metrics serving");
            let app = metrics_router(config.common.metrics);
            let shutdown = shutdown.clone();
            // The public port's limits (ADR 0237): a scraper needs none of what they refuse,
            // and the port shares the process's descriptors (ADR 0250).
            let limits = config.http_limits;
            Some(tokio::spawn(http_server::serve(
                metrics_listener,
                app,
                limits,
                shutdown,
            )))
        }
        None => None,
    };
    let app = router(state);
    tracing::info!(addr = ?listener.local_addr().ok(), "HTTP serving");
    http_server::serve(listener, app, config.http_limits, shutdown).await;
    if let Some(grpc) = grpc {
        match grpc.await {
            Ok(result) => result?,
            Err(err) => tracing::error!(%err, "public gRPC server task failed"),
        }
    }
    if let Some(metrics) = metrics
        && let Err(err) = metrics.await
    {
        tracing::error!(%err, "metrics server task failed");
    }
    Ok(())
}

/// The service as its binary runs it: configuration from the environment, listeners bound,
/// served until SIGTERM/SIGINT. `main.rs` calls this, and so does the e2e harness's
/// `pa-e2e-service` (one binary that can be any service, started and killed as a process).
pub async fn main_from_env() -> std::process::ExitCode {
    pa_kit::service_main("svc-gateway", |shutdown| async move {
        let config = crate::Config::from_env()?;
        let listener = pa_kit::grpc::bind(&config.listen_addr).await?;
        let grpc = match &config.grpc_listen_addr {
            Some(addr) => Some(pa_kit::grpc::bind(addr).await?),
            None => None,
        };
        crate::run(config, listener, grpc, shutdown).await?;
        Ok(())
    })
    .await
}
