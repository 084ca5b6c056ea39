//! The durable driver: a run as a Temporal workflow (svc-worker's ChatAgentWorkflow, task queue
//! from `PA_TEMPORAL_TASK_QUEUE`). svc-runs starts it with the spec and the chat history, and
//! cancels it with a signal; the worker's activities write the events and record the end.

use pa_kit::InternalAuth;
use pa_kit::PaError;
use pa_proto::v1::RunSpec;
use pa_proto::v1::durable_run_service_client::DurableRunServiceClient;
use svc_worker::chat::{ChatAgentWorkflow, ToolCallDecided};
use svc_worker::curator::{CuratorInput, CuratorWorkflow, TurnFinished, curator_id};
use svc_worker::start::Started;
use svc_worker::{ChatRunInput, TemporalConfig};
use temporalio_client::{Client, WorkflowSignalOptions, WorkflowStartOptions};
use tokio::sync::OnceCell;
use tonic::transport::Channel;

use crate::inline::DurableContext;

/// Cheap to clone; connects to Temporal on first use (svc-runs starts without it, and inline
/// runs never need it).
#[derive(Clone)]
pub struct DurableDriver {
    config: TemporalConfig,
    curator: Option<CuratorSettings>,
    client: std::sync::Arc<OnceCell<Client>>,
    redis: deadpool_redis::Pool,
    /// How long a workflow waits for a tool-call approval (`PA_TOOL_APPROVAL_TIMEOUT_MS`).
    approval_timeout: std::time::Duration,
    /// svc-worker (`PA_WORKER_URL`), which starts runs so its worker takes them at once.
    worker: Option<DurableRunServiceClient<Channel>>,
    auth: InternalAuth,
}

/// How long svc-runs waits for svc-worker to start a run before starting it itself.
const WORKER_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The default of `PA_CURATOR_DEBOUNCE_MS`.
pub const DEFAULT_CURATOR_DEBOUNCE_MS: u64 = 5000;

/// When the Curator runs (`PA_CURATOR=off` disables it).
#[derive(Clone, Copy, Debug)]
pub struct CuratorSettings {
    /// `PA_CURATOR_DEBOUNCE_MS`, default 5000: how long it waits for more turns.
    pub debounce_ms: u64,
    /// `PA_CURATOR_MAX_SIGNALS`, default 50: turns before it continues as new.
    pub max_signals: u32,
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> PaError {
    tracing::warn!(%err, "{what}");
    PaError::unavailable(format!("durable runs are unavailable: {what}")).with_retry_after_ms(2000)
}

impl DurableDriver {
    pub fn new(
        config: TemporalConfig,
        curator: Option<CuratorSettings>,
        redis: deadpool_redis::Pool,
        approval_timeout: std::time::Duration,
        worker: Option<Channel>,
        auth: InternalAuth,
    ) -> Self {
        Self {
            config,
            curator,
            client: Default::default(),
            redis,
            approval_timeout,
            worker: worker.map(DurableRunServiceClient::new),
            auth,
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

    /// Starts the run's workflow (id = run id, so a retried start finds the one it made):
    /// through svc-worker, whose worker then takes the first task at once (eager start), or,
    /// when no worker answers, through Temporal directly (the task waits for any worker).
    pub async fn start(&self, spec: RunSpec, context: DurableContext) -> Result<(), PaError> {
        let DurableContext {
            history,
            start,
            recall_wait_ms,
        } = context;
        let input = ChatRunInput {
            spec,
            history,
            tools: start.tools,
            notices: start.notices,
            high_privilege_tools: start.high_privilege_tools,
            approval_always_tools: start.approval_always_tools,
            approval_timeout_ms: self.approval_timeout.as_millis() as u64,
            recall_wait_ms,
            tainted: start.tainted,
        };
        let run_id = input.spec.run_id.clone();
        if let Some(worker) = &self.worker {
            let identity = input.spec.identity.clone().unwrap_or_default();
            let mut request = self.auth.request(&identity, input.to_request());
            request.set_timeout(WORKER_START_TIMEOUT);
            match worker.clone().start_durable_run(request).await {
                Ok(_) => return Ok(()),
                Err(status) => {
                    tracing::info!(%run_id, %status, "svc-worker did not start the run; starting it through Temporal");
                }
            }
        }
        let client = self.client().await?;
        match svc_worker::start::start_chat_run(client, &self.config.task_queue, input).await {
            Ok(Started::New) => Ok(()),
            Ok(Started::Existing) => {
                tracing::info!(%run_id, "workflow already started");
                Ok(())
            }
            Err(err) => Err(unavailable("cannot start the workflow", err)),
        }
    }

    /// Tells the chat's Curator that a turn finished (signal-with-start, in the background: the
    /// run's end never waits for it).
    pub fn notify_curator(&self, spec: &RunSpec) {
        let Some(settings) = self.curator else {
            return;
        };
        if spec.parent_run_id.is_some() {
            // A sub-agent's work is not a turn of the chat.
            return;
        }
        let driver = self.clone();
        let identity = spec.identity.clone().unwrap_or_default();
        let chat_id = spec.chat_id.clone();
        let turn = TurnFinished {
            run_id: spec.run_id.clone(),
            label: spec
                .model_selection
                .as_ref()
                .map(|m| m.resolved_label.clone())
                .unwrap_or_default(),
        };
        tokio::spawn(async move {
            let run_id = turn.run_id.clone();
            let result = async {
                let client = driver.client().await?;
                let options = WorkflowStartOptions::new(
                    driver.config.task_queue.clone(),
                    curator_id(&identity.tenant_id, &chat_id),
                )
                .build();
                client
                    .signal_with_start_workflow(
                        CuratorWorkflow::run,
                        CuratorInput {
                            identity,
                            chat_id,
                            curated: 0,
                            debounce_ms: settings.debounce_ms,
                            max_signals: settings.max_signals,
                        },
                        CuratorWorkflow::turn_finished,
                        turn,
                        options,
                    )
                    .await
                    .map_err(|e| unavailable("cannot signal the Curator", e))?;
                Ok::<(), PaError>(())
            }
            .await;
            if let Err(err) = result {
                tracing::warn!(%run_id, %err, "Curator not notified");
            }
        });
    }

    /// Hands a tool-call decision (already recorded in Redis) to the run's workflow, which is
    /// waiting for it on a durable timer.
    pub async fn decide_tool_call(
        &self,
        run_id: &str,
        tool_call_id: &str,
        approved: bool,
    ) -> Result<(), PaError> {
        let client = self.client().await?;
        let handle = client.get_workflow_handle::<ChatAgentWorkflow>(run_id.to_string());
        handle
            .signal(
                ChatAgentWorkflow::decide_tool_call,
                ToolCallDecided {
                    tool_call_id: tool_call_id.to_string(),
                    approved,
                },
                WorkflowSignalOptions::default(),
            )
            .await
            .map_err(|e| unavailable("cannot signal the run's workflow", e))?;
        Ok(())
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
