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
    // A model name longer than any label is refused before anything is resolved or written.
    let (status, body) = problem(
        http.post(&runs)
            .json(&json!({"message": "hi", "model": "m".repeat(10_000)}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("model"),
        "{body}"
    );

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

/// Issue 21, item 6: hostile input is refused with a 4xx problem+json before any service is
/// called, next to the same request made well, and the services stay healthy.
#[tokio::test]
async fn hostile_input_is_refused_with_problem_json_and_nothing_breaks() -> R {
    let web = std::env::temp_dir().join(format!("pa-web-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&web)?;
    std::fs::write(web.join("index.html"), "<!doctype html><title>t</title>")?;
    let mesh = Mesh::builder().web_dir(&web).start().await?;
    let http = &mesh.http;
    let expect = |status: u16, code: &'static str| {
        move |(s, body): (u16, Value)| {
            assert_eq!((s, body["code"].as_str()), (status, Some(code)), "{body}");
        }
    };
    let post = |path: &str, body: Value| http.post(mesh.url(path)).json(&body).send();

    // NUL in any stored string → 400; the same without NUL is stored.
    let (status, chat) = mesh
        .post_json("/v1/chats", &json!({"title": "fine"}))
        .await?;
    assert_eq!(status, 201, "{chat}");
    let chat_id = chat["id"].as_str().unwrap_or_default().to_string();
    expect(400, "bad_request")(
        problem(post("/v1/chats", json!({"title": "a\u{0}b"})).await?).await?,
    );
    // Even without a JSON content type (the body of POST /v1/chats is optional).
    let raw = http
        .post(mesh.url("/v1/chats"))
        .body(r#"{"title": "nul \u0000 here"}"#)
        .send()
        .await?;
    expect(400, "bad_request")(problem(raw).await?);
    for (path, body) in [
        (
            format!("/v1/chats/{chat_id}/runs"),
            json!({"message": "hi\u{0}"}),
        ),
        ("/v1/me/memories".to_string(), json!({"text": "x\u{0}y"})),
        (
            "/v1/me/memories".to_string(),
            json!({"text": "ok", "tags": ["t\u{0}"]}),
        ),
        ("/v1/me/api-keys".to_string(), json!({"name": "k\u{0}"})),
        (
            "/v1/me/integrations".to_string(),
            json!({"kind": "web_fetch", "name": "n\u{0}"}),
        ),
        (
            "/v1/chats".to_string(),
            json!({"title": "ok", "classification\u{0}": "x"}),
        ),
    ] {
        expect(400, "bad_request")(problem(post(&path, body).await?).await?);
    }
    let r = http
        .patch(mesh.url(&format!("/v1/chats/{chat_id}")))
        .json(&json!({"title": "\u{0}"}))
        .send()
        .await?;
    expect(400, "bad_request")(problem(r).await?);

    // Path ids: overlong, NUL, control characters, bad UTF-8 → 400, never a 500.
    let long = "a".repeat(8000);
    for path in [
        format!("/v1/chats/{long}"),
        format!("/v1/runs/{long}/events"),
        format!("/v1/me/memories/{long}"),
        format!("/v1/me/api-keys/{long}"),
        "/v1/chats/a%00b".to_string(),
        "/v1/runs/x%0Ay".to_string(),
        "/v1/chats/%FF%FE/messages".to_string(),
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let r = http.request(method.clone(), mesh.url(&path)).send().await?;
            let (status, body) = problem(r).await?;
            assert!(
                status == 400 || status == 404 || status == 405,
                "{method} {}…: {status} {body}",
                &path[..path.len().min(40)]
            );
        }
    }
    expect(404, "not_found")(
        problem(http.get(mesh.url("/v1/chats/no-such-chat")).send().await?).await?,
    );

    // Query: NUL, limits outside their documented range.
    for path in [
        "/v1/chats?limit=0",
        "/v1/chats?limit=201",
        "/v1/me/memories?limit=0",
        "/v1/me/memories?limit=500",
        "/v1/admin/users?limit=0",
        "/v1/admin/users?limit=1000",
        "/v1/me/memories?q=a%00b",
    ] {
        expect(400, "bad_request")(problem(http.get(mesh.url(path)).send().await?).await?);
    }
    let chats_path = format!("/v1/chats/{chat_id}/messages?limit=999");
    expect(400, "bad_request")(problem(http.get(mesh.url(&chats_path)).send().await?).await?);
    for path in [
        "/v1/chats?limit=200",
        "/v1/chats?limit=1",
        "/v1/me/memories?limit=200",
    ] {
        assert_eq!(
            http.get(mesh.url(path)).send().await?.status(),
            200,
            "{path}"
        );
    }

    // Caps: title, tags, secrets, filename.
    let (status, _) = mesh
        .post_json("/v1/chats", &json!({"title": "t".repeat(200)}))
        .await?;
    assert_eq!(status, 201);
    expect(400, "bad_request")(
        problem(post("/v1/chats", json!({"title": "t".repeat(201)})).await?).await?,
    );
    let tags: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    expect(400, "bad_request")(
        problem(
            post(
                "/v1/me/memories",
                json!({"text": "many tags", "tags": tags}),
            )
            .await?,
        )
        .await?,
    );
    let (status, memory) = mesh
        .post_json(
            "/v1/me/memories",
            &json!({"text": "a few tags", "tags": &tags[..3]}),
        )
        .await?;
    assert_eq!(status, 201, "{memory}");
    let secrets: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("env:S{i}"), json!("v"))).collect();
    expect(400, "bad_request")(
        problem(
            post(
                "/v1/me/integrations",
                json!({"kind": "web_fetch", "name": "many", "secrets": secrets}),
            )
            .await?,
        )
        .await?,
    );
    expect(400, "bad_request")(
        problem(
            post(
                "/v1/me/integrations",
                json!({"kind": "web_fetch", "name": "tags", "provider_tags_required": tags}),
            )
            .await?,
        )
        .await?,
    );
    let upload = |filename: String, content_type: &'static str, body: Vec<u8>| {
        http.post(mesh.url(&format!("/v1/chats/{chat_id}/files")))
            .query(&[("filename", filename)])
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    expect(400, "bad_request")(
        problem(upload("n".repeat(256), "text/plain", b"hello".to_vec()).await?).await?,
    );
    expect(400, "bad_request")(
        problem(upload("a\0.txt".into(), "text/plain", b"hello".to_vec()).await?).await?,
    );
    expect(400, "bad_request")(
        problem(upload("nul.txt".into(), "text/plain", b"hel\0lo".to_vec()).await?).await?,
    );
    let r = upload("notes.txt".into(), "text/plain", b"hello, notes".to_vec()).await?;
    assert_eq!(r.status(), 201, "{}", r.text().await?);

    // 413 is problem+json too, for JSON bodies and uploads.
    let big = format!(r#"{{"title": "{}"}}"#, "x".repeat(3 * 1024 * 1024));
    let r = http
        .post(mesh.url("/v1/chats"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await?;
    expect(413, "payload_too_large")(problem(r).await?);
    let r = upload("big.txt".into(), "text/plain", vec![b'a'; 11 * 1024 * 1024]).await?;
    expect(413, "payload_too_large")(problem(r).await?);

    // Undeclared methods → 405 with Allow; JSON rejections and unknown routes → problem+json.
    let r = http.put(mesh.url("/v1/chats")).send().await?;
    let allow = r
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    expect(405, "method_not_allowed")(problem(r).await?);
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "Allow: {allow}"
    );
    let r = http.delete(mesh.url("/v1/models")).send().await?;
    assert!(r.headers().contains_key("allow"));
    expect(405, "method_not_allowed")(problem(r).await?);
    let r = http
        .post(mesh.url("/v1/me/memories"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await?;
    assert!(problem(r).await?.0 / 100 == 4);
    expect(404, "not_found")(problem(http.post(mesh.url("/v1/nowhere")).send().await?).await?);
    // A WebSocket endpoint asked without an upgrade.
    let r = http.get(mesh.url("/v1/control")).send().await?;
    assert!(problem(r).await?.0 / 100 == 4);

    // Security headers: the API's answers and the web app's strict CSP.
    let r = http.get(mesh.url("/v1")).send().await?;
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    assert_eq!(header(&r, "x-frame-options"), "DENY");
    assert_eq!(header(&r, "referrer-policy"), "no-referrer");
    assert!(header(&r, "content-security-policy").starts_with("default-src 'none'"));
    let r = http.get(mesh.url("/chats/some-spa-route")).send().await?;
    assert_eq!(r.status(), 200);
    let csp = header(&r, "content-security-policy");
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(
        !csp.contains("unsafe-eval") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let r = http.get(mesh.url("/v1/nowhere")).send().await?;
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");

    // Every service is still healthy, and the stored chat is intact.
    let (status, ready) = mesh.get_json("/readyz").await?;
    assert_eq!(status, 200, "{ready}");
    let (status, fine) = mesh.get_json(&format!("/v1/chats/{chat_id}")).await?;
    assert_eq!((status, fine["title"].as_str()), (200, Some("fine")));
    let _ = std::fs::remove_dir_all(&web);
    mesh.stop().await
}

/// The public gRPC API refuses NUL and hostile ids with InvalidArgument before forwarding.
#[tokio::test]
async fn the_public_grpc_api_refuses_nul_and_hostile_ids() -> R {
    let mesh = Mesh::builder().start().await?;
    let mut runs = RunServiceClient::connect(mesh.public_grpc_url.clone()).await?;
    let chat = runs
        .create_chat(CreateChatRequest {
            title: "fine".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(chat.title, "fine");
    let status = runs
        .create_chat(CreateChatRequest {
            title: "a\0b".into(),
            ..Default::default()
        })
        .await
        .expect_err("NUL");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    for chat_id in ["c".repeat(8000), "a\0b".to_string(), "a\nb".to_string()] {
        let status = runs
            .get_chat(GetChatRequest { chat_id })
            .await
            .expect_err("hostile id");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    let got = runs
        .get_chat(GetChatRequest {
            chat_id: chat.id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(got.id, chat.id);
    mesh.stop().await
}
