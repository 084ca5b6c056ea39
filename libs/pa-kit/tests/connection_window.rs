//! A model stream is many tiny DATA frames. When the reader falls behind (a busy svc-runs with
//! hundreds of runs), h2 counts the small frames received but not yet read and closes the whole
//! connection with ENHANCE_YOUR_CALM (`too_many_data_frames`) past half the connection window:
//! every stream on it dies at once. Found with `pa-bench sizing` at 500 concurrent runs.
//!
//! Here a server sends 20,000 one-token messages, each in its own DATA frame, to a client that
//! reads nothing until the server is done: through `pa_kit::endpoints::endpoint` every message
//! arrives; through a plain tonic endpoint (hyper's defaults) the connection is torn down.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use pa_proto::v1::run_service_client::RunServiceClient;
use pa_proto::v1::run_service_server::{RunService, RunServiceServer};
use pa_proto::v1::*;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

const MESSAGES: usize = 20_000;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Streams [`MESSAGES`] tiny events, yielding between them so each leaves in its own frame.
#[derive(Clone)]
struct TinyFrames {
    sent_all: Arc<Notify>,
}

struct NotifyOnDrop(Arc<Notify>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in this test"))
}

#[tonic::async_trait]
impl RunService for TinyFrames {
    type StreamRunEventsStream = Pin<Box<dyn Stream<Item = Result<RunEvent, Status>> + Send>>;

    async fn stream_run_events(
        &self,
        _: Request<StreamRunEventsRequest>,
    ) -> Result<Response<Self::StreamRunEventsStream>, Status> {
        // Signals when the stream ends: every message sent, or the connection gone under it.
        let done = NotifyOnDrop(self.sent_all.clone());
        let events = futures::stream::unfold((0usize, done), |(i, done)| async move {
            if i == MESSAGES {
                return None;
            }
            // Pending once: the encoder flushes what it has, one message per DATA frame.
            tokio::task::yield_now().await;
            let event = RunEvent {
                stream_id: format!("{i}"),
                event: None,
            };
            Some((Ok(event), (i + 1, done)))
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn create_chat(&self, _: Request<CreateChatRequest>) -> Result<Response<Chat>, Status> {
        unimplemented()
    }
    async fn get_chat(&self, _: Request<GetChatRequest>) -> Result<Response<Chat>, Status> {
        unimplemented()
    }
    async fn list_chats(
        &self,
        _: Request<ListChatsRequest>,
    ) -> Result<Response<ListChatsResponse>, Status> {
        unimplemented()
    }
    async fn delete_chat(
        &self,
        _: Request<DeleteChatRequest>,
    ) -> Result<Response<DeleteChatResponse>, Status> {
        unimplemented()
    }
    async fn rename_chat(&self, _: Request<RenameChatRequest>) -> Result<Response<Chat>, Status> {
        unimplemented()
    }
    async fn list_messages(
        &self,
        _: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        unimplemented()
    }
    async fn create_run(
        &self,
        _: Request<CreateRunRequest>,
    ) -> Result<Response<CreateRunResponse>, Status> {
        unimplemented()
    }
    async fn get_run(&self, _: Request<GetRunRequest>) -> Result<Response<Run>, Status> {
        unimplemented()
    }
    async fn cancel_run(&self, _: Request<CancelRunRequest>) -> Result<Response<Run>, Status> {
        unimplemented()
    }
}

/// Starts the server; its URL and the signal it gives once every message is sent.
async fn serve() -> Result<(String, Arc<Notify>), Box<dyn std::error::Error + Send + Sync>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let sent_all = Arc::new(Notify::new());
    let service = RunServiceServer::new(TinyFrames {
        sent_all: sent_all.clone(),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok((url, sent_all))
}

/// Opens the stream, reads nothing until the server has sent everything, then reads it all:
/// how many messages arrived, and the error that ended the stream early, if any.
async fn read_after_the_server_is_done(
    channel: tonic::transport::Channel,
    sent_all: Arc<Notify>,
) -> Result<(usize, Option<Status>), Box<dyn std::error::Error + Send + Sync>> {
    let mut client = RunServiceClient::new(channel);
    let mut stream = client
        .stream_run_events(StreamRunEventsRequest::default())
        .await?
        .into_inner();
    // The server finishes sending (or its connection is closed under it) while we do not read.
    let _ = tokio::time::timeout(Duration::from_secs(30), sent_all.notified()).await;
    // Give the connection task time to take in what is on the wire.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut received = 0;
    while let Some(item) = stream.next().await {
        match item {
            Ok(_) => received += 1,
            Err(status) => return Ok((received, Some(status))),
        }
    }
    Ok((received, None))
}

#[tokio::test]
async fn a_reader_that_falls_behind_a_stream_of_tiny_frames_keeps_its_connection() -> R {
    let (url, sent_all) = serve().await?;
    let channel = pa_kit::endpoints::endpoint(&url)?.connect().await?;
    let (received, error) = read_after_the_server_is_done(channel, sent_all).await?;
    assert!(error.is_none(), "the stream broke: {error:?}");
    assert_eq!(received, MESSAGES);
    Ok(())
}

#[tokio::test]
async fn with_hypers_default_window_the_same_reader_loses_the_connection() -> R {
    // The control: the guard this configuration works around is real.
    let (url, sent_all) = serve().await?;
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect()
        .await?;
    let (received, error) = read_after_the_server_is_done(channel, sent_all).await?;
    assert!(
        received < MESSAGES && error.is_some(),
        "expected the default connection to be closed (received {received}, error {error:?})"
    );
    Ok(())
}
