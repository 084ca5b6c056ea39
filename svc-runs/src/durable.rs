//! The durable driver: a run as a Temporal workflow (svc-worker's ChatAgentWorkflow, task queue
//! from `PA_TEMPORAL_TASK_QUEUE`). svc-runs starts it with the spec and the chat history, and
//! cancels it with a signal; the worker's activities write the events and record the end.

use pa_kit::PaError;
use pa_proto::v1::RunSpec;
use svc_worker::chat::ChatAgentWorkflow;
use svc_worker::{ChatRunInput, TemporalConfig};
use temporalio_client::{Client, WorkflowSignalOptions, WorkflowStartOptions};
use tokio::sync::OnceCell;

use pa_agent::TurnMessage;

use crate::inline::RunStart;

/// Cheap to clone; connects to Temporal on first use (svc-runs starts without it, and inline
/// runs never need it).
#[derive(Clone)]
pub struct DurableDriver {
    config: TemporalConfig,
    client: std::sync::Arc<OnceCell<Client>>,
    redis: deadpool_redis::Pool,
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> PaError {
    tracing::warn!(%err, "{what}");
    PaError::unavailable(format!("durable runs are unavailable: {what}")).with_retry_after_ms(2000)
}

impl DurableDriver {
    pub fn new(config: TemporalConfig, redis: deadpool_redis::Pool) -> Self {
        Self {
            config,
            client: Default::default(),
            redis,
        }
    }

    async fn client(&self) -> Result<&Client, PaError> {
        self.client
            .get_or_try_init(|| async {
                svc_worker::temporal::connect(&self.config)
                    .await
                    .map_err(|e| unavailable("cannot reach Temporal", e))
            })
            .await
    }

    /// Starts the run's workflow (id = run id, so a retried start finds the one it made).
    pub async fn start(
        &self,
        spec: RunSpec,
        history: Vec<TurnMessage>,
        start: RunStart,
    ) -> Result<(), PaError> {
        let client = self.client().await?;
        let options =
            WorkflowStartOptions::new(self.config.task_queue.clone(), spec.run_id.clone()).build();
        let run_id = spec.run_id.clone();
        match client
            .start_workflow(
                ChatAgentWorkflow::run,
                ChatRunInput {
                    spec,
                    history,
                    tools: start.tools,
                    notices: start.notices,
                },
                options,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.to_string().contains("already") => {
                tracing::info!(%run_id, "workflow already started");
                Ok(())
            }
            Err(err) => Err(unavailable("cannot start the workflow", err)),
        }
    }

    /// Asks the run to stop: the cancel flag stops a model turn in flight at its next token,
    /// the signal stops the workflow before its next step.
    pub async fn cancel(&self, run_id: &str) -> Result<(), PaError> {
        pa_kit::run_events::request_cancel(&self.redis, run_id).await?;
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<ChatAgentWorkflow>(run_id.to_string());
        if let Err(err) = handle
            .signal(
                ChatAgentWorkflow::cancel,
                "cancelled by the user".to_string(),
                WorkflowSignalOptions::default(),
            )
            .await
        {
            // A workflow that already ended cannot be signalled; that is not an error here.
            tracing::info!(%run_id, %err, "cancel signal not delivered");
        }
        Ok(())
    }
}
