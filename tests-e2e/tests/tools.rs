//! First-party tools end to end: integrations over REST, web_fetch through a real run (scripted
//! model → svc-runs' inline driver → svc-tools.ExecuteTool → a local page), the address guard
//! (loopback, metadata, a name resolving to 10.x, a redirect to a private address), web_search
//! against local SearXNG- and Brave-style APIs, weather against a local Open-Meteo-style API,
//! and the BLOCK-mode tag gate.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pa_proto::v1::tool_service_client::ToolServiceClient;
use pa_proto::v1::{AssembleToolsetRequest, ExecuteToolRequest, ExecuteToolResponse, Toolset};
use pa_testkit::{Chunk, FakeProvider, Reply};
use serde_json::{Value, json};
use svc_tools::ToolsSettings;
use svc_tools::netguard::AllowList;
use tests_e2e::{Mesh, SseEvent};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const PAGE: &str = "<html><head><title>Test page</title><style>body{color:red}</style>\
    <script>var hidden = 'script-text-must-not-show';</script></head>\
    <body><h1>Hello from the test page</h1><p>The answer is 42.</p></body></html>";

/// A local web server speaking what the tools expect: pages, redirects, and SearXNG, Brave and
/// Open-Meteo style JSON APIs.
async fn test_server() -> BoxResult<SocketAddr> {
    async fn page() -> Response {
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
    }
    async fn redirect(State(port): State<u16>, Query(q): Query<Value>) -> Response {
        let to = match q["to"].as_str().unwrap_or("") {
            "loopback" => format!("http://127.0.0.1:{port}/page"),
            "internal" => format!("http://internal.test:{port}/page"),
            "metadata" => "http://169.254.169.254/latest/meta-data/".to_string(),
            _ => "/page".to_string(),
        };
        (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
    }
    async fn big() -> Response {
        let body = format!(
            "<html><body><p>start</p>{}</body></html>",
            "<p>filler</p>".repeat(20_000)
        );
        ([(header::CONTENT_TYPE, "text/html")], body).into_response()
    }
    async fn slow() -> Response {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        "late".into_response()
    }
    async fn looping() -> Response {
        (StatusCode::FOUND, [(header::LOCATION, "/loop")]).into_response()
    }
    async fn binary() -> Response {
        (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            vec![0u8; 16],
        )
            .into_response()
    }
    async fn searxng(Query(q): Query<Value>) -> Response {
        if q["format"] != "json" {
            return StatusCode::FORBIDDEN.into_response();
        }
        axum::Json(json!({ "query": q["q"], "results": [
            { "title": format!("SearXNG hit for {}", q["q"].as_str().unwrap_or("")),
              "url": "https://example.org/searx", "content": "a searx snippet" },
            { "title": "Second", "url": "https://example.org/2", "content": "two" }
        ]}))
        .into_response()
    }
    async fn brave(headers: HeaderMap, Query(q): Query<Value>) -> Response {
        if headers
            .get("x-subscription-token")
            .and_then(|v| v.to_str().ok())
            != Some("brave-key")
        {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        axum::Json(json!({ "web": { "results": [
            { "title": format!("Brave hit for {}", q["q"].as_str().unwrap_or("")),
              "url": "https://example.org/brave", "description": "a brave snippet" }
        ]}}))
        .into_response()
    }
    async fn tavily(headers: HeaderMap, axum::Json(body): axum::Json<Value>) -> Response {
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer tavily-key") {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        axum::Json(json!({ "query": body["query"], "results": [
            { "title": format!("Tavily hit for {}", body["query"].as_str().unwrap_or("")),
              "url": "https://example.org/tavily", "content": "a tavily snippet" }
        ]}))
        .into_response()
    }
    async fn geocode(Query(q): Query<Value>) -> Response {
        if q["name"] != "Oslo" {
            return axum::Json(json!({})).into_response();
        }
        axum::Json(json!({ "results": [
            { "name": "Oslo", "country": "Norway", "latitude": 59.91, "longitude": 10.75 }
        ]}))
        .into_response()
    }
    async fn forecast(Query(q): Query<Value>) -> Response {
        if q["latitude"] != "59.91" || q["longitude"] != "10.75" {
            return StatusCode::BAD_REQUEST.into_response();
        }
        axum::Json(json!({
            "current_units": { "temperature_2m": "°C", "relative_humidity_2m": "%", "wind_speed_10m": "km/h" },
            "current": { "temperature_2m": -3.5, "relative_humidity_2m": 80, "wind_speed_10m": 12.0, "weather_code": 71 },
            "daily_units": { "temperature_2m_max": "°C", "temperature_2m_min": "°C", "precipitation_sum": "mm" },
            "daily": { "time": ["2026-11-25", "2026-11-26", "2026-11-27"],
                       "temperature_2m_max": [-1.0, 0.5, 2.0], "temperature_2m_min": [-6.0, -4.0, -2.5],
                       "precipitation_sum": [1.2, 0.0, 3.4] }
        }))
        .into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/page", get(page))
        .route("/redirect", get(redirect))
        .route("/big", get(big))
        .route("/slow", get(slow))
        .route("/loop", get(looping))
        .route("/binary", get(binary))
        .route("/search", get(searxng).post(tavily))
        .route("/res/v1/web/search", get(brave))
        .route("/v1/search", get(geocode))
        .route("/v1/forecast", get(forecast))
        .with_state(addr.port());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// `allowed.test` is the only exception to the address guard; `internal.test` "resolves" to a
/// private address.
fn settings() -> ToolsSettings {
    ToolsSettings {
        allow: AllowList::parse("allowed.test").expect("allow-list"),
        dns_overrides: vec![
            ("allowed.test".into(), "127.0.0.1".parse().expect("ip")),
            ("internal.test".into(), "10.1.2.3".parse().expect("ip")),
        ],
        fetch_max_bytes: 64 * 1024,
        // Well below /slow's 30 s, well above what a loaded machine needs for the quick pages.
        fetch_timeout: std::time::Duration::from_secs(10),
        ..ToolsSettings::default()
    }
}

async fn add_provider(mesh: &Mesh, id: &str, fake: &FakeProvider, tags: &[&str]) -> R {
    let body = json!({ "id": id, "kind": "openai_compatible", "base_url": fake.base_url(),
                       "tags": tags, "platform_api_key": "sk-test" });
    let (status, saved) = mesh.post_json("/v1/admin/providers", &body).await?;
    assert_eq!(status, 200, "{saved}");
    let body = json!({ "label": format!("{id}:m"), "context_window": 32000,
                       "input_price_micros": 1, "output_price_micros": 1, "capabilities": ["tools"] });
    let (status, saved) = mesh.post_json("/v1/admin/models", &body).await?;
    assert_eq!(status, 200, "{saved}");
    Ok(())
}

async fn create_integration(mesh: &Mesh, body: Value) -> BoxResult<Value> {
    let (status, created) = mesh.post_json("/v1/me/integrations", &body).await?;
    assert_eq!(status, 201, "{created}");
    Ok(created)
}

async fn run_to_end(mesh: &Mesh, chat: &str, body: Value) -> BoxResult<(Value, Vec<SseEvent>)> {
    let (status, accepted) = mesh
        .post_json(&format!("/v1/chats/{chat}/runs"), &body)
        .await?;
    assert_eq!(status, 202, "{accepted}");
    let run_id = accepted["run_id"].as_str().unwrap_or_default().to_string();
    let events = mesh.read_events(&run_id, None, None).await?;
    let (_, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
    Ok((run, events))
}

fn tool_result(events: &[SseEvent]) -> String {
    events
        .iter()
        .find(|e| e.event_type() == "TOOL_CALL_RESULT")
        .and_then(|e| e.data["content"].as_str())
        .unwrap_or("")
        .to_string()
}

/// The scripted model's call of web_fetch for the test site's page.
fn fetch_call(port: u16) -> Reply {
    Reply::chunks(vec![Chunk::tool_call(
        "call_1",
        "web_fetch",
        json!({ "url": format!("http://allowed.test:{port}/page") }).to_string(),
    )])
}

/// Direct gRPC to svc-tools as the dev user (what svc-runs does).
struct Tools {
    client: ToolServiceClient<tonic::transport::Channel>,
    mesh_auth: pa_kit::InternalAuth,
}

impl Tools {
    async fn connect(mesh: &Mesh) -> BoxResult<Self> {
        Ok(Self {
            client: ToolServiceClient::connect(mesh.tools_url.clone()).await?,
            mesh_auth: mesh.auth.clone(),
        })
    }

    async fn assemble(&self, run_id: &str, provider_tags: &[&str]) -> BoxResult<Toolset> {
        let request = AssembleToolsetRequest {
            run_id: run_id.into(),
            provider_tags: provider_tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        let mut toolset = self
            .client
            .clone()
            .assemble_toolset(
                self.mesh_auth
                    .request(&Mesh::identity("dev", "dev-user"), request),
            )
            .await?
            .into_inner();
        // The memory and sub-agent tools are in every toolset (tests/memory_tools.rs,
        // tests/subagents.rs); these tests are about
        // the others.
        toolset
            .tools
            .retain(|t| t.source != "first_party" && t.source != pa_proto::subagents::SOURCE);
        Ok(toolset)
    }

    async fn execute(
        &self,
        snapshot: &str,
        name: &str,
        args: Value,
    ) -> BoxResult<ExecuteToolResponse> {
        let request = ExecuteToolRequest {
            run_id: "direct".into(),
            snapshot_id: snapshot.into(),
            tool_call_id: "c1".into(),
            name: name.into(),
            arguments_json: args.to_string(),
            ..Default::default()
        };
        Ok(self
            .client
            .clone()
            .execute_tool(
                self.mesh_auth
                    .request(&Mesh::identity("dev", "dev-user"), request),
            )
            .await?
            .into_inner())
    }
}

#[tokio::test]
async fn a_scripted_model_fetches_a_local_page_and_private_addresses_are_refused() -> R {
    let site = test_server().await?;
    let port = site.port();
    let mesh = Mesh::builder().tools_settings(settings()).start().await?;
    let fake = FakeProvider::start().await?;
    add_provider(&mesh, "fp", &fake, &[]).await?;
    create_integration(&mesh, json!({ "kind": "web_fetch", "name": "Web" })).await?;

    let url = format!("http://allowed.test:{port}/page");
    fake.push(Reply::chunks(vec![Chunk::tool_call(
        "call_1",
        "web_fetch",
        json!({ "url": url }).to_string(),
    )]));
    fake.push(Reply::text("The page says 42."));
    let chat = mesh.create_chat("fetch").await?;
    let (run, events) = run_to_end(
        &mesh,
        &chat,
        json!({ "message": "read it", "model": "fp:m" }),
    )
    .await?;
    let kinds: Vec<&str> = events.iter().map(SseEvent::event_type).collect();
    assert_eq!(kinds.last(), Some(&"RUN_FINISHED"), "{kinds:?} {run}");
    let result = tool_result(&events);
    assert!(result.contains("Hello from the test page"), "{result}");
    assert!(result.contains("The answer is 42."), "{result}");
    assert!(!result.contains("script-text-must-not-show"), "{result}");
    assert!(!result.contains("<p>"), "HTML became text: {result}");
    // The model's second turn carried the page text as the tool's answer.
    let second = &fake.requests()[1].body;
    assert_eq!(second["messages"][2]["role"], "tool", "{second}");
    assert!(
        second["messages"][2]["content"]
            .as_str()
            .unwrap_or("")
            .contains("The answer is 42."),
        "{second}"
    );

    // The same snapshot, called directly: every private target is refused before any byte
    // reaches it, and a refusal is an error result (not a failed call).
    let tools = Tools::connect(&mesh).await?;
    let snapshot = format!("ts-{}", run["id"].as_str().unwrap_or_default());
    let ok = tools
        .execute(
            &snapshot,
            "web_fetch",
            json!({ "url": format!("http://allowed.test:{port}/redirect?to=same") }),
        )
        .await?;
    assert!(!ok.is_error, "{}", ok.content);
    assert!(ok.untrusted_content, "fetched pages are untrusted content");
    assert!(ok.content.contains("The answer is 42."));
    assert_eq!(
        ok.tool.as_ref().map(|t| t.privilege_class.as_str()),
        Some("network")
    );
    for (target, expect) in [
        (format!("http://127.0.0.1:{port}/page"), "loopback"),
        (format!("http://[::1]:{port}/page"), "loopback"),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "metadata",
        ),
        ("http://[fd00:ec2::254]/latest/".to_string(), "metadata"),
        (format!("http://internal.test:{port}/page"), "private"),
        (
            format!("http://allowed.test:{port}/redirect?to=loopback"),
            "loopback",
        ),
        (
            format!("http://allowed.test:{port}/redirect?to=internal"),
            "private",
        ),
        (
            format!("http://allowed.test:{port}/redirect?to=metadata"),
            "metadata",
        ),
        ("file:///etc/passwd".to_string(), "only http and https"),
    ] {
        let refused = tools
            .execute(&snapshot, "web_fetch", json!({ "url": target }))
            .await?;
        assert!(
            refused.is_error,
            "{target} was fetched: {}",
            refused.content
        );
        assert!(
            refused.content.contains("refused"),
            "{target}: {}",
            refused.content
        );
        assert!(
            refused.content.contains(expect),
            "{target}: {}",
            refused.content
        );
        assert!(!refused.content.contains("The answer is 42."));
        assert!(!refused.untrusted_content);
    }
    // Size, time and redirect caps; only text is read.
    let fetch = |path: &str| {
        let url = format!("http://allowed.test:{port}{path}");
        let tools = &tools;
        let snapshot = &snapshot;
        async move {
            tools
                .execute(snapshot, "web_fetch", json!({ "url": url }))
                .await
        }
    };
    let big = fetch("/big").await?;
    assert!(
        !big.is_error && big.content.ends_with("[truncated]"),
        "{}",
        &big.content[..200]
    );
    assert!(big.content.len() < 64 * 1024, "{}", big.content.len());
    let slow = fetch("/slow").await?;
    assert!(
        slow.is_error && slow.content.contains("timed out"),
        "{}",
        slow.content
    );
    let looping = fetch("/loop").await?;
    assert!(
        looping.is_error && looping.content.contains("too many redirects"),
        "{}",
        looping.content
    );
    let binary = fetch("/binary").await?;
    assert!(
        binary.is_error && binary.content.contains("application/octet-stream"),
        "{}",
        binary.content
    );

    // The run's snapshot is stored under its id (what a durable replay reads back).
    let stored = tools
        .client
        .clone()
        .get_toolset(tools.mesh_auth.request(
            &Mesh::identity("dev", "dev-user"),
            pa_proto::v1::GetToolsetRequest {
                snapshot_id: snapshot.clone(),
            },
        ))
        .await?
        .into_inner();
    let names: Vec<&str> = stored.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "web_fetch",
            "remember",
            "recall",
            "forget",
            "explore",
            "delegate",
            "run_agents_script"
        ]
    );
    assert!(stored.tools[0].untrusted_output && !stored.tools[0].high_privilege);
    // A tool outside the snapshot is not the caller's to run.
    let err = tools
        .execute(&snapshot, "weather", json!({ "location": "Oslo" }))
        .await
        .expect_err("weather is not in this snapshot");
    assert!(err.to_string().contains("not in toolset"), "{err}");
    mesh.stop().await
}

#[tokio::test]
async fn web_search_and_weather_speak_searxng_brave_and_open_meteo() -> R {
    let site = test_server().await?;
    let base = format!("http://allowed.test:{}", site.port());
    let mesh = Mesh::builder().tools_settings(settings()).start().await?;
    let tools = Tools::connect(&mesh).await?;

    let searx = create_integration(
        &mesh,
        json!({ "kind": "searxng", "name": "a-searx", "config": { "base_url": base } }),
    )
    .await?;
    create_integration(
        &mesh,
        json!({ "kind": "open_meteo", "name": "weather",
                "config": { "forecast_url": base, "geocoding_url": base } }),
    )
    .await?;
    let toolset = tools.assemble("run-search-1", &[]).await?;
    let names: Vec<&str> = toolset.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["web_search", "weather"],
        "no web_fetch integration: {names:?}"
    );
    let found = tools
        .execute(
            &toolset.snapshot_id,
            "web_search",
            json!({ "query": "rust mcp" }),
        )
        .await?;
    assert!(!found.is_error, "{}", found.content);
    assert!(found.untrusted_content);
    assert!(
        found.content.contains("1. SearXNG hit for rust mcp"),
        "{}",
        found.content
    );
    assert!(
        found.content.contains("https://example.org/2"),
        "{}",
        found.content
    );
    let weather = tools
        .execute(
            &toolset.snapshot_id,
            "weather",
            json!({ "location": "Oslo" }),
        )
        .await?;
    assert!(!weather.is_error, "{}", weather.content);
    assert!(
        weather.content.contains("Oslo, Norway"),
        "{}",
        weather.content
    );
    assert!(weather.content.contains("-3.5°C"), "{}", weather.content);
    assert!(
        weather
            .content
            .contains("2026-11-27: min -2.5°C, max 2.0°C"),
        "{}",
        weather.content
    );
    let nowhere = tools
        .execute(
            &toolset.snapshot_id,
            "weather",
            json!({ "location": "Atlantis" }),
        )
        .await?;
    assert!(
        nowhere.is_error && nowhere.content.contains("no place"),
        "{}",
        nowhere.content
    );

    // Brave-style: the key is sealed at rest and sent as X-Subscription-Token.
    let brave = create_integration(
        &mesh,
        json!({ "kind": "brave", "name": "b-brave", "config": { "base_url": base },
                "secrets": { "api_key": "brave-key" } }),
    )
    .await?;
    assert_eq!(brave["secret_names"], json!(["api_key"]));
    assert!(!brave.to_string().contains("brave-key"), "{brave}");
    let searx_id = searx["id"].as_str().unwrap_or_default();
    let r = mesh
        .http
        .patch(mesh.url(&format!("/v1/me/integrations/{searx_id}")))
        .json(&json!({ "enabled": false }))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let toolset = tools.assemble("run-search-2", &[]).await?;
    let found = tools
        .execute(
            &toolset.snapshot_id,
            "web_search",
            json!({ "query": "tokio" }),
        )
        .await?;
    assert!(
        found.content.contains("1. Brave hit for tokio"),
        "{}",
        found.content
    );
    // The old snapshot still names the (now disabled) SearXNG integration: refused.
    let stale = tools
        .execute("ts-run-search-1", "web_search", json!({ "query": "x" }))
        .await?;
    assert!(
        stale.is_error && stale.content.contains("disabled"),
        "{}",
        stale.content
    );

    // A wrong key is the API's error, reported to the model.
    let brave_id = brave["id"].as_str().unwrap_or_default();
    let r = mesh
        .http
        .patch(mesh.url(&format!("/v1/me/integrations/{brave_id}")))
        .json(&json!({ "secrets": { "api_key": "wrong" } }))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let denied = tools
        .execute(
            &toolset.snapshot_id,
            "web_search",
            json!({ "query": "tokio" }),
        )
        .await?;
    assert!(
        denied.is_error && denied.content.contains("401"),
        "{}",
        denied.content
    );

    // No secret in the database in plaintext.
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&mesh.database_url).await?;
    let rows: Vec<String> = sqlx::query_scalar("SELECT t::text FROM tools.integrations t")
        .fetch_all(&mut db)
        .await?;
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| !r.contains("brave-key") && !r.contains("wrong")),
        "{rows:?}"
    );
    mesh.stop().await
}

#[tokio::test]
async fn the_tag_gate_removes_a_tool_for_one_model_and_keeps_it_for_another() -> R {
    let site = test_server().await?;
    let port = site.port();
    let mesh = Mesh::builder().tools_settings(settings()).start().await?;
    let strict = FakeProvider::start().await?;
    let loose = FakeProvider::start().await?;
    add_provider(&mesh, "strict", &strict, &["zero-retention", "eu-hosted"]).await?;
    add_provider(&mesh, "loose", &loose, &["us-hosted"]).await?;
    // The fetched pages may only go to zero-retention providers.
    create_integration(
        &mesh,
        json!({ "kind": "web_fetch", "name": "Web", "provider_tags_required": ["zero-retention"] }),
    )
    .await?;

    let tools = Tools::connect(&mesh).await?;
    let removed = tools.assemble("gate-1", &["us-hosted"]).await?;
    assert!(removed.tools.is_empty(), "{:?}", removed.tools);
    assert_eq!(removed.blocked.len(), 1);
    assert_eq!(removed.blocked[0].name, "web_fetch");
    assert_eq!(removed.blocked[0].gate, "tag_gate");
    assert!(
        removed.blocked[0].reason.contains("zero-retention"),
        "{}",
        removed.blocked[0].reason
    );
    let kept = tools
        .assemble("gate-2", &["zero-retention", "eu-hosted"])
        .await?;
    assert_eq!(kept.tools.len(), 1);
    assert!(kept.blocked.is_empty());

    // Through real runs: the same scripted call works for one model and not the other.
    let call = || fetch_call(port);
    let chat = mesh.create_chat("gate").await?;
    loose.push(call());
    loose.push(Reply::text("I cannot fetch."));
    let (_, events) = run_to_end(
        &mesh,
        &chat,
        json!({ "message": "fetch", "model": "loose:m" }),
    )
    .await?;
    let result = tool_result(&events);
    assert!(result.contains("not in toolset"), "{result}");
    strict.push(call());
    strict.push(Reply::text("Fetched."));
    let (_, events) = run_to_end(
        &mesh,
        &chat,
        json!({ "message": "fetch", "model": "strict:m" }),
    )
    .await?;
    let result = tool_result(&events);
    assert!(result.contains("The answer is 42."), "{result}");

    // A blocked tag works the other way round: this tool may not see a us-hosted model's data.
    let r = mesh
        .http
        .get(mesh.url("/v1/me/integrations"))
        .send()
        .await?;
    let list: Value = r.json().await?;
    let id = list["items"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = mesh
        .http
        .patch(mesh.url(&format!("/v1/me/integrations/{id}")))
        .json(&json!({ "provider_tags_required": [], "provider_tags_blocked": ["us-hosted"] }))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let removed = tools.assemble("gate-3", &["us-hosted"]).await?;
    assert!(removed.tools.is_empty());
    assert!(removed.blocked[0].reason.contains("us-hosted"));
    assert_eq!(
        tools.assemble("gate-4", &["eu-hosted"]).await?.tools.len(),
        1
    );
    mesh.stop().await
}

/// svc-runs assembles a run's toolset with the provider tags the same request last resolved to,
/// while it resolves the model (ADR 0229). When the resolution gives other tags (here the
/// admin re-tags the provider between two runs), the toolset ahead must not be used: a tool
/// the new tags gate away stays away, in that run and after.
#[tokio::test]
async fn a_toolset_assembled_ahead_is_used_only_for_the_tags_the_model_resolves_to() -> R {
    use sqlx::Connection;
    let site = test_server().await?;
    let port = site.port();
    let mesh = Mesh::builder().tools_settings(settings()).start().await?;
    let fake = FakeProvider::start().await?;
    add_provider(&mesh, "strict", &fake, &["zero-retention"]).await?;
    create_integration(
        &mesh,
        json!({ "kind": "web_fetch", "name": "Web", "provider_tags_required": ["zero-retention"] }),
    )
    .await?;
    let call = || fetch_call(port);
    let chat = mesh.create_chat("ahead").await?;
    let run = json!({ "message": "fetch", "model": "strict:m" });
    let mut runs = Vec::new();
    for _ in 0..2 {
        fake.push(call());
        fake.push(Reply::text("Fetched."));
        let (done, events) = run_to_end(&mesh, &chat, run.clone()).await?;
        let result = tool_result(&events);
        assert!(result.contains("The answer is 42."), "{result}");
        runs.push(done["id"].as_str().unwrap_or_default().to_string());
    }
    // The provider loses the tag the fetched pages need.
    let body = json!({ "id": "strict", "kind": "openai_compatible", "base_url": fake.base_url(),
                       "tags": ["us-hosted"], "platform_api_key": "sk-test" });
    let (status, saved) = mesh.post_json("/v1/admin/providers", &body).await?;
    assert_eq!(status, 200, "{saved}");
    for _ in 0..2 {
        fake.push(call());
        fake.push(Reply::text("I cannot fetch."));
        let (done, events) = run_to_end(&mesh, &chat, run.clone()).await?;
        let result = tool_result(&events);
        assert!(result.contains("not in toolset"), "{result}");
        runs.push(done["id"].as_str().unwrap_or_default().to_string());
    }
    // Nor was it offered to the model.
    let offered: Vec<String> = fake
        .requests()
        .last()
        .and_then(|r| r.body["tools"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t["function"]["name"].as_str().map(String::from))
        .collect();
    assert!(!offered.is_empty(), "the model was offered no tool at all");
    assert!(!offered.iter().any(|n| n == "web_fetch"), "{offered:?}");
    // The snapshots each run's start wrote (the mesh's database, as its owner): the first run
    // had nothing to guess from and had its toolset assembled; the second used it again, since
    // nothing it is made of changed (ADR 0251); the third was given it ahead, resolved to other
    // tags and had one assembled apart; the fourth used that one again.
    let mut db = sqlx::PgConnection::connect(&mesh.database_url).await?;
    let mut written = Vec::new();
    for run_id in &runs {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tools.toolset_snapshots WHERE run_id = $1 ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&mut db)
        .await?;
        written.push(ids);
    }
    let expected: Vec<Vec<String>> = vec![
        vec![format!("ts-{}", runs[0])],
        vec![],
        vec![format!("ts-{}.2", runs[2])],
        vec![],
    ];
    assert_eq!(written, expected);
    let mut recorded = Vec::new();
    for run_id in &runs {
        recorded.push(tests_e2e::recorded_snapshot(&mut db, run_id).await?);
    }
    assert_eq!(
        recorded,
        [
            format!("ts-{}", runs[0]),
            format!("ts-{}", runs[0]),
            format!("ts-{}.2", runs[2]),
            format!("ts-{}.2", runs[2]),
        ]
    );
    mesh.stop().await
}

/// A chat's next run uses its last toolset again, without asking svc-tools, while nothing the
/// toolset is made of changed (ADR 0251). Every change (a tag gate tightened, the chat's
/// selection, a device enrolled, the generation lost with Redis) has the next run's toolset
/// assembled anew, and a tool the change gates away is neither offered nor run.
#[tokio::test]
async fn a_chats_toolset_is_used_again_until_what_it_is_made_of_changes() -> R {
    use sqlx::Connection;
    let site = test_server().await?;
    let port = site.port();
    let mesh = Mesh::builder().tools_settings(settings()).start().await?;
    let fake = FakeProvider::start().await?;
    add_provider(&mesh, "p", &fake, &["zero-retention"]).await?;
    let web = create_integration(
        &mesh,
        json!({ "kind": "web_fetch", "name": "Web", "provider_tags_required": ["zero-retention"] }),
    )
    .await?;
    let web_id = web["id"].as_str().unwrap_or_default().to_string();
    let chat = mesh.create_chat("reuse").await?;
    let mut db = sqlx::PgConnection::connect(&mesh.database_url).await?;
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&mut db)
        .await?;
    // One run that calls web_fetch: its id, the tool's result, the snapshot it records and the
    // snapshots its start wrote.
    let mut fetch_run = async || -> BoxResult<(String, String, String, Vec<String>)> {
        fake.push(fetch_call(port));
        fake.push(Reply::text("Done."));
        let (done, events) =
            run_to_end(&mesh, &chat, json!({ "message": "fetch", "model": "p:m" })).await?;
        let run_id = done["id"].as_str().unwrap_or_default().to_string();
        let recorded = tests_e2e::recorded_snapshot(&mut db, &run_id).await?;
        let written: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM tools.toolset_snapshots WHERE run_id = $1 ORDER BY id",
        )
        .bind(&run_id)
        .fetch_all(&mut db)
        .await?;
        Ok((run_id, tool_result(&events), recorded, written))
    };
    let fetched = |result: &str| result.contains("The answer is 42.");

    // The first run's toolset is assembled; the second run uses it, and its tool runs.
    let (first, result, recorded, written) = fetch_run().await?;
    assert!(fetched(&result), "{result}");
    assert_eq!(
        (recorded.as_str(), written.len()),
        (format!("ts-{first}").as_str(), 1)
    );
    let (_, result, recorded, written) = fetch_run().await?;
    assert!(fetched(&result), "a reused snapshot's tool runs: {result}");
    assert_eq!(recorded, format!("ts-{first}"));
    assert!(written.is_empty(), "{written:?}");

    // The user tightens the integration's tag gate: the next run's toolset is assembled anew,
    // without the tool, and the scripted call of it is refused.
    let r = mesh
        .http
        .patch(mesh.url(&format!("/v1/me/integrations/{web_id}")))
        .json(&json!({ "provider_tags_required": ["eu-only"] }))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let (gated, result, recorded, _) = fetch_run().await?;
    assert!(result.contains("not in toolset"), "{result}");
    assert_eq!(recorded, format!("ts-{gated}"));
    let offered = fake
        .requests()
        .last()
        .and_then(|r| r.body["tools"].as_array().cloned())
        .unwrap_or_default();
    assert!(
        !offered.iter().any(|t| t["function"]["name"] == "web_fetch"),
        "{offered:?}"
    );
    // Used again, still without it.
    let (_, result, recorded, _) = fetch_run().await?;
    assert!(result.contains("not in toolset"), "{result}");
    assert_eq!(recorded, format!("ts-{gated}"));

    // The chat's selection changes: assembled anew.
    let r = mesh
        .http
        .put(mesh.url(&format!("/v1/chats/{chat}/tools")))
        .json(&json!({ "integration_ids": [] }))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let (selected, _, recorded, _) = fetch_run().await?;
    assert_eq!(recorded, format!("ts-{selected}"));

    // Redis loses the generation: nothing is reused on a doubt.
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| tests_e2e::DEFAULT_REDIS_URL.into());
    let redis = redis::Client::open(redis_url.as_str())?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let key = pa_bus::keys::toolset_generation(&database, "dev", "dev-user");
    let removed: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await?;
    assert_eq!(removed, 1, "the generation was kept under {key}");
    let (lost, _, recorded, _) = fetch_run().await?;
    assert_eq!(recorded, format!("ts-{lost}"));

    // A user with a device gets a toolset assembled for every run (a device's presence changes
    // with no new generation).
    mesh.enroll_device("box").await?;
    for _ in 0..2 {
        let (run, _, recorded, _) = fetch_run().await?;
        assert_eq!(recorded, format!("ts-{run}"));
    }
    // Operators see it: of the eight runs, two were launched with a reused toolset.
    let metrics = tests_e2e::scrape_metrics(&mesh.http, &mesh.runs_url).await?;
    let count = |source: &str| {
        tests_e2e::metric_sample(&metrics, "pa_run_toolsets_total", &[("source", source)])
    };
    assert_eq!(
        (count("reused"), count("assembled")),
        (Some(2.0), Some(6.0))
    );
    mesh.stop().await
}

/// Hostile: two tenants whose users share a user id run in chats of the same client-chosen id
/// (AG-UI threadId) and resolve the same model. The second tenant's run must never be handed
/// the first's reused toolset (ADR 0251): it gets a snapshot of its own, of its own tenant.
#[tokio::test]
async fn a_reused_toolset_never_crosses_to_another_tenant_with_the_same_user_and_chat_ids() -> R {
    use sqlx::Connection;
    let mesh = Mesh::builder().tools_settings(settings()).start().await?;
    create_integration(&mesh, json!({ "kind": "web_fetch", "name": "Web" })).await?;
    let thread = format!("t-{}", uuid::Uuid::new_v4().simple());
    let other_tenant = format!("tenant-{}", uuid::Uuid::new_v4().simple());
    let run_in = async |tenant: Option<&str>| -> BoxResult<String> {
        let run_id = format!("r-{}", uuid::Uuid::new_v4().simple());
        let input = json!({
            "threadId": thread, "runId": run_id, "state": {}, "context": [], "forwardedProps": {},
            "messages": [{ "id": format!("m-{run_id}"), "role": "user", "content": "hello" }],
        });
        let mut request = mesh.http.post(mesh.url("/v1/ag-ui")).json(&input);
        if let Some(tenant) = tenant {
            request = request
                .header("x-pa-dev-tenant", tenant)
                .header("x-pa-dev-user", "dev-user");
        }
        let r = request.send().await?;
        assert_eq!(r.status(), 200);
        let events = tests_e2e::read_sse(r, None).await?;
        assert_eq!(
            events.last().map(SseEvent::event_type),
            Some("RUN_FINISHED")
        );
        Ok(run_id)
    };
    let mut db = sqlx::PgConnection::connect(&mesh.database_url).await?;
    let mut recorded = async |run_id: &str| -> BoxResult<(String, String)> {
        let snapshot = tests_e2e::recorded_snapshot(&mut db, run_id).await?;
        let tenant: String =
            sqlx::query_scalar("SELECT tenant_id FROM tools.toolset_snapshots WHERE id = $1")
                .bind(&snapshot)
                .fetch_one(&mut db)
                .await?;
        Ok((snapshot, tenant))
    };
    let first = run_in(None).await?;
    let second = run_in(None).await?;
    let (snapshot, tenant) = recorded(&second).await?;
    assert_eq!(
        (snapshot, tenant.as_str()),
        (format!("ts-{first}"), "dev"),
        "the first tenant's second run uses its first run's toolset"
    );
    let theirs = run_in(Some(&other_tenant)).await?;
    let (snapshot, tenant) = recorded(&theirs).await?;
    assert_eq!(
        (snapshot, tenant.as_str()),
        (format!("ts-{theirs}"), other_tenant.as_str())
    );
    // Each tenant's next run uses its own tenant's toolset, whichever ran last.
    let theirs_again = run_in(Some(&other_tenant)).await?;
    assert_eq!(
        recorded(&theirs_again).await?,
        (format!("ts-{theirs}"), other_tenant.clone())
    );
    let ours_again = run_in(None).await?;
    assert_eq!(
        recorded(&ours_again).await?,
        (format!("ts-{first}"), "dev".to_string())
    );
    mesh.stop().await
}

#[tokio::test]
async fn integrations_rest_validates_isolates_and_selects_per_chat() -> R {
    let mesh = Mesh::builder().tools_settings(settings()).start().await?;
    for (body, expect) in [
        (
            json!({ "kind": "ftp", "name": "x" }),
            "unknown integration kind",
        ),
        (json!({ "kind": "searxng", "name": "x" }), "base_url"),
        (
            json!({ "kind": "searxng", "name": "x", "config": { "base_url": "file:///x" } }),
            "base_url",
        ),
        (json!({ "kind": "brave", "name": "x" }), "api_key"),
        (json!({ "kind": "web_fetch", "name": "" }), "name"),
        (
            json!({ "kind": "web_fetch", "name": "x", "secrets": { "api_key": "k" } }),
            "no secret",
        ),
        (
            json!({ "kind": "web_fetch", "name": "x", "provider_tags_required": ["bad tag"] }),
            "provider tag",
        ),
        (
            json!({ "kind": "mcp_stdio", "name": "x", "config": { "command": "/bin/sh" } }),
            "not one the operator allows",
        ),
        (
            json!({ "kind": "mcp_http", "name": "x", "config": { "url": "nope" } }),
            "url",
        ),
        (
            json!({ "kind": "web_fetch", "name": "x", "config": [] }),
            "config",
        ),
    ] {
        let (status, problem) = mesh.post_json("/v1/me/integrations", &body).await?;
        assert_eq!(status, 400, "{body} → {problem}");
        assert!(
            problem["detail"].to_string().contains(expect),
            "{body} → {problem}"
        );
    }
    let mcp = create_integration(
        &mesh,
        json!({ "kind": "mcp_http", "name": "remote", "config": { "url": "https://mcp.example.com/mcp",
                "headers": { "x-team": "a" } },
                "secrets": { "bearer_token": "tok-secret", "header:x-api-key": "k2" } }),
    )
    .await?;
    let id = mcp["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        mcp["secret_names"],
        json!(["bearer_token", "header:x-api-key"])
    );
    assert_eq!(mcp["config"]["headers"]["x-team"], "a");
    let (status, got) = mesh.get_json(&format!("/v1/me/integrations/{id}")).await?;
    assert_eq!(status, 200);
    assert!(!got.to_string().contains("tok-secret"), "{got}");

    // Another user sees nothing of it, and cannot select it.
    let other = |r: reqwest::RequestBuilder| r.header("x-pa-dev-user", "someone-else");
    let r = other(
        mesh.http
            .get(mesh.url(&format!("/v1/me/integrations/{id}"))),
    )
    .send()
    .await?;
    assert_eq!(r.status(), 404);
    let r = other(mesh.http.get(mesh.url("/v1/me/integrations")))
        .send()
        .await?;
    assert_eq!(r.json::<Value>().await?["items"], json!([]));

    let chat = mesh.create_chat("selection").await?;
    let put = |chat: &str, ids: Value| {
        mesh.http
            .put(mesh.url(&format!("/v1/chats/{chat}/tools")))
            .json(&json!({ "integration_ids": ids }))
    };
    let r = put(&chat, json!([id, id])).send().await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await?["integration_ids"], json!([id]));
    let (_, selection) = mesh.get_json(&format!("/v1/chats/{chat}/tools")).await?;
    assert_eq!(selection["integration_ids"], json!([id]));
    let r = put(&chat, json!(["no-such-integration"])).send().await?;
    assert_eq!(r.status(), 404);
    let r = other(put(&chat, json!([]))).send().await?;
    assert_eq!(r.status(), 404, "not their chat");
    let r = put("no-such-chat", json!([])).send().await?;
    assert_eq!(r.status(), 404);

    // Deleting it removes it from the chat's selection too.
    let r = mesh
        .http
        .delete(mesh.url(&format!("/v1/me/integrations/{id}")))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    let r = mesh
        .http
        .delete(mesh.url(&format!("/v1/me/integrations/{id}")))
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    let (_, selection) = mesh.get_json(&format!("/v1/chats/{chat}/tools")).await?;
    assert_eq!(selection["integration_ids"], json!([]));
    mesh.stop().await
}

/// A retried AssembleToolset (same snapshot id) returns the snapshot made the first time, even
/// when the user's tools changed in between; a snapshot id another user took is not theirs.
#[tokio::test]
async fn a_retried_assembly_returns_the_first_snapshot_and_a_taken_id_is_refused() -> R {
    let mesh = Mesh::builder().start().await?;
    let tools = Tools::connect(&mesh).await?;
    let assemble = |tags: Vec<String>, user: &'static str| {
        let mut client = tools.client.clone();
        let auth = tools.mesh_auth.clone();
        async move {
            let request = AssembleToolsetRequest {
                run_id: "retried-run".into(),
                snapshot_id: "ts-retried-run".into(),
                provider_tags: tags,
                ..Default::default()
            };
            client
                .assemble_toolset(auth.request(&Mesh::identity("dev", user), request))
                .await
        }
    };
    let first = assemble(vec![], "dev-user").await?.into_inner();
    let (status, body) = mesh
        .post_json(
            "/v1/me/integrations",
            &json!({ "kind": "web_fetch", "name": "added later" }),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let again = assemble(vec!["zero-retention".into()], "dev-user")
        .await?
        .into_inner();
    assert_eq!(again.snapshot_id, first.snapshot_id);
    let names = |t: &Toolset| t.tools.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&again),
        names(&first),
        "the retry saw the later integration"
    );
    assert!(!names(&first).iter().any(|n| n == "web_fetch"));
    // Another user naming the same snapshot id gets no toolset of the first user's.
    let status = assemble(vec![], "mallory")
        .await
        .err()
        .ok_or("another user's snapshot id was accepted")?;
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    mesh.stop().await
}

/// A toolset is stored once per distinct toolset of a user (ADR 0217): runs of a chat whose
/// tools did not change share one content row; another user's identical toolset is a row of
/// their own; a snapshot written before contents existed (JSON columns) still reads; and a
/// snapshot whose content is gone is an error, never an empty toolset.
#[tokio::test]
async fn toolsets_are_stored_once_per_user_and_old_snapshots_still_read() -> R {
    use sqlx::Connection;
    let mesh = Mesh::builder().start().await?;
    let tools = Tools::connect(&mesh).await?;
    let assemble = |run: &'static str, user: &'static str| {
        let mut client = tools.client.clone();
        let auth = tools.mesh_auth.clone();
        async move {
            let request = AssembleToolsetRequest {
                run_id: run.into(),
                ..Default::default()
            };
            client
                .assemble_toolset(auth.request(&Mesh::identity("dev", user), request))
                .await
                .map(|r| r.into_inner())
        }
    };
    // The mesh's own database, as its owner (row-level security does not apply).
    let mut db = sqlx::PgConnection::connect(&mesh.database_url).await?;
    let count = |table: &'static str| format!("SELECT count(*) FROM tools.{table}");
    let one = assemble("shared-1", "dev-user").await?;
    let two = assemble("shared-2", "dev-user").await?;
    assert_ne!(one.snapshot_id, two.snapshot_id);
    assert_eq!(one.tools, two.tools);
    assert!(!one.tools.is_empty());
    let contents: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count("toolset_contents")))
        .fetch_one(&mut db)
        .await?;
    let snapshots: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count("toolset_snapshots")))
        .fetch_one(&mut db)
        .await?;
    assert_eq!((contents, snapshots), (1, 2), "two runs, one content");

    // Another user with the very same tools gets a content row of their own.
    let bobs = assemble("bobs-1", "bob").await?;
    assert_eq!(bobs.tools, one.tools);
    let contents: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count("toolset_contents")))
        .fetch_one(&mut db)
        .await?;
    assert_eq!(contents, 2);
    let owners: Vec<String> =
        sqlx::query_scalar("SELECT user_id FROM tools.toolset_contents ORDER BY user_id")
            .fetch_all(&mut db)
            .await?;
    assert_eq!(owners, ["bob", "dev-user"]);

    // A snapshot row as written before contents existed: its JSON columns are read.
    let old_tools = serde_json::to_value(&one.tools[..1])?;
    sqlx::query(
        "INSERT INTO tools.toolset_snapshots \
           (tenant_id, id, run_id, user_id, provider_tags, tools, blocked, chat_id) \
         VALUES ('dev', 'ts-old-run', 'old-run', 'dev-user', '{}', $1, '[]', '')",
    )
    .bind(&old_tools)
    .execute(&mut db)
    .await?;
    let old = assemble("old-run", "dev-user").await?;
    assert_eq!(old.snapshot_id, "ts-old-run");
    assert_eq!(
        old.tools,
        one.tools[..1].to_vec(),
        "the stored JSON, not a new toolset"
    );

    // A snapshot whose content is missing (or was never there): an internal error.
    sqlx::query(
        "INSERT INTO tools.toolset_snapshots \
           (tenant_id, id, run_id, user_id, provider_tags, chat_id, content_digest) \
         VALUES ('dev', 'ts-lost-run', 'lost-run', 'dev-user', '{}', '', '\\x00')",
    )
    .execute(&mut db)
    .await?;
    let lost = assemble("lost-run", "dev-user")
        .await
        .err()
        .ok_or("a snapshot without content was answered")?;
    assert_eq!(lost.code(), tonic::Code::Internal, "{lost:?}");
    mesh.stop().await
}

/// The assembly reads its inputs in one statement (ADR 0220): only the caller's. Another
/// user's integration never enters the caller's toolset, and naming another user's chat does
/// not bring in the MCP server that user selected for it.
#[tokio::test]
async fn an_assembly_reads_only_the_callers_integrations_and_selection() -> R {
    let mesh = Mesh::builder().start().await?;
    let tools = Tools::connect(&mesh).await?;
    let as_bob = |r: reqwest::RequestBuilder| r.header("x-pa-dev-user", "bob");
    for body in [
        json!({ "kind": "web_fetch", "name": "bob's fetch" }),
        json!({ "kind": "mcp_http", "name": "bob's server",
                "config": { "url": "https://mcp.example.com/mcp" } }),
    ] {
        let r = as_bob(mesh.http.post(mesh.url("/v1/me/integrations")))
            .json(&body)
            .send()
            .await?;
        assert_eq!(r.status(), 201, "{body}");
    }
    let r = as_bob(mesh.http.get(mesh.url("/v1/me/integrations")))
        .send()
        .await?;
    let listed: Value = r.json().await?;
    let server = listed["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["kind"] == "mcp_http"))
        .and_then(|i| i["id"].as_str())
        .ok_or("bob's server")?
        .to_string();
    let r = as_bob(mesh.http.post(mesh.url("/v1/chats")))
        .json(&json!({ "title": "bob's chat" }))
        .send()
        .await?;
    let bob_chat = r.json::<Value>().await?["id"]
        .as_str()
        .ok_or("bob's chat")?
        .to_string();
    let r = as_bob(
        mesh.http
            .put(mesh.url(&format!("/v1/chats/{bob_chat}/tools"))),
    )
    .json(&json!({ "integration_ids": [server] }))
    .send()
    .await?;
    assert_eq!(r.status(), 200);
    let assemble = |run: &'static str, user: &'static str| {
        let mut client = tools.client.clone();
        let auth = tools.mesh_auth.clone();
        let chat_id = bob_chat.clone();
        async move {
            let request = AssembleToolsetRequest {
                run_id: run.into(),
                chat_id,
                ..Default::default()
            };
            client
                .assemble_toolset(auth.request(&Mesh::identity("dev", user), request))
                .await
                .map(|r| r.into_inner())
        }
    };
    let alice = assemble("alice-in-bobs-chat", "dev-user").await?;
    let names: Vec<&str> = alice.tools.iter().map(|t| t.name.as_str()).collect();
    assert!(
        !names.contains(&"web_fetch"),
        "bob's integration: {names:?}"
    );
    assert!(!names.is_empty(), "the built-in tools are there");
    let mentions_server = |t: &Toolset| {
        t.tools.iter().any(|x| x.source.contains(&server))
            || t.blocked.iter().any(|b| b.source.contains(&server))
    };
    assert!(!mentions_server(&alice), "bob's selection: {alice:?}");
    // Bob's own assembly in the same chat has his integration and his selected server (which
    // cannot be listed from here: it is reported as blocked).
    let bob = assemble("bob-in-bobs-chat", "bob").await?;
    assert!(bob.tools.iter().any(|t| t.name == "web_fetch"), "{bob:?}");
    assert!(mentions_server(&bob), "{bob:?}");
    mesh.stop().await
}
