//! The maintenance a schedule's activity runs at the service that owns the tables, through
//! MaintenanceService, batch after batch, as the platform (an internal identity).

use pa_kit::identity::internal_identity;
use pa_kit::{InternalAuth, PaError};
use pa_proto::v1::RunMaintenanceRequest;
use pa_proto::v1::maintenance_service_client::MaintenanceServiceClient;
use tonic::transport::Channel;

/// Batches one maintenance run asks for at most, so a run ends even if work keeps arriving.
const MAX_BATCHES: usize = 1000;

/// The services that run maintenance over their own tables.
#[derive(Clone)]
pub struct MaintenanceClients {
    pub runs: MaintenanceServiceClient<Channel>,
    pub models: MaintenanceServiceClient<Channel>,
    pub memory: MaintenanceServiceClient<Channel>,
    pub tools: MaintenanceServiceClient<Channel>,
    pub auth: InternalAuth,
}

impl MaintenanceClients {
    /// Runs `task` at the service that owns it until no work is left; returns the rows changed.
    pub async fn run(&self, task: &str) -> Result<u64, PaError> {
        let client = match task {
            "purge_deleted_chats" => &self.runs,
            "rollup_usage" => &self.models,
            "reembed_memories" => &self.memory,
            "purge_toolset_snapshots" => &self.tools,
            other => {
                return Err(PaError::bad_request(format!(
                    "unknown maintenance task {other}"
                )));
            }
        };
        let identity = internal_identity("svc-worker");
        let mut total = 0;
        for _ in 0..MAX_BATCHES {
            let request = RunMaintenanceRequest {
                task: task.to_string(),
                limit: 0,
            };
            let done = client
                .clone()
                .run_maintenance(self.auth.request(&identity, request))
                .await
                .map_err(|s| PaError::from_status(&s))?
                .into_inner();
            total += done.affected;
            if !done.more {
                break;
            }
        }
        Ok(total)
    }
}
