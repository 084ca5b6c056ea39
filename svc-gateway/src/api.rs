//! The REST API: chats, messages, runs, models. Handlers translate HTTP to gRPC and back.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use pa_kit::PaError;
use pa_proto::v1::control_command::{Command, ToolCallDecision};
use pa_proto::v1::{
    CancelRunRequest, Chat, ControlAck, ControlCommand, CreateChatRequest, CreateRunRequest,
    CreateRunResponse, DeleteChatRequest, DeleteChatResponse, GetChatRequest, GetRunRequest,
    ListChatsRequest, ListChatsResponse, ListMessagesRequest, ListMessagesResponse,
    ListModelsRequest, ListModelsResponse, ModelSelection, RenameChatRequest, ResolveModelRequest,
    Run, RunMode,
};
use serde::Deserialize;

use crate::auth::Caller;
use crate::dto::{
    ApprovalRecordedJson, ChatJson, CreateChatBody, CreateRunBody, MessageJson, ModelJson, Page,
    PageQuery, RenameChatBody, RunAcceptedJson, RunJson, mode_name, parse_classification,
    status_name,
};
use crate::problem::ApiError;
use crate::sse;
use crate::state::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// Body extractor whose rejection is a problem+json 400.
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> ApiResult<T> {
    Ok(q?.0)
}

#[utoipa::path(post, path = "/v1/chats", tag = "chats", request_body(content = Option<CreateChatBody>, description = "Optional: an empty body creates an untitled internal chat"), responses((status = 201, description = "The chat; Location is its URL", body = ChatJson)))]
pub async fn create_chat(
    State(state): State<AppState>,
    Caller(identity): Caller,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    // The body is optional: an empty POST creates an untitled chat.
    let body: CreateChatBody = if body.iter().all(u8::is_ascii_whitespace) {
        CreateChatBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| PaError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let classification = match body.classification.as_deref() {
        None => pa_proto::v1::DataClassification::Unspecified,
        Some(name) => parse_classification(name).ok_or_else(|| {
            PaError::bad_request(
                "classification must be public, internal, confidential or restricted",
            )
        })?,
    };
    let request = CreateChatRequest {
        title: body.title.unwrap_or_default(),
        classification: classification as i32,
        chat_id: String::new(),
    };
    let chat = op::create_chat(&state, &identity, request).await?;
    let location = format!("/v1/chats/{}", chat.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(ChatJson::from(chat)),
    ))
}

#[utoipa::path(get, path = "/v1/chats", tag = "chats", params(PageQuery), responses((status = 200, description = "Chats, newest first", body = Page<ChatJson>)))]
pub async fn list_chats(
    State(state): State<AppState>,
    Caller(identity): Caller,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Page<ChatJson>>> {
    let q = query(q)?;
    crate::dto::check_limit(q.limit)?;
    let request = ListChatsRequest {
        page_size: q.limit.unwrap_or(0),
        page_token: q.cursor.unwrap_or_default(),
    };
    let page = op::list_chats(&state, &identity, request).await?;
    Ok(Json(Page::new(
        page.chats.into_iter().map(ChatJson::from).collect(),
        page.next_page_token,
    )))
}

#[utoipa::path(get, path = "/v1/chats/{id}", tag = "chats", params(("id" = String, Path, description = "The chat id")), responses((status = 200, description = "The chat", body = ChatJson)))]
pub async fn get_chat(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(chat_id): Path<String>,
) -> ApiResult<Json<ChatJson>> {
    let request = GetChatRequest { chat_id };
    let chat = op::get_chat(&state, &identity, request).await?;
    Ok(Json(chat.into()))
}

/// `PATCH /v1/chats/{id}` `{title}`: renames the chat; svc-runs validates the title.
#[utoipa::path(patch, path = "/v1/chats/{id}", tag = "chats", params(("id" = String, Path, description = "The chat id")), request_body = RenameChatBody, responses((status = 200, description = "The renamed chat", body = ChatJson)))]
pub async fn rename_chat(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(chat_id): Path<String>,
    ApiJson(body): ApiJson<RenameChatBody>,
) -> ApiResult<Json<ChatJson>> {
    let request = RenameChatRequest {
        chat_id,
        title: body.title,
    };
    let chat = op::rename_chat(&state, &identity, request).await?;
    Ok(Json(chat.into()))
}

#[utoipa::path(delete, path = "/v1/chats/{id}", tag = "chats", params(("id" = String, Path, description = "The chat id")), responses((status = 204, description = "Deleted with its runs, messages and event streams")))]
pub async fn delete_chat(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(chat_id): Path<String>,
) -> ApiResult<StatusCode> {
    state.recent_runs.forget_chat(&chat_id);
    let request = DeleteChatRequest { chat_id };
    op::delete_chat(&state, &identity, request).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/chats/{id}/messages", tag = "chats", params(("id" = String, Path, description = "The chat id"), crate::dto::MessagesQuery), responses((status = 200, description = "Messages, oldest first", body = Page<MessageJson>)))]
pub async fn list_messages(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(chat_id): Path<String>,
    q: Result<Query<crate::dto::MessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Page<MessageJson>>> {
    let q = query(q)?;
    crate::dto::check_limit_up_to(q.limit, crate::dto::caps::MAX_MESSAGES_LIMIT)?;
    let request = ListMessagesRequest {
        chat_id,
        page_size: q.limit.unwrap_or(0),
        page_token: q.cursor.unwrap_or_default(),
    };
    let page = op::list_messages(&state, &identity, request).await?;
    Ok(Json(Page::new(
        page.messages.into_iter().map(MessageJson::from).collect(),
        page.next_page_token,
    )))
}

#[utoipa::path(post, path = "/v1/chats/{id}/runs", tag = "runs", params(("id" = String, Path, description = "The chat id")), request_body = CreateRunBody, responses((status = 202, description = "The run was started; Location is its URL", body = RunAcceptedJson), (status = 200, description = "A retry with a known run_id: the existing run", body = RunAcceptedJson)))]
pub async fn create_run(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(chat_id): Path<String>,
    ApiJson(body): ApiJson<CreateRunBody>,
) -> ApiResult<impl IntoResponse> {
    // `"durable": true` is shorthand for `"mode": "durable"`; the two must not disagree.
    let mode = match (body.mode.as_deref(), body.durable) {
        (None, None | Some(false)) | (Some("inline"), None | Some(false)) => RunMode::Inline,
        (None | Some("durable"), Some(true)) | (Some("durable"), None) => RunMode::Durable,
        (Some("durable"), Some(false)) | (Some("inline"), Some(true)) => {
            return Err(PaError::bad_request("mode and durable disagree").into());
        }
        (Some(_), _) => return Err(PaError::bad_request("mode must be inline or durable").into()),
    };
    let request = CreateRunRequest {
        chat_id,
        message: body.message,
        model: body.model.unwrap_or_else(|| "auto".into()),
        mode: mode as i32,
        run_id: body.run_id.unwrap_or_default(),
        client_tools_json: String::new(),
        state_json: String::new(),
    };
    let created = op::create_run(&state, &identity, request).await?;
    let run = created
        .run
        .ok_or_else(|| PaError::internal("svc-runs returned no run"))?;
    state.recent_runs.remember(&run.id, &run.chat_id, &identity);
    let accepted = RunAcceptedJson {
        events_url: format!("/v1/runs/{}/events", run.id),
        run_url: format!("/v1/runs/{}", run.id),
        mode: mode_name(run.mode),
        status: status_name(run.status),
        existing: created.existing,
        run_id: run.id,
    };
    let status = if created.existing {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        [(header::LOCATION, accepted.run_url.clone())],
        Json(accepted),
    ))
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = String, Path, description = "The run id")), responses((status = 200, description = "The run", body = RunJson)))]
pub async fn get_run(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(run_id): Path<String>,
) -> ApiResult<Json<RunJson>> {
    let request = GetRunRequest { run_id };
    let run = op::get_run(&state, &identity, request).await?;
    Ok(Json(run.into()))
}

#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path, description = "The run id")), responses((status = 200, description = "The run (cancelling is idempotent)", body = RunJson)))]
pub async fn cancel_run(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(run_id): Path<String>,
) -> ApiResult<Json<RunJson>> {
    let request = CancelRunRequest { run_id };
    let run = op::cancel_run(&state, &identity, request).await?;
    Ok(Json(run.into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalBody {
    approve: bool,
    #[serde(default)]
    reason: String,
}

/// `POST /v1/runs/{id}/approvals/{tool_call_id}` `{"approve": bool, "reason"?}`: a human's
/// decision on a tool call the untrusted-content gate holds (the run's CUSTOM
/// `tool_call_approval` event). The same RPC as the control socket's approve/deny.
#[utoipa::path(post, path = "/v1/runs/{id}/approvals/{tool_call_id}", tag = "runs",
    params(("id" = String, Path, description = "The run id"),
           ("tool_call_id" = String, Path, description = "The held tool call (the CUSTOM tool_call_approval event's toolCallId)")),
    request_body = ApprovalBody,
    responses((status = 200, description = "The decision was recorded; 404 when the run has no such pending call, 409 after another decision, a timeout or the run's end", body = ApprovalRecordedJson)))]
pub async fn decide_tool_call(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path((run_id, tool_call_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<ApprovalBody>,
) -> ApiResult<Json<ApprovalRecordedJson>> {
    let command = ControlCommand {
        run_id: run_id.clone(),
        command: Some(Command::ToolCallDecision(ToolCallDecision {
            tool_call_id: tool_call_id.clone(),
            approved: body.approve,
            reason: body.reason,
        })),
    };
    let ack = op::send_control(&state, &identity, command).await?;
    Ok(Json(ApprovalRecordedJson {
        run_id,
        tool_call_id,
        approved: body.approve,
        detail: ack.detail,
    }))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    after: Option<String>,
}

#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", params(("id" = String, Path, description = "The run id"), ("Last-Event-ID" = Option<String>, Header, description = "Resume after this stream id"), EventsQuery), responses((status = 200, description = "AG-UI events as Server-Sent Events (`id: <stream id>`, `data: <AG-UI JSON>`); ends after RUN_FINISHED or RUN_ERROR", body = String, content_type = "text/event-stream")))]
pub async fn run_events(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(run_id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let q = query(q)?;
    let after = sse::resume_point(&headers, q.after.as_deref())?;
    // Authorizes (404 for a run that is not the caller's) before any event is read; a run this
    // replica just started for the caller is known to be theirs.
    if !state.recent_runs.started_for(&run_id, &identity) {
        let request = GetRunRequest {
            run_id: run_id.clone(),
        };
        op::get_run(&state, &identity, request).await?;
    }
    Ok(sse::follow_run(&state, identity, run_id, after))
}

#[utoipa::path(get, path = "/v1/models", tag = "models", responses((status = 200, description = "The models the caller may use", body = Page<ModelJson>)))]
pub async fn list_models(
    State(state): State<AppState>,
    Caller(identity): Caller,
) -> ApiResult<Json<Page<ModelJson>>> {
    let models = op::list_models(&state, &identity, ListModelsRequest {}).await?;
    Ok(Json(Page::new(
        models.models.into_iter().map(ModelJson::from).collect(),
        String::new(),
    )))
}

// The operation layer of chats and runs (ADR 0211): the REST handlers above and the public
// gRPC RunService and ControlService call these, with the same checks.

/// The operations of chats, runs and models.
pub(crate) mod op {
    use super::*;
    use crate::operations::forward_operation;

    forward_operation!(
        /// `RunService/CreateChat`.
        create_chat(runs.create_chat, CreateChatRequest) -> Chat,
        check: |_, r| crate::dto::check_title(&r.title)
    );
    forward_operation!(
        /// `RunService/ListChats`: newest first.
        list_chats(runs.list_chats, ListChatsRequest) -> ListChatsResponse,
        check: |_, r| crate::dto::check_limit((r.page_size != 0).then_some(r.page_size))
    );
    forward_operation!(
        /// `RunService/GetChat`.
        get_chat(runs.get_chat, GetChatRequest) -> Chat
    );
    forward_operation!(
        /// `RunService/RenameChat`.
        rename_chat(runs.rename_chat, RenameChatRequest) -> Chat,
        check: |_, r| crate::dto::check_title(&r.title)
    );
    forward_operation!(
        /// `RunService/DeleteChat`: with its runs, messages and event streams.
        delete_chat(runs.delete_chat, DeleteChatRequest) -> DeleteChatResponse
    );
    forward_operation!(
        /// `RunService/ListMessages`: oldest first.
        list_messages(runs.list_messages, ListMessagesRequest) -> ListMessagesResponse,
        check: |_, r| crate::dto::check_limit_up_to(
            (r.page_size != 0).then_some(r.page_size),
            crate::dto::caps::MAX_MESSAGES_LIMIT,
        )
    );
    forward_operation!(
        /// `RunService/CreateRun`.
        create_run(runs.create_run, CreateRunRequest) -> CreateRunResponse
    );
    forward_operation!(
        /// `RunService/GetRun`.
        get_run(runs.get_run, GetRunRequest) -> Run
    );
    forward_operation!(
        /// `RunService/CancelRun` (idempotent).
        cancel_run(runs.cancel_run, CancelRunRequest) -> Run
    );
    forward_operation!(
        /// `ControlService/SendControl`: cancel a run or decide a held tool call.
        send_control(control.send_control, ControlCommand) -> ControlAck
    );
    forward_operation!(
        /// `ModelService/ListModels`: the models the caller may use.
        list_models(models.list_models, ListModelsRequest) -> ListModelsResponse
    );
    forward_operation!(
        /// `ModelService/Resolve`.
        resolve(models.resolve, ResolveModelRequest) -> ModelSelection
    );
}
