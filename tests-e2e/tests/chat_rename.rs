//! Renaming a chat, end to end: `PATCH /v1/chats/{id}` through the gateway to svc-runs.

use serde_json::{Value, json};
use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn patch(
    mesh: &Mesh,
    path: &str,
    body: &Value,
    user: Option<&str>,
) -> Result<(u16, Option<String>, Value), Box<dyn std::error::Error + Send + Sync>> {
    let mut request = mesh.http.patch(mesh.url(path)).json(body);
    if let Some(user) = user {
        request = request.header("x-pa-dev-user", user);
    }
    let r = request.send().await?;
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = r.text().await?;
    Ok((
        status,
        content_type,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    ))
}

#[tokio::test]
async fn a_chat_is_renamed_and_bad_titles_or_foreign_chats_are_refused() -> R {
    let mesh = Mesh::builder().start().await?;
    let chat_id = mesh.create_chat("old title").await?;
    let path = format!("/v1/chats/{chat_id}");
    let (_, before) = mesh.get_json(&path).await?;

    let (status, _, renamed) =
        patch(&mesh, &path, &json!({"title": "  New title  "}), None).await?;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["title"], "New title", "the title is trimmed");
    assert_eq!(renamed["id"], json!(chat_id));
    assert!(
        renamed["updated_at"].as_str() > before["updated_at"].as_str(),
        "updated_at moves: {before} → {renamed}"
    );

    let (status, got) = mesh.get_json(&path).await?;
    assert_eq!(status, 200);
    assert_eq!(got["title"], "New title");
    let (_, list) = mesh.get_json("/v1/chats").await?;
    let listed: Vec<&Value> = list["items"]
        .as_array()
        .map(|items| items.iter().filter(|c| c["id"] == json!(chat_id)).collect())
        .unwrap_or_default();
    assert_eq!(listed.len(), 1, "{list}");
    assert_eq!(listed[0]["title"], "New title");

    // Bad titles: a 400 problem, and the title stays.
    for body in [
        json!({"title": "   "}),
        json!({"title": ""}),
        json!({"title": "x".repeat(201)}),
        json!({}),
        json!({"title": 5}),
    ] {
        let (status, content_type, problem) = patch(&mesh, &path, &body, None).await?;
        assert_eq!(status, 400, "{body}: {problem}");
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{body}"
        );
        assert_eq!(problem["code"], "bad_request", "{body}: {problem}");
    }
    // The longest allowed title is fine (counted in characters, not bytes).
    let longest = "é".repeat(200);
    let (status, _, renamed) = patch(&mesh, &path, &json!({"title": longest}), None).await?;
    assert_eq!(status, 200, "{renamed}");

    // Someone else's chat, an unknown chat and a deleted chat are all "not found".
    let (status, _, problem) =
        patch(&mesh, &path, &json!({"title": "hijacked"}), Some("mallory")).await?;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem["code"], "not_found");
    let (_, got) = mesh.get_json(&path).await?;
    assert_eq!(got["title"], json!(longest), "another user changed nothing");

    let (status, _, _) = patch(
        &mesh,
        "/v1/chats/no-such-chat",
        &json!({"title": "x"}),
        None,
    )
    .await?;
    assert_eq!(status, 404);

    let r = mesh.http.delete(mesh.url(&path)).send().await?;
    assert_eq!(r.status(), 204);
    let (status, _, problem) = patch(&mesh, &path, &json!({"title": "again"}), None).await?;
    assert_eq!(status, 404, "a deleted chat cannot be renamed: {problem}");

    mesh.stop().await?;
    Ok(())
}
