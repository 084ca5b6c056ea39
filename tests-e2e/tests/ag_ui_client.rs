//! The unmodified npm `@ag-ui/client` HttpAgent chats with POST /v1/ag-ui (tests/agui/).

use std::path::PathBuf;

use tests_e2e::Mesh;

#[tokio::test]
async fn the_real_ag_ui_client_chats_with_the_gateway()
-> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/agui");
    assert!(
        dir.join("node_modules/@ag-ui/client").exists(),
        "tests/agui has no node_modules: run `make test` (it installs them) or `npm ci` there"
    );
    let mesh = Mesh::builder().start().await?;
    let output = tokio::process::Command::new("node")
        .arg("--test")
        .current_dir(&dir)
        .env("PA_GATEWAY_URL", &mesh.gateway_url)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node --test failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("# pass 3"),
        "all three AG-UI client tests ran:\n{stdout}"
    );
    mesh.stop().await
}

/// A thread's first run creates its chat; later turns start in it directly (one call to
/// svc-runs). Another user naming the thread neither runs in that chat nor changes it.
#[tokio::test]
async fn an_ag_ui_thread_is_a_chat_of_its_callers_only()
-> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use serde_json::{Value, json};
    use tests_e2e::SseEvent;
    let mesh = Mesh::builder().start().await?;
    let thread = format!("thread-{}", uuid::Uuid::new_v4());
    let post = |user: &'static str, text: &str| {
        let input = json!({
            "threadId": thread,
            "messages": [{ "id": "m", "role": "user", "content": text }],
        });
        mesh.http
            .post(mesh.url("/v1/ag-ui"))
            .header("x-pa-dev-user", user)
            .json(&input)
            .send()
    };
    let messages = |user: &'static str| {
        mesh.http
            .get(mesh.url(&format!("/v1/chats/{thread}/messages")))
            .header("x-pa-dev-user", user)
            .send()
    };
    for (turn, text) in ["first turn", "second turn"].into_iter().enumerate() {
        let r = post("alice", text).await?;
        assert_eq!(r.status(), 200, "turn {turn}");
        let events = tests_e2e::read_sse(r, None).await?;
        assert_eq!(
            events.last().map(SseEvent::event_type),
            Some("RUN_FINISHED"),
            "turn {turn}"
        );
    }
    let r = messages("alice").await?;
    assert_eq!(r.status(), 200);
    let before: Value = r.json().await?;
    let count = |page: &Value| page["items"].as_array().map_or(0, Vec::len);
    assert_eq!(count(&before), 4, "two turns in one chat: {before}");
    // Bob names Alice's thread.
    let r = post("bob", "let me in").await?;
    let status = r.status().as_u16();
    assert!(
        status == 404 || status == 409,
        "another user's thread: {status} {}",
        r.text().await?
    );
    let r = messages("bob").await?;
    assert_eq!(r.status(), 404, "not bob's chat");
    let after: Value = messages("alice").await?.json().await?;
    assert_eq!(count(&after), 4, "alice's chat is unchanged: {after}");
    mesh.stop().await
}
