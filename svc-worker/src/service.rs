//! svc-worker's gRPC face: starting durable runs (for svc-runs) and its schedules (for admins,
//! through the gateway). Thin: the work is in `start` and `schedules`.

use pa_kit::PaError;
use pa_kit::identity::{RequestIdentity, require_platform_admin};
use pa_proto::v1::durable_run_service_server::DurableRunService;
use pa_proto::v1::schedule_service_server::ScheduleService;
use pa_proto::v1::{
    CancelDurableRunRequest, CancelDurableRunResponse, DecideToolCallRequest,
    DecideToolCallResponse, ListSchedulesRequest, ListSchedulesResponse, StartDurableRunRequest,
    StartDurableRunResponse, TriggerScheduleRequest, TriggerScheduleResponse,
};
use temporalio_client::Client;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct Schedules {
    pub client: Client,
    pub task_queue: String,
}

fn unavailable(err: String) -> Status {
    PaError::unavailable(format!("schedules: {err}")).into()
}

/// Starts durable runs with the worker's own client, so their first workflow task is this
/// worker's at once (eager start), and signals them for svc-runs.
#[derive(Clone)]
pub struct DurableRuns {
    pub client: Client,
    pub task_queue: String,
    /// The worker's activities: a new run's first turn begins here (see `early`).
    pub activities: std::sync::Arc<crate::activities::RunActivities>,
    pub signals: crate::signals::Signals,
}

fn run_id_of(run_id: &str) -> Result<&str, Status> {
    if run_id.is_empty() {
        return Err(PaError::bad_request("run_id is required").into());
    }
    Ok(run_id)
}

fn signal_failed(err: crate::signals::SignalError) -> Status {
    PaError::unavailable(format!("cannot signal the run's workflow: {err}"))
        .with_retry_after_ms(2000)
        .into()
}

#[tonic::async_trait]
impl DurableRunService for DurableRuns {
    async fn start_durable_run(
        &self,
        request: Request<StartDurableRunRequest>,
    ) -> Result<Response<StartDurableRunResponse>, Status> {
        request.identity()?;
        let request = request.into_inner();
        let run_id = request
            .spec
            .as_ref()
            .map(|spec| spec.run_id.clone())
            .unwrap_or_default();
        let mut input = crate::start::chat_run_input(request)
            .ok_or_else(|| PaError::bad_request("a durable run needs a spec with a run id"))?;
        // A long history goes into the workflow's history by reference (see `claims`).
        input.history = self
            .activities
            .claims
            .check_history(&run_id, std::mem::take(&mut input.history))
            .await?;
        // The first turn begins (asks the model) while Temporal records the workflow, and
        // writes once it is recorded as new (ADR 0243): what a client sees is always a run
        // Temporal carries.
        let early = self.activities.early.reserve(&run_id).map(|early| {
            early.begin(crate::activities::first_turn_runner(
                self.activities.clone(),
                input.clone(),
            ))
        });
        let started = crate::start::start_chat_run(&self.client, &self.task_queue, input)
            .await
            .map_err(|e| {
                Status::from(PaError::unavailable(format!(
                    "cannot start the run's workflow: {e}"
                )))
            })?;
        // Dropped otherwise (an error, an existing workflow): the turn stops unseen.
        if let (Some(early), crate::start::Started::New) = (early, started) {
            early.recorded();
        }
        Ok(Response::new(StartDurableRunResponse {
            existing: started == crate::start::Started::Existing,
        }))
    }

    async fn cancel_durable_run(
        &self,
        request: Request<CancelDurableRunRequest>,
    ) -> Result<Response<CancelDurableRunResponse>, Status> {
        request.identity()?;
        let CancelDurableRunRequest { run_id, reason } = request.into_inner();
        let reason = if reason.is_empty() {
            "cancelled by the user".to_string()
        } else {
            reason
        };
        let delivered = match self.signals.cancel(run_id_of(&run_id)?, reason).await {
            Ok(()) => true,
            // A workflow that already ended cannot be stopped; that is not an error here.
            Err(crate::signals::SignalError::NotRunning) => false,
            Err(err) => return Err(signal_failed(err)),
        };
        Ok(Response::new(CancelDurableRunResponse { delivered }))
    }

    async fn decide_tool_call(
        &self,
        request: Request<DecideToolCallRequest>,
    ) -> Result<Response<DecideToolCallResponse>, Status> {
        request.identity()?;
        let DecideToolCallRequest {
            run_id,
            tool_call_id,
            approved,
        } = request.into_inner();
        if tool_call_id.is_empty() {
            return Err(PaError::bad_request("tool_call_id is required").into());
        }
        let decision = crate::chat::ToolCallDecided {
            tool_call_id,
            approved,
        };
        match self
            .signals
            .decide_tool_call(run_id_of(&run_id)?, decision)
            .await
        {
            Ok(()) => Ok(Response::new(DecideToolCallResponse {})),
            Err(crate::signals::SignalError::NotRunning) => Err(PaError::conflict(
                "the run has ended; its tool calls can no longer be decided",
            )
            .into()),
            Err(err) => Err(signal_failed(err)),
        }
    }
}

#[tonic::async_trait]
impl ScheduleService for Schedules {
    async fn list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        require_platform_admin(&request.identity()?)?;
        let schedules = crate::schedules::list(&self.client, &self.task_queue)
            .await
            .map_err(unavailable)?;
        Ok(Response::new(ListSchedulesResponse { schedules }))
    }

    async fn trigger_schedule(
        &self,
        request: Request<TriggerScheduleRequest>,
    ) -> Result<Response<TriggerScheduleResponse>, Status> {
        require_platform_admin(&request.identity()?)?;
        let id = request.into_inner().id;
        let known = crate::schedules::TASKS
            .iter()
            .any(|t| crate::schedules::schedule_id(&self.task_queue, t.name) == id);
        if !known {
            return Err(PaError::not_found(format!("schedule {id} not found")).into());
        }
        crate::schedules::trigger(&self.client, &id)
            .await
            .map_err(unavailable)?;
        Ok(Response::new(TriggerScheduleResponse {}))
    }
}
