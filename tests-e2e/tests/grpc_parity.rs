//! The public gRPC API covers the REST API (ADR 0211): every REST operation has its gRPC twin,
//! served by the gateway with the same authentication, the same API-key scope and the same
//! error codes, and both call the same operation (so what one refuses or sanitises, the other
//! does too). Hostile callers (forged memory fields, another tenant's ids, the mesh's internal
//! methods, a key without the admin scope) and a service outage are tried on the gRPC side.

use pa_proto::v1::memory_service_client::MemoryServiceClient;
use pa_proto::v1::model_admin_service_client::ModelAdminServiceClient;
use pa_proto::v1::tool_service_client::ToolServiceClient;
use pa_proto::v1::usage_service_client::UsageServiceClient;
use pa_proto::v1::{
    AssembleToolsetRequest, ChatToolSelection, CreateIntegrationRequest, CurateRequest,
    DataClassification, ExecuteToolRequest, ForgetMemoryRequest, GetIntegrationRequest,
    GetUsageRequest, IngestDocumentRequest, ListMemoriesRequest, ListProvidersRequest, MemoryItem,
    MemoryKind, MemoryScope, MemorySource, UpsertMemoryRequest, UsageScope,
};
use serde_json::{Value, json};
use svc_gateway::operations::{self, Operation};
use tests_e2e::Mesh;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type R = Result<(), BoxError>;

/// A message with the caller's credentials as metadata: an API key, or dev identity headers.
fn call<T>(message: T, metadata: &[(&'static str, &str)]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (name, value) in metadata {
        if let Ok(value) = value.parse() {
            request.metadata_mut().insert(*name, value);
        }
    }
    request
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Calls an operation by its method path with an empty message and `key`; `None` = OK.
async fn call_raw(
    channel: &Channel,
    op: &Operation,
    key: &str,
) -> Result<Option<tonic::Status>, BoxError> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await?;
    let request = call((), &[("authorization", &bearer(key))]);
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let answer = grpc
        .server_streaming(request, PathAndQuery::from_static(op.grpc), codec)
        .await;
    Ok(answer.err())
}

fn error_code(status: &tonic::Status) -> &str {
    status
        .metadata()
        .get("x-pa-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn make_key(mesh: &Mesh, scopes: &[&str]) -> Result<String, BoxError> {
    let (status, created) = mesh
        .post_json(
            "/v1/me/api-keys",
            &json!({"name": "parity", "scopes": scopes}),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    Ok(created["key"].as_str().ok_or("no key")?.to_string())
}

#[tokio::test]
async fn every_rest_operation_is_served_over_grpc_with_the_same_scope() -> R {
    let mesh = Mesh::builder().start().await?;
    let channel = Channel::from_shared(mesh.public_grpc_url.clone())?
        .connect()
        .await?;
    let chats_only = make_key(&mesh, &["chats"]).await?;
    let http = reqwest::Client::new();
    let mut checked = 0;
    for (method, path, twin) in svc_gateway::route_twins() {
        let Some(op) = twin else { continue };
        // Served and authenticated: a forged key is refused, never UNIMPLEMENTED (credentials
        // are managed by signed-in users only: there, any API key is refused unread).
        if op.scope != svc_gateway::Scope::Public {
            let status = call_raw(&channel, op, "pa_forged_forged")
                .await?
                .ok_or(op.grpc)?;
            let expected = if op.scope == svc_gateway::Scope::SessionOnly {
                (Code::PermissionDenied, "forbidden")
            } else {
                (Code::Unauthenticated, "unauthenticated")
            };
            assert_eq!(
                (status.code(), error_code(&status)),
                expected,
                "{}: {status:?}",
                op.grpc
            );
        }
        // The same scope: a chats-only key is refused by both front ends or by neither.
        let grpc = call_raw(&channel, op, &chats_only).await?;
        let grpc_refused = grpc
            .as_ref()
            .is_some_and(|s| s.code() == Code::PermissionDenied);
        if let Some(status) = &grpc {
            assert_ne!(status.code(), Code::Unimplemented, "{}", op.grpc);
        }
        let url = mesh.url(
            &path
                .replace("{id}", "x")
                .replace("{tool_call_id}", "x")
                .replace("{provider}", "x")
                .replace("{label}", "x:y")
                .replace("{classification}", "public")
                .replace("{user_id}", "x"),
        );
        let rest = http
            .request(method.clone(), url)
            .header("authorization", bearer(&chats_only))
            .json(&json!({}))
            .send()
            .await?
            .status()
            .as_u16();
        assert_eq!(
            rest == 403,
            grpc_refused,
            "{method} {path} answered {rest}, its twin {} answered {grpc:?}",
            op.grpc
        );
        assert_eq!(
            grpc_refused,
            op.scope != svc_gateway::Scope::Chats && op.scope != svc_gateway::Scope::Public,
            "{}",
            op.grpc
        );
        checked += 1;
    }
    assert!(checked >= 45, "only {checked} twins");
    // Every operation, including those REST folds into another route, is served.
    for op in operations::ALL {
        let status = call_raw(&channel, op, "pa_forged_forged").await?;
        assert_ne!(
            status.map(|s| s.code()),
            Some(Code::Unimplemented),
            "{}",
            op.grpc
        );
    }
    mesh.stop().await
}

#[tokio::test]
async fn memories_and_integrations_round_trip_over_grpc_and_rest_sees_them() -> R {
    let mesh = Mesh::builder().start().await?;
    let url = mesh.public_grpc_url.clone();
    let key = make_key(&mesh, &["memory", "integrations", "chats"]).await?;

    let memory = pa_grpc_example::memory_round_trip(&url, &key, "my cat is called Biscuit").await?;
    assert_eq!(memory.created.content, "my cat is called Biscuit");
    assert_eq!(memory.created.scope, MemoryScope::World as i32);
    assert_eq!(memory.created.kind, MemoryKind::Fact as i32);
    assert_eq!(memory.found.first(), Some(&memory.created.id));
    assert_eq!(memory.forgotten, 1);
    // REST sees the same store: the forgotten memory is gone there too.
    let (status, page) = mesh.get_json("/v1/me/memories").await?;
    assert_eq!(status, 200, "{page}");
    assert!(!page.to_string().contains("Biscuit"), "{page}");

    let integration = pa_grpc_example::integration_round_trip(&url, &key, "fetcher").await?;
    assert_eq!(integration.created.kind, "web_fetch");
    assert!(integration.created.enabled);
    assert!(!integration.disabled.enabled);
    assert_eq!(integration.selected, vec![integration.created.id.clone()]);
    let (status, _) = mesh
        .get_json(&format!("/v1/me/integrations/{}", integration.created.id))
        .await?;
    assert_eq!(status, 404, "deleted over gRPC, gone over REST");

    // And the other way: what REST creates, gRPC reads.
    let (status, created) = mesh
        .post_json(
            "/v1/me/integrations",
            &json!({"kind": "web_fetch", "name": "rest made"}),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    let mut tools = ToolServiceClient::connect(url.clone()).await?;
    let read = tools
        .get_integration(call(
            GetIntegrationRequest {
                id: created["id"].as_str().unwrap_or("").into(),
            },
            &[("authorization", &bearer(&key))],
        ))
        .await?
        .into_inner();
    assert_eq!(read.name, "rest made");
    mesh.stop().await
}

#[tokio::test]
async fn forged_memory_fields_are_refused_or_overridden_as_over_rest() -> R {
    let mesh = Mesh::builder().start().await?;
    let key = make_key(&mesh, &["memory", "chats"]).await?;
    let auth = bearer(&key);
    let meta = [("authorization", auth.as_str())];
    let (status, chat) = mesh
        .post_json(
            "/v1/chats",
            &json!({"title": "secret", "classification": "restricted"}),
        )
        .await?;
    assert_eq!(status, 201, "{chat}");
    let chat_id = chat["id"].as_str().ok_or("no chat id")?.to_string();
    let mut memory = MemoryServiceClient::connect(mesh.public_grpc_url.clone()).await?;

    for (forged, what) in [
        (
            MemoryItem {
                id: "someone-elses".into(),
                content: "x".into(),
                ..Default::default()
            },
            "an id",
        ),
        (
            MemoryItem {
                kind: MemoryKind::DocumentChunk as i32,
                content: "x".into(),
                ..Default::default()
            },
            "a document chunk",
        ),
    ] {
        let status = memory
            .upsert(call(
                UpsertMemoryRequest {
                    item: Some(forged),
                    no_dedup: false,
                },
                &meta,
            ))
            .await
            .err()
            .ok_or(what)?;
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert_eq!(error_code(&status), "bad_request");
    }
    let status = memory
        .upsert(call(
            UpsertMemoryRequest {
                item: Some(MemoryItem {
                    content: "x".into(),
                    ..Default::default()
                }),
                no_dedup: true,
            },
            &meta,
        ))
        .await
        .err()
        .ok_or("no_dedup taken")?;
    assert_eq!(status.code(), Code::InvalidArgument);

    // Provenance, embedding and times are the platform's; a chat memory keeps its chat's
    // classification.
    let stored = memory
        .upsert(call(
            UpsertMemoryRequest {
                item: Some(MemoryItem {
                    content: "the launch code is in the blue folder".into(),
                    chat_id: Some(chat_id.clone()),
                    source: Some(MemorySource {
                        run_id: "forged-run".into(),
                        message_id: "forged-message".into(),
                        ..Default::default()
                    }),
                    embedding_model: "forged-model".into(),
                    created_at_ms: 1,
                    ..Default::default()
                }),
                no_dedup: false,
            },
            &meta,
        ))
        .await?
        .into_inner();
    let source = stored.source.clone().unwrap_or_default();
    assert_eq!(source.run_id, "");
    assert_eq!(source.message_id, "");
    assert_eq!(source.chat_id, chat_id);
    assert_ne!(stored.embedding_model, "forged-model");
    assert!(stored.created_at_ms > 1);
    assert_eq!(stored.scope, MemoryScope::Chat as i32);
    assert_eq!(stored.classification, DataClassification::Restricted as i32);

    // A document claims to be public: its chunks take the restricted chat's classification.
    memory
        .ingest_document(call(
            IngestDocumentRequest {
                chat_id: chat_id.clone(),
                filename: "notes.txt".into(),
                content_type: "text/plain".into(),
                data: b"Quarterly numbers: all up.".to_vec(),
                classification: DataClassification::Public as i32,
            },
            &meta,
        ))
        .await?;
    let chunks = memory
        .list(call(
            ListMemoriesRequest {
                chat_id: Some(chat_id.clone()),
                kinds: vec![MemoryKind::DocumentChunk as i32],
                ..Default::default()
            },
            &meta,
        ))
        .await?
        .into_inner()
        .items;
    assert!(!chunks.is_empty());
    for chunk in &chunks {
        assert_eq!(chunk.classification, DataClassification::Restricted as i32);
        assert!(chunk.untrusted, "a file's chunk is untrusted");
    }
    // Someone else's chat: 404, as over REST.
    let status = memory
        .ingest_document(call(
            IngestDocumentRequest {
                chat_id: chat_id.clone(),
                filename: "x.txt".into(),
                content_type: "text/plain".into(),
                data: b"hi".to_vec(),
                ..Default::default()
            },
            &[("x-pa-dev-user", "mallory"), ("x-pa-dev-tenant", "other")],
        ))
        .await
        .err()
        .ok_or("another tenant uploaded into the chat")?;
    assert_eq!(status.code(), Code::NotFound);
    mesh.stop().await
}

#[tokio::test]
async fn another_tenant_internal_methods_and_a_narrow_key_are_refused() -> R {
    let mut mesh = Mesh::builder().start().await?;
    let url = mesh.public_grpc_url.clone();
    let (status, integration) = mesh
        .post_json(
            "/v1/me/integrations",
            &json!({"kind": "web_fetch", "name": "mine"}),
        )
        .await?;
    assert_eq!(status, 201, "{integration}");
    let integration_id = integration["id"].as_str().ok_or("no id")?.to_string();
    let chat_id = mesh.create_chat("mine").await?;
    let (status, remembered) = mesh
        .post_json("/v1/me/memories", &json!({"text": "alice likes tea"}))
        .await?;
    assert_eq!(status, 201, "{remembered}");
    let memory_id = remembered["id"].as_str().ok_or("no id")?.to_string();

    // Another tenant (dev identity headers) names the first tenant's ids.
    let mallory = [("x-pa-dev-user", "mallory"), ("x-pa-dev-tenant", "other")];
    let mut tools = ToolServiceClient::connect(url.clone()).await?;
    let status = tools
        .get_integration(call(
            GetIntegrationRequest {
                id: integration_id.clone(),
            },
            &mallory,
        ))
        .await
        .err()
        .ok_or("read another tenant's integration")?;
    assert_eq!(status.code(), Code::NotFound);
    let status = tools
        .set_chat_tool_selection(call(
            ChatToolSelection {
                chat_id: chat_id.clone(),
                integration_ids: vec![],
            },
            &mallory,
        ))
        .await
        .err()
        .ok_or("changed another tenant's chat")?;
    assert_eq!(status.code(), Code::NotFound);
    let mut memory = MemoryServiceClient::connect(url.clone()).await?;
    let _ = memory
        .forget(call(
            ForgetMemoryRequest {
                id: memory_id.clone(),
                ..Default::default()
            },
            &mallory,
        ))
        .await;
    let (status, page) = mesh.get_json("/v1/me/memories").await?;
    assert_eq!(status, 200);
    assert!(
        page.to_string().contains(&memory_id),
        "another tenant forgot it: {page}"
    );

    // The mesh's own methods are not public, whoever asks.
    let status = tools
        .execute_tool(call(ExecuteToolRequest::default(), &[]))
        .await
        .err()
        .ok_or("ExecuteTool is public")?;
    assert_eq!(status.code(), Code::Unimplemented);
    let status = tools
        .assemble_toolset(call(AssembleToolsetRequest::default(), &[]))
        .await
        .err()
        .ok_or("AssembleToolset is public")?;
    assert_eq!(status.code(), Code::Unimplemented);
    let status = memory
        .curate(call(CurateRequest { chat_id }, &[]))
        .await
        .err()
        .ok_or("Curate is public")?;
    assert_eq!(status.code(), Code::Unimplemented);

    // A key without the admin scope reads its user's usage, never the organisation's, even
    // though the user is an administrator (the dev user is).
    let models_key = make_key(&mesh, &["models"]).await?;
    let auth = bearer(&models_key);
    let mut usage = UsageServiceClient::connect(url.clone()).await?;
    usage
        .get_usage(call(
            GetUsageRequest {
                scope: UsageScope::Me as i32,
                ..Default::default()
            },
            &[("authorization", &auth)],
        ))
        .await?;
    let status = usage
        .get_usage(call(
            GetUsageRequest {
                scope: UsageScope::Tenant as i32,
                ..Default::default()
            },
            &[("authorization", &auth)],
        ))
        .await
        .err()
        .ok_or("tenant usage without the admin scope")?;
    assert_eq!(status.code(), Code::PermissionDenied);
    // A plain user is no administrator over gRPC either (as REST answers 403).
    let plain = [("x-pa-dev-user", "bob"), ("x-pa-dev-roles", "user")];
    let mut admin = ModelAdminServiceClient::connect(url.clone()).await?;
    let status = admin
        .list_providers(call(ListProvidersRequest {}, &plain))
        .await
        .err()
        .ok_or("a user listed the providers")?;
    assert_eq!(status.code(), Code::PermissionDenied);
    let rest = reqwest::Client::new()
        .get(mesh.url("/v1/admin/providers"))
        .header("x-pa-dev-user", "bob")
        .header("x-pa-dev-roles", "user")
        .send()
        .await?;
    assert_eq!(rest.status().as_u16(), 403);

    // Fault: svc-tools stops. Both front ends answer `unavailable`, with the same stable code.
    mesh.stop_service("svc-tools").await?;
    let status = tools
        .create_integration(call(
            CreateIntegrationRequest {
                kind: "web_fetch".into(),
                name: "later".into(),
                enabled: true,
                ..Default::default()
            },
            &[],
        ))
        .await
        .err()
        .ok_or("created with svc-tools down")?;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(error_code(&status), "unavailable");
    let (rest, problem): (u16, Value) = mesh
        .post_json(
            "/v1/me/integrations",
            &json!({"kind": "web_fetch", "name": "later"}),
        )
        .await?;
    assert_eq!(rest, 503, "{problem}");
    assert_eq!(problem["code"], json!("unavailable"), "{problem}");
    mesh.stop().await
}
