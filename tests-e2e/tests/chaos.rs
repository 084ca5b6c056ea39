//! The chaos suite (issue 24, docs/src/adr/0180-2026-12-03-chaos-suite.md): for each of the six services,
//! Postgres, Temporal and Redis — the stores started by the test itself on ports of their own —
//! 20 inline and 20 durable runs in flight, `kill -9` of the target mid-stream, an immediate
//! restart, and every client following its run through the break with `Last-Event-ID`.
//!
//! Asserted per round: durable runs complete with the exact text and every event id once;
//! inline runs end (finished, or a retryable RUN_ERROR) and no inline run's client waits more
//! than 15 s after the kill for its next event or its end (one whose owner died ends within
//! that; one that streams on under load is slow, not hung); after recovery every request
//! succeeds and no run is left unfinished. `pa-bench chaos` prints the same table.

use std::time::Duration;

use tests_e2e::chaos::{ChaosMesh, ChaosSettings, Target, service_binary};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Runs per mode and round.
const RUNS: usize = 20;
/// Inline runs end within this of their owner's death (issue 24).
const INLINE_END_BOUND: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_run_ends_through_the_death_of_any_one_process() -> R {
    let targets: Vec<Target> = match std::env::var("PA_CHAOS_TARGETS") {
        Ok(list) => list.split(',').filter_map(Target::parse).collect(),
        Err(_) => Target::ALL.to_vec(),
    };
    let log_dir = std::env::temp_dir().join(format!("pa-chaos-{}", uuid::Uuid::new_v4().simple()));
    let mut mesh = ChaosMesh::start(ChaosSettings {
        binary: service_binary()?,
        token_delay: Duration::from_millis(15),
        env: vec![],
        log_dir: log_dir.clone(),
        replicas: 1,
    })
    .await?;
    let rounds = mesh.rounds(&targets, RUNS, INLINE_END_BOUND, false).await;
    let (rows, problems) = (rounds.rows, rounds.problems);
    if !problems.is_empty()
        && let Ok(secs) = std::env::var("PA_CHAOS_HOLD_SECS")
    {
        // For a person investigating: the stores and services stay up for a while.
        eprintln!(
            "holding the failed mesh for {secs} s: Temporal at {}, logs in {}",
            mesh.temporal.address(),
            log_dir.display()
        );
        tokio::time::sleep(Duration::from_secs(secs.parse().unwrap_or(600))).await;
    }
    mesh.stop().await?;
    println!("{}", rows.join("\n"));
    assert!(
        problems.is_empty(),
        "chaos table:\n{}\nproblems (logs in {}):\n{}",
        rows.join("\n"),
        log_dir.display(),
        problems.join("\n")
    );
    let _ = std::fs::remove_dir_all(&log_dir);
    Ok(())
}

/// The processes whose environment holds `marker` (from `/proc/<pid>/environ`).
fn processes_marked(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
        })
        .collect()
}

/// A mesh whose start fails part-way (here the gateway, started last, refuses its
/// configuration) leaves none of the services it already started running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_that_fails_to_start_leaves_no_process_behind() -> R {
    let marker = format!("PA_CHAOS_TEST_MARK={}", uuid::Uuid::new_v4().simple());
    let (name, value) = marker.split_once('=').expect("a marker is NAME=value");
    let log_dir = std::env::temp_dir().join(format!("pa-chaos-{}", uuid::Uuid::new_v4().simple()));
    let started = ChaosMesh::start(ChaosSettings {
        binary: service_binary()?,
        token_delay: Duration::from_millis(15),
        env: vec![
            (name.into(), value.into()),
            // Read by the gateway alone: the five services before it start.
            ("PA_SSE_KEEPALIVE_MS".into(), "soon".into()),
        ],
        log_dir: log_dir.clone(),
        replicas: 1,
    })
    .await;
    let err = match started {
        Ok(mesh) => {
            mesh.stop().await?;
            return Err("the gateway started with PA_SSE_KEEPALIVE_MS=soon".into());
        }
        Err(err) => err.to_string(),
    };
    assert!(err.contains("svc-gateway"), "{err}");
    let left = processes_marked(&marker);
    assert!(left.is_empty(), "service processes left running: {left:?}");
    let _ = std::fs::remove_dir_all(&log_dir);
    Ok(())
}

/// A durable run is accepted (202) before svc-worker has started its workflow (ADR 0243). When
/// svc-runs dies then (the worker frozen, so the start is in flight), the run is not left
/// running with nothing behind it: the restarted svc-runs ends it with a retryable `owner_lost`
/// once its dead owner's lease runs out; the start the frozen worker still held, delivered when
/// it wakes, does not bring it back; and the chat takes a new durable run that completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_run_whose_svc_runs_dies_before_its_workflow_starts_is_ended() -> R {
    let (mut mesh, chat, log_dir) = mesh_with_a_finished_durable_run(
        vec![
            ("PA_RUN_LEASE_MS".into(), "2000".into()),
            ("PA_RUN_LEASE_RENEW_MS".into(), "500".into()),
        ],
        "a start cut short",
    )
    .await?;
    mesh.signal_service(Target::Worker, true)?;
    let orphan = start_durable(&mesh, &chat, "cut short").await?;
    // The start is in flight to the frozen worker; svc-runs dies with it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    mesh.kill(Target::Runs).await?;
    mesh.restart(Target::Runs).await?;
    let ended = follow(&mesh, &orphan).await?;
    let last = ended.events.last().ok_or("no events")?;
    assert_eq!(last.event_type(), "RUN_ERROR", "{:?}", last.data);
    assert_eq!(
        last.data["code"], "owner_lost",
        "a retryable end: {:?}",
        last.data
    );
    let (_, run) = mesh.get_json(&format!("/v1/runs/{orphan}")).await?;
    assert_eq!(run["status"], "failed", "{run}");

    mesh.signal_service(Target::Worker, false)?;
    let next = start_durable(&mesh, &chat, "after").await?;
    let ended = follow(&mesh, &next).await?;
    assert_eq!(
        ended.events.last().map(|e| e.event_type()),
        Some("RUN_FINISHED"),
        "the chat goes on"
    );
    // Whatever the woken worker did with the start it held, the ended run stays ended.
    let (_, run) = mesh.get_json(&format!("/v1/runs/{orphan}")).await?;
    assert_eq!(run["status"], "failed", "{run}");
    mesh.stop().await?;
    let _ = std::fs::remove_dir_all(&log_dir);
    Ok(())
}

/// A durable run's start confirmed while Postgres is down (ADR 0243's confirmation, issue 23's
/// fault test): svc-worker is frozen while the run is accepted, Postgres is killed, then the worker
/// wakes and starts the workflow, so svc-runs learns of the start with nowhere to record it. The
/// record is tried again until Postgres is back: the run ends, and its row is its workflow's
/// (`start_pending` cleared, no owner) rather than left to the reaper as an unconfirmed start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_start_confirmed_while_postgres_is_down_is_recorded_when_it_returns() -> R {
    // A lease that outlasts the outage: the run stays svc-runs' own throughout, so only the
    // confirmation can hand it to its workflow.
    let (mut mesh, chat, log_dir) = mesh_with_a_finished_durable_run(
        vec![("PA_RUN_LEASE_MS".into(), "30000".into())],
        "a start confirmed in an outage",
    )
    .await?;
    mesh.signal_service(Target::Worker, true)?;
    let run = start_durable(&mesh, &chat, "confirmed in an outage").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    mesh.kill(Target::Postgres).await?;
    mesh.signal_service(Target::Worker, false)?;
    // The start lands in Temporal; its confirmation finds no Postgres for longer than a pool
    // waits for a connection (5 s), so the write fails and is tried again.
    tokio::time::sleep(Duration::from_secs(7)).await;
    mesh.restart(Target::Postgres).await?;

    let ended = follow(&mesh, &run).await?;
    // The turn streamed through the outage; its end was recorded once Postgres was back.
    assert_eq!(
        ended.events.last().map(|e| e.event_type()),
        Some("RUN_FINISHED"),
        "{:?}",
        ended.events.last().map(|e| &e.data)
    );
    let (_, row) = mesh.get_json(&format!("/v1/runs/{run}")).await?;
    assert_eq!(row["status"], "succeeded", "{row}");
    let db = sqlx::PgPool::connect(&mesh.postgres.url()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (pending, owner) = loop {
        let row: (bool, Option<String>) =
            sqlx::query_as("SELECT start_pending, owner_id FROM runs.runs WHERE id = $1")
                .bind(&run)
                .fetch_one(&db)
                .await?;
        if !row.0 || tokio::time::Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        !pending && owner.is_none(),
        "the confirmation is recorded once Postgres is back: start_pending={pending} owner={owner:?}"
    );
    db.close().await;
    mesh.stop().await?;
    let _ = std::fs::remove_dir_all(&log_dir);
    Ok(())
}

/// The mesh as processes (5 ms between tokens, `env` added), a chat titled `title`, and a
/// first durable run of it followed to RUN_FINISHED (so a worker, Temporal and the chat are warm
/// and the chat's durable starts answer first); and where the logs go.
async fn mesh_with_a_finished_durable_run(
    env: Vec<(String, String)>,
    title: &str,
) -> Result<(ChaosMesh, String, std::path::PathBuf), Box<dyn std::error::Error + Send + Sync>> {
    let log_dir = std::env::temp_dir().join(format!("pa-chaos-{}", uuid::Uuid::new_v4().simple()));
    let mesh = ChaosMesh::start(ChaosSettings {
        binary: service_binary()?,
        token_delay: Duration::from_millis(5),
        env,
        log_dir: log_dir.clone(),
        replicas: 1,
    })
    .await?;
    let chat = mesh.create_chat(title).await?;
    let first = start_durable(&mesh, &chat, "before").await?;
    let ended = follow(&mesh, &first).await?;
    assert_eq!(
        ended.events.last().map(|e| e.event_type()),
        Some("RUN_FINISHED")
    );
    Ok((mesh, chat, log_dir))
}

async fn start_durable(
    mesh: &ChaosMesh,
    chat: &str,
    text: &str,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let (status, accepted) = mesh
        .post_json(
            &format!("/v1/chats/{chat}/runs"),
            &serde_json::json!({ "message": text, "durable": true }),
        )
        .await?;
    if status != 202 {
        return Err(format!("start: {status} {accepted}").into());
    }
    Ok(accepted["run_id"].as_str().unwrap_or_default().to_string())
}

/// Follows `run_id` to its end through the mesh's gateway (90 s at most).
async fn follow(
    mesh: &ChaosMesh,
    run_id: &str,
) -> Result<tests_e2e::chaos::FollowedRun, Box<dyn std::error::Error + Send + Sync>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    tests_e2e::chaos::follow_run(
        &mesh.http,
        std::slice::from_ref(&mesh.gateway_url),
        run_id,
        deadline,
        || {},
    )
    .await
}
