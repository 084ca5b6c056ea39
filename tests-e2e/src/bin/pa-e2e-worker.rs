//! svc-worker, built inside tests-e2e so its tests can start it as a process of its own
//! (`CARGO_BIN_EXE_pa-e2e-worker`) and kill it.

// As the service binaries do (ADR 0232), so the processes the chaos suite kills are theirs.
#[global_allocator]
static ALLOCATOR: pa_kit::Allocator = pa_kit::ALLOCATOR;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    svc_worker::main_from_env().await
}
