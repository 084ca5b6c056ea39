//! The two browser devices end to end against the real mesh, in Debian's chromium:
//!
//! - the cloud browser (`clients/browser-sandbox`, Node + playwright-core) enrolls with a
//!   one-time code; a scripted model opens a local test page, clicks a button and reads the
//!   result; a private address is refused by its egress proxy (the page server never sees the
//!   request), and the next run gets a fresh browser context;
//! - the extension (`clients/browser-extension`, MV3) is built, loaded unpacked into headless
//!   chromium, consents and enrolls on its options page and registers as a device; the model
//!   reads the active tab, and a click in the user's own browser waits for approval.
//!
//! Device tools make runs durable, so these meshes have a worker (Temporal).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;
use pa_testkit::{Chunk, FakeProvider, Reply};
use serde_json::{Value, json};
use tests_e2e::{Mesh, SseEvent, tool_result};
use tokio::io::{AsyncBufReadExt, BufReader};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn need_node_modules(dir: &Path, package: &str) {
    assert!(
        dir.join("node_modules").join(package).exists(),
        "{} has no node_modules/{package}: run `make bootstrap` (scripts/stack.sh install)",
        dir.display()
    );
}

async fn node(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> BoxResult<String> {
    let mut cmd = tokio::process::Command::new("node");
    cmd.args(args).current_dir(dir).kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("node {args:?} in {} failed:\n{text}", dir.display()).into())
    }
}

const PAGE: &str = r#"<!doctype html><html><head><title>Browser device test page</title></head><body>
<h1>Hello from the test page</h1>
<p id="seen"></p>
<button id="reveal" onclick="document.getElementById('result').textContent = 'the secret word is ' + 'pelican'">Reveal</button>
<p id="result">nothing yet</p>
<script>
  document.getElementById('seen').textContent = localStorage.getItem('seen') ? 'seen before: yes' : 'seen before: no';
  localStorage.setItem('seen', '1');
</script>
</body></html>"#;

/// A page server on every local address (127.0.0.2 would answer if nothing refused it); it
/// records the Host of every request.
async fn page_server() -> BoxResult<(u16, Arc<Mutex<Vec<String>>>)> {
    let hosts = Arc::new(Mutex::new(Vec::<String>::new()));
    async fn page(
        State(hosts): State<Arc<Mutex<Vec<String>>>>,
        headers: HeaderMap,
    ) -> impl IntoResponse {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if let Ok(mut seen) = hosts.lock() {
            seen.push(host);
        }
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
    }
    let app = Router::new()
        .route("/", get(page))
        .route("/private", get(page))
        .with_state(hosts.clone());
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((port, hosts))
}

/// A one-time code for a device of `kind` (the code decides the device's kind).
async fn enrollment_code(mesh: &Mesh, kind: &str) -> BoxResult<String> {
    let (status, enrollment) = mesh
        .post_json("/v1/me/devices/enrollments", &json!({ "kind": kind }))
        .await?;
    assert_eq!(status, 201, "{enrollment}");
    Ok(enrollment["code"].as_str().unwrap_or_default().to_string())
}

/// The device of `kind` once it is online.
async fn online_device(mesh: &Mesh, kind: &str) -> BoxResult<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, list) = mesh.get_json("/v1/me/devices").await?;
        assert_eq!(status, 200, "{list}");
        let found = list["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["kind"] == kind && d["online"] == true)
            .cloned();
        if let Some(device) = found {
            return Ok(device);
        }
        if Instant::now() > deadline {
            return Err(format!("no {kind} device came online: {list}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts a run and approves each of `calls` (in order) once the run waits for it; returns the
/// run's id and all its events.
async fn run_approving(
    mesh: &Mesh,
    chat: &str,
    body: &Value,
    calls: &[&str],
) -> BoxResult<(String, Vec<SseEvent>)> {
    let (status, accepted) = mesh
        .post_json(&format!("/v1/chats/{chat}/runs"), body)
        .await?;
    assert_eq!(status, 202, "{accepted}");
    let run_id = accepted["run_id"].as_str().unwrap_or_default().to_string();
    for call in calls {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, decided) = mesh
                .post_json(
                    &format!("/v1/runs/{run_id}/approvals/{call}"),
                    &json!({ "approve": true }),
                )
                .await?;
            if status < 300 {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{call} never waited for approval: {status} {decided}").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let events = tokio::time::timeout(
        Duration::from_secs(120),
        mesh.read_events(&run_id, None, None),
    )
    .await??;
    Ok((run_id, events))
}

/// The calls the run asked a human to approve, in order.
fn approvals_asked(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.data["name"] == "tool_call_approval")
        .map(|e| {
            e.data["value"]["toolCallId"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn last_type(events: &[SseEvent]) -> String {
    events
        .last()
        .map(|e| e.event_type().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_browser_clients_unit_tests_pass() -> R {
    let sandbox = repo().join("clients/browser-sandbox");
    need_node_modules(&sandbox, "playwright-core");
    need_node_modules(&sandbox, "ws");
    let out = node(&sandbox, &["--test", "test/"], &[]).await?;
    assert!(out.contains("# fail 0") && passed(&out) >= 7, "{out}");
    let extension = repo().join("clients/browser-extension");
    let out = node(&extension, &["--test", "test/"], &[]).await?;
    assert!(out.contains("# fail 0") && passed(&out) >= 6, "{out}");
    Ok(())
}

/// The `# pass N` of a `node --test` report.
fn passed(report: &str) -> usize {
    report
        .lines()
        .find_map(|l| l.strip_prefix("# pass "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_cloud_browser_opens_a_local_page_clicks_and_reads_it() -> R {
    let sandbox = repo().join("clients/browser-sandbox");
    need_node_modules(&sandbox, "playwright-core");
    let mesh = Mesh::builder().worker().without_curator().start().await?;
    let fake = FakeProvider::start().await?;
    mesh.add_fake_model(&fake.base_url()).await?;
    let (port, hosts) = page_server().await?;

    // Enroll with the real CLI, then run it; only 127.0.0.1 is allowed although private.
    let home =
        std::env::temp_dir().join(format!("pa-e2e-sandbox-{}", uuid::Uuid::new_v4().simple()));
    let config = home.join("browser-sandbox.json");
    let config_arg = config.to_string_lossy().to_string();
    let code = enrollment_code(&mesh, "browser_sandbox").await?;
    let gateway = mesh.url("");
    let enrolled = node(
        &sandbox,
        &[
            "src/main.mjs",
            "enroll",
            &code,
            "--gateway",
            &gateway,
            "--name",
            "cloud",
            "--config",
            &config_arg,
        ],
        &[],
    )
    .await?;
    assert!(enrolled.contains("enrolled as cloud"), "{enrolled}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the credential file is {mode:o}");
    }
    let mut sandbox_process = tokio::process::Command::new("node")
        .args(["src/main.mjs", "run", "--config", &config_arg])
        .current_dir(&sandbox)
        .env("PA_BROWSER_NET_ALLOW", "127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let device = online_device(&mesh, "browser_sandbox").await?;
    assert_eq!(device["name"], "cloud");
    for tool in ["navigate", "read_page", "click", "type_text", "screenshot"] {
        assert!(
            device["tools"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == tool)),
            "{tool}: {device}"
        );
    }

    let page = format!("http://127.0.0.1:{port}/");
    let private = format!("http://127.0.0.2:{port}/private");
    let chat = mesh.create_chat("cloud browser").await?;
    for (id, tool, args) in [
        ("c_open", "cloud__navigate", json!({ "url": page })),
        ("c_click", "cloud__click", json!({ "text": "Reveal" })),
        (
            "c_read",
            "cloud__read_page",
            json!({ "selector": "#result" }),
        ),
        ("c_again", "cloud__navigate", json!({ "url": page })),
        ("c_private", "cloud__navigate", json!({ "url": private })),
    ] {
        fake.push(Reply::chunks(vec![Chunk::tool_call(
            id,
            tool,
            args.to_string(),
        )]));
    }
    fake.push(Reply::text("The secret word is pelican."));
    let body = json!({ "message": "what does the page hide?", "model": "fp:m" });
    let (status, accepted) = mesh
        .post_json(&format!("/v1/chats/{chat}/runs"), &body)
        .await?;
    assert_eq!(status, 202, "{accepted}");
    let run_id = accepted["run_id"].as_str().unwrap_or_default().to_string();
    // Once the first page is read, the run holds untrusted content: every tool that can make
    // the browser send something (click, navigate) waits for approval; reading does not.
    let (events, asked) = mesh
        .answer_approvals(&run_id, true, Duration::from_secs(120))
        .await?;
    assert_eq!(last_type(&events), "RUN_FINISHED", "{events:?}");
    assert_eq!(
        asked,
        ["cloud__click", "cloud__navigate", "cloud__navigate"],
        "{events:?}"
    );
    let opened = tool_result(&events, "c_open");
    assert!(
        opened.contains("Title: Browser device test page") && opened.contains("seen before: no"),
        "{opened}"
    );
    assert!(tool_result(&events, "c_click").contains("the secret word is pelican"));
    assert_eq!(tool_result(&events, "c_read"), "the secret word is pelican");
    assert!(tool_result(&events, "c_again").contains("seen before: yes"));
    let refused = tool_result(&events, "c_private");
    assert!(
        refused.contains("refused") && refused.contains("loopback"),
        "{refused}"
    );
    let private_host = format!("127.0.0.2:{port}");
    assert!(
        !hosts
            .lock()
            .map_err(|_| "poisoned")?
            .contains(&private_host),
        "the private address was reached"
    );
    let (_, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
    assert_eq!(run["mode"], "durable", "{run}");

    // The next run has a fresh browser context: the page's storage is empty again.
    fake.push(Reply::chunks(vec![Chunk::tool_call(
        "c_fresh",
        "cloud__navigate",
        json!({ "url": page }).to_string(),
    )]));
    fake.push(Reply::text("Fresh."));
    let body = json!({ "message": "open it again", "model": "fp:m" });
    let (_, events) = mesh
        .run_to_end(&chat, &body, Duration::from_secs(120))
        .await?;
    assert_eq!(last_type(&events), "RUN_FINISHED", "{events:?}");
    let fresh = tool_result(&events, "c_fresh");
    assert!(fresh.contains("seen before: no"), "{fresh}");

    sandbox_process.kill().await?;
    let _ = std::fs::remove_dir_all(&home);
    mesh.stop().await
}

#[tokio::test]
async fn the_browser_extension_registers_as_a_device_and_reads_the_active_tab() -> R {
    let web_tests = repo().join("tests/web");
    need_node_modules(&web_tests, "playwright-core");
    let mesh = Mesh::builder().worker().without_curator().start().await?;
    let fake = FakeProvider::start().await?;
    mesh.add_fake_model(&fake.base_url()).await?;
    let (port, _hosts) = page_server().await?;

    // Built like a release, into a folder of this test's own.
    let built = std::env::temp_dir().join(format!(
        "pa-e2e-extension-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let built_arg = built.to_string_lossy().to_string();
    let out = node(
        &repo().join("clients/browser-extension"),
        &["build.mjs"],
        &[("PA_EXTENSION_OUT", &built_arg)],
    )
    .await?;
    assert!(out.contains("built into"), "{out}");

    let code = enrollment_code(&mesh, "browser_extension").await?;
    let gateway = mesh.url("");
    let page = format!("http://127.0.0.1:{port}/");
    let shots = web_tests.join("test-output/extension");
    let mut driver = tokio::process::Command::new("node")
        .arg("extension_device.mjs")
        .current_dir(&web_tests)
        .env("PA_EXTENSION_DIR", &built)
        .env("PA_GATEWAY_URL", &gateway)
        .env("PA_ENROLL_CODE", &code)
        .env("PA_TEST_PAGE", &page)
        .env("PA_TEST_OUTPUT", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = driver.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(90), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("READY ") {
                return Some(line);
            }
        }
        None
    })
    .await?
    .ok_or("the extension driver stopped before the extension was connected")?;
    assert!(ready.len() > "READY ".len(), "{ready}");

    let device = online_device(&mesh, "browser_extension").await?;
    assert_eq!(device["name"], "chrome");
    assert!(
        device["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "read_tab")),
        "{device}"
    );

    // Reading the user's own tab waits for their approval every time, even in a run that has
    // read nothing untrusted (ADR 0112); what it read is untrusted, so clicking in their
    // browser waits too.
    let chat = mesh.create_chat("my browser").await?;
    fake.push(Reply::chunks(vec![Chunk::tool_call(
        "c_tab",
        "chrome__read_tab",
        "{}".to_string(),
    )]));
    fake.push(Reply::chunks(vec![Chunk::tool_call(
        "c_click",
        "chrome__click",
        json!({ "text": "Reveal" }).to_string(),
    )]));
    fake.push(Reply::chunks(vec![Chunk::tool_call(
        "c_tab_again",
        "chrome__read_tab",
        "{}".to_string(),
    )]));
    fake.push(Reply::text("Done."));
    let body = json!({ "message": "what is in my tab?", "model": "fp:m" });
    let (_, events) =
        run_approving(&mesh, &chat, &body, &["c_tab", "c_click", "c_tab_again"]).await?;
    assert_eq!(
        approvals_asked(&events),
        ["c_tab", "c_click", "c_tab_again"]
    );
    assert_eq!(last_type(&events), "RUN_FINISHED", "{events:?}");
    let tab = tool_result(&events, "c_tab");
    assert!(tab.contains("Hello from the test page"), "{tab}");
    let clicked = tool_result(&events, "c_click");
    assert!(clicked.contains("the secret word is pelican"), "{clicked}");
    assert!(
        events
            .iter()
            .any(|e| e.data["name"] == "tool_call_approval"),
        "the click did not ask for approval"
    );

    drop(driver.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(15), driver.wait()).await;
    let _ = driver.kill().await;
    for shot in ["extension-1-consent.png", "extension-2-connected.png"] {
        assert!(shots.join(shot).exists(), "{shot} not saved");
    }
    let _ = std::fs::remove_dir_all(&built);
    mesh.stop().await
}
