//! svc-gateway: wiring only.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pa_kit::service_main("svc-gateway", |shutdown| async move {
        let config = svc_gateway::Config::from_env()?;
        let listener = pa_kit::grpc::bind(&config.listen_addr).await?;
        let grpc = match &config.grpc_listen_addr {
            Some(addr) => Some(pa_kit::grpc::bind(addr).await?),
            None => None,
        };
        svc_gateway::run(config, listener, grpc, shutdown).await?;
        Ok(())
    })
    .await
}
