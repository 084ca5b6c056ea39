//! svc-models: wiring only.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    svc_models::main_from_env().await
}
