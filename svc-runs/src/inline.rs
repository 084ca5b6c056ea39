//! The inline driver: runs pa-agent's state machine in a task of this process. Model turns go to
//! svc-models.StreamChat, tool calls to svc-tools.ExecuteTool, and every AG-UI event goes to the
//! run's Redis stream through the shared [`EventSink`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use pa_agent::{Action, AgentLoop, Input, ModelRequest, Outcome, RunIds, ToolCall, TurnMessage};
use pa_bus::approvals::ApprovalState;
use pa_bus::run_events::EventSink;
use pa_kit::error::ErrorCodeExt;
use pa_kit::{PaError, Shutdown};
use pa_proto::v1::{
    AgUiEvent, ChatToolDefinition, ModelAttempt, RunError, RunSpec, ag_ui_event::Event,
};
use pa_turn_io::{RunEnding, RunIo, cancelled};
use tokio_util::sync::CancellationToken;

use crate::run_start::{DurableContext, RunStart};
use crate::store::RunStore;

/// A run's context being read (see [`InlineDriver::begin_context`]): the chat's history (read
/// with the run row, [`ContextRead::with_chat_history`]; a sub-run's is its task), and the
/// recall (none when recall is off) on its own task.
pub struct ContextRead {
    history: Option<History>,
    recall: Option<tokio::task::JoinHandle<Option<pa_turn_io::Recalled>>>,
}

/// How much longer than recall's own timeout a workflow waits for its hand-over.
const HANDOVER_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a run's opening events (RUN_STARTED, its notices) wait for the model's first output
/// so that both go out in one write and one wake-up of every reader (ADR 0212). A model slower
/// than this sees them sent on their own when it expires: RUN_STARTED is late by at most this.
const OPENING_HOLD: std::time::Duration = std::time::Duration::from_millis(10);
/// Model chunks already received that go out in one write at most.
const MAX_CHUNKS_PER_WRITE: usize = 64;

/// Sends the events held back (see [`OPENING_HOLD`]), if any; nothing is held afterwards.
/// A free function over the fields, so the model call's pinned future may keep borrowing the
/// rest of the run meanwhile.
async fn send_held(
    sink: &EventSink,
    run_id: &str,
    unsent: &mut Vec<AgUiEvent>,
    flush_at: &mut Option<tokio::time::Instant>,
) -> Result<(), PaError> {
    *flush_at = None;
    if unsent.is_empty() {
        return Ok(());
    }
    let held = std::mem::take(unsent);
    sink.emit_all(run_id, &held).await.map(|_| ())
}

/// Whether a step's events wait for the model's first output, to go out in the same stream
/// write (ADR 0212): the run's opening step's, when a model call is what comes next and nothing
/// ended the run. The run's progress does not decide it: the opening step always counts the
/// model request it dispatches, so requiring an unchanged progress held nothing, ever (ADR 0228).
fn holds_opening(opening: bool, ended: bool, next: Option<&Action>) -> bool {
    opening && !ended && matches!(next, Some(Action::CallModel(_)))
}

/// Resolves at `deadline`, never without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The conversation a run starts from, and whether it holds untrusted content.
pub(crate) struct History {
    messages: Vec<TurnMessage>,
    untrusted: bool,
}

impl ContextRead {
    /// The chat's messages before this run (read in the run row's transaction, ADR 0218), as
    /// the model sees them, this run's message last. A reply of a tainted run is marked
    /// (`untrusted`) for what leaves the chat (the Curator's memories), but does not taint the
    /// chat's later runs: the user saw it and continues from it
    /// (docs/src/adr/0120-2026-12-03-taint-follows-the-data.md).
    pub fn with_chat_history(
        mut self,
        spec: &RunSpec,
        stored: Vec<pa_proto::v1::ChatMessage>,
    ) -> Self {
        if self.history.is_none() {
            let mut messages: Vec<TurnMessage> = stored
                .into_iter()
                .map(|m| TurnMessage::new(&m.role, m.content))
                .collect();
            let message = spec.input.as_ref().map(|i| i.message.clone());
            messages.push(TurnMessage::new("user", message.unwrap_or_default()));
            self.history = Some(History {
                messages,
                untrusted: false,
            });
        }
        self
    }

    fn history(history: Option<History>) -> Result<History, PaError> {
        history.ok_or_else(|| PaError::internal("the run's history was not read"))
    }

    async fn recalled(
        recall: Option<tokio::task::JoinHandle<Option<pa_turn_io::Recalled>>>,
    ) -> Option<pa_turn_io::Recalled> {
        // Recall is a help: a task that died is a run without memories.
        recall?.await.unwrap_or_else(|err| {
            tracing::warn!(%err, "automatic recall skipped: its task failed");
            None
        })
    }

    /// The history the model sees, recalled memories in front, and `start` with the recall's
    /// notice and the taint of both.
    pub async fn finish(
        self,
        mut start: RunStart,
    ) -> Result<(Vec<TurnMessage>, RunStart), PaError> {
        let History {
            messages: mut history,
            untrusted,
        } = Self::history(self.history)?;
        let recalled = Self::recalled(self.recall).await;
        let recalled_untrusted =
            pa_turn_io::apply_recall(recalled, &mut history, &mut start.notices);
        start.tainted |= untrusted || recalled_untrusted;
        Ok((history, start))
    }

    /// For a durable run: as [`Self::finish`] when the recall is done; when it is still
    /// running, the history alone, and the recall is handed over to the run's workflow once it
    /// is (its first model turn waits for it), so Temporal's start does not wait for recall.
    pub async fn finish_or_hand_over(
        self,
        mut start: RunStart,
        redis: &pa_kit::redis::Pool,
        run_id: &str,
        recall_timeout: std::time::Duration,
    ) -> Result<DurableContext, PaError> {
        let recall = match self.recall {
            Some(recall) if !recall.is_finished() => recall,
            done => {
                let (history, start) = Self {
                    history: self.history,
                    recall: done,
                }
                .finish(start)
                .await?;
                return Ok(DurableContext {
                    history,
                    start,
                    recall_wait_ms: 0,
                });
            }
        };
        let History {
            messages: history,
            untrusted,
        } = Self::history(self.history)?;
        // The recall's own taint travels with its hand-over.
        start.tainted |= untrusted;
        let (redis, run_id) = (redis.clone(), run_id.to_string());
        tokio::spawn(async move {
            let recalled = Self::recalled(Some(recall)).await;
            if let Err(err) = pa_turn_io::hand_over_recall(&redis, &run_id, &recalled).await {
                tracing::warn!(%run_id, %err, "recall not handed over; the run goes on without it");
            }
        });
        Ok(DurableContext {
            history,
            start,
            recall_wait_ms: (recall_timeout + HANDOVER_SLACK).as_millis() as u64,
        })
    }
}

/// How inline runs are driven: svc-runs' settings.
#[derive(Clone, Debug)]
pub struct InlineOptions {
    /// How many of a chat's latest messages a run reads as its history.
    pub history_messages: u32,
    /// How long a tool call waits for a human's approval before it is refused.
    pub approval_timeout: std::time::Duration,
    /// Automatic recall at run start.
    pub recall: pa_turn_io::RecallSettings,
}

/// What an inline driver talks to.
#[derive(Clone)]
pub struct InlineDeps {
    pub store: RunStore,
    pub io: RunIo,
    pub sink: EventSink,
    pub redis: pa_kit::redis::Pool,
    pub shutdown: Shutdown,
    /// This instance's leases on the runs it drives (ADR 0150).
    pub leases: Arc<crate::lease::Leases>,
}

/// Starts inline runs and cancels them. Cheap to clone. Built by [`InlineDriver::new`]; its
/// fields are the crate's because the lease reaper and the outbox (`reaper`, `outbox`) extend it.
#[derive(Clone)]
pub struct InlineDriver {
    pub(crate) store: RunStore,
    pub(crate) io: RunIo,
    pub(crate) sink: EventSink,
    /// Daily token counters (quotas).
    pub(crate) redis: pa_kit::redis::Pool,
    pub(crate) shutdown: Shutdown,
    pub(crate) history_messages: u32,
    /// How long a tool call waits for a human's approval before it is refused.
    pub(crate) approval_timeout: std::time::Duration,
    /// Automatic recall at run start.
    pub(crate) recall: pa_turn_io::RecallSettings,
    /// Cancellation handles of the runs this process drives.
    pub(crate) active: Arc<Mutex<HashMap<String, CancellationToken>>>,
    /// This instance's leases on the runs it drives (ADR 0150).
    pub(crate) leases: Arc<crate::lease::Leases>,
}

impl InlineDriver {
    pub fn new(options: InlineOptions, deps: InlineDeps) -> Self {
        let InlineDeps {
            store,
            io,
            sink,
            redis,
            shutdown,
            leases,
        } = deps;
        Self {
            store,
            io,
            sink,
            redis,
            shutdown,
            history_messages: options.history_messages,
            approval_timeout: options.approval_timeout,
            recall: options.recall,
            active: Default::default(),
            leases,
        }
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        // A poisoned map only means a panic elsewhere; the map itself is still consistent.
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `spec` in a tracked task (shutdown drains it), offering the model `tools`.
    pub fn start(&self, spec: RunSpec, start: RunStart, context: ContextRead) {
        let token = CancellationToken::new();
        self.active().insert(spec.run_id.clone(), token.clone());
        let driver = self.clone();
        // The run's span: a child of the CreateRun (or StartSubRun) call that started it.
        let span = tracing::info_span!(
            "run",
            otel.name = "run",
            pa.service = "svc-runs",
            run_id = %spec.run_id,
            mode = "inline",
        );
        self.shutdown.spawn_tracked(tracing::Instrument::instrument(
            async move {
                let run_id = spec.run_id.clone();
                if let Err(err) = driver.drive(&spec, start, context, &token).await {
                    driver.fail(&spec, &err).await;
                }
                driver.active().remove(&run_id);
            },
            span,
        ));
    }

    /// Holds `run_id` among this process's runs while its durable start is in flight: the
    /// instance beats for it (through a graceful stop too) until [`Self::forget`].
    pub(crate) fn hold(&self, run_id: &str) {
        self.active()
            .insert(run_id.to_string(), CancellationToken::new());
    }

    /// Ends [`Self::hold`].
    pub(crate) fn forget(&self, run_id: &str) {
        self.active().remove(run_id);
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

    /// The runs this process drives now.
    pub fn active_runs(&self) -> Vec<String> {
        self.active().keys().cloned().collect()
    }

    /// Ends a run that cannot go on (infrastructure failure, or cancelled with no driver):
    /// records it and tells stream readers (through the outbox when Postgres is down).
    pub async fn fail(&self, spec: &RunSpec, err: &PaError) {
        tracing::warn!(run_id = %spec.run_id, %err, "run failed");
        let event = AgUiEvent::new(Event::RunError(RunError {
            message: err.message.clone(),
            code: Some(err.code.slug().to_string()),
            timestamp: None,
        }));
        self.end_run(spec, RunEnding::of_error(err), Vec::new(), vec![event])
            .await;
    }

    /// Begins reading what a run starts from, for both drivers: the memories recalled for this
    /// message (launch_run calls it before it resolves the model and assembles the toolset, so
    /// the recall overlaps those calls rather than follows them); the chat's history is read
    /// with the run row (`ContextRead::with_chat_history`).
    /// `task_untrusted`: a sub-run whose parent was tainted (its task may carry planted
    /// instructions).
    pub fn begin_context(&self, spec: &RunSpec, task_untrusted: bool) -> ContextRead {
        let recall = (self.recall.token_budget > 0).then(|| {
            let (io, settings, spec) = (self.io.clone(), self.recall, spec.clone());
            tokio::spawn(async move { io.recall(&spec, &settings).await })
        });
        // A sub-agent sees its task, not the chat; a user run's history comes with its row.
        let history = spec.parent_run_id.is_some().then(|| History {
            messages: crate::roles::opening(spec),
            untrusted: task_untrusted,
        });
        ContextRead { history, recall }
    }

    async fn drive(
        &self,
        spec: &RunSpec,
        start: RunStart,
        context: ContextRead,
        cancel: &CancellationToken,
    ) -> Result<(), PaError> {
        let (history, start) = context.finish(start).await?;
        let ids = RunIds {
            thread_id: spec.chat_id.clone(),
            run_id: spec.run_id.clone(),
            parent_run_id: spec.parent_run_id.clone(),
            assistant_message_id: spec.assistant_message_id.clone(),
        };
        let mut run = RunState {
            driver: self,
            spec,
            agent: AgentLoop::new(ids, spec.limits.unwrap_or_default()),
            tools: start.tools,
            queue: VecDeque::new(),
            attempts: Vec::new(),
            held_terminal: None,
            progress: crate::lease::Progress::default(),
            unsent: Vec::new(),
            stepped: Vec::new(),
            hold_next: true,
            flush_at: None,
        };
        run.feed(Input::Start {
            history,
            notices: start.notices,
            high_privilege_tools: start.high_privilege_tools,
            approval_always_tools: start.approval_always_tools,
            tainted: start.tainted,
        })
        .await?;
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
                        run.call_tool(call, cancel).await?;
                    }
                }
                Action::AwaitApproval { call, event } => {
                    if cancel.is_cancelled() {
                        run.feed(cancelled()).await?;
                    } else {
                        run.await_approval(call, event, cancel).await?;
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

/// Writes a sub-run's events into this run's stream, after what is there.
struct AppendRelay<'a> {
    sink: &'a EventSink,
    run_id: &'a str,
}

impl pa_turn_io::EventRelay for AppendRelay<'_> {
    async fn relay(&mut self, events: Vec<AgUiEvent>) -> Result<(), PaError> {
        self.sink.emit_all(self.run_id, &events).await.map(|_| ())
    }
}

/// One run in flight.
struct RunState<'a> {
    driver: &'a InlineDriver,
    spec: &'a RunSpec,
    agent: AgentLoop,
    tools: Vec<ChatToolDefinition>,
    queue: VecDeque<Action>,
    /// Every model attempt so far (from svc-models), recorded on the run.
    attempts: Vec<ModelAttempt>,
    /// RUN_FINISHED/RUN_ERROR waits until the outcome is stored, so a client that sees it can
    /// read the persisted reply straight away.
    held_terminal: Option<AgUiEvent>,
    /// The usage and attempts last written beside the events (for whoever ends the run if this
    /// process dies).
    progress: crate::lease::Progress,
    /// Events held back (the opening ones, see [`OPENING_HOLD`]); they go out first with the
    /// next write, or on their own at `flush_at`.
    unsent: Vec<AgUiEvent>,
    /// Events of the steps since the last write (see [`RunState::send`]).
    stepped: Vec<AgUiEvent>,
    /// The next step's events may be held (the run's start, before its first model call).
    hold_next: bool,
    flush_at: Option<tokio::time::Instant>,
}

impl RunState<'_> {
    /// Steps the loop; events go out at once, other actions queue in order. Once the loop is
    /// done, model and tool calls still queued are dropped.
    async fn feed(&mut self, input: Input) -> Result<(), PaError> {
        self.step(input)?;
        self.send().await
    }

    /// Steps the loop: its events wait in `stepped` for [`Self::send`], other actions queue.
    fn step(&mut self, input: Input) -> Result<(), PaError> {
        let actions = self.agent.step(input).map_err(PaError::internal)?;
        if self.agent.is_done() {
            self.queue
                .retain(|a| matches!(a, Action::Emit(_) | Action::Finish(_)));
        }
        for action in actions {
            match action {
                Action::Emit(event) if event.is_terminal() => self.held_terminal = Some(event),
                Action::Emit(event) => self.stepped.push(event),
                other => self.queue.push_back(other),
            }
        }
        Ok(())
    }

    /// Writes the events stepped so far (after any held ones), with the run's progress when it
    /// changed.
    async fn send(&mut self) -> Result<(), PaError> {
        let mut events = std::mem::take(&mut self.unsent);
        events.append(&mut self.stepped);
        self.flush_at = None;
        let progress_changed = *self.agent.usage() != self.progress.usage
            || self.attempts.len() != self.progress.attempts.len();
        let opening = std::mem::take(&mut self.hold_next);
        if holds_opening(opening, self.held_terminal.is_some(), self.queue.front()) {
            // The progress (the model request just dispatched) is written by the next send.
            self.unsent = events;
            self.flush_at = Some(tokio::time::Instant::now() + OPENING_HOLD);
            return Ok(());
        }
        // One step's events (e.g. TEXT_MESSAGE_START + the first CONTENT) go out in one round
        // trip; when the usage or the attempts changed, the run's progress goes with them.
        let sink = &self.driver.sink;
        let run_id = &self.spec.run_id;
        if progress_changed {
            let progress = crate::lease::Progress {
                usage: *self.agent.usage(),
                attempts: self.attempts.clone(),
            };
            let (key, value) = crate::lease::progress_write(run_id, &progress)?;
            sink.emit_all_with(
                run_id,
                &events,
                pa_bus::run_events::SideWrite::Set {
                    key: &key,
                    value: &value,
                },
            )
            .await?;
            self.progress = progress;
            return Ok(());
        }
        sink.emit_all(run_id, &events).await.map(|_| ())
    }

    async fn call_model(
        &mut self,
        request: ModelRequest,
        cancel: &CancellationToken,
    ) -> Result<(), PaError> {
        let span =
            pa_turn_io::model_turn_span("svc-runs", self.spec, self.agent.usage().model_requests);
        let before = *self.agent.usage();
        let result =
            tracing::Instrument::instrument(self.model_turn(request, cancel), span.clone()).await;
        let after = self.agent.usage();
        span.record(
            "tokens",
            after.total_tokens.saturating_sub(before.total_tokens),
        );
        span.record("attempts", self.attempts.len());
        result
    }

    async fn model_turn(
        &mut self,
        request: ModelRequest,
        cancel: &CancellationToken,
    ) -> Result<(), PaError> {
        // The call is not restarted when held events go out meanwhile: it stays pinned here.
        let started = {
            let start = self
                .driver
                .io
                .start_model_turn(self.spec, request, &self.tools);
            tokio::pin!(start);
            loop {
                tokio::select! {
                    started = &mut start => break Some(started),
                    _ = cancel.cancelled() => break None,
                    _ = until(self.flush_at) => {
                        send_held(&self.driver.sink, &self.spec.run_id, &mut self.unsent, &mut self.flush_at).await?;
                    }
                }
            }
        };
        let mut turn = match started {
            Some(Ok(turn)) => turn,
            Some(Err(failed)) => return self.feed(failed).await,
            None => return self.feed(cancelled()).await,
        };
        loop {
            // `next` is cancel-safe (tonic's `Streaming::message`): sending held events between
            // two chunks loses nothing.
            let next = tokio::select! {
                next = turn.next(&mut self.attempts) => next,
                _ = cancel.cancelled() => return self.feed(cancelled()).await,
                _ = until(self.flush_at) => {
                    send_held(&self.driver.sink, &self.spec.run_id, &mut self.unsent, &mut self.flush_at).await?;
                    continue;
                }
            };
            match next {
                Some(input) => {
                    self.step(input)?;
                    // What the model sent meanwhile goes out in the same write: one round trip
                    // for every chunk already here, and no wait for one that is not.
                    let queued = self.queue.len();
                    let mut ended = false;
                    for _ in 0..MAX_CHUNKS_PER_WRITE {
                        if self.queue.len() != queued || self.agent.is_done() {
                            break;
                        }
                        match turn.next(&mut self.attempts).now_or_never() {
                            Some(Some(more)) => self.step(more)?,
                            Some(None) => {
                                ended = true;
                                break;
                            }
                            None => break,
                        }
                    }
                    self.send().await?;
                    if ended {
                        return Ok(());
                    }
                }
                None => return Ok(()),
            }
        }
    }

    async fn call_tool(
        &mut self,
        call: ToolCall,
        cancel: &CancellationToken,
    ) -> Result<(), PaError> {
        let mut relay = AppendRelay {
            sink: &self.driver.sink,
            run_id: &self.spec.run_id,
        };
        let spent = self.agent.usage_with_nested();
        let tainted = self.agent.is_tainted();
        let span = pa_turn_io::tool_call_span("svc-runs", self.spec, &call);
        // A sub-agent call can take long: a cancel stops waiting for it (svc-runs cancels the
        // run's sub-runs with it).
        let input = tokio::select! {
            input = tracing::Instrument::instrument(
                self.driver.io.run_tool(self.spec, call, &self.tools, spent, tainted, &mut relay),
                span,
            ) => input,
            _ = cancel.cancelled() => cancelled(),
        };
        self.feed(input).await
    }

    /// Asks a human: opens the request (so an answer finds it), publishes it, and waits for the
    /// decision — which may be taken through any svc-runs replica, hence Redis — or the timeout.
    async fn await_approval(
        &mut self,
        call: ToolCall,
        event: AgUiEvent,
        cancel: &CancellationToken,
    ) -> Result<(), PaError> {
        let driver = self.driver;
        let redis = &driver.redis;
        let run_id = &self.spec.run_id.clone();
        pa_bus::approvals::open(redis, run_id, &call.id).await?;
        driver.sink.emit(run_id, &event).await?;
        let (approved, timed_out) = tokio::select! {
            approved = pa_bus::approvals::decided(redis, run_id, &call.id) => (approved, false),
            _ = tokio::time::sleep(driver.approval_timeout) => {
                // A decision that got in just before the timeout still counts.
                let stands = pa_bus::approvals::expire(redis, run_id, &call.id).await?;
                (stands == ApprovalState::Approved, stands == ApprovalState::TimedOut)
            }
            _ = cancel.cancelled() => return self.feed(cancelled()).await,
        };
        self.feed(Input::ApprovalDecision {
            tool_call_id: call.id,
            approved,
            timed_out,
        })
        .await
    }

    async fn finish(&mut self, outcome: Outcome) -> Result<(), PaError> {
        send_held(
            &self.driver.sink,
            &self.spec.run_id,
            &mut self.unsent,
            &mut self.flush_at,
        )
        .await?;
        let ending = RunEnding::of_loop(&outcome, self.agent.is_tainted());
        let terminal: Vec<AgUiEvent> = self.held_terminal.take().into_iter().collect();
        self.driver
            .end_run(
                self.spec,
                ending,
                std::mem::take(&mut self.attempts),
                terminal,
            )
            .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pa_proto::v1::{Usage, UsageLimits};

    /// A real agent loop's opening step, its actions sorted as [`RunState::step`] sorts them:
    /// (the loop, whether a terminal event is held, the queued actions).
    fn opening_step() -> (AgentLoop, bool, VecDeque<Action>) {
        let ids = RunIds {
            thread_id: "chat-1".into(),
            run_id: "run-1".into(),
            parent_run_id: None,
            assistant_message_id: "msg-1".into(),
        };
        let mut agent = AgentLoop::new(ids, UsageLimits::default());
        let actions = agent
            .step(Input::Start {
                history: vec![TurnMessage::new("user", "hello")],
                notices: vec!["a tool was removed".into()],
                high_privilege_tools: Vec::new(),
                approval_always_tools: Vec::new(),
                tainted: false,
            })
            .expect("the opening step");
        let mut ended = false;
        let mut queue = VecDeque::new();
        for action in actions {
            match action {
                Action::Emit(event) if event.is_terminal() => ended = true,
                Action::Emit(_) => {}
                other => queue.push_back(other),
            }
        }
        (agent, ended, queue)
    }

    #[test]
    fn a_runs_opening_events_wait_for_its_first_model_output() {
        let (agent, ended, queue) = opening_step();
        // The opening step counts the request it dispatches, so the run's progress has
        // changed: that must not stop the hold.
        assert_eq!(agent.usage().model_requests, 1);
        assert!(holds_opening(true, ended, queue.front()));
    }

    #[test]
    fn only_the_opening_step_before_a_model_call_is_held() {
        let (_, ended, queue) = opening_step();
        assert!(!holds_opening(false, ended, queue.front()), "a later step");
        assert!(
            !holds_opening(true, true, queue.front()),
            "the run has ended"
        );
        assert!(!holds_opening(true, false, None), "nothing comes next");
        assert!(
            !holds_opening(
                true,
                false,
                Some(&Action::Finish(Outcome::Cancelled {
                    partial_text: String::new(),
                    usage: Usage::default(),
                }))
            ),
            "the run finishes next"
        );
    }
}
