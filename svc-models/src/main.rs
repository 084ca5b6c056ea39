//! svc-models: wiring only.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pa_kit::service_main_with_secrets("svc-models", &["PA_KEK"], |shutdown| async move {
        let config = svc_models::Config::from_env()?;
        let listener = pa_kit::grpc::bind(&config.listen_addr).await?;
        svc_models::run(config, listener, shutdown).await?;
        Ok(())
    })
    .await
}
