//! The memory tools: `remember`, `recall` and `forget`, first-party tools in every toolset. They
//! call svc-memory's MemoryService as the run's user (the identity svc-tools was called with,
//! signed again for the next hop), on the run's chat (from the snapshot, fixed at run start —
//! never from the model's arguments). Every failure is a result the model sees.

use pa_kit::{InternalAuth, PaError};
use pa_proto::v1::memory_service_client::MemoryServiceClient;
use pa_proto::v1::{
    DataClassification, ForgetMemoryRequest, Identity, MemoryItem, MemoryKind, MemoryScope,
    MemorySource, SearchMemoryRequest, ToolDefinition, UpsertMemoryRequest,
};
use serde_json::{Map, Value, json};
use tonic::transport::Channel;

pub const REMEMBER: &str = "remember";
pub const RECALL: &str = "recall";
pub const FORGET: &str = "forget";
pub const SOURCE: &str = "first_party";

/// Results `recall` returns at most (and by default).
const MAX_RECALL: u64 = 20;
const DEFAULT_RECALL: u64 = 5;
/// The longest memory `remember` takes, in bytes (svc-memory's own limit is 16 KiB; a memory
/// is a sentence or two, not a document).
const MAX_REMEMBER_BYTES: usize = 4 * 1024;

/// The run a tool call belongs to, as its snapshot records it.
pub struct RunContext<'a> {
    pub identity: &'a Identity,
    pub run_id: &'a str,
    /// '' when the snapshot was assembled without a chat.
    pub chat_id: &'a str,
    pub flow: DataFlow,
}

/// What the caller (the run's driver) says about the data around a call: taint and
/// classification follow the data into memories and back (docs/src/adr/0120, 0121).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataFlow {
    /// The run has ingested untrusted content: what `remember` writes is untrusted.
    pub run_tainted: bool,
    /// The run's chat classification (UNSPECIFIED = INTERNAL): `remember` stores it, `recall`
    /// finds only memories classified at most this.
    pub classification: i32,
}

impl DataFlow {
    /// The classification as governance reads it: UNSPECIFIED is INTERNAL.
    pub fn classification(&self) -> i32 {
        match DataClassification::try_from(self.classification) {
            Ok(DataClassification::Unspecified) | Err(_) => DataClassification::Internal as i32,
            Ok(c) => c as i32,
        }
    }
}

/// Cheap to clone: a lazily connected channel to svc-memory.
#[derive(Clone)]
pub struct MemoryTools {
    client: MemoryServiceClient<Channel>,
    auth: InternalAuth,
}

fn tool(name: &str, description: &str, schema: Value, class: &str) -> ToolDefinition {
    let writes = class == "write";
    ToolDefinition {
        name: name.into(),
        description: description.into(),
        parameters_json_schema: schema.to_string(),
        source: SOURCE.into(),
        // Writing memories changes what every later run is told: after untrusted content, a
        // human should confirm it (the untrusted-content gate).
        high_privilege: writes,
        read_only: !writes,
        provider_tags_required: Vec::new(),
        provider_tags_blocked: Vec::new(),
        privilege_class: class.into(),
        // The user's own memories, not content from outside.
        untrusted_output: false,
        origin_name: name.into(),
        // Set by the assembler (`sends_data_out`).
        egress: false,
        always_approve: false,
    }
}

/// The three tools, as offered in every snapshot.
pub fn definitions() -> Vec<ToolDefinition> {
    vec![
        tool(
            REMEMBER,
            "Save a memory for later runs: a fact about the user or a preference. scope \"world\" \
             (default) = about the user, recalled in every chat; \"chat\" = only in this chat. \
             Returns the memory's id.",
            json!({
                "type": "object",
                "properties": {
                    "text": { "type": "string", "description": "The memory, one self-contained statement." },
                    "scope": { "type": "string", "enum": ["world", "chat"] },
                    "kind": { "type": "string", "enum": ["fact", "preference"] }
                },
                "required": ["text"],
                "additionalProperties": false
            }),
            "write",
        ),
        tool(
            RECALL,
            "Search the user's memories (world memories and this chat's) by meaning and keywords; \
             returns the best matches with their ids.",
            json!({
                "type": "object",
                "properties": {
                    "query": { "type": "string" },
                    "scope": { "type": "string", "enum": ["world", "chat", "all"] },
                    "top_k": { "type": "integer", "minimum": 1, "maximum": MAX_RECALL }
                },
                "required": ["query"],
                "additionalProperties": false
            }),
            "read",
        ),
        tool(
            FORGET,
            "Forget one of the user's memories by its id (as recall or remember returned it).",
            json!({
                "type": "object",
                "properties": { "id": { "type": "string" } },
                "required": ["id"],
                "additionalProperties": false
            }),
            "write",
        ),
    ]
}

/// Whether `tool` is one of ours (and not, say, an MCP tool that happens to share a name).
pub fn is_memory_tool(tool: &ToolDefinition) -> bool {
    tool.source == SOURCE && matches!(tool.name.as_str(), REMEMBER | RECALL | FORGET)
}

fn text_arg<'a>(args: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match args.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim()),
        Some(Value::String(_)) => Err(format!("argument {name:?} must not be empty")),
        Some(_) => Err(format!("argument {name:?} must be a string")),
        None => Err(format!("argument {name:?} (a string) is required")),
    }
}

fn optional_word<'a>(
    args: &'a Map<String, Value>,
    name: &str,
    allowed: &[&'a str],
) -> Result<Option<&'a str>, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => allowed
            .iter()
            .find(|a| **a == s.as_str())
            .map(|a| Some(*a))
            .ok_or_else(|| format!("argument {name:?} must be one of {}", allowed.join(", "))),
        Some(_) => Err(format!("argument {name:?} must be a string")),
    }
}

fn scope_name(scope: i32) -> &'static str {
    match MemoryScope::try_from(scope) {
        Ok(MemoryScope::Chat) => "chat",
        _ => "world",
    }
}

fn kind_name(kind: i32) -> &'static str {
    match MemoryKind::try_from(kind) {
        Ok(MemoryKind::Preference) => "preference",
        Ok(MemoryKind::Summary) => "summary",
        Ok(MemoryKind::DocumentChunk) => "document",
        _ => "fact",
    }
}

/// What svc-memory's refusal means to the model.
fn failure(what: &str, status: tonic::Status) -> String {
    let err = PaError::from(status);
    match err.code {
        pa_kit::ErrorCode::NotFound | pa_kit::ErrorCode::BadRequest => {
            format!("{what} failed: {}", err.message)
        }
        _ => {
            tracing::warn!(%err, "memory tool: svc-memory failed");
            format!(
                "{what} failed: memory is unavailable right now ({})",
                err.message
            )
        }
    }
}

impl MemoryTools {
    pub fn new(client: MemoryServiceClient<Channel>, auth: InternalAuth) -> Self {
        Self { client, auth }
    }

    /// Runs memory tool `name`: its text, and whether that holds untrusted content (`recall`
    /// found an untrusted memory); `Err` is the text of a failed call.
    pub async fn run(
        &self,
        run: &RunContext<'_>,
        name: &str,
        args: &Map<String, Value>,
    ) -> Result<(String, bool), String> {
        match name {
            REMEMBER => self.remember(run, args).await.map(|t| (t, false)),
            RECALL => self.recall(run, args).await,
            FORGET => self.forget(run, args).await.map(|t| (t, false)),
            other => Err(format!("{other} is not a memory tool")),
        }
    }

    async fn remember(
        &self,
        run: &RunContext<'_>,
        args: &Map<String, Value>,
    ) -> Result<String, String> {
        let text = text_arg(args, "text")?;
        if text.len() > MAX_REMEMBER_BYTES {
            return Err(format!(
                "a memory is at most {MAX_REMEMBER_BYTES} bytes; save one short statement"
            ));
        }
        let chat = optional_word(args, "scope", &["world", "chat"])? == Some("chat");
        if chat && run.chat_id.is_empty() {
            return Err("this run has no chat: use scope \"world\"".into());
        }
        let kind = match optional_word(args, "kind", &["fact", "preference"])? {
            Some("preference") => MemoryKind::Preference,
            _ => MemoryKind::Fact,
        };
        let item = MemoryItem {
            scope: if chat {
                MemoryScope::Chat
            } else {
                MemoryScope::World
            } as i32,
            chat_id: chat.then(|| run.chat_id.to_string()),
            content: text.to_string(),
            kind: kind as i32,
            source: Some(MemorySource {
                chat_id: run.chat_id.to_string(),
                run_id: run.run_id.to_string(),
                ..Default::default()
            }),
            // Written under the influence of untrusted content, it stays untrusted; it keeps
            // the chat's classification.
            untrusted: run.flow.run_tainted,
            classification: run.flow.classification(),
            ..Default::default()
        };
        let request = UpsertMemoryRequest {
            item: Some(item),
            no_dedup: false,
        };
        let stored = self
            .client
            .clone()
            .upsert(self.auth.request(run.identity, request))
            .await
            .map_err(|s| failure("remember", s))?
            .into_inner();
        let updated = stored.updated_at_ms > stored.created_at_ms;
        Ok(format!(
            "{} memory {} ({} scope, {}).",
            if updated {
                "Updated the similar existing"
            } else {
                "Saved as"
            },
            stored.id,
            scope_name(stored.scope),
            kind_name(stored.kind)
        ))
    }

    async fn recall(
        &self,
        run: &RunContext<'_>,
        args: &Map<String, Value>,
    ) -> Result<(String, bool), String> {
        let query = text_arg(args, "query")?;
        let limit = match args.get("top_k") {
            None | Some(Value::Null) => DEFAULT_RECALL,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=MAX_RECALL).contains(n))
                .ok_or_else(|| format!("argument \"top_k\" must be an integer 1-{MAX_RECALL}"))?,
        };
        let chat = (!run.chat_id.is_empty()).then(|| run.chat_id.to_string());
        let (scope, chat_id) = match (
            optional_word(args, "scope", &["world", "chat", "all"])?,
            chat,
        ) {
            (Some("chat"), None) => return Err("this run has no chat: use scope \"world\"".into()),
            (Some("chat"), Some(chat)) => (MemoryScope::Chat, Some(chat)),
            // Without a chat, "all" must not mean every chat's memories: world only.
            (Some("world"), _) | (_, None) => (MemoryScope::World, None),
            (_, Some(chat)) => (MemoryScope::Unspecified, Some(chat)),
        };
        let request = SearchMemoryRequest {
            query: query.to_string(),
            scope: scope as i32,
            chat_id,
            limit: limit as u32,
            // Never a memory of a chat classified higher than this run's.
            max_classification: run.flow.classification(),
            ..Default::default()
        };
        let found = self
            .client
            .clone()
            .search(self.auth.request(run.identity, request))
            .await
            .map_err(|s| failure("recall", s))?
            .into_inner()
            .results;
        if found.is_empty() {
            return Ok(("No memories match.".into(), false));
        }
        let untrusted = found
            .iter()
            .any(|r| r.item.as_ref().is_some_and(|m| m.untrusted));
        let lines: Vec<String> = found
            .into_iter()
            .filter_map(|r| r.item)
            .map(|m| {
                format!(
                    "- [{}] ({}, {}) {}",
                    m.id,
                    scope_name(m.scope),
                    kind_name(m.kind),
                    m.content
                )
            })
            .collect();
        Ok((
            format!("Memories, best match first:\n{}", lines.join("\n")),
            untrusted,
        ))
    }

    async fn forget(
        &self,
        run: &RunContext<'_>,
        args: &Map<String, Value>,
    ) -> Result<String, String> {
        let id = text_arg(args, "id")?;
        let request = ForgetMemoryRequest {
            id: id.to_string(),
            ..Default::default()
        };
        // svc-memory forgets only the caller's own memories; another's id is "not found".
        self.client
            .clone()
            .forget(self.auth.request(run.identity, request))
            .await
            .map_err(|s| failure("forget", s))?;
        Ok(format!("Forgot memory {id}."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_have_valid_object_schemas_and_privileges() {
        let tools = definitions();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, [REMEMBER, RECALL, FORGET]);
        for t in &tools {
            let schema: Value = serde_json::from_str(&t.parameters_json_schema).unwrap();
            assert_eq!(schema["type"], "object", "{}", t.name);
            assert!(is_memory_tool(t));
        }
        assert!(tools[0].high_privilege && tools[2].high_privilege);
        assert!(tools[1].read_only && !tools[1].high_privilege);
    }

    #[test]
    fn an_unspecified_classification_is_internal() {
        let flow = |c: DataClassification| DataFlow {
            run_tainted: false,
            classification: c as i32,
        };
        assert_eq!(
            flow(DataClassification::Unspecified).classification(),
            DataClassification::Internal as i32
        );
        assert_eq!(
            flow(DataClassification::Public).classification(),
            DataClassification::Public as i32
        );
        let unknown = DataFlow {
            run_tainted: true,
            classification: 99,
        };
        assert_eq!(
            unknown.classification(),
            DataClassification::Internal as i32
        );
    }

    #[test]
    fn arguments_are_checked() {
        let args = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(text_arg(&args(json!({"text": " a "})), "text"), Ok("a"));
        assert!(text_arg(&args(json!({"text": " "})), "text").is_err());
        assert!(text_arg(&args(json!({"text": 3})), "text").is_err());
        assert!(text_arg(&args(json!({})), "text").is_err());
        let words = ["world", "chat"];
        assert_eq!(
            optional_word(&args(json!({"scope": "chat"})), "scope", &words),
            Ok(Some("chat"))
        );
        assert_eq!(optional_word(&args(json!({})), "scope", &words), Ok(None));
        assert!(optional_word(&args(json!({"scope": "everywhere"})), "scope", &words).is_err());
    }
}
