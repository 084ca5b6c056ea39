//! What svc-worker tells running workflows, for svc-runs (through `DurableRunService`) and for
//! its own activities: cancel a run, hand it a tool-call decision, and tell a chat's Curator that a
//! turn finished. svc-worker is Temporal's only client (ADR 0190); nothing else signals.

use std::time::Duration;

use pa_proto::v1::Identity;
use temporalio_client::{Client, WorkflowSignalOptions};

use crate::chat::{ChatAgentWorkflow, ToolCallDecided};
use crate::curator::{CuratorInput, CuratorWorkflow, TurnFinished, curator_id};

/// The default of `PA_CURATOR_DEBOUNCE_MS`.
pub const DEFAULT_CURATOR_DEBOUNCE_MS: u64 = 5000;

/// The default of `PA_CURATOR_IDLE_CLOSE_MS`: a chat quiet for 15 minutes closes its Curator
/// (its next turn starts a new one).
pub const DEFAULT_CURATOR_IDLE_CLOSE_MS: u64 = 15 * 60 * 1000;

/// When the Curator runs (`PA_CURATOR=off` disables it).
#[derive(Clone, Copy, Debug)]
pub struct CuratorSettings {
    /// `PA_CURATOR_DEBOUNCE_MS`, default 5000: how long it waits for more turns.
    pub debounce_ms: u64,
    /// `PA_CURATOR_MAX_SIGNALS`, default 50: turns before it continues as new.
    pub max_signals: u32,
    /// `PA_CURATOR_IDLE_CLOSE_MS`, default 15 minutes: how long a Curator with nothing to curate
    /// stays open before it closes (0: it stays open). It travels with every signal.
    pub idle_close_ms: u64,
}

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
    task_queue: String,
    curator: Option<CuratorSettings>,
}

impl Signals {
    pub fn new(client: Client, task_queue: String, curator: Option<CuratorSettings>) -> Self {
        Self {
            client,
            task_queue,
            curator,
        }
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

    /// Tells the chat's Curator that a turn finished (signal-with-start, in the background: the
    /// caller never waits for it). Sub-agent runs are not turns of the chat; a worker with the
    /// Curator off does nothing.
    pub fn turn_finished(&self, identity: Identity, chat_id: String, mut turn: TurnFinished) {
        let Some(settings) = self.curator else {
            return;
        };
        turn.idle_close_ms = settings.idle_close_ms;
        if chat_id.is_empty() {
            return;
        }
        let client = self.client.clone();
        let task_queue = self.task_queue.clone();
        let workflow_id = curator_id(&identity.tenant_id, &chat_id);
        tokio::spawn(async move {
            let run_id = turn.run_id.clone();
            let input = CuratorInput {
                identity: Some(identity),
                chat_id,
                curated: 0,
                debounce_ms: settings.debounce_ms,
                max_signals: settings.max_signals,
                idle_close_ms: settings.idle_close_ms,
                delayed_start: true,
            };
            let delay = Duration::from_millis(settings.debounce_ms);
            let sent =
                signal_with_delayed_start(&client, &task_queue, workflow_id, &input, &turn, delay);
            match tokio::time::timeout(SIGNAL_TIMEOUT, sent).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(%run_id, %err, "Curator not notified"),
                Err(_) => tracing::warn!(%run_id, "Curator not notified: the signal timed out"),
            }
        });
    }
}

/// Signal-with-start of a chat's Curator whose first workflow task waits `delay` (Temporal's
/// start delay; the SDK's start options do not carry it, so the request is made here, its
/// payloads encoded by the client's own converter and codec). A running Curator just gets the
/// signal. The request id is the turn's run id, so a repeated call for one turn is one signal.
async fn signal_with_delayed_start(
    client: &Client,
    task_queue: &str,
    workflow_id: String,
    input: &CuratorInput,
    turn: &TurnFinished,
    delay: Duration,
) -> Result<(), String> {
    use temporalio_client::NamespacedClient;
    use temporalio_client::grpc::WorkflowService;
    use temporalio_common::data_converters::{
        GenericPayloadConverter, SerializationContext, SerializationContextData,
        WorkflowSerializationContext,
    };
    use temporalio_common::protos::temporal::api::common::v1::{Payloads, WorkflowType};
    use temporalio_common::protos::temporal::api::enums::v1::TaskQueueKind;
    use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
    use temporalio_common::protos::temporal::api::workflowservice::v1::SignalWithStartWorkflowExecutionRequest;
    use temporalio_common::{SignalDefinition, WorkflowDefinition};

    let converter = client.data_converter();
    let context_data = SerializationContextData::Workflow(WorkflowSerializationContext::new());
    let context = SerializationContext::new(&context_data, converter.payload_converter());
    let encode = |payload| converter.codec().encode(&context_data, vec![payload]);
    let input = converter
        .payload_converter()
        .to_payload(&context, input)
        .map_err(|e| e.to_string())?;
    let signal = converter
        .payload_converter()
        .to_payload(&context, turn)
        .map_err(|e| e.to_string())?;
    let input = encode(input).await.map_err(|e| e.to_string())?;
    let signal = encode(signal).await.map_err(|e| e.to_string())?;
    let request = SignalWithStartWorkflowExecutionRequest {
        namespace: client.namespace(),
        workflow_id,
        workflow_type: Some(WorkflowType {
            name: CuratorWorkflow::run.name().to_string(),
        }),
        task_queue: Some(TaskQueue {
            name: task_queue.to_string(),
            kind: TaskQueueKind::Normal as i32,
            normal_name: String::new(),
        }),
        input: Some(Payloads { payloads: input }),
        identity: client.identity(),
        request_id: format!("turn-finished-{}", turn.run_id),
        signal_name: CuratorWorkflow::turn_finished.name().to_string(),
        signal_input: Some(Payloads { payloads: signal }),
        workflow_start_delay: Some(delay.try_into().map_err(|_| "a debounce out of range")?),
        ..Default::default()
    };
    WorkflowService::signal_with_start_workflow_execution(
        &mut client.clone(),
        tonic::Request::new(request),
    )
    .await
    .map(|_| ())
    .map_err(|status| status.to_string())
}

impl crate::activities::TurnFinishedSink for Signals {
    fn turn_finished(&self, identity: Identity, chat_id: String, turn: TurnFinished) {
        Signals::turn_finished(self, identity, chat_id, turn);
    }
}
