//! MemoryService over gRPC: converts and delegates.

use pa_kit::{PaError, RequestIdentity};
use pa_proto::v1::memory_service_server::MemoryService;
use pa_proto::v1::{
    CurateRequest, CurateResponse, ForgetMemoryRequest, ForgetMemoryResponse,
    IngestDocumentRequest, IngestDocumentResponse, ListMemoriesRequest, ListMemoriesResponse,
    MemoryItem, MemoryKind, MemoryScope, SearchMemoryRequest, SearchMemoryResponse, SearchMode,
    UpdateMemoryRequest, UpsertMemoryRequest,
};
use tonic::{Request, Response, Status};

use crate::memories::Memories;
use crate::store::{ListQuery, MemoryError, SearchQuery};

pub struct MemoryServiceImpl {
    memories: Memories,
}

impl MemoryServiceImpl {
    pub fn new(memories: Memories) -> Self {
        Self { memories }
    }
}

fn scope(value: i32) -> Option<MemoryScope> {
    match MemoryScope::try_from(value) {
        Ok(MemoryScope::Unspecified) | Err(_) => None,
        Ok(s) => Some(s),
    }
}

fn kinds(values: &[i32]) -> Result<Vec<i16>, MemoryError> {
    values
        .iter()
        .map(|&k| match MemoryKind::try_from(k) {
            Ok(MemoryKind::Unspecified) | Err(_) => {
                Err(MemoryError::Invalid(format!("unknown memory kind {k}")))
            }
            Ok(kind) => Ok(kind as i16),
        })
        .collect()
}

fn chat_scope_needs_chat(
    scope: Option<MemoryScope>,
    chat_id: &Option<String>,
) -> Result<(), MemoryError> {
    if scope == Some(MemoryScope::Chat) && chat_id.as_deref().unwrap_or("").is_empty() {
        return Err(MemoryError::Invalid("scope CHAT needs chat_id".into()));
    }
    Ok(())
}

#[tonic::async_trait]
impl MemoryService for MemoryServiceImpl {
    async fn upsert(
        &self,
        request: Request<UpsertMemoryRequest>,
    ) -> Result<Response<MemoryItem>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        let item = req
            .item
            .ok_or_else(|| PaError::bad_request("item is required"))?;
        Ok(Response::new(
            self.memories.upsert(&identity, item, !req.no_dedup).await?,
        ))
    }

    async fn search(
        &self,
        request: Request<SearchMemoryRequest>,
    ) -> Result<Response<SearchMemoryResponse>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        let scope = scope(req.scope);
        let chat_id = req.chat_id.filter(|c| !c.is_empty());
        chat_scope_needs_chat(scope, &chat_id)?;
        let mode = SearchMode::try_from(req.mode).unwrap_or(SearchMode::Hybrid);
        let query = SearchQuery {
            text: req.query,
            scope,
            chat_id,
            kinds: kinds(&req.kinds)?,
            since_ms: req.since_ms,
            until_ms: req.until_ms,
            limit: if req.limit == 0 { 10 } else { req.limit },
            min_similarity: req.min_score,
            vector: mode != SearchMode::Text,
            full_text: mode != SearchMode::Vector,
            max_classification: (req.max_classification != 0)
                .then(|| crate::store::classification_level(req.max_classification)),
        };
        let (results, embedding_model) = self.memories.search(&identity, query).await?;
        Ok(Response::new(SearchMemoryResponse {
            results,
            embedding_model,
        }))
    }

    async fn forget(
        &self,
        request: Request<ForgetMemoryRequest>,
    ) -> Result<Response<ForgetMemoryResponse>, Status> {
        let identity = request.identity()?;
        let req = request.get_ref();
        let forgotten = self
            .memories
            .forget(&identity, &req.id, &req.document_id, &req.chat_id)
            .await?;
        Ok(Response::new(ForgetMemoryResponse {
            forgotten: forgotten.min(u64::from(u32::MAX)) as u32,
        }))
    }

    async fn curate(
        &self,
        request: Request<CurateRequest>,
    ) -> Result<Response<CurateResponse>, Status> {
        request.identity()?;
        Err(PaError::unimplemented(
            "curation runs as the Curator workflow (svc-worker), which writes through Upsert",
        )
        .into())
    }

    async fn list(
        &self,
        request: Request<ListMemoriesRequest>,
    ) -> Result<Response<ListMemoriesResponse>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        let scope = scope(req.scope);
        let chat_id = req.chat_id.filter(|c| !c.is_empty());
        chat_scope_needs_chat(scope, &chat_id)?;
        let query = ListQuery {
            scope,
            chat_id,
            kinds: kinds(&req.kinds)?,
            limit: req.limit,
            cursor: req.cursor,
            pinned_only: req.pinned_only,
        };
        let (items, next_cursor) = self.memories.list(&identity, &query).await?;
        Ok(Response::new(ListMemoriesResponse { items, next_cursor }))
    }

    async fn update(
        &self,
        request: Request<UpdateMemoryRequest>,
    ) -> Result<Response<MemoryItem>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        Ok(Response::new(
            self.memories
                .update(&identity, &req.id, req.content, req.pinned)
                .await?,
        ))
    }

    async fn ingest_document(
        &self,
        request: Request<IngestDocumentRequest>,
    ) -> Result<Response<IngestDocumentResponse>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        let done = self
            .memories
            .ingest(
                &identity,
                &req.chat_id,
                &req.filename,
                &req.content_type,
                req.data,
                req.classification,
            )
            .await?;
        Ok(Response::new(IngestDocumentResponse {
            document_id: done.document_id,
            chunks: done.chunks as u32,
            chars: done.chars as u32,
            embedding_model: done.model,
        }))
    }
}

#[tonic::async_trait]
impl pa_proto::v1::maintenance_service_server::MaintenanceService for crate::reembed::Reembed {
    async fn run_maintenance(
        &self,
        request: Request<pa_proto::v1::RunMaintenanceRequest>,
    ) -> Result<Response<pa_proto::v1::RunMaintenanceResponse>, Status> {
        // Each memory costs an embedding: smaller batches than a plain row update.
        pa_kit::maintenance::answer("svc-memory", "reembed_memories", 256, request, |limit| {
            self.run(limit)
        })
        .await
    }
}
