//! svc-worker: the Temporal worker process (wiring only).

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
