//! The integrator example (clients/grpc-example) against the in-process mesh: it creates a chat
//! and a run over the public gRPC API with an API key and prints the streamed text.

use serde_json::json;
use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test]
async fn the_grpc_example_streams_a_run_with_an_api_key() -> R {
    let mesh = Mesh::builder().start().await?;
    let (status, created) = mesh
        .post_json(
            "/v1/me/api-keys",
            &json!({"name": "example", "scopes": ["chats", "runs"]}),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().ok_or("no key")?.to_string();

    let mut printed = Vec::new();
    let outcome = pa_grpc_example::chat_once(
        &mesh.public_grpc_url,
        &key,
        "hello from the example",
        "auto",
        &mut printed,
    )
    .await?;
    assert_eq!(outcome.last_event, "RUN_FINISHED");
    assert!(
        outcome.text.contains("hello from the example"),
        "{}",
        outcome.text
    );
    // What it printed is what streamed, and the run is persisted under the key's user.
    assert_eq!(
        String::from_utf8(printed)?.trim_end(),
        outcome.text.trim_end()
    );
    let (status, run) = mesh
        .get_json(&format!("/v1/runs/{}", outcome.run_id))
        .await?;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["chat_id"], json!(outcome.chat_id));
    assert_eq!(run["status"], json!("succeeded"));

    // A wrong token: the example surfaces the gRPC status with its stable code.
    let err = pa_grpc_example::chat_once(
        &mesh.public_grpc_url,
        "pa_not_a_real_key_at_all",
        "hi",
        "auto",
        &mut Vec::new(),
    )
    .await
    .err()
    .ok_or("a fake key was accepted")?;
    let status = err
        .downcast_ref::<tonic::Status>()
        .ok_or("not a gRPC status")?;
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    mesh.stop().await
}
