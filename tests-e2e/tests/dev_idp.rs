//! A user logs in with the real dev OpenID Provider (deploy/dev-idp, npm oidc-provider) and uses
//! the API with the access token it issued.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tests_e2e::Mesh;
use tokio::io::{AsyncBufReadExt, BufReader};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn token(
    http: &reqwest::Client,
    issuer: &str,
    user: &str,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let body = format!("grant_type=password&username={user}&password={user}-password&scope=openid");
    let r = http
        .post(format!("{issuer}/token"))
        .basic_auth("pa-cli", Some("pa-cli-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    let status = r.status();
    let answer: Value = r.json().await?;
    let token = answer["access_token"]
        .as_str()
        .ok_or_else(|| format!("{status}: {answer}"))?;
    Ok(token.to_string())
}

#[tokio::test]
async fn users_of_the_dev_idp_log_in_and_use_the_api() -> R {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev-idp");
    assert!(
        dir.join("node_modules/oidc-provider").exists(),
        "deploy/dev-idp has no node_modules: run `make test` (it installs them)"
    );
    let mut idp = tokio::process::Command::new("node")
        .arg("server.mjs")
        .current_dir(&dir)
        .env("PA_IDP_PORT", "0")
        .env("PA_IDP_JWKS_FILE", "memory")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = idp.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let issuer = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("dev IdP listening")
                && let Some(issuer) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("issuer="))
            {
                return Ok::<_, std::io::Error>(issuer.to_string());
            }
        }
        Err(std::io::Error::other("the IdP exited"))
    })
    .await??;
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let config = svc_gateway::oidc::OidcConfig {
        issuer: issuer.clone(),
        audience: "pa-api".into(),
        client_id: "pa-web".into(),
        tenant_claim: "tenant".into(),
        roles_claim: "roles".into(),
        platform_admin_role: "platform-admin".into(),
        algorithms: svc_gateway::oidc::parse_algorithms("RS256").map_err(|e| e.to_string())?,
        leeway_secs: 30,
        jwks_min_refetch: Duration::from_secs(10),
        jwks_max_age: Duration::from_secs(600),
    };
    let mesh = Mesh::builder().oidc(config).start().await?;
    let alice = token(&mesh.http, &issuer, "alice").await?;
    let bob = token(&mesh.http, &issuer, "bob").await?;
    let carol = token(&mesh.http, &issuer, "carol").await?;
    let with =
        |t: &str, req: reqwest::RequestBuilder| req.header("authorization", format!("Bearer {t}"));

    let r = with(&alice, mesh.http.post(mesh.url("/v1/chats")))
        .json(&json!({"title": "from the IdP"}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let chat: Value = r.json().await?;
    let chat_id = chat["id"].as_str().unwrap_or_default().to_string();
    let r = with(
        &alice,
        mesh.http
            .post(mesh.url(&format!("/v1/chats/{chat_id}/runs"))),
    )
    .json(&json!({"message": "hello"}))
    .send()
    .await?;
    assert_eq!(r.status(), 202);
    let run: Value = r.json().await?;
    let events = with(
        &alice,
        mesh.http.get(mesh.url(&format!(
            "/v1/runs/{}/events",
            run["run_id"].as_str().unwrap_or("")
        ))),
    )
    .send()
    .await?;
    let events = tests_e2e::read_sse(events, None).await?;
    assert_eq!(
        events.last().map(|e| e.event_type().to_string()).as_deref(),
        Some("RUN_FINISHED")
    );

    // alice is an admin of acme; bob is not; carol (globex) cannot see acme's chats.
    assert_eq!(
        with(&alice, mesh.http.get(mesh.url("/v1/admin/models")))
            .send()
            .await?
            .status(),
        200
    );
    assert_eq!(
        with(&bob, mesh.http.get(mesh.url("/v1/admin/models")))
            .send()
            .await?
            .status(),
        403
    );
    assert_eq!(
        with(
            &bob,
            mesh.http.get(mesh.url(&format!("/v1/chats/{chat_id}")))
        )
        .send()
        .await?
        .status(),
        404
    );
    assert_eq!(
        with(
            &carol,
            mesh.http.get(mesh.url(&format!("/v1/chats/{chat_id}")))
        )
        .send()
        .await?
        .status(),
        404
    );
    mesh.stop().await?;
    idp.kill().await?;
    Ok(())
}

/// The IdP's own suite (grants, PKCE, device flow, refusals): deploy/dev-idp/test.mjs.
#[tokio::test]
async fn the_dev_idp_passes_its_own_protocol_tests() -> R {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev-idp");
    let output = tokio::process::Command::new("node")
        .arg("--test")
        .current_dir(&dir)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node --test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("# fail 0") && !stdout.contains("# pass 0"),
        "{stdout}"
    );
    Ok(())
}
