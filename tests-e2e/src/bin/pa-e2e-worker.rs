//! svc-worker, built inside tests-e2e so its tests can start it as a process of its own
//! (`CARGO_BIN_EXE_pa-e2e-worker`) and kill it.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pa_kit::service_main("svc-worker", |shutdown| async move {
        let config = svc_worker::Config::from_env()?;
        let listener = pa_kit::grpc::bind(&config.listen_addr).await?;
        svc_worker::run(config, listener, shutdown).await?;
        Ok(())
    })
    .await
}
