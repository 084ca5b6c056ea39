//! The loop's inputs and state as workflow payload messages (ADR 0215): a durable workflow hands
//! its loop to an activity as an `AgentLoopState`, and the activity hands back what it fed its
//! copy as `LoopInput`s.

use pa_proto::workflow::v1::{
    AgentLoopState, ApprovalDecisionInput, CancelInput, LoopInput, LoopPhase, ModelFailedInput,
    ModelFinishedInput, StartInput, ToolResultInput, loop_input,
};

use super::{AgentLoop, Input, Phase};

/// A payload that no version of the loop writes: a corrupt or foreign history.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("a loop input without a kind")]
    EmptyInput,
    #[error("a loop state without {0}")]
    Missing(&'static str),
    #[error("a loop state in an unknown phase ({0})")]
    UnknownPhase(i32),
}

impl From<Input> for LoopInput {
    fn from(input: Input) -> Self {
        use loop_input::Input as Wire;
        let input = match input {
            Input::Start {
                history,
                notices,
                high_privilege_tools,
                approval_always_tools,
                tainted,
            } => Wire::Start(StartInput {
                history,
                notices,
                high_privilege_tools,
                approval_always_tools,
                tainted,
            }),
            Input::ModelText(delta) => Wire::ModelText(delta),
            Input::ModelReasoning(delta) => Wire::ModelReasoning(delta),
            Input::ModelToolCall(call) => Wire::ModelToolCall(call),
            Input::ModelFinished { usage } => {
                Wire::ModelFinished(ModelFinishedInput { usage: Some(usage) })
            }
            Input::ModelFailed { code, message } => {
                Wire::ModelFailed(ModelFailedInput { code, message })
            }
            Input::ToolResult {
                tool_call_id,
                content,
                is_error,
                untrusted,
                nested,
            } => Wire::ToolResult(ToolResultInput {
                tool_call_id,
                content,
                is_error,
                untrusted,
                nested: Some(nested),
            }),
            Input::ApprovalDecision {
                tool_call_id,
                approved,
                timed_out,
            } => Wire::ApprovalDecision(ApprovalDecisionInput {
                tool_call_id,
                approved,
                timed_out,
            }),
            Input::Cancel { reason } => Wire::Cancel(CancelInput { reason }),
        };
        LoopInput { input: Some(input) }
    }
}

impl TryFrom<LoopInput> for Input {
    type Error = WireError;

    fn try_from(input: LoopInput) -> Result<Self, WireError> {
        use loop_input::Input as Wire;
        Ok(match input.input.ok_or(WireError::EmptyInput)? {
            Wire::Start(start) => Input::Start {
                history: start.history,
                notices: start.notices,
                high_privilege_tools: start.high_privilege_tools,
                approval_always_tools: start.approval_always_tools,
                tainted: start.tainted,
            },
            Wire::ModelText(delta) => Input::ModelText(delta),
            Wire::ModelReasoning(delta) => Input::ModelReasoning(delta),
            Wire::ModelToolCall(call) => Input::ModelToolCall(call),
            Wire::ModelFinished(finished) => Input::ModelFinished {
                usage: finished.usage.unwrap_or_default(),
            },
            Wire::ModelFailed(failed) => Input::ModelFailed {
                code: failed.code,
                message: failed.message,
            },
            Wire::ToolResult(result) => Input::ToolResult {
                tool_call_id: result.tool_call_id,
                content: result.content,
                is_error: result.is_error,
                untrusted: result.untrusted,
                nested: result.nested.unwrap_or_default(),
            },
            Wire::ApprovalDecision(decision) => Input::ApprovalDecision {
                tool_call_id: decision.tool_call_id,
                approved: decision.approved,
                timed_out: decision.timed_out,
            },
            Wire::Cancel(cancel) => Input::Cancel {
                reason: cancel.reason,
            },
        })
    }
}

impl From<Phase> for LoopPhase {
    fn from(phase: Phase) -> Self {
        match phase {
            Phase::NotStarted => LoopPhase::NotStarted,
            Phase::AwaitingModel => LoopPhase::AwaitingModel,
            Phase::AwaitingTools => LoopPhase::AwaitingTools,
            Phase::Done => LoopPhase::Done,
        }
    }
}

impl From<LoopPhase> for Phase {
    fn from(phase: LoopPhase) -> Self {
        match phase {
            LoopPhase::NotStarted => Phase::NotStarted,
            LoopPhase::AwaitingModel => Phase::AwaitingModel,
            LoopPhase::AwaitingTools => Phase::AwaitingTools,
            LoopPhase::Done => Phase::Done,
        }
    }
}

impl AgentLoop {
    /// The loop's whole state, as a workflow hands it to an activity.
    pub fn to_state(&self) -> AgentLoopState {
        AgentLoopState {
            ids: Some(self.ids.clone()),
            limits: Some(self.limits),
            phase: LoopPhase::from(self.phase) as i32,
            history: self.history.clone(),
            usage: Some(self.usage),
            open_message: self.open_message.clone(),
            open_reasoning: self.open_reasoning.clone(),
            segment: self.segment,
            turn_text: self.turn_text.clone(),
            all_text: self.all_text.clone(),
            turn_tool_calls: self.turn_tool_calls.clone(),
            pending_tools: self.pending_tools.clone(),
            high_privilege_tools: self.high_privilege_tools.clone(),
            approval_always_tools: self.approval_always_tools.clone(),
            tainted: self.tainted,
            awaiting_approval: self.awaiting_approval.clone(),
            nested: Some(self.nested),
        }
    }

    /// The loop a state describes (the inverse of [`AgentLoop::to_state`]).
    pub fn from_state(state: AgentLoopState) -> Result<Self, WireError> {
        let phase =
            LoopPhase::try_from(state.phase).map_err(|_| WireError::UnknownPhase(state.phase))?;
        Ok(Self {
            ids: state.ids.ok_or(WireError::Missing("ids"))?,
            limits: state.limits.unwrap_or_default(),
            phase: phase.into(),
            history: state.history,
            usage: state.usage.unwrap_or_default(),
            open_message: state.open_message,
            open_reasoning: state.open_reasoning,
            segment: state.segment,
            turn_text: state.turn_text,
            all_text: state.all_text,
            turn_tool_calls: state.turn_tool_calls,
            pending_tools: state.pending_tools,
            high_privilege_tools: state.high_privilege_tools,
            approval_always_tools: state.approval_always_tools,
            tainted: state.tainted,
            awaiting_approval: state.awaiting_approval,
            nested: state.nested.unwrap_or_default(),
        })
    }
}
