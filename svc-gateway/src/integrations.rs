//! The caller's integrations (web search, web fetch, weather, MCP servers) over REST, and each
//! chat's tool selection. svc-tools owns and validates them; secrets are write-only.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use pa_kit::PaError;
use pa_proto::v1::{
    ChatToolSelection, CreateIntegrationRequest, DeleteIntegrationRequest,
    DeleteIntegrationResponse, GetChatRequest, GetChatToolSelectionRequest, GetIntegrationRequest,
    Identity, Integration, ListIntegrationsRequest, ListIntegrationsResponse, TagList,
    UpdateIntegrationRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::ApiJson;
use crate::auth::Caller;
use crate::dto::Page;
use crate::operations::forward_operation;
use crate::problem::ApiError;
use crate::state::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// An integration (a tool source): web search, web fetch, weather or an MCP server.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IntegrationJson {
    id: String,
    /// searxng, brave, tavily, web_fetch, open_meteo, mcp_stdio or mcp_http.
    kind: String,
    name: String,
    enabled: bool,
    /// The model's provider must have all these tags for the integration's tools to be offered.
    provider_tags_required: Vec<String>,
    /// The integration's tools are not offered to a model whose provider has one of these.
    provider_tags_blocked: Vec<String>,
    /// The kind's settings (e.g. `base_url`, `command`, `url`), as stored.
    #[schema(value_type = Object)]
    config: Value,
    /// The names of the sealed secrets (their values are never returned).
    secret_names: Vec<String>,
    /// Milliseconds since the Unix epoch.
    created_at_ms: i64,
    /// Milliseconds since the Unix epoch.
    updated_at_ms: i64,
}

impl From<Integration> for IntegrationJson {
    fn from(i: Integration) -> Self {
        Self {
            config: serde_json::from_str(&i.config_json).unwrap_or_else(|_| json!({})),
            id: i.id,
            kind: i.kind,
            name: i.name,
            enabled: i.enabled,
            provider_tags_required: i.provider_tags_required,
            provider_tags_blocked: i.provider_tags_blocked,
            secret_names: i.secret_names,
            created_at_ms: i.created_at_ms,
            updated_at_ms: i.updated_at_ms,
        }
    }
}

/// An integration's settings: a JSON object (empty = none).
fn check_config(config_json: &str) -> Result<(), PaError> {
    if config_json.is_empty() {
        return Ok(());
    }
    match serde_json::from_str::<Value>(config_json) {
        Ok(Value::Object(_)) => Ok(()),
        _ => Err(PaError::bad_request("config must be a JSON object")),
    }
}

fn config_json(config: Option<Value>) -> Result<Option<String>, ApiError> {
    match config {
        None => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.to_string())),
        Some(_) => Err(PaError::bad_request("config must be a JSON object").into()),
    }
}

#[utoipa::path(get, path = "/v1/me/integrations", tag = "integrations", responses((status = 200, description = "`{items: [integration]}`", body = Page<IntegrationJson>)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(identity): Caller,
) -> ApiResult<Json<Page<IntegrationJson>>> {
    let list = list_integrations(&state, &identity, ListIntegrationsRequest {}).await?;
    Ok(Json(Page::new(
        list.integrations
            .into_iter()
            .map(IntegrationJson::from)
            .collect(),
        String::new(),
    )))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = IntegrationCreateBody)]
pub struct CreateBody {
    /// searxng, brave, tavily, web_fetch, open_meteo, mcp_stdio or mcp_http.
    #[schema(example = "web_fetch")]
    kind: String,
    name: String,
    #[serde(default = "yes")]
    enabled: bool,
    /// At most 32 tags of at most 64 characters.
    #[serde(default)]
    #[schema(max_items = 32)]
    provider_tags_required: Vec<String>,
    /// At most 32 tags of at most 64 characters.
    #[serde(default)]
    #[schema(max_items = 32)]
    provider_tags_blocked: Vec<String>,
    /// The kind's settings: a JSON object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
    /// Write-only (api_key, bearer_token, header:<Name>, env:<NAME>); never returned. At most
    /// 32, names of at most 128 characters.
    #[serde(default)]
    secrets: HashMap<String, String>,
}

/// Caps of an integration's tags and secrets (svc-tools checks the rest).
fn check_caps(
    required: &[String],
    blocked: &[String],
    secrets: Option<&HashMap<String, String>>,
) -> Result<(), PaError> {
    use crate::dto::caps::{MAX_SECRET_NAME_CHARS, MAX_SECRETS};
    crate::dto::check_tags("provider_tags_required", required)?;
    crate::dto::check_tags("provider_tags_blocked", blocked)?;
    if let Some(secrets) = secrets {
        if secrets.len() > MAX_SECRETS {
            return Err(PaError::bad_request(format!(
                "at most {MAX_SECRETS} secrets"
            )));
        }
        if secrets
            .keys()
            .any(|k| k.is_empty() || k.chars().count() > MAX_SECRET_NAME_CHARS)
        {
            return Err(PaError::bad_request(format!(
                "a secret's name is 1-{MAX_SECRET_NAME_CHARS} characters"
            )));
        }
    }
    Ok(())
}

fn yes() -> bool {
    true
}

#[utoipa::path(post, path = "/v1/me/integrations", tag = "integrations", request_body = CreateBody, responses((status = 201, description = "The integration; secrets are sealed and never returned (only secret_names)", body = IntegrationJson)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(identity): Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<(StatusCode, Json<IntegrationJson>)> {
    let request = CreateIntegrationRequest {
        kind: body.kind,
        name: body.name,
        enabled: body.enabled,
        provider_tags_required: body.provider_tags_required,
        provider_tags_blocked: body.provider_tags_blocked,
        config_json: config_json(body.config)?.unwrap_or_default(),
        secrets: body.secrets,
    };
    let created = create_integration(&state, &identity, request).await?;
    Ok((StatusCode::CREATED, Json(IntegrationJson::from(created))))
}

#[utoipa::path(get, path = "/v1/me/integrations/{id}", tag = "integrations", params(("id" = String, Path, description = "The integration id")), responses((status = 200, description = "The integration", body = IntegrationJson)))]
pub async fn get(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<IntegrationJson>> {
    let found = get_integration(&state, &identity, GetIntegrationRequest { id }).await?;
    Ok(Json(IntegrationJson::from(found)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = IntegrationPatchBody)]
pub struct PatchBody {
    name: Option<String>,
    enabled: Option<bool>,
    #[schema(max_items = 32)]
    provider_tags_required: Option<Vec<String>>,
    #[schema(max_items = 32)]
    provider_tags_blocked: Option<Vec<String>>,
    /// The kind's settings: a JSON object (replaces the stored one).
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
    /// Present = replaces every stored secret (`{}` removes them); at most 32.
    secrets: Option<HashMap<String, String>>,
}

#[utoipa::path(patch, path = "/v1/me/integrations/{id}", tag = "integrations", params(("id" = String, Path, description = "The integration id")), request_body = PatchBody, responses((status = 200, description = "The integration", body = IntegrationJson)))]
pub async fn patch(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchBody>,
) -> ApiResult<Json<IntegrationJson>> {
    let request = UpdateIntegrationRequest {
        id,
        name: body.name,
        enabled: body.enabled,
        provider_tags_required: body.provider_tags_required.map(|tags| TagList { tags }),
        provider_tags_blocked: body.provider_tags_blocked.map(|tags| TagList { tags }),
        config_json: config_json(body.config)?,
        replace_secrets: body.secrets.is_some(),
        secrets: body.secrets.unwrap_or_default(),
    };
    let updated = update_integration(&state, &identity, request).await?;
    Ok(Json(IntegrationJson::from(updated)))
}

#[utoipa::path(delete, path = "/v1/me/integrations/{id}", tag = "integrations", params(("id" = String, Path, description = "The integration id")), responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    delete_integration(&state, &identity, DeleteIntegrationRequest { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The integrations whose tools a chat's runs are offered.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ToolSelectionJson {
    chat_id: String,
    /// The selected integrations' ids.
    integration_ids: Vec<String>,
}

impl From<ChatToolSelection> for ToolSelectionJson {
    fn from(s: ChatToolSelection) -> Self {
        Self {
            chat_id: s.chat_id,
            integration_ids: s.integration_ids,
        }
    }
}

#[utoipa::path(get, path = "/v1/chats/{id}/tools", tag = "integrations", params(("id" = String, Path, description = "The chat id")), responses((status = 200, description = "`{chat_id, integration_ids}`", body = ToolSelectionJson)))]
pub async fn get_selection(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(chat_id): Path<String>,
) -> ApiResult<Json<ToolSelectionJson>> {
    let selection =
        get_chat_tool_selection(&state, &identity, GetChatToolSelectionRequest { chat_id }).await?;
    Ok(Json(ToolSelectionJson::from(selection)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectionBody {
    integration_ids: Vec<String>,
}

#[utoipa::path(put, path = "/v1/chats/{id}/tools", tag = "integrations", params(("id" = String, Path, description = "The chat id")), request_body = SelectionBody, responses((status = 200, description = "`{chat_id, integration_ids}`", body = ToolSelectionJson)))]
pub async fn put_selection(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(chat_id): Path<String>,
    ApiJson(body): ApiJson<SelectionBody>,
) -> ApiResult<Json<ToolSelectionJson>> {
    let selection = set_chat_tool_selection(
        &state,
        &identity,
        ChatToolSelection {
            chat_id,
            integration_ids: body.integration_ids,
        },
    )
    .await?;
    Ok(Json(ToolSelectionJson::from(selection)))
}

// The operation layer of integrations (ADR 0211): the REST handlers above and the public gRPC
// ToolService call these, with the same checks. svc-tools validates the rest.

forward_operation!(
    /// `ToolService/ListIntegrations`.
    list_integrations(tools.list_integrations, ListIntegrationsRequest) -> ListIntegrationsResponse
);

forward_operation!(
    /// `ToolService/CreateIntegration`: secrets are sealed, never returned.
    create_integration(tools.create_integration, CreateIntegrationRequest) -> Integration,
    check: |_, r| {
        check_caps(
            &r.provider_tags_required,
            &r.provider_tags_blocked,
            Some(&r.secrets),
        )?;
        check_config(&r.config_json)
    }
);

forward_operation!(
    /// `ToolService/GetIntegration`.
    get_integration(tools.get_integration, GetIntegrationRequest) -> Integration
);

forward_operation!(
    /// `ToolService/UpdateIntegration`.
    update_integration(tools.update_integration, UpdateIntegrationRequest) -> Integration,
    check: |_, r| {
        let tags = |t: &Option<TagList>| t.as_ref().map(|t| t.tags.clone()).unwrap_or_default();
        check_caps(
            &tags(&r.provider_tags_required),
            &tags(&r.provider_tags_blocked),
            r.replace_secrets.then_some(&r.secrets),
        )?;
        r.config_json.as_deref().map_or(Ok(()), check_config)
    }
);

forward_operation!(
    /// `ToolService/DeleteIntegration`.
    delete_integration(tools.delete_integration, DeleteIntegrationRequest) -> DeleteIntegrationResponse
);

/// The chat must be the caller's (svc-runs answers 404 otherwise).
async fn check_chat(state: &AppState, identity: &Identity, chat_id: &str) -> Result<(), PaError> {
    crate::api::op::get_chat(
        state,
        identity,
        GetChatRequest {
            chat_id: chat_id.to_string(),
        },
    )
    .await?;
    Ok(())
}

/// `ToolService/GetChatToolSelection`: of a chat of the caller's.
pub(crate) async fn get_chat_tool_selection(
    state: &AppState,
    identity: &Identity,
    request: GetChatToolSelectionRequest,
) -> Result<ChatToolSelection, PaError> {
    check_chat(state, identity, &request.chat_id).await?;
    Ok(state
        .tools
        .clone()
        .get_chat_tool_selection(state.auth.request(identity, request))
        .await?
        .into_inner())
}

/// `ToolService/SetChatToolSelection`: of a chat of the caller's.
pub(crate) async fn set_chat_tool_selection(
    state: &AppState,
    identity: &Identity,
    request: ChatToolSelection,
) -> Result<ChatToolSelection, PaError> {
    check_chat(state, identity, &request.chat_id).await?;
    Ok(state
        .tools
        .clone()
        .set_chat_tool_selection(state.auth.request(identity, request))
        .await?
        .into_inner())
}
