//! svc-gateway: wiring only.

#[global_allocator]
static ALLOCATOR: pa_kit::Allocator = pa_kit::ALLOCATOR;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    svc_gateway::main_from_env().await
}
