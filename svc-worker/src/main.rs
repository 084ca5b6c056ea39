//! svc-worker: the Temporal worker process (wiring only).
//!
//! Today it connects to Temporal's frontend and reports whether it is reachable through
//! tonic-health (service name `temporal`); the ChatAgentWorkflow, the Curator and schedules
//! arrive with the durable-runs issue.

use std::time::Duration;

use pa_kit::config::{env_or, env_parse};
use pa_kit::grpc::GrpcServer;
use tonic_health::ServingStatus;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pa_kit::service_main("svc-worker", |shutdown| async move {
        let listen_addr = env_or("PA_WORKER_ADDR", "127.0.0.1:50055");
        let temporal = env_or("TEMPORAL_ADDRESS", "127.0.0.1:7233");
        let timeout = Duration::from_millis(env_parse("PA_REQUEST_TIMEOUT_MS", 30_000)?);
        let listener = pa_kit::grpc::bind(&listen_addr).await?;
        let server = GrpcServer::new(timeout)?;
        let health = server.health.clone();
        let stop = shutdown.token();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let reachable = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect(&temporal),
                )
                .await
                .is_ok_and(|r| r.is_ok());
                if last != Some(reachable) {
                    tracing::info!(temporal, reachable, "Temporal frontend");
                    let status = if reachable {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    health.set_service_status("temporal", status).await;
                    last = Some(reachable);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
        server.serve(listener, shutdown).await?;
        Ok(())
    })
    .await
}
