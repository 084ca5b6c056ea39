//! Rate limits and daily token budgets, kept in Redis.

use serde_json::{Value, json};
use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn the_request_after_the_limit_gets_429_with_retry_after() -> R {
    let mesh = Mesh::builder().rate_limits(5, 1000).start().await?;
    // A fresh user and tenant: the counters are in the shared Redis.
    let (user, tenant) = (unique("u"), unique("t"));
    let get = || {
        mesh.http
            .get(mesh.url("/v1/chats"))
            .header("x-pa-dev-user", &user)
            .header("x-pa-dev-tenant", &tenant)
            .send()
    };
    for i in 0..5 {
        assert_eq!(get().await?.status(), 200, "request {i}");
    }
    let r = get().await?;
    assert_eq!(r.status(), 429);
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or("no Retry-After")?;
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = r.json().await?;
    assert_eq!(body["code"], "too_many_requests");
    // Another user is not affected.
    let r = mesh
        .http
        .get(mesh.url("/v1/chats"))
        .header("x-pa-dev-user", unique("other"))
        .header("x-pa-dev-tenant", &tenant)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    mesh.stop().await
}

#[tokio::test]
async fn a_used_up_daily_token_budget_refuses_the_next_run_before_it_starts() -> R {
    let mesh = Mesh::builder().daily_token_budget(10).start().await?;
    let (user, tenant) = (unique("u"), unique("t"));
    let post = |path: String, body: Value| {
        mesh.http
            .post(mesh.url(&path))
            .header("x-pa-dev-user", &user)
            .header("x-pa-dev-tenant", &tenant)
            .json(&body)
            .send()
    };
    let chat: Value = post("/v1/chats".into(), json!({"title": "budget"}))
        .await?
        .json()
        .await?;
    let chat_id = chat["id"].as_str().unwrap_or_default().to_string();
    // The offline model counts words: this run alone spends more than 10 tokens.
    let r = post(
        format!("/v1/chats/{chat_id}/runs"),
        json!({"message": "one two three four five six seven eight"}),
    )
    .await?;
    assert_eq!(r.status(), 202);
    let run: Value = r.json().await?;
    let events = mesh
        .http
        .get(mesh.url(&format!(
            "/v1/runs/{}/events",
            run["run_id"].as_str().unwrap_or("")
        )))
        .header("x-pa-dev-user", &user)
        .header("x-pa-dev-tenant", &tenant)
        .send()
        .await?;
    tests_e2e::read_sse(events, None).await?;
    let r = post(
        format!("/v1/chats/{chat_id}/runs"),
        json!({"message": "again"}),
    )
    .await?;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await?;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("daily token budget"),
        "{body}"
    );
    mesh.stop().await
}
