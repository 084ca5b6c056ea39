//! svc-tools: wiring only.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pa_kit::service_main_with_secrets("svc-tools", &["PA_KEK"], |shutdown| async move {
        let config = svc_tools::config::from_env()?;
        let listener = pa_kit::grpc::bind(&config.listen_addr).await?;
        svc_tools::run(config, listener, shutdown).await?;
        Ok(())
    })
    .await
}
