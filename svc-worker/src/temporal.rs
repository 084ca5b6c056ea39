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
    /// The task queue of background work (the Curator, the maintenance schedules): its own
    /// queue and worker, so a backlog of it never delays a run's turns (ADR 0193).
    pub fn background_queue(&self) -> String {
        format!("{}-background", self.task_queue)
    }

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

/// The size of a workflow's history: how many events, and how many bytes they take encoded
/// (what Temporal's 50 MB history limit counts). `pa-bench durable` reports it per run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistorySize {
    pub events: usize,
    pub bytes: usize,
}

/// Reads the history of the workflow `workflow_id` (a run id) and measures it.
pub async fn history_size(client: &Client, workflow_id: &str) -> Result<HistorySize, String> {
    use futures::StreamExt;
    use prost::Message;
    let handle =
        client.get_workflow_handle::<crate::chat::ChatAgentWorkflow>(workflow_id.to_string());
    let mut history = handle.fetch_history(Default::default());
    let mut size = HistorySize::default();
    while let Some(event) = history.next().await {
        let event = event.map_err(|e| e.to_string())?;
        size.events += 1;
        size.bytes += event.encoded_len();
    }
    Ok(size)
}
