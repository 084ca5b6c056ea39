//! Bad input gets a clear, typed error over HTTP (problem+json) and gRPC (same codes), and
//! nothing half-written; identity that did not come from the gateway is refused.

use pa_proto::v1::run_service_client::RunServiceClient;
use pa_proto::v1::{CreateChatRequest, GetChatRequest, ListChatsRequest};
use serde_json::{Value, json};
use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn problem(
    response: reqwest::Response,
) -> Result<(u16, Value), Box<dyn std::error::Error + Send + Sync>> {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(content_type, "application/problem+json", "status {status}");
    let body: Value = response.json().await?;
    assert_eq!(body["status"], json!(status));
    assert!(body["code"].is_string() && body["detail"].is_string() && body["type"].is_string());
    Ok((status, body))
}

#[tokio::test]
async fn http_errors_are_problem_json_with_stable_codes() -> R {
    let mesh = Mesh::builder().start().await?;
    let chat_id = mesh.create_chat("errors").await?;
    let http = &mesh.http;

    // Unknown ids → 404.
    for path in [
        "/v1/chats/nope",
        "/v1/chats/nope/messages",
        "/v1/runs/nope",
        "/v1/runs/nope/events",
        "/v1/nowhere",
    ] {
        let (status, body) = problem(http.get(mesh.url(path)).send().await?).await?;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
    let (status, _) = problem(http.post(mesh.url("/v1/runs/nope/cancel")).send().await?).await?;
    assert_eq!(status, 404);
    let (status, _) = problem(
        http.post(mesh.url("/v1/chats/nope/runs"))
            .json(&json!({"message": "x"}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 404);

    // Malformed JSON and bad fields → 400.
    let runs = mesh.url(&format!("/v1/chats/{chat_id}/runs"));
    let malformed = http
        .post(&runs)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    let (status, body) = problem(malformed).await?;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    for bad in [
        json!({}),
        json!({"message": 5}),
        json!({"message": "   "}),
        json!({"message": "hi", "mode": "sideways"}),
        json!({"message": "hi", "surprise": true}),
        json!({"message": "hi", "model": "not-a-label"}),
        json!({"message": "hi", "run_id": "has spaces"}),
    ] {
        let (status, body) = problem(http.post(&runs).json(&bad).send().await?).await?;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_request")),
            "{bad} → {body}"
        );
    }
    let (status, body) = problem(
        http.post(&runs)
            .json(&json!({"message": "hi", "model": "nobody:nothing"}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, _) = problem(
        http.post(mesh.url("/v1/chats"))
            .json(&json!({"classification": "secret-ish"}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 400);
    let (status, _) = problem(http.get(mesh.url("/v1/chats?limit=abc")).send().await?).await?;
    assert_eq!(status, 400);
    let (status, _) = problem(http.get(mesh.url("/v1/chats?cursor=%%%")).send().await?).await?;
    assert_eq!(status, 400);

    // `mode` and its shorthand `durable` must agree.
    let (status, body) = problem(
        http.post(&runs)
            .json(&json!({"message": "hi", "mode": "inline", "durable": true}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));

    // A bad Last-Event-ID is refused rather than silently restarting the stream.
    let run_id = mesh.start_run(&chat_id, "ok").await?;
    let r = http
        .get(mesh.url(&format!("/v1/runs/{run_id}/events")))
        .header("last-event-id", "garbage")
        .send()
        .await?;
    assert_eq!(problem(r).await?.0, 400);

    // Nothing half-written: only the one good run's messages exist.
    mesh.read_events(&run_id, None, None).await?;
    let (_, messages) = mesh
        .get_json(&format!("/v1/chats/{chat_id}/messages"))
        .await?;
    assert_eq!(
        messages["items"].as_array().map(Vec::len),
        Some(2),
        "{messages}"
    );
    mesh.stop().await
}

#[tokio::test]
async fn without_dev_mode_the_gateway_refuses_unauthenticated_calls() -> R {
    let mesh = Mesh::builder()
        .auth_mode(svc_gateway::AuthMode::Disabled)
        .start()
        .await?;
    let (status, body) = problem(mesh.http.get(mesh.url("/v1/chats")).send().await?).await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    // Health stays open.
    assert_eq!(
        mesh.http.get(mesh.url("/healthz")).send().await?.status(),
        200
    );
    mesh.stop().await
}

#[tokio::test]
async fn grpc_errors_carry_the_same_codes_and_forged_identities_are_refused() -> R {
    let mesh = Mesh::builder().start().await?;
    let mut runs = RunServiceClient::connect(mesh.runs_url.clone()).await?;
    let alice = Mesh::identity("dev", "alice");

    let status = runs
        .get_chat(mesh.auth.request(
            &alice,
            GetChatRequest {
                chat_id: "nope".into(),
            },
        ))
        .await
        .expect_err("unknown chat");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(
        status
            .metadata()
            .get("x-pa-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("not_found")
    );
    let typed = pa_kit::PaError::from_status(&status);
    assert_eq!(typed.code, pa_kit::ErrorCode::NotFound);

    // No credential at all.
    let status = runs
        .list_chats(ListChatsRequest::default())
        .await
        .expect_err("no identity");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // Signed by someone who does not hold the mesh's secret.
    let forger = pa_kit::InternalAuth::new("not-the-secret");
    let status = runs
        .create_chat(forger.request(
            &alice,
            CreateChatRequest {
                title: "x".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("forged");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // A genuine identity header copied onto another identity's request.
    let mut request = mesh.auth.request(&alice, ListChatsRequest::default());
    let mallory = Mesh::identity("other", "mallory");
    let forged = prost::Message::encode_to_vec(&mallory);
    request.metadata_mut().insert_bin(
        "x-pa-identity-bin",
        tonic::metadata::MetadataValue::from_bytes(&forged),
    );
    let status = runs
        .list_chats(request)
        .await
        .expect_err("swapped identity");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // gRPC reflection and health are served.
    assert!(pa_kit::grpc::is_serving(pa_kit::grpc::channel(&mesh.runs_url)?).await);
    mesh.stop().await
}
