//! The durable driver: a run as a Temporal workflow, reached only through svc-worker's
//! `DurableRunService` (`PA_WORKER_URL`). svc-worker is Temporal's only client (ADR 0190):
//! svc-runs asks it to start a run with the spec and the chat history, to cancel it and to hand it
//! a tool-call decision. The worker's activities write the events and record the end (FinishRun).
//! Finished turns reach the Curator through svc-runs' own queue (ADR 0242), not through here.
//! A run's start goes behind the client's 202 while svc-worker answers (ADR 0243).

use pa_kit::InternalAuth;
use pa_kit::PaError;
use pa_proto::v1::durable_run_service_client::DurableRunServiceClient;
use pa_proto::v1::{
    CancelDurableRunRequest, DecideToolCallRequest, RunSpec, StartDurableRunRequest,
};
use tonic::transport::Channel;

use crate::run_start::DurableContext;

/// Cheap to clone. Without a worker (`PA_WORKER_URL=none`) durable runs are unavailable (and no
/// turn is queued for the Curator).
#[derive(Clone)]
pub struct DurableDriver {
    redis: pa_kit::redis::Pool,
    /// How long a workflow waits for a tool-call approval (`PA_TOOL_APPROVAL_TIMEOUT_MS`).
    approval_timeout: std::time::Duration,
    worker: Option<DurableRunServiceClient<Channel>>,
    auth: InternalAuth,
    /// Whether the last start failed as `unavailable` (svc-worker, or Temporal behind it, could
    /// not be reached): until one succeeds, starts are made before the client's answer again,
    /// so an outage is refused at once (503) rather than accepted and failed (ADR 0243).
    degraded: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How long svc-runs waits for svc-worker to start a run (the start is idempotent: a client's
/// retry after a timeout finds the workflow the first call made). 20 s, inside the 30 s request
/// timeout: under heavy load a Temporal start took longer than the 10 s this was (two durable
/// starts refused with 503 in a CI run beside a parallel build and the chaos suite).
const WORKER_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// How long a start made behind the client's answer is tried again while svc-worker (or
/// Temporal) cannot be reached: a worker restarting, a Temporal leader moving.
pub const START_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(15);

/// How long a signal through svc-worker may take.
const WORKER_SIGNAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

fn unavailable(what: &str, err: impl std::fmt::Display) -> PaError {
    tracing::warn!(%err, "{what}");
    PaError::unavailable(format!("durable runs are unavailable: {what}")).with_retry_after_ms(2000)
}

/// A worker's refusal keeps its code (bad request, conflict); a worker that could not be
/// reached, or could not reach Temporal, is `unavailable`.
fn from_worker(what: &str, status: tonic::Status) -> PaError {
    let err = PaError::from_status(&status);
    match err.code {
        pa_kit::ErrorCode::BadRequest
        | pa_kit::ErrorCode::Conflict
        | pa_kit::ErrorCode::NotFound
        | pa_kit::ErrorCode::Forbidden => err,
        // The worker's own words (e.g. that Temporal is unreachable) say what to fix.
        _ => {
            let said: String = status.message().chars().take(200).collect();
            let what = if said.is_empty() {
                what.to_string()
            } else {
                format!("{what} ({said})")
            };
            unavailable(&what, status.message())
        }
    }
}

impl DurableDriver {
    pub fn new(
        redis: pa_kit::redis::Pool,
        approval_timeout: std::time::Duration,
        worker: Option<Channel>,
        auth: InternalAuth,
    ) -> Self {
        Self {
            redis,
            approval_timeout,
            worker: worker.map(DurableRunServiceClient::new),
            auth,
            degraded: Default::default(),
        }
    }

    /// Whether a start may run behind the client's answer: a worker is configured and the last
    /// start reached it.
    pub fn answers_first(&self) -> bool {
        self.worker.is_some() && !self.degraded.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn remember_start(&self, outcome: &Result<(), PaError>) {
        let unreachable =
            matches!(outcome, Err(error) if error.code == pa_kit::ErrorCode::Unavailable);
        self.degraded
            .store(unreachable, std::sync::atomic::Ordering::Relaxed);
    }

    fn worker(&self) -> Result<DurableRunServiceClient<Channel>, PaError> {
        self.worker.clone().ok_or_else(|| {
            PaError::unavailable(
                "durable runs are unavailable: no svc-worker is configured (PA_WORKER_URL)",
            )
        })
    }

    /// Starts the run's workflow through svc-worker (workflow id = run id, so a retried start
    /// finds the one it made), whose worker then takes the first task at once (eager start) and
    /// has begun the first model turn meanwhile. Launch calls it behind the client's answer
    /// (ADR 0243) unless [`Self::answers_first`] says no.
    ///
    /// A start that cannot reach svc-worker (or Temporal behind it) is tried again for
    /// `retry_for` (the start is idempotent, so a worker that died after Temporal recorded the
    /// workflow costs nothing but the retry, which finds it).
    pub async fn start(
        &self,
        spec: RunSpec,
        context: DurableContext,
        retry_for: std::time::Duration,
    ) -> Result<(), PaError> {
        let DurableContext {
            history,
            start,
            recall_wait_ms,
        } = context;
        let identity = spec.identity.clone().unwrap_or_default();
        let run_id = spec.run_id.clone();
        let mut request = StartDurableRunRequest {
            spec: Some(spec),
            history: history
                .into_iter()
                .map(pa_turn_io::to_chat_message)
                .collect(),
            tools: start.tools,
            notices: start.notices,
            high_privilege_tools: start.high_privilege_tools,
            approval_always_tools: start.approval_always_tools,
            approval_timeout_ms: self.approval_timeout.as_millis() as u64,
            recall_wait_ms,
            tainted: start.tainted,
        };
        let deadline = std::time::Instant::now() + retry_for;
        let mut wait = std::time::Duration::from_millis(100);
        loop {
            // A try that may be followed by another sends a copy; the last (the only one when
            // nothing is retried) sends the request itself.
            let last = std::time::Instant::now() + wait >= deadline;
            let body = if last {
                std::mem::take(&mut request)
            } else {
                request.clone()
            };
            let mut call = self.auth.request(&identity, body);
            call.set_timeout(WORKER_START_TIMEOUT);
            let started = self
                .worker()?
                .start_durable_run(call)
                .await
                .map(drop)
                .map_err(|status| from_worker("svc-worker did not start the run", status));
            self.remember_start(&started);
            match started {
                Err(err)
                    if err.code == pa_kit::ErrorCode::Unavailable
                        && std::time::Instant::now() + wait < deadline =>
                {
                    tracing::info!(%run_id, %err, "a durable run's start is tried again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    /// Hands a tool-call decision (already recorded in Redis) to the run's workflow, which is
    /// waiting for it on a durable timer.
    pub async fn decide_tool_call(
        &self,
        identity: &pa_proto::v1::Identity,
        run_id: &str,
        tool_call_id: &str,
        approved: bool,
    ) -> Result<(), PaError> {
        let mut request = self.auth.request(
            identity,
            DecideToolCallRequest {
                run_id: run_id.to_string(),
                tool_call_id: tool_call_id.to_string(),
                approved,
            },
        );
        request.set_timeout(WORKER_SIGNAL_TIMEOUT);
        self.worker()?
            .decide_tool_call(request)
            .await
            .map_err(|status| from_worker("cannot signal the run's workflow", status))?;
        Ok(())
    }

    /// Asks the run to stop: the cancel flag stops a model turn in flight at its next token,
    /// the signal (through svc-worker) stops the workflow before its next step.
    pub async fn cancel(
        &self,
        identity: &pa_proto::v1::Identity,
        run_id: &str,
    ) -> Result<(), PaError> {
        pa_bus::run_events::request_cancel(&self.redis, run_id).await?;
        let mut request = self.auth.request(
            identity,
            CancelDurableRunRequest {
                run_id: run_id.to_string(),
                reason: "cancelled by the user".into(),
            },
        );
        request.set_timeout(WORKER_SIGNAL_TIMEOUT);
        let answer = self
            .worker()?
            .cancel_durable_run(request)
            .await
            .map_err(|status| from_worker("cannot signal the run's workflow", status))?;
        if !answer.into_inner().delivered {
            // A workflow that already ended cannot be signalled; that is not an error here.
            tracing::info!(%run_id, "cancel signal not delivered: the workflow has ended");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_cannot_start_a_run_is_unavailable_with_its_reason_in_the_detail() {
        let err = from_worker(
            "svc-worker did not start the run",
            tonic::Status::unavailable("Temporal is unreachable at temporal:7233"),
        );
        assert_eq!(err.code, pa_kit::ErrorCode::Unavailable);
        assert!(
            err.message
                .contains("svc-worker did not start the run (Temporal is unreachable"),
            "{}",
            err.message
        );
        assert!(err.retry_after_ms > 0);
        // A refusal keeps its code and its words.
        let refused = from_worker("x", tonic::Status::invalid_argument("no such model"));
        assert_eq!(refused.code, pa_kit::ErrorCode::BadRequest);
        assert_eq!(refused.message, "no such model");
    }
}
