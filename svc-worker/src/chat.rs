//! ChatAgentWorkflow: a durable run. It drives the same pa-agent state machine as svc-runs'
//! inline driver; every model turn and every tool call is an activity (see `activities`).
//!
//! Determinism: this module only steps the sans-IO `AgentLoop` and schedules activities — no
//! clock, randomness, tokio select/spawn/sleep or I/O. Events are written by the activities under
//! ids `<step>-<seq>` that the workflow hands out, so a retried activity rewrites the same ids and
//! Redis keeps the first copy (see `EventSink::emit_at`); a model turn's message that a dead
//! worker had begun is withdrawn first, and the retry streams after it (ADR 0245).
//!
//! Event hand-off: an activity that streams a model turn steps its own copy of the loop (the
//! workflow's, passed in) so tokens reach the stream as they arrive, and returns the inputs it fed.
//! The workflow feeds the same inputs to its loop — reaching the same state — and drops the events
//! that produces, since the activity already wrote them. Events the workflow's own steps produce
//! (a tool result, the end of the run) travel as `pending` with the next activity, which writes
//! them first.

use std::collections::VecDeque;
use std::time::Duration;

use pa_agent::{Action, AgentLoop, Input};
use pa_proto::v1::{AgUiEvent, ModelAttempt, RunSpec, RunStatus};
use pa_turn_io::RunEnding;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, CancellableFuture, LocalActivityOptions,
    SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult,
};

use crate::activities::RunActivities;
pub use crate::payloads::{
    ApprovalInput, ChatRunInput, DEFAULT_APPROVAL_TIMEOUT, DeferredStart, ExpireApprovalInput,
    FIRST_STEP, FinishInput, FirstTurnFound, FirstTurnHere, LoopInput, ModelTurnInput,
    ModelTurnOutput, ToolCallDecided, ToolCallInput, first_turn,
};
use crate::payloads::{deferred_start, required, run_ids, start_with_recall};

/// A model turn may stream for minutes; it heartbeats while it does, so a dead worker is noticed
/// within the heartbeat timeout and the turn retried on another.
fn model_turn_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(15 * 60))
        .heartbeat_timeout(crate::activities::HEARTBEAT_TIMEOUT)
        .retry_policy(crate::activities::retry_policy())
        .build()
}

fn tool_call_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10 * 60))
        .heartbeat_timeout(crate::activities::HEARTBEAT_TIMEOUT)
        .retry_policy(crate::activities::retry_policy())
        .build()
}

/// The approval's activities are a Redis call or two, but a worker killed inside one must not
/// hold its run for the start-to-close timeout: they heartbeat, so another worker retries them
/// within the heartbeat timeout (ADR 0249).
fn approval_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
        .heartbeat_timeout(crate::activities::HEARTBEAT_TIMEOUT)
        .retry_policy(crate::activities::retry_policy())
        .build()
}

/// The finish activity is the outbox of a run's outcome: it writes the terminal event even when
/// svc-runs cannot store the outcome (Postgres down) and is retried, with backoff and without an
/// attempt limit, until the outcome lands (for a day at most).
fn finish_options() -> ActivityOptions {
    ActivityOptions::with_close_timeouts(
        temporalio_common::ActivityCloseTimeouts::ScheduleAndStartToClose {
            schedule_to_close: crate::activities::FINISH_OUTBOX_FOR,
            start_to_close: FINISH_ATTEMPT_TIMEOUT,
        },
    )
    .retry_policy(crate::activities::finish_retry_policy())
    .build()
}

/// How long one attempt of the finish may take, as an activity task or a local activity.
const FINISH_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// The patch under which a run's end is a local activity (ADR 0219). Histories written before
/// it hold the finish as an activity task and replay that way.
pub const FINISH_LOCALLY: &str = "finish-run-local-activity";

/// [`finish_options`] for the local activity: the same outbox retries, run by the worker that
/// completes the workflow task. A worker that dies meanwhile leaves the task to time out, and
/// the next worker runs the finish again (it is idempotent: the same event ids, the same record).
fn finish_local_options() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .retry_policy(crate::activities::finish_retry_policy())
        .schedule_to_close_timeout(crate::activities::FINISH_OUTBOX_FOR)
        .start_to_close_timeout(FINISH_ATTEMPT_TIMEOUT)
        // Backoffs above this wait on a durable timer, not in the worker's memory.
        .timer_backoff_threshold(Duration::from_secs(5))
        .build()
}

/// The patch under which a run's first workflow task takes a first turn that ended on its
/// worker (ADR 0238). Histories written before it schedule the turn's activity at once.
pub const FIRST_TURN_LOCALLY: &str = "first-turn-local-activity";

/// The workflow code a run is started for (`ChatRunInput.code_revision`, set by
/// [`crate::start::chat_run_input`]; ADR 0254). From 1 on, what [`FIRST_TURN_LOCALLY`] and
/// [`FINISH_LOCALLY`] guard is the run's from its start and is not asked of `ctx.patched`:
/// each patch wrote a marker and a `TemporalChangeVersion` search attribute upsert into every
/// run's history, four of its eleven events, and the upserts cost the server visibility
/// writes. Runs started before (0) ask the patches as they did, so their histories replay.
pub const CHAT_RUN_REVISION: u32 = 1;

/// Whether a run takes the path `patch` guards: always for a run started for
/// [`CHAT_RUN_REVISION`] 1 or later, as the patch says for one started before.
///
/// A revision-1 run replayed still asks the patch (its answer is not used): during a rolling
/// upgrade a worker of the last release may have run this point of it and recorded the patch's
/// marker, which the core accepts only if the code asks for it. Asked on replay where the
/// history has no marker, the patch answers false and records nothing.
fn patched_since_revision_1(
    ctx: &WorkflowContext<ChatAgentWorkflow>,
    code_revision: u32,
    patch: &str,
) -> bool {
    if code_revision == 0 {
        return ctx.patched(patch);
    }
    if ctx.is_replaying() {
        let _recorded_by_an_earlier_worker = ctx.patched(patch);
    }
    true
}

/// [`RunActivities::first_turn_here`]: one attempt (whatever goes wrong, the turn's activity
/// runs it), bounded well below the workflow task's timeout.
fn first_turn_here_options() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .retry_policy(
            temporalio_common::RetryPolicy::builder()
                .maximum_attempts(1)
                .build(),
        )
        .start_to_close_timeout(crate::activities::FIRST_TURN_HERE_WAIT * 2)
        .build()
}

#[workflow]
#[derive(Default)]
pub struct ChatAgentWorkflow {
    /// Set by the `cancel` signal; checked before every model turn and tool call.
    cancel_requested: bool,
    /// Tool-call decisions from the `decide_tool_call` signal, by tool call id (first one wins).
    decisions: std::collections::BTreeMap<String, bool>,
    /// `running` until the run ends, then its final status (the `status` query).
    status: String,
}

/// The workflow's side of a run: the loop, the actions it still has to perform and the events
/// waiting for the next activity to write them.
struct Drive {
    agent: AgentLoop,
    queue: VecDeque<Action>,
    pending: Vec<AgUiEvent>,
    attempts: Vec<ModelAttempt>,
    step: u64,
}

impl Drive {
    fn new(spec: &RunSpec) -> Self {
        Self {
            agent: AgentLoop::new(run_ids(spec), spec.limits.unwrap_or_default()),
            queue: VecDeque::new(),
            pending: Vec::new(),
            attempts: Vec::new(),
            step: 0,
        }
    }

    /// Steps the loop; its events wait in `pending` unless an activity already wrote them.
    fn feed(&mut self, input: Input, already_written: bool) -> WorkflowResult<()> {
        let actions = self
            .agent
            .step(input)
            .map_err(|e| terminate(e.to_string()))?;
        for action in actions {
            match action {
                // RUN_FINISHED / RUN_ERROR are never written by a turn's activity: they go out
                // with the finish activity, after the outcome is stored.
                Action::Emit(event) => {
                    if !already_written || event.is_terminal() {
                        self.pending.push(event);
                    }
                }
                other => self.queue.push_back(other),
            }
        }
        if self.agent.is_done() {
            // Like the inline driver: once the loop is done, calls still queued are dropped.
            self.queue
                .retain(|a| matches!(a, Action::Emit(_) | Action::Finish(_)));
        }
        Ok(())
    }

    /// Feeds what a model turn's activity fed its copy of the loop (its events are written), or
    /// the turn's failure.
    fn turn_done(
        &mut self,
        result: Result<ModelTurnOutput, ActivityExecutionError>,
    ) -> WorkflowResult<()> {
        match result {
            Ok(output) => {
                self.attempts.extend(output.attempts);
                for input in output.inputs {
                    self.feed(loop_input(input)?, true)?;
                }
                Ok(())
            }
            Err(err) => self.feed(activity_failed(&err), false),
        }
    }

    fn next_step(&mut self) -> u64 {
        self.step += 1;
        self.step
    }
}

/// A loop input an activity handed back; one no worker writes ends the workflow.
fn loop_input(input: LoopInput) -> WorkflowResult<Input> {
    Input::try_from(input).map_err(|e| terminate(e.to_string()))
}

/// Ends the workflow as failed, without retrying its task (the loop's state would not change).
fn terminate(message: String) -> temporalio_sdk::WorkflowTermination {
    temporalio_sdk::ApplicationFailure::non_retryable(message).into()
}

#[workflow_methods]
impl ChatAgentWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: ChatRunInput,
    ) -> WorkflowResult<String> {
        ctx.state_mut(|s| s.status = "running".into());
        let spec = required(input.spec.clone(), "spec").map_err(|e| terminate(e.to_string()))?;
        let revision = input.code_revision;
        let mut drive = Drive::new(&spec);
        if ctx.state(|s| s.cancel_requested) {
            // No reason to call the model: the run is cancelled already.
            drive.feed(start_with_recall(deferred_start(&input), None), false)?;
        } else {
            // The first turn starts the activity's copy of the loop (once the recall is there,
            // if svc-runs handed one over) and reports the start it used; this loop starts the
            // same way.
            let turn = first_turn(&input).map_err(|e| terminate(e.to_string()))?;
            drive.step = turn.step;
            // A turn begun on this worker that ends at once is taken here: no activity task,
            // and the run ends in this same workflow task (ADR 0238).
            let ended_here = if patched_since_revision_1(ctx, revision, FIRST_TURN_LOCALLY) {
                ctx.execute_local_activity(
                    RunActivities::first_turn_here,
                    FirstTurnHere {
                        run_id: spec.run_id.clone(),
                    },
                    first_turn_here_options(),
                )
                .await
                .ok()
                .filter(|found| found.ended)
                .and_then(|found| found.output)
            } else {
                None
            };
            let mut result = match ended_here {
                Some(output) => Ok(output),
                None => {
                    ctx.execute_activity(RunActivities::model_turn, turn, model_turn_options())
                        .await
                }
            };
            match result.as_mut().ok().and_then(|output| output.start.take()) {
                Some(started) => drive.feed(loop_input(started)?, true)?,
                // The turn failed: its events may not have been written, so they go out with
                // the next activity.
                None => drive.feed(start_with_recall(deferred_start(&input), None), false)?,
            }
            // The loop's first model call is the one the activity made (or failed to make).
            if let Some(at) = drive
                .queue
                .iter()
                .position(|a| matches!(a, Action::CallModel(_)))
            {
                drive.queue.remove(at);
            }
            drive.turn_done(result)?;
        }
        while let Some(action) = drive.queue.pop_front() {
            let cancel = ctx.state(|s| s.cancel_requested);
            match action {
                Action::Emit(_) => {}
                Action::CallModel(_) | Action::CallTool(_) | Action::AwaitApproval { .. }
                    if cancel =>
                {
                    drive.feed(pa_turn_io::cancelled(), false)?;
                }
                Action::CallModel(request) => {
                    let step = drive.next_step();
                    let turn = ModelTurnInput {
                        spec: Some(spec.clone()),
                        step,
                        pending: std::mem::take(&mut drive.pending),
                        agent: Some(drive.agent.to_state()),
                        request: Some(request),
                        tools: input.tools.clone(),
                        start: None,
                    };
                    let result = ctx
                        .execute_activity(RunActivities::model_turn, turn, model_turn_options())
                        .await;
                    drive.turn_done(result)?;
                }
                Action::CallTool(call) => {
                    let step = drive.next_step();
                    let tool = ToolCallInput {
                        spec: Some(spec.clone()),
                        step,
                        pending: std::mem::take(&mut drive.pending),
                        call: Some(call.clone()),
                        offered: input.tools.clone(),
                        spent: Some(drive.agent.usage_with_nested()),
                        tainted: drive.agent.is_tainted(),
                    };
                    let result = ctx
                        .execute_activity(RunActivities::tool_call, tool, tool_call_options())
                        .await;
                    let input = match result {
                        Ok(input) => loop_input(input)?,
                        Err(err) => Input::ToolResult {
                            tool_call_id: call.id,
                            content: format!("the tool could not run: {}", describe(&err)),
                            is_error: true,
                            untrusted: false,
                            nested: Default::default(),
                        },
                    };
                    drive.feed(input, false)?;
                }
                Action::AwaitApproval { call, event } => {
                    let timeout = match input.approval_timeout_ms {
                        0 => DEFAULT_APPROVAL_TIMEOUT,
                        ms => Duration::from_millis(ms),
                    };
                    let step = drive.next_step();
                    let request = ApprovalInput {
                        spec: Some(spec.clone()),
                        step,
                        pending: std::mem::take(&mut drive.pending),
                        tool_call_id: call.id.clone(),
                        event: Some(event),
                    };
                    let decision = match ctx
                        .execute_activity(
                            RunActivities::request_approval,
                            request,
                            approval_options(),
                        )
                        .await
                    {
                        Ok(()) => await_decision(ctx, &spec, &call.id, timeout).await?,
                        // Nobody could be asked: the call is refused, as if nobody answered.
                        Err(_) => Some(Input::ApprovalDecision {
                            tool_call_id: call.id.clone(),
                            approved: false,
                            timed_out: true,
                        }),
                    };
                    drive.feed(decision.unwrap_or_else(pa_turn_io::cancelled), false)?;
                }
                Action::Finish(outcome) => {
                    let ending = RunEnding::of_loop(&outcome, drive.agent.is_tainted());
                    let status = ending.status;
                    let step = drive.next_step();
                    let finish = FinishInput {
                        spec: Some(spec.clone()),
                        step,
                        pending: std::mem::take(&mut drive.pending),
                        ending: Some(ending.into()),
                        attempts: std::mem::take(&mut drive.attempts),
                    };
                    // A local activity: no activity task, and no workflow task after it, so a
                    // run's history is four events shorter (ADR 0219).
                    let finished = if patched_since_revision_1(ctx, revision, FINISH_LOCALLY) {
                        ctx.execute_local_activity(
                            RunActivities::finish_run,
                            finish,
                            finish_local_options(),
                        )
                        .await
                    } else {
                        ctx.execute_activity(RunActivities::finish_run, finish, finish_options())
                            .await
                    };
                    finished.map_err(|e| terminate(describe(&e)))?;
                    let name = status_name(status);
                    ctx.state_mut(|s| s.status = name.to_string());
                    return Ok(name.to_string());
                }
            }
        }
        Err(terminate(
            "the agent loop stopped without an outcome".into(),
        ))
    }

    /// A human approved or denied a tool call waiting for approval (svc-runs has recorded the
    /// decision in Redis first). A second decision for the same call changes nothing.
    #[signal]
    pub fn decide_tool_call(
        &mut self,
        _ctx: &mut SyncWorkflowContext<Self>,
        decision: ToolCallDecided,
    ) {
        self.decisions
            .entry(decision.tool_call_id)
            .or_insert(decision.approved);
    }

    /// Stops the run: the next model turn or tool call is not started, and a model turn in
    /// flight stops at its next token (svc-runs also raises the run's cancel flag in Redis).
    #[signal]
    pub fn cancel(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _reason: String) {
        self.cancel_requested = true;
    }

    #[query]
    pub fn status(&self, _ctx: &WorkflowContextView) -> String {
        self.status.clone()
    }
}

/// Waits for the decision on `tool_call_id` (the `decide_tool_call` signal) or the durable
/// timer, whichever comes first; `None` when the run was cancelled meanwhile. On the timer, an
/// activity closes the request — and returns a decision that reached Redis while its signal
/// had not arrived, so the answer svc-runs accepted is the one that counts.
async fn await_decision(
    ctx: &mut WorkflowContext<ChatAgentWorkflow>,
    spec: &RunSpec,
    tool_call_id: &str,
    timeout: Duration,
) -> WorkflowResult<Option<Input>> {
    let timer = std::pin::pin!(ctx.timer(timeout));
    let mut timer = timer;
    let answered = temporalio_sdk::workflows::select! {
        _ = timer.as_mut() => false,
        _ = ctx.wait_condition(|s: &ChatAgentWorkflow| {
            s.cancel_requested || s.decisions.contains_key(tool_call_id)
        }) => true,
    };
    if answered {
        // A timer left running would fire into a workflow that no longer waits for it.
        timer.cancel();
    }
    let (cancelled, decision) =
        ctx.state(|s| (s.cancel_requested, s.decisions.get(tool_call_id).copied()));
    if let Some(approved) = decision {
        return Ok(Some(Input::ApprovalDecision {
            tool_call_id: tool_call_id.to_string(),
            approved,
            timed_out: false,
        }));
    }
    if cancelled {
        return Ok(None);
    }
    let expire = ExpireApprovalInput {
        run_id: spec.run_id.clone(),
        tool_call_id: tool_call_id.to_string(),
    };
    match ctx
        .execute_activity(RunActivities::expire_approval, expire, approval_options())
        .await
    {
        Ok(input) => Ok(Some(loop_input(input)?)),
        Err(_) => Ok(Some(Input::ApprovalDecision {
            tool_call_id: tool_call_id.to_string(),
            approved: false,
            timed_out: true,
        })),
    }
}

/// An activity that failed for good (retries exhausted): the run ends with the reason.
fn activity_failed(err: &ActivityExecutionError) -> Input {
    Input::ModelFailed {
        code: "unavailable".into(),
        message: format!("the model turn could not run: {}", describe(err)),
    }
}

fn describe(err: &ActivityExecutionError) -> String {
    err.to_string()
}

pub fn status_name(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
        RunStatus::Running => "running",
        RunStatus::Queued => "queued",
        RunStatus::Unspecified => "unspecified",
    }
}
