//! Model governance and real providers, end to end: the mesh calls scripted OpenAI-compatible
//! servers (pa-testkit) over real HTTP/SSE.

use pa_testkit::{Chunk, FakeProvider, Reply};
use serde_json::{Value, json};
use tests_e2e::{Mesh, SseEvent};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn add_provider(
    mesh: &Mesh,
    id: &str,
    fake: &FakeProvider,
    tags: &[&str],
    platform_key: Option<&str>,
) -> R {
    let mut body =
        json!({ "id": id, "kind": "openai_compatible", "base_url": fake.base_url(), "tags": tags });
    if let Some(key) = platform_key {
        body["platform_api_key"] = json!(key);
    }
    let (status, saved) = mesh.post_json("/v1/admin/providers", &body).await?;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["has_platform_key"], json!(platform_key.is_some()));
    assert!(saved.get("platform_api_key").is_none());
    Ok(())
}

async fn add_model(mesh: &Mesh, label: &str, price: u64, caps: &[&str]) -> R {
    let body = json!({ "label": label, "context_window": 32000, "input_price_micros": price,
                       "output_price_micros": price, "capabilities": caps });
    let (status, saved) = mesh.post_json("/v1/admin/models", &body).await?;
    assert_eq!(status, 200, "{saved}");
    Ok(())
}

async fn patch(
    mesh: &Mesh,
    path: &str,
    body: Value,
) -> Result<(u16, Value), Box<dyn std::error::Error + Send + Sync>> {
    let r = mesh.http.patch(mesh.url(path)).json(&body).send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

async fn run_to_end(
    mesh: &Mesh,
    chat: &str,
    body: Value,
) -> Result<(Value, Vec<SseEvent>), Box<dyn std::error::Error + Send + Sync>> {
    let (status, accepted) = mesh
        .post_json(&format!("/v1/chats/{chat}/runs"), &body)
        .await?;
    assert_eq!(status, 202, "{accepted}");
    let run_id = accepted["run_id"].as_str().unwrap_or_default().to_string();
    let events = mesh.read_events(&run_id, None, None).await?;
    let (_, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
    Ok((run, events))
}

fn text_of(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.event_type() == "TEXT_MESSAGE_CONTENT")
        .map(|e| e.data["delta"].as_str().unwrap_or(""))
        .collect()
}

#[tokio::test]
async fn a_failing_provider_falls_back_before_the_first_token_but_never_after() -> R {
    let mesh = Mesh::builder().start().await?;
    let a = FakeProvider::start().await?;
    let b = FakeProvider::start().await?;
    add_provider(
        &mesh,
        "alpha",
        &a,
        &["eu-hosted", "zero-retention"],
        Some("sk-platform-alpha"),
    )
    .await?;
    add_provider(
        &mesh,
        "beta",
        &b,
        &["eu-hosted", "zero-retention"],
        Some("sk-platform-beta"),
    )
    .await?;
    add_model(&mesh, "alpha:small", 100, &[]).await?;
    add_model(&mesh, "beta:small", 200, &[]).await?;

    // alpha answers 500 (and 500 again to the one quick retry): the run completes on beta.
    a.push(Reply::error(500, "alpha is down"));
    a.push(Reply::error(500, "alpha is still down"));
    b.push(Reply::text("Hello from beta.").with_usage(11, 4, 3));
    let chat = mesh.create_chat("fallback").await?;
    let (run, events) = run_to_end(&mesh, &chat, json!({ "message": "hi" })).await?;
    assert_eq!(
        events.last().map(SseEvent::event_type),
        Some("RUN_FINISHED"),
        "{run}"
    );
    assert_eq!(text_of(&events), "Hello from beta.");
    assert_eq!(
        run["model"]["resolved"], "alpha:small",
        "auto chose the cheapest: {run}"
    );
    assert_eq!(
        run["model"]["fallbacks"],
        json!(["beta:small"]),
        "the offline stand-in is no fallback"
    );
    let attempts = run["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 2, "{run}");
    assert_eq!(
        (
            attempts[0]["label"].as_str(),
            attempts[0]["outcome"].as_str()
        ),
        (Some("alpha:small"), Some("error"))
    );
    assert_eq!(attempts[0]["error_code"], "unavailable");
    assert_eq!(
        (
            attempts[1]["label"].as_str(),
            attempts[1]["outcome"].as_str()
        ),
        (Some("beta:small"), Some("ok"))
    );
    assert_eq!(attempts[1]["key_source"], "platform");
    assert_eq!(run["usage"]["input_tokens"], 11);
    assert_eq!(run["usage"]["cached_input_tokens"], 3);
    assert_eq!(a.request_count(), 2);
    assert_eq!(b.request_count(), 1);
    assert_eq!(
        b.requests()[0].authorization.as_deref(),
        Some("Bearer sk-platform-beta")
    );
    let (_, messages) = mesh.get_json(&format!("/v1/chats/{chat}/messages")).await?;
    assert_eq!(messages["items"][1]["content"], "Hello from beta.");

    // alpha breaks off after its first tokens: RUN_ERROR, and beta is not asked.
    a.push(
        Reply::chunks(vec![
            Chunk::text("Partial "),
            Chunk::text("answer "),
            Chunk::text("lost"),
        ])
        .disconnect_after(2),
    );
    let (run, events) = run_to_end(&mesh, &chat, json!({ "message": "again" })).await?;
    let last = events.last().cloned().ok_or("no events")?;
    assert_eq!(last.event_type(), "RUN_ERROR", "{run}");
    assert!(
        text_of(&events).starts_with("Partial"),
        "the first tokens were streamed"
    );
    assert_eq!(run["status"], "failed");
    assert_eq!(run["attempts"].as_array().map(Vec::len), Some(1), "{run}");
    assert_eq!(b.request_count(), 1, "no fallback after the first token");

    // Usage was recorded per call and aggregates by day.
    let (status, usage) = mesh.get_json("/v1/me/usage").await?;
    assert_eq!(status, 200);
    let beta_row = usage["items"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["model"] == "beta:small").cloned());
    let beta_row = beta_row.ok_or_else(|| format!("no beta usage in {usage}"))?;
    assert_eq!(
        (
            beta_row["input_tokens"].as_u64(),
            beta_row["output_tokens"].as_u64()
        ),
        (Some(11), Some(4))
    );
    assert_eq!(
        beta_row["cost_micros"], 0,
        "(11 + 4) tokens at 200 micros per 1M round to 0"
    );
    let (status, _) = mesh.get_json("/v1/admin/usage").await?;
    assert_eq!(status, 200);
    mesh.stop().await
}

#[tokio::test]
async fn a_restricted_chat_with_no_compliant_model_is_refused_before_any_provider_call() -> R {
    let mesh = Mesh::builder().start().await?;
    let cloud = FakeProvider::start().await?;
    add_provider(
        &mesh,
        "cloud",
        &cloud,
        &["us-hosted", "zero-retention"],
        Some("sk-cloud"),
    )
    .await?;
    add_model(&mesh, "cloud:big", 100, &["tools"]).await?;
    // The offline model is local and so allowed everywhere; take it away.
    let (status, body) = patch(
        &mesh,
        "/v1/admin/models/offline:echo",
        json!({ "enabled": false }),
    )
    .await?;
    assert_eq!((status, &body["enabled"]), (200, &json!(false)), "{body}");

    let (status, chat) = mesh
        .post_json(
            "/v1/chats",
            &json!({ "title": "secret", "classification": "restricted" }),
        )
        .await?;
    assert_eq!(
        (status, chat["classification"].as_str()),
        (201, Some("restricted"))
    );
    let chat_id = chat["id"].as_str().unwrap_or_default();
    for model in ["auto", "cloud:big"] {
        let r = mesh
            .http
            .post(mesh.url(&format!("/v1/chats/{chat_id}/runs")))
            .json(&json!({ "message": "the launch codes", "model": model }))
            .send()
            .await?;
        assert_eq!(r.status(), 403, "{model}");
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        let problem: Value = r.json().await?;
        assert_eq!(problem["code"], "policy_denied", "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or("")
                .contains("restricted"),
            "{problem}"
        );
    }
    assert_eq!(cloud.request_count(), 0, "no provider was called");
    let (_, messages) = mesh
        .get_json(&format!("/v1/chats/{chat_id}/messages"))
        .await?;
    assert_eq!(messages["items"], json!([]), "nothing half-written");

    // An internal chat may use it.
    cloud.push(Reply::text("fine"));
    let internal = mesh.create_chat("ok").await?;
    let (run, _) = run_to_end(
        &mesh,
        &internal,
        json!({ "message": "hi", "model": "cloud:big" }),
    )
    .await?;
    assert_eq!(run["status"], "succeeded", "{run}");

    // Non-admins cannot touch the catalog.
    let r = mesh
        .http
        .post(mesh.url("/v1/admin/models"))
        .header("x-pa-dev-roles", "user")
        .json(&json!({ "label": "cloud:x", "context_window": 1 }))
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    mesh.stop().await
}

/// Collects every log line of the process (all services run in it).
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_users_own_key_reaches_the_provider_and_nowhere_else() -> R {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .try_init()
        .map_err(|e| e.to_string())?;
    let mesh = Mesh::builder().start().await?;
    let fake = FakeProvider::start().await?;
    add_provider(&mesh, "byok", &fake, &["eu-hosted"], None).await?;
    add_model(&mesh, "byok:model", 100, &[]).await?;
    let chat = mesh.create_chat("byok").await?;
    const KEY: &str = "sk-user-very-secret-1234";

    // No key yet: a clear error, not a provider call.
    let r = mesh
        .http
        .post(mesh.url(&format!("/v1/chats/{chat}/runs")))
        .json(&json!({"message": "hi", "model": "byok:model"}))
        .send()
        .await?;
    assert_eq!(r.status(), 409);
    let problem: Value = r.json().await?;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("PUT /v1/me/keys/byok"),
        "{problem}"
    );

    let r = mesh
        .http
        .put(mesh.url("/v1/me/keys/byok"))
        .json(&json!({ "api_key": KEY }))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let stored = r.text().await?;
    assert!(
        !stored.contains(KEY) && stored.contains("1234"),
        "only the last 4 come back: {stored}"
    );

    fake.push(Reply::text("hello with your key"));
    let (run, events) = run_to_end(
        &mesh,
        &chat,
        json!({ "message": "hi", "model": "byok:model" }),
    )
    .await?;
    assert_eq!(text_of(&events), "hello with your key", "{run}");
    assert_eq!(run["attempts"][0]["key_source"], "user");
    assert_eq!(
        fake.requests()[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );

    // Another user of the tenant has no key: refused.
    let r = mesh
        .http
        .post(mesh.url(&format!("/v1/chats/{chat}/runs")))
        .header("x-pa-dev-user", "bob")
        .json(&json!({"message": "hi", "model": "byok:model"}))
        .send()
        .await?;
    assert_eq!(r.status(), 404, "bob cannot even see the chat");

    let everything = [
        mesh.get_json("/v1/me/keys").await?.1.to_string(),
        run.to_string(),
        mesh.get_json(&format!("/v1/chats/{chat}/messages"))
            .await?
            .1
            .to_string(),
        events
            .iter()
            .map(|e| e.data.to_string())
            .collect::<String>(),
    ];
    for text in everything {
        assert!(!text.contains(KEY), "the key leaked into an API response");
    }
    let r = mesh
        .http
        .delete(mesh.url("/v1/me/keys/byok"))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    mesh.stop().await?;
    let logged = String::from_utf8_lossy(&logs.0.lock().map_err(|_| "poisoned")?).to_string();
    assert!(logged.len() > 1000, "the log capture works");
    assert!(!logged.contains(KEY), "the key leaked into the logs");
    Ok(())
}

#[tokio::test]
async fn auto_picks_the_cheapest_compatible_model_with_tools_when_the_chat_has_tools() -> R {
    let mesh = Mesh::builder().start().await?;
    let fake = FakeProvider::start().await?;
    add_provider(&mesh, "p", &fake, &["zero-retention"], Some("sk-p")).await?;
    add_model(&mesh, "p:cheapest-no-tools", 1, &[]).await?;
    add_model(&mesh, "p:tools-mid", 5, &["tools"]).await?;
    add_model(&mesh, "p:tools-pricey", 9, &["tools"]).await?;
    fake.set_default(Reply::text("ok"));

    let thread = format!("t-{}", uuid::Uuid::new_v4().simple());
    let run_id = format!("r-{}", uuid::Uuid::new_v4().simple());
    let input = json!({
        "threadId": thread, "runId": run_id, "state": {}, "context": [], "forwardedProps": {},
        "messages": [{ "id": "m1", "role": "user", "content": "what's the weather?" }],
        "tools": [{ "name": "get_weather", "description": "weather", "parameters": { "type": "object" } }],
    });
    let r = mesh
        .http
        .post(mesh.url("/v1/ag-ui"))
        .json(&input)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let events = tests_e2e::read_sse(r, None).await?;
    assert_eq!(
        events.last().map(SseEvent::event_type),
        Some("RUN_FINISHED")
    );
    let (_, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
    assert_eq!(run["model"]["resolved"], "p:tools-mid", "{run}");
    assert!(
        run["model"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("tools"),
        "{run}"
    );

    // Without tools the cheapest model wins.
    let chat = mesh.create_chat("plain").await?;
    let (run, _) = run_to_end(&mesh, &chat, json!({ "message": "hi" })).await?;
    assert_eq!(run["model"]["resolved"], "p:cheapest-no-tools", "{run}");
    mesh.stop().await
}

#[tokio::test]
async fn reasoning_deltas_become_ag_ui_reasoning_events() -> R {
    let mesh = Mesh::builder().start().await?;
    let fake = FakeProvider::start().await?;
    add_provider(&mesh, "think", &fake, &["zero-retention"], Some("sk-t")).await?;
    add_model(&mesh, "think:r1", 1, &["reasoning"]).await?;
    fake.push(Reply::chunks(vec![
        Chunk::reasoning("Let me think. "),
        Chunk::reasoning("Done."),
        Chunk::text("Answer."),
    ]));
    let chat = mesh.create_chat("reasoning").await?;
    let (run, events) = run_to_end(
        &mesh,
        &chat,
        json!({ "message": "why?", "model": "think:r1" }),
    )
    .await?;
    let kinds: Vec<&str> = events.iter().map(SseEvent::event_type).collect();
    let expected = [
        "RUN_STARTED",
        "REASONING_START",
        "REASONING_MESSAGE_START",
        "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_END",
        "REASONING_END",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ];
    assert_eq!(kinds, expected, "{run}");
    let (_, messages) = mesh.get_json(&format!("/v1/chats/{chat}/messages")).await?;
    assert_eq!(
        messages["items"][1]["content"], "Answer.",
        "reasoning is not part of the reply"
    );
    mesh.stop().await
}

#[tokio::test]
async fn provider_tool_calls_become_ag_ui_tool_call_events() -> R {
    let mesh = Mesh::builder().start().await?;
    let fake = FakeProvider::start().await?;
    add_provider(&mesh, "tc", &fake, &["zero-retention"], Some("sk-tc")).await?;
    add_model(&mesh, "tc:model", 1, &["tools"]).await?;
    fake.push(Reply::chunks(vec![Chunk::tool_call(
        "call_1",
        "lookup",
        r#"{"q":"weather in Oslo"}"#,
    )]));
    fake.push(Reply::text("I could not look that up."));
    let chat = mesh.create_chat("tools").await?;
    let (run, events) = run_to_end(
        &mesh,
        &chat,
        json!({ "message": "weather?", "model": "tc:model" }),
    )
    .await?;
    let kinds: Vec<&str> = events.iter().map(SseEvent::event_type).collect();
    assert!(
        kinds.starts_with(&[
            "RUN_STARTED",
            "TOOL_CALL_START",
            "TOOL_CALL_ARGS",
            "TOOL_CALL_END",
            "TOOL_CALL_RESULT"
        ]),
        "{kinds:?}"
    );
    let start = &events[1].data;
    assert_eq!(
        (start["toolCallId"].as_str(), start["toolCallName"].as_str()),
        (Some("call_1"), Some("lookup"))
    );
    assert_eq!(
        events[2].data["delta"], r#"{"q":"weather in Oslo"}"#,
        "arguments reassembled from the deltas"
    );
    // The tool is not in the run's toolset: the model is told, and answers.
    assert!(
        events[4].data["content"]
            .as_str()
            .unwrap_or("")
            .contains("not in toolset"),
        "{}",
        events[4].data
    );
    assert_eq!(kinds.last(), Some(&"RUN_FINISHED"));
    assert_eq!(run["usage"]["model_requests"], 2);
    assert_eq!(run["usage"]["tool_calls"], 1);
    // The second request carried the assistant tool call and the tool's answer, OpenAI-style.
    let second = &fake.requests()[1].body;
    let roles: Vec<&str> = second["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["role"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(roles, ["user", "assistant", "tool"], "{second}");
    assert_eq!(second["messages"][1]["tool_calls"][0]["id"], "call_1");
    assert_eq!(second["messages"][2]["tool_call_id"], "call_1");
    mesh.stop().await
}

#[tokio::test]
async fn the_declarative_catalog_file_is_applied_at_start() -> R {
    let fake = FakeProvider::start().await?;
    let dir = std::env::temp_dir().join(format!("pa-models-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("models.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[tags]]
name = "on-prem"
description = "our own racks"

[[providers]]
id = "house"
kind = "openai_compatible"
base_url = "{}"
tags = ["on-prem", "local"]
api_key_env = "PA_TEST_HOUSE_KEY_UNSET"

[[models]]
label = "house:llm"
context_window = 8192
input_price_per_million = 0.5
output_price_per_million = 1.5
capabilities = ["tools"]

[[policies]]
classification = "public"
forbidden_tags = ["on-prem"]
"#,
            fake.base_url()
        ),
    )?;
    let mesh = Mesh::builder()
        .models_config(path.to_string_lossy())
        .start()
        .await?;
    let (_, models) = mesh.get_json("/v1/admin/models").await?;
    let house = models["items"]
        .as_array()
        .and_then(|m| m.iter().find(|x| x["label"] == "house:llm").cloned())
        .ok_or("house:llm missing")?;
    assert_eq!(house["input_price_micros"], 500_000);
    assert_eq!(house["capabilities"], json!(["tools"]));
    assert_eq!(house["provider_tags"], json!(["on-prem", "local"]));
    let (_, policies) = mesh.get_json("/v1/admin/policies").await?;
    let public = policies["items"]
        .as_array()
        .and_then(|p| p.iter().find(|x| x["classification"] == "public").cloned())
        .ok_or("no public policy")?;
    assert_eq!(public["forbidden_tags"], json!(["on-prem"]));
    let (_, providers) = mesh.get_json("/v1/admin/providers").await?;
    assert!(
        providers.to_string().contains("\"has_platform_key\":false"),
        "no key env set: {providers}"
    );
    // Users see only what they can call: no key for `house` yet.
    let (_, visible) = mesh.get_json("/v1/models").await?;
    assert!(!visible.to_string().contains("house:llm"), "{visible}");
    mesh.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn embeddings_go_to_the_provider_and_offline_ones_are_deterministic() -> R {
    use pa_proto::v1::EmbedRequest;
    use pa_proto::v1::model_service_client::ModelServiceClient;
    let mesh = Mesh::builder().start().await?;
    let fake = FakeProvider::start().await?;
    add_provider(&mesh, "emb", &fake, &["zero-retention"], Some("sk-emb")).await?;
    add_model(&mesh, "emb:text-embed", 1, &[]).await?;
    let mut models = ModelServiceClient::connect(mesh.models_url.clone()).await?;
    let alice = Mesh::identity("dev", "dev-user");
    let request = EmbedRequest {
        inputs: vec!["hello".into(), "world".into()],
        label: "emb:text-embed".into(),
        ..Default::default()
    };
    let response = models
        .embed(mesh.auth.request(&alice, request))
        .await?
        .into_inner();
    assert_eq!(response.embeddings.len(), 2);
    assert_eq!(
        response.embeddings[0].values,
        pa_testkit::embedding_vector("hello", 8)
    );
    assert_eq!(fake.requests()[0].path, "/v1/embeddings");
    let offline = EmbedRequest {
        inputs: vec!["same text".into(), "same text".into()],
        label: String::new(),
        purpose: pa_proto::v1::EmbedPurpose::Query as i32,
    };
    let response = models
        .embed(mesh.auth.request(&alice, offline.clone()))
        .await?
        .into_inner();
    assert_eq!(response.served_label, "offline:echo");
    assert_eq!(response.embeddings[0].values.len(), 384);
    assert_eq!(response.embeddings[0], response.embeddings[1]);
    // Texts being stored are embedded in the background lane: the same vectors.
    let document = EmbedRequest {
        purpose: pa_proto::v1::EmbedPurpose::Document as i32,
        ..offline
    };
    let stored = models
        .embed(mesh.auth.request(&alice, document))
        .await?
        .into_inner();
    assert_eq!(stored.embeddings, response.embeddings);
    assert_eq!(stored.model_id, response.model_id);
    mesh.stop().await
}

#[tokio::test]
async fn a_rate_limited_provider_is_skipped_for_the_next_one_at_once() -> R {
    let mesh = Mesh::builder().start().await?;
    let a = FakeProvider::start().await?;
    let b = FakeProvider::start().await?;
    add_provider(&mesh, "ra", &a, &["zero-retention"], Some("sk-a")).await?;
    add_provider(&mesh, "rb", &b, &["zero-retention"], Some("sk-b")).await?;
    add_model(&mesh, "ra:m", 1, &[]).await?;
    add_model(&mesh, "rb:m", 2, &[]).await?;
    // Waiting it out would take 5 minutes: far past the bound below, however loaded the machine.
    a.push(Reply::rate_limited(300));
    b.push(Reply::text("from b"));
    let chat = mesh.create_chat("429").await?;
    let started = std::time::Instant::now();
    let (run, events) = run_to_end(&mesh, &chat, json!({ "message": "hi" })).await?;
    assert_eq!(text_of(&events), "from b", "{run}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "did not wait out Retry-After"
    );
    assert_eq!(
        a.request_count(),
        1,
        "a 429 is not retried on the same provider"
    );
    assert_eq!(run["attempts"][0]["error_code"], "too_many_requests");
    mesh.stop().await
}

#[tokio::test]
async fn a_provider_that_hangs_times_out_and_the_next_one_answers() -> R {
    let mesh = Mesh::builder()
        // Long enough that the quick provider's first byte never misses it under load.
        .provider_first_byte_timeout(std::time::Duration::from_secs(5))
        .start()
        .await?;
    let a = FakeProvider::start().await?;
    let b = FakeProvider::start().await?;
    add_provider(&mesh, "slow", &a, &["zero-retention"], Some("sk-a")).await?;
    add_provider(&mesh, "quick", &b, &["zero-retention"], Some("sk-b")).await?;
    add_model(&mesh, "slow:m", 1, &[]).await?;
    add_model(&mesh, "quick:m", 2, &[]).await?;
    a.push(Reply::hang());
    b.push(Reply::text("on time"));
    let chat = mesh.create_chat("hang").await?;
    let (run, events) = run_to_end(&mesh, &chat, json!({ "message": "hi" })).await?;
    assert_eq!(text_of(&events), "on time", "{run}");
    assert_eq!(run["attempts"][0]["error_code"], "timeout", "{run}");
    assert!(run["attempts"][0]["latency_ms"].as_u64().unwrap_or(0) >= 5000);
    mesh.stop().await
}

/// The `RAYON_NUM_THREADS` in the environment of a running process, read from
/// `/proc/<pid>/environ` (what its image was started with: after an exec, the new one's).
fn kernel_threads_of(pid: u32) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>> {
    let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
    Ok(environ
        .split(|b| *b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix("RAYON_NUM_THREADS="))
        .map(str::to_string))
}

/// svc-models as its binary starts (ADR 0226): its matrix kernels run on the thread of their
/// batch because RAYON_NUM_THREADS=1 is in its environment, added by the process itself (the
/// same pid, re-executed) when the operator gave none; an operator's own value is kept.
#[tokio::test]
async fn the_models_process_sets_its_kernel_threads_unless_its_operator_did() -> R {
    let binary = tests_e2e::chaos::service_binary()?;
    let database_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| tests_e2e::DEFAULT_DATABASE_URL.to_string());
    for (given, expected) in [(None, "1"), (Some("3"), "3")] {
        let port = tests_e2e::port_below_ephemeral_range()?;
        let mut command = std::process::Command::new(&binary);
        command
            .arg("svc-models")
            .env("DATABASE_URL", &database_url)
            .env("PA_MODELS_ADDR", format!("127.0.0.1:{port}"))
            .env("PA_AUTH_MODE", "dev")
            .env("RUST_LOG", "warn")
            .env_remove("RAYON_NUM_THREADS")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        if let Some(value) = given {
            command.env("RAYON_NUM_THREADS", value);
        }
        let mut child = command.spawn()?;
        let outcome = async {
            // Listening means main has run past the exec.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                if let Some(status) = child.try_wait()? {
                    return Err(format!("svc-models exited: {status}").into());
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err("svc-models did not listen within 60 s".into());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            // Read here, asserted once the child is stopped: a failure leaves no process behind.
            kernel_threads_of(child.id())
        }
        .await;
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            outcome?.as_deref(),
            Some(expected),
            "RAYON_NUM_THREADS given {given:?}"
        );
    }
    Ok(())
}
