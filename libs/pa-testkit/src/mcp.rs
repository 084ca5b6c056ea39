//! A minimal MCP server over streamable HTTP (JSON responses, no server-sent stream) with a
//! configurable number of tools, for benchmarks and tests that need an MCP server of a given
//! size without Node: `initialize`, `tools/list`, `tools/call` (every tool answers its
//! arguments back) and `ping`. Counts the listings it answered, so a test can see whether a
//! client listed again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::net::{KillableListener, stopped};

struct Shared {
    tools: AtomicUsize,
    listings: AtomicUsize,
    calls: AtomicUsize,
}

/// The running server; stops when dropped.
pub struct McpToolServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl McpToolServer {
    /// Serves `tools` tools named `tool_000`, `tool_001`, … on a free 127.0.0.1 port.
    pub async fn start(tools: usize) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            tools: AtomicUsize::new(tools),
            listings: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
        });
        let (stop, stop_rx) = watch::channel(false);
        let app = axum::Router::new()
            .route(
                "/mcp",
                axum::routing::post(handle)
                    .get(no_stream)
                    .delete(end_session),
            )
            .with_state(shared.clone());
        let listener = KillableListener::new(listener, stop_rx.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopped(stop_rx))
                .await;
        });
        Ok(Self { addr, shared, stop })
    }

    /// The endpoint to configure as an `mcp_http` integration's `url`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// How many `tools/list` requests were answered.
    pub fn listings(&self) -> usize {
        self.shared.listings.load(Ordering::SeqCst)
    }

    /// How many `tools/call` requests were answered.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// From now on, list `tools` tools (a server whose tools changed).
    pub fn set_tools(&self, tools: usize) {
        self.shared.tools.store(tools, Ordering::SeqCst);
    }
}

impl Drop for McpToolServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The tool list: `tool_NNN`, each with one string argument, read-only.
pub fn mcp_tool_list(tools: usize) -> Vec<Value> {
    (0..tools)
        .map(|i| {
            json!({
                "name": format!("tool_{i:03}"),
                "description": format!("Benchmark tool number {i}: answers its arguments back."),
                "inputSchema": {
                    "type": "object",
                    "properties": { "text": { "type": "string", "description": "anything" } },
                    "required": ["text"]
                },
                "annotations": { "readOnlyHint": true }
            })
        })
        .collect()
}

async fn no_stream() -> StatusCode {
    StatusCode::METHOD_NOT_ALLOWED
}

async fn end_session() -> StatusCode {
    StatusCode::OK
}

async fn handle(State(shared): State<Arc<Shared>>, _headers: HeaderMap, body: String) -> Response {
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return reply(json!({"jsonrpc": "2.0", "id": null,
            "error": {"code": -32700, "message": "parse error"}}));
    };
    // A notification (no id) is accepted without a body.
    let Some(id) = request.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    let params = request.get("params").cloned().unwrap_or(Value::Null);
    let result = match request["method"].as_str().unwrap_or_default() {
        "initialize" => json!({
            "protocolVersion": params["protocolVersion"].as_str().unwrap_or("2025-06-18"),
            "capabilities": { "tools": {} },
            "serverInfo": { "name": "pa-testkit-tools", "version": "1.0.0" }
        }),
        "ping" => json!({}),
        "tools/list" => {
            shared.listings.fetch_add(1, Ordering::SeqCst);
            json!({ "tools": mcp_tool_list(shared.tools.load(Ordering::SeqCst)) })
        }
        "tools/call" => {
            shared.calls.fetch_add(1, Ordering::SeqCst);
            json!({ "content": [{ "type": "text", "text": params["arguments"].to_string() }] })
        }
        other => {
            return reply(json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": format!("no method {other}")}}));
        }
    };
    reply(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

fn reply(body: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
