//! Scale-out (issue 20 item 4, issue 24 item 4; ADR 0191): every service runs as two processes,
//! every `PA_*_URL` lists both, and clients balance over the replicas that answer. For each
//! service, replica 0 is killed (`kill -9`) while 10 inline and 10 durable runs stream, and stays
//! dead until they have ended: the other replica carries them.
//!
//! First, every replica of every gRPC service must serve some of a batch of runs (calls spread).
//!
//! Asserted per service: durable runs complete with the exact text and every event id once (a
//! model turn that died with its svc-models replica is withdrawn and run again on the other —
//! `message_discarded`); inline runs end (finished, or a retryable RUN_ERROR when the replica that
//! drove or relayed them died) within 15 s of the kill; once the replica is back, every request
//! succeeds and no run is left unfinished.

use std::time::Duration;

use tests_e2e::chaos::{ChaosMesh, ChaosSettings, Target, service_binary};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const RUNS: usize = 10;
const INLINE_END_BOUND: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_replica_of_each_service_loses_no_run() -> R {
    let targets: Vec<Target> = match std::env::var("PA_SCALE_OUT_TARGETS") {
        Ok(list) => list.split(',').filter_map(Target::parse).collect(),
        Err(_) => Target::ALL.into_iter().filter(|t| t.is_service()).collect(),
    };
    let log_dir =
        std::env::temp_dir().join(format!("pa-scale-out-{}", uuid::Uuid::new_v4().simple()));
    let mut mesh = ChaosMesh::start(ChaosSettings {
        binary: service_binary()?,
        token_delay: Duration::from_millis(15),
        env: vec![],
        log_dir: log_dir.clone(),
        replicas: 2,
    })
    .await?;
    // Calls spread: every replica of every gRPC service serves some of a batch of runs (a
    // replica the balancers never pick would carry nothing when its peer dies). A replica the
    // balancer's probe took out for a moment gets another batch, three at most.
    let mut idle = Vec::new();
    for _batch in 0..3 {
        mesh.runs_to_end(RUNS).await?;
        idle.clear();
        for svc in [
            "svc-runs",
            "svc-models",
            "svc-tools",
            "svc-memory",
            "svc-worker",
        ] {
            let calls = mesh.grpc_calls_per_replica(svc).await?;
            eprintln!("{svc}: gRPC calls per replica {calls:?}");
            if calls.contains(&0) {
                idle.push(format!("{svc} {calls:?}"));
            }
        }
        if idle.is_empty() {
            break;
        }
    }
    assert!(
        idle.is_empty(),
        "replicas that served no call after three batches of runs: {idle:?}"
    );
    let rounds = mesh.rounds(&targets, RUNS, INLINE_END_BOUND, true).await;
    let (rows, mut problems) = (rounds.rows, rounds.problems);
    for (target, report) in &rounds.reports {
        if *target == Target::Models && report.durable.retried_turns == 0 {
            if report.inline.ended_retryable > 0 {
                // The dead replica carried streams (inline runs on it ended), so durable turns
                // on it must have been withdrawn and run again on the other.
                problems.push(format!(
                    "svc-models: no durable turn was retried on the other replica: {}",
                    report.row()
                ));
            } else {
                // The balancer had no stream on replica 0 at the kill (its probe may have
                // taken it out under load): nothing to fail over, nothing lost.
                eprintln!(
                    "svc-models: the killed replica carried no stream: {}",
                    report.row()
                );
            }
        }
    }
    mesh.stop().await?;
    assert!(
        problems.is_empty(),
        "scale-out table:\n{}\nproblems (logs in {}):\n{}",
        rows.join("\n"),
        log_dir.display(),
        problems.join("\n")
    );
    let _ = std::fs::remove_dir_all(&log_dir);
    Ok(())
}
