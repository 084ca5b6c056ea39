//! svc-worker, built inside tests-e2e so its tests can start it as a process of its own
//! (`CARGO_BIN_EXE_pa-e2e-worker`) and kill it.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    svc_worker::main_from_env().await
}
