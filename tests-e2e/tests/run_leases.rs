//! Inline runs have an owner with a lease (ADR 0150) and their end goes through an outbox when
//! Postgres cannot take it (ADR 0151). Against real servers: an svc-runs replica on a runtime of
//! its own is killed at once (its tasks die where they are, as with `kill -9`); Postgres is cut
//! off from one replica by a TCP proxy between them.

use std::time::Duration;

use pa_proto::v1::ag_ui_event::Event;
use pa_proto::v1::run_service_client::RunServiceClient;
use pa_proto::v1::{
    AgUiEvent, CancelRunRequest, CreateChatRequest, CreateRunRequest, GetRunRequest, Identity,
    ListMessagesRequest, Run, RunStatus,
};
use tests_e2e::{CutProxy, Mesh, RunsReplica};
use tokio::time::Instant;
use tonic::transport::Channel;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How long the offline model pauses between words: a run of `WORDS` words streams for seconds.
const TOKEN_DELAY: Duration = Duration::from_millis(40);
const WORDS: usize = 300;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn mesh(leases: svc_runs::lease::LeaseSettings) -> BoxResult<Mesh> {
    init_tracing();
    Mesh::builder()
        .without_curator()
        .offline_token_delay(TOKEN_DELAY)
        .run_leases(leases)
        .start()
        .await
}

fn who() -> Identity {
    Mesh::identity("t-leases", &format!("u-{}", uuid::Uuid::now_v7()))
}

async fn client(url: &str) -> BoxResult<RunServiceClient<Channel>> {
    Ok(RunServiceClient::connect(url.to_string()).await?)
}

fn long_message() -> String {
    (0..WORDS)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A chat and a long inline run in it, through `url`.
async fn start_run(mesh: &Mesh, url: &str, who: &Identity) -> BoxResult<String> {
    let run = CreateRunRequest {
        message: long_message(),
        ..Default::default()
    };
    Ok(chat_and_run(mesh, url, who, "leases", run).await?.id)
}

/// A chat titled `title` and `run` started in it, through `url`.
async fn chat_and_run(
    mesh: &Mesh,
    url: &str,
    who: &Identity,
    title: &str,
    run: CreateRunRequest,
) -> BoxResult<Run> {
    let mut runs = client(url).await?;
    let chat = runs
        .create_chat(mesh.auth.request(
            who,
            CreateChatRequest {
                title: title.into(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    let run = CreateRunRequest {
        chat_id: chat.id,
        ..run
    };
    Ok(runs
        .create_run(mesh.auth.request(who, run))
        .await?
        .into_inner()
        .run
        .ok_or("no run")?)
}

fn redis() -> pa_kit::redis::Pool {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| tests_e2e::DEFAULT_REDIS_URL.into());
    pa_kit::redis::pool(&url, 4).expect("redis pool")
}

fn deltas(events: &[AgUiEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::TextMessageContent(c)) => Some(c.delta.as_str()),
            _ => None,
        })
        .collect()
}

/// Waits until the run's stream holds at least `n` text deltas.
async fn wait_for_deltas(redis: &pa_kit::redis::Pool, run_id: &str, n: usize) -> R {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = pa_bus::run_events::read_all(redis, run_id).await?;
        let count = events
            .iter()
            .filter(|e| matches!(e.event.event, Some(Event::TextMessageContent(_))))
            .count();
        if count >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("run {run_id}: only {count} deltas").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Follows the run's stream like an SSE client until its terminal event, within `within`.
async fn follow_to_end(
    redis: &pa_kit::redis::Pool,
    run_id: &str,
    within: Duration,
) -> BoxResult<Vec<AgUiEvent>> {
    let deadline = Instant::now() + within;
    let mut events = Vec::new();
    let mut after = "0".to_string();
    loop {
        let batch =
            pa_bus::run_events::read_after(redis, run_id, &after, Some(Duration::from_millis(200)))
                .await?;
        for stored in batch {
            after = stored.stream_id;
            let terminal = stored.event.is_terminal();
            events.push(stored.event);
            if terminal {
                return Ok(events);
            }
        }
        if Instant::now() > deadline {
            return Err(format!("run {run_id} did not end within {within:?}").into());
        }
    }
}

async fn get_run(mesh: &Mesh, url: &str, who: &Identity, run_id: &str) -> BoxResult<Run> {
    Ok(client(url)
        .await?
        .get_run(mesh.auth.request(
            who,
            GetRunRequest {
                run_id: run_id.into(),
            },
        ))
        .await?
        .into_inner())
}

/// The chat's assistant message of `run`.
async fn reply(mesh: &Mesh, url: &str, who: &Identity, run: &Run) -> BoxResult<Option<String>> {
    let messages = client(url)
        .await?
        .list_messages(mesh.auth.request(
            who,
            ListMessagesRequest {
                chat_id: run.chat_id.clone(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .messages;
    Ok(messages
        .into_iter()
        .find(|m| m.role == "assistant" && m.run_id.as_deref() == Some(run.id.as_str()))
        .map(|m| m.content))
}

/// Follows `run_id` to its end, which must be RUN_FINISHED; its events.
async fn finished(redis: &pa_kit::redis::Pool, run_id: &str) -> BoxResult<Vec<AgUiEvent>> {
    let events = follow_to_end(redis, run_id, Duration::from_secs(60)).await?;
    assert!(
        matches!(
            events.last().and_then(|e| e.event.as_ref()),
            Some(Event::RunFinished(_))
        ),
        "{:?}",
        events.last()
    );
    Ok(events)
}

/// Follows `run_id` to RUN_FINISHED with its whole text and no RUN_ERROR, then waits (30 s at
/// most) for its row to say SUCCEEDED.
async fn finished_whole(
    mesh: &Mesh,
    who: &Identity,
    redis: &pa_kit::redis::Pool,
    run_id: &str,
) -> R {
    let events = finished(redis, run_id).await?;
    assert!(events.iter().all(|e| run_error_code(e).is_none()));
    assert!(deltas(&events).split_whitespace().count() > WORDS);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = get_run(mesh, &mesh.runs_url, who, run_id).await?;
        if row.status == RunStatus::Succeeded as i32 {
            return Ok(());
        }
        assert!(Instant::now() < deadline, "the row did not land: {row:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn run_error_code(event: &AgUiEvent) -> Option<String> {
    match &event.event {
        Some(Event::RunError(e)) => e.code.clone(),
        _ => None,
    }
}

/// A mesh whose own svc-runs replica does not reap soon (its scans are a minute apart), and a
/// run of `who` whose owner, another replica, was killed mid-stream.
async fn a_run_whose_owner_died() -> BoxResult<(Mesh, Identity, String)> {
    let mesh = mesh(svc_runs::lease::LeaseSettings {
        scan_every: Duration::from_secs(60),
        ..Default::default()
    })
    .await?;
    let mut config = mesh.runs_config.clone();
    config.leases = Default::default();
    let owner = RunsReplica::start(config).await?;
    let who = who();
    let run = start_run(&mesh, &owner.url, &who).await?;
    wait_for_deltas(&redis(), &run, 5).await?;
    owner.kill();
    Ok((mesh, who, run))
}

/// The end of a run of a dead owner as a client and the store see it: the stream closes the
/// open message, then RUN_ERROR `code`; the row has `status`, the partial text as its reply,
/// and the usage the owner had written (its one model request).
async fn assert_orphan_ended(
    mesh: &Mesh,
    url: &str,
    who: &Identity,
    run_id: &str,
    events: &[AgUiEvent],
    code: &str,
    status: RunStatus,
) -> R {
    let last = events.last().ok_or("no events")?;
    assert_eq!(run_error_code(last).as_deref(), Some(code), "{last:?}");
    let before_last = &events[events.len() - 2];
    assert!(
        matches!(before_last.event, Some(Event::TextMessageEnd(_))),
        "the open message is closed before RUN_ERROR: {before_last:?}"
    );
    let partial = deltas(events);
    assert!(!partial.is_empty());
    assert!(
        partial.split_whitespace().count() < WORDS,
        "the run was cut short"
    );
    let run = get_run(mesh, url, who, run_id).await?;
    assert_eq!(run.status, status as i32, "{run:?}");
    assert_eq!(run.error_code.as_deref(), Some(code));
    assert_eq!(
        run.usage.unwrap_or_default().model_requests,
        1,
        "usage recorded"
    );
    assert_eq!(
        reply(mesh, url, who, &run).await?.as_deref(),
        Some(partial.as_str()),
        "the partial reply is kept"
    );
    Ok(())
}

/// (a) The owner dies mid-stream: another replica ends its runs within 15 s, owner_lost,
/// partial text kept, FAILED, usage recorded; no event of them comes twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_replica_ends_the_runs_of_a_killed_owner_within_15_s() -> R {
    let mesh = mesh(Default::default()).await?;
    let owner = RunsReplica::start(mesh.runs_config.clone()).await?;
    let redis = redis();
    let who = who();
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(start_run(&mesh, &owner.url, &who).await?);
    }
    for run in &runs {
        wait_for_deltas(&redis, run, 5).await?;
    }
    owner.kill();
    let killed = Instant::now();
    let ended = futures::future::join_all(
        runs.iter()
            .map(|run| follow_to_end(&redis, run, Duration::from_secs(15))),
    )
    .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
    for (run, events) in runs.iter().zip(ended) {
        let events = events?;
        assert_orphan_ended(
            &mesh,
            &mesh.runs_url,
            &who,
            run,
            &events,
            svc_runs::lease::OWNER_LOST,
            RunStatus::Failed,
        )
        .await?;
    }
    mesh.stop().await
}

/// (a) With no other replica, one started after the owner's death ends its runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_started_after_the_owners_death_ends_its_runs() -> R {
    let mut mesh = mesh(Default::default()).await?;
    mesh.stop_service("svc-runs").await?;
    let owner = RunsReplica::start(mesh.runs_config.clone()).await?;
    let redis = redis();
    let who = who();
    let run = start_run(&mesh, &owner.url, &who).await?;
    wait_for_deltas(&redis, &run, 5).await?;
    owner.kill();
    let killed = Instant::now();
    let restarted = RunsReplica::start(mesh.runs_config.clone()).await?;
    let events = follow_to_end(&redis, &run, Duration::from_secs(15)).await?;
    assert!(killed.elapsed() < Duration::from_secs(15));
    assert_orphan_ended(
        &mesh,
        &restarted.url,
        &who,
        &run,
        &events,
        svc_runs::lease::OWNER_LOST,
        RunStatus::Failed,
    )
    .await?;
    drop(restarted);
    mesh.stop().await
}

/// (c) Cancel reaches a run whose owner is dead: it ends CANCELLED with its partial text (the
/// mesh's replica does not reap here: its scans are a minute apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_ends_a_run_whose_owner_is_dead() -> R {
    let (mesh, who, run) = a_run_whose_owner_died().await?;
    let redis = redis();
    let killed = Instant::now();
    let cancelled = client(&mesh.runs_url)
        .await?
        .cancel_run(mesh.auth.request(
            &who,
            CancelRunRequest {
                run_id: run.clone(),
            },
        ))
        .await?
        .into_inner();
    assert_eq!(
        cancelled.status,
        RunStatus::Cancelled as i32,
        "{cancelled:?}"
    );
    assert!(killed.elapsed() < Duration::from_secs(15));
    let events = follow_to_end(&redis, &run, Duration::from_secs(5)).await?;
    assert_orphan_ended(
        &mesh,
        &mesh.runs_url,
        &who,
        &run,
        &events,
        "cancelled",
        RunStatus::Cancelled,
    )
    .await?;
    mesh.stop().await
}

/// (b) An owner cut off from Postgres for longer than a lease keeps its run: it still beats in
/// Redis, so the other replica does not reap it, and the run finishes with its whole reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_run_is_not_reaped_while_its_owner_cannot_reach_postgres() -> R {
    let mesh = mesh(Default::default()).await?;
    let upstream = postgres_addr(&mesh.database_url)?;
    let proxy = CutProxy::start(upstream).await?;
    let mut config = mesh.runs_config.clone();
    config.common.database_url = tests_e2e::with_host_port(&config.common.database_url, proxy.addr);
    let owner = RunsReplica::start(config).await?;
    let redis = redis();
    let who = who();
    let run = start_run(&mesh, &owner.url, &who).await?;
    wait_for_deltas(&redis, &run, 5).await?;
    proxy.down();
    // Longer than a lease plus a scan: the other replica would have reaped it by now.
    tokio::time::sleep(Duration::from_secs(9)).await;
    proxy.up();
    finished_whole(&mesh, &who, &redis, &run).await?;
    drop(owner);
    mesh.stop().await
}

/// (e) A run that ends while Postgres is unreachable still delivers RUN_FINISHED; its row (and
/// reply) lands from the outbox once Postgres is back, and with it the turn queued for the
/// Curator.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_ending_while_postgres_is_unreachable_delivers_its_end_and_lands_later() -> R {
    let mut mesh = mesh(Default::default()).await?;
    // The only replica is the one behind the proxy, so nothing lands before Postgres is back.
    mesh.stop_service("svc-runs").await?;
    let upstream = postgres_addr(&mesh.database_url)?;
    let proxy = CutProxy::start(upstream).await?;
    let mut config = mesh.runs_config.clone();
    config.common.database_url = tests_e2e::with_host_port(&config.common.database_url, proxy.addr);
    // A worker is named (none runs here; inline runs never call it), so the replica queues each
    // successful turn for the Curator (ADR 0242): the turn must land with its end.
    config.worker_url = Some("http://127.0.0.1:9".into());
    let owner = RunsReplica::start(config).await?;
    let redis = redis();
    let who = who();
    let run = start_run(&mesh, &owner.url, &who).await?;
    wait_for_deltas(&redis, &run, 5).await?;
    proxy.down();
    let events = finished(&redis, &run).await?;
    let text = deltas(&events);
    // Postgres is still cut off from svc-runs: the row waits (read directly).
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&mesh.database_url).await?;
    let status: i16 = sqlx::query_scalar("SELECT status FROM runs.runs WHERE id = $1")
        .bind(&run)
        .fetch_one(&mut db)
        .await?;
    assert_eq!(status, RunStatus::Running as i16);
    proxy.up();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: i16 = sqlx::query_scalar("SELECT status FROM runs.runs WHERE id = $1")
            .bind(&run)
            .fetch_one(&mut db)
            .await?;
        if status == RunStatus::Succeeded as i16 {
            break;
        }
        assert!(Instant::now() < deadline, "the row did not land: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let row = get_run(&mesh, &owner.url, &who, &run).await?;
    assert_eq!(
        reply(&mesh, &owner.url, &who, &row).await?,
        Some(text.clone())
    );
    assert!(row.usage.unwrap_or_default().total_tokens > 0);
    // The end landed from the outbox queued the turn for the Curator, in the same transaction.
    let queued: Option<String> = sqlx::query_scalar(
        "SELECT q.run_id FROM runs.curations q JOIN runs.runs r \
           ON r.tenant_id = q.tenant_id AND r.chat_id = q.chat_id WHERE r.id = $1",
    )
    .bind(&run)
    .fetch_optional(&mut db)
    .await?;
    assert_eq!(
        queued.as_deref(),
        Some(run.as_str()),
        "the turn is queued with its end"
    );
    // The chat's next run on the same replica starts from the reply that landed (ADR 0252: the
    // replica knew the chat's messages before the outage). The offline model counts the words
    // of what it is sent, so the run's input beside the same message's in a new chat is the
    // history: the first run's message and its reply.
    let again = CreateRunRequest {
        message: "again".into(),
        ..Default::default()
    };
    let next = client(&owner.url)
        .await?
        .create_run(mesh.auth.request(
            &who,
            CreateRunRequest {
                chat_id: row.chat_id.clone(),
                ..again.clone()
            },
        ))
        .await?
        .into_inner()
        .run
        .ok_or("no run")?;
    let fresh = chat_and_run(&mesh, &owner.url, &who, "fresh", again).await?;
    let mut input = Vec::new();
    for run in [&next.id, &fresh.id] {
        finished(&redis, run).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let usage = loop {
            let row = get_run(&mesh, &owner.url, &who, run).await?;
            if row.status == RunStatus::Succeeded as i32 {
                break row.usage.unwrap_or_default();
            }
            assert!(Instant::now() < deadline, "{run} did not end: {row:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        input.push(usage.input_tokens);
    }
    let words = |text: &str| text.split_whitespace().count() as i64;
    assert_eq!(
        input[0] as i64 - input[1] as i64,
        words(&long_message()) + words(&text),
        "the history the next run was sent"
    );
    drop(owner);
    mesh.stop().await
}

/// host:port of a Postgres URL.
fn postgres_addr(url: &str) -> BoxResult<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    Ok(if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    })
}

/// (d) Sub-runs follow their parent: the owner dies while a delegate sub-run streams; both the
/// sub-run and its parent are ended (owner_lost, FAILED) by the surviving replica within 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sub_run_of_a_killed_owner_ends_with_its_parent() -> R {
    use pa_testkit::{Chunk, FakeProvider, Reply};
    let mesh = mesh(Default::default()).await?;
    let fake = FakeProvider::start().await?;
    mesh.add_fake_model(&fake.base_url()).await?;
    // The parent delegates; the sub-run answers slowly (it is mid-stream at the kill).
    fake.push(Reply::chunks(vec![Chunk::tool_call(
        "p1",
        "delegate",
        serde_json::json!({ "task": "Write a long answer." }).to_string(),
    )]));
    fake.push(
        Reply::chunks((0..400).map(|i| Chunk::text(format!("s{i} "))).collect())
            .with_chunk_delay(Duration::from_millis(50)),
    );
    let owner = RunsReplica::start(mesh.runs_config.clone()).await?;
    let redis = redis();
    let who = who();
    let run = CreateRunRequest {
        message: "Delegate a long answer.".into(),
        model: "fp:m".into(),
        ..Default::default()
    };
    let parent = chat_and_run(&mesh, &owner.url, &who, "sub-run leases", run)
        .await?
        .id;
    // The sub-run announces itself in the parent's stream, then streams in its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    let child = loop {
        let started = pa_bus::run_events::read_all(&redis, &parent)
            .await?
            .into_iter()
            .find_map(|stored| match stored.event.event {
                Some(Event::SubagentStarted(s)) => Some(s.subagent_run_id),
                _ => None,
            });
        if let Some(child) = started {
            break child;
        }
        if Instant::now() > deadline {
            return Err("the sub-run did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    wait_for_deltas(&redis, &child, 5).await?;
    owner.kill();
    let killed = Instant::now();
    let (child_events, parent_events) = tokio::try_join!(
        follow_to_end(&redis, &child, Duration::from_secs(15)),
        follow_to_end(&redis, &parent, Duration::from_secs(15)),
    )?;
    assert!(killed.elapsed() < Duration::from_secs(15));
    for (run_id, events) in [(&child, &child_events), (&parent, &parent_events)] {
        let last = events.last().ok_or("no events")?;
        assert_eq!(
            run_error_code(last).as_deref(),
            Some(svc_runs::lease::OWNER_LOST),
            "{run_id}: {last:?}"
        );
        let run = get_run(&mesh, &mesh.runs_url, &who, run_id).await?;
        assert_eq!(run.status, RunStatus::Failed as i32, "{run:?}");
    }
    assert!(
        !deltas(&child_events).is_empty(),
        "the sub-run's partial text is in its stream"
    );
    mesh.stop().await
}

/// Hostile: a run whose owner is dead is still only its user's. Another tenant's user, and
/// another user of the same tenant, can neither see it nor cancel it (`not_found`, and the run
/// goes on waiting for its reaper); its own user's cancel then ends it. The claim a cancel makes
/// on an ownerless run happens only after the caller is authorised.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nobody_else_can_touch_a_run_whose_owner_is_dead() -> R {
    let (mesh, who, run) = a_run_whose_owner_died().await?;
    let redis = redis();
    let strangers = [
        Mesh::identity("t-leases-other", &who.user_id),
        Mesh::identity(&who.tenant_id, &format!("u-{}", uuid::Uuid::now_v7())),
    ];
    let mut runs = client(&mesh.runs_url).await?;
    for stranger in &strangers {
        let cancel = runs
            .cancel_run(mesh.auth.request(
                stranger,
                CancelRunRequest {
                    run_id: run.clone(),
                },
            ))
            .await
            .expect_err("a stranger's cancel");
        assert_eq!(cancel.code(), tonic::Code::NotFound, "{cancel:?}");
        let read = runs
            .get_run(mesh.auth.request(
                stranger,
                GetRunRequest {
                    run_id: run.clone(),
                },
            ))
            .await
            .expect_err("a stranger's read");
        assert_eq!(read.code(), tonic::Code::NotFound, "{read:?}");
    }
    // Nothing the strangers did ended or claimed it.
    let still = get_run(&mesh, &mesh.runs_url, &who, &run).await?;
    assert_eq!(still.status, RunStatus::Running as i32, "{still:?}");
    let events = pa_bus::run_events::read_all(&redis, &run).await?;
    assert!(
        !events.iter().any(|e| e.event.is_terminal()),
        "a stranger's call ended the run"
    );
    let cancelled = runs
        .cancel_run(mesh.auth.request(
            &who,
            CancelRunRequest {
                run_id: run.clone(),
            },
        ))
        .await?
        .into_inner();
    assert_eq!(
        cancelled.status,
        RunStatus::Cancelled as i32,
        "{cancelled:?}"
    );
    mesh.stop().await
}

/// (ADR 0243) A durable run is its svc-runs' own until svc-worker confirms the workflow's start.
/// When that svc-runs died after the start landed but before it recorded the confirmation (here
/// the confirmation is taken back in the store and the owner is one that never beats), the
/// replica that reaps the dead owner's runs finds the workflow's events in the run's stream and
/// hands the run to its workflow instead of ending it: the run finishes with its whole text, and
/// the row is nobody's. (A start that never landed wrote nothing and ends `owner_lost`:
/// `chaos.rs`.)
#[tokio::test]
async fn a_durable_run_whose_start_was_not_confirmed_is_left_to_its_workflow() -> R {
    init_tracing();
    let mesh = Mesh::builder()
        .worker()
        .without_curator()
        .offline_token_delay(TOKEN_DELAY)
        .run_leases(svc_runs::lease::LeaseSettings {
            lease: Duration::from_secs(1),
            renew_every: Duration::from_millis(250),
            scan_every: Duration::from_millis(250),
        })
        .start()
        .await?;
    let who = who();
    let run = CreateRunRequest {
        message: long_message(),
        mode: pa_proto::v1::RunMode::Durable as i32,
        ..Default::default()
    };
    let run = chat_and_run(&mesh, &mesh.runs_url, &who, "unconfirmed", run).await?;
    let redis = redis();
    wait_for_deltas(&redis, &run.id, 5).await?;
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&mesh.database_url).await?;
    let dead_owner = format!("gone-{}", uuid::Uuid::now_v7());
    let taken_back = sqlx::query(
        "UPDATE runs.runs SET start_pending = true, owner_id = $2 \
         WHERE id = $1 AND finished_at IS NULL",
    )
    .bind(&run.id)
    .bind(&dead_owner)
    .execute(&mut db)
    .await?
    .rows_affected();
    assert_eq!(
        taken_back, 1,
        "the run ended before the test could stage it"
    );
    // The reaper claims it (the owner never beats) and hands it over.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT owner_id FROM runs.runs WHERE id = $1")
                .bind(&run.id)
                .fetch_one(&mut db)
                .await?;
        if owner.as_deref() != Some(dead_owner.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "nobody claimed the run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    finished_whole(&mesh, &who, &redis, &run.id).await?;
    let (owner, pending): (Option<String>, bool) =
        sqlx::query_as("SELECT owner_id, start_pending FROM runs.runs WHERE id = $1")
            .bind(&run.id)
            .fetch_one(&mut db)
            .await?;
    assert_eq!((owner, pending), (None, false), "the run is its workflow's");
    mesh.stop().await
}
