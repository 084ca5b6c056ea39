//! svc-runs: wiring only.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pa_kit::service_main("svc-runs", |shutdown| async move {
        let config = svc_runs::Config::from_env()?;
        let listener = pa_kit::grpc::bind(&config.listen_addr).await?;
        svc_runs::run(config, listener, shutdown).await?;
        Ok(())
    })
    .await
}
