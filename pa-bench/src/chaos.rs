//! `pa-bench chaos [--runs N] [--targets svc-runs,postgres,…] [--replicas 2]`: the chaos table
//! of issue 24. For each target, N inline and N durable runs in flight (offline model, 15 ms per
//! token), `kill -9` of the target mid-stream, restart at once, every client resuming with
//! `Last-Event-ID`; one row per target (tests-e2e's chaos harness, the same as `make test`'s
//! chaos suite). With `--replicas 2` every service runs twice and a killed service replica stays
//! dead until its round's runs have ended (the other carries them; stores still restart at once). Needs `pa-e2e-service` built beside pa-bench (`cargo build --release -p
//! tests-e2e --bins`) or named by `PA_E2E_SERVICE_BIN`.

use std::time::Duration;

use tests_e2e::chaos::{ChaosMesh, ChaosSettings, Target, service_binary};

pub async fn run(
    runs: usize,
    targets: Option<&str>,
    replicas: usize,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let targets: Vec<Target> = match targets {
        Some(list) => list.split(',').filter_map(Target::parse).collect(),
        None => Target::ALL.to_vec(),
    };
    let log_dir = std::env::temp_dir().join("pa-bench-chaos");
    let mut mesh = ChaosMesh::start(ChaosSettings {
        binary: service_binary()?,
        token_delay: Duration::from_millis(15),
        env: vec![],
        log_dir: log_dir.clone(),
        replicas,
    })
    .await?;
    println!(
        "chaos: {runs} inline + {runs} durable runs per target, {replicas} replica(s) per service, kill -9 mid-stream (logs {})",
        log_dir.display()
    );
    println!("| target | inline | durable | failed after recovery | restart |");
    println!("|---|---|---|---|---|");
    for target in targets {
        let report = if replicas > 1 && target.is_service() {
            mesh.replica_round(target, runs).await?
        } else {
            mesh.round(target, runs).await?
        };
        println!("{}", report.row());
        for problem in report.problems().iter().take(5) {
            println!("    {problem}");
        }
    }
    mesh.stop().await
}
