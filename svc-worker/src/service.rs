//! svc-worker's gRPC face: its schedules, for admins (through the gateway). Thin: the work is in
//! `schedules`.

use pa_kit::PaError;
use pa_kit::identity::{RequestIdentity, require_role};
use pa_proto::v1::schedule_service_server::ScheduleService;
use pa_proto::v1::{
    ListSchedulesRequest, ListSchedulesResponse, TriggerScheduleRequest, TriggerScheduleResponse,
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

#[tonic::async_trait]
impl ScheduleService for Schedules {
    async fn list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        require_role(&request.identity()?, "admin")?;
        let schedules = crate::schedules::list(&self.client, &self.task_queue)
            .await
            .map_err(unavailable)?;
        Ok(Response::new(ListSchedulesResponse { schedules }))
    }

    async fn trigger_schedule(
        &self,
        request: Request<TriggerScheduleRequest>,
    ) -> Result<Response<TriggerScheduleResponse>, Status> {
        require_role(&request.identity()?, "admin")?;
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
