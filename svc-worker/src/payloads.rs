//! Every payload a workflow and its activities exchange through Temporal, in one place (the
//! workflow modules and the activities both depend on this one, never on each other's files).
//! They are serialized as JSON into workflow histories: a change must read the histories already
//! written (`#[serde(default)]` on new fields), as `captured_histories_replay_deterministically`
//! checks.

use std::time::Duration;

use pa_agent::{AgentLoop, Input, ModelRequest, RunIds, ToolCall, TurnMessage};
use pa_proto::v1::{AgUiEvent, ChatToolDefinition, Identity, ModelAttempt, RunSpec, Usage};
use pa_turn_io::RunEnding;
use serde::{Deserialize, Serialize};

/// What svc-runs starts a durable run with: the spec `launch_run` built and the chat history the
/// model sees (read by svc-runs, which owns it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChatRunInput {
    pub spec: RunSpec,
    pub history: Vec<TurnMessage>,
    /// The toolset as the model is offered it (from the run's snapshot).
    #[serde(default)]
    pub tools: Vec<ChatToolDefinition>,
    /// Reported as steps after RUN_STARTED (tools a gate removed).
    #[serde(default)]
    pub notices: Vec<String>,
    /// The toolset's high-privilege tools (the untrusted-content gate).
    #[serde(default)]
    pub high_privilege_tools: Vec<String>,
    /// Tools every call of which waits for a human's approval, tainted or not. Absent in
    /// histories of older workflows.
    #[serde(default)]
    pub approval_always_tools: Vec<String>,
    /// How long a tool call waits for a human's approval (a durable timer); 0 = the default.
    #[serde(default)]
    pub approval_timeout_ms: u64,
    /// 0: `history` and `notices` are complete. Otherwise svc-runs started the run while recall
    /// was still running (so Temporal's start overlaps it): the first model turn waits up to this
    /// long for the recall (see [`DeferredStart`]).
    #[serde(default)]
    pub recall_wait_ms: u64,
    /// What the run starts from holds untrusted content (see svc-runs' `RunStart::tainted`); a
    /// recall handed over later adds its own taint. Absent in histories of older workflows.
    #[serde(default)]
    pub tainted: bool,
}

/// The default of `PA_TOOL_APPROVAL_TIMEOUT_MS`.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(300);

/// The `decide_tool_call` signal: a human's answer to an approval request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToolCallDecided {
    pub tool_call_id: String,
    pub approved: bool,
}

/// Opens an approval request and writes the pending events, then the request event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApprovalInput {
    pub spec: RunSpec,
    pub step: u64,
    pub pending: Vec<AgUiEvent>,
    pub tool_call_id: String,
    pub event: AgUiEvent,
}

/// Closes an approval request nobody answered before the workflow's timer fired.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpireApprovalInput {
    pub run_id: String,
    pub tool_call_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelTurnInput {
    pub spec: RunSpec,
    pub step: u64,
    /// Events to write before the turn's own (ids `<step>-0…`).
    pub pending: Vec<AgUiEvent>,
    /// The workflow's loop as it is now; the activity steps a copy.
    pub agent: AgentLoop,
    /// Unused (empty) with `start`: the first request comes from starting the loop.
    pub request: ModelRequest,
    #[serde(default)]
    pub tools: Vec<ChatToolDefinition>,
    /// The loop is not started yet: the activity starts it once the recall is there.
    #[serde(default)]
    pub start: Option<DeferredStart>,
}

/// A run's start, made by its first model turn: the activity puts what svc-runs hands over (when
/// it started the run while its recall was running) in front of the history, as the inline
/// driver does before it starts its loop, starts its copy of the loop with it and streams the
/// first turn; the workflow starts its own loop with the same input.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeferredStart {
    pub history: Vec<TurnMessage>,
    pub notices: Vec<String>,
    pub high_privilege_tools: Vec<String>,
    #[serde(default)]
    pub approval_always_tools: Vec<String>,
    pub recall_wait_ms: u64,
    #[serde(default)]
    pub tainted: bool,
}

impl DeferredStart {
    pub fn of(input: &ChatRunInput) -> Self {
        Self {
            history: input.history.clone(),
            notices: input.notices.clone(),
            high_privilege_tools: input.high_privilege_tools.clone(),
            approval_always_tools: input.approval_always_tools.clone(),
            recall_wait_ms: input.recall_wait_ms,
            tainted: input.tainted,
        }
    }

    /// The loop's start with what was recalled (an untrusted memory taints the run).
    pub fn with_recall(self, recalled: Option<pa_turn_io::Recalled>) -> Input {
        let mut history = self.history;
        let mut notices = self.notices;
        let untrusted = pa_turn_io::apply_recall(recalled, &mut history, &mut notices);
        Input::Start {
            history,
            notices,
            high_privilege_tools: self.high_privilege_tools,
            approval_always_tools: self.approval_always_tools,
            tainted: self.tainted || untrusted,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ModelTurnOutput {
    /// Every input the activity fed its loop copy, in order; the last ends the turn.
    pub inputs: Vec<Input>,
    pub attempts: Vec<ModelAttempt>,
    /// The start the activity fed first (a [`DeferredStart`]), before `inputs`.
    #[serde(default)]
    pub start: Option<Input>,
    /// The turn began when the workflow started, before its activity ran (see `early`); kept in
    /// the history for whoever reads it.
    #[serde(default)]
    pub early: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToolCallInput {
    pub spec: RunSpec,
    pub step: u64,
    pub pending: Vec<AgUiEvent>,
    pub call: ToolCall,
    /// The tools the model was offered (a sub-agent tool runs only if it was one of them).
    #[serde(default)]
    pub offered: Vec<ChatToolDefinition>,
    /// The run's usage so far, its sub-runs' included: what a sub-agent run may still spend.
    #[serde(default)]
    pub spent: Usage,
    /// The run has ingested untrusted content (a sub-run starts tainted; memories written are
    /// untrusted).
    #[serde(default)]
    pub tainted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinishInput {
    pub spec: RunSpec,
    pub step: u64,
    /// Ends with RUN_FINISHED or RUN_ERROR, written after the outcome is stored.
    pub pending: Vec<AgUiEvent>,
    pub ending: RunEnding,
    pub attempts: Vec<ModelAttempt>,
}

pub(crate) fn run_ids(spec: &RunSpec) -> RunIds {
    RunIds {
        thread_id: spec.chat_id.clone(),
        run_id: spec.run_id.clone(),
        parent_run_id: spec.parent_run_id.clone(),
        assistant_message_id: spec.assistant_message_id.clone(),
    }
}

/// The step of a run's first model turn.
pub const FIRST_STEP: u64 = 1;

/// A run's first model turn, as the workflow schedules it: a pure function of the run's input,
/// so svc-worker's starter can begin the same turn before Temporal hands the activity out (see
/// `early`).
pub fn first_turn(input: &ChatRunInput) -> ModelTurnInput {
    ModelTurnInput {
        spec: input.spec.clone(),
        step: FIRST_STEP,
        pending: Vec::new(),
        agent: AgentLoop::new(run_ids(&input.spec), input.spec.limits.unwrap_or_default()),
        request: ModelRequest {
            messages: Vec::new(),
        },
        tools: input.tools.clone(),
        start: Some(DeferredStart::of(input)),
    }
}

// The Curator's.

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CuratorInput {
    pub identity: Identity,
    pub chat_id: String,
    /// Turns curated by earlier runs of this workflow (carried across continue-as-new).
    pub curated: u32,
    pub debounce_ms: u64,
    pub max_signals: u32,
}

/// One finished turn: the run, and the model it used (the Curator asks the same one, so the
/// chat's data stays with a provider its classification allows).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TurnFinished {
    pub run_id: String,
    pub label: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CurateInput {
    pub identity: Identity,
    pub chat_id: String,
    pub turns: Vec<TurnFinished>,
}

/// The workflow id of a chat's Curator (chat ids are only unique within a tenant).
pub fn curator_id(tenant_id: &str, chat_id: &str) -> String {
    format!("curator-{tenant_id}-{chat_id}")
}

// The maintenance schedules'.

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MaintenanceInput {
    pub task: String,
}
