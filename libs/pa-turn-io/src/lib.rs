//! The I/O half of a run, shared by both drivers: svc-runs' inline task and svc-worker's
//! Temporal activities. pa-agent decides *what* happens; this crate is *how* a model turn and a
//! tool call reach svc-models and svc-tools, and how their answers become pa-agent inputs —
//! one implementation, so the two modes cannot drift apart.

mod open_messages;
mod recall;
mod subagent;

pub use open_messages::OpenMessages;
pub use recall::{
    RecallSettings, Recalled, apply as apply_recall, approx_tokens, await_recall, build_context,
    hand_over_recall,
};
pub use subagent::{EventRelay, SubAgentIo, SubRunOutcome, SubTask, parse_call};

use pa_agent::{Input, ModelRequest, Outcome, ToolCall, TurnMessage};
use pa_kit::error::ErrorCodeExt;
use pa_kit::{InternalAuth, PaError};
use pa_proto::v1::memory_service_client::MemoryServiceClient;
use pa_proto::v1::model_service_client::ModelServiceClient;
use pa_proto::v1::tool_service_client::ToolServiceClient;
use pa_proto::v1::{
    BlockedTool, ChatToolCall, ChatToolDefinition, ChatTurnMessage, DataClassification,
    ExecuteToolRequest, Identity, ModelAttempt, RunSpec, RunStatus, StreamChatChunk,
    StreamChatRequest, ToolDefinition, Usage, stream_chat_chunk::Chunk,
};
use tonic::Streaming;
use tonic::transport::Channel;

/// The clients a driver needs to run turns. Cheap to clone.
#[derive(Clone)]
pub struct RunIo {
    pub models: ModelServiceClient<Channel>,
    pub tools: ToolServiceClient<Channel>,
    /// svc-memory, for automatic recall at run start.
    pub memory: MemoryServiceClient<Channel>,
    pub auth: InternalAuth,
    /// Sub-agent tool calls (explore, delegate, run_agents_script), through svc-runs.
    pub subagents: SubAgentIo,
}

/// A model turn in flight: chunks from svc-models, turned into pa-agent inputs.
pub struct ModelTurn {
    stream: Streaming<StreamChatChunk>,
    done: bool,
    /// Why the turn broke off, when its end was the relay's (or the provider stream's) death
    /// rather than the model's answer: a fresh attempt may well succeed.
    broke: Option<String>,
}

impl RunIo {
    /// Starts a model turn. A refusal (governance, no key, provider down…) comes back as the
    /// `ModelFailed` input the loop expects, not as an error: it ends the run, not the driver.
    pub async fn start_model_turn(
        &self,
        spec: &RunSpec,
        request: ModelRequest,
        tools: &[ChatToolDefinition],
    ) -> Result<ModelTurn, Input> {
        let identity = spec.identity.clone().unwrap_or_default();
        let mut models = self.models.clone();
        match models
            .stream_chat(
                self.auth
                    .request(&identity, chat_request(spec, request, tools)),
            )
            .await
        {
            Ok(response) => Ok(ModelTurn {
                stream: response.into_inner(),
                done: false,
                broke: None,
            }),
            Err(status) => Err(model_failed(&PaError::from(status))),
        }
    }

    /// Runs one tool call: a sub-agent tool the run was offered through svc-runs (a sub-run whose
    /// events `relay` writes into this run's stream), any other through svc-tools. `spent` is the
    /// run's usage so far with its sub-runs'. A failed tool is the model's to handle (an error
    /// result it sees), never the run's end.
    pub async fn run_tool(
        &self,
        spec: &RunSpec,
        call: ToolCall,
        offered: &[ChatToolDefinition],
        spent: Usage,
        tainted: bool,
        relay: &mut impl EventRelay,
    ) -> Input {
        if pa_proto::subagents::is_subagent_tool(&call.name)
            && offered.iter().any(|t| t.name == call.name)
        {
            return self.subagents.run(spec, call, spent, tainted, relay).await;
        }
        self.execute_tool(spec, call, tainted).await
    }

    /// [`RunIo::run_tool`] for a driver that can retry: `Err(reason)` when svc-tools could not
    /// be reached or died during the call (its connection broke, or a store behind it is
    /// unavailable), instead of an error result for the model.
    pub async fn try_run_tool(
        &self,
        spec: &RunSpec,
        call: ToolCall,
        offered: &[ChatToolDefinition],
        spent: Usage,
        tainted: bool,
        relay: &mut impl EventRelay,
    ) -> Result<Input, String> {
        if pa_proto::subagents::is_subagent_tool(&call.name)
            && offered.iter().any(|t| t.name == call.name)
        {
            return Ok(self.subagents.run(spec, call, spent, tainted, relay).await);
        }
        match self.call_tool(spec, &call, tainted).await {
            Err(status) if transport_failure(&status) => Err(format!(
                "the tool service could not run {}: {}",
                call.name,
                status.message()
            )),
            result => Ok(tool_input(call, result)),
        }
    }

    /// Runs one tool call through svc-tools; `tainted`: the run has ingested untrusted content
    /// (what the memory tools write is then untrusted). A failed tool is the model's to handle
    /// (an error result it sees), never the run's end.
    pub async fn execute_tool(&self, spec: &RunSpec, call: ToolCall, tainted: bool) -> Input {
        let result = self.call_tool(spec, &call, tainted).await;
        tool_input(call, result)
    }

    async fn call_tool(
        &self,
        spec: &RunSpec,
        call: &ToolCall,
        tainted: bool,
    ) -> Result<pa_proto::v1::ExecuteToolResponse, tonic::Status> {
        let identity: Identity = spec.identity.clone().unwrap_or_default();
        let request = ExecuteToolRequest {
            run_id: spec.run_id.clone(),
            snapshot_id: spec.toolset_snapshot_id.clone(),
            tool_call_id: call.id.clone(),
            name: call.name.clone(),
            arguments_json: call.arguments_json.clone(),
            run_tainted: tainted,
            classification: effective_classification(spec.classification),
        };
        let mut tools = self.tools.clone();
        tools
            .execute_tool(self.auth.request(&identity, request))
            .await
            .map(tonic::Response::into_inner)
    }
}

/// A tool call's answer as the loop takes it; a failed call is an error result for the model.
fn tool_input(
    call: ToolCall,
    result: Result<pa_proto::v1::ExecuteToolResponse, tonic::Status>,
) -> Input {
    match result {
        Ok(result) => Input::ToolResult {
            tool_call_id: call.id,
            content: result.content,
            is_error: result.is_error,
            untrusted: result.untrusted_content,
            nested: Default::default(),
        },
        Err(status) => Input::ToolResult {
            tool_call_id: call.id,
            content: PaError::from(status).message,
            is_error: true,
            untrusted: false,
            nested: Default::default(),
        },
    }
}

/// Whether a failed call failed in transport (the service or a store behind it unreachable,
/// the connection broken) rather than by the service's own answer.
pub fn transport_failure(status: &tonic::Status) -> bool {
    // A broken HTTP/2 stream (the peer killed mid-call) arrives as INTERNAL with the transport
    // error as its source: pa-kit classifies it as unavailable.
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
    ) || PaError::from_status(status).code == pa_kit::ErrorCode::Unavailable
}

impl ModelTurn {
    /// The next input of this turn; `None` once the turn has ended (after its `ModelFinished` or
    /// `ModelFailed`). Attempts reported by svc-models are appended to `attempts`.
    pub async fn next(&mut self, attempts: &mut Vec<ModelAttempt>) -> Option<Input> {
        while !self.done {
            let input = match self.stream.message().await {
                Ok(Some(chunk)) => match chunk.chunk {
                    Some(Chunk::TextDelta(text)) => Input::ModelText(text),
                    Some(Chunk::ReasoningDelta(text)) => Input::ModelReasoning(text),
                    Some(Chunk::ToolCall(call)) => Input::ModelToolCall(ToolCall {
                        id: call.id,
                        name: call.name,
                        arguments_json: call.arguments_json,
                    }),
                    Some(Chunk::Finish(finish)) => {
                        attempts.extend(finish.attempts);
                        Input::ModelFinished {
                            usage: finish.usage.unwrap_or_default(),
                        }
                    }
                    Some(Chunk::Failure(failure)) => {
                        attempts.extend(failure.attempts);
                        // The provider's stream broke off after its first tokens (svc-models
                        // cannot fall back then): another attempt of the turn may succeed.
                        if failure.after_first_token && failure.code == "unavailable" {
                            self.broke =
                                Some(format!("the model stream broke off: {}", failure.message));
                        }
                        Input::ModelFailed {
                            code: failure.code,
                            message: failure.message,
                        }
                    }
                    None => continue,
                },
                Ok(None) => {
                    self.broke = Some("the model relay's stream ended without finishing".into());
                    model_failed(&PaError::unavailable(
                        "the model stream ended without finishing",
                    ))
                }
                Err(status) => {
                    self.broke = Some(format!(
                        "the model relay's stream broke: {}",
                        status.message()
                    ));
                    model_failed(&PaError::from(status))
                }
            };
            self.done = ends_model_turn(&input);
            return Some(input);
        }
        None
    }
}

impl ModelTurn {
    /// Why the turn ended by breaking off (the relay or the provider stream died), if it did:
    /// set with the `ModelFailed` input that ended it.
    pub fn broke(&self) -> Option<&str> {
        self.broke.as_deref()
    }
}

/// Whether a model turn that could not open (`start_model_turn`'s error input) failed because
/// svc-models could not be reached: another attempt may succeed.
pub fn relay_unreachable(input: &Input) -> bool {
    matches!(input, Input::ModelFailed { code, .. } if code == "unavailable")
}

/// Whether `input` is the last of a model turn.
pub fn ends_model_turn(input: &Input) -> bool {
    matches!(
        input,
        Input::ModelFinished { .. } | Input::ModelFailed { .. }
    )
}

pub fn chat_request(
    spec: &RunSpec,
    request: ModelRequest,
    tools: &[ChatToolDefinition],
) -> StreamChatRequest {
    let selection = spec.model_selection.clone().unwrap_or_default();
    StreamChatRequest {
        label: selection.resolved_label,
        messages: request.messages.into_iter().map(to_chat_message).collect(),
        tools: tools.to_vec(),
        max_output_tokens: 0,
        classification: spec.classification,
        run_id: spec.run_id.clone(),
        fallback_labels: selection.fallback_labels,
    }
}

/// The run's toolset as the model is offered it.
pub fn model_tools(tools: &[ToolDefinition]) -> Vec<ChatToolDefinition> {
    tools
        .iter()
        .map(|t| ChatToolDefinition {
            name: t.name.clone(),
            description: t.description.clone(),
            parameters_json_schema: t.parameters_json_schema.clone(),
        })
        .collect()
}

/// The names of the toolset's high-privilege tools: the untrusted-content gate asks a human
/// before running one of them once the run has read untrusted content. A tool that can send
/// data out (`egress`: web_fetch, a browser's navigate, an MCP tool not marked read-only)
/// counts as one: after untrusted content it could carry the run's data to an attacker.
pub fn high_privilege_tools(tools: &[ToolDefinition]) -> Vec<String> {
    tools
        .iter()
        .filter(|t| t.high_privilege || t.egress)
        .map(|t| t.name.clone())
        .collect()
}

/// The names of the toolset's tools that always wait for a human's approval, tainted run or not
/// (reading the user's own, logged-in browser).
pub fn approval_always_tools(tools: &[ToolDefinition]) -> Vec<String> {
    tools
        .iter()
        .filter(|t| t.always_approve)
        .map(|t| t.name.clone())
        .collect()
}

/// A chat classification as governance reads it: UNSPECIFIED is INTERNAL.
pub fn effective_classification(classification: i32) -> i32 {
    match DataClassification::try_from(classification) {
        Ok(DataClassification::Unspecified) | Err(_) => DataClassification::Internal as i32,
        Ok(c) => c as i32,
    }
}

/// What the run reports about tools a gate removed (a STEP after RUN_STARTED each).
pub fn gate_notices(blocked: &[BlockedTool]) -> Vec<String> {
    blocked
        .iter()
        .map(|b| {
            let gate = if b.gate.is_empty() { "gate" } else { &b.gate };
            format!("{gate}: removed tool {} ({})", b.name, b.reason)
        })
        .collect()
}

pub fn model_failed(err: &PaError) -> Input {
    Input::ModelFailed {
        code: err.code.slug().to_string(),
        message: err.message.clone(),
    }
}

pub fn cancelled() -> Input {
    Input::Cancel {
        reason: "cancelled by the user".into(),
    }
}

/// A loop message as svc-models takes it.
pub fn to_chat_message(message: TurnMessage) -> ChatTurnMessage {
    ChatTurnMessage {
        role: message.role,
        content: message.content,
        tool_call_id: message.tool_call_id,
        tool_calls: message
            .tool_calls
            .into_iter()
            .map(|c| ChatToolCall {
                id: c.id,
                name: c.name,
                arguments_json: c.arguments_json,
            })
            .collect(),
    }
}

/// The inverse of [`to_chat_message`].
pub fn from_chat_message(message: ChatTurnMessage) -> TurnMessage {
    TurnMessage {
        role: message.role,
        content: message.content,
        tool_call_id: message.tool_call_id,
        tool_calls: message
            .tool_calls
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                name: c.name,
                arguments_json: c.arguments_json,
            })
            .collect(),
    }
}

/// A model turn's span, as both drivers (`service`) open it: the model, the turn and, once it
/// ended, its tokens and attempts.
pub fn model_turn_span(service: &'static str, spec: &RunSpec, turn: u32) -> tracing::Span {
    let model = spec
        .model_selection
        .as_ref()
        .map(|m| m.resolved_label.as_str())
        .unwrap_or_default();
    tracing::info_span!(
        "model_turn",
        otel.name = "model_turn",
        pa.service = service,
        run_id = %spec.run_id,
        model = %model,
        turn,
        tokens = tracing::field::Empty,
        attempts = tracing::field::Empty,
    )
}

/// A tool call's span, as both drivers (`service`) open it.
pub fn tool_call_span(service: &'static str, spec: &RunSpec, call: &ToolCall) -> tracing::Span {
    tracing::info_span!(
        "tool_call",
        otel.name = %format!("tool_call {}", call.name),
        pa.service = service,
        run_id = %spec.run_id,
        tool = %call.name,
        tool_call_id = %call.id,
    )
}

/// How a run ended, as svc-runs records it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunEnding {
    pub status: RunStatus,
    pub usage: Usage,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// The reply stored as the chat's assistant message ("" = none).
    pub assistant_text: String,
    /// The run ingested untrusted content (recorded on the run and on its reply).
    #[serde(default)]
    pub tainted: bool,
}

impl RunEnding {
    pub fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Succeeded { final_text, usage } => Self {
                status: RunStatus::Succeeded,
                usage: *usage,
                error_code: None,
                error_message: None,
                assistant_text: final_text.clone(),
                tainted: false,
            },
            Outcome::Failed {
                code,
                message,
                usage,
            } => Self {
                status: RunStatus::Failed,
                usage: *usage,
                error_code: Some(code.clone()),
                error_message: Some(message.clone()),
                assistant_text: String::new(),
                tainted: false,
            },
            Outcome::Cancelled {
                partial_text,
                usage,
            } => Self {
                status: RunStatus::Cancelled,
                usage: *usage,
                error_code: Some("cancelled".into()),
                error_message: Some("cancelled by the user".into()),
                assistant_text: partial_text.clone(),
                tainted: false,
            },
        }
    }

    /// The ending of a run stopped by an infrastructure error (or cancelled with no driver).
    pub fn of_error(err: &PaError) -> Self {
        let status = if err.code == pa_kit::ErrorCode::Cancelled {
            RunStatus::Cancelled
        } else {
            RunStatus::Failed
        };
        Self {
            status,
            usage: Usage::default(),
            error_code: Some(err.code.slug().to_string()),
            error_message: Some(err.message.clone()),
            assistant_text: String::new(),
            tainted: false,
        }
    }

    /// The ending of a run whose loop ended with `outcome`, `tainted` as the loop says.
    pub fn of_loop(outcome: &Outcome, tainted: bool) -> Self {
        Self {
            tainted,
            ..Self::of(outcome)
        }
    }
}

/// A run's ending as a durable run's finish activity is handed it (ADR 0215).
impl From<RunEnding> for pa_proto::workflow::v1::RunEnding {
    fn from(ending: RunEnding) -> Self {
        Self {
            status: ending.status as i32,
            usage: Some(ending.usage),
            error_code: ending.error_code,
            error_message: ending.error_message,
            assistant_text: ending.assistant_text,
            tainted: ending.tainted,
        }
    }
}

/// A status no version writes (a corrupt or foreign payload) ends the run as failed.
impl From<pa_proto::workflow::v1::RunEnding> for RunEnding {
    fn from(ending: pa_proto::workflow::v1::RunEnding) -> Self {
        let status = RunStatus::try_from(ending.status).unwrap_or(RunStatus::Failed);
        Self {
            status,
            usage: ending.usage.unwrap_or_default(),
            error_code: ending.error_code,
            error_message: ending.error_message,
            assistant_text: ending.assistant_text,
            tainted: ending.tainted,
        }
    }
}
