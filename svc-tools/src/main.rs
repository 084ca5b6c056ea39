//! svc-tools: wiring only.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    svc_tools::main_from_env().await
}
