//! The public gRPC API: a third-party integrator with `authorization: Bearer <API key>` metadata
//! chats through RunService, reads ModelService, and is refused without credentials.

use futures::StreamExt;
use pa_proto::v1::model_service_client::ModelServiceClient;
use pa_proto::v1::run_service_client::RunServiceClient;
use pa_proto::v1::{
    CreateChatRequest, CreateRunRequest, ListChatsRequest, ListModelsRequest, StreamChatRequest,
    StreamRunEventsRequest, ag_ui_event::Event,
};
use serde_json::json;
use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn with_key<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {key}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[tokio::test]
async fn an_integrator_chats_over_grpc_with_an_api_key() -> R {
    // A user makes a key over HTTP (dev identity), then an integrator uses it over gRPC.
    let dev = Mesh::builder().start().await?;
    let (status, created) = dev
        .post_json("/v1/me/api-keys", &json!({"name": "grpc"}))
        .await?;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap_or_default().to_string();
    let mut runs = RunServiceClient::connect(dev.public_grpc_url.clone()).await?;
    let chat = runs
        .create_chat(with_key(
            &key,
            CreateChatRequest {
                title: "over gRPC".into(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    let run = runs
        .create_run(with_key(
            &key,
            CreateRunRequest {
                chat_id: chat.id.clone(),
                message: "hi from grpc".into(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .run
        .ok_or("no run")?;
    let mut events = runs
        .stream_run_events(with_key(
            &key,
            StreamRunEventsRequest {
                run_id: run.id.clone(),
                after: String::new(),
            },
        ))
        .await?
        .into_inner();
    let mut text = String::new();
    let mut last = None;
    while let Some(event) = events.next().await {
        let event = event?.event.ok_or("empty event")?;
        if let Some(Event::TextMessageContent(c)) = &event.event {
            text.push_str(&c.delta);
        }
        last = Some(event.type_name());
    }
    assert_eq!(last, Some("RUN_FINISHED"));
    assert!(text.contains("hi from grpc"), "{text}");

    let mut models = ModelServiceClient::connect(dev.public_grpc_url.clone()).await?;
    let list = models
        .list_models(with_key(&key, ListModelsRequest {}))
        .await?
        .into_inner();
    assert!(list.models.iter().any(|m| m.label == "offline:echo"));
    let refused = models
        .stream_chat(with_key(&key, StreamChatRequest::default()))
        .await
        .err()
        .ok_or("StreamChat is public")?;
    assert_eq!(refused.code(), tonic::Code::Unimplemented);

    // Without the dev identity (auth disabled) and without a key: refused with the stable code.
    let mesh = Mesh::builder()
        .auth_mode(svc_gateway::AuthMode::Disabled)
        .start()
        .await?;
    let mut bare = RunServiceClient::connect(mesh.public_grpc_url.clone()).await?;
    let status = bare
        .list_chats(ListChatsRequest::default())
        .await
        .err()
        .ok_or("no auth needed?")?;
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        status
            .metadata()
            .get("x-pa-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("unauthenticated")
    );
    let status = bare
        .list_chats(with_key(
            "pa_not_a_real_key_at_all",
            ListChatsRequest::default(),
        ))
        .await
        .err()
        .ok_or("fake key")?;
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    dev.stop().await?;
    mesh.stop().await
}
