use pa_proto::v1::{
    AgUiEvent, Custom, ReasoningEnd, ReasoningMessageContent, ReasoningMessageEnd,
    ReasoningMessageStart, ReasoningStart, RunError, RunFinished, RunStarted, StepFinished,
    StepStarted, TextMessageContent, TextMessageEnd, TextMessageStart, ToolCallArgs, ToolCallEnd,
    ToolCallResult, ToolCallStart, Usage, UsageLimits, ag_ui_event::Event,
};

// The loop's plain data (ids, messages, tool calls, a model request) are the workflow payload
// messages themselves (proto/personal_agent/workflow/v1/workflow.proto, ADR 0215): a durable
// workflow hands them to its activities as they are.
pub use pa_proto::workflow::v1::{ModelRequest, RunIds, ToolCall, TurnMessage};

mod wire;
pub use wire::WireError;

/// What the driver tells the loop happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Starts the run with the conversation so far (ending with the user's message). Each
    /// notice (e.g. a tool a gate removed) is reported right after RUN_STARTED as a step.
    Start {
        history: Vec<TurnMessage>,
        notices: Vec<String>,
        /// The run's high-privilege tools: once the run has ingested untrusted content, a call
        /// to one of them waits for a human's approval instead of running.
        high_privilege_tools: Vec<String>,
        /// Tools every call of which waits for a human's approval, tainted or not.
        approval_always_tools: Vec<String>,
        /// What the run starts from already holds untrusted content (a recalled memory or
        /// document marked so, a task written by a tainted parent): the run is tainted from its
        /// first step.
        tainted: bool,
    },
    /// A streamed piece of the model's text.
    ModelText(String),
    /// A streamed piece of the model's reasoning (shown apart from the reply).
    ModelReasoning(String),
    /// The model asked for a tool.
    ModelToolCall(ToolCall),
    /// The model's turn ended.
    ModelFinished { usage: Usage },
    /// The model call failed (after any fallback).
    ModelFailed { code: String, message: String },
    /// A tool call's result.
    ToolResult {
        tool_call_id: String,
        content: String,
        is_error: bool,
        /// The content came from outside (a web page, search results, an MCP server, the report
        /// of a sub-agent that had read such content, untrusted memories): from now on the run
        /// has ingested untrusted content.
        untrusted: bool,
        /// What a sub-agent run behind this call used (its own run records it): counted
        /// against this run's limits, not added to its usage.
        nested: Usage,
    },
    /// A human's answer to an approval request (see [`Action::AwaitApproval`]); no answer in
    /// time is a refusal too (`timed_out`).
    ApprovalDecision {
        tool_call_id: String,
        approved: bool,
        timed_out: bool,
    },
    /// The user (or shutdown) cancelled the run.
    Cancel { reason: String },
}

/// What the driver must do next, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Emit(AgUiEvent),
    CallModel(ModelRequest),
    CallTool(ToolCall),
    /// A high-privilege call after untrusted content: the driver records that an approval is
    /// pending, writes `event` (the CUSTOM `tool_call_approval` request) and waits for a human's
    /// decision (or its timeout), which it feeds back as [`Input::ApprovalDecision`]. The event
    /// travels with the action, not as an `Emit`, so no client can answer before the driver
    /// is ready to take the answer.
    AwaitApproval {
        call: ToolCall,
        event: AgUiEvent,
    },
    Finish(Outcome),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Succeeded {
        final_text: String,
        usage: Usage,
    },
    Failed {
        code: String,
        message: String,
        usage: Usage,
    },
    Cancelled {
        partial_text: String,
        usage: Usage,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoopError {
    #[error("input {input} is not valid in state {state}")]
    UnexpectedInput {
        input: &'static str,
        state: &'static str,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    NotStarted,
    AwaitingModel,
    AwaitingTools,
    Done,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::NotStarted => "not_started",
            Phase::AwaitingModel => "awaiting_model",
            Phase::AwaitingTools => "awaiting_tools",
            Phase::Done => "done",
        }
    }
}

/// The state machine. See the crate docs.
#[derive(Clone, Debug)]
pub struct AgentLoop {
    ids: RunIds,
    limits: UsageLimits,
    phase: Phase,
    history: Vec<TurnMessage>,
    usage: Usage,
    /// The open assistant text message of the current model turn, if any.
    open_message: Option<String>,
    /// The open reasoning message of the current model turn, if any.
    open_reasoning: Option<String>,
    segment: u32,
    turn_text: String,
    all_text: String,
    turn_tool_calls: Vec<ToolCall>,
    pending_tools: Vec<String>,
    /// Names of the tools that need approval once the run is `tainted`.
    high_privilege_tools: Vec<String>,
    /// Names of the tools that always need approval.
    approval_always_tools: Vec<String>,
    /// The run has ingested untrusted content (a tool result marked so, or a start marked so).
    /// Never cleared: taint follows the data for the rest of the run.
    tainted: bool,
    /// Calls waiting for a human's decision (their ids are in `pending_tools` too).
    awaiting_approval: Vec<ToolCall>,
    /// What this run's sub-agent runs used: it counts against the limits.
    nested: Usage,
}

impl AgentLoop {
    pub fn new(ids: RunIds, limits: UsageLimits) -> Self {
        Self {
            ids,
            limits,
            phase: Phase::NotStarted,
            history: Vec::new(),
            usage: Usage::default(),
            open_message: None,
            open_reasoning: None,
            segment: 0,
            turn_text: String::new(),
            all_text: String::new(),
            turn_tool_calls: Vec::new(),
            pending_tools: Vec::new(),
            high_privilege_tools: Vec::new(),
            approval_always_tools: Vec::new(),
            tainted: false,
            awaiting_approval: Vec::new(),
            nested: Usage::default(),
        }
    }

    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// This run's usage with its sub-agent runs' added: what the limits are checked against,
    /// and what a new sub-agent run is told has been spent.
    pub fn usage_with_nested(&self) -> Usage {
        let mut total = self.usage;
        add_usage(&mut total, &self.nested);
        total
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether the run has ingested untrusted content: its drivers record it on the run (a
    /// parent reading a sub-agent's report, the Curator reading its reply, a tool writing a
    /// memory all carry it on).
    pub fn is_tainted(&self) -> bool {
        self.tainted
    }

    pub fn step(&mut self, input: Input) -> Result<Vec<Action>, LoopError> {
        let mut actions = Vec::new();
        match (self.phase, input) {
            (
                Phase::NotStarted,
                Input::Start {
                    history,
                    notices,
                    high_privilege_tools,
                    approval_always_tools,
                    tainted,
                },
            ) => {
                self.history = history;
                self.high_privilege_tools = high_privilege_tools;
                self.approval_always_tools = approval_always_tools;
                self.tainted |= tainted;
                actions.push(self.emit(Event::RunStarted(RunStarted {
                    thread_id: self.ids.thread_id.clone(),
                    run_id: self.ids.run_id.clone(),
                    parent_run_id: self.ids.parent_run_id.clone(),
                    timestamp: None,
                })));
                for step_name in notices {
                    actions.push(self.emit(Event::StepStarted(StepStarted {
                        step_name: step_name.clone(),
                        timestamp: None,
                    })));
                    actions.push(self.emit(Event::StepFinished(StepFinished {
                        step_name,
                        timestamp: None,
                    })));
                }
                self.dispatch_model(&mut actions);
            }
            (Phase::AwaitingModel, Input::ModelReasoning(delta)) => {
                if delta.is_empty() {
                    return Ok(actions);
                }
                let message_id = match &self.open_reasoning {
                    Some(id) => id.clone(),
                    None => {
                        let id = format!("{}-reasoning", self.segment_message_id());
                        actions.push(self.emit(Event::ReasoningStart(ReasoningStart {
                            message_id: id.clone(),
                            timestamp: None,
                        })));
                        actions.push(self.emit(Event::ReasoningMessageStart(
                            ReasoningMessageStart {
                                message_id: id.clone(),
                                role: "assistant".into(),
                                timestamp: None,
                            },
                        )));
                        self.open_reasoning = Some(id.clone());
                        id
                    }
                };
                actions.push(
                    self.emit(Event::ReasoningMessageContent(ReasoningMessageContent {
                        message_id,
                        delta,
                        timestamp: None,
                    })),
                );
            }
            (Phase::AwaitingModel, Input::ModelText(delta)) => {
                if delta.is_empty() {
                    return Ok(actions);
                }
                self.close_reasoning(&mut actions);
                let message_id = match &self.open_message {
                    Some(id) => id.clone(),
                    None => {
                        let id = self.segment_message_id();
                        actions.push(self.emit(Event::TextMessageStart(TextMessageStart {
                            message_id: id.clone(),
                            role: "assistant".into(),
                            timestamp: None,
                        })));
                        self.open_message = Some(id.clone());
                        id
                    }
                };
                self.turn_text.push_str(&delta);
                actions.push(self.emit(Event::TextMessageContent(TextMessageContent {
                    message_id,
                    delta,
                    timestamp: None,
                })));
            }
            (Phase::AwaitingModel, Input::ModelToolCall(call)) => {
                self.turn_tool_calls.push(call);
            }
            (Phase::AwaitingModel, Input::ModelFinished { usage }) => {
                self.add_usage(&usage);
                self.close_message(&mut actions);
                let text = std::mem::take(&mut self.turn_text);
                let calls = std::mem::take(&mut self.turn_tool_calls);
                if !self.all_text.is_empty() && !text.is_empty() {
                    self.all_text.push('\n');
                }
                self.all_text.push_str(&text);
                let mut assistant = TurnMessage::new("assistant", text);
                assistant.tool_calls = calls.clone();
                self.history.push(assistant);
                if calls.is_empty() {
                    self.finish_succeeded(&mut actions);
                } else {
                    self.dispatch_tools(calls, &mut actions);
                }
            }
            (Phase::AwaitingModel, Input::ModelFailed { code, message }) => {
                self.close_message(&mut actions);
                self.finish_failed(code, message, &mut actions);
            }
            (
                Phase::AwaitingTools,
                Input::ToolResult {
                    tool_call_id,
                    content,
                    is_error,
                    untrusted,
                    nested,
                },
            ) => {
                let waiting = self.awaiting_approval.iter().any(|c| c.id == tool_call_id);
                if waiting || !self.pending_tools.contains(&tool_call_id) {
                    return Err(LoopError::UnexpectedInput {
                        input: "tool_result(unknown id)",
                        state: self.phase.name(),
                    });
                }
                if untrusted {
                    self.tainted = true;
                }
                add_usage(&mut self.nested, &nested);
                let content = if is_error {
                    format!("error: {content}")
                } else {
                    content
                };
                self.record_result(tool_call_id, content, &mut actions);
            }
            (
                Phase::AwaitingTools,
                Input::ApprovalDecision {
                    tool_call_id,
                    approved,
                    timed_out,
                },
            ) => {
                let Some(pos) = self
                    .awaiting_approval
                    .iter()
                    .position(|c| c.id == tool_call_id)
                else {
                    return Err(LoopError::UnexpectedInput {
                        input: "approval_decision(unknown id)",
                        state: self.phase.name(),
                    });
                };
                let call = self.awaiting_approval.remove(pos);
                let value = serde_json::json!({
                    "toolCallId": call.id, "approved": approved, "timedOut": timed_out,
                })
                .to_string();
                actions.push(self.emit(Event::Custom(Custom {
                    name: "tool_call_decision".into(),
                    value_json: value,
                    timestamp: None,
                })));
                if approved {
                    actions.push(Action::CallTool(call));
                } else {
                    // The model learns why the call did not happen and may carry on without it.
                    let why = if timed_out {
                        "nobody approved it in time"
                    } else {
                        "the user denied it"
                    };
                    let content = format!(
                        "A human refused this tool call: {} was not run ({why}). It needed \
                         approval because this run has read untrusted content.",
                        call.name
                    );
                    self.record_result(call.id, content, &mut actions);
                }
            }
            (Phase::AwaitingModel | Phase::AwaitingTools, Input::Cancel { reason }) => {
                self.close_message(&mut actions);
                self.all_text.push_str(&std::mem::take(&mut self.turn_text));
                actions.push(self.emit(Event::RunError(pa_proto::v1::RunError {
                    message: reason,
                    code: Some("cancelled".into()),
                    timestamp: None,
                })));
                self.phase = Phase::Done;
                actions.push(Action::Finish(Outcome::Cancelled {
                    partial_text: self.all_text.clone(),
                    usage: self.usage,
                }));
            }
            (Phase::NotStarted, Input::Cancel { reason }) => {
                self.finish_failed("cancelled".into(), reason, &mut actions);
            }
            (phase, input) => {
                return Err(LoopError::UnexpectedInput {
                    input: input_name(&input),
                    state: phase.name(),
                });
            }
        }
        Ok(actions)
    }

    fn emit(&self, event: Event) -> Action {
        Action::Emit(AgUiEvent::new(event))
    }

    fn segment_message_id(&self) -> String {
        if self.segment == 0 {
            self.ids.assistant_message_id.clone()
        } else {
            format!("{}-{}", self.ids.assistant_message_id, self.segment)
        }
    }

    fn add_usage(&mut self, usage: &Usage) {
        self.usage.input_tokens += usage.input_tokens;
        self.usage.output_tokens += usage.output_tokens;
        self.usage.total_tokens += usage.total_tokens;
        self.usage.cost_micros += usage.cost_micros;
        self.usage.cached_input_tokens += usage.cached_input_tokens;
    }

    fn close_reasoning(&mut self, actions: &mut Vec<Action>) {
        if let Some(message_id) = self.open_reasoning.take() {
            actions.push(self.emit(Event::ReasoningMessageEnd(ReasoningMessageEnd {
                message_id: message_id.clone(),
                timestamp: None,
            })));
            actions.push(self.emit(Event::ReasoningEnd(ReasoningEnd {
                message_id,
                timestamp: None,
            })));
        }
    }

    fn close_message(&mut self, actions: &mut Vec<Action>) {
        self.close_reasoning(actions);
        if let Some(message_id) = self.open_message.take() {
            actions.push(self.emit(Event::TextMessageEnd(TextMessageEnd {
                message_id,
                timestamp: None,
            })));
        }
    }

    /// Usage limits are checked here, at the dispatch point, before the request is made.
    fn dispatch_model(&mut self, actions: &mut Vec<Action>) {
        let spent = self.usage_with_nested();
        let max = self.limits.max_model_requests;
        if max > 0 && spent.model_requests >= max {
            let message = format!("usage limit: at most {max} model requests per run");
            self.finish_failed("usage_limit".into(), message, actions);
            return;
        }
        let max_tokens = self.limits.max_total_tokens;
        if max_tokens > 0 && spent.total_tokens >= max_tokens {
            let message = format!("usage limit: at most {max_tokens} tokens per run");
            self.finish_failed("usage_limit".into(), message, actions);
            return;
        }
        self.usage.model_requests += 1;
        self.phase = Phase::AwaitingModel;
        actions.push(Action::CallModel(ModelRequest {
            messages: self.history.clone(),
        }));
    }

    fn dispatch_tools(&mut self, calls: Vec<ToolCall>, actions: &mut Vec<Action>) {
        let max = self.limits.max_tool_calls;
        if max > 0 && self.usage_with_nested().tool_calls + calls.len() as u32 > max {
            let message = format!("usage limit: at most {max} tool calls per run");
            self.finish_failed("usage_limit".into(), message, actions);
            return;
        }
        self.phase = Phase::AwaitingTools;
        let parent = self.segment_message_id();
        for call in &calls {
            actions.push(self.emit(Event::ToolCallStart(ToolCallStart {
                tool_call_id: call.id.clone(),
                tool_call_name: call.name.clone(),
                parent_message_id: Some(parent.clone()),
                timestamp: None,
            })));
            actions.push(self.emit(Event::ToolCallArgs(ToolCallArgs {
                tool_call_id: call.id.clone(),
                delta: call.arguments_json.clone(),
                timestamp: None,
            })));
            actions.push(self.emit(Event::ToolCallEnd(ToolCallEnd {
                tool_call_id: call.id.clone(),
                timestamp: None,
            })));
        }
        for call in calls {
            self.usage.tool_calls += 1;
            self.pending_tools.push(call.id.clone());
            if self.needs_approval(&call) {
                // `toolCallName` as in TOOL_CALL_START (what the web app and the TUI read);
                // `args` is the arguments' JSON text, as in TOOL_CALL_ARGS.
                let value = serde_json::json!({
                    "toolCallId": call.id, "toolCallName": call.name, "args": call.arguments_json,
                })
                .to_string();
                let event = AgUiEvent::new(Event::Custom(Custom {
                    name: "tool_call_approval".into(),
                    value_json: value,
                    timestamp: None,
                }));
                self.awaiting_approval.push(call.clone());
                actions.push(Action::AwaitApproval { call, event });
            } else {
                actions.push(Action::CallTool(call));
            }
        }
    }

    /// A call's result: reported, added to the history; the next model turn once the batch is
    /// complete.
    fn record_result(&mut self, tool_call_id: String, content: String, actions: &mut Vec<Action>) {
        self.pending_tools.retain(|id| *id != tool_call_id);
        let result_message_id = format!("{}-result-{tool_call_id}", self.ids.run_id);
        actions.push(self.emit(Event::ToolCallResult(ToolCallResult {
            message_id: result_message_id,
            tool_call_id: tool_call_id.clone(),
            content: content.clone(),
            role: Some("tool".into()),
            timestamp: None,
        })));
        let mut tool_message = TurnMessage::new("tool", content);
        tool_message.tool_call_id = Some(tool_call_id);
        self.history.push(tool_message);
        if self.pending_tools.is_empty() {
            self.segment += 1;
            self.dispatch_model(actions);
        }
    }

    /// The untrusted-content gate: after the run has read untrusted content, a high-privilege
    /// tool could be acting on instructions planted in it, so a human decides.
    fn needs_approval(&self, call: &ToolCall) -> bool {
        self.approval_always_tools.contains(&call.name)
            || (self.tainted && self.high_privilege_tools.contains(&call.name))
    }

    fn finish_succeeded(&mut self, actions: &mut Vec<Action>) {
        actions.push(self.emit(Event::RunFinished(RunFinished {
            thread_id: self.ids.thread_id.clone(),
            run_id: self.ids.run_id.clone(),
            result_json: None,
            timestamp: None,
        })));
        self.phase = Phase::Done;
        actions.push(Action::Finish(Outcome::Succeeded {
            final_text: self.all_text.clone(),
            usage: self.usage,
        }));
    }

    fn finish_failed(&mut self, code: String, message: String, actions: &mut Vec<Action>) {
        actions.push(self.emit(Event::RunError(RunError {
            message: message.clone(),
            code: Some(code.clone()),
            timestamp: None,
        })));
        self.phase = Phase::Done;
        actions.push(Action::Finish(Outcome::Failed {
            code,
            message,
            usage: self.usage,
        }));
    }
}

/// Adds every counter of `more` to `total`.
pub fn add_usage(total: &mut Usage, more: &Usage) {
    total.input_tokens += more.input_tokens;
    total.output_tokens += more.output_tokens;
    total.total_tokens += more.total_tokens;
    total.model_requests += more.model_requests;
    total.tool_calls += more.tool_calls;
    total.cost_micros += more.cost_micros;
    total.cached_input_tokens += more.cached_input_tokens;
}

fn input_name(input: &Input) -> &'static str {
    match input {
        Input::Start { .. } => "start",
        Input::ModelText(_) => "model_text",
        Input::ModelReasoning(_) => "model_reasoning",
        Input::ModelToolCall(_) => "model_tool_call",
        Input::ModelFinished { .. } => "model_finished",
        Input::ModelFailed { .. } => "model_failed",
        Input::ToolResult { .. } => "tool_result",
        Input::ApprovalDecision { .. } => "approval_decision",
        Input::Cancel { .. } => "cancel",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> RunIds {
        RunIds {
            thread_id: "chat-1".into(),
            run_id: "run-1".into(),
            parent_run_id: None,
            assistant_message_id: "msg-1".into(),
        }
    }

    fn types(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Emit(e) => e.type_name().to_string(),
                Action::CallModel(_) => "call_model".into(),
                Action::CallTool(c) => format!("call_tool:{}", c.name),
                Action::AwaitApproval { call, .. } => format!("await_approval:{}", call.name),
                Action::Finish(_) => "finish".into(),
            })
            .collect()
    }

    fn start(agent: &mut AgentLoop) -> Vec<Action> {
        agent
            .step(Input::Start {
                history: vec![TurnMessage::new("user", "hi")],
                notices: vec![],
                high_privilege_tools: vec![],
                approval_always_tools: vec![],
                tainted: false,
            })
            .unwrap()
    }

    #[test]
    fn notices_are_reported_as_steps_right_after_run_started() {
        let mut agent = AgentLoop::new(ids(), UsageLimits::default());
        let actions = agent
            .step(Input::Start {
                history: vec![TurnMessage::new("user", "hi")],
                notices: vec!["tool_gate: removed web_fetch".into()],
                high_privilege_tools: vec![],
                approval_always_tools: vec![],
                tainted: false,
            })
            .unwrap();
        assert_eq!(
            types(&actions)[..3],
            ["RUN_STARTED", "STEP_STARTED", "STEP_FINISHED"]
        );
    }

    #[test]
    fn a_plain_turn_streams_text_and_finishes() {
        let mut agent = AgentLoop::new(ids(), UsageLimits::default());
        assert_eq!(types(&start(&mut agent)), ["RUN_STARTED", "call_model"]);
        assert_eq!(
            types(&agent.step(Input::ModelText("Hel".into())).unwrap()),
            ["TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT"]
        );
        assert_eq!(
            types(&agent.step(Input::ModelText("lo".into())).unwrap()),
            ["TEXT_MESSAGE_CONTENT"]
        );
        let usage = Usage {
            input_tokens: 3,
            output_tokens: 2,
            total_tokens: 5,
            ..Default::default()
        };
        let done = agent.step(Input::ModelFinished { usage }).unwrap();
        assert_eq!(types(&done), ["TEXT_MESSAGE_END", "RUN_FINISHED", "finish"]);
        match done.last() {
            Some(Action::Finish(Outcome::Succeeded { final_text, usage })) => {
                assert_eq!(final_text, "Hello");
                assert_eq!(usage.total_tokens, 5);
                assert_eq!(usage.model_requests, 1);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(agent.is_done());
        assert!(agent.step(Input::ModelText("late".into())).is_err());
    }

    #[test]
    fn tool_calls_round_trip_to_a_second_model_turn() {
        let mut agent = AgentLoop::new(ids(), UsageLimits::default());
        start(&mut agent);
        let call = ToolCall {
            id: "tc1".into(),
            name: "clock".into(),
            arguments_json: "{}".into(),
        };
        assert!(agent.step(Input::ModelToolCall(call)).unwrap().is_empty());
        let actions = agent
            .step(Input::ModelFinished {
                usage: Usage::default(),
            })
            .unwrap();
        assert_eq!(
            types(&actions),
            [
                "TOOL_CALL_START",
                "TOOL_CALL_ARGS",
                "TOOL_CALL_END",
                "call_tool:clock"
            ]
        );
        let actions = agent
            .step(Input::ToolResult {
                tool_call_id: "tc1".into(),
                content: "noon".into(),
                is_error: false,
                untrusted: false,
                nested: Default::default(),
            })
            .unwrap();
        assert_eq!(types(&actions), ["TOOL_CALL_RESULT", "call_model"]);
        let Some(Action::CallModel(request)) = actions.last() else {
            panic!()
        };
        let roles: Vec<_> = request.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant", "tool"]);
        // The second segment gets its own message id.
        let actions = agent.step(Input::ModelText("It is noon".into())).unwrap();
        let Action::Emit(start) = &actions[0] else {
            panic!()
        };
        assert!(
            start
                .to_json()
                .unwrap()
                .contains("\"messageId\":\"msg-1-1\"")
        );
    }

    #[test]
    fn limits_stop_the_run_at_the_dispatch_point() {
        let limits = UsageLimits {
            max_model_requests: 1,
            ..Default::default()
        };
        let mut agent = AgentLoop::new(ids(), limits);
        start(&mut agent);
        let call = ToolCall {
            id: "tc1".into(),
            name: "clock".into(),
            arguments_json: "{}".into(),
        };
        agent.step(Input::ModelToolCall(call)).unwrap();
        agent
            .step(Input::ModelFinished {
                usage: Usage::default(),
            })
            .unwrap();
        let actions = agent
            .step(Input::ToolResult {
                tool_call_id: "tc1".into(),
                content: "x".into(),
                is_error: false,
                untrusted: false,
                nested: Default::default(),
            })
            .unwrap();
        assert_eq!(types(&actions), ["TOOL_CALL_RESULT", "RUN_ERROR", "finish"]);
        assert!(
            matches!(actions.last(), Some(Action::Finish(Outcome::Failed { code, .. })) if code == "usage_limit")
        );
    }

    #[test]
    fn a_sub_agents_tool_calls_count_against_the_parents_limit_but_not_its_usage() {
        let limits = UsageLimits {
            max_tool_calls: 3,
            ..Default::default()
        };
        let mut agent = AgentLoop::new(ids(), limits);
        start(&mut agent);
        let call = |id: &str| ToolCall {
            id: id.into(),
            name: "delegate".into(),
            arguments_json: "{}".into(),
        };
        agent.step(Input::ModelToolCall(call("tc1"))).unwrap();
        agent
            .step(Input::ModelFinished {
                usage: Usage::default(),
            })
            .unwrap();
        let nested = Usage {
            tool_calls: 2,
            model_requests: 2,
            total_tokens: 40,
            ..Default::default()
        };
        agent
            .step(Input::ToolResult {
                tool_call_id: "tc1".into(),
                content: "done".into(),
                is_error: false,
                untrusted: false,
                nested,
            })
            .unwrap();
        assert_eq!(agent.usage().tool_calls, 1);
        assert_eq!(agent.usage().total_tokens, 0);
        assert_eq!(agent.usage_with_nested().tool_calls, 3);
        assert_eq!(agent.usage_with_nested().model_requests, 4);
        // 1 own + 2 nested = 3: one more call is over the limit.
        agent.step(Input::ModelToolCall(call("tc2"))).unwrap();
        let actions = agent
            .step(Input::ModelFinished {
                usage: Usage::default(),
            })
            .unwrap();
        assert!(
            matches!(actions.last(), Some(Action::Finish(Outcome::Failed { code, message, .. }))
                if code == "usage_limit" && message.contains("tool calls"))
        );
    }

    #[test]
    fn cancel_closes_the_open_message_and_reports() {
        let mut agent = AgentLoop::new(ids(), UsageLimits::default());
        start(&mut agent);
        agent.step(Input::ModelText("par".into())).unwrap();
        let actions = agent
            .step(Input::Cancel {
                reason: "user cancelled".into(),
            })
            .unwrap();
        assert_eq!(types(&actions), ["TEXT_MESSAGE_END", "RUN_ERROR", "finish"]);
        assert!(
            matches!(actions.last(), Some(Action::Finish(Outcome::Cancelled { partial_text, .. })) if partial_text == "par")
        );
    }

    #[test]
    fn model_failure_is_a_run_error() {
        let mut agent = AgentLoop::new(ids(), UsageLimits::default());
        start(&mut agent);
        let actions = agent
            .step(Input::ModelFailed {
                code: "unavailable".into(),
                message: "provider down".into(),
            })
            .unwrap();
        assert_eq!(types(&actions), ["RUN_ERROR", "finish"]);
    }

    #[test]
    fn reasoning_streams_apart_and_closes_before_the_reply() {
        let mut agent = AgentLoop::new(ids(), UsageLimits::default());
        start(&mut agent);
        assert_eq!(
            types(&agent.step(Input::ModelReasoning("think".into())).unwrap()),
            [
                "REASONING_START",
                "REASONING_MESSAGE_START",
                "REASONING_MESSAGE_CONTENT"
            ]
        );
        assert_eq!(
            types(&agent.step(Input::ModelText("answer".into())).unwrap()),
            [
                "REASONING_MESSAGE_END",
                "REASONING_END",
                "TEXT_MESSAGE_START",
                "TEXT_MESSAGE_CONTENT"
            ]
        );
        let done = agent
            .step(Input::ModelFinished {
                usage: Usage::default(),
            })
            .unwrap();
        assert!(
            matches!(done.last(), Some(Action::Finish(Outcome::Succeeded { final_text, .. })) if final_text == "answer")
        );
    }

    #[test]
    fn same_inputs_same_actions() {
        let run = || {
            let mut agent = AgentLoop::new(ids(), UsageLimits::default());
            let mut all = start(&mut agent);
            all.extend(agent.step(Input::ModelText("a".into())).unwrap());
            all.extend(
                agent
                    .step(Input::ModelFinished {
                        usage: Usage::default(),
                    })
                    .unwrap(),
            );
            all
        };
        assert_eq!(run(), run());
    }

    fn call(id: &str, name: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments_json: r#"{"cmd":"rm -rf /"}"#.into(),
        }
    }

    /// A run with `shell` as its high-privilege tool, after a model turn asking for `calls`.
    fn gated_run(calls: &[ToolCall]) -> (AgentLoop, Vec<Action>) {
        let mut agent = AgentLoop::new(ids(), UsageLimits::default());
        agent
            .step(Input::Start {
                history: vec![TurnMessage::new("user", "hi")],
                notices: vec![],
                high_privilege_tools: vec!["shell".into()],
                approval_always_tools: vec![],
                tainted: false,
            })
            .unwrap();
        for c in calls {
            agent.step(Input::ModelToolCall(c.clone())).unwrap();
        }
        let actions = agent
            .step(Input::ModelFinished {
                usage: Usage::default(),
            })
            .unwrap();
        (agent, actions)
    }

    fn result(id: &str, untrusted: bool) -> Input {
        Input::ToolResult {
            tool_call_id: id.into(),
            content: "page text".into(),
            is_error: false,
            untrusted,
            nested: Default::default(),
        }
    }

    /// fetch (untrusted) → the model asks for shell → it waits for approval.
    fn tainted_then_shell() -> (AgentLoop, Vec<Action>) {
        let (mut agent, _) = gated_run(&[call("f1", "web_fetch")]);
        agent.step(result("f1", true)).unwrap();
        agent
            .step(Input::ModelToolCall(call("s1", "shell")))
            .unwrap();
        let actions = agent
            .step(Input::ModelFinished {
                usage: Usage::default(),
            })
            .unwrap();
        (agent, actions)
    }

    #[test]
    fn an_always_approve_tool_waits_for_approval_in_an_untainted_run() {
        let mut agent = AgentLoop::new(ids(), UsageLimits::default());
        agent
            .step(Input::Start {
                history: vec![TurnMessage::new("user", "hi")],
                notices: vec![],
                high_privilege_tools: vec!["shell".into()],
                approval_always_tools: vec!["read_tab".into()],
                tainted: false,
            })
            .unwrap();
        agent
            .step(Input::ModelToolCall(call("t1", "read_tab")))
            .unwrap();
        let actions = agent
            .step(Input::ModelFinished {
                usage: Usage::default(),
            })
            .unwrap();
        assert!(!agent.is_tainted());
        assert_eq!(types(&actions).last().unwrap(), "await_approval:read_tab");
        // A high-privilege tool of the same untainted run still runs freely.
        let (_, actions) = gated_run(&[call("s0", "shell")]);
        assert_eq!(types(&actions).last().unwrap(), "call_tool:shell");
    }

    #[test]
    fn high_privilege_tools_run_freely_before_untrusted_content() {
        let (_, actions) = gated_run(&[call("s0", "shell")]);
        assert_eq!(types(&actions).last().unwrap(), "call_tool:shell");
    }

    #[test]
    fn trusted_results_do_not_taint_the_run() {
        let (mut agent, _) = gated_run(&[call("c1", "clock")]);
        agent.step(result("c1", false)).unwrap();
        agent
            .step(Input::ModelToolCall(call("s1", "shell")))
            .unwrap();
        let actions = agent
            .step(Input::ModelFinished {
                usage: Usage::default(),
            })
            .unwrap();
        assert_eq!(types(&actions).last().unwrap(), "call_tool:shell");
    }

    #[test]
    fn after_untrusted_content_a_high_privilege_call_awaits_approval() {
        let (_, actions) = tainted_then_shell();
        assert_eq!(
            types(&actions),
            [
                "TOOL_CALL_START",
                "TOOL_CALL_ARGS",
                "TOOL_CALL_END",
                "await_approval:shell"
            ]
        );
        let Some(Action::AwaitApproval { event, .. }) = actions.last() else {
            panic!()
        };
        let json: serde_json::Value = serde_json::from_str(&event.to_json().unwrap()).unwrap();
        assert_eq!(json["type"], "CUSTOM");
        assert_eq!(json["name"], "tool_call_approval");
        assert_eq!(json["value"]["toolCallId"], "s1");
        assert_eq!(json["value"]["toolCallName"], "shell");
        assert_eq!(json["value"]["args"], r#"{"cmd":"rm -rf /"}"#);
    }

    #[test]
    fn approval_runs_the_call() {
        let (mut agent, _) = tainted_then_shell();
        // Its result cannot arrive before the decision.
        assert!(agent.step(result("s1", false)).is_err());
        let actions = agent
            .step(Input::ApprovalDecision {
                tool_call_id: "s1".into(),
                approved: true,
                timed_out: false,
            })
            .unwrap();
        assert_eq!(types(&actions), ["CUSTOM", "call_tool:shell"]);
        let actions = agent.step(result("s1", false)).unwrap();
        assert_eq!(types(&actions), ["TOOL_CALL_RESULT", "call_model"]);
    }

    #[test]
    fn denial_or_timeout_is_a_refusal_the_model_reads() {
        for timed_out in [false, true] {
            let (mut agent, _) = tainted_then_shell();
            let actions = agent
                .step(Input::ApprovalDecision {
                    tool_call_id: "s1".into(),
                    approved: false,
                    timed_out,
                })
                .unwrap();
            assert_eq!(
                types(&actions),
                ["CUSTOM", "TOOL_CALL_RESULT", "call_model"]
            );
            let Some(Action::CallModel(request)) = actions.last() else {
                panic!()
            };
            let last = request.messages.last().unwrap();
            assert_eq!(last.role, "tool");
            assert_eq!(last.tool_call_id.as_deref(), Some("s1"));
            assert!(last.content.contains("A human refused"), "{}", last.content);
            assert_eq!(last.content.contains("in time"), timed_out);
            // A decision is taken once.
            assert!(
                agent
                    .step(Input::ApprovalDecision {
                        tool_call_id: "s1".into(),
                        approved: true,
                        timed_out: false,
                    })
                    .is_err()
            );
        }
    }

    #[test]
    fn a_run_waiting_for_approval_can_be_cancelled() {
        let (mut agent, _) = tainted_then_shell();
        let actions = agent
            .step(Input::Cancel {
                reason: "user cancelled".into(),
            })
            .unwrap();
        assert_eq!(types(&actions), ["RUN_ERROR", "finish"]);
    }

    #[test]
    fn a_batch_waits_for_every_call_including_the_approved_one() {
        let (mut agent, _) = gated_run(&[call("f1", "web_fetch")]);
        agent.step(result("f1", true)).unwrap();
        agent
            .step(Input::ModelToolCall(call("c1", "clock")))
            .unwrap();
        agent
            .step(Input::ModelToolCall(call("s1", "shell")))
            .unwrap();
        let actions = agent
            .step(Input::ModelFinished {
                usage: Usage::default(),
            })
            .unwrap();
        assert_eq!(
            types(&actions)[6..],
            ["call_tool:clock", "await_approval:shell"]
        );
        assert_eq!(
            types(&agent.step(result("c1", false)).unwrap()),
            ["TOOL_CALL_RESULT"]
        );
        let actions = agent
            .step(Input::ApprovalDecision {
                tool_call_id: "s1".into(),
                approved: false,
                timed_out: false,
            })
            .unwrap();
        assert_eq!(
            types(&actions),
            ["CUSTOM", "TOOL_CALL_RESULT", "call_model"]
        );
    }

    #[test]
    fn a_loop_serialized_before_the_gate_existed_still_loads() {
        let agent = AgentLoop::new(ids(), UsageLimits::default());
        let mut json: serde_json::Value = serde_json::to_value(agent.to_state()).unwrap();
        for field in ["high_privilege_tools", "tainted", "awaiting_approval"] {
            json.as_object_mut().unwrap().remove(field);
        }
        let loaded = AgentLoop::from_state(serde_json::from_value(json).unwrap()).unwrap();
        assert!(!loaded.tainted);
    }
    /// A run whose start is marked tainted, with `shell` and `web_fetch` (egress) gated.
    fn tainted_start() -> AgentLoop {
        let mut agent = AgentLoop::new(ids(), UsageLimits::default());
        agent
            .step(Input::Start {
                history: vec![TurnMessage::new("user", "hi")],
                notices: vec![],
                high_privilege_tools: vec!["shell".into(), "web_fetch".into()],
                approval_always_tools: vec![],
                tainted: true,
            })
            .unwrap();
        agent
    }

    fn ask(agent: &mut AgentLoop, calls: &[ToolCall]) -> Vec<Action> {
        for c in calls {
            agent.step(Input::ModelToolCall(c.clone())).unwrap();
        }
        agent
            .step(Input::ModelFinished {
                usage: Usage::default(),
            })
            .unwrap()
    }

    #[test]
    fn a_tainted_start_holds_high_privilege_calls_from_the_first_turn() {
        let mut agent = tainted_start();
        assert!(agent.is_tainted());
        let actions = ask(&mut agent, &[call("w1", "web_fetch"), call("c1", "clock")]);
        assert_eq!(
            types(&actions)[6..],
            ["await_approval:web_fetch", "call_tool:clock"]
        );
    }

    #[test]
    fn an_untrusted_sub_agent_report_taints_the_parent() {
        let (mut agent, _) = gated_run(&[call("e1", "explore")]);
        assert!(!agent.is_tainted());
        // The sub-run read a hostile page: its report comes back marked untrusted.
        agent.step(result("e1", true)).unwrap();
        assert!(agent.is_tainted());
        let actions = ask(&mut agent, &[call("s1", "shell")]);
        assert_eq!(types(&actions).last().unwrap(), "await_approval:shell");
    }

    #[test]
    fn taint_is_never_cleared_by_later_trusted_content() {
        let (mut agent, _) = gated_run(&[call("f1", "web_fetch")]);
        agent.step(result("f1", true)).unwrap();
        ask(&mut agent, &[call("c1", "clock")]);
        agent.step(result("c1", false)).unwrap();
        assert!(agent.is_tainted());
        let actions = ask(&mut agent, &[call("s1", "shell")]);
        assert_eq!(types(&actions).last().unwrap(), "await_approval:shell");
    }

    #[test]
    fn an_untainted_start_stays_untainted_and_taint_survives_a_replay() {
        let mut agent = AgentLoop::new(ids(), UsageLimits::default());
        start(&mut agent);
        assert!(!agent.is_tainted());
        let agent = tainted_start();
        let json = serde_json::to_string(&agent.to_state()).unwrap();
        let loaded = AgentLoop::from_state(serde_json::from_str(&json).unwrap()).unwrap();
        assert!(loaded.is_tainted());
        // A start recorded before the field existed is an untainted start.
        let old = serde_json::json!({"Start": {"history": [], "notices": []}});
        let input = Input::try_from(
            serde_json::from_value::<pa_proto::workflow::v1::LoopInput>(old).unwrap(),
        )
        .unwrap();
        assert!(matches!(input, Input::Start { tainted: false, .. }));
    }
}
