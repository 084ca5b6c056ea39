//! The inline driver: runs pa-agent's state machine in a task of this process. Model turns go to
//! svc-models.StreamChat, tool calls to svc-tools.ExecuteTool, and every AG-UI event goes to the
//! run's Redis stream through the shared [`EventSink`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use pa_agent::{Action, AgentLoop, Input, ModelRequest, Outcome, RunIds, ToolCall, TurnMessage};
use pa_kit::error::ErrorCodeExt;
use pa_kit::run_events::EventSink;
use pa_kit::{InternalAuth, PaError, Shutdown};
use pa_proto::v1::model_service_client::ModelServiceClient;
use pa_proto::v1::tool_service_client::ToolServiceClient;
use pa_proto::v1::{
    AgUiEvent, ChatToolCall, ChatTurnMessage, ExecuteToolRequest, Identity, ModelAttempt, RunError,
    RunSpec, RunStatus, StreamChatRequest, ag_ui_event::Event, stream_chat_chunk::Chunk,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::store::{RunEnd, RunStore};

/// Starts inline runs and cancels them. Cheap to clone.
#[derive(Clone)]
pub struct InlineDriver {
    pub(crate) store: RunStore,
    pub(crate) models: ModelServiceClient<Channel>,
    pub(crate) tools: ToolServiceClient<Channel>,
    pub(crate) auth: InternalAuth,
    pub(crate) sink: EventSink,
    /// Daily token counters (quotas).
    pub(crate) redis: deadpool_redis::Pool,
    pub(crate) shutdown: Shutdown,
    pub(crate) history_messages: u32,
    /// Cancellation handles of the runs this process drives.
    pub(crate) active: Arc<Mutex<HashMap<String, CancellationToken>>>,
}

impl InlineDriver {
    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        // A poisoned map only means a panic elsewhere; the map itself is still consistent.
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `spec` in a tracked task (shutdown drains it).
    pub fn start(&self, spec: RunSpec) {
        let token = CancellationToken::new();
        self.active().insert(spec.run_id.clone(), token.clone());
        let driver = self.clone();
        self.shutdown.spawn_tracked(async move {
            let run_id = spec.run_id.clone();
            if let Err(err) = driver.drive(&spec, &token).await {
                driver.fail(&spec, &err).await;
            }
            driver.active().remove(&run_id);
        });
    }

    /// Asks a running run to stop; false when this process is not running it.
    pub fn cancel(&self, run_id: &str) -> bool {
        match self.active().get(run_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    pub fn is_active(&self, run_id: &str) -> bool {
        self.active().contains_key(run_id)
    }

    /// Ends a run that cannot go on (infrastructure failure, or cancelled with no driver):
    /// records it and tells stream readers.
    pub async fn fail(&self, spec: &RunSpec, err: &PaError) {
        tracing::warn!(run_id = %spec.run_id, %err, "run failed");
        let status = if err.code == pa_kit::ErrorCode::Cancelled {
            RunStatus::Cancelled
        } else {
            RunStatus::Failed
        };
        let end = RunEnd {
            status,
            usage: Default::default(),
            error_code: Some(err.code.slug()),
            error_message: Some(&err.message),
            assistant_text: "",
            attempts: &[],
        };
        match self.store.finish_run(spec, end).await {
            Ok(true) => {
                let event = AgUiEvent::new(Event::RunError(RunError {
                    message: err.message.clone(),
                    code: Some(err.code.slug().to_string()),
                    timestamp: None,
                }));
                if let Err(e) = self.sink.emit(&spec.run_id, &event).await {
                    tracing::error!(run_id = %spec.run_id, %e, "cannot publish RUN_ERROR");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(run_id = %spec.run_id, %e, "cannot record failed run"),
        }
    }

    async fn drive(&self, spec: &RunSpec, cancel: &CancellationToken) -> Result<(), PaError> {
        let identity = spec.identity.clone().unwrap_or_default();
        let history = self
            .store
            .history(&identity.tenant_id, &spec.chat_id, self.history_messages)
            .await
            .map_err(PaError::from)?
            .into_iter()
            .map(|m| TurnMessage::new(&m.role, m.content))
            .collect();
        let ids = RunIds {
            thread_id: spec.chat_id.clone(),
            run_id: spec.run_id.clone(),
            parent_run_id: spec.parent_run_id.clone(),
            assistant_message_id: spec.assistant_message_id.clone(),
        };
        let mut run = RunState {
            driver: self,
            spec,
            identity: &identity,
            agent: AgentLoop::new(ids, spec.limits.unwrap_or_default()),
            queue: VecDeque::new(),
            attempts: Vec::new(),
            held_terminal: None,
        };
        run.feed(Input::Start { history }).await?;
        while let Some(action) = run.queue.pop_front() {
            match action {
                // feed() sends events itself; only other actions are queued.
                Action::Emit(_) => {}
                Action::CallModel(request) => {
                    if cancel.is_cancelled() {
                        run.feed(cancelled()).await?;
                    } else {
                        run.call_model(request, cancel).await?;
                    }
                }
                Action::CallTool(call) => {
                    if cancel.is_cancelled() {
                        run.feed(cancelled()).await?;
                    } else {
                        run.call_tool(call).await?;
                    }
                }
                Action::Finish(outcome) => {
                    run.finish(outcome).await?;
                    break;
                }
            }
        }
        Ok(())
    }
}

fn cancelled() -> Input {
    Input::Cancel {
        reason: "cancelled by the user".into(),
    }
}

/// One run in flight.
struct RunState<'a> {
    driver: &'a InlineDriver,
    spec: &'a RunSpec,
    identity: &'a Identity,
    agent: AgentLoop,
    queue: VecDeque<Action>,
    /// Every model attempt so far (from svc-models), recorded on the run.
    attempts: Vec<ModelAttempt>,
    /// RUN_FINISHED/RUN_ERROR waits until the outcome is stored, so a client that sees it can
    /// read the persisted reply straight away.
    held_terminal: Option<AgUiEvent>,
}

impl RunState<'_> {
    /// Steps the loop; events go out at once, other actions queue in order. Once the loop is
    /// done, model and tool calls still queued are dropped.
    async fn feed(&mut self, input: Input) -> Result<(), PaError> {
        let actions = self.agent.step(input).map_err(PaError::internal)?;
        if self.agent.is_done() {
            self.queue
                .retain(|a| !matches!(a, Action::CallModel(_) | Action::CallTool(_)));
        }
        let mut events = Vec::new();
        for action in actions {
            match action {
                Action::Emit(event) if event.is_terminal() => self.held_terminal = Some(event),
                Action::Emit(event) => events.push(event),
                other => self.queue.push_back(other),
            }
        }
        // One step's events (e.g. TEXT_MESSAGE_START + the first CONTENT) go out in one round trip.
        self.driver
            .sink
            .emit_all(&self.spec.run_id, &events)
            .await
            .map(|_| ())
    }

    async fn call_model(
        &mut self,
        request: ModelRequest,
        cancel: &CancellationToken,
    ) -> Result<(), PaError> {
        let selection = self.spec.model_selection.clone().unwrap_or_default();
        let chat = StreamChatRequest {
            label: selection.resolved_label,
            messages: request.messages.into_iter().map(to_chat_message).collect(),
            tools: Vec::new(),
            max_output_tokens: 0,
            classification: self.spec.classification,
            run_id: self.spec.run_id.clone(),
            fallback_labels: selection.fallback_labels,
        };
        let mut models = self.driver.models.clone();
        let started = tokio::select! {
            started = models.stream_chat(self.driver.auth.request(self.identity, chat)) => started,
            _ = cancel.cancelled() => return self.feed(cancelled()).await,
        };
        let mut stream = match started {
            Ok(response) => response.into_inner(),
            Err(status) => return self.feed(model_failed(&PaError::from(status))).await,
        };
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = cancel.cancelled() => return self.feed(cancelled()).await,
            };
            let input = match next {
                Some(Ok(chunk)) => match chunk.chunk {
                    Some(Chunk::TextDelta(text)) => Input::ModelText(text),
                    Some(Chunk::ToolCall(call)) => Input::ModelToolCall(ToolCall {
                        id: call.id,
                        name: call.name,
                        arguments_json: call.arguments_json,
                    }),
                    Some(Chunk::Finish(finish)) => {
                        self.attempts.extend(finish.attempts);
                        Input::ModelFinished {
                            usage: finish.usage.unwrap_or_default(),
                        }
                    }
                    Some(Chunk::Failure(failure)) => {
                        self.attempts.extend(failure.attempts);
                        Input::ModelFailed {
                            code: failure.code,
                            message: failure.message,
                        }
                    }
                    Some(Chunk::ReasoningDelta(text)) => Input::ModelReasoning(text),
                    None => continue,
                },
                Some(Err(status)) => model_failed(&PaError::from(status)),
                None => model_failed(&PaError::unavailable(
                    "the model stream ended without finishing",
                )),
            };
            let finished = matches!(
                input,
                Input::ModelFinished { .. } | Input::ModelFailed { .. }
            );
            self.feed(input).await?;
            if finished {
                return Ok(());
            }
        }
    }

    async fn call_tool(&mut self, call: ToolCall) -> Result<(), PaError> {
        let request = ExecuteToolRequest {
            run_id: self.spec.run_id.clone(),
            snapshot_id: self.spec.toolset_snapshot_id.clone(),
            tool_call_id: call.id.clone(),
            name: call.name,
            arguments_json: call.arguments_json,
        };
        let mut tools = self.driver.tools.clone();
        let input = match tools
            .execute_tool(self.driver.auth.request(self.identity, request))
            .await
        {
            Ok(response) => {
                let result = response.into_inner();
                Input::ToolResult {
                    tool_call_id: call.id,
                    content: result.content,
                    is_error: result.is_error,
                }
            }
            // A failed tool is the model's to handle, not the run's end.
            Err(status) => Input::ToolResult {
                tool_call_id: call.id,
                content: PaError::from(status).message,
                is_error: true,
            },
        };
        self.feed(input).await
    }

    async fn finish(&mut self, outcome: Outcome) -> Result<(), PaError> {
        let end = match &outcome {
            Outcome::Succeeded { final_text, usage } => RunEnd {
                status: RunStatus::Succeeded,
                usage: *usage,
                error_code: None,
                error_message: None,
                assistant_text: final_text,
                attempts: &self.attempts,
            },
            Outcome::Failed {
                code,
                message,
                usage,
            } => RunEnd {
                status: RunStatus::Failed,
                usage: *usage,
                error_code: Some(code),
                error_message: Some(message),
                assistant_text: "",
                attempts: &self.attempts,
            },
            Outcome::Cancelled {
                partial_text,
                usage,
            } => RunEnd {
                status: RunStatus::Cancelled,
                usage: *usage,
                error_code: Some("cancelled"),
                error_message: Some("cancelled by the user"),
                assistant_text: partial_text,
                attempts: &self.attempts,
            },
        };
        self.driver
            .store
            .finish_run(self.spec, end)
            .await
            .map_err(PaError::from)?;
        let identity = self.identity;
        let tokens = match &outcome {
            Outcome::Succeeded { usage, .. }
            | Outcome::Failed { usage, .. }
            | Outcome::Cancelled { usage, .. } => usage.total_tokens,
        };
        if let Err(err) = pa_kit::limits::add_tokens(
            &self.driver.redis,
            &identity.tenant_id,
            &identity.user_id,
            tokens,
        )
        .await
        {
            tracing::warn!(%err, run_id = %self.spec.run_id, "cannot count tokens against the daily budget");
        }
        if let Some(event) = self.held_terminal.take() {
            self.driver.sink.emit(&self.spec.run_id, &event).await?;
        }
        Ok(())
    }
}

fn model_failed(err: &PaError) -> Input {
    Input::ModelFailed {
        code: err.code.slug().to_string(),
        message: err.message.clone(),
    }
}

fn to_chat_message(message: TurnMessage) -> ChatTurnMessage {
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
