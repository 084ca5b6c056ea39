//! svc-worker: the Temporal worker process (wiring only).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    svc_worker::main_from_env().await
}
