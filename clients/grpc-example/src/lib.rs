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

/// What [`memory_round_trip`] saw.
#[derive(Debug)]
pub struct MemoryRoundTrip {
    /// The memory as stored.
    pub created: pa_proto::v1::MemoryItem,
    /// The ids a search for the text found, best first.
    pub found: Vec<String>,
    /// How many memories the forget removed (1).
    pub forgotten: u32,
}

/// Remembers `text` for the key's user, finds it by searching, pins it, then forgets it:
/// `MemoryService` Upsert → Search → Update → Forget (API-key scope `memory`).
pub async fn memory_round_trip(
    url: &str,
    token: &str,
    text: &str,
) -> Result<MemoryRoundTrip, BoxError> {
    use pa_proto::v1::memory_service_client::MemoryServiceClient;
    use pa_proto::v1::{
        ForgetMemoryRequest, MemoryItem, SearchMemoryRequest, UpdateMemoryRequest,
        UpsertMemoryRequest,
    };
    let channel = Channel::from_shared(url.to_string())?.connect().await?;
    let mut memory = MemoryServiceClient::with_interceptor(channel, Bearer::new(token)?);
    let created = memory
        .upsert(UpsertMemoryRequest {
            item: Some(MemoryItem {
                content: text.into(),
                tags: vec!["grpc-example".into()],
                ..Default::default()
            }),
            no_dedup: false,
        })
        .await?
        .into_inner();
    let found = memory
        .search(SearchMemoryRequest {
            query: text.into(),
            limit: 5,
            ..Default::default()
        })
        .await?
        .into_inner()
        .results
        .into_iter()
        .filter_map(|r| r.item.map(|i| i.id))
        .collect();
    memory
        .update(UpdateMemoryRequest {
            id: created.id.clone(),
            pinned: Some(true),
            content: None,
        })
        .await?;
    let forgotten = memory
        .forget(ForgetMemoryRequest {
            id: created.id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .forgotten;
    Ok(MemoryRoundTrip {
        created,
        found,
        forgotten,
    })
}

/// What [`integration_round_trip`] saw.
#[derive(Debug)]
pub struct IntegrationRoundTrip {
    /// The integration as created (its secrets are never returned, only their names).
    pub created: pa_proto::v1::Integration,
    /// It after being switched off.
    pub disabled: pa_proto::v1::Integration,
    /// The chat whose runs were offered its tools.
    pub chat_id: String,
    /// The chat's tool selection as stored.
    pub selected: Vec<String>,
}

/// Adds a web-fetch integration, selects it for a new chat, switches it off, then deletes it:
/// `ToolService` CreateIntegration → SetChatToolSelection → UpdateIntegration →
/// DeleteIntegration (API-key scopes `integrations` and `chats`).
pub async fn integration_round_trip(
    url: &str,
    token: &str,
    name: &str,
) -> Result<IntegrationRoundTrip, BoxError> {
    use pa_proto::v1::tool_service_client::ToolServiceClient;
    use pa_proto::v1::{
        ChatToolSelection, CreateIntegrationRequest, DeleteIntegrationRequest,
        UpdateIntegrationRequest,
    };
    let channel = Channel::from_shared(url.to_string())?.connect().await?;
    let bearer = Bearer::new(token)?;
    let mut tools = ToolServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut runs = RunServiceClient::with_interceptor(channel, bearer);
    let created = tools
        .create_integration(CreateIntegrationRequest {
            kind: "web_fetch".into(),
            name: name.into(),
            enabled: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let chat = runs
        .create_chat(CreateChatRequest {
            title: "with web fetch".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let selected = tools
        .set_chat_tool_selection(ChatToolSelection {
            chat_id: chat.id.clone(),
            integration_ids: vec![created.id.clone()],
        })
        .await?
        .into_inner()
        .integration_ids;
    let disabled = tools
        .update_integration(UpdateIntegrationRequest {
            id: created.id.clone(),
            enabled: Some(false),
            ..Default::default()
        })
        .await?
        .into_inner();
    tools
        .delete_integration(DeleteIntegrationRequest {
            id: created.id.clone(),
        })
        .await?;
    Ok(IntegrationRoundTrip {
        created,
        disabled,
        chat_id: chat.id,
        selected,
    })
}
