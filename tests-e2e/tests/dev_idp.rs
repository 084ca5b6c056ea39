//! A user logs in with the real dev OpenID Provider (deploy/dev-idp, npm oidc-provider) and uses
//! the API with the access token it issued.

use std::path::PathBuf;

use serde_json::{Value, json};
use tests_e2e::{DevIdp, Mesh};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test]
async fn users_of_the_dev_idp_log_in_and_use_the_api() -> R {
    let idp = DevIdp::start().await?;
    let mesh = Mesh::builder().oidc(idp.oidc_config()?).start().await?;
    let alice = idp.token(&mesh.http, "alice").await?;
    let bob = idp.token(&mesh.http, "bob").await?;
    let carol = idp.token(&mesh.http, "carol").await?;
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
    drop(idp); // killed on drop
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
