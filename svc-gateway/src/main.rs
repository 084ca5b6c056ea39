//! svc-gateway: wiring only.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    svc_gateway::main_from_env().await
}
