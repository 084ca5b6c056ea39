//! Any of the six services, as its own binary runs it (`pa-e2e-service svc-runs`): built inside
//! tests-e2e so its tests (the chaos suite) can start every service as a process of its own
//! (`CARGO_BIN_EXE_pa-e2e-service`) and kill it with SIGKILL.

// As the service binaries do (ADR 0232), so the processes the chaos suite kills are theirs.
#[global_allocator]
static ALLOCATOR: pa_kit::Allocator = pa_kit::ALLOCATOR;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("svc-gateway") => svc_gateway::main_from_env().await,
        Some("svc-runs") => svc_runs::main_from_env().await,
        Some("svc-models") => svc_models::main_from_env().await,
        Some("svc-tools") => svc_tools::main_from_env().await,
        Some("svc-memory") => svc_memory::main_from_env().await,
        Some("svc-worker") => svc_worker::main_from_env().await,
        // The deployment parity tests run the migration step as its image does.
        Some("pa-migrate") => pa_ops::migrate_main_from_env().await,
        other => {
            eprintln!(
                "usage: pa-e2e-service svc-gateway|svc-runs|svc-models|svc-tools|svc-memory|svc-worker|pa-migrate (got {other:?})"
            );
            std::process::ExitCode::from(2)
        }
    }
}
