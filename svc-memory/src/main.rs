//! svc-memory: wiring only.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pa_kit::service_main("svc-memory", |shutdown| async move {
        let config = svc_memory::config::from_env()?;
        let listener = pa_kit::grpc::bind(&config.listen_addr).await?;
        svc_memory::run(config, listener, shutdown).await?;
        Ok(())
    })
    .await
}
