//! What svc-worker tells running workflows, for svc-runs (through `DurableRunService`): cancel a
//! run, hand it a tool-call decision. svc-worker is Temporal's only client (ADR 0190); nothing else
//! signals. (Finished turns reach the Curator through svc-runs' queue since ADR 0242.)

use std::time::Duration;

use temporalio_client::{Client, WorkflowSignalOptions};

use crate::chat::{ChatAgentWorkflow, ToolCallDecided};

/// How long one signal may take before the caller hears `unavailable`.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a signal was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The workflow does not exist or has ended: nothing waits for the signal.
    #[error("the run's workflow is not running")]
    NotRunning,
    #[error("cannot reach Temporal: {0}")]
    Unavailable(String),
}

fn classify(err: impl std::fmt::Display) -> SignalError {
    let text = err.to_string();
    // The SDK reports a missing or completed workflow as gRPC NOT_FOUND ("workflow execution
    // already completed", "workflow not found").
    let lower = text.to_ascii_lowercase();
    if lower.contains("not found") || lower.contains("already completed") {
        SignalError::NotRunning
    } else {
        SignalError::Unavailable(text)
    }
}

/// The worker's signals (cheap to clone).
#[derive(Clone)]
pub struct Signals {
    client: Client,
}

impl Signals {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Asks the run's workflow to stop before its next step.
    pub async fn cancel(&self, run_id: &str, reason: String) -> Result<(), SignalError> {
        let handle = self
            .client
            .get_workflow_handle::<ChatAgentWorkflow>(run_id.to_string());
        let sent = handle.signal(
            ChatAgentWorkflow::cancel,
            reason,
            WorkflowSignalOptions::default(),
        );
        match tokio::time::timeout(SIGNAL_TIMEOUT, sent).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(classify(err)),
            Err(_) => Err(SignalError::Unavailable("the signal timed out".into())),
        }
    }

    /// Hands a human's decision on a held tool call to the run's workflow.
    pub async fn decide_tool_call(
        &self,
        run_id: &str,
        decision: ToolCallDecided,
    ) -> Result<(), SignalError> {
        let handle = self
            .client
            .get_workflow_handle::<ChatAgentWorkflow>(run_id.to_string());
        let sent = handle.signal(
            ChatAgentWorkflow::decide_tool_call,
            decision,
            WorkflowSignalOptions::default(),
        );
        match tokio::time::timeout(SIGNAL_TIMEOUT, sent).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(classify(err)),
            Err(_) => Err(SignalError::Unavailable("the signal timed out".into())),
        }
    }
}
