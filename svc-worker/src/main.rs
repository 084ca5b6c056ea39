//! svc-worker: the Temporal worker process (wiring only).

#[global_allocator]
static ALLOCATOR: pa_kit::Allocator = pa_kit::ALLOCATOR;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    svc_worker::main_from_env().await
}
