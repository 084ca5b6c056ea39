//! The public gRPC API from an integrator's side: every call carries
//! `authorization: Bearer <token>` metadata (an API key `pa_…` or an OIDC access token).
//!
//! [`chat_once`] is the whole flow: CreateChat → CreateRun → StreamRunEvents, writing each
//! `TEXT_MESSAGE_CONTENT` delta as it arrives. An integrator outside this workspace generates
//! the same stubs from `proto/personal_agent/v1/*.proto` (or uses grpcurl with reflection).

use std::io::Write;

use futures::StreamExt;
use pa_proto::v1::ag_ui_event::Event;
use pa_proto::v1::run_service_client::RunServiceClient;
use pa_proto::v1::{CreateChatRequest, CreateRunRequest, StreamRunEventsRequest};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::Channel;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    pub fn new(token: &str) -> Result<Self, BoxError> {
        Ok(Self(format!("Bearer {token}").parse()?))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// How the run ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub chat_id: String,
    pub run_id: String,
    /// The last event's AG-UI type: `RUN_FINISHED` or `RUN_ERROR`.
    pub last_event: String,
    /// The assistant's text, as streamed.
    pub text: String,
}

/// Starts a run with `message` in a new chat and streams its events until the run ends,
/// writing the text deltas to `out` as they arrive.
pub async fn chat_once(
    url: &str,
    token: &str,
    message: &str,
    model: &str,
    out: &mut (dyn Write + Send),
) -> Result<Outcome, BoxError> {
    let channel = Channel::from_shared(url.to_string())?.connect().await?;
    let mut runs = RunServiceClient::with_interceptor(channel, Bearer::new(token)?);
    let chat = runs
        .create_chat(CreateChatRequest {
            title: "gRPC example".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let run = runs
        .create_run(CreateRunRequest {
            chat_id: chat.id.clone(),
            message: message.into(),
            model: model.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .run
        .ok_or("CreateRun answered without a run")?;
    // `after` = "" reads the stream from its start; a client that reconnects passes the last
    // event id it saw and resumes without gaps or duplicates.
    let mut events = runs
        .stream_run_events(StreamRunEventsRequest {
            run_id: run.id.clone(),
            after: String::new(),
        })
        .await?
        .into_inner();
    let mut outcome = Outcome {
        chat_id: chat.id,
        run_id: run.id,
        last_event: String::new(),
        text: String::new(),
    };
    while let Some(item) = events.next().await {
        let Some(event) = item?.event else { continue };
        match &event.event {
            Some(Event::TextMessageContent(content)) => {
                write!(out, "{}", content.delta)?;
                out.flush()?;
                outcome.text.push_str(&content.delta);
            }
            Some(Event::RunError(error)) => writeln!(out, "\n[run error] {}", error.message)?,
            _ => {}
        }
        outcome.last_event = event.type_name().to_string();
    }
    writeln!(out)?;
    Ok(outcome)
}
