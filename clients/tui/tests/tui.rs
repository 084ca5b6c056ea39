//! The built pa-tui binary against the in-process mesh (dev auth: no token needed) and, for
//! login, against the stack's dev IdP.

use std::process::Output;
use std::time::Duration;

use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn pa_tui(args: &[&str], envs: &[(&str, &str)]) -> Result<Output, std::io::Error> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pa-tui"));
    command
        .args(args)
        .env_remove("PA_TOKEN")
        .env_remove("PA_URL")
        .env_remove("PA_CLIENT_SECRET")
        // Never the developer's real token file.
        .env("PA_TOKEN_FILE", "/nonexistent/pa-tui-test/token.json")
        .kill_on_drop(true);
    for (k, v) in envs {
        command.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .map_err(|_| std::io::Error::other("pa-tui did not finish in 60 s"))?
}

#[tokio::test]
async fn once_prints_the_streamed_reply_and_exits_0() -> R {
    let mesh = Mesh::builder().start().await?;
    let out = pa_tui(&["--once", "hello there", "--url", &mesh.gateway_url], &[]).await?;
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8(out.stderr)?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    // The offline model echoes the question.
    assert!(stdout.contains("hello there"), "{stdout}");

    // The run happened in a chat of its own, which now holds both turns; --chat continues it.
    let (status, chats) = mesh.get_json("/v1/chats").await?;
    assert_eq!(status, 200);
    let items = chats["items"].as_array().ok_or("no items")?;
    assert_eq!(items.len(), 1, "{chats}");
    let chat_id = items[0]["id"].as_str().ok_or("no id")?.to_string();
    let out = pa_tui(
        &["--once", "second question", "--chat", &chat_id],
        &[("PA_URL", &mesh.gateway_url)],
    )
    .await?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8(out.stdout)?.contains("second question"));
    let (_, messages) = mesh
        .get_json(&format!("/v1/chats/{chat_id}/messages"))
        .await?;
    let contents: Vec<&str> = messages["items"]
        .as_array()
        .ok_or("no items")?
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(contents, ["hello there", "second question"], "{messages}");
    mesh.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_failed_run_exits_non_zero_with_the_error_on_stderr() -> R {
    let mesh = Mesh::builder().start().await?;
    let out = pa_tui(
        &[
            "--once",
            "hi",
            "--model",
            "nonexistent:model",
            "--url",
            &mesh.gateway_url,
        ],
        &[],
    )
    .await?;
    let stderr = String::from_utf8(out.stderr)?;
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("nonexistent:model"), "{stderr}");
    assert!(!String::from_utf8(out.stdout)?.contains("hi"));

    // An unknown chat: the gateway's 404 is reported, not a panic.
    let out = pa_tui(
        &[
            "--once",
            "hi",
            "--chat",
            "00000000-0000-0000-0000-000000000000",
            "--url",
            &mesh.gateway_url,
        ],
        &[],
    )
    .await?;
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr)?;
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("pa-tui:"), "{stderr}");
    mesh.stop().await?;

    // Nothing listens: a clear message and exit code 1.
    let out = pa_tui(&["--once", "hi", "--url", "http://127.0.0.1:9"], &[]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)?.contains("cannot reach the gateway"));
    Ok(())
}

/// A run that ends in RUN_ERROR mid-stream (cancelled from outside): the partial text is on
/// stdout, the error on stderr, exit code 2.
#[tokio::test]
async fn a_run_error_mid_stream_exits_2() -> R {
    let mesh = Mesh::builder()
        .offline_token_delay(Duration::from_millis(40))
        .start()
        .await?;
    // Long (~40 s of tokens), so the cancel lands mid-stream even on a loaded machine.
    let message = (0..1000)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let url = mesh.gateway_url.clone();
    let child =
        tokio::spawn(async move { pa_tui(&["--once", &message, "--url", &url], &[]).await });
    // Find the run through the chat pa-tui created, then cancel it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let run_id = loop {
        assert!(tokio::time::Instant::now() < deadline, "no run appeared");
        let (_, chats) = mesh.get_json("/v1/chats").await?;
        if let Some(chat) = chats["items"].as_array().and_then(|c| c.first()) {
            let (_, messages) = mesh
                .get_json(&format!(
                    "/v1/chats/{}/messages",
                    chat["id"].as_str().unwrap_or("")
                ))
                .await?;
            if let Some(run) = messages["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|m| m["run_id"].as_str())
            {
                break run.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Wait until "w0" has streamed (the run may first recall memories); w999 is ~40 s later.
    let mut last: Option<String> = None;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "w0 never streamed");
        let next = mesh.read_events(&run_id, last.as_deref(), Some(1)).await?;
        let Some(event) = next.into_iter().next() else {
            continue;
        };
        last = event.id.clone();
        if event.event_type() == "TEXT_MESSAGE_CONTENT"
            && event.data["delta"]
                .as_str()
                .is_some_and(|d| d.contains("w0"))
        {
            break;
        }
    }
    // pa-tui prints w0 whenever it reads it: the stream keeps it ahead of the RUN_ERROR.
    let (status, run) = mesh
        .post_json(&format!("/v1/runs/{run_id}/cancel"), &serde_json::json!({}))
        .await?;
    assert_eq!(status, 200, "{run}");
    let out = child.await??;
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8(out.stderr)?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stderr.contains("cancelled"), "{stderr}");
    assert!(
        stdout.contains("w0") && !stdout.contains("w999"),
        "partial text: {stdout}"
    );
    mesh.stop().await?;
    Ok(())
}

/// The stack's dev IdP (127.0.0.1:8090, `scripts/stack.sh up`): the password grant stores a
/// token file readable by its owner only, and the gateway accepts that token.
#[tokio::test]
async fn login_with_the_dev_idp_stores_a_0600_token_that_the_gateway_accepts() -> R {
    use std::os::unix::fs::PermissionsExt;
    let issuer =
        std::env::var("PA_DEV_IDP_ISSUER").unwrap_or_else(|_| "http://127.0.0.1:8090".into());
    let config = svc_gateway_oidc(&issuer)?;
    let mesh = Mesh::builder().oidc(config).start().await?;
    let dir = std::env::temp_dir().join(format!("pa-tui-{}", std::process::id()));
    let token_file = dir.join("personal-agent").join("token.json");
    let _ = std::fs::remove_dir_all(&dir);
    let token_env = token_file.to_string_lossy().to_string();

    let out = pa_tui(
        &[
            "login",
            "--url",
            &mesh.gateway_url,
            "--client-secret",
            "pa-cli-secret",
            "--user",
            "bob",
            "--password",
            "bob-password",
        ],
        &[("PA_TOKEN_FILE", &token_env)],
    )
    .await?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mode = std::fs::metadata(&token_file)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&token_file)?)?;
    assert_eq!(stored["issuer"], issuer.as_str());

    // Without the token the OIDC gateway refuses; with the stored one the run streams.
    let out = pa_tui(&["--once", "no token", "--url", &mesh.gateway_url], &[]).await?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = pa_tui(
        &["--once", "logged in question", "--url", &mesh.gateway_url],
        &[("PA_TOKEN_FILE", &token_env)],
    )
    .await?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8(out.stdout)?.contains("logged in question"));

    // A wrong password: no token is written.
    std::fs::remove_file(&token_file)?;
    let out = pa_tui(
        &[
            "login",
            "--url",
            &mesh.gateway_url,
            "--client-secret",
            "pa-cli-secret",
            "--user",
            "bob",
            "--password",
            "wrong",
        ],
        &[("PA_TOKEN_FILE", &token_env)],
    )
    .await?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!token_file.exists());
    mesh.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn svc_gateway_oidc(
    issuer: &str,
) -> Result<svc_gateway::oidc::OidcConfig, Box<dyn std::error::Error + Send + Sync>> {
    Ok(svc_gateway::oidc::OidcConfig {
        issuer: issuer.into(),
        audience: "pa-api".into(),
        client_id: "pa-web".into(),
        tenant_claim: "tenant".into(),
        roles_claim: "roles".into(),
        platform_admin_role: "platform-admin".into(),
        algorithms: svc_gateway::oidc::parse_algorithms("RS256").map_err(|e| e.to_string())?,
        leeway_secs: 30,
        jwks_min_refetch: Duration::from_secs(10),
        jwks_max_age: Duration::from_secs(600),
    })
}
