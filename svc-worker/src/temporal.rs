//! Where Temporal is and how to reach it: shared by the worker (svc-worker) and the starter
//! (svc-runs' durable driver), so both agree on the namespace and the task queue.

use pa_kit::config::env_or;
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};

/// `TEMPORAL_ADDRESS` (default `127.0.0.1:7233`), `PA_TEMPORAL_NAMESPACE` (default `default`),
/// `PA_TEMPORAL_TASK_QUEUE` (default `pa-runs`).
#[derive(Clone, Debug)]
pub struct TemporalConfig {
    pub address: String,
    pub namespace: String,
    pub task_queue: String,
}

impl TemporalConfig {
    pub fn from_env() -> Self {
        Self {
            address: env_or("TEMPORAL_ADDRESS", "127.0.0.1:7233"),
            namespace: env_or("PA_TEMPORAL_NAMESPACE", "default"),
            task_queue: env_or("PA_TEMPORAL_TASK_QUEUE", "pa-runs"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemporalError {
    #[error("TEMPORAL_ADDRESS {0:?} is not a valid address")]
    Address(String),
    #[error("cannot reach Temporal at {address}: {reason}")]
    Connect { address: String, reason: String },
}

/// A client of the configured namespace.
pub async fn connect(config: &TemporalConfig) -> Result<Client, TemporalError> {
    let url = if config.address.contains("://") {
        config.address.clone()
    } else {
        format!("http://{}", config.address)
    };
    let url = Url::parse(&url).map_err(|_| TemporalError::Address(config.address.clone()))?;
    let failed = |reason: String| TemporalError::Connect {
        address: config.address.clone(),
        reason,
    };
    let connection = Connection::connect(ConnectionOptions::new(url).build())
        .await
        .map_err(|e| failed(e.to_string()))?;
    Client::new(
        connection,
        ClientOptions::new(config.namespace.clone()).build(),
    )
    .map_err(|e| failed(e.to_string()))
}
