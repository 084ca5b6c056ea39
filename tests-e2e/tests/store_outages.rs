//! Store outages (docs/src/adr/0170-2026-12-03-store-outages.md): while Postgres or Redis is down the mesh says
//! not ready and answers 503 `unavailable`; once it is back, not one request fails. Each test
//! owns the store it kills (tests_e2e::OwnPostgres / OwnRedis / OwnTemporal): the shared dev
//! stack is never touched.

use std::time::Duration;

use pa_proto::v1::run_service_client::RunServiceClient;
use pa_proto::v1::tool_service_client::ToolServiceClient;
use pa_proto::v1::{
    CreateIntegrationRequest, ListChatsRequest, ListIntegrationsRequest, UpdateIntegrationRequest,
};
use serde_json::{Value, json};
use sqlx::Connection;
use tests_e2e::{Mesh, OwnPostgres, OwnRedis, OwnTemporal};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The helpers themselves: data written before a kill -9 is there after the restart, on the
/// same port; the killed server does not answer in between.
#[tokio::test]
async fn own_stores_survive_kill_and_restart_with_their_data() -> R {
    let mut pg = OwnPostgres::start().await?;
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await?;
    sqlx::raw_sql("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")
        .execute(&mut conn)
        .await?;
    let port = pg.port();
    let pid = pg.pid().ok_or("no postmaster")?;
    pg.kill()?;
    assert!(pg.pid().is_none());
    assert!(!pg.is_up().await, "answers after kill -9");
    assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err());
    pg.restart().await?;
    assert_eq!(pg.port(), port);
    assert_ne!(pg.pid(), Some(pid));
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await?;
    let v: String = sqlx::query_scalar("SELECT v FROM t")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(v, "kept");
    // pgvector is there for the migrations (template1 has it).
    sqlx::query("CREATE DATABASE other")
        .execute(&mut conn)
        .await?;
    let other = pg.url().replace("/personal_agent", "/other");
    let mut other = sqlx::PgConnection::connect(&other).await?;
    sqlx::query("SELECT '[1,2]'::vector")
        .execute(&mut other)
        .await?;

    let mut redis = OwnRedis::start().await?;
    let client = deadpool_redis::redis::Client::open(redis.url())?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let _: () = deadpool_redis::redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut c)
        .await?;
    redis.kill()?;
    assert!(!redis.is_up().await);
    redis.restart().await?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let v: String = deadpool_redis::redis::cmd("GET")
        .arg("k")
        .query_async(&mut c)
        .await?;
    assert_eq!(v, "v");

    let mut temporal = OwnTemporal::start().await?;
    temporal.kill()?;
    assert!(!temporal.is_up().await);
    temporal.restart().await?;
    assert!(temporal.is_up().await);
    Ok(())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One request of the mixed workload: method, path, body.
fn workload(i: usize, chat: &str) -> (reqwest::Method, String, Option<Value>) {
    use reqwest::Method as M;
    match i % 7 {
        0 => (
            M::POST,
            "/v1/chats".into(),
            Some(json!({ "title": format!("c{i}") })),
        ),
        1 => (M::GET, "/v1/chats".into(), None),
        2 => (M::GET, format!("/v1/chats/{chat}"), None),
        3 => (M::GET, format!("/v1/chats/{chat}/messages"), None),
        4 => (
            M::POST,
            "/v1/me/memories".into(),
            Some(json!({ "text": format!("fact {i}") })),
        ),
        5 => (M::GET, "/v1/me/memories?limit=5".into(), None),
        _ => (M::GET, "/v1/models".into(), None),
    }
}

/// Sends one request; returns (status, content type, body).
async fn send(
    mesh: &Mesh,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String, Value), BoxError> {
    let mut request = mesh.http.request(method, mesh.url(path));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = tokio::time::timeout(Duration::from_secs(20), request.send()).await??;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = response.text().await?;
    Ok((
        status,
        content_type,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    ))
}

/// `n` consecutive requests of the mixed workload; returns the ones that failed.
async fn run_workload(mesh: &Mesh, chat: &str, n: usize) -> Result<Vec<String>, BoxError> {
    let mut failed = Vec::new();
    for i in 0..n {
        let (method, path, body) = workload(i, chat);
        let (status, _, answer) = send(mesh, method.clone(), &path, body.as_ref()).await?;
        if !(200..300).contains(&status) {
            failed.push(format!("{method} {path}: {status} {answer}"));
        }
    }
    Ok(failed)
}

/// Polls /readyz until it answers `want` with `store` (postgres, redis) said `store_is`
/// (deadline 30 s); returns its body.
async fn readyz_becomes(
    mesh: &Mesh,
    want: u16,
    store: &str,
    store_is: &str,
) -> Result<Value, BoxError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = send(mesh, reqwest::Method::GET, "/readyz", None).await?;
        if status == want && body["stores"][store] == store_is {
            return Ok(body);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("/readyz stayed {status} (want {want}): {body}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts a 503 problem+json `unavailable` whose message names `store` and leaks nothing.
fn assert_unavailable(
    what: &str,
    (status, content_type, body): &(u16, String, Value),
    store: &str,
) {
    assert_eq!(*status, 503, "{what}: {body}");
    assert_eq!(content_type, "application/problem+json", "{what}");
    assert_eq!(body["code"], "unavailable", "{what}: {body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(store), "{what}: {detail}");
    for leak in [
        "127.0.0.1",
        "os error",
        "Connection refused",
        "sqlx",
        "pool",
    ] {
        assert!(!detail.contains(leak), "{what} leaks {leak:?}: {detail}");
    }
}

/// kill -9 of Postgres, restarted at once: not one of 56 mixed requests right after fails
/// (every pooled connection was broken by the restart). Then an outage: /readyz says not ready
/// and requests get 503 `unavailable` (HTTP) / UNAVAILABLE (gRPC) while it is down; after the
/// restart, again not one request fails.
#[tokio::test]
async fn a_postgres_restart_fails_no_request_once_it_is_back() -> R {
    pa_testkit::embed_model_dir()?;
    let mut pg = OwnPostgres::start().await?;
    let mesh = Mesh::builder().database_url(&pg.url()).start().await?;
    let chat = mesh.create_chat("before").await?;
    // Warm every pool: many connections each, all of which the restart will break.
    let warm = futures::future::join_all((0..4).map(|_| run_workload(&mesh, &chat, 14))).await;
    for failed in warm {
        assert_eq!(failed?, Vec::<String>::new());
    }

    // A restart at once (as `scripts/stack.sh up` after a crash): every pooled connection is
    // broken, and the first requests after it meet them.
    pg.kill()?;
    pg.restart().await?;
    let failed = run_workload(&mesh, &chat, 56).await?;
    assert_eq!(
        failed,
        Vec::<String>::new(),
        "requests failed after an immediate restart"
    );
    let warm = futures::future::join_all((0..4).map(|_| run_workload(&mesh, &chat, 14))).await;
    for failed in warm {
        assert_eq!(failed?, Vec::<String>::new());
    }

    // An outage: not ready, and 503 `unavailable` until it is back.
    pg.kill()?;
    let body = readyz_becomes(&mesh, 503, "postgres", "down").await?;
    assert_eq!(body["ready"], false);
    let down = send(&mesh, reqwest::Method::GET, "/v1/chats", None).await?;
    assert_unavailable("GET /v1/chats", &down, "Postgres");
    let down = send(
        &mesh,
        reqwest::Method::POST,
        "/v1/chats",
        Some(&json!({ "title": "during" })),
    )
    .await?;
    assert_unavailable("POST /v1/chats", &down, "Postgres");
    let mut grpc = RunServiceClient::connect(mesh.runs_url.clone()).await?;
    let status = grpc
        .list_chats(
            mesh.auth
                .request(&Mesh::identity("acme", "dev"), ListChatsRequest::default()),
        )
        .await
        .expect_err("svc-runs answered without Postgres");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        pa_kit::PaError::from_status(&status).code,
        pa_kit::ErrorCode::Unavailable
    );

    pg.restart().await?;
    let body = readyz_becomes(&mesh, 200, "postgres", "up").await?;
    assert_eq!(body["ready"], true);
    let failed = run_workload(&mesh, &chat, 56).await?;
    assert_eq!(
        failed,
        Vec::<String>::new(),
        "requests failed after the restart"
    );
    // What was written before the kill is there.
    let (status, _, got) = send(
        &mesh,
        reqwest::Method::GET,
        &format!("/v1/chats/{chat}"),
        None,
    )
    .await?;
    assert_eq!((status, got["title"].as_str()), (200, Some("before")));
    mesh.stop().await
}

/// kill -9 of Redis: /readyz says not ready and requests that need it (every request counts
/// against the rate limits there) get 503 `unavailable` naming Redis; after the restart not
/// one request of a mixed workload with runs (event streams in Redis) fails. A change to what a
/// user's toolsets are made of needs Redis too (its toolset generation is renewed first, ADR
/// 0251): svc-tools refuses it, and nothing of it is saved.
#[tokio::test]
async fn a_redis_restart_fails_no_request_once_it_is_back() -> R {
    pa_testkit::embed_model_dir()?;
    let mut redis = OwnRedis::start().await?;
    let mesh = Mesh::builder()
        .redis_url(&redis.url())
        .rate_limits(100_000, 100_000)
        .start()
        .await?;
    let chat = mesh.create_chat("before").await?;
    let run = json!({ "message": "hello", "model": "auto" });
    let (_, events) = mesh
        .run_to_end(&chat, &run, Duration::from_secs(30))
        .await?;
    assert_eq!(events.last().map(|e| e.event_type()), Some("RUN_FINISHED"));
    let warm = futures::future::join_all((0..4).map(|_| run_workload(&mesh, &chat, 7))).await;
    for failed in warm {
        assert_eq!(failed?, Vec::<String>::new());
    }

    let mut tools = ToolServiceClient::connect(mesh.tools_url.clone()).await?;
    let who = Mesh::identity("dev", "dev-user");
    let web = tools
        .create_integration(mesh.auth.request(
            &who,
            CreateIntegrationRequest {
                kind: "web_fetch".into(),
                name: "Web".into(),
                enabled: true,
                ..Default::default()
            },
        ))
        .await?
        .into_inner();

    redis.kill()?;
    let body = readyz_becomes(&mesh, 503, "redis", "down").await?;
    assert_eq!(body["ready"], false);
    let down = send(&mesh, reqwest::Method::GET, "/v1/chats", None).await?;
    assert_unavailable("GET /v1/chats", &down, "Redis");
    let refused = tools
        .update_integration(mesh.auth.request(
            &who,
            UpdateIntegrationRequest {
                id: web.id.clone(),
                name: Some("renamed during the outage".into()),
                ..Default::default()
            },
        ))
        .await
        .expect_err("an integration changed without Redis");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let refused = tools
        .create_integration(mesh.auth.request(
            &who,
            CreateIntegrationRequest {
                kind: "web_fetch".into(),
                name: "Another".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("an integration created without Redis");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    redis.restart().await?;
    let body = readyz_becomes(&mesh, 200, "redis", "up").await?;
    assert_eq!(body["ready"], true);
    let listed = tools
        .list_integrations(mesh.auth.request(&who, ListIntegrationsRequest::default()))
        .await?
        .into_inner()
        .integrations;
    let names: Vec<&str> = listed.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["Web"], "nothing of the refused changes was saved");
    let mut failed = run_workload(&mesh, &chat, 42).await?;
    for i in 0..8 {
        match mesh.run_to_end(&chat, &run, Duration::from_secs(30)).await {
            Ok((_, events)) if events.last().map(|e| e.event_type()) == Some("RUN_FINISHED") => {}
            Ok((_, events)) => failed.push(format!("run {i} ended {:?}", events.last())),
            Err(err) => failed.push(format!("run {i}: {err}")),
        }
    }
    assert_eq!(
        failed,
        Vec::<String>::new(),
        "requests failed after the restart"
    );
    mesh.stop().await
}

/// A Temporal dev-server restart leaves neither svc-worker nor svc-runs broken: durable runs
/// started after it complete (the client reconnects; the worker polls again).
#[tokio::test]
async fn a_temporal_restart_leaves_durable_runs_working() -> R {
    let mut temporal = OwnTemporal::start().await?;
    let mesh = Mesh::builder()
        .worker()
        .without_curator()
        .temporal_address(&temporal.address())
        .start()
        .await?;
    let chat = mesh.create_chat("durable").await?;
    let durable = |text: &str| json!({ "message": text, "durable": true });
    let (_, events) = mesh
        .run_to_end(&chat, &durable("before"), Duration::from_secs(60))
        .await?;
    assert_eq!(events.last().map(|e| e.event_type()), Some("RUN_FINISHED"));

    temporal.kill()?;
    // While it is down, a durable start is refused with `unavailable`, never `internal`.
    let (status, answer) = mesh
        .post_json(&format!("/v1/chats/{chat}/runs"), &durable("during"))
        .await?;
    assert!(
        status == 503 || status == 202,
        "a durable start while Temporal is down: {status} {answer}"
    );
    temporal.restart().await?;
    // A start that was accepted during the outage is not left behind: it ends (finished, or a
    // retryable error) once Temporal is back.
    if status == 202 {
        let run_id = answer["run_id"].as_str().unwrap_or_default().to_string();
        let events = tokio::time::timeout(
            Duration::from_secs(60),
            mesh.read_events(&run_id, None, None),
        )
        .await??;
        let last = events.last().ok_or("no events")?;
        assert!(
            last.event_type() == "RUN_FINISHED"
                || (last.event_type() == "RUN_ERROR" && last.data["code"] == "unavailable"),
            "the run accepted during the outage ended {:?}",
            last.data
        );
    }
    let mut failed = Vec::new();
    for i in 0..5 {
        match mesh
            .run_to_end(
                &chat,
                &durable(&format!("after {i}")),
                Duration::from_secs(60),
            )
            .await
        {
            Ok((_, events)) if events.last().map(|e| e.event_type()) == Some("RUN_FINISHED") => {}
            Ok((_, events)) => failed.push(format!("run {i} ended {:?}", events.last())),
            Err(err) => failed.push(format!("run {i}: {err}")),
        }
    }
    assert_eq!(
        failed,
        Vec::<String>::new(),
        "durable runs failed after the restart"
    );
    let (status, ready) = mesh.get_json("/readyz").await?;
    assert_eq!(status, 200, "{ready}");
    mesh.stop().await
}

/// After a Temporal restart, work that reaches svc-worker through its task queue (not in the
/// reply to a start: a schedule's workflow, an activity's retry) is still picked up: the worker's
/// pollers recover, not only the eager path.
#[tokio::test]
async fn after_a_temporal_restart_the_worker_still_takes_tasks_from_its_queue() -> R {
    let mut temporal = OwnTemporal::start().await?;
    let mesh = Mesh::builder()
        .worker_with_schedules()
        .without_curator()
        .temporal_address(&temporal.address())
        .start()
        .await?;
    temporal.kill()?;
    temporal.restart().await?;
    let (_, listed) = mesh.get_json("/v1/admin/schedules").await?;
    let id = listed["items"]
        .as_array()
        .and_then(|items| items.iter().find(|s| s["task"] == "trim_run_streams"))
        .and_then(|s| s["id"].as_str())
        .ok_or_else(|| format!("no trim_run_streams schedule: {listed}"))?
        .to_string();
    let redis = pa_kit::redis::pool(&mesh.worker_config.common.redis_url, 2)?;
    let key = pa_bus::keys::run_events(&format!("orphan-{}", uuid::Uuid::new_v4().simple()));
    let mut conn = redis.get().await?;
    let _: String = deadpool_redis::redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg("e")
        .arg("{}")
        .query_async(&mut conn)
        .await?;
    // The trigger itself may need a retry while the restarted server settles.
    let mut triggered = false;
    for _ in 0..50 {
        let (status, _) = mesh
            .post_json(&format!("/v1/admin/schedules/{id}/trigger"), &json!({}))
            .await?;
        if status == 202 {
            triggered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        triggered,
        "the schedule could not be triggered after the restart"
    );
    let started = tokio::time::Instant::now();
    let mut expires = -1;
    while started.elapsed() < Duration::from_secs(45) {
        expires = deadpool_redis::redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        if expires > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _: i64 = deadpool_redis::redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await?;
    assert!(
        expires > 0,
        "the schedule's workflow, queued after the restart, was not taken within 45 s"
    );
    eprintln!("taken {:?} after the trigger", started.elapsed());
    mesh.stop().await
}
