//! Where Temporal is and how to reach it: shared by the worker (svc-worker) and the starter
//! (svc-runs' durable driver), so both agree on the namespace and the task queue.

use pa_kit::config::env_or;
use temporalio_client::{
    Client, ClientOptions, ClientTlsOptions, Connection, ConnectionOptions, TlsOptions, Url,
};

/// `TEMPORAL_ADDRESS` (default `127.0.0.1:7233`), `PA_TEMPORAL_NAMESPACE` (default `default`),
/// `PA_TEMPORAL_TASK_QUEUE` (default `pa-runs`), and how to authenticate ([`TemporalAuth`]).
#[derive(Clone, Debug)]
pub struct TemporalConfig {
    pub address: String,
    pub namespace: String,
    pub task_queue: String,
    pub auth: TemporalAuth,
}

/// TLS and credentials for a Temporal that is not a plain dev server (Temporal Cloud, a
/// cluster with mTLS), ADR 0208. TLS is on when the address is `https://…` or any of these is set.
/// - `PA_TEMPORAL_CA_FILE`: PEM of the CA that signed the frontend's certificate (default: the
///   OS roots, right for Temporal Cloud).
/// - `PA_TEMPORAL_CLIENT_CERT_FILE` + `PA_TEMPORAL_CLIENT_KEY_FILE`: the client certificate of
///   mutual TLS (Temporal Cloud's namespace certificates).
/// - `PA_TEMPORAL_SERVER_NAME`: the name to check the server's certificate against, when it is
///   not the address' host.
/// - `PA_TEMPORAL_API_KEY`: an API key instead of a client certificate (implies TLS).
#[derive(Clone, Debug, Default)]
pub struct TemporalAuth {
    pub ca_file: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    pub server_name: Option<String>,
    pub api_key: Option<String>,
}

impl TemporalAuth {
    pub fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Self {
            ca_file: var("PA_TEMPORAL_CA_FILE"),
            client_cert_file: var("PA_TEMPORAL_CLIENT_CERT_FILE"),
            client_key_file: var("PA_TEMPORAL_CLIENT_KEY_FILE"),
            server_name: var("PA_TEMPORAL_SERVER_NAME"),
            api_key: var("PA_TEMPORAL_API_KEY"),
        }
    }

    fn wants_tls(&self) -> bool {
        self.ca_file.is_some()
            || self.client_cert_file.is_some()
            || self.client_key_file.is_some()
            || self.server_name.is_some()
            || self.api_key.is_some()
    }

    /// The TLS options of the connection, with the files read.
    fn tls_options(&self) -> Result<TlsOptions, TemporalError> {
        let read = |var: &'static str, path: &Option<String>| {
            path.as_deref()
                .map(|p| pa_kit::tls::read_pem(var, p))
                .transpose()
                .map_err(|e| TemporalError::Tls(e.to_string()))
        };
        let ca = read("PA_TEMPORAL_CA_FILE", &self.ca_file)?;
        let cert = read("PA_TEMPORAL_CLIENT_CERT_FILE", &self.client_cert_file)?;
        let key = read("PA_TEMPORAL_CLIENT_KEY_FILE", &self.client_key_file)?;
        let client = match (cert, key) {
            (Some(cert), Some(key)) => Some(
                ClientTlsOptions::builder()
                    .client_cert(cert)
                    .client_private_key(key)
                    .build(),
            ),
            (None, None) => None,
            _ => {
                return Err(TemporalError::Tls(
                    "PA_TEMPORAL_CLIENT_CERT_FILE and PA_TEMPORAL_CLIENT_KEY_FILE go together"
                        .into(),
                ));
            }
        };
        Ok(TlsOptions::builder()
            .maybe_server_root_ca_cert(ca)
            .maybe_domain(self.server_name.clone())
            .maybe_client_tls_options(client)
            .build())
    }
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
            auth: TemporalAuth::from_env(),
        }
    }

    /// Whether the connection uses TLS: an `https://` address or any TLS setting.
    pub fn uses_tls(&self) -> bool {
        self.address.starts_with("https://") || self.auth.wants_tls()
    }

    /// The frontend's URL: `http://` for a plain host:port, `https://` when TLS is on.
    fn url(&self) -> Result<Url, TemporalError> {
        let bare = self
            .address
            .strip_prefix("http://")
            .or_else(|| self.address.strip_prefix("https://"))
            .unwrap_or(&self.address);
        if self.address.starts_with("http://") && self.auth.wants_tls() {
            return Err(TemporalError::Tls(format!(
                "TEMPORAL_ADDRESS {:?} says http:// but TLS settings are set",
                self.address
            )));
        }
        let scheme = if self.uses_tls() { "https" } else { "http" };
        Url::parse(&format!("{scheme}://{bare}"))
            .map_err(|_| TemporalError::Address(self.address.clone()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemporalError {
    #[error("TEMPORAL_ADDRESS {0:?} is not a valid address")]
    Address(String),
    #[error("Temporal TLS: {0}")]
    Tls(String),
    #[error("cannot reach Temporal at {address}: {reason}")]
    Connect { address: String, reason: String },
}

/// A client of the configured namespace.
pub async fn connect(config: &TemporalConfig) -> Result<Client, TemporalError> {
    let url = config.url()?;
    let failed = |reason: String| TemporalError::Connect {
        address: config.address.clone(),
        reason,
    };
    let tls = if config.uses_tls() {
        Some(config.auth.tls_options()?)
    } else {
        None
    };
    let options = ConnectionOptions::new(url)
        .maybe_tls_options(tls)
        .maybe_api_key(config.auth.api_key.clone())
        .build();
    let connection = Connection::connect(options)
        .await
        .map_err(|e| failed(error_chain(&e)))?;
    Client::new(
        connection,
        ClientOptions::new(config.namespace.clone()).build(),
    )
    .map_err(|e| failed(e.to_string()))
}

/// An error with its sources: a TLS failure's reason is two or three levels down.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// The size of a workflow's history: how many events, and how many bytes they take encoded
/// (what Temporal's 50 MB history limit counts), and what made them: each workflow task,
/// activity task and local activity is work for the Temporal server. `pa-bench durable`
/// reports it per run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistorySize {
    pub events: usize,
    pub bytes: usize,
    /// WorkflowTaskScheduled events.
    pub workflow_tasks: usize,
    /// ActivityTaskScheduled events.
    pub activity_tasks: usize,
    /// Local activities' markers.
    pub local_activities: usize,
    /// The workflow has closed (completed, failed, terminated, …).
    pub closed: bool,
}

/// Reads the history of the workflow `workflow_id` (a run id) and measures it.
pub async fn history_size(client: &Client, workflow_id: &str) -> Result<HistorySize, String> {
    use futures::StreamExt;
    use prost::Message;
    use temporalio_common::protos::constants::LOCAL_ACTIVITY_MARKER_NAME;
    use temporalio_common::protos::temporal::api::enums::v1::EventType;
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    let handle =
        client.get_workflow_handle::<crate::chat::ChatAgentWorkflow>(workflow_id.to_string());
    let mut history = handle.fetch_history(Default::default());
    let mut size = HistorySize::default();
    while let Some(event) = history.next().await {
        let event = event.map_err(|e| e.to_string())?;
        size.events += 1;
        size.bytes += event.encoded_len();
        match event.event_type() {
            EventType::WorkflowTaskScheduled => size.workflow_tasks += 1,
            EventType::ActivityTaskScheduled => size.activity_tasks += 1,
            EventType::WorkflowExecutionCompleted
            | EventType::WorkflowExecutionFailed
            | EventType::WorkflowExecutionTerminated
            | EventType::WorkflowExecutionCanceled
            | EventType::WorkflowExecutionTimedOut
            | EventType::WorkflowExecutionContinuedAsNew => size.closed = true,
            _ => {}
        }
        if let Some(Attributes::MarkerRecordedEventAttributes(marker)) = &event.attributes
            && marker.marker_name == LOCAL_ACTIVITY_MARKER_NAME
        {
            size.local_activities += 1;
        }
    }
    Ok(size)
}

/// [`history_size`] once the workflow has closed (its last workflow task may complete a moment
/// after the run's end is stored), or as it stands after `within`.
pub async fn closed_history_size(
    client: &Client,
    workflow_id: &str,
    within: std::time::Duration,
) -> Result<HistorySize, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let size = history_size(client, workflow_id).await?;
        if size.closed || tokio::time::Instant::now() > deadline {
            return Ok(size);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
