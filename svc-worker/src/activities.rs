//! The activities of a durable run: the I/O the workflow may not do itself. Each writes its
//! events under the ids `<step>-<seq>` the workflow gave it, so a retry (a worker killed mid-turn)
//! rewrites the same ids and the stream keeps exactly one copy of each event.

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::Pool;
use pa_agent::{Action, Input};
use pa_kit::PaError;
use pa_kit::run_events::EventSink;
use pa_proto::v1::run_ledger_service_client::RunLedgerServiceClient;
use pa_proto::v1::{AgUiEvent, FinishRunRequest};
use pa_runner::RunIo;
use temporalio_common::RetryPolicy;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tonic::transport::Channel;

use crate::chat::{FinishInput, ModelTurnInput, ModelTurnOutput, ToolCallInput};

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

pub struct RunActivities {
    pub io: RunIo,
    pub ledger: RunLedgerServiceClient<Channel>,
    pub sink: EventSink,
    pub redis: Pool,
}

/// Numbers a step's events: `<step>-<seq>`, seq from `first`.
fn ids(step: u64, first: u64, events: Vec<AgUiEvent>) -> Vec<(String, AgUiEvent)> {
    events
        .into_iter()
        .zip(first..)
        .map(|(event, seq)| (format!("{step}-{seq}"), event))
        .collect()
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
        let ModelTurnInput {
            spec,
            step,
            pending,
            mut agent,
            request,
            tools,
        } = input;
        let mut seq = pending.len() as u64;
        self.sink
            .emit_at(&spec.run_id, &ids(step, 0, pending))
            .await
            .map_err(failure)?;
        let mut output = ModelTurnOutput::default();
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
        let started = tokio::select! {
            started = heartbeating(&ctx, seq, self.io.start_model_turn(&spec, request, &tools)) => started?,
            _ = &mut cancel_flag => Err(pa_runner::cancelled()),
        };
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
                next = heartbeating(&ctx, seq, turn.next(&mut output.attempts)) => next?,
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
            ctx.record_heartbeat(seq)
                .await
                .map_err(|e| ActivityError::from(std::io::Error::other(e.to_string())))?;
        }
    }

    /// Writes the pending events, then runs one tool call through svc-tools.
    #[activity]
    pub async fn tool_call(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ToolCallInput,
    ) -> Result<Input, ActivityError> {
        let ToolCallInput {
            spec,
            step,
            pending,
            call,
        } = input;
        self.sink
            .emit_at(&spec.run_id, &ids(step, 0, pending))
            .await
            .map_err(failure)?;
        heartbeating(&ctx, 0u64, self.io.execute_tool(&spec, call)).await
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

/// Runs `work`, heartbeating `details` (the last event seq written) while it is pending: a
/// model can think for a long time before its first token, and a silent worker is a dead one.
async fn heartbeating<F: std::future::Future>(
    ctx: &ActivityContext,
    details: u64,
    work: F,
) -> Result<F::Output, ActivityError> {
    tokio::pin!(work);
    let mut ticks = tokio::time::interval(HEARTBEAT_EVERY);
    ticks.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return Ok(out),
            _ = ticks.tick() => ctx
                .record_heartbeat(details)
                .await
                .map_err(|e| ActivityError::from(std::io::Error::other(e.to_string())))?,
        }
    }
}
