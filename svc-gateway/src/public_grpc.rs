//! The public gRPC API (default port 50050) for third-party integrators: RunService and a
//! read-only ModelService, authenticated exactly like HTTP (`authorization: Bearer <JWT or API
//! key>` metadata; the dev identity in dev mode), rate-limited the same, and forwarded to the
//! services with the signed internal identity.

use std::pin::Pin;

use futures::Stream;
use pa_kit::PaError;
use pa_proto::v1::model_service_server::ModelService;
use pa_proto::v1::run_service_server::RunService;
use pa_proto::v1::{
    CancelRunRequest, Chat, CreateChatRequest, CreateRunRequest, CreateRunResponse,
    DeleteChatRequest, DeleteChatResponse, EmbedRequest, EmbedResponse, GetChatRequest,
    GetRunRequest, Identity, ListChatsRequest, ListChatsResponse, ListMessagesRequest,
    ListMessagesResponse, ListModelsRequest, ListModelsResponse, ModelSelection, RenameChatRequest,
    ResolveModelRequest, Run, RunEvent, StreamChatChunk, StreamChatRequest, StreamRunEventsRequest,
};
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::state::AppState;

#[derive(Clone)]
pub struct PublicApi {
    pub state: AppState,
}

impl PublicApi {
    /// Validates the message (no NUL in any string, bounded ids: `InvalidArgument` otherwise,
    /// before anything is forwarded), then authenticates the call the way the HTTP API does
    /// (same extractor, same limits, the method's API-key scope).
    async fn caller<T: serde::Serialize>(
        &self,
        request: &Request<T>,
        path: &str,
    ) -> Result<Identity, Status> {
        pa_kit::validate::message(request.get_ref()).map_err(Status::from)?;
        let mut builder = http::Request::builder().uri(path);
        if let Some(headers) = builder.headers_mut() {
            *headers = request.metadata().clone().into_headers();
        }
        let (mut parts, ()) = builder
            .body(())
            .map_err(|_| Status::from(PaError::bad_request("bad request metadata")))?
            .into_parts();
        parts.extensions.insert(crate::auth::grpc_scope(path));
        let caller = <Caller as axum::extract::FromRequestParts<AppState>>::from_request_parts(
            &mut parts,
            &self.state,
        )
        .await
        .map_err(|e| Status::from(e.0))?;
        Ok(caller.0)
    }

    fn forward<T>(&self, identity: &Identity, message: T) -> Request<T> {
        self.state.auth.request(identity, message)
    }
}

const RUNS: &str = "/personal_agent.v1.RunService/";

type EventStream = Pin<Box<dyn Stream<Item = Result<RunEvent, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<StreamChatChunk, Status>> + Send>>;

#[tonic::async_trait]
impl RunService for PublicApi {
    async fn create_chat(
        &self,
        request: Request<CreateChatRequest>,
    ) -> Result<Response<Chat>, Status> {
        let id = self.caller(&request, &format!("{RUNS}CreateChat")).await?;
        self.state
            .runs
            .clone()
            .create_chat(self.forward(&id, request.into_inner()))
            .await
    }

    async fn get_chat(&self, request: Request<GetChatRequest>) -> Result<Response<Chat>, Status> {
        let id = self.caller(&request, &format!("{RUNS}GetChat")).await?;
        self.state
            .runs
            .clone()
            .get_chat(self.forward(&id, request.into_inner()))
            .await
    }

    async fn list_chats(
        &self,
        request: Request<ListChatsRequest>,
    ) -> Result<Response<ListChatsResponse>, Status> {
        let id = self.caller(&request, &format!("{RUNS}ListChats")).await?;
        self.state
            .runs
            .clone()
            .list_chats(self.forward(&id, request.into_inner()))
            .await
    }

    async fn delete_chat(
        &self,
        request: Request<DeleteChatRequest>,
    ) -> Result<Response<DeleteChatResponse>, Status> {
        let id = self.caller(&request, &format!("{RUNS}DeleteChat")).await?;
        self.state
            .runs
            .clone()
            .delete_chat(self.forward(&id, request.into_inner()))
            .await
    }

    async fn rename_chat(
        &self,
        request: Request<RenameChatRequest>,
    ) -> Result<Response<Chat>, Status> {
        let id = self.caller(&request, &format!("{RUNS}RenameChat")).await?;
        self.state
            .runs
            .clone()
            .rename_chat(self.forward(&id, request.into_inner()))
            .await
    }

    async fn list_messages(
        &self,
        request: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let id = self
            .caller(&request, &format!("{RUNS}ListMessages"))
            .await?;
        self.state
            .runs
            .clone()
            .list_messages(self.forward(&id, request.into_inner()))
            .await
    }

    async fn create_run(
        &self,
        request: Request<CreateRunRequest>,
    ) -> Result<Response<CreateRunResponse>, Status> {
        let id = self.caller(&request, &format!("{RUNS}CreateRun")).await?;
        self.state
            .runs
            .clone()
            .create_run(self.forward(&id, request.into_inner()))
            .await
    }

    async fn get_run(&self, request: Request<GetRunRequest>) -> Result<Response<Run>, Status> {
        let id = self.caller(&request, &format!("{RUNS}GetRun")).await?;
        self.state
            .runs
            .clone()
            .get_run(self.forward(&id, request.into_inner()))
            .await
    }

    async fn cancel_run(
        &self,
        request: Request<CancelRunRequest>,
    ) -> Result<Response<Run>, Status> {
        let id = self.caller(&request, &format!("{RUNS}CancelRun")).await?;
        self.state
            .runs
            .clone()
            .cancel_run(self.forward(&id, request.into_inner()))
            .await
    }

    type StreamRunEventsStream = EventStream;

    async fn stream_run_events(
        &self,
        request: Request<StreamRunEventsRequest>,
    ) -> Result<Response<Self::StreamRunEventsStream>, Status> {
        let id = self
            .caller(&request, &format!("{RUNS}StreamRunEvents"))
            .await?;
        let stream = self
            .state
            .runs
            .clone()
            .stream_run_events(self.forward(&id, request.into_inner()))
            .await?;
        Ok(Response::new(Box::pin(stream.into_inner())))
    }
}

#[tonic::async_trait]
impl ModelService for PublicApi {
    async fn list_models(
        &self,
        request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let id = self
            .caller(&request, "/personal_agent.v1.ModelService/ListModels")
            .await?;
        self.state
            .models
            .clone()
            .list_models(self.forward(&id, request.into_inner()))
            .await
    }

    async fn resolve(
        &self,
        request: Request<ResolveModelRequest>,
    ) -> Result<Response<ModelSelection>, Status> {
        let id = self
            .caller(&request, "/personal_agent.v1.ModelService/Resolve")
            .await?;
        self.state
            .models
            .clone()
            .resolve(self.forward(&id, request.into_inner()))
            .await
    }

    type StreamChatStream = ChunkStream;

    /// Not public: model calls belong to runs (governance, usage, fallback are applied there).
    async fn stream_chat(
        &self,
        _request: Request<StreamChatRequest>,
    ) -> Result<Response<Self::StreamChatStream>, Status> {
        Err(
            PaError::unimplemented("StreamChat is internal; start a run with RunService.CreateRun")
                .into(),
        )
    }

    async fn embed(
        &self,
        _request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        Err(PaError::unimplemented("Embed is internal").into())
    }
}
