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

/// Fifty runs started at once by one user cannot together spend more than the daily budget:
/// each holds its share before it starts (ADR 0131), so the budget is never promised twice.
#[tokio::test]
async fn fifty_parallel_runs_cannot_overspend_the_daily_budget() -> R {
    let budget = 60;
    let mesh = Mesh::builder()
        .daily_token_budget(budget)
        // Slow enough that all fifty starts arrive while the first run holds its share.
        .offline_token_delay(std::time::Duration::from_millis(100))
        .start()
        .await?;
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
    // Each run alone fits the budget (the offline model counts words: ~25 tokens a run).
    let message = "one two three four five six seven eight nine ten eleven twelve";
    let starts = futures::future::join_all((0..50).map(|_| {
        post(
            format!("/v1/chats/{chat_id}/runs"),
            json!({ "message": message }),
        )
    }))
    .await;
    let mut started = Vec::new();
    for r in starts {
        let r = r?;
        match r.status().as_u16() {
            202 => started.push(
                r.json::<Value>().await?["run_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            ),
            429 => {}
            other => return Err(format!("unexpected {other}: {}", r.text().await?).into()),
        }
    }
    assert!(!started.is_empty(), "the budget admits at least one run");
    let mut spent = 0;
    for run_id in &started {
        let events = mesh
            .http
            .get(mesh.url(&format!("/v1/runs/{run_id}/events")))
            .header("x-pa-dev-user", &user)
            .header("x-pa-dev-tenant", &tenant)
            .send()
            .await?;
        tests_e2e::read_sse(events, None).await?;
        let run: Value = mesh
            .http
            .get(mesh.url(&format!("/v1/runs/{run_id}")))
            .header("x-pa-dev-user", &user)
            .header("x-pa-dev-tenant", &tenant)
            .send()
            .await?
            .json()
            .await?;
        spent += run["usage"]["total_tokens"].as_u64().unwrap_or(0);
    }
    assert!(
        spent <= budget,
        "{} runs spent {spent} tokens of a {budget}-token budget",
        started.len()
    );
    mesh.stop().await
}

/// A run that is refused after it took its share (its id is someone else's, in another tenant)
/// gives the share back: the budget is not eaten by runs that never started.
#[tokio::test]
async fn a_run_that_never_starts_gives_its_share_of_the_budget_back() -> R {
    let budget = 60;
    let mesh = Mesh::builder().daily_token_budget(budget).start().await?;
    let taken = unique("run");
    let as_user = |user: &str, tenant: &str, path: String, body: Value| {
        mesh.http
            .post(mesh.url(&path))
            .header("x-pa-dev-user", user)
            .header("x-pa-dev-tenant", tenant)
            .json(&body)
            .send()
    };
    // Someone in another tenant holds the run id.
    let (owner, owner_tenant) = (unique("owner"), unique("t"));
    let chat: Value = as_user(&owner, &owner_tenant, "/v1/chats".into(), json!({}))
        .await?
        .json()
        .await?;
    let r = as_user(
        &owner,
        &owner_tenant,
        format!("/v1/chats/{}/runs", chat["id"].as_str().unwrap_or("")),
        json!({ "message": "mine", "run_id": taken }),
    )
    .await?;
    assert_eq!(r.status(), 202);

    let (user, tenant) = (unique("u"), unique("t"));
    let chat: Value = as_user(&user, &tenant, "/v1/chats".into(), json!({}))
        .await?
        .json()
        .await?;
    let runs = format!("/v1/chats/{}/runs", chat["id"].as_str().unwrap_or(""));
    // Each refused attempt first holds the whole budget (no per-run limit here).
    for _ in 0..3 {
        let r = as_user(
            &user,
            &tenant,
            runs.clone(),
            json!({ "message": "x", "run_id": taken }),
        )
        .await?;
        assert_eq!(r.status(), 409, "{}", r.text().await?);
        // Given back (on a task) before long: the next run starts.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let r = as_user(&user, &tenant, runs.clone(), json!({ "message": "probe" })).await?;
            match r.status().as_u16() {
                202 => {
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
                    break;
                }
                429 if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => return Err(format!("the share was not given back: {other}").into()),
            }
        }
    }
    mesh.stop().await
}
