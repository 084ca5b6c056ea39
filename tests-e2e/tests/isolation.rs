//! Isolation sweep: every endpoint that takes an id, called by another tenant's user (and by
//! another user of the same tenant) with tenant A's ids → 404, and nothing changes.

use serde_json::{Value, json};
use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test]
async fn no_endpoint_leaks_or_changes_another_users_data() -> R {
    let mesh = Mesh::builder().start().await?;
    // Tenant A's data: a chat with a finished run, an API key.
    let chat = mesh.create_chat("A's chat").await?;
    let run = mesh.start_run(&chat, "A's secret message").await?;
    mesh.read_events(&run, None, None).await?;
    let (_, key) = mesh
        .post_json("/v1/me/api-keys", &json!({"name": "A's key"}))
        .await?;
    let key_id = key["id"].as_str().unwrap_or_default().to_string();

    let sweep: Vec<(reqwest::Method, String, Option<Value>)> = vec![
        (reqwest::Method::GET, format!("/v1/chats/{chat}"), None),
        (
            reqwest::Method::GET,
            format!("/v1/chats/{chat}/messages"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("/v1/chats/{chat}/runs"),
            Some(json!({"message": "hijack"})),
        ),
        (reqwest::Method::GET, format!("/v1/runs/{run}"), None),
        (reqwest::Method::GET, format!("/v1/runs/{run}/events"), None),
        (
            reqwest::Method::POST,
            format!("/v1/runs/{run}/cancel"),
            None,
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/me/api-keys/{key_id}"),
            None,
        ),
        (reqwest::Method::DELETE, format!("/v1/chats/{chat}"), None),
    ];
    for (tenant, user) in [("tenant-b", "dev-user"), ("dev", "mallory")] {
        for (method, path, body) in &sweep {
            let mut request = mesh
                .http
                .request(method.clone(), mesh.url(path))
                .header("x-pa-dev-tenant", tenant)
                .header("x-pa-dev-user", user);
            if let Some(body) = body {
                request = request.json(body);
            }
            let r = request.send().await?;
            assert_eq!(r.status(), 404, "{tenant}/{user} {method} {path}");
            let text = r.text().await?;
            assert!(!text.contains("secret message"), "{path} leaked: {text}");
        }
        for path in [
            "/v1/chats",
            "/v1/me/api-keys",
            "/v1/me/keys",
            "/v1/me/usage",
        ] {
            let r = mesh
                .http
                .get(mesh.url(path))
                .header("x-pa-dev-tenant", tenant)
                .header("x-pa-dev-user", user)
                .send()
                .await?;
            assert_eq!(r.status(), 200, "{path}");
            let body: Value = r.json().await?;
            assert_eq!(body["items"], json!([]), "{tenant}/{user} {path}: {body}");
        }
    }
    // Nothing changed for A.
    let (status, messages) = mesh.get_json(&format!("/v1/chats/{chat}/messages")).await?;
    assert_eq!(status, 200);
    assert_eq!(messages["items"].as_array().map(Vec::len), Some(2));
    let (_, keys) = mesh.get_json("/v1/me/api-keys").await?;
    assert!(keys["items"][0]["revoked_at"].is_null());
    mesh.stop().await
}
