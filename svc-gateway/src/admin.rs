//! Model governance over REST: the catalog for admins, keys and usage for everyone.
//!
//! Two kinds of administrator (ADR 0130), checked here and again by svc-models: a platform
//! administrator (`platform-admin`) owns the shared catalog (scope `platform`): providers,
//! models, platform keys, default policies, maintenance schedules. A tenant administrator
//! (`admin`) manages the organisation's own providers and models (scope `tenant`, invisible to
//! other tenants), switches platform models off for the organisation (model overlays) and sets
//! its policies. A tenant administrator touching a platform row gets 403 `forbidden`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use pa_kit::PaError;
use pa_proto::v1::{
    ClassificationPolicy, DeleteUserKeyRequest, GetUsageRequest, Identity, ListAllModelsRequest,
    ListPoliciesRequest, ListProvidersRequest, ListUserKeysRequest, ModelCapabilities, ModelInfo,
    PatchModelRequest, ProviderInfo, PutUserKeyRequest, SetModelOverlayRequest, UpsertModelRequest,
    UpsertProviderRequest, UsageScope,
};
use serde::{Deserialize, Serialize};

use crate::api::ApiJson;
use crate::auth::Caller;
use crate::dto::{Items, Page, capability_names, classification_name, parse_classification};
use crate::problem::ApiError;
use crate::state::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// `platform`, `tenant` or absent (platform administrators: platform; others: tenant).
fn parse_scope(scope: Option<String>) -> Result<String, ApiError> {
    let scope = scope.unwrap_or_default();
    check_catalog_scope(&scope)?;
    Ok(scope)
}

/// A catalog row's scope: `platform`, `tenant` or "" (platform administrators: platform;
/// others: tenant).
fn check_catalog_scope(scope: &str) -> Result<(), PaError> {
    match scope {
        "" | "platform" | "tenant" => Ok(()),
        other => Err(PaError::bad_request(format!(
            "scope {other:?} is neither \"platform\" nor \"tenant\""
        ))),
    }
}

fn parse_capabilities(names: &[String]) -> Result<ModelCapabilities, ApiError> {
    let mut caps = ModelCapabilities::default();
    for name in names {
        match name.as_str() {
            "tools" => caps.tools = true,
            "vision" => caps.vision = true,
            "reasoning" => caps.reasoning = true,
            other => {
                return Err(PaError::bad_request(format!("unknown capability {other:?}")).into());
            }
        }
    }
    Ok(caps)
}

/// A model of the catalog as an administrator sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AdminModelJson {
    /// `provider:model`.
    label: String,
    /// The provider id.
    provider: String,
    /// The model's name at the provider.
    model: String,
    display_name: String,
    /// Whether users may pick it (false too when your organisation switched it off).
    enabled: bool,
    /// The context window, in tokens.
    context_window: u32,
    /// The price per 1M input tokens, in millionths of the currency unit.
    input_price_micros: u64,
    /// The price per 1M output tokens, in millionths of the currency unit.
    output_price_micros: u64,
    /// Of `tools`, `vision`, `reasoning`: those the model has.
    capabilities: Vec<&'static str>,
    /// Its provider's tags (what classification policies match).
    provider_tags: Vec<String>,
    /// `platform` (the shared catalog) or `tenant` (your organisation's own).
    scope: String,
    /// A platform model your organisation switched off (the model overlay).
    tenant_disabled: bool,
}

impl From<ModelInfo> for AdminModelJson {
    fn from(m: ModelInfo) -> Self {
        Self {
            capabilities: capability_names(m.capabilities),
            label: m.label,
            provider: m.provider,
            model: m.model,
            display_name: m.display_name,
            enabled: m.enabled,
            context_window: m.context_window,
            input_price_micros: m.input_price_micros,
            output_price_micros: m.output_price_micros,
            provider_tags: m.provider_tags,
            scope: m.scope,
            tenant_disabled: m.tenant_disabled,
        }
    }
}

/// A model provider (an OpenAI-compatible endpoint or the offline one).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProviderJson {
    id: String,
    /// `offline` or `openai_compatible`.
    kind: String,
    base_url: String,
    display_name: String,
    /// What classification policies match.
    tags: Vec<String>,
    enabled: bool,
    /// Whether a provider key is configured (the key itself is never returned).
    has_platform_key: bool,
    /// `platform` (the shared catalog) or `tenant` (your organisation's own).
    scope: String,
}

impl From<ProviderInfo> for ProviderJson {
    fn from(p: ProviderInfo) -> Self {
        Self {
            id: p.id,
            kind: p.kind,
            base_url: p.base_url,
            display_name: p.display_name,
            tags: p.tags,
            enabled: p.enabled,
            has_platform_key: p.has_platform_key,
            scope: p.scope,
        }
    }
}

#[utoipa::path(get, path = "/v1/admin/providers", tag = "admin", responses((status = 200, description = "`{items: [{id, kind, base_url, display_name, tags, enabled, has_platform_key, scope}]}`: the platform's providers and your organisation's own (tenant or platform administrator)", body = Page<ProviderJson>)))]
pub async fn list_providers(
    State(state): State<AppState>,
    Caller(identity): Caller,
) -> ApiResult<Json<Page<ProviderJson>>> {
    let list = op::list_providers(&state, &identity, ListProvidersRequest {}).await?;
    Ok(Json(Page::new(
        list.providers.into_iter().map(ProviderJson::from).collect(),
        String::new(),
    )))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderBody {
    id: String,
    kind: String,
    #[serde(default)]
    base_url: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default = "yes")]
    enabled: bool,
    /// Write-only; never returned. The provider's own key: the platform's for a platform
    /// provider, the organisation's for a tenant provider.
    #[serde(default)]
    platform_api_key: Option<String>,
    /// `platform` (platform administrators only) or `tenant`; default: `platform` for a
    /// platform administrator, `tenant` for a tenant administrator.
    #[serde(default)]
    scope: Option<String>,
}

fn yes() -> bool {
    true
}

#[utoipa::path(post, path = "/v1/admin/providers", tag = "admin", request_body = ProviderBody, responses((status = 200, description = "The provider (platform_api_key is write-only). A tenant provider is visible to your organisation alone; its base_url must pass the network guard (no private, loopback, link-local or metadata address unless PA_MODELS_NET_ALLOW admits it)", body = ProviderJson), (status = 400, description = "Invalid input or a refused base_url"), (status = 403, description = "A tenant administrator touching the platform catalog (`forbidden`)"), (status = 409, description = "A tenant provider id the platform catalog uses (`conflict`)")))]
pub async fn upsert_provider(
    State(state): State<AppState>,
    Caller(identity): Caller,
    ApiJson(body): ApiJson<ProviderBody>,
) -> ApiResult<(StatusCode, Json<ProviderJson>)> {
    let request = UpsertProviderRequest {
        provider: Some(ProviderInfo {
            id: body.id,
            kind: body.kind,
            base_url: body.base_url,
            tags: body.tags,
            enabled: body.enabled,
            has_platform_key: false,
            display_name: body.display_name,
            scope: parse_scope(body.scope)?,
        }),
        platform_api_key: body.platform_api_key.unwrap_or_default(),
    };
    let provider = op::upsert_provider(&state, &identity, request).await?;
    Ok((StatusCode::OK, Json(ProviderJson::from(provider))))
}

#[utoipa::path(get, path = "/v1/admin/models", tag = "admin", responses((status = 200, description = "`{items: [model]}`: the platform's models (with `tenant_disabled` when your organisation switched one off) and your organisation's own (`scope: tenant`)", body = Page<AdminModelJson>)))]
pub async fn list_all_models(
    State(state): State<AppState>,
    Caller(identity): Caller,
) -> ApiResult<Json<Page<AdminModelJson>>> {
    let list = op::list_all_models(&state, &identity, ListAllModelsRequest {}).await?;
    Ok(Json(Page::new(
        list.models.into_iter().map(AdminModelJson::from).collect(),
        String::new(),
    )))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelBody {
    label: String,
    #[serde(default)]
    display_name: String,
    context_window: u32,
    #[serde(default)]
    input_price_micros: u64,
    #[serde(default)]
    output_price_micros: u64,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default = "yes")]
    enabled: bool,
    /// `platform` (platform administrators only) or `tenant` (a model of your organisation's
    /// own provider); default as for providers.
    #[serde(default)]
    scope: Option<String>,
}

#[utoipa::path(post, path = "/v1/admin/models", tag = "admin", request_body = ModelBody, responses((status = 200, description = "The model", body = AdminModelJson), (status = 403, description = "A tenant administrator adding a model to the platform catalog or to a platform provider")))]
pub async fn upsert_model(
    State(state): State<AppState>,
    Caller(identity): Caller,
    ApiJson(body): ApiJson<ModelBody>,
) -> ApiResult<Json<AdminModelJson>> {
    let model = ModelInfo {
        label: body.label,
        display_name: body.display_name,
        enabled: body.enabled,
        context_window: body.context_window,
        input_price_micros: body.input_price_micros,
        output_price_micros: body.output_price_micros,
        capabilities: Some(parse_capabilities(&body.capabilities)?),
        scope: parse_scope(body.scope)?,
        ..Default::default()
    };
    let saved =
        op::upsert_model(&state, &identity, UpsertModelRequest { model: Some(model) }).await?;
    Ok(Json(AdminModelJson::from(saved)))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ModelPatchBody {
    enabled: Option<bool>,
    context_window: Option<u32>,
    input_price_micros: Option<u64>,
    output_price_micros: Option<u64>,
    display_name: Option<String>,
    capabilities: Option<Vec<String>>,
}

#[utoipa::path(patch, path = "/v1/admin/models/{label}", tag = "admin", params(("label" = String, Path, description = "provider:model")), request_body = ModelPatchBody, responses((status = 200, description = "The model", body = AdminModelJson), (status = 403, description = "A platform model patched by a tenant administrator (use the model overlay); nothing changes"), (status = 404, description = "No such model in your view of the catalog")))]
pub async fn patch_model(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(label): Path<String>,
    ApiJson(body): ApiJson<ModelPatchBody>,
) -> ApiResult<Json<AdminModelJson>> {
    let request = PatchModelRequest {
        label,
        enabled: body.enabled,
        context_window: body.context_window,
        input_price_micros: body.input_price_micros,
        output_price_micros: body.output_price_micros,
        display_name: body.display_name,
        capabilities: body
            .capabilities
            .as_deref()
            .map(parse_capabilities)
            .transpose()?,
    };
    let saved = op::patch_model(&state, &identity, request).await?;
    Ok(Json(AdminModelJson::from(saved)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverlayBody {
    enabled: bool,
}

/// Switches a platform model on or off for your organisation alone (the platform row and other
/// tenants are not touched).
#[utoipa::path(put, path = "/v1/admin/model-overlays/{label}", tag = "admin", params(("label" = String, Path, description = "provider:model of a platform model")), request_body = OverlayBody, responses((status = 200, description = "The model as your organisation sees it (`tenant_disabled`)", body = AdminModelJson), (status = 400, description = "Not a platform model"), (status = 404, description = "No such model")))]
pub async fn put_model_overlay(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(label): Path<String>,
    ApiJson(body): ApiJson<OverlayBody>,
) -> ApiResult<Json<AdminModelJson>> {
    let saved = op::set_model_overlay(
        &state,
        &identity,
        SetModelOverlayRequest {
            label,
            enabled: body.enabled,
        },
    )
    .await?;
    Ok(Json(AdminModelJson::from(saved)))
}

/// What a model's provider must (and must not) be tagged with to serve a chat of a
/// classification.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyJson {
    /// `public`, `internal`, `confidential` or `restricted`.
    classification: &'static str,
    /// Tags the provider must all have.
    required_tags: Vec<String>,
    /// Tags the provider must have none of.
    forbidden_tags: Vec<String>,
    /// `platform` (the default) or `tenant` (your organisation's override).
    scope: String,
}

impl From<ClassificationPolicy> for PolicyJson {
    fn from(p: ClassificationPolicy) -> Self {
        Self {
            classification: classification_name(p.classification),
            required_tags: p.required_tags,
            forbidden_tags: p.forbidden_tags,
            scope: p.scope,
        }
    }
}

#[utoipa::path(get, path = "/v1/admin/policies", tag = "admin", responses((status = 200, description = "`{items: [{classification, required_tags, forbidden_tags, scope}]}`", body = Items<PolicyJson>)))]
pub async fn list_policies(
    State(state): State<AppState>,
    Caller(identity): Caller,
) -> ApiResult<Json<Items<PolicyJson>>> {
    let list = op::list_policies(&state, &identity, ListPoliciesRequest {}).await?;
    let items = list.policies.into_iter().map(PolicyJson::from).collect();
    Ok(Json(Items { items }))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyBody {
    required_tags: Vec<String>,
    forbidden_tags: Vec<String>,
    /// `tenant` (default: your organisation's override) or `platform` (the default every
    /// organisation without an override gets; platform administrators only).
    scope: Option<String>,
}

#[utoipa::path(put, path = "/v1/admin/policies/{classification}", tag = "admin", params(("classification" = String, Path, description = "public, internal, confidential or restricted")), request_body = PolicyBody, responses((status = 200, description = "The policy", body = PolicyJson)))]
pub async fn put_policy(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(classification): Path<String>,
    ApiJson(body): ApiJson<PolicyBody>,
) -> ApiResult<Json<PolicyJson>> {
    let c = parse_classification(&classification).ok_or_else(|| {
        PaError::bad_request("classification must be public, internal, confidential or restricted")
    })?;
    let policy = ClassificationPolicy {
        classification: c as i32,
        required_tags: body.required_tags,
        forbidden_tags: body.forbidden_tags,
        scope: parse_scope(body.scope)?,
    };
    let saved = op::set_policy(&state, &identity, policy).await?;
    Ok(Json(PolicyJson::from(saved)))
}

// ---- the caller's own keys and usage --------------------------------------------------

/// One of your provider keys (the key itself is never returned).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProviderKeyJson {
    /// The provider id.
    provider: String,
    key_id: String,
    /// The key's last four characters.
    last4: String,
    /// RFC 3339; null when unknown.
    created_at: Option<String>,
    /// The provider base URL the key was given for: it is sent there and nowhere else.
    bound_base_url: String,
    /// The provider's base URL now.
    current_base_url: String,
    /// The provider's base URL changed since: the key is not used until you confirm it.
    needs_confirmation: bool,
}

impl From<pa_proto::v1::KeyRef> for ProviderKeyJson {
    fn from(k: pa_proto::v1::KeyRef) -> Self {
        Self {
            created_at: chrono::DateTime::<chrono::Utc>::from_timestamp_millis(k.created_at_ms)
                .map(|t| t.to_rfc3339()),
            provider: k.provider,
            key_id: k.key_id,
            last4: k.last4,
            bound_base_url: k.bound_base_url,
            current_base_url: k.current_base_url,
            needs_confirmation: k.needs_confirmation,
        }
    }
}

#[utoipa::path(get, path = "/v1/me/keys", tag = "keys", responses((status = 200, description = "`{items: [{provider, key_id, last4, created_at, bound_base_url, current_base_url, needs_confirmation}]}`: your provider keys. A key is sent only to the base URL it was given for; `needs_confirmation` = the provider's base URL changed since, and the key is not used until you confirm", body = Page<ProviderKeyJson>)))]
pub async fn list_keys(
    State(state): State<AppState>,
    Caller(identity): Caller,
) -> ApiResult<Json<Page<ProviderKeyJson>>> {
    let list = op::list_user_keys(&state, &identity, ListUserKeysRequest {}).await?;
    Ok(Json(Page::new(
        list.keys.into_iter().map(ProviderKeyJson::from).collect(),
        String::new(),
    )))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    api_key: String,
}

#[utoipa::path(put, path = "/v1/me/keys/{provider}", tag = "keys", params(("provider" = String, Path, description = "The provider id")), request_body = KeyBody, responses((status = 200, description = "The key's reference; the key itself is never returned", body = ProviderKeyJson)))]
pub async fn put_key(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(provider): Path<String>,
    ApiJson(body): ApiJson<KeyBody>,
) -> ApiResult<Json<ProviderKeyJson>> {
    let request = PutUserKeyRequest {
        provider,
        api_key: body.api_key,
    };
    let key = op::put_user_key(&state, &identity, request).await?;
    Ok(Json(ProviderKeyJson::from(key)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmKeyBody {
    /// The provider's current base URL, as you saw it (`current_base_url`).
    base_url: String,
}

/// Lets your stored key go to the provider's current base URL.
#[utoipa::path(post, path = "/v1/me/keys/{provider}/confirm", tag = "keys", params(("provider" = String, Path, description = "The provider id")), request_body = ConfirmKeyBody, responses((status = 200, description = "The key, bound to the current base URL", body = ProviderKeyJson), (status = 404, description = "No key for this provider"), (status = 409, description = "The base URL is not the provider's current one (`failed_precondition`)")))]
pub async fn confirm_key(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(provider): Path<String>,
    ApiJson(body): ApiJson<ConfirmKeyBody>,
) -> ApiResult<Json<ProviderKeyJson>> {
    let key = op::confirm_user_key(
        &state,
        &identity,
        pa_proto::v1::ConfirmUserKeyRequest {
            provider,
            base_url: body.base_url,
        },
    )
    .await?;
    Ok(Json(ProviderKeyJson::from(key)))
}

#[utoipa::path(delete, path = "/v1/me/keys/{provider}", tag = "keys", params(("provider" = String, Path, description = "The provider id")), responses((status = 204, description = "Deleted")))]
pub async fn delete_key(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(provider): Path<String>,
) -> ApiResult<StatusCode> {
    op::delete_user_key(&state, &identity, DeleteUserKeyRequest { provider }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
}

/// Usage of one day and model.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UsageDayJson {
    /// `YYYY-MM-DD` (UTC).
    day: String,
    /// The model's label (`provider:model`).
    model: String,
    /// Model requests.
    requests: u32,
    input_tokens: u64,
    output_tokens: u64,
    /// Input tokens served from the provider's prompt cache.
    cached_input_tokens: u64,
    /// Cost in millionths of the catalog currency unit.
    cost_micros: u64,
}

async fn usage(
    state: &AppState,
    identity: &Identity,
    scope: UsageScope,
    q: UsageQuery,
) -> ApiResult<Json<Items<UsageDayJson>>> {
    let request = GetUsageRequest {
        scope: scope as i32,
        from_day: q.from.unwrap_or_default(),
        to_day: q.to.unwrap_or_default(),
    };
    let report = op::get_usage(state, identity, request).await?;
    let items = report
        .days
        .into_iter()
        .map(|d| {
            let u = d.usage.unwrap_or_default();
            UsageDayJson {
                day: d.day,
                model: d.label,
                requests: u.model_requests,
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
                cached_input_tokens: u.cached_input_tokens,
                cost_micros: u.cost_micros,
            }
        })
        .collect();
    Ok(Json(Items { items }))
}

#[utoipa::path(get, path = "/v1/me/usage", tag = "usage", params(UsageQuery), responses((status = 200, description = "`{items: [{day, model, requests, input_tokens, output_tokens, cached_input_tokens, cost_micros}]}`", body = Items<UsageDayJson>)))]
pub async fn my_usage(
    State(state): State<AppState>,
    Caller(identity): Caller,
    q: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Items<UsageDayJson>>> {
    usage(&state, &identity, UsageScope::Me, q?.0).await
}

#[utoipa::path(get, path = "/v1/admin/usage", tag = "admin", params(UsageQuery), responses((status = 200, description = "The tenant's usage per day and model", body = Items<UsageDayJson>)))]
pub async fn tenant_usage(
    State(state): State<AppState>,
    Caller(identity): Caller,
    q: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Items<UsageDayJson>>> {
    usage(&state, &identity, UsageScope::Tenant, q?.0).await
}

/// A maintenance schedule (Temporal).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ScheduleJson {
    id: String,
    /// The maintenance task it runs, e.g. `trim_run_streams`.
    task: String,
    /// Its period, in seconds.
    every_secs: u64,
    /// RFC 3339; null = never ran.
    last_run_at: Option<String>,
    /// RFC 3339; null = none planned.
    next_run_at: Option<String>,
    paused: bool,
    /// How many times it ran.
    runs: u64,
}

/// The maintenance schedules (Temporal) with their last and next run.
#[utoipa::path(get, path = "/v1/admin/schedules", tag = "admin", responses((status = 200, description = "`{items: [{id, task, every_secs, last_run_at, next_run_at, paused, runs}]}` (platform administrators: maintenance spans every tenant)", body = Items<ScheduleJson>), (status = 403, description = "Not a platform administrator")))]
pub async fn list_schedules(
    State(state): State<AppState>,
    Caller(identity): Caller,
) -> ApiResult<Json<Items<ScheduleJson>>> {
    let listed =
        op::list_schedules(&state, &identity, pa_proto::v1::ListSchedulesRequest {}).await?;
    let time = |ms: i64| {
        (ms > 0)
            .then(|| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()))
            .flatten()
    };
    let items = listed
        .schedules
        .into_iter()
        .map(|s| ScheduleJson {
            last_run_at: time(s.last_run_at_ms),
            next_run_at: time(s.next_run_at_ms),
            id: s.id,
            task: s.task,
            every_secs: s.every_secs,
            paused: s.paused,
            runs: s.runs,
        })
        .collect();
    Ok(Json(Items { items }))
}

/// Runs a schedule now.
#[utoipa::path(post, path = "/v1/admin/schedules/{id}/trigger", tag = "admin", params(("id" = String, Path, description = "The schedule id")), responses((status = 202, description = "Triggered"), (status = 403, description = "Not a platform administrator")))]
pub async fn trigger_schedule(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::http::StatusCode> {
    op::trigger_schedule(
        &state,
        &identity,
        pa_proto::v1::TriggerScheduleRequest { id },
    )
    .await?;
    Ok(axum::http::StatusCode::ACCEPTED)
}

/// The operations of model governance, keys, usage and schedules (ADR 0211): the REST handlers
/// above and the public gRPC ModelAdminService, KeyService, UsageService and ScheduleService call
/// these, with the same checks (svc-models checks the administrators again).
pub(crate) mod op {
    use super::*;
    use crate::operations::forward_operation;
    use pa_proto::v1::{
        ConfirmUserKeyRequest, DeleteUserKeyResponse, GetUsageResponse, KeyRef, ListModelsResponse,
        ListPoliciesResponse, ListProvidersResponse, ListSchedulesRequest, ListSchedulesResponse,
        ListUserKeysResponse, TriggerScheduleRequest, TriggerScheduleResponse,
    };

    fn admin<T>(identity: &Identity, _: &T) -> Result<(), PaError> {
        pa_kit::identity::require_any_admin(identity)
    }

    forward_operation!(
        /// `ModelAdminService/ListProviders`: the platform's and the organisation's own.
        list_providers(model_admin.list_providers, ListProvidersRequest) -> ListProvidersResponse,
        check: admin
    );
    forward_operation!(
        /// `ModelAdminService/UpsertProvider`.
        upsert_provider(model_admin.upsert_provider, UpsertProviderRequest) -> ProviderInfo,
        check: |identity, r| {
            pa_kit::identity::require_any_admin(identity)?;
            check_catalog_scope(r.provider.as_ref().map(|p| p.scope.as_str()).unwrap_or_default())
        }
    );
    forward_operation!(
        /// `ModelAdminService/ListAllModels`.
        list_all_models(model_admin.list_all_models, ListAllModelsRequest) -> ListModelsResponse,
        check: admin
    );
    forward_operation!(
        /// `ModelAdminService/UpsertModel`.
        upsert_model(model_admin.upsert_model, UpsertModelRequest) -> ModelInfo,
        check: |identity, r| {
            pa_kit::identity::require_any_admin(identity)?;
            check_catalog_scope(r.model.as_ref().map(|m| m.scope.as_str()).unwrap_or_default())
        }
    );
    forward_operation!(
        /// `ModelAdminService/PatchModel`.
        patch_model(model_admin.patch_model, PatchModelRequest) -> ModelInfo,
        check: admin
    );
    forward_operation!(
        /// `ModelAdminService/SetModelOverlay`: a platform model on or off for the organisation.
        set_model_overlay(model_admin.set_model_overlay, SetModelOverlayRequest) -> ModelInfo,
        check: admin
    );
    forward_operation!(
        /// `ModelAdminService/ListPolicies`.
        list_policies(model_admin.list_policies, ListPoliciesRequest) -> ListPoliciesResponse,
        check: admin
    );
    forward_operation!(
        /// `ModelAdminService/SetPolicy`.
        set_policy(model_admin.set_policy, ClassificationPolicy) -> ClassificationPolicy,
        check: |identity, r| {
            pa_kit::identity::require_any_admin(identity)?;
            if r.classification == pa_proto::v1::DataClassification::Unspecified as i32 {
                return Err(PaError::bad_request(
                    "classification must be public, internal, confidential or restricted",
                ));
            }
            check_catalog_scope(&r.scope)
        }
    );
    forward_operation!(
        /// `KeyService/ListUserKeys`: the caller's provider keys (never the keys themselves).
        list_user_keys(keys.list_user_keys, ListUserKeysRequest) -> ListUserKeysResponse
    );
    forward_operation!(
        /// `KeyService/PutUserKey`.
        put_user_key(keys.put_user_key, PutUserKeyRequest) -> KeyRef
    );
    forward_operation!(
        /// `KeyService/DeleteUserKey`.
        delete_user_key(keys.delete_user_key, DeleteUserKeyRequest) -> DeleteUserKeyResponse
    );
    forward_operation!(
        /// `KeyService/ConfirmUserKey`: lets the key go to the provider's current base URL.
        confirm_user_key(keys.confirm_user_key, ConfirmUserKeyRequest) -> KeyRef
    );
    forward_operation!(
        /// `UsageService/GetUsage`: the caller's, or the organisation's (administrators).
        get_usage(usage.get_usage, GetUsageRequest) -> GetUsageResponse,
        check: |identity, r| {
            if r.scope == UsageScope::Tenant as i32 {
                pa_kit::identity::require_any_admin(identity)?;
            }
            Ok(())
        }
    );

    fn schedules(
        state: &AppState,
        identity: &Identity,
    ) -> Result<
        pa_proto::v1::schedule_service_client::ScheduleServiceClient<tonic::transport::Channel>,
        PaError,
    > {
        pa_kit::identity::require_platform_admin(identity)?;
        state
            .schedules
            .clone()
            .ok_or_else(|| PaError::unavailable("no svc-worker is configured (PA_WORKER_URL)"))
    }

    /// `ScheduleService/ListSchedules` (platform administrators: maintenance spans tenants).
    pub(crate) async fn list_schedules(
        state: &AppState,
        identity: &Identity,
        request: ListSchedulesRequest,
    ) -> Result<ListSchedulesResponse, PaError> {
        Ok(schedules(state, identity)?
            .list_schedules(state.auth.request(identity, request))
            .await?
            .into_inner())
    }

    /// `ScheduleService/TriggerSchedule`: runs a schedule now.
    pub(crate) async fn trigger_schedule(
        state: &AppState,
        identity: &Identity,
        request: TriggerScheduleRequest,
    ) -> Result<TriggerScheduleResponse, PaError> {
        Ok(schedules(state, identity)?
            .trigger_schedule(state.auth.request(identity, request))
            .await?
            .into_inner())
    }
}
