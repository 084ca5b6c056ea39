//! The activities of a durable run: the I/O the workflow may not do itself. Each writes its
//! events under the ids `<step>-<seq>` the workflow gave it, so a retry (a worker killed mid-turn)
//! rewrites the same ids and the stream keeps exactly one copy of each event.

use std::sync::Arc;
use std::time::Duration;

use pa_agent::{Action, Input};
use pa_bus::run_events::EventSink;
use pa_kit::PaError;
use pa_kit::redis::Pool;
use pa_proto::v1::ag_ui_event::Event;
use pa_proto::v1::memory_service_client::MemoryServiceClient;
use pa_proto::v1::run_ledger_service_client::RunLedgerServiceClient;
use pa_proto::v1::run_service_client::RunServiceClient;
use pa_proto::v1::{AgUiEvent, FinishRunRequest};
use pa_turn_io::{OpenMessages, RunIo};
use temporalio_common::RetryPolicy;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tonic::transport::Channel;

use crate::curation as prompt;
use crate::early::Beat;
use crate::payloads::{
    ApprovalInput, CurateInput, ExpireApprovalInput, FinishInput, FirstTurnFound, FirstTurnHere,
    LoopInput, ModelTurnInput, ModelTurnOutput, ToolCallInput, agent_of, required,
    start_with_recall,
};

/// How long a run's first workflow task waits for the first turn begun on its worker to end
/// (ADR 0238): a turn that ends within it costs Temporal no activity task and no second workflow
/// task. Well below the workflow task's timeout (10 s), which is also how long a worker killed
/// meanwhile holds the run before another replays it.
pub const FIRST_TURN_HERE_WAIT: Duration = Duration::from_secs(2);

/// How many of a chat's latest messages the Curator reads.
const CURATOR_MESSAGES: usize = 30;

/// A worker that stops heartbeating for this long is taken for dead: its activity is retried.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
const HEARTBEAT_EVERY: Duration = Duration::from_millis(800);

pub fn retry_policy() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(200))
        .maximum_interval(Duration::from_secs(10))
        .maximum_attempts(10)
        .build()
}

/// The finish activity's retries: from 200 ms up to every 30 s, no attempt limit (bounded by
/// [`FINISH_OUTBOX_FOR`]).
pub fn finish_retry_policy() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(200))
        .maximum_interval(Duration::from_secs(30))
        .maximum_attempts(0)
        .build()
}

/// How long a run's outcome is retried into svc-runs before the workflow gives up.
pub const FINISH_OUTBOX_FOR: Duration = Duration::from_secs(24 * 3600);

/// How long one FinishRun call may take before the terminal event goes out without it.
const FINISH_CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct RunActivities {
    pub io: RunIo,
    pub ledger: RunLedgerServiceClient<Channel>,
    pub runs: RunServiceClient<Channel>,
    pub memory: MemoryServiceClient<Channel>,
    pub sink: EventSink,
    pub redis: Pool,
    pub maintenance: crate::maintenance::MaintenanceClients,
    /// First turns svc-worker's starter began before Temporal handed their activity out.
    pub early: crate::early::EarlyTurns,
    /// Large histories and tool results, stored once and passed by reference.
    pub claims: crate::claims::Claims,
    /// How a model turn that broke off is retried.
    pub turn_retry: TurnRetry,
    /// The activities running now (each holds a slot of the worker's).
    pub running: crate::running::RunningActivities,
}

/// Numbers a step's events: `<step>-<seq>`, seq from `first`.
fn ids(step: u64, first: u64, events: Vec<AgUiEvent>) -> Vec<(String, AgUiEvent)> {
    events
        .into_iter()
        .zip(first..)
        .map(|(event, seq)| (format!("{step}-{seq}"), event))
        .collect()
}

/// Writes a sub-run's events into the parent's stream under `<step>-<seq>` ids.
struct StepRelay<'a> {
    sink: &'a EventSink,
    run_id: &'a str,
    step: u64,
    next: u64,
}

impl pa_turn_io::EventRelay for StepRelay<'_> {
    async fn relay(&mut self, events: Vec<AgUiEvent>) -> Result<(), PaError> {
        let count = events.len() as u64;
        self.sink
            .emit_at(self.run_id, &ids(self.step, self.next, events))
            .await?;
        self.next += count;
        Ok(())
    }
}

/// Whether a failed call may succeed later (a store or service down, a timeout).
fn retryable(err: &PaError) -> bool {
    use pa_kit::ErrorCode;
    !matches!(
        err.code,
        ErrorCode::BadRequest
            | ErrorCode::Unauthenticated
            | ErrorCode::Forbidden
            | ErrorCode::PolicyDenied
            | ErrorCode::NotFound
            | ErrorCode::Conflict
            | ErrorCode::FailedPrecondition
            | ErrorCode::Unimplemented
    )
}

fn failure(err: PaError) -> ActivityError {
    ActivityError::from(std::io::Error::other(err.to_string()))
}

#[activities]
impl RunActivities {
    /// Writes the pending events, then streams one model turn through a copy of the workflow's
    /// loop, writing each step's events as they come. Returns the inputs it fed.
    #[activity]
    pub async fn model_turn(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ModelTurnInput,
    ) -> Result<ModelTurnOutput, ActivityError> {
        let run_id = required(input.spec.as_ref(), "spec")
            .map_err(bad_payload)?
            .run_id
            .clone();
        let _running = self
            .running
            .enter("model_turn", &run_id, ctx.info().attempt);
        if input.step == crate::payloads::FIRST_STEP
            && let Some(early) = self.early.claim(&run_id)
        {
            // svc-worker's starter began this turn when the workflow started.
            if let Some(output) = early.adopt(ctx.clone()).await {
                return output.map_err(|e| failure(PaError::unavailable(e)));
            }
        }
        self.traced_model_turn(Beat::Activity(Box::new(ctx)), input)
            .await
    }

    /// A local activity (ADR 0238): the run's first turn, when this worker began it (see `early`)
    /// and it ends within [`FIRST_TURN_HERE_WAIT`]: its output, so the turn needs no activity
    /// task. Otherwise nothing: the turn runs on (its `model_turn` activity adopts it) or was
    /// never begun here (the activity runs it), as when a replacement worker replays the task.
    #[activity]
    pub async fn first_turn_here(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: FirstTurnHere,
    ) -> Result<FirstTurnFound, ActivityError> {
        let _running = self
            .running
            .enter("first_turn_here", &input.run_id, ctx.info().attempt);
        Ok(
            match self
                .early
                .ended_within(&input.run_id, FIRST_TURN_HERE_WAIT)
                .await
            {
                Some(Ok(output)) => FirstTurnFound {
                    ended: true,
                    output: Some(output),
                },
                // Failed: its activity runs the turn again, as a retry would.
                Some(Err(_)) | None => FirstTurnFound::default(),
            },
        )
    }

    /// Writes the pending events, then runs one tool call (through svc-tools, or a sub-agent's
    /// run through svc-runs).
    #[activity]
    pub async fn tool_call(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ToolCallInput,
    ) -> Result<LoopInput, ActivityError> {
        let spec = required(input.spec.as_ref(), "spec").map_err(bad_payload)?;
        let call = required(input.call.as_ref(), "call").map_err(bad_payload)?;
        let _running = self
            .running
            .enter("tool_call", &spec.run_id, ctx.info().attempt);
        // The span continues the trace of the request that launched the run.
        let span = pa_turn_io::tool_call_span("svc-worker", spec, call);
        pa_kit::trace::adopt(&span, &spec.trace_parent);
        tracing::Instrument::instrument(self.tool_call_in_span(ctx, input), span)
            .await
            .map(LoopInput::from)
    }

    /// Opens a tool call's approval request (before anyone can see it, so no answer comes too
    /// early), then writes the pending events and the request event after them.
    #[activity]
    pub async fn request_approval(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ApprovalInput,
    ) -> Result<(), ActivityError> {
        let ApprovalInput {
            spec,
            step,
            mut pending,
            tool_call_id,
            event,
        } = input;
        let spec = required(spec, "spec").map_err(bad_payload)?;
        let event = required(event, "event").map_err(bad_payload)?;
        let _running = self
            .running
            .enter("request_approval", &spec.run_id, ctx.info().attempt);
        let work = async {
            pa_bus::approvals::open(&self.redis, &spec.run_id, &tool_call_id)
                .await
                .map_err(failure)?;
            pending.push(event);
            self.emit_pending(&spec.run_id, step, pending).await
        };
        heartbeating(&Beat::Activity(Box::new(ctx)), 0u64, work).await?
    }

    /// The approval's timer fired: closes the request and returns the decision that stands (one
    /// recorded just before, whose signal has not arrived, still counts).
    #[activity]
    pub async fn expire_approval(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ExpireApprovalInput,
    ) -> Result<LoopInput, ActivityError> {
        let _running = self
            .running
            .enter("expire_approval", &input.run_id, ctx.info().attempt);
        use pa_bus::approvals::ApprovalState;
        let expiring = pa_bus::approvals::expire(&self.redis, &input.run_id, &input.tool_call_id);
        let stands = heartbeating(&Beat::Activity(Box::new(ctx)), 0u64, expiring)
            .await?
            .map_err(failure)?;
        Ok(Input::ApprovalDecision {
            tool_call_id: input.tool_call_id,
            approved: stands == ApprovalState::Approved,
            timed_out: stands == ApprovalState::TimedOut,
        }
        .into())
    }

    /// The Curator's step: asks the chat's model for a rolling summary and durable facts and
    /// writes them to svc-memory (summary: one fixed id per chat; facts: world memories, which
    /// svc-memory de-duplicates). Returns how many memories were written.
    #[activity]
    pub async fn curate_chat(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: CurateInput,
    ) -> Result<u32, ActivityError> {
        let _running = self
            .running
            .enter("curate_chat", &input.chat_id, ctx.info().attempt);
        // It heartbeats (the model's answer may take a while): a killed worker's curation is
        // retried within HEARTBEAT_TIMEOUT, not after the start-to-close timeout.
        heartbeating(&Beat::Activity(Box::new(ctx)), 0u64, async {
            self.curate(input).await.map_err(failure)
        })
        .await?
    }

    /// One maintenance task (see `schedules`). Returns how many things it changed. It
    /// heartbeats while it works, so a killed worker's task is retried by another within
    /// HEARTBEAT_TIMEOUT rather than after the start-to-close timeout (ADR 0235).
    #[activity]
    pub async fn maintenance(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: crate::payloads::MaintenanceInput,
    ) -> Result<u64, ActivityError> {
        let _running = self
            .running
            .enter("maintenance", &input.task, ctx.info().attempt);
        let work = async {
            match input.task.as_str() {
                "trim_run_streams" => pa_bus::run_events::trim_streams(&self.redis)
                    .await
                    .map_err(|e| ActivityError::from(std::io::Error::other(e))),
                other => self.maintenance.run(other).await.map_err(failure),
            }
        };
        heartbeating(&Beat::Activity(Box::new(ctx)), 0u64, work).await?
    }

    /// Records the run's end in svc-runs, counts its tokens once, then writes the remaining
    /// events (RUN_FINISHED / RUN_ERROR last, so a client that sees it can read the stored reply).
    /// When svc-runs cannot record it (its store is down, or it is), the events are written all
    /// the same — a client must see its run end — and the activity fails, so Temporal retries
    /// the record (an outbox); a retry rewrites the same event ids, which the stream already
    /// holds: no terminal event twice. See ADR 0162.
    #[activity]
    pub async fn finish_run(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: FinishInput,
    ) -> Result<bool, ActivityError> {
        let FinishInput {
            spec,
            step,
            pending,
            ending,
            attempts,
        } = input;
        let spec = required(spec, "spec").map_err(bad_payload)?;
        let ending = pa_turn_io::RunEnding::from(required(ending, "ending").map_err(bad_payload)?);
        let _running = self
            .running
            .enter("finish_run", &spec.run_id, ctx.info().attempt);
        let identity = spec.identity.clone().unwrap_or_default();
        let request = FinishRunRequest {
            run_id: spec.run_id.clone(),
            status: ending.status as i32,
            usage: Some(ending.usage),
            error_code: ending.error_code.clone().unwrap_or_default(),
            error_message: ending.error_message.clone().unwrap_or_default(),
            assistant_text: ending.assistant_text.clone(),
            attempts,
            tainted: ending.tainted,
        };
        let mut ledger = self.ledger.clone();
        let recorded = match tokio::time::timeout(
            FINISH_CALL_TIMEOUT,
            ledger.finish_run(self.io.auth.request(&identity, request)),
        )
        .await
        {
            Ok(Ok(response)) => Ok(response.into_inner().recorded),
            Ok(Err(status)) => Err(PaError::from(status)),
            Err(_) => Err(PaError::unavailable(
                "svc-runs did not record the run's end in time",
            )),
        };
        if let Err(err) = &recorded {
            tracing::warn!(run_id = %spec.run_id, %err, "the run's end is not recorded yet: its events go out first, the record is retried");
        }
        self.emit_pending(&spec.run_id, step, pending).await?;
        match recorded {
            // A successful turn was queued for the Curator with the record (ADR 0242).
            Ok(recorded) => Ok(recorded),
            // A refusal (the run is not this tenant's, a forged request) will not change.
            Err(err) if !retryable(&err) => Err(ActivityError::application(
                temporalio_sdk::ApplicationFailure::non_retryable(std::io::Error::other(
                    err.to_string(),
                )),
            )),
            Err(err) => Err(failure(err)),
        }
    }
}

impl RunActivities {
    /// The chat's latest messages, oldest first.
    async fn recent_messages(
        &self,
        identity: &pa_proto::v1::Identity,
        chat_id: &str,
    ) -> Result<Vec<pa_proto::v1::ChatMessage>, PaError> {
        let mut runs = self.runs.clone();
        let mut token = String::new();
        let mut all = Vec::new();
        loop {
            let page = runs
                .list_messages(self.io.auth.request(
                    identity,
                    pa_proto::v1::ListMessagesRequest {
                        chat_id: chat_id.to_string(),
                        page_size: 500,
                        page_token: token,
                    },
                ))
                .await
                .map_err(PaError::from)?
                .into_inner();
            all.extend(page.messages);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let skip = all.len().saturating_sub(CURATOR_MESSAGES);
        Ok(all.split_off(skip))
    }
}

/// Runs `work`, heartbeating `details` (the last event seq written) while it is pending: a
/// model can think for a long time before its first token, and a silent worker is a dead one.
async fn heartbeating<F: std::future::Future>(
    beat: &Beat,
    details: u64,
    work: F,
) -> Result<F::Output, ActivityError> {
    tokio::pin!(work);
    let mut ticks = tokio::time::interval(HEARTBEAT_EVERY);
    ticks.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return Ok(out),
            _ = ticks.tick() => beat.record(details).await?,
        }
    }
}

/// A new run's first turn (see `early`), run by these activities.
pub fn first_turn_runner(
    activities: Arc<RunActivities>,
    input: crate::payloads::ChatRunInput,
) -> crate::early::TurnRunner {
    Box::new(move |beat| {
        Box::pin(async move {
            let turn = crate::payloads::first_turn(&input).map_err(|e| e.to_string())?;
            activities
                .traced_model_turn(beat, turn)
                .await
                .map_err(|e| format!("{e:?}"))
        })
    })
}

/// The activities' bodies, run inside their spans.
impl RunActivities {
    /// Writes the events the workflow held for this step (claim-checked ones fetched back)
    /// under the step's first ids, so a retried activity rewrites the same ids.
    async fn emit_pending(
        &self,
        run_id: &str,
        step: u64,
        pending: Vec<AgUiEvent>,
    ) -> Result<(), ActivityError> {
        let pending = self
            .claims
            .hydrate_events(run_id, pending)
            .await
            .map_err(failure)?;
        self.sink
            .emit_at(run_id, &ids(step, 0, pending))
            .await
            .map_err(failure)?;
        Ok(())
    }

    /// A chat's curation (the Curator's sweep, and `curate_chat` for Curator workflows opened
    /// before ADR 0242).
    pub(crate) async fn curate(&self, input: CurateInput) -> Result<u32, PaError> {
        let Some(last) = input.turns.last().cloned() else {
            return Ok(0);
        };
        let identity = input.identity.clone().unwrap_or_default();
        let messages = self.recent_messages(&identity, &input.chat_id).await?;
        if messages.is_empty() {
            return Ok(0);
        }
        // Taint and classification follow the data: what is curated from a reply of a run that
        // had read untrusted content is untrusted, and every memory keeps the chat's
        // classification (recall never brings it into a chat classified lower).
        let untrusted = messages.iter().any(|m| m.untrusted);
        let classification = self
            .runs
            .clone()
            .get_chat(self.io.auth.request(
                &identity,
                pa_proto::v1::GetChatRequest {
                    chat_id: input.chat_id.clone(),
                },
            ))
            .await
            .map_err(PaError::from)?
            .into_inner()
            .classification;
        let classification = pa_turn_io::effective_classification(classification);
        let transcript: String = messages
            .iter()
            .map(|m| format!("{}: {}\n", m.role, m.content))
            .collect();
        let request = pa_proto::v1::StreamChatRequest {
            label: last.label.clone(),
            messages: vec![
                pa_proto::v1::ChatTurnMessage {
                    role: "system".into(),
                    content: prompt::INSTRUCTIONS.into(),
                    ..Default::default()
                },
                pa_proto::v1::ChatTurnMessage {
                    role: "user".into(),
                    content: transcript,
                    ..Default::default()
                },
            ],
            run_id: last.run_id.clone(),
            // Governance checks the chat's own classification.
            classification,
            ..Default::default()
        };
        let mut models = self.io.models.clone();
        let mut stream = models
            .stream_chat(self.io.auth.request(&identity, request))
            .await
            .map_err(PaError::from)?
            .into_inner();
        let mut answer = String::new();
        while let Some(chunk) = stream.message().await.map_err(PaError::from)? {
            use pa_proto::v1::stream_chat_chunk::Chunk;
            match chunk.chunk {
                Some(Chunk::TextDelta(text)) => answer.push_str(&text),
                Some(Chunk::Failure(f)) => {
                    return Err(PaError::unavailable(f.message));
                }
                Some(Chunk::Finish(_)) => break,
                _ => {}
            }
        }
        let curated = prompt::parse(&answer);
        let source = pa_proto::v1::MemorySource {
            chat_id: input.chat_id.clone(),
            run_id: last.run_id.clone(),
            ..Default::default()
        };
        let mut items = Vec::new();
        if !curated.summary.is_empty() {
            items.push(pa_proto::v1::MemoryItem {
                id: format!("summary-{}", input.chat_id),
                scope: pa_proto::v1::MemoryScope::Chat as i32,
                chat_id: Some(input.chat_id.clone()),
                content: curated.summary,
                kind: pa_proto::v1::MemoryKind::Summary as i32,
                source: Some(source.clone()),
                untrusted,
                classification,
                ..Default::default()
            });
        }
        for fact in curated.facts {
            items.push(pa_proto::v1::MemoryItem {
                scope: pa_proto::v1::MemoryScope::World as i32,
                content: fact,
                kind: pa_proto::v1::MemoryKind::Fact as i32,
                source: Some(source.clone()),
                untrusted,
                classification,
                ..Default::default()
            });
        }
        let mut memory = self.memory.clone();
        let written = items.len() as u32;
        for item in items {
            memory
                .upsert(self.io.auth.request(
                    &identity,
                    pa_proto::v1::UpsertMemoryRequest {
                        item: Some(item),
                        no_dedup: false,
                    },
                ))
                .await
                .map_err(PaError::from)?;
        }
        Ok(written)
    }

    /// A model turn in its span (which continues the trace of the request that launched the
    /// run): the `model_turn` activity's body, and an early first turn's.
    pub(crate) async fn traced_model_turn(
        self: Arc<Self>,
        beat: Beat,
        input: ModelTurnInput,
    ) -> Result<ModelTurnOutput, ActivityError> {
        let spec = required(input.spec.as_ref(), "spec").map_err(bad_payload)?;
        let model_requests = input
            .agent
            .as_ref()
            .and_then(|agent| agent.usage)
            .map_or(0, |usage| usage.model_requests);
        let span = pa_turn_io::model_turn_span("svc-worker", spec, model_requests);
        pa_kit::trace::adopt(&span, &spec.trace_parent);
        let output =
            tracing::Instrument::instrument(self.model_turn_in_span(beat, input), span.clone())
                .await?;
        let tokens: u64 = output
            .inputs
            .iter()
            .map(|i| match &i.input {
                Some(pa_proto::workflow::v1::loop_input::Input::ModelFinished(finished)) => {
                    finished.usage.map_or(0, |usage| usage.total_tokens)
                }
                _ => 0,
            })
            .sum();
        span.record("tokens", tokens);
        span.record("attempts", output.attempts.len());
        Ok(output)
    }

    async fn model_turn_in_span(
        self: Arc<Self>,
        beat: Beat,
        input: ModelTurnInput,
    ) -> Result<ModelTurnOutput, ActivityError> {
        let ModelTurnInput {
            spec,
            step,
            mut pending,
            agent,
            request,
            tools,
            start,
        } = input;
        let spec = required(spec, "spec").map_err(bad_payload)?;
        let mut agent = agent_of(agent).map_err(bad_payload)?;
        let mut request = request.unwrap_or_default();
        let run_id = spec.run_id.as_str();
        let mut output = ModelTurnOutput::default();
        if let Some(start) = start {
            // The run's first turn: the loop starts here, with the recall (when svc-runs started
            // the run while its recall was running) in front of the history, and its first
            // request is this turn's.
            let recalled = match start.recall_wait_ms {
                0 => None,
                ms => {
                    let wait = Duration::from_millis(ms);
                    let recall = pa_turn_io::await_recall(&self.redis, run_id, wait);
                    heartbeating(&beat, 0, recall).await?
                }
            };
            let started = start_with_recall(start, recalled);
            let actions = agent
                .step(started.clone())
                .map_err(|e| ActivityError::from(std::io::Error::other(e.to_string())))?;
            // The workflow starts its loop with the history by reference (see `claims`).
            output.start = Some(
                self.claim_start(run_id, started)
                    .await
                    .map_err(failure)?
                    .into(),
            );
            let mut first_request = None;
            for action in actions {
                match action {
                    Action::Emit(event) if !event.is_terminal() => pending.push(event),
                    Action::CallModel(asked) => first_request = Some(asked),
                    _ => {}
                }
            }
            let Some(asked) = first_request else {
                // The loop ended at its start: the workflow goes on from the same start.
                let pending = self
                    .claims
                    .hydrate_events(run_id, pending)
                    .await
                    .map_err(failure)?;
                beat.recorded().await?;
                self.sink
                    .emit_at(run_id, &ids(step, 0, pending))
                    .await
                    .map_err(failure)?;
                return Ok(output);
            };
            request = asked;
        }
        request.messages = self
            .claims
            .hydrate_messages(run_id, request.messages)
            .await
            .map_err(failure)?;
        let pending = self
            .claims
            .hydrate_events(run_id, pending)
            .await
            .map_err(failure)?;
        let first_seq = pending.len() as u64;
        // Where the step's events go on: after what an earlier attempt of it wrote. A retried
        // activity, or the first attempt of a turn a dead worker had begun early, may find
        // events of this step in the stream (ADR 0245). Nothing else can: an early turn is
        // its run's first writer (it writes only once its workflow is new), and a later step's
        // first attempt is the first to have that step, so neither reads.
        let Resume {
            mut seq,
            mut discards,
            orphan,
        } = if beat.is_early() || (beat.attempt() == 1 && step != crate::payloads::FIRST_STEP) {
            Resume {
                seq: first_seq,
                discards: 0,
                orphan: None,
            }
        } else {
            self.resume_point(run_id, step, first_seq)
                .await
                .map_err(failure)?
        };
        let mut pending = ids(step, 0, pending);
        // A message an earlier attempt left unfinished (its worker died) is withdrawn before
        // this attempt streams: the model answers anew, and a sampling model's new tokens must
        // not continue the dead attempt's (ADR 0245).
        if let Some(orphan) = orphan {
            let events = ids(step, seq, withdrawal(&orphan));
            seq += events.len() as u64;
            discards += 1;
            pending.extend(events);
        }
        // An early turn asks the model at once but writes once its workflow is recorded.
        let pending = async {
            beat.recorded().await?;
            self.sink.emit_at(run_id, &pending).await.map_err(failure)
        };
        let cancel_flag = pa_bus::run_events::cancel_requested(&self.redis, run_id);
        tokio::pin!(cancel_flag);
        // The pending events are written while the model call opens (cancelled or not); the
        // turn's own events follow them.
        let opening = async {
            tokio::select! {
                started = heartbeating(&beat, seq, self.io.start_model_turn(&spec, request.clone(), &tools)) => started,
                _ = &mut cancel_flag => Ok(Err(pa_turn_io::cancelled())),
            }
        };
        let (written, started) = tokio::join!(pending, opening);
        written?;
        let mut started = started?;
        // Each attempt steps a fresh copy of the loop as the workflow has it: a broken-off
        // attempt leaves no trace in what the workflow is fed.
        let base = agent;
        let mut tries = 0u32;
        loop {
            let mut agent = base.clone();
            let mut attempt = Attempt::default();
            let broke = match started {
                Err(ended) if pa_turn_io::relay_unreachable(&ended) => describe_failure(&ended),
                Err(ended) => {
                    let events = step_loop(&mut agent, ended.clone())?;
                    output.inputs.push(ended.into());
                    self.emit_turn(run_id, step, &mut seq, discards, &mut attempt, events)
                        .await?;
                    return Ok(output);
                }
                Ok(mut turn) => loop {
                    let next = tokio::select! {
                        next = heartbeating(&beat, seq, turn.next(&mut output.attempts)) => next?,
                        _ = &mut cancel_flag => Some(pa_turn_io::cancelled()),
                    };
                    let Some(input) = next else {
                        output.inputs = attempt.inputs.into_iter().map(LoopInput::from).collect();
                        return Ok(output);
                    };
                    let cancel = matches!(input, Input::Cancel { .. });
                    if !cancel && let Some(reason) = turn.broke() {
                        break reason.to_string();
                    }
                    let ends = pa_turn_io::ends_model_turn(&input) || cancel;
                    let events = step_loop(&mut agent, input.clone())?;
                    attempt.inputs.push(input);
                    self.emit_turn(run_id, step, &mut seq, discards, &mut attempt, events)
                        .await?;
                    if ends {
                        output.inputs = attempt.inputs.into_iter().map(LoopInput::from).collect();
                        return Ok(output);
                    }
                    // Progress is a heartbeat too (the SDK throttles what it sends);
                    // `heartbeating` only covers the waits between tokens.
                    beat.record(seq).await?;
                },
            };
            tries += 1;
            tracing::warn!(run_id, step, tries, reason = %broke, "a model turn broke off");
            if attempt.wrote_message() {
                // The partial message is closed and marked discarded; the next attempt streams
                // under a new message id.
                let events = discard_events(&mut agent, discards, &attempt, &broke)?;
                let events = ids(step, seq, events);
                seq += events.len() as u64;
                self.sink.emit_at(run_id, &events).await.map_err(failure)?;
                discards += 1;
            }
            let failed_for_good = tries >= self.turn_retry.attempts;
            let backoff = async {
                if !failed_for_good {
                    tokio::time::sleep(self.turn_retry.delay(tries)).await;
                }
            };
            let stop = tokio::select! {
                waited = heartbeating(&beat, seq, backoff) => { waited?; None }
                _ = &mut cancel_flag => Some(pa_turn_io::cancelled()),
            };
            let stop = stop.or_else(|| {
                failed_for_good.then(|| Input::ModelFailed {
                    code: "unavailable".into(),
                    message: format!("the model turn failed {tries} times (retryable): {broke}"),
                })
            });
            if let Some(stop) = stop {
                let mut agent = base.clone();
                let events = step_loop(&mut agent, stop.clone())?;
                output.inputs = vec![stop.into()];
                let events = ids(step, seq, events);
                self.sink.emit_at(run_id, &events).await.map_err(failure)?;
                return Ok(output);
            }
            started = tokio::select! {
                started = heartbeating(&beat, seq, self.io.start_model_turn(&spec, request.clone(), &tools)) => started?,
                _ = &mut cancel_flag => Err(pa_turn_io::cancelled()),
            };
        }
    }

    /// Writes a turn attempt's events (message ids of a retry tagged `-retry<n>`) after `seq`.
    async fn emit_turn(
        &self,
        run_id: &str,
        step: u64,
        seq: &mut u64,
        discards: u32,
        attempt: &mut Attempt,
        events: Vec<AgUiEvent>,
    ) -> Result<(), ActivityError> {
        let events = retag(events, discards);
        attempt.saw(&events);
        let events = ids(step, *seq, events);
        *seq += events.len() as u64;
        self.sink.emit_at(run_id, &events).await.map_err(failure)?;
        Ok(())
    }

    /// The start the workflow feeds its loop: the history by reference when it is large.
    async fn claim_start(&self, run_id: &str, started: Input) -> Result<Input, PaError> {
        match started {
            Input::Start {
                history,
                notices,
                high_privilege_tools,
                approval_always_tools,
                tainted,
            } => Ok(Input::Start {
                history: self.claims.check_history(run_id, history).await?,
                notices,
                high_privilege_tools,
                approval_always_tools,
                tainted,
            }),
            other => Ok(other),
        }
    }

    /// Where a model turn's events go: after the last `message_discarded` an earlier attempt of
    /// the step wrote, with as many discards behind it; and the messages and tool calls an
    /// attempt after that discard began, if any (its worker died mid-turn: nothing withdrew it).
    async fn resume_point(
        &self,
        run_id: &str,
        step: u64,
        first_seq: u64,
    ) -> Result<Resume, PaError> {
        use deadpool_redis::redis;
        let mut conn = self
            .redis
            .get()
            .await
            .map_err(|e| PaError::unavailable(format!("event stream store: {e}")))?;
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(pa_bus::run_events::stream_key(run_id))
            .arg(format!("{step}-{first_seq}"))
            .arg(format!("{step}-{}", u64::MAX))
            .query_async(&mut conn)
            .await
            .map_err(|e| PaError::unavailable(format!("event stream store: {e}")))?;
        let mut resume = Resume {
            seq: first_seq,
            discards: 0,
            orphan: None,
        };
        let mut orphan = OpenMessages::default();
        // The step's last event after the last discard (where a withdrawal goes).
        let mut after_orphan = first_seq;
        for (id, fields) in entries {
            let Some(seq) = id.rsplit_once('-').and_then(|(_, s)| s.parse::<u64>().ok()) else {
                continue;
            };
            for (_, json) in &fields {
                let Ok(event) = AgUiEvent::from_json(json) else {
                    continue;
                };
                if event.subagent_run_id.is_none()
                    && matches!(&event.event, Some(Event::Custom(c)) if c.name == MESSAGE_DISCARDED)
                {
                    resume.seq = seq + 1;
                    resume.discards += 1;
                    orphan = OpenMessages::default();
                } else {
                    orphan.saw(&event);
                }
                after_orphan = seq + 1;
            }
        }
        // Without a message or a tool call begun, the same ids are written again (the stream
        // keeps the first copy): a replay of what the dead attempt wrote (ADR 0247).
        if orphan.began() {
            resume.seq = after_orphan;
            resume.orphan = Some(orphan);
        }
        Ok(resume)
    }

    async fn tool_call_in_span(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ToolCallInput,
    ) -> Result<Input, ActivityError> {
        let ToolCallInput {
            spec,
            step,
            pending,
            call,
            offered,
            spent,
            tainted,
        } = input;
        let spec = required(spec, "spec").map_err(bad_payload)?;
        let call = required(call, "call").map_err(bad_payload)?;
        let spent = spent.unwrap_or_default();
        let written = pending.len() as u64;
        self.emit_pending(&spec.run_id, step, pending).await?;
        // A sub-run's events go under this step's ids after the pending ones, so a retry
        // rewrites the same ids and nothing repeats.
        let mut relay = StepRelay {
            sink: &self.sink,
            run_id: &spec.run_id,
            step,
            next: written,
        };
        let run = self
            .io
            .try_run_tool(&spec, call, &offered, spent, tainted, &mut relay);
        let result = heartbeating(&Beat::Activity(Box::new(ctx)), 0u64, run)
            .await?
            // svc-tools (or a store behind it) could not be reached: Temporal retries the call.
            .map_err(|reason| failure(PaError::unavailable(reason)))?;
        // A large result travels by reference (see `claims`).
        match result {
            Input::ToolResult {
                tool_call_id,
                content,
                is_error: false,
                untrusted,
                nested,
            } => Ok(Input::ToolResult {
                tool_call_id,
                content: self
                    .claims
                    .check_content(&spec.run_id, content)
                    .await
                    .map_err(failure)?,
                is_error: false,
                untrusted,
                nested,
            }),
            other => Ok(other),
        }
    }
}

/// A payload no worker writes (a corrupt or foreign history): retrying cannot help.
fn bad_payload(reason: impl std::fmt::Display) -> ActivityError {
    ActivityError::application(temporalio_sdk::ApplicationFailure::non_retryable(
        std::io::Error::other(format!("a malformed workflow payload: {reason}")),
    ))
}

/// The CUSTOM event that marks a broken-off attempt's message as discarded (ADR 0160).
pub const MESSAGE_DISCARDED: &str = "message_discarded";

/// How a durable model turn that breaks off (svc-models or the provider stream died) is retried:
/// `PA_MODEL_TURN_ATTEMPTS` attempts in all (default 4), waiting `PA_MODEL_TURN_RETRY_MS`
/// (default 500), doubled after each, at most 5 s, between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TurnRetry {
    pub attempts: u32,
    pub first_delay: Duration,
}

impl Default for TurnRetry {
    fn default() -> Self {
        Self {
            attempts: 4,
            first_delay: Duration::from_millis(500),
        }
    }
}

impl TurnRetry {
    /// The wait after the `tries`th broken attempt.
    pub fn delay(&self, tries: u32) -> Duration {
        let factor = 1u32 << tries.saturating_sub(1).min(16);
        self.first_delay
            .saturating_mul(factor)
            .min(Duration::from_secs(5))
    }
}

/// Where a model turn's events go on.
struct Resume {
    seq: u64,
    discards: u32,
    /// What an earlier attempt began after the last discard, to be withdrawn first.
    orphan: Option<OpenMessages>,
}

/// Closes what a dead attempt left open and marks its messages discarded, as a broken-off
/// attempt's own [`discard_events`] would.
fn withdrawal(orphan: &OpenMessages) -> Vec<AgUiEvent> {
    let mut events = orphan.closing_events();
    events.push(discarded(
        orphan,
        "the worker running this turn stopped; the model is asked again",
    ));
    events
}

/// One attempt of a model turn: the inputs it fed and the messages it opened.
#[derive(Default)]
struct Attempt {
    inputs: Vec<Input>,
    messages: OpenMessages,
}

impl Attempt {
    fn saw(&mut self, events: &[AgUiEvent]) {
        events.iter().for_each(|event| self.messages.saw(event));
    }

    fn wrote_message(&self) -> bool {
        self.messages.began()
    }
}

/// Steps the loop; the events it emits, the run's end left out (the finish activity writes it
/// once the outcome is stored).
fn step_loop(
    agent: &mut pa_agent::AgentLoop,
    input: Input,
) -> Result<Vec<AgUiEvent>, ActivityError> {
    let actions = agent
        .step(input)
        .map_err(|e| ActivityError::from(std::io::Error::other(e.to_string())))?;
    Ok(actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Emit(event) if !event.is_terminal() => Some(event),
            _ => None,
        })
        .collect())
}

fn describe_failure(input: &Input) -> String {
    match input {
        Input::ModelFailed { message, .. } => format!("the model relay is unreachable: {message}"),
        _ => "the model relay is unreachable".into(),
    }
}

/// Closes a broken-off attempt's open messages (the loop copy it stepped closes them as a
/// failure would; the run's end is left out) and marks them discarded: one CUSTOM
/// `message_discarded` `{messageId, reason}` (`reasoningMessageId` too when it streamed
/// reasoning).
fn discard_events(
    agent: &mut pa_agent::AgentLoop,
    discards: u32,
    attempt: &Attempt,
    reason: &str,
) -> Result<Vec<AgUiEvent>, ActivityError> {
    let closing = step_loop(
        agent,
        Input::ModelFailed {
            code: "unavailable".into(),
            message: reason.into(),
        },
    )?;
    let mut events = retag(closing, discards);
    events.push(discarded(&attempt.messages, reason));
    Ok(events)
}

/// The CUSTOM `message_discarded` `{messageId, reason}` (`reasoningMessageId` too when the
/// attempt streamed reasoning beside its text; `toolCallIds` when it announced tool calls, which
/// the next attempt's answer replaces as well).
fn discarded(messages: &OpenMessages, reason: &str) -> AgUiEvent {
    let mut value = serde_json::json!({ "reason": reason });
    match (messages.text_id(), messages.reasoning_id()) {
        (Some(text), reasoning) => {
            value["messageId"] = text.into();
            if let Some(reasoning) = reasoning {
                value["reasoningMessageId"] = reasoning.into();
            }
        }
        (None, Some(reasoning)) => value["messageId"] = reasoning.into(),
        (None, None) => {}
    }
    let calls = messages.tool_call_ids();
    if !calls.is_empty() {
        value["toolCallIds"] = calls.into();
    }
    AgUiEvent::new(Event::Custom(pa_proto::v1::Custom {
        name: MESSAGE_DISCARDED.into(),
        value_json: value.to_string(),
        timestamp: None,
    }))
}

/// A retried attempt's events: its messages get ids of their own (`<id>-retry<n>`), so a client
/// can drop the discarded ones by id.
fn retag(mut events: Vec<AgUiEvent>, discards: u32) -> Vec<AgUiEvent> {
    if discards == 0 {
        return events;
    }
    let tag = |id: &mut String| {
        if !id.is_empty() {
            id.push_str(&format!("-retry{discards}"));
        }
    };
    for event in &mut events {
        match event.event.as_mut() {
            Some(Event::TextMessageStart(m)) => tag(&mut m.message_id),
            Some(Event::TextMessageContent(m)) => tag(&mut m.message_id),
            Some(Event::TextMessageEnd(m)) => tag(&mut m.message_id),
            Some(Event::ReasoningStart(m)) => tag(&mut m.message_id),
            Some(Event::ReasoningMessageStart(m)) => tag(&mut m.message_id),
            Some(Event::ReasoningMessageContent(m)) => tag(&mut m.message_id),
            Some(Event::ReasoningMessageEnd(m)) => tag(&mut m.message_id),
            Some(Event::ReasoningEnd(m)) => tag(&mut m.message_id),
            Some(Event::ToolCallStart(m)) => {
                if let Some(parent) = m.parent_message_id.as_mut() {
                    tag(parent);
                }
            }
            _ => {}
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use pa_agent::{AgentLoop, RunIds, TurnMessage};

    fn kinds(events: &[AgUiEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match &e.event {
                Some(Event::Custom(c)) => format!("{}:{}", c.name, c.value_json),
                Some(Event::TextMessageEnd(m)) => format!("text_end:{}", m.message_id),
                Some(Event::ReasoningMessageEnd(m)) => {
                    format!("reasoning_message_end:{}", m.message_id)
                }
                Some(Event::ReasoningEnd(m)) => format!("reasoning_end:{}", m.message_id),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_dead_attempts_open_message_is_closed_and_withdrawn_and_a_finished_one_only_withdrawn() {
        use pa_proto::v1::{ReasoningStart, TextMessageContent, TextMessageEnd, TextMessageStart};
        let mut orphan = OpenMessages::default();
        assert!(!orphan.began(), "nothing written, nothing to withdraw");
        orphan.saw(&AgUiEvent::new(Event::ReasoningStart(ReasoningStart {
            message_id: "r-retry1".into(),
            timestamp: None,
        })));
        orphan.saw(&AgUiEvent::new(Event::TextMessageStart(TextMessageStart {
            message_id: "m-retry1".into(),
            role: "assistant".into(),
            timestamp: None,
        })));
        orphan.saw(&AgUiEvent::new(Event::TextMessageContent(
            TextMessageContent {
                message_id: "m-retry1".into(),
                delta: "half an ans".into(),
                timestamp: None,
            },
        )));
        assert!(orphan.began());
        let reason = "the worker running this turn stopped; the model is asked again";
        assert_eq!(
            kinds(&withdrawal(&orphan)),
            vec![
                "reasoning_end:r-retry1".to_string(),
                "text_end:m-retry1".to_string(),
                format!(
                    "{MESSAGE_DISCARDED}:{}",
                    serde_json::json!({"reason": reason, "messageId": "m-retry1", "reasoningMessageId": "r-retry1"})
                ),
            ]
        );
        // A message the dead attempt finished is withdrawn without a second end.
        orphan.saw(&AgUiEvent::new(Event::TextMessageEnd(TextMessageEnd {
            message_id: "m-retry1".into(),
            timestamp: None,
        })));
        let withdrawn = kinds(&withdrawal(&orphan));
        assert!(
            !withdrawn.iter().any(|k| k.starts_with("text_end")),
            "{withdrawn:?}"
        );
        assert!(
            withdrawn
                .last()
                .is_some_and(|k| k.starts_with(MESSAGE_DISCARDED))
        );
    }

    fn started() -> AgentLoop {
        let mut agent = AgentLoop::new(
            RunIds {
                thread_id: "c".into(),
                run_id: "r".into(),
                parent_run_id: None,
                assistant_message_id: "m".into(),
            },
            Default::default(),
        );
        agent
            .step(Input::Start {
                history: vec![TurnMessage::new("user", "hi")],
                notices: vec![],
                high_privilege_tools: vec![],
                approval_always_tools: vec![],
                tainted: false,
            })
            .expect("start");
        agent
    }

    #[test]
    fn a_broken_attempt_is_closed_and_discarded_and_its_retry_has_a_new_id() {
        let base = started();
        let mut agent = base.clone();
        let mut attempt = Attempt::default();
        let events = step_loop(&mut agent, Input::ModelReasoning("hmm".into())).expect("step");
        let mut events2 = step_loop(&mut agent, Input::ModelText("Part".into())).expect("step");
        let mut all = events;
        all.append(&mut events2);
        attempt.saw(&all);
        assert!(attempt.wrote_message());
        let discard = discard_events(&mut agent, 0, &attempt, "relay died").expect("discard");
        let types: Vec<&str> = discard.iter().map(|e| e.type_name()).collect();
        assert_eq!(
            types,
            ["TEXT_MESSAGE_END", "CUSTOM"],
            "no RUN_ERROR: {types:?}"
        );
        let Some(Event::Custom(custom)) = &discard[1].event else {
            panic!("a CUSTOM event");
        };
        let value: serde_json::Value = serde_json::from_str(&custom.value_json).expect("json");
        assert_eq!(value["messageId"], "m");
        assert_eq!(value["reasoningMessageId"], "m-reasoning");
        assert_eq!(value["reason"], "relay died");
        // The retry steps a fresh copy: its message gets an id of its own.
        let mut retry = base.clone();
        let events = retag(
            step_loop(&mut retry, Input::ModelText("Whole".into())).expect("step"),
            1,
        );
        let Some(Event::TextMessageStart(start)) = &events[0].event else {
            panic!("a TEXT_MESSAGE_START");
        };
        assert_eq!(start.message_id, "m-retry1");
    }

    #[test]
    fn retries_back_off_and_stop_growing() {
        let retry = TurnRetry::default();
        assert_eq!(retry.delay(1), Duration::from_millis(500));
        assert_eq!(retry.delay(2), Duration::from_secs(1));
        assert_eq!(retry.delay(40), Duration::from_secs(5));
    }
}
