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
