//! stdio MCP servers are sandboxed (issue 21 item 4, docs/src/adr/0110-2026-12-03-stdio-mcp-sandbox.md): a
//! hostile server (tests/mcp/probe-server.mjs) reports what it can see. Inside bubblewrap it
//! sees only the allow-listed environment and its own secrets, not this service's
//! `/proc/<pid>/environ` nor any other process's, not the operator's hidden paths, and no
//! network unless the integration asks and the operator allows. Variables that change how
//! programs load are refused when saved and dropped when the server starts. The operator's
//! opt-out (`PA_MCP_SANDBOX=off`) is the control: there, the same probe reads this process's
//! environment, so the probe is able to find what the sandbox hides. Without a working sandbox,
//! stdio servers are refused with the reason.

use std::collections::BTreeSet;
use std::path::PathBuf;

use pa_proto::v1::tool_service_client::ToolServiceClient;
use pa_proto::v1::{AssembleToolsetRequest, ExecuteToolRequest, Toolset};
use serde_json::{Value, json};
use sqlx::Connection;
use svc_tools::ToolsSettings;
use svc_tools::sandbox::{SandboxMode, SandboxSettings};
use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn probe_js() -> String {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/mcp/probe-server.mjs");
    assert!(js.exists(), "{} is missing", js.display());
    js.canonicalize()
        .unwrap_or(js)
        .to_string_lossy()
        .into_owned()
}

fn settings(sandbox: SandboxSettings) -> ToolsSettings {
    ToolsSettings {
        mcp_stdio_commands: vec!["node".into()],
        mcp_sandbox: sandbox,
        ..ToolsSettings::default()
    }
}

/// `NAME=VALUE` entries of this process's environment as the kernel shows it to others.
fn own_environ() -> Vec<String> {
    std::fs::read("/proc/self/environ")
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|e| !e.is_empty())
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn create(mesh: &Mesh, body: Value) -> BoxResult<String> {
    let (status, created) = mesh.post_json("/v1/me/integrations", &body).await?;
    assert_eq!(status, 201, "{created}");
    Ok(created["id"].as_str().unwrap_or_default().to_string())
}

async fn toolset(mesh: &Mesh, run_id: &str, ids: &[&str]) -> BoxResult<Toolset> {
    let chat = mesh.create_chat("sandbox").await?;
    let r = mesh
        .http
        .put(mesh.url(&format!("/v1/chats/{chat}/tools")))
        .json(&json!({ "integration_ids": ids }))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let request = AssembleToolsetRequest {
        run_id: run_id.into(),
        chat_id: chat,
        ..Default::default()
    };
    let mut client = ToolServiceClient::connect(mesh.tools_url.clone()).await?;
    Ok(client
        .assemble_toolset(
            mesh.auth
                .request(&Mesh::identity("dev", "dev-user"), request),
        )
        .await?
        .into_inner())
}

/// Calls `<prefix>__probe` and returns its report.
async fn probe(mesh: &Mesh, toolset: &Toolset, prefix: &str, args: Value) -> BoxResult<Value> {
    let name = format!("{prefix}__probe");
    assert!(
        toolset.tools.iter().any(|t| t.name == name),
        "{name} not in {:?} (blocked {:?})",
        toolset.tools.iter().map(|t| &t.name).collect::<Vec<_>>(),
        toolset.blocked
    );
    let request = ExecuteToolRequest {
        snapshot_id: toolset.snapshot_id.clone(),
        name,
        arguments_json: args.to_string(),
        ..Default::default()
    };
    let mut client = ToolServiceClient::connect(mesh.tools_url.clone()).await?;
    let result = client
        .execute_tool(
            mesh.auth
                .request(&Mesh::identity("dev", "dev-user"), request),
        )
        .await?
        .into_inner();
    assert!(!result.is_error, "{}", result.content);
    Ok(serde_json::from_str(&result.content)?)
}

fn env_names(report: &Value) -> BTreeSet<String> {
    report["env"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_sandboxed_stdio_server_sees_only_its_environment_not_the_service() -> R {
    // A directory the operator hides, readable by anyone outside the sandbox, and a file next
    // to it that is not hidden (not under /tmp: the sandbox has its own /tmp anyway).
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base)?;
    let base = base.canonicalize()?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let hidden = base.join(format!("pa-hidden-{tag}"));
    std::fs::create_dir_all(&hidden)?;
    let secret_file = hidden.join("service.key");
    std::fs::write(&secret_file, "hidden-key-material")?;
    let visible_file = base.join(format!("pa-visible-{tag}.txt"));
    std::fs::write(&visible_file, "visible")?;
    // One variable of this process's own environment the operator passes on (PA_MCP_ENV_ALLOW).
    let baseline = ["PATH", "HOME", "TMPDIR", "LANG", "TERM", "TZ", "PWD"];
    let passed = own_environ()
        .into_iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .find(|(k, v)| !baseline.contains(&k.as_str()) && !k.starts_with("PA_") && !v.is_empty())
        .ok_or("this process has no environment variable to pass on")?;
    let mesh = Mesh::builder()
        .tools_settings(settings(SandboxSettings {
            hide: vec![hidden.clone()],
            network_allowed: true,
            env_allow: vec!["TZ".into(), passed.0.clone()],
            ..SandboxSettings::default()
        }))
        .start()
        .await?;
    let js = probe_js();

    // Variables that change how programs load are refused when saved.
    for (secret, body_env) in [
        ("env:LD_PRELOAD", None),
        ("env:PATH", None),
        ("env:NODE_OPTIONS", None),
        ("env:PYTHONPATH", None),
        ("env:BASH_ENV", None),
        ("env:PA_KEK", None),
        ("env:OK_NAME", Some("LD_LIBRARY_PATH")),
        ("env:OK_NAME", Some("PERL5OPT")),
    ] {
        let mut config = json!({ "command": "node", "args": [js] });
        if let Some(name) = body_env {
            config["env"] = json!({ name: "/tmp/x" });
        }
        let body = json!({ "kind": "mcp_stdio", "name": "bad", "config": config,
                           "secrets": { secret: "/tmp/evil.so" } });
        let (status, problem) = mesh.post_json("/v1/me/integrations", &body).await?;
        assert_eq!(status, 400, "{secret} {body_env:?}: {problem}");
        assert_eq!(problem["code"], "bad_request", "{problem}");
    }

    let quiet = create(
        &mesh,
        json!({ "kind": "mcp_stdio", "name": "probe",
                "config": { "command": "node", "args": [js], "env": { "PROBE_MODE": "plain" } },
                "secrets": { "env:PROBE_TOKEN": "tok-123" } }),
    )
    .await?;
    // ... and on update.
    let r = mesh
        .http
        .patch(mesh.url(&format!("/v1/me/integrations/{quiet}")))
        .json(&json!({ "secrets": { "env:LD_PRELOAD": "/tmp/evil.so" } }))
        .send()
        .await?;
    assert_eq!(r.status(), 400, "{}", r.text().await?);
    let networked = create(
        &mesh,
        json!({ "kind": "mcp_stdio", "name": "probe-net",
                "config": { "command": "node", "args": [js], "network": true } }),
    )
    .await?;
    // A row saved before the rule (written straight to the table) still cannot set them.
    let mut db = sqlx::PgConnection::connect(&mesh.database_url).await?;
    let mut tx = db.begin().await?;
    sqlx::query("SELECT set_config('pa.tenant_id', 'dev', true)")
        .execute(&mut *tx)
        .await?;
    let updated = sqlx::query(
        "UPDATE tools.integrations SET config = jsonb_set(config, '{env}', \
             '{\"PROBE_MODE\": \"plain\", \"LD_PRELOAD\": \"/tmp/evil.so\", \"NODE_OPTIONS\": \"--require /tmp/x.js\"}') \
         WHERE id = $1",
    )
    .bind(&quiet)
    .execute(&mut *tx)
    .await?;
    assert_eq!(updated.rows_affected(), 1);
    tx.commit().await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let accept = tokio::spawn(async move {
        loop {
            if listener.accept().await.is_err() {
                break;
            }
        }
    });
    let toolset = toolset(&mesh, "sandbox-1", &[&quiet, &networked]).await?;
    let args = json!({ "pid": std::process::id(), "port": port,
                       "path": secret_file.to_string_lossy() });
    let report = probe(&mesh, &toolset, "probe", args.clone()).await?;

    // Only the baseline, the operator's pass-through (TZ, if this process has it) and the
    // integration's own variables; bubblewrap adds PWD for its working directory.
    let mut expected: BTreeSet<String> = [
        "HOME",
        "LANG",
        "PATH",
        "TERM",
        "TMPDIR",
        "PWD",
        "PROBE_MODE",
        "PROBE_TOKEN",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if std::env::var_os("TZ").is_some() {
        expected.insert("TZ".into());
    }
    expected.insert(passed.0.clone());
    assert_eq!(env_names(&report), expected, "{}", report["env"]);
    assert_eq!(report["env"][&passed.0], passed.1.as_str());
    assert_eq!(report["env"]["PROBE_TOKEN"], "tok-123");
    assert_eq!(report["env"]["PATH"], "/usr/local/bin:/usr/bin:/bin");

    // This service's /proc is not there: its pid does not exist in the sandbox, and no
    // environment it can read holds anything of this process's.
    assert_eq!(
        report["target_environ"]["ok"], false,
        "{}",
        report["target_environ"]
    );
    // The secrets reached the child through its environment, never a command line (which any
    // local user can read): the sandbox's init (bubblewrap) carries none of them.
    assert_eq!(
        report["init_cmdline"]["ok"], true,
        "{}",
        report["init_cmdline"]
    );
    let init = report["init_cmdline"]["text"].as_str().unwrap_or_default();
    assert!(init.contains("--unshare-pid"), "{init}");
    assert!(
        !init.contains("tok-123") && !init.contains("PROBE_TOKEN"),
        "{init}"
    );
    let seen = report["scan"]["environ"].as_str().unwrap_or_default();
    let mine = own_environ();
    assert!(
        !mine.is_empty(),
        "this process's environment is readable to itself"
    );
    let child_env: Vec<String> = report["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    for entry in mine.iter().filter(|e| !child_env.contains(e)) {
        assert!(!seen.contains(entry.as_str()), "the sandbox saw {entry}");
    }
    for needle in ["PA_INTERNAL_SECRET", "PA_KEK", "DATABASE_URL", "REDIS_URL"] {
        assert!(!seen.contains(needle), "{needle} visible: {seen}");
    }
    let pids = report["scan"]["pids"].as_array().map(Vec::len).unwrap_or(0);
    assert!(
        pids <= 4,
        "the sandbox sees {pids} processes: {}",
        report["scan"]["pids"]
    );

    // The hidden path is empty; the rest of the file system is read-only.
    assert_eq!(report["file"]["ok"], false, "{}", report["file"]);
    // Not root, without network.
    let euid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?);
    if euid == 0 {
        assert_eq!(report["uid"], 65534);
    }
    assert_ne!(report["net"], "connected", "{}", report["net"]);

    // The integration that asked for the network (the operator allows it) has it.
    // (The file next to the hidden directory is readable: hiding is what made the difference.)
    let args = json!({ "pid": std::process::id(), "port": port,
                       "path": visible_file.to_string_lossy() });
    let report = probe(&mesh, &toolset, "probe-net", args).await?;
    assert_eq!(report["net"], "connected", "{}", report["net"]);
    assert_eq!(report["target_environ"]["ok"], false);
    assert_eq!(report["file"]["text"], "visible", "{}", report["file"]);

    accept.abort();
    let _ = std::fs::remove_dir_all(&hidden);
    let _ = std::fs::remove_file(&visible_file);
    mesh.stop().await
}

#[tokio::test]
async fn the_operators_opt_out_runs_unsandboxed_with_the_environment_rules() -> R {
    let mesh = Mesh::builder()
        .tools_settings(settings(SandboxSettings {
            mode: SandboxMode::Off,
            ..SandboxSettings::default()
        }))
        .start()
        .await?;
    let js = probe_js();
    // The network is the operator's to allow.
    let body = json!({ "kind": "mcp_stdio", "name": "probe-net",
                       "config": { "command": "node", "args": [js], "network": true } });
    let (status, problem) = mesh.post_json("/v1/me/integrations", &body).await?;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("PA_MCP_NETWORK_ALLOWED"),
        "{problem}"
    );
    let (status, problem) = mesh
        .post_json(
            "/v1/me/integrations",
            &json!({ "kind": "mcp_stdio", "name": "bad", "config": { "command": "node", "args": [js] },
                     "secrets": { "env:LD_PRELOAD": "/tmp/evil.so" } }),
        )
        .await?;
    assert_eq!(status, 400, "{problem}");

    let id = create(
        &mesh,
        json!({ "kind": "mcp_stdio", "name": "probe",
                "config": { "command": "node", "args": [js] },
                "secrets": { "env:PROBE_TOKEN": "tok-123" } }),
    )
    .await?;
    let toolset = toolset(&mesh, "sandbox-off", &[&id]).await?;
    let report = probe(
        &mesh,
        &toolset,
        "probe",
        // (No scan of every process: unsandboxed, that is more text than a tool result holds.)
        json!({ "pid": std::process::id(), "scan": false }),
    )
    .await?;
    // Unsandboxed, the probe does reach this process's environment: what the sandboxed test
    // asserts absent is findable by the probe.
    assert_eq!(
        report["target_environ"]["ok"], true,
        "{}",
        report["target_environ"]
    );
    let text = report["target_environ"]["text"]
        .as_str()
        .unwrap_or_default();
    let mine = own_environ();
    assert!(
        mine.iter().any(|e| text.contains(e.as_str())),
        "the unsandboxed probe did not see this process's environment"
    );
    // The environment rules hold all the same.
    let names = env_names(&report);
    assert!(names.contains("PROBE_TOKEN"), "{names:?}");
    assert!(
        names.iter().all(|n| [
            "HOME",
            "LANG",
            "PATH",
            "TERM",
            "TMPDIR",
            "TZ",
            "PWD",
            "PROBE_TOKEN"
        ]
        .contains(&n.as_str())),
        "{names:?}"
    );
    mesh.stop().await
}

#[tokio::test]
async fn without_a_working_sandbox_stdio_servers_are_refused_with_the_reason() -> R {
    let mesh = Mesh::builder()
        .tools_settings(settings(SandboxSettings {
            bwrap: PathBuf::from("/nonexistent/bwrap"),
            ..SandboxSettings::default()
        }))
        .start()
        .await?;
    let body = json!({ "kind": "mcp_stdio", "name": "probe",
                       "config": { "command": "node", "args": [probe_js()] } });
    let (status, problem) = mesh.post_json("/v1/me/integrations", &body).await?;
    assert_eq!(status, 409, "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("/nonexistent/bwrap") && detail.contains("PA_MCP_SANDBOX=off"),
        "{detail}"
    );
    // Other integrations are unaffected.
    create(
        &mesh,
        json!({ "kind": "mcp_http", "name": "remote", "config": { "url": "https://mcp.example.com/mcp" } }),
    )
    .await?;
    mesh.stop().await
}
