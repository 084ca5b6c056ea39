//! svc-models: wiring only.

#[global_allocator]
static ALLOCATOR: pa_kit::Allocator = pa_kit::ALLOCATOR;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    svc_models::main_from_env().await
}
