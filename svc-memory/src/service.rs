//! MemoryService over gRPC: converts and delegates.

use pa_kit::{PaError, RequestIdentity};
use pa_proto::v1::memory_service_server::MemoryService;
use pa_proto::v1::{
    CurateRequest, CurateResponse, ForgetMemoryRequest, ForgetMemoryResponse, MemoryItem,
    MemoryScope, SearchMemoryRequest, SearchMemoryResponse, UpsertMemoryRequest,
};
use tonic::{Request, Response, Status};

use crate::store::MemoryStore;

pub struct MemoryServiceImpl {
    store: MemoryStore,
}

impl MemoryServiceImpl {
    pub fn new(store: MemoryStore) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl MemoryService for MemoryServiceImpl {
    async fn upsert(
        &self,
        request: Request<UpsertMemoryRequest>,
    ) -> Result<Response<MemoryItem>, Status> {
        let identity = request.identity()?;
        let item = request
            .into_inner()
            .item
            .ok_or_else(|| PaError::bad_request("item is required"))?;
        Ok(Response::new(
            self.store
                .upsert(&identity, item)
                .await
                .map_err(PaError::from)?,
        ))
    }

    async fn search(
        &self,
        request: Request<SearchMemoryRequest>,
    ) -> Result<Response<SearchMemoryResponse>, Status> {
        let identity = request.identity()?;
        let req = request.get_ref();
        let scope = MemoryScope::try_from(req.scope).unwrap_or(MemoryScope::Unspecified);
        let results = self
            .store
            .search(
                &identity,
                &req.query,
                scope,
                req.chat_id.as_deref(),
                req.limit,
            )
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(SearchMemoryResponse { results }))
    }

    async fn forget(
        &self,
        request: Request<ForgetMemoryRequest>,
    ) -> Result<Response<ForgetMemoryResponse>, Status> {
        let identity = request.identity()?;
        self.store
            .forget(&identity, &request.get_ref().id)
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(ForgetMemoryResponse {}))
    }

    async fn curate(
        &self,
        request: Request<CurateRequest>,
    ) -> Result<Response<CurateResponse>, Status> {
        request.identity()?;
        Err(PaError::unimplemented("the Curator arrives with the durable-runs issue").into())
    }
}
