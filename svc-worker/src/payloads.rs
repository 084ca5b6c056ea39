//! Every payload a workflow and its activities exchange through Temporal, in one place (the
//! workflow modules and the activities both depend on this one, never on each other's files).
//! The payloads are proto messages (`proto/personal_agent/workflow/v1/workflow.proto`, ADR 0215),
//! written into workflow histories as JSON: a change must read the histories already written
//! (add fields, never renumber or retype one), as `tests/payload_compat.rs` and
//! `captured_histories_replay_deterministically` check.

use std::time::Duration;

use pa_agent::{AgentLoop, Input, ModelRequest, RunIds};
use pa_proto::v1::RunSpec;
pub use pa_proto::workflow::v1::{
    AgentLoopState, ApprovalInput, ChatRunInput, CurateInput, CuratorInput, DeferredStart,
    ExpireApprovalInput, FinishInput, FirstTurnFound, FirstTurnHere, LoopInput, MaintenanceInput,
    ModelTurnInput, ModelTurnOutput, ToolCallDecided, ToolCallInput, TurnFinished,
};

/// A payload without a part every worker writes (its spec, a tool call's call, a finish's
/// ending): not a payload of ours, and never guessed at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a workflow payload without its {0}")]
pub struct MissingPart(pub &'static str);

/// The part of a payload every worker writes.
pub fn required<T>(part: Option<T>, name: &'static str) -> Result<T, MissingPart> {
    part.ok_or(MissingPart(name))
}

/// The default of `PA_TOOL_APPROVAL_TIMEOUT_MS`.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(300);

/// A run's start, made by its first model turn: the activity puts what svc-runs hands over (when
/// it started the run while its recall was running) in front of the history, as the inline
/// driver does before it starts its loop, starts its copy of the loop with it and streams the
/// first turn; the workflow starts its own loop with the same input.
pub fn deferred_start(input: &ChatRunInput) -> DeferredStart {
    DeferredStart {
        history: input.history.clone(),
        notices: input.notices.clone(),
        high_privilege_tools: input.high_privilege_tools.clone(),
        approval_always_tools: input.approval_always_tools.clone(),
        recall_wait_ms: input.recall_wait_ms,
        tainted: input.tainted,
    }
}

/// The loop's start with what was recalled (an untrusted memory taints the run).
pub fn start_with_recall(start: DeferredStart, recalled: Option<pa_turn_io::Recalled>) -> Input {
    let mut history = start.history;
    let mut notices = start.notices;
    let untrusted = pa_turn_io::apply_recall(recalled, &mut history, &mut notices);
    Input::Start {
        history,
        notices,
        high_privilege_tools: start.high_privilege_tools,
        approval_always_tools: start.approval_always_tools,
        tainted: start.tainted || untrusted,
    }
}

/// The loop a payload carries; a state no worker writes fails the task for good.
pub fn agent_of(state: Option<AgentLoopState>) -> Result<AgentLoop, pa_agent::WireError> {
    AgentLoop::from_state(state.ok_or(pa_agent::WireError::Missing("the loop"))?)
}

/// The loop inputs a payload carries, in order.
pub fn inputs_of(inputs: Vec<LoopInput>) -> Result<Vec<Input>, pa_agent::WireError> {
    inputs.into_iter().map(Input::try_from).collect()
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
pub fn first_turn(input: &ChatRunInput) -> Result<ModelTurnInput, MissingPart> {
    let spec = required(input.spec.as_ref(), "spec")?;
    Ok(ModelTurnInput {
        spec: input.spec.clone(),
        step: FIRST_STEP,
        pending: Vec::new(),
        agent: Some(AgentLoop::new(run_ids(spec), spec.limits.unwrap_or_default()).to_state()),
        request: Some(ModelRequest {
            messages: Vec::new(),
        }),
        tools: input.tools.clone(),
        start: Some(deferred_start(input)),
    })
}

/// The workflow id of a chat's Curator (chat ids are only unique within a tenant).
pub fn curator_id(tenant_id: &str, chat_id: &str) -> String {
    format!("curator-{tenant_id}-{chat_id}")
}
