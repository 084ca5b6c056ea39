//! The activities of a durable run: the I/O the workflow may not do itself. Each writes its
//! events under the ids `<step>-<seq>` the workflow gave it, so a retry (a worker killed mid-turn)
//! rewrites the same ids and the stream keeps exactly one copy of each event.

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::Pool;
use pa_agent::{Action, Input};
use pa_kit::PaError;
use pa_kit::run_events::EventSink;
use pa_proto::v1::memory_service_client::MemoryServiceClient;
use pa_proto::v1::run_ledger_service_client::RunLedgerServiceClient;
use pa_proto::v1::run_service_client::RunServiceClient;
use pa_proto::v1::{AgUiEvent, FinishRunRequest};
use pa_runner::RunIo;
use temporalio_common::RetryPolicy;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tonic::transport::Channel;

use crate::chat::{
    ApprovalInput, ExpireApprovalInput, FinishInput, ModelTurnInput, ModelTurnOutput, ToolCallInput,
};
use crate::curator::{CurateInput, prompt};

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

#[derive(Clone)]
pub struct RunActivities {
    pub io: RunIo,
    pub ledger: RunLedgerServiceClient<Channel>,
    pub runs: RunServiceClient<Channel>,
    pub memory: MemoryServiceClient<Channel>,
    pub sink: EventSink,
    pub redis: Pool,
    pub maintenance: crate::schedules::MaintenanceClients,
    /// First turns svc-worker's starter began before Temporal handed their activity out.
    pub early: crate::early::EarlyTurns,
}

/// Where a model turn's heartbeats go: its activity's context, or, for a turn begun before its
/// activity ran (`early`), the activity that adopts it, once one has.
#[derive(Clone)]
pub enum Beat {
    Activity(Box<ActivityContext>),
    Early(Arc<std::sync::OnceLock<ActivityContext>>),
}

impl Beat {
    async fn record(&self, seq: u64) -> Result<(), ActivityError> {
        let ctx = match self {
            Beat::Activity(ctx) => Some(ctx.as_ref()),
            Beat::Early(adopter) => adopter.get(),
        };
        match ctx {
            Some(ctx) => ctx
                .record_heartbeat(seq)
                .await
                .map_err(|e| ActivityError::from(std::io::Error::other(e.to_string()))),
            None => Ok(()),
        }
    }
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

impl pa_runner::EventRelay for StepRelay<'_> {
    async fn relay(&mut self, events: Vec<AgUiEvent>) -> Result<(), PaError> {
        let count = events.len() as u64;
        self.sink
            .emit_at(self.run_id, &ids(self.step, self.next, events))
            .await?;
        self.next += count;
        Ok(())
    }
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
        if input.step == crate::chat::FIRST_STEP
            && let Some(early) = self.early.claim(&input.spec.run_id)
        {
            // svc-worker's starter began this turn when the workflow started.
            if let Some(output) = early.adopt(ctx.clone()).await {
                return output.map_err(|e| failure(PaError::unavailable(e)));
            }
        }
        self.traced_model_turn(Beat::Activity(Box::new(ctx)), input)
            .await
    }

    /// Writes the pending events, then runs one tool call (through svc-tools, or a sub-agent's
    /// run through svc-runs).
    #[activity]
    pub async fn tool_call(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ToolCallInput,
    ) -> Result<Input, ActivityError> {
        // The span continues the trace of the request that launched the run.
        let span = pa_runner::tool_call_span("svc-worker", &input.spec, &input.call);
        pa_kit::trace::adopt(&span, &input.spec.trace_parent);
        tracing::Instrument::instrument(self.tool_call_in_span(ctx, input), span).await
    }

    /// Opens a tool call's approval request (before anyone can see it, so no answer comes too
    /// early), then writes the pending events and the request event after them.
    #[activity]
    pub async fn request_approval(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ApprovalInput,
    ) -> Result<(), ActivityError> {
        let ApprovalInput {
            spec,
            step,
            mut pending,
            tool_call_id,
            event,
        } = input;
        pa_kit::approvals::open(&self.redis, &spec.run_id, &tool_call_id)
            .await
            .map_err(failure)?;
        pending.push(event);
        self.sink
            .emit_at(&spec.run_id, &ids(step, 0, pending))
            .await
            .map_err(failure)?;
        Ok(())
    }

    /// The approval's timer fired: closes the request and returns the decision that stands (one
    /// recorded just before, whose signal has not arrived, still counts).
    #[activity]
    pub async fn expire_approval(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ExpireApprovalInput,
    ) -> Result<Input, ActivityError> {
        use pa_kit::approvals::ApprovalState;
        let stands = pa_kit::approvals::expire(&self.redis, &input.run_id, &input.tool_call_id)
            .await
            .map_err(failure)?;
        Ok(Input::ApprovalDecision {
            tool_call_id: input.tool_call_id,
            approved: stands == ApprovalState::Approved,
            timed_out: stands == ApprovalState::TimedOut,
        })
    }

    /// The Curator's step: asks the chat's model for a rolling summary and durable facts and
    /// writes them to svc-memory (summary: one fixed id per chat; facts: world memories, which
    /// svc-memory de-duplicates). Returns how many memories were written.
    #[activity]
    pub async fn curate_chat(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: CurateInput,
    ) -> Result<u32, ActivityError> {
        let Some(last) = input.turns.last().cloned() else {
            return Ok(0);
        };
        let messages = self
            .recent_messages(&input.identity, &input.chat_id)
            .await
            .map_err(failure)?;
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
                &input.identity,
                pa_proto::v1::GetChatRequest {
                    chat_id: input.chat_id.clone(),
                },
            ))
            .await
            .map_err(|s| failure(PaError::from(s)))?
            .into_inner()
            .classification;
        let classification = pa_runner::effective_classification(classification);
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
            .stream_chat(self.io.auth.request(&input.identity, request))
            .await
            .map_err(|s| failure(PaError::from(s)))?
            .into_inner();
        let mut answer = String::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| failure(PaError::from(s)))?
        {
            use pa_proto::v1::stream_chat_chunk::Chunk;
            match chunk.chunk {
                Some(Chunk::TextDelta(text)) => answer.push_str(&text),
                Some(Chunk::Failure(f)) => {
                    return Err(failure(PaError::unavailable(f.message)));
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
                    &input.identity,
                    pa_proto::v1::UpsertMemoryRequest {
                        item: Some(item),
                        no_dedup: false,
                    },
                ))
                .await
                .map_err(|s| failure(PaError::from(s)))?;
        }
        Ok(written)
    }

    /// One maintenance task (see `schedules`). Returns how many things it changed.
    #[activity]
    pub async fn maintenance(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: crate::schedules::MaintenanceInput,
    ) -> Result<u64, ActivityError> {
        match input.task.as_str() {
            "trim_run_streams" => crate::schedules::trim_run_streams(&self.redis)
                .await
                .map_err(|e| ActivityError::from(std::io::Error::other(e))),
            other => heartbeating(
                &Beat::Activity(Box::new(ctx)),
                0u64,
                self.maintenance.run(other),
            )
            .await?
            .map_err(failure),
        }
    }

    /// Records the run's end in svc-runs, counts its tokens once, then writes the remaining
    /// events (RUN_FINISHED / RUN_ERROR last, so a client that sees it can read the stored reply).
    #[activity]
    pub async fn finish_run(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: FinishInput,
    ) -> Result<bool, ActivityError> {
        let FinishInput {
            spec,
            step,
            pending,
            ending,
            attempts,
        } = input;
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
        let recorded = ledger
            .finish_run(self.io.auth.request(&identity, request))
            .await
            .map_err(|s| failure(PaError::from(s)))?
            .into_inner()
            .recorded;
        self.sink
            .emit_at(&spec.run_id, &ids(step, 0, pending))
            .await
            .map_err(failure)?;
        Ok(recorded)
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

/// The activities' bodies, run inside their spans.
impl RunActivities {
    /// A model turn in its span (which continues the trace of the request that launched the
    /// run): the `model_turn` activity's body, and an early first turn's.
    pub(crate) async fn traced_model_turn(
        self: Arc<Self>,
        beat: Beat,
        input: ModelTurnInput,
    ) -> Result<ModelTurnOutput, ActivityError> {
        let span = pa_runner::model_turn_span(
            "svc-worker",
            &input.spec,
            input.agent.usage().model_requests,
        );
        pa_kit::trace::adopt(&span, &input.spec.trace_parent);
        let output =
            tracing::Instrument::instrument(self.model_turn_in_span(beat, input), span.clone())
                .await?;
        let tokens: u64 = output
            .inputs
            .iter()
            .map(|i| match i {
                Input::ModelFinished { usage } => usage.total_tokens,
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
            mut agent,
            mut request,
            tools,
            start,
        } = input;
        let mut output = ModelTurnOutput::default();
        if let Some(start) = start {
            // The run's first turn: the loop starts here, with the recall (when svc-runs started
            // the run while its recall was running) in front of the history, and its first
            // request is this turn's.
            let recalled = match start.recall_wait_ms {
                0 => None,
                ms => {
                    let wait = Duration::from_millis(ms);
                    let recall = pa_runner::await_recall(&self.redis, &spec.run_id, wait);
                    heartbeating(&beat, 0, recall).await?
                }
            };
            let started = start.with_recall(recalled);
            let actions = agent
                .step(started.clone())
                .map_err(|e| ActivityError::from(std::io::Error::other(e.to_string())))?;
            output.start = Some(started);
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
                self.sink
                    .emit_at(&spec.run_id, &ids(step, 0, pending))
                    .await
                    .map_err(failure)?;
                return Ok(output);
            };
            request = asked;
        }
        let mut seq = pending.len() as u64;
        let pending = ids(step, 0, pending);
        let pending = self.sink.emit_at(&spec.run_id, &pending);
        let mut feed =
            |input: Input, output: &mut ModelTurnOutput| -> Result<Vec<AgUiEvent>, ActivityError> {
                let actions = agent
                    .step(input.clone())
                    .map_err(|e| ActivityError::from(std::io::Error::other(e.to_string())))?;
                output.inputs.push(input);
                Ok(actions
                    .into_iter()
                    .filter_map(|a| match a {
                        // The end of the run goes out once it is recorded (the finish activity).
                        Action::Emit(event) if !event.is_terminal() => Some(event),
                        _ => None,
                    })
                    .collect())
            };
        let cancel_flag = pa_kit::run_events::cancel_requested(&self.redis, &spec.run_id);
        tokio::pin!(cancel_flag);
        // The pending events are written while the model call opens (cancelled or not); the
        // turn's own events follow them.
        let opening = async {
            tokio::select! {
                started = heartbeating(&beat, seq, self.io.start_model_turn(&spec, request, &tools)) => started,
                _ = &mut cancel_flag => Ok(Err(pa_runner::cancelled())),
            }
        };
        let (written, started) = tokio::join!(pending, opening);
        written.map_err(failure)?;
        let started = started?;
        let mut turn = match started {
            Ok(turn) => turn,
            Err(ended) => {
                let events = feed(ended, &mut output)?;
                self.sink
                    .emit_at(&spec.run_id, &ids(step, seq, events))
                    .await
                    .map_err(failure)?;
                return Ok(output);
            }
        };
        loop {
            let next = tokio::select! {
                next = heartbeating(&beat, seq, turn.next(&mut output.attempts)) => next?,
                _ = &mut cancel_flag => Some(pa_runner::cancelled()),
            };
            let Some(input) = next else {
                return Ok(output);
            };
            let ends = pa_runner::ends_model_turn(&input) || matches!(input, Input::Cancel { .. });
            let events = feed(input, &mut output)?;
            let count = events.len() as u64;
            self.sink
                .emit_at(&spec.run_id, &ids(step, seq, events))
                .await
                .map_err(failure)?;
            seq += count;
            if ends {
                return Ok(output);
            }
            // Progress is a heartbeat too (the SDK throttles what it sends); `heartbeating` only
            // covers the waits between tokens.
            beat.record(seq).await?;
        }
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
        let written = pending.len() as u64;
        self.sink
            .emit_at(&spec.run_id, &ids(step, 0, pending))
            .await
            .map_err(failure)?;
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
            .run_tool(&spec, call, &offered, spent, tainted, &mut relay);
        heartbeating(&Beat::Activity(Box::new(ctx)), 0u64, run).await
    }
}
