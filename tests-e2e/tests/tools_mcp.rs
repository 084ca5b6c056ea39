//! MCP end to end against the official reference server (npm
//! `@modelcontextprotocol/server-everything`, installed in tests/mcp/) over stdio and streamable
//! HTTP: tools listed at assembly (prefixed by server), called, resources read, and a server
//! killed mid-call becomes a tool error while the run goes on.

use std::path::PathBuf;
use std::time::Duration;

use pa_proto::v1::tool_service_client::ToolServiceClient;
use pa_proto::v1::{AssembleToolsetRequest, ExecuteToolRequest, ExecuteToolResponse, Toolset};
use pa_testkit::{Chunk, FakeProvider, Reply};
use serde_json::{Value, json};
use svc_tools::ToolsSettings;
use svc_tools::netguard::AllowList;
use tests_e2e::{Mesh, SseEvent};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn server_js() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/mcp");
    let js = dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        js.exists(),
        "tests/mcp has no node_modules: run `make test` (it installs them) or `npm ci` there"
    );
    js
}

/// server-everything in streamableHttp mode on a free port; killed when dropped.
struct HttpServer {
    child: tokio::process::Child,
    url: String,
}

async fn start_http_server() -> BoxResult<HttpServer> {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let child = tokio::process::Command::new("node")
        .arg(server_js())
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if tokio::time::Instant::now() > deadline {
            return Err("server-everything (streamableHttp) did not listen".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(HttpServer {
        child,
        url: format!("http://127.0.0.1:{port}/mcp"),
    })
}

fn settings() -> ToolsSettings {
    ToolsSettings {
        // Only for the local HTTP server; everything else stays refused.
        allow: AllowList::parse("127.0.0.1/32").expect("allow-list"),
        mcp_stdio_commands: vec!["node".into()],
        mcp_call_timeout: Duration::from_secs(15),
        // Every assembly lists again (listings kept for a while: the test below).
        mcp_list_cache: Duration::ZERO,
        ..ToolsSettings::default()
    }
}

#[derive(Clone)]
struct Tools {
    client: ToolServiceClient<tonic::transport::Channel>,
    auth: pa_kit::InternalAuth,
}

impl Tools {
    async fn connect(mesh: &Mesh) -> BoxResult<Self> {
        Ok(Self {
            client: ToolServiceClient::connect(mesh.tools_url.clone()).await?,
            auth: mesh.auth.clone(),
        })
    }

    async fn assemble(&self, run_id: &str, chat_id: &str) -> BoxResult<Toolset> {
        let request = AssembleToolsetRequest {
            run_id: run_id.into(),
            chat_id: chat_id.into(),
            ..Default::default()
        };
        let mut toolset = self
            .client
            .clone()
            .assemble_toolset(
                self.auth
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
                self.auth
                    .request(&Mesh::identity("dev", "dev-user"), request),
            )
            .await?
            .into_inner())
    }
}

async fn create(mesh: &Mesh, body: Value) -> BoxResult<String> {
    let (status, created) = mesh.post_json("/v1/me/integrations", &body).await?;
    assert_eq!(status, 201, "{created}");
    Ok(created["id"].as_str().unwrap_or_default().to_string())
}

async fn select(mesh: &Mesh, chat: &str, ids: &[&str]) -> R {
    let r = mesh
        .http
        .put(mesh.url(&format!("/v1/chats/{chat}/tools")))
        .json(&json!({ "integration_ids": ids }))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    Ok(())
}

#[tokio::test]
async fn server_everything_tools_are_listed_and_called_over_stdio_and_streamable_http() -> R {
    let js = server_js();
    let http = start_http_server().await?;
    let mesh = Mesh::builder().tools_settings(settings()).start().await?;
    let tools = Tools::connect(&mesh).await?;
    let stdio_id = create(
        &mesh,
        json!({ "kind": "mcp_stdio", "name": "everything",
                "config": { "command": "node", "args": [js.to_string_lossy(), "stdio"] } }),
    )
    .await?;
    let http_id = create(
        &mesh,
        json!({ "kind": "mcp_http", "name": "everything-http", "config": { "url": http.url } }),
    )
    .await?;
    let chat = mesh.create_chat("mcp").await?;

    // Not selected by the chat: no MCP tools.
    let toolset = tools.assemble("mcp-0", &chat).await?;
    assert!(toolset.tools.is_empty(), "{:?}", toolset.tools);

    select(&mesh, &chat, &[&stdio_id, &http_id]).await?;
    let toolset = tools.assemble("mcp-1", &chat).await?;
    let names: Vec<&str> = toolset.tools.iter().map(|t| t.name.as_str()).collect();
    for expected in [
        "everything__echo",
        "everything__get-sum",
        "everything-http__echo",
        "everything-http__get-sum",
        "everything__read_resource",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(toolset.blocked.is_empty(), "{:?}", toolset.blocked);
    let echo = toolset
        .tools
        .iter()
        .find(|t| t.name == "everything__echo")
        .ok_or("no echo")?;
    assert_eq!(echo.source, format!("mcp:{stdio_id}"));
    assert_eq!(echo.origin_name, "echo");
    assert!(echo.untrusted_output);
    let schema: Value = serde_json::from_str(&echo.parameters_json_schema)?;
    assert_eq!(schema["type"], "object");
    assert_eq!(
        schema["properties"]["message"]["type"], "string",
        "{schema}"
    );

    for prefix in ["everything", "everything-http"] {
        let result = tools
            .execute(
                &toolset.snapshot_id,
                &format!("{prefix}__echo"),
                json!({ "message": "hello over MCP" }),
            )
            .await?;
        assert!(!result.is_error, "{prefix}: {}", result.content);
        assert_eq!(result.content, "Echo: hello over MCP");
        assert!(result.untrusted_content);
        let sum = tools
            .execute(
                &toolset.snapshot_id,
                &format!("{prefix}__get-sum"),
                json!({ "a": 19, "b": 23 }),
            )
            .await?;
        assert!(sum.content.contains("42"), "{prefix}: {}", sum.content);
        // Bad arguments are the server's error, reported to the model.
        let bad = tools
            .execute(
                &toolset.snapshot_id,
                &format!("{prefix}__get-sum"),
                json!({ "a": "x" }),
            )
            .await?;
        assert!(bad.is_error, "{prefix}: {}", bad.content);
    }

    // Resources are readable context.
    let reader = toolset
        .tools
        .iter()
        .find(|t| t.name == "everything__read_resource")
        .ok_or("no reader")?;
    let schema: Value = serde_json::from_str(&reader.parameters_json_schema)?;
    let uri = schema["properties"]["uri"]["enum"][0]
        .as_str()
        .ok_or("no resource uri")?
        .to_string();
    let read = tools
        .execute(
            &toolset.snapshot_id,
            "everything__read_resource",
            json!({ "uri": uri }),
        )
        .await?;
    assert!(!read.is_error, "{uri}: {}", read.content);
    assert!(!read.content.is_empty());

    // A server that is gone is reported at assembly, not a failed run start.
    drop(http);
    let toolset = tools.assemble("mcp-2", &chat).await?;
    assert!(
        toolset
            .blocked
            .iter()
            .any(|b| b.name == "everything-http__*" && b.gate == "mcp_unavailable"),
        "{:?}",
        toolset.blocked
    );
    assert!(toolset.tools.iter().any(|t| t.name == "everything__echo"));
    mesh.stop().await
}

fn mcp_tool_names(toolset: &Toolset, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = toolset
        .tools
        .iter()
        .filter(|t| t.name.starts_with(prefix))
        .map(|t| t.name.clone())
        .collect();
    names.sort();
    names
}

/// A server's tool listing is reused by the next assemblies while it is recent; editing the
/// integration (another URL, another secret) lists again at once; a server that is gone is
/// reported once its listing has expired, and a failed listing is not kept.
#[tokio::test]
async fn mcp_listings_are_reused_until_the_integration_changes_or_they_expire() -> R {
    let keep_for = Duration::from_millis(1500);
    let first = pa_testkit::McpToolServer::start(3).await?;
    let second = pa_testkit::McpToolServer::start(5).await?;
    let mesh = Mesh::builder()
        .tools_settings(ToolsSettings {
            mcp_list_cache: keep_for,
            ..settings()
        })
        .start()
        .await?;
    let tools = Tools::connect(&mesh).await?;
    let id = create(
        &mesh,
        json!({ "kind": "mcp_http", "name": "kept", "config": { "url": first.url() } }),
    )
    .await?;
    let chat = mesh.create_chat("listings").await?;
    select(&mesh, &chat, &[&id]).await?;

    let one = tools.assemble("kept-1", &chat).await?;
    let two = tools.assemble("kept-2", &chat).await?;
    assert_eq!(mcp_tool_names(&one, "kept__").len(), 3, "{:?}", one.tools);
    assert_eq!(
        mcp_tool_names(&one, "kept__"),
        mcp_tool_names(&two, "kept__")
    );
    assert_eq!(
        first.listings(),
        1,
        "the second assembly reused the listing"
    );

    // Pointed at another server: listed there at once.
    let patch = |body: Value| {
        mesh.http
            .patch(mesh.url(&format!("/v1/me/integrations/{id}")))
            .json(&body)
            .send()
    };
    let r = patch(json!({ "config": { "url": second.url() } })).await?;
    assert_eq!(r.status(), 200);
    let moved = tools.assemble("kept-3", &chat).await?;
    assert_eq!(mcp_tool_names(&moved, "kept__").len(), 5);
    assert_eq!(second.listings(), 1);

    // A new secret (a header the server receives) is another target: listed again.
    let r = patch(json!({ "secrets": { "bearer_token": "tok-2" } })).await?;
    assert_eq!(r.status(), 200);
    tools.assemble("kept-4", &chat).await?;
    assert_eq!(second.listings(), 2);

    // The server's own tools changed: seen once the listing has expired.
    second.set_tools(2);
    let stale = tools.assemble("kept-5", &chat).await?;
    assert_eq!(mcp_tool_names(&stale, "kept__").len(), 5);
    tokio::time::sleep(keep_for + Duration::from_millis(200)).await;
    let fresh = tools.assemble("kept-6", &chat).await?;
    assert_eq!(mcp_tool_names(&fresh, "kept__").len(), 2);

    // Gone: reported once the listing expired, and asked again every time after.
    drop(second);
    tokio::time::sleep(keep_for + Duration::from_millis(200)).await;
    for run in ["kept-7", "kept-8"] {
        let gone = tools.assemble(run, &chat).await?;
        assert!(mcp_tool_names(&gone, "kept__").is_empty());
        assert!(
            gone.blocked
                .iter()
                .any(|b| b.name == "kept__*" && b.gate == "mcp_unavailable"),
            "{:?}",
            gone.blocked
        );
    }
    mesh.stop().await
}

/// Listing an MCP server can take seconds (a stdio server starting, a slow or silent server):
/// svc-tools reads what a toolset is made of in one transaction, but holds none open while it
/// lists (ADR 0216), and the snapshot is still written once the listing gave up.
#[tokio::test]
async fn a_slow_mcp_listing_holds_no_database_transaction_open() -> R {
    use sqlx::{Connection, Executor};
    // A server that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/mcp", silent.local_addr()?);
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let list_timeout = Duration::from_secs(3);
    let mesh = Mesh::builder()
        .tools_settings(ToolsSettings {
            mcp_list_timeout: list_timeout,
            ..settings()
        })
        .start()
        .await?;
    let tools = Tools::connect(&mesh).await?;
    let id = create(
        &mesh,
        json!({ "kind": "mcp_http", "name": "silent", "config": { "url": url } }),
    )
    .await?;
    let chat = mesh.create_chat("slow listing").await?;
    select(&mesh, &chat, &[&id]).await?;

    // Transactions left open in this mesh's database by a statement on svc-tools' tables.
    let mut db = sqlx::PgConnection::connect(&mesh.database_url).await?;
    let open_on_tools_tables = "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND state LIKE 'idle in transaction%' \
           AND (query ILIKE '%integrations%' OR query ILIKE '%devices%' \
                OR query ILIKE '%chat_tool_selection%')";
    // Control: a transaction left open after such a statement is seen.
    let mut control = sqlx::PgConnection::connect(&mesh.database_url).await?;
    control.execute("BEGIN").await?;
    control
        .execute("SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'devices'")
        .await?;
    let seen: i64 = sqlx::query_scalar(open_on_tools_tables)
        .fetch_one(&mut db)
        .await?;
    assert_eq!(seen, 1, "the control transaction is seen");
    control.execute("ROLLBACK").await?;

    let assembling = tokio::spawn({
        let tools = tools.clone();
        let chat = chat.clone();
        async move {
            tools
                .assemble("slow-1", &chat)
                .await
                .map_err(|e| e.to_string())
        }
    });
    let watch_until = tokio::time::Instant::now() + list_timeout - Duration::from_millis(800);
    let mut looked = 0;
    while tokio::time::Instant::now() < watch_until {
        let open: i64 = sqlx::query_scalar(open_on_tools_tables)
            .fetch_one(&mut db)
            .await?;
        assert_eq!(
            open, 0,
            "a transaction stayed open while the server was listed"
        );
        assert!(!assembling.is_finished(), "the listing is still waiting");
        looked += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(looked > 10, "looked {looked} times");
    let toolset = assembling.await??;
    assert!(
        toolset
            .blocked
            .iter()
            .any(|b| b.name == "silent__*" && b.gate == "mcp_unavailable"),
        "{:?}",
        toolset.blocked
    );
    // The snapshot was written after the listing: assembling the same run again returns it.
    let again = tools.assemble("slow-1", &chat).await?;
    assert_eq!(again.snapshot_id, toolset.snapshot_id);
    assert_eq!(again.blocked, toolset.blocked);
    held.abort();
    mesh.stop().await
}

/// A kept listing is only ever its owner's: another user (or tenant) with an integration of the
/// very same server and token lists for itself, and naming someone else's integration in a
/// toolset gets nothing of it.
#[tokio::test]
async fn mcp_listings_are_never_shared_between_users_or_tenants() -> R {
    use pa_proto::v1::{ChatToolSelection, CreateIntegrationRequest, Identity};
    let server = pa_testkit::McpToolServer::start(3).await?;
    let mesh = Mesh::builder()
        .tools_settings(ToolsSettings {
            mcp_list_cache: Duration::from_secs(600),
            ..settings()
        })
        .start()
        .await?;
    let client = ToolServiceClient::connect(mesh.tools_url.clone()).await?;
    let same_server = |name: &str| CreateIntegrationRequest {
        kind: "mcp_http".into(),
        name: name.into(),
        enabled: true,
        config_json: json!({ "url": server.url() }).to_string(),
        secrets: [("bearer_token".to_string(), "the-same-token".to_string())].into(),
        ..Default::default()
    };
    // Each user's own integration of the server, selected in a chat of theirs.
    let mut integration_of = Vec::new();
    let users = [
        Mesh::identity("dev", "alice"),
        Mesh::identity("dev", "bob"),
        Mesh::identity("other-tenant", "alice"),
    ];
    let chat_of = |who: &Identity| format!("chat-{}-{}", who.tenant_id, who.user_id);
    for who in &users {
        let created = client
            .clone()
            .create_integration(mesh.auth.request(who, same_server("shared")))
            .await?
            .into_inner();
        client
            .clone()
            .set_chat_tool_selection(mesh.auth.request(
                who,
                ChatToolSelection {
                    chat_id: chat_of(who),
                    integration_ids: vec![created.id.clone()],
                },
            ))
            .await?;
        integration_of.push(created.id);
    }
    let assemble = |who: &Identity, run: &str, selected: Vec<String>| {
        let request = AssembleToolsetRequest {
            run_id: run.into(),
            chat_id: chat_of(who),
            selected_integrations: selected,
            ..Default::default()
        };
        let mut client = client.clone();
        let request = mesh.auth.request(who, request);
        async move {
            client
                .assemble_toolset(request)
                .await
                .map(|r| r.into_inner())
        }
    };
    let alice = assemble(&users[0], "alice-1", vec![]).await?;
    assert_eq!(
        mcp_tool_names(&alice, "shared__").len(),
        3,
        "{:?} {:?}",
        alice.tools.iter().map(|t| &t.name).collect::<Vec<_>>(),
        alice.blocked
    );
    assert_eq!(server.listings(), 1);
    // Alice again: her listing is kept.
    assemble(&users[0], "alice-2", vec![]).await?;
    assert_eq!(server.listings(), 1);
    // Bob, same tenant, same server, same token: he lists for himself.
    let bob = assemble(&users[1], "bob-1", vec![]).await?;
    assert_eq!(
        mcp_tool_names(&bob, "shared__").len(),
        3,
        "{:?} {:?}",
        bob.tools.iter().map(|t| &t.name).collect::<Vec<_>>(),
        bob.blocked
    );
    assert_eq!(server.listings(), 2, "bob was handed alice's listing");
    // Another tenant's alice: her own too.
    assemble(&users[2], "other-1", vec![]).await?;
    assert_eq!(server.listings(), 3, "another tenant was handed a listing");
    // Bob naming alice's integration gets none of it, from the server or from what is kept.
    let forged = assemble(&users[1], "bob-2", vec![integration_of[0].clone()]).await?;
    assert!(
        mcp_tool_names(&forged, "shared__").is_empty(),
        "{:?}",
        forged.tools
    );
    assert_eq!(server.listings(), 3);
    // Nor can he put his integration into her chat's selection (chat ids are unique within a
    // tenant): refused, and hers is unchanged.
    let taken = client
        .clone()
        .set_chat_tool_selection(mesh.auth.request(
            &users[1],
            ChatToolSelection {
                chat_id: chat_of(&users[0]),
                integration_ids: vec![integration_of[1].clone()],
            },
        ))
        .await
        .expect_err("another user's chat");
    assert_eq!(taken.code(), tonic::Code::NotFound, "{taken:?}");
    let hers = client
        .clone()
        .get_chat_tool_selection(mesh.auth.request(
            &users[0],
            pa_proto::v1::GetChatToolSelectionRequest {
                chat_id: chat_of(&users[0]),
            },
        ))
        .await?
        .into_inner();
    assert_eq!(hers.integration_ids, [integration_of[0].clone()]);
    mesh.stop().await
}

fn tool_results(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event_type() == "TOOL_CALL_RESULT")
        .map(|e| e.data["content"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Runs a scripted model that calls `tool` (a long operation); `kill` runs once the call has
/// begun. The run must end normally with the tool's failure as its result.
async fn killed_mid_call<F, Fut>(mesh: &Mesh, chat: &str, tool: &str, kill: F) -> BoxResult<String>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = BoxResult<()>>,
{
    let fake = FakeProvider::start().await?;
    let id = format!("p{}", uuid::Uuid::new_v4().simple());
    let body = json!({ "id": id, "kind": "openai_compatible", "base_url": fake.base_url(),
                       "tags": [], "platform_api_key": "sk-test" });
    let (status, saved) = mesh.post_json("/v1/admin/providers", &body).await?;
    assert_eq!(status, 200, "{saved}");
    let body = json!({ "label": format!("{id}:m"), "context_window": 32000,
                       "input_price_micros": 1, "output_price_micros": 1, "capabilities": ["tools"] });
    let (status, saved) = mesh.post_json("/v1/admin/models", &body).await?;
    assert_eq!(status, 200, "{saved}");
    fake.push(Reply::chunks(vec![Chunk::tool_call(
        "call_long",
        tool,
        r#"{"duration": 60, "steps": 60}"#,
    )]));
    fake.push(Reply::text("The server went away; carrying on."));
    let (status, accepted) = mesh
        .post_json(
            &format!("/v1/chats/{chat}/runs"),
            &json!({ "message": "do the long thing", "model": format!("{id}:m") }),
        )
        .await?;
    assert_eq!(status, 202, "{accepted}");
    let run_id = accepted["run_id"].as_str().unwrap_or_default().to_string();
    // The tool call has started once the model's first answer is out and TOOL_CALL_END is in
    // the stream; give the MCP call a moment to be in flight, then kill the server.
    // (Gate notices may come first as STEP events: read up to the first TOOL_CALL_END.)
    let mut events = Vec::new();
    for n in 4..40 {
        events = mesh.read_events(&run_id, None, Some(n)).await?;
        if events.last().map(SseEvent::event_type) == Some("TOOL_CALL_END") {
            break;
        }
    }
    assert_eq!(
        events.last().map(SseEvent::event_type),
        Some("TOOL_CALL_END"),
        "{:?}",
        events.iter().map(SseEvent::event_type).collect::<Vec<_>>()
    );
    // A moment for the call to be in flight; a kill that comes earlier fails the call the
    // same way (the server is gone), so this cannot make the test fail.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kill().await?;
    let events = mesh.read_events(&run_id, None, None).await?;
    let kinds: Vec<&str> = events.iter().map(SseEvent::event_type).collect();
    assert_eq!(kinds.last(), Some(&"RUN_FINISHED"), "{kinds:?}");
    let (_, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(fake.requests().len(), 2, "the model got the tool's failure");
    Ok(tool_results(&events).join("\n"))
}

/// The pid (as this host sees it) of the `node` process with `marker` among its arguments.
fn node_with_argument(marker: &str) -> Option<String> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_node = args.first().is_some_and(|a| a.ends_with(b"node"));
            (is_node && args.contains(&marker.as_bytes())).then_some(pid)
        })
}

#[tokio::test]
async fn an_mcp_server_killed_mid_call_is_a_tool_error_and_the_run_continues() -> R {
    let js = server_js();
    let mut http = start_http_server().await?;
    let mesh = Mesh::builder().tools_settings(settings()).start().await?;
    // The server runs sandboxed (its own PID namespace, its own /tmp): it is found by a marker
    // argument (the server ignores it) in the host's process list, so the test kills exactly it.
    let marker = format!("pa-mcp-{}", uuid::Uuid::new_v4().simple());
    let stdio_id = create(
        &mesh,
        json!({ "kind": "mcp_stdio", "name": "stdio",
                "config": { "command": "node", "args": [js.to_string_lossy(), "stdio", marker] } }),
    )
    .await?;
    let http_id = create(
        &mesh,
        json!({ "kind": "mcp_http", "name": "remote", "config": { "url": http.url } }),
    )
    .await?;
    let chat = mesh.create_chat("mcp-kill").await?;
    select(&mesh, &chat, &[&stdio_id, &http_id]).await?;

    // Streamable HTTP: the test owns the server process.
    let result = killed_mid_call(
        &mesh,
        &chat,
        "remote__trigger-long-running-operation",
        || async {
            http.child.kill().await?;
            Ok(())
        },
    )
    .await?;
    assert!(!result.contains("completed"), "{result}");
    assert!(result.contains("MCP"), "{result}");

    // stdio: svc-tools started it (in the sandbox); kill that very process.
    let result = killed_mid_call(
        &mesh,
        &chat,
        "stdio__trigger-long-running-operation",
        || {
            let marker = marker.clone();
            async move {
                // Each call starts its own server: wait for it (a loaded machine starts node
                // slowly) instead of assuming it is up.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                let pid = loop {
                    if let Some(pid) = node_with_argument(&marker) {
                        break pid;
                    }
                    if tokio::time::Instant::now() > deadline {
                        return Err("the stdio server is not running".into());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                let status = tokio::process::Command::new("kill")
                    .args(["-9", &pid])
                    .status()
                    .await?;
                assert!(status.success(), "kill {pid}");
                Ok(())
            }
        },
    )
    .await?;
    assert!(!result.contains("completed"), "{result}");
    assert!(result.contains("MCP"), "{result}");
    mesh.stop().await
}
