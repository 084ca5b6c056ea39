//! The REST API's JSON shapes (snake_case, RFC 3339 times), converted from the gRPC messages.

use chrono::{DateTime, SecondsFormat, Utc};
use pa_proto::v1::{
    Chat, ChatMessage, DataClassification, ModelCapabilities, ModelInfo, Run, RunMode, RunStatus,
};
use serde::{Deserialize, Serialize};

fn time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn classification_name(value: i32) -> &'static str {
    match DataClassification::try_from(value) {
        Ok(DataClassification::Public) => "public",
        Ok(DataClassification::Confidential) => "confidential",
        Ok(DataClassification::Restricted) => "restricted",
        _ => "internal",
    }
}

pub fn parse_classification(name: &str) -> Option<DataClassification> {
    match name {
        "public" => Some(DataClassification::Public),
        "internal" => Some(DataClassification::Internal),
        "confidential" => Some(DataClassification::Confidential),
        "restricted" => Some(DataClassification::Restricted),
        _ => None,
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ChatJson {
    pub id: String,
    pub title: String,
    pub classification: &'static str,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Chat> for ChatJson {
    fn from(chat: Chat) -> Self {
        Self {
            classification: classification_name(chat.classification),
            created_at: time(chat.created_at_ms),
            updated_at: time(chat.updated_at_ms),
            id: chat.id,
            title: chat.title,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MessageJson {
    pub id: String,
    pub chat_id: String,
    pub role: String,
    pub content: String,
    pub run_id: Option<String>,
    pub created_at: String,
    /// A reply of a run that had read untrusted content (what the Curator keeps of it is
    /// untrusted too).
    pub untrusted: bool,
}

impl From<ChatMessage> for MessageJson {
    fn from(m: ChatMessage) -> Self {
        Self {
            created_at: time(m.created_at_ms),
            id: m.id,
            chat_id: m.chat_id,
            role: m.role,
            content: m.content,
            run_id: m.run_id,
            untrusted: m.untrusted,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, next: String) -> Self {
        Self {
            items,
            next_cursor: if next.is_empty() { None } else { Some(next) },
        }
    }
}

/// A whole list in one answer (no paging): `{items}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Items<T> {
    pub items: Vec<T>,
}

/// The caps of the HTTP API's inputs (documented in the OpenAPI document); beyond one: 400.
pub mod caps {
    /// `?limit=` of every paged list: 1..=`MAX_LIMIT`.
    pub const MAX_LIMIT: u32 = 200;
    /// `?limit=` of a chat's messages (a whole conversation in one page): 1..=500.
    pub const MAX_MESSAGES_LIMIT: u32 = 500;
    /// A chat title (characters; svc-runs holds the same).
    pub const MAX_TITLE_CHARS: usize = 200;
    /// Tags of a memory, and provider tags of an integration.
    pub const MAX_TAGS: usize = 32;
    /// One tag (characters).
    pub const MAX_TAG_CHARS: usize = 64;
    /// Secrets of one integration.
    pub const MAX_SECRETS: usize = 32;
    /// A secret's name (characters).
    pub const MAX_SECRET_NAME_CHARS: usize = 128;
    /// An uploaded file's name (characters).
    pub const MAX_FILENAME_CHARS: usize = 255;
}

/// `limit` within 1..=[`caps::MAX_LIMIT`] when given; absent = the list's default.
pub fn check_limit(limit: Option<u32>) -> Result<(), pa_kit::PaError> {
    check_limit_up_to(limit, caps::MAX_LIMIT)
}

/// `limit` within 1..=`max` when given.
pub fn check_limit_up_to(limit: Option<u32>, max: u32) -> Result<(), pa_kit::PaError> {
    match limit {
        Some(n) if n == 0 || n > max => Err(pa_kit::PaError::bad_request(format!(
            "limit must be 1-{max}"
        ))),
        _ => Ok(()),
    }
}

/// A chat title: at most [`caps::MAX_TITLE_CHARS`] characters.
pub fn check_title(title: &str) -> Result<(), pa_kit::PaError> {
    if title.chars().count() > caps::MAX_TITLE_CHARS {
        return Err(pa_kit::PaError::bad_request(format!(
            "title must be at most {} characters",
            caps::MAX_TITLE_CHARS
        )));
    }
    Ok(())
}

/// A list of tags: at most [`caps::MAX_TAGS`] of at most [`caps::MAX_TAG_CHARS`] characters.
pub fn check_tags(field: &str, tags: &[String]) -> Result<(), pa_kit::PaError> {
    if tags.len() > caps::MAX_TAGS {
        return Err(pa_kit::PaError::bad_request(format!(
            "{field}: at most {} tags",
            caps::MAX_TAGS
        )));
    }
    if tags
        .iter()
        .any(|t| t.chars().count() > caps::MAX_TAG_CHARS || t.chars().any(char::is_control))
    {
        return Err(pa_kit::PaError::bad_request(format!(
            "{field}: a tag is at most {} characters, without control characters",
            caps::MAX_TAG_CHARS
        )));
    }
    Ok(())
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1-200 (default 50); outside: 400.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The page of a chat's messages: up to 500 (a whole conversation in one page).
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Page size, 1-500 (default 100); outside: 400.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CreateChatBody {
    /// At most 200 characters.
    #[schema(max_length = 200)]
    pub title: Option<String>,
    pub classification: Option<String>,
}

/// The body of `PATCH /v1/chats/{id}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameChatBody {
    /// At most 200 characters.
    #[schema(max_length = 200)]
    pub title: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunBody {
    pub message: String,
    /// A model label (`provider:model`) or `auto` (the default); at most 200 characters.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    /// `true` = a durable run (survives crashes; Temporal), like `"mode": "durable"`.
    #[serde(default)]
    pub durable: Option<bool>,
    /// Optional client-chosen id; a retry with the same id returns the same run.
    #[serde(default)]
    pub run_id: Option<String>,
}

pub fn mode_name(mode: i32) -> &'static str {
    match RunMode::try_from(mode) {
        Ok(RunMode::Durable) => "durable",
        _ => "inline",
    }
}

pub fn status_name(status: i32) -> &'static str {
    match RunStatus::try_from(status) {
        Ok(RunStatus::Queued) => "queued",
        Ok(RunStatus::Running) => "running",
        Ok(RunStatus::Succeeded) => "succeeded",
        Ok(RunStatus::Failed) => "failed",
        Ok(RunStatus::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelChoiceJson {
    pub requested: String,
    pub resolved: String,
    pub reason: String,
    pub provider_tags: Vec<String>,
    pub fallbacks: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UsageJson {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub model_requests: u32,
    pub tool_calls: u32,
    pub cost_micros: u64,
    pub cached_input_tokens: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AttemptJson {
    pub label: String,
    pub outcome: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub latency_ms: u64,
    pub key_source: String,
}

impl From<pa_proto::v1::ModelAttempt> for AttemptJson {
    fn from(a: pa_proto::v1::ModelAttempt) -> Self {
        let some = |s: String| (!s.is_empty()).then_some(s);
        Self {
            label: a.label,
            outcome: a.outcome,
            error_code: some(a.error_code),
            error_message: some(a.error_message),
            latency_ms: a.latency_ms,
            key_source: a.key_source,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RunErrorJson {
    pub code: String,
    pub message: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RunJson {
    pub id: String,
    pub chat_id: String,
    pub parent_run_id: Option<String>,
    pub mode: &'static str,
    pub status: &'static str,
    pub model: ModelChoiceJson,
    pub usage: UsageJson,
    /// The run's usage with all its sub-agent runs' (only where the run was read on its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_with_sub_runs: Option<UsageJson>,
    /// Every model attempt, fallbacks included, in order.
    pub attempts: Vec<AttemptJson>,
    /// The run read untrusted content (a tool result, a sub-agent's report, a recalled memory
    /// or document marked so): its high-privilege and egress calls waited for approval.
    pub tainted: bool,
    pub error: Option<RunErrorJson>,
    pub assistant_message_id: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub events_url: String,
}

impl From<pa_proto::v1::Usage> for UsageJson {
    fn from(usage: pa_proto::v1::Usage) -> Self {
        Self {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            total_tokens: usage.total_tokens,
            model_requests: usage.model_requests,
            tool_calls: usage.tool_calls,
            cost_micros: usage.cost_micros,
            cached_input_tokens: usage.cached_input_tokens,
        }
    }
}

impl From<Run> for RunJson {
    fn from(run: Run) -> Self {
        let model = run.model.unwrap_or_default();
        let usage = run.usage.unwrap_or_default();
        let error = run.error_code.map(|code| RunErrorJson {
            code,
            message: run.error_message.unwrap_or_default(),
        });
        Self {
            events_url: format!("/v1/runs/{}/events", run.id),
            mode: mode_name(run.mode),
            status: status_name(run.status),
            model: ModelChoiceJson {
                requested: model.requested,
                resolved: model.resolved_label,
                reason: model.reason,
                provider_tags: model.provider_tags,
                fallbacks: model.fallback_labels,
            },
            usage: UsageJson::from(usage),
            usage_with_sub_runs: run.usage_with_sub_runs.map(UsageJson::from),
            attempts: run.attempts.into_iter().map(AttemptJson::from).collect(),
            tainted: run.tainted,
            error,
            created_at: time(run.created_at_ms),
            finished_at: run.finished_at_ms.map(time),
            assistant_message_id: run.assistant_message_id,
            id: run.id,
            chat_id: run.chat_id,
            parent_run_id: run.parent_run_id,
        }
    }
}

/// The 202 answer to POST /v1/chats/{id}/runs.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RunAcceptedJson {
    pub run_id: String,
    pub mode: &'static str,
    pub status: &'static str,
    pub events_url: String,
    pub run_url: String,
    /// True when this was an idempotent retry that returned an existing run.
    pub existing: bool,
}

/// The 200 answer to POST /v1/runs/{id}/approvals/{tool_call_id}.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ApprovalRecordedJson {
    pub run_id: String,
    pub tool_call_id: String,
    /// The decision recorded: true = the call runs, false = it is refused.
    pub approved: bool,
    /// What the run's driver said of it.
    pub detail: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelJson {
    pub label: String,
    pub display_name: String,
    pub context_window: u32,
    pub provider_tags: Vec<String>,
    pub capabilities: Vec<&'static str>,
}

/// `["tools", "vision", "reasoning"]`, those a model has.
pub fn capability_names(caps: Option<ModelCapabilities>) -> Vec<&'static str> {
    let caps = caps.unwrap_or_default();
    [
        (caps.tools, "tools"),
        (caps.vision, "vision"),
        (caps.reasoning, "reasoning"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

impl From<ModelInfo> for ModelJson {
    fn from(m: ModelInfo) -> Self {
        let capabilities = capability_names(m.capabilities);
        Self {
            label: m.label,
            display_name: m.display_name,
            context_window: m.context_window,
            provider_tags: m.provider_tags,
            capabilities,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold() {
        assert!(check_limit(None).is_ok());
        assert!(check_limit(Some(1)).is_ok());
        assert!(check_limit(Some(200)).is_ok());
        assert!(check_limit(Some(0)).is_err());
        assert!(check_limit(Some(201)).is_err());
        assert!(check_limit_up_to(Some(500), caps::MAX_MESSAGES_LIMIT).is_ok());
        assert!(check_limit_up_to(Some(501), caps::MAX_MESSAGES_LIMIT).is_err());
        assert!(check_title(&"t".repeat(200)).is_ok());
        assert!(check_title(&"t".repeat(201)).is_err());
        let tags = |n: usize, len: usize| vec!["x".repeat(len); n];
        assert!(check_tags("tags", &tags(32, 64)).is_ok());
        assert!(check_tags("tags", &tags(33, 1)).is_err());
        assert!(check_tags("tags", &tags(1, 65)).is_err());
        assert!(check_tags("tags", &["a\nb".to_string()]).is_err());
    }
}
