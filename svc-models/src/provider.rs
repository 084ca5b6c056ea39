//! Calls to OpenAI-compatible providers (OpenAI, vLLM, Ollama, llama.cpp server, OpenRouter…)
//! through `async-openai`. The request and chunk types are our own (`byot`): the typed API drops
//! `reasoning_content`, which reasoning models stream. async-openai's own retries are off
//! (ReqwestService without the retry layer): svc-models decides about retries and fallback.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::ReqwestService;
use futures::{Stream, StreamExt};
use pa_proto::v1::{ChatToolCall, ChatToolDefinition, ChatTurnMessage, Usage};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::keys::Secret;

/// What a provider call produced, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    Text(String),
    Reasoning(String),
    ToolCall(ChatToolCall),
    Finished {
        finish_reason: String,
        usage: Option<Usage>,
    },
}

/// Why a provider call failed, and whether another try (or another model) may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    /// An errors.proto slug.
    pub code: &'static str,
    pub message: String,
    /// 429, 5xx, timeouts, refused connections: the provider, not the request, is at fault.
    pub retryable: bool,
}

impl ProviderError {
    fn retryable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retryable: true,
        }
    }
    fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retryable: false,
        }
    }
}

pub fn classify(err: &OpenAIError) -> ProviderError {
    match err {
        OpenAIError::ApiError(resp) => {
            let status = resp.status_code.as_u16();
            let detail = format!("provider answered HTTP {status}");
            match status {
                429 => ProviderError::retryable(
                    "too_many_requests",
                    format!("{detail} (rate limited)"),
                ),
                408 | 500..=599 => ProviderError::retryable("unavailable", detail),
                401 | 403 => ProviderError::fatal(
                    "failed_precondition",
                    format!("{detail}: the provider refused the API key"),
                ),
                404 => ProviderError::fatal(
                    "not_found",
                    format!("{detail}: the provider does not know this model"),
                ),
                _ => ProviderError::fatal(
                    "bad_request",
                    format!("{detail}: the provider refused the request"),
                ),
            }
        }
        OpenAIError::Reqwest(e) if e.is_timeout() => {
            ProviderError::retryable("timeout", "provider timed out")
        }
        OpenAIError::Reqwest(e) if e.is_connect() => {
            ProviderError::retryable("unavailable", "cannot connect to the provider")
        }
        OpenAIError::Reqwest(_) => {
            ProviderError::retryable("unavailable", "provider connection failed")
        }
        OpenAIError::StreamError(_) => {
            ProviderError::retryable("unavailable", "provider stream broke off")
        }
        OpenAIError::JSONDeserialize(..) => ProviderError::retryable(
            "unavailable",
            "provider sent a response that is not OpenAI-compatible",
        ),
        _ => ProviderError::fatal("internal", "provider call could not be made"),
    }
}

/// Builds the reqwest client every provider call shares (connection pool, connect timeout).
/// The client for provider calls: every connection goes through `guard` (base URLs may not
/// reach private, loopback, link-local or metadata addresses unless the operator allows them).
pub fn http_client(
    guard: &pa_netguard::AddressGuard,
    connect_timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    guard
        .client_builder()
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
}

fn client(http: &reqwest::Client, base_url: &str, key: Option<&Secret>) -> Client<OpenAIConfig> {
    let mut config = OpenAIConfig::new().with_api_base(base_url.trim_end_matches('/'));
    config = config.with_api_key(key.map(Secret::expose).unwrap_or(""));
    // `build`, not `with_config`: the latter creates a fresh reqwest client (TLS roots and
    // all, several ms) on every call. Our shared client keeps its connection pool warm.
    Client::build(http.clone(), config).with_http_service(ReqwestService::new(http.clone()))
}

fn wire_message(m: &ChatTurnMessage) -> Value {
    let mut message = json!({ "role": m.role, "content": m.content });
    if let Some(id) = &m.tool_call_id {
        message["tool_call_id"] = json!(id);
    }
    if !m.tool_calls.is_empty() {
        message["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}))
            .collect();
        if m.content.is_empty() {
            message["content"] = Value::Null;
        }
    }
    message
}

pub fn chat_request(
    model: &str,
    messages: &[ChatTurnMessage],
    tools: &[ChatToolDefinition],
    max_tokens: u32,
) -> Value {
    let mut body = json!({
        "model": model,
        "messages": messages.iter().map(wire_message).collect::<Vec<_>>(),
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    if !tools.is_empty() {
        body["tools"] = tools
            .iter()
            .map(|t| {
                let params: Value = serde_json::from_str(&t.parameters_json_schema).unwrap_or_else(|_| json!({"type": "object"}));
                json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": params}})
            })
            .collect();
    }
    if max_tokens > 0 {
        body["max_tokens"] = json!(max_tokens);
    }
    body
}

#[derive(Deserialize, Default)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize, Default)]
struct WireChoice {
    #[serde(default)]
    delta: WireDelta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    /// vLLM / DeepSeek; some servers say `reasoning`.
    #[serde(default, alias = "reasoning")]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCallDelta>>,
}

#[derive(Deserialize)]
struct WireToolCallDelta {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunctionDelta>,
}

#[derive(Deserialize)]
struct WireFunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<WireUsageDetails>,
}

#[derive(Deserialize)]
struct WireUsageDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<ProviderEvent, ProviderError>> + Send>>;

/// Opens a streaming chat completion. Errors here happen before any output.
pub async fn stream_chat(
    http: &reqwest::Client,
    base_url: &str,
    key: Option<&Secret>,
    body: Value,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
) -> Result<EventStream, ProviderError> {
    let client = client(http, base_url, key);
    let opened = tokio::time::timeout(
        first_byte_timeout,
        client.chat().create_stream_byot::<Value, WireChunk>(body),
    )
    .await
    .map_err(|_| ProviderError::retryable("timeout", "provider did not answer in time"))?;
    let mut chunks = opened.map_err(|e| classify(&e))?;
    // A task reads the provider and hands events over a bounded channel (back-pressure); it
    // stops as soon as the consumer is gone.
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut tools: BTreeMap<u32, ChatToolCall> = BTreeMap::new();
        let mut finish_reason = String::from("stop");
        let mut usage = None;
        loop {
            let next = match tokio::time::timeout(idle_timeout, chunks.next()).await {
                Ok(next) => next,
                Err(_) => {
                    let _ = tx
                        .send(Err(ProviderError::retryable(
                            "timeout",
                            "provider stream stalled",
                        )))
                        .await;
                    return;
                }
            };
            let chunk = match next {
                None => break,
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    let _ = tx.send(Err(classify(&e))).await;
                    return;
                }
            };
            if let Some(u) = chunk.usage {
                usage = Some(Usage {
                    input_tokens: u.prompt_tokens,
                    output_tokens: u.completion_tokens,
                    total_tokens: u.total_tokens.max(u.prompt_tokens + u.completion_tokens),
                    cached_input_tokens: u
                        .prompt_tokens_details
                        .and_then(|d| d.cached_tokens)
                        .unwrap_or(0),
                    model_requests: 1,
                    ..Default::default()
                });
            }
            for choice in chunk.choices {
                if let Some(reason) = choice.finish_reason {
                    finish_reason = reason;
                }
                let mut events = Vec::new();
                if let Some(text) = choice.delta.reasoning_content.filter(|t| !t.is_empty()) {
                    events.push(ProviderEvent::Reasoning(text));
                }
                if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                    events.push(ProviderEvent::Text(text));
                }
                for event in events {
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                for delta in choice.delta.tool_calls.unwrap_or_default() {
                    let call = tools.entry(delta.index).or_default();
                    if let Some(id) = delta.id {
                        call.id = id;
                    }
                    if let Some(f) = delta.function {
                        if let Some(name) = f.name {
                            call.name.push_str(&name);
                        }
                        if let Some(args) = f.arguments {
                            call.arguments_json.push_str(&args);
                        }
                    }
                }
            }
        }
        for (_, call) in tools {
            if tx.send(Ok(ProviderEvent::ToolCall(call))).await.is_err() {
                return;
            }
        }
        let _ = tx
            .send(Ok(ProviderEvent::Finished {
                finish_reason,
                usage,
            }))
            .await;
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Embeddings through the provider's `/embeddings`.
pub async fn embed(
    http: &reqwest::Client,
    base_url: &str,
    key: Option<&Secret>,
    model: &str,
    inputs: &[String],
    timeout: Duration,
) -> Result<Vec<Vec<f32>>, ProviderError> {
    #[derive(Deserialize)]
    struct Item {
        index: usize,
        embedding: Vec<f32>,
    }
    #[derive(Deserialize)]
    struct Response {
        data: Vec<Item>,
    }
    let client = client(http, base_url, key);
    let body = json!({ "model": model, "input": inputs, "encoding_format": "float" });
    let response: Response = tokio::time::timeout(timeout, client.embeddings().create_byot(body))
        .await
        .map_err(|_| ProviderError::retryable("timeout", "provider did not answer in time"))?
        .map_err(|e| classify(&e))?;
    let mut data = response.data;
    data.sort_by_key(|d| d.index);
    Ok(data.into_iter().map(|d| d.embedding).collect())
}
