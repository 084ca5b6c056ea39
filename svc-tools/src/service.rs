//! ToolService over gRPC: converts and delegates.

use std::collections::BTreeMap;

use pa_kit::{PaError, RequestIdentity};
use pa_proto::v1::tool_service_server::ToolService;
use pa_proto::v1::{
    AssembleToolsetRequest, ChatToolSelection, CreateIntegrationRequest, DeleteIntegrationRequest,
    DeleteIntegrationResponse, ExecuteToolRequest, ExecuteToolResponse,
    GetChatToolSelectionRequest, GetIntegrationRequest, GetToolsetRequest, Integration,
    ListDevicesRequest, ListDevicesResponse, ListIntegrationsRequest, ListIntegrationsResponse,
    Toolset, UpdateIntegrationRequest,
};
use pa_proto::v1::{
    AuthenticateDeviceRequest, AuthenticateDeviceResponse, CreateDeviceEnrollmentRequest,
    DeleteDeviceRequest, DeleteDeviceResponse, DeviceEnrollment, EnrollDeviceRequest,
    EnrollDeviceResponse, SetDeviceOfflineRequest, SetDeviceOfflineResponse,
    SetDeviceOnlineRequest, SetDeviceOnlineResponse,
};
use tonic::{Request, Response, Status};

use crate::assembler::ToolsetAssembler;
use crate::error::{ToolsError, invalid};
use crate::integrations::{Draft, Kind};

pub struct ToolServiceImpl {
    assembler: ToolsetAssembler,
}

impl ToolServiceImpl {
    pub fn new(assembler: ToolsetAssembler) -> Self {
        Self { assembler }
    }
}

fn config_value(json: &str) -> Result<serde_json::Value, ToolsError> {
    if json.trim().is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    serde_json::from_str(json).map_err(|e| invalid(format!("config is not valid JSON: {e}")))
}

fn err(e: ToolsError) -> Status {
    PaError::from(e).into()
}

#[tonic::async_trait]
impl ToolService for ToolServiceImpl {
    async fn assemble_toolset(
        &self,
        request: Request<AssembleToolsetRequest>,
    ) -> Result<Response<Toolset>, Status> {
        let identity = request.identity()?;
        let req = request.get_ref();
        let toolset = self.assembler.assemble(&identity, req).await.map_err(err)?;
        Ok(Response::new(toolset))
    }

    async fn execute_tool(
        &self,
        request: Request<ExecuteToolRequest>,
    ) -> Result<Response<ExecuteToolResponse>, Status> {
        let identity = request.identity()?;
        let req = request.get_ref();
        let response = self
            .assembler
            .execute(
                &identity,
                &req.snapshot_id,
                &req.run_id,
                &req.name,
                &req.arguments_json,
                crate::memory::DataFlow {
                    run_tainted: req.run_tainted,
                    classification: req.classification,
                },
            )
            .await;
        let outcome = match &response {
            Ok(r) if !r.is_error => "ok",
            Ok(_) => "error",
            Err(_) => "refused",
        };
        pa_kit::metrics::TOOL_CALLS
            .with_label_values(&[req.name.as_str(), outcome])
            .inc();
        Ok(Response::new(response.map_err(err)?))
    }

    async fn list_integrations(
        &self,
        request: Request<ListIntegrationsRequest>,
    ) -> Result<Response<ListIntegrationsResponse>, Status> {
        let identity = request.identity()?;
        let integrations = self
            .assembler
            .store
            .list(&identity)
            .await
            .map_err(err)?
            .iter()
            .map(|r| r.to_proto())
            .collect();
        Ok(Response::new(ListIntegrationsResponse { integrations }))
    }

    async fn list_devices(
        &self,
        request: Request<ListDevicesRequest>,
    ) -> Result<Response<ListDevicesResponse>, Status> {
        let identity = request.identity()?;
        let devices = self.assembler.devices.list(&identity).await.map_err(err)?;
        Ok(Response::new(ListDevicesResponse { devices }))
    }

    async fn create_device_enrollment(
        &self,
        request: Request<CreateDeviceEnrollmentRequest>,
    ) -> Result<Response<DeviceEnrollment>, Status> {
        let identity = request.identity()?;
        let enrollment = self
            .assembler
            .devices
            .create_enrollment(&identity, &request.get_ref().name, &request.get_ref().kind)
            .await
            .map_err(err)?;
        Ok(Response::new(enrollment))
    }

    /// Internal: the gateway redeems a code for a device that has no login.
    async fn enroll_device(
        &self,
        request: Request<EnrollDeviceRequest>,
    ) -> Result<Response<EnrollDeviceResponse>, Status> {
        pa_kit::identity::require_internal(&request.identity()?)?;
        let req = request.get_ref();
        let enrolled = self
            .assembler
            .devices
            .enroll(&req.code, &req.name, &req.kind, &req.platform)
            .await
            .map_err(err)?;
        Ok(Response::new(enrolled))
    }

    async fn authenticate_device(
        &self,
        request: Request<AuthenticateDeviceRequest>,
    ) -> Result<Response<AuthenticateDeviceResponse>, Status> {
        pa_kit::identity::require_internal(&request.identity()?)?;
        let (device, owner) = self
            .assembler
            .devices
            .authenticate(&request.get_ref().device_token)
            .await
            .map_err(err)?;
        Ok(Response::new(AuthenticateDeviceResponse {
            device: Some(device),
            owner: Some(owner),
        }))
    }

    async fn set_device_online(
        &self,
        request: Request<SetDeviceOnlineRequest>,
    ) -> Result<Response<SetDeviceOnlineResponse>, Status> {
        pa_kit::identity::require_internal(&request.identity()?)?;
        let req = request.into_inner();
        self.assembler
            .devices
            .set_online(
                &req.device_id,
                &req.connection_id,
                req.heartbeat,
                &req.platform,
                req.read_only,
                req.tools,
            )
            .await
            .map_err(err)?;
        Ok(Response::new(SetDeviceOnlineResponse {}))
    }

    async fn set_device_offline(
        &self,
        request: Request<SetDeviceOfflineRequest>,
    ) -> Result<Response<SetDeviceOfflineResponse>, Status> {
        pa_kit::identity::require_internal(&request.identity()?)?;
        let req = request.get_ref();
        self.assembler
            .devices
            .set_offline(&req.device_id, &req.connection_id)
            .await
            .map_err(err)?;
        Ok(Response::new(SetDeviceOfflineResponse {}))
    }

    async fn delete_device(
        &self,
        request: Request<DeleteDeviceRequest>,
    ) -> Result<Response<DeleteDeviceResponse>, Status> {
        let identity = request.identity()?;
        self.assembler
            .devices
            .delete(&identity, &request.get_ref().id)
            .await
            .map_err(err)?;
        Ok(Response::new(DeleteDeviceResponse {}))
    }

    async fn create_integration(
        &self,
        request: Request<CreateIntegrationRequest>,
    ) -> Result<Response<Integration>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        let draft = Draft {
            kind: Kind::parse(&req.kind).map_err(err)?,
            name: req.name,
            enabled: req.enabled,
            required: req.provider_tags_required,
            blocked: req.provider_tags_blocked,
            config: config_value(&req.config_json).map_err(err)?,
        };
        let secrets: BTreeMap<String, String> = req.secrets.into_iter().collect();
        let record = self
            .assembler
            .store
            .create(&identity, draft, secrets)
            .await
            .map_err(err)?;
        Ok(Response::new(record.to_proto()))
    }

    async fn get_integration(
        &self,
        request: Request<GetIntegrationRequest>,
    ) -> Result<Response<Integration>, Status> {
        let identity = request.identity()?;
        let record = self
            .assembler
            .store
            .get(&identity, &request.get_ref().id)
            .await
            .map_err(err)?;
        Ok(Response::new(record.to_proto()))
    }

    async fn update_integration(
        &self,
        request: Request<UpdateIntegrationRequest>,
    ) -> Result<Response<Integration>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        let config = req
            .config_json
            .as_deref()
            .map(config_value)
            .transpose()
            .map_err(err)?;
        let secrets = req
            .replace_secrets
            .then(|| req.secrets.into_iter().collect::<BTreeMap<_, _>>());
        let record = self
            .assembler
            .store
            .update(
                &identity,
                &req.id,
                |draft| {
                    if let Some(name) = req.name {
                        draft.name = name;
                    }
                    if let Some(enabled) = req.enabled {
                        draft.enabled = enabled;
                    }
                    if let Some(tags) = req.provider_tags_required {
                        draft.required = tags.tags;
                    }
                    if let Some(tags) = req.provider_tags_blocked {
                        draft.blocked = tags.tags;
                    }
                    if let Some(config) = config {
                        draft.config = config;
                    }
                },
                secrets,
            )
            .await
            .map_err(err)?;
        Ok(Response::new(record.to_proto()))
    }

    async fn delete_integration(
        &self,
        request: Request<DeleteIntegrationRequest>,
    ) -> Result<Response<DeleteIntegrationResponse>, Status> {
        let identity = request.identity()?;
        self.assembler
            .store
            .delete(&identity, &request.get_ref().id)
            .await
            .map_err(err)?;
        Ok(Response::new(DeleteIntegrationResponse {}))
    }

    async fn get_chat_tool_selection(
        &self,
        request: Request<GetChatToolSelectionRequest>,
    ) -> Result<Response<ChatToolSelection>, Status> {
        let identity = request.identity()?;
        let chat_id = request.get_ref().chat_id.clone();
        let integration_ids = self
            .assembler
            .store
            .selection(&identity, &chat_id)
            .await
            .map_err(err)?;
        Ok(Response::new(ChatToolSelection {
            chat_id,
            integration_ids,
        }))
    }

    async fn set_chat_tool_selection(
        &self,
        request: Request<ChatToolSelection>,
    ) -> Result<Response<ChatToolSelection>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        let integration_ids = self
            .assembler
            .store
            .set_selection(&identity, &req.chat_id, &req.integration_ids)
            .await
            .map_err(err)?;
        Ok(Response::new(ChatToolSelection {
            chat_id: req.chat_id,
            integration_ids,
        }))
    }

    async fn get_toolset(
        &self,
        request: Request<GetToolsetRequest>,
    ) -> Result<Response<Toolset>, Status> {
        let identity = request.identity()?;
        let toolset = self
            .assembler
            .snapshot(&identity, &request.get_ref().snapshot_id)
            .await
            .map_err(err)?;
        Ok(Response::new(toolset))
    }
}

#[tonic::async_trait]
impl pa_proto::v1::maintenance_service_server::MaintenanceService
    for crate::maintenance::Maintenance
{
    async fn run_maintenance(
        &self,
        request: Request<pa_proto::v1::RunMaintenanceRequest>,
    ) -> Result<Response<pa_proto::v1::RunMaintenanceResponse>, Status> {
        pa_kit::maintenance::answer(
            "svc-tools",
            "purge_toolset_snapshots",
            pa_kit::maintenance::MAX_BATCH,
            request,
            |limit| self.purge_toolset_snapshots(limit),
        )
        .await
    }
}
