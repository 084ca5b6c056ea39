//! ToolService over gRPC: converts and delegates.

use pa_kit::{PaError, RequestIdentity};
use pa_proto::v1::tool_service_server::ToolService;
use pa_proto::v1::{
    AssembleToolsetRequest, ExecuteToolRequest, ExecuteToolResponse, ListDevicesRequest,
    ListDevicesResponse, ListIntegrationsRequest, ListIntegrationsResponse, Toolset,
};
use tonic::{Request, Response, Status};

use crate::assembler::ToolsetAssembler;

pub struct ToolServiceImpl {
    assembler: ToolsetAssembler,
}

impl ToolServiceImpl {
    pub fn new(assembler: ToolsetAssembler) -> Self {
        Self { assembler }
    }
}

#[tonic::async_trait]
impl ToolService for ToolServiceImpl {
    async fn assemble_toolset(
        &self,
        request: Request<AssembleToolsetRequest>,
    ) -> Result<Response<Toolset>, Status> {
        let identity = request.identity()?;
        let req = request.get_ref();
        let toolset = self
            .assembler
            .assemble(&identity, &req.run_id, &req.snapshot_id, &req.provider_tags)
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(toolset))
    }

    async fn execute_tool(
        &self,
        request: Request<ExecuteToolRequest>,
    ) -> Result<Response<ExecuteToolResponse>, Status> {
        let identity = request.identity()?;
        let req = request.get_ref();
        let tool = self
            .assembler
            .tool_for_call(&identity, &req.snapshot_id, &req.name)
            .await
            .map_err(PaError::from)?;
        // Snapshots hold no executable tools yet; reaching here means a registry/executor mismatch.
        Err(PaError::unimplemented(format!(
            "no executor for tool {} from {}",
            tool.name, tool.source
        ))
        .into())
    }

    async fn list_integrations(
        &self,
        request: Request<ListIntegrationsRequest>,
    ) -> Result<Response<ListIntegrationsResponse>, Status> {
        let identity = request.identity()?;
        let integrations = self
            .assembler
            .integrations(&identity)
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(ListIntegrationsResponse { integrations }))
    }

    async fn list_devices(
        &self,
        request: Request<ListDevicesRequest>,
    ) -> Result<Response<ListDevicesResponse>, Status> {
        let identity = request.identity()?;
        let devices = self
            .assembler
            .devices(&identity)
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(ListDevicesResponse { devices }))
    }
}
