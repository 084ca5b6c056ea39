//! svc-runs: wiring only.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    svc_runs::main_from_env().await
}
