//! svc-memory: wiring only.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    svc_memory::main_from_env().await
}
