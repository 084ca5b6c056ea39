//! `POST /v1/ag-ui`: the standard AG-UI agent endpoint. RunAgentInput in, AG-UI SSE out, so an
//! unmodified AG-UI client (`HttpAgent`) can chat with the platform. The AG-UI thread is a chat
//! (created on first use with the thread's id); each call is one run with the client's runId.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use pa_kit::{ErrorCode, PaError};
use pa_proto::v1::{CreateChatRequest, CreateRunRequest, RunMode};
use serde::Deserialize;
use serde_json::Value;

use crate::api::ApiJson;
use crate::auth::Caller;
use crate::problem::ApiError;
use crate::sse;
use crate::state::AppState;

/// AG-UI RunAgentInput. Unknown fields (e.g. `protocolVersion`) are accepted, as the protocol
/// grows additively.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunAgentInput {
    /// The AG-UI thread: a chat id (the chat is created on first use).
    thread_id: String,
    /// The run's id (idempotency key); empty = a new one.
    #[serde(default)]
    run_id: String,
    /// The whole thread, AG-UI messages `{id, role, content}`; the last must be the user's new
    /// turn (`content` a string or a list of parts whose `text` parts count).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    messages: Vec<Value>,
    /// Client-side tools (AG-UI `Tool`s: `{name, description, parameters}`) the run may call.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    tools: Value,
    /// The client's shared state, handed to the run as is.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    state: Value,
    /// Extra properties; `model` (a model label or `auto`, the default) picks the model.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    forwarded_props: Value,
}

const TITLE_CHARS: usize = 60;

/// The text of an AG-UI message's `content`: a string, or the text parts of a part list.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => {
            let text: Vec<&str> = parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            (!text.is_empty()).then(|| text.join("\n"))
        }
        _ => None,
    }
}

/// The client sends the whole thread every time; the new turn is its last user message.
fn new_user_message(messages: &[Value]) -> Result<String, ApiError> {
    let last = messages
        .last()
        .ok_or_else(|| PaError::bad_request("messages must not be empty"))?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return Err(PaError::bad_request("the last message must have role \"user\"").into());
    }
    let text = last
        .get("content")
        .and_then(content_text)
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| PaError::bad_request("the last user message has no text content"))?;
    Ok(text)
}

fn json_or_empty(value: &Value) -> String {
    if value.is_null() {
        String::new()
    } else {
        value.to_string()
    }
}

#[utoipa::path(post, path = "/v1/ag-ui", tag = "runs", request_body(content = RunAgentInput, description = "AG-UI RunAgentInput (threadId, runId, messages, tools, state, forwardedProps)"), responses((status = 200, description = "AG-UI events as Server-Sent Events", body = String, content_type = "text/event-stream")))]
pub async fn run_agent(
    State(state): State<AppState>,
    Caller(identity): Caller,
    headers: HeaderMap,
    ApiJson(input): ApiJson<RunAgentInput>,
) -> Result<impl IntoResponse, ApiError> {
    if input.thread_id.trim().is_empty() {
        return Err(PaError::bad_request("threadId is required").into());
    }
    let message = new_user_message(&input.messages)?;
    let model = input
        .forwarded_props
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("auto")
        .to_string();
    let mut runs = state.runs.clone();
    let create = CreateRunRequest {
        chat_id: input.thread_id,
        message,
        model,
        mode: RunMode::Inline as i32,
        run_id: input.run_id,
        client_tools_json: json_or_empty(&input.tools),
        state_json: json_or_empty(&input.state),
    };
    // The thread is a chat. The run is started in it; only when there is no such chat of the
    // caller's (the thread's first run) is it created with the thread's id and the start
    // tried again: every later turn is one call to svc-runs, not two.
    let created = match runs
        .create_run(state.auth.request(&identity, create.clone()))
        .await
    {
        Ok(created) => created,
        Err(status) if PaError::from_status(&status).code == ErrorCode::NotFound => {
            let chat = CreateChatRequest {
                title: create.message.chars().take(TITLE_CHARS).collect(),
                classification: 0,
                chat_id: create.chat_id.clone(),
            };
            if let Err(status) = runs.create_chat(state.auth.request(&identity, chat)).await {
                // Created meanwhile (by another request of the caller's), or the id is not
                // the caller's to take: the second start says which.
                if PaError::from_status(&status).code != ErrorCode::Conflict {
                    return Err(status.into());
                }
            }
            runs.create_run(state.auth.request(&identity, create))
                .await?
        }
        Err(status) => return Err(status.into()),
    }
    .into_inner();
    let run = created
        .run
        .ok_or_else(|| PaError::internal("svc-runs returned no run"))?;
    let after = sse::resume_point(&headers, None)?;
    Ok(sse::follow_run(&state, identity, run.id, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_new_turn_is_the_last_user_message() {
        let messages = vec![
            json!({"id": "1", "role": "user", "content": "first"}),
            json!({"id": "2", "role": "assistant", "content": "reply"}),
            json!({"id": "3", "role": "user", "content": [{"type": "text", "text": "second"}]}),
        ];
        assert_eq!(new_user_message(&messages).unwrap(), "second");
        assert!(new_user_message(&messages[..2]).is_err());
        assert!(new_user_message(&[]).is_err());
        assert!(new_user_message(&[json!({"role": "user", "content": "  "})]).is_err());
    }
}
