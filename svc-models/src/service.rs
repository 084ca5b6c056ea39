//! ModelService over gRPC: converts and delegates; no domain logic here.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use pa_kit::{PaError, RequestIdentity, Shutdown};
use pa_proto::v1::model_service_server::ModelService;
use pa_proto::v1::{
    ChatFinish, EmbedRequest, EmbedResponse, ListModelsRequest, ListModelsResponse, ModelSelection,
    ResolveModelRequest, StreamChatChunk, StreamChatRequest, stream_chat_chunk,
};
use tonic::{Request, Response, Status};

use crate::catalog::Catalog;
use crate::offline;

pub struct ModelServiceImpl {
    catalog: Catalog,
    offline_token_delay: Duration,
    shutdown: Shutdown,
}

impl ModelServiceImpl {
    pub fn new(catalog: Catalog, offline_token_delay: Duration, shutdown: Shutdown) -> Self {
        Self {
            catalog,
            offline_token_delay,
            shutdown,
        }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<StreamChatChunk, Status>> + Send>>;

fn chunk(chunk: stream_chat_chunk::Chunk) -> StreamChatChunk {
    StreamChatChunk { chunk: Some(chunk) }
}

#[tonic::async_trait]
impl ModelService for ModelServiceImpl {
    async fn list_models(
        &self,
        request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        request.identity()?;
        let models = self.catalog.enabled_models().await.map_err(PaError::from)?;
        Ok(Response::new(ListModelsResponse {
            models: models.into_iter().map(|m| m.info).collect(),
        }))
    }

    async fn resolve(
        &self,
        request: Request<ResolveModelRequest>,
    ) -> Result<Response<ModelSelection>, Status> {
        request.identity()?;
        let selection = self
            .catalog
            .resolve(&request.get_ref().requested)
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(selection))
    }

    type StreamChatStream = ChunkStream;

    async fn stream_chat(
        &self,
        request: Request<StreamChatRequest>,
    ) -> Result<Response<Self::StreamChatStream>, Status> {
        request.identity()?;
        let request = request.into_inner();
        let model = self
            .catalog
            .get(&request.label)
            .await
            .map_err(PaError::from)?;
        if model.provider_kind != "offline" {
            return Err(PaError::unavailable(format!(
                "provider kind {} of {} cannot be called yet",
                model.provider_kind, model.info.label
            ))
            .into());
        }
        let tokens = offline::reply_tokens(&request.messages);
        let usage = offline::usage(&request.messages, tokens.len());
        let delay = self.offline_token_delay;
        let label = model.info.label;
        let stop = self.shutdown.token();
        // A bounded channel gives back-pressure; a dropped receiver (client gone) ends the task.
        let (tx, rx) = tokio::sync::mpsc::channel(32);
        tokio::spawn(async move {
            for (i, token) in tokens.into_iter().enumerate() {
                if i > 0 && !delay.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => {}
                    }
                }
                let text = chunk(stream_chat_chunk::Chunk::TextDelta(token));
                if tx.send(Ok(text)).await.is_err() {
                    return;
                }
            }
            let finish = ChatFinish {
                finish_reason: "stop".into(),
                usage: Some(usage),
                attempts: vec![pa_proto::v1::ModelAttempt {
                    label: label.clone(),
                    outcome: "ok".into(),
                    key_source: "none".into(),
                    ..Default::default()
                }],
                served_label: label,
            };
            let _ = tx
                .send(Ok(chunk(stream_chat_chunk::Chunk::Finish(finish))))
                .await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        request.identity()?;
        Err(PaError::unimplemented("embeddings arrive with the memory service (issue 7)").into())
    }
}
