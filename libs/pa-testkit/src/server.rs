//! HTTP handlers speaking the OpenAI wire format.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::RecordedRequest;
use crate::reply::{Chunk, Reply, ReplyKind, Usage};

/// Largest request body read (anything bigger is recorded with a `null` body and rejected).
const MAX_BODY_BYTES: usize = 64 << 20;
/// Embedding length when the request has no `dimensions`.
const DEFAULT_DIMENSIONS: u64 = 8;
/// Upper bound for `dimensions` (OpenAI's largest model has 3072).
const MAX_DIMENSIONS: u64 = 1 << 16;
const SYSTEM_FINGERPRINT: &str = "fp_pa_testkit";
/// Ids returned by `GET /v1/models`, with their owner.
pub(crate) const MODELS: &[(&str, &str)] = &[
    ("fake-model", "pa-testkit"),
    ("fake-reasoning-model", "pa-testkit"),
    ("fake-embedding-model", "pa-testkit"),
    ("gpt-4o-mini", "system"),
    ("text-embedding-3-small", "system"),
];
const MODELS_CREATED: u64 = 1_700_000_000;

/// State shared between the handle(s) and the request handlers.
pub(crate) struct Shared {
    queue: Mutex<VecDeque<Reply>>,
    default_reply: Mutex<Reply>,
    requests: Mutex<Vec<RecordedRequest>>,
    stop: watch::Receiver<bool>,
    next_id: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(stop: watch::Receiver<bool>) -> Shared {
        Shared {
            queue: Mutex::new(VecDeque::new()),
            default_reply: Mutex::new(Reply::default()),
            requests: Mutex::new(Vec::new()),
            stop,
            next_id: AtomicU64::new(1),
        }
    }

    pub(crate) fn push(&self, reply: Reply) {
        lock(&self.queue).push_back(reply);
    }

    pub(crate) fn set_default(&self, reply: Reply) {
        *lock(&self.default_reply) = reply;
    }

    pub(crate) fn pending(&self) -> usize {
        lock(&self.queue).len()
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    pub(crate) fn request_count(&self) -> usize {
        lock(&self.requests).len()
    }

    pub(crate) fn clear_requests(&self) {
        lock(&self.requests).clear();
    }

    fn record(&self, request: RecordedRequest) {
        lock(&self.requests).push(request);
    }

    fn next_reply(&self) -> Reply {
        if let Some(reply) = lock(&self.queue).pop_front() {
            return reply;
        }
        lock(&self.default_reply).clone()
    }

    fn next_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-fake{n:020}")
    }
}

pub(crate) fn router(shared: std::sync::Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(shared)
}

/// The single entry point: records the request, then dispatches on method and path.
async fn handle(State(shared): State<std::sync::Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    let recorded_body = match &parsed {
        Some(value) => value.clone(),
        None if bytes.is_empty() => Value::Null,
        None => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
    };
    let text = |value: &HeaderValue| String::from_utf8_lossy(value.as_bytes()).into_owned();
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    shared.record(RecordedRequest {
        method: method.clone(),
        path: path.clone(),
        authorization: parts.headers.get(header::AUTHORIZATION).map(text),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), text(value)))
            .collect(),
        body: recorded_body,
    });

    match (method.as_str(), path.as_str()) {
        ("POST", "/v1/chat/completions") => chat_completions(&shared, parsed).await,
        ("POST", "/v1/embeddings") => embeddings(parsed),
        ("GET", "/v1/models") => list_models(),
        ("GET", p) if p.starts_with("/v1/models/") => {
            retrieve_model(p.trim_start_matches("/v1/models/"))
        }
        (m, p) => api_error(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({m} {p})"),
            "invalid_request_error",
            None,
            None,
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// `{"error":{"message":..,"type":..,"param":..,"code":..}}` with the given status.
fn api_error(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let body = json!({
        "error": { "message": message, "type": kind, "param": param, "code": code }
    });
    (status, Json(body)).into_response()
}

fn invalid_json() -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't \
         using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was \
         sent was not valid JSON.)",
        "invalid_request_error",
        None,
        None,
    )
}

fn missing_model() -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "you must provide a model parameter",
        "invalid_request_error",
        None,
        None,
    )
}

fn invalid_param(param: &str, message: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        Some(param),
        None,
    )
}

fn scripted_error(
    status: u16,
    message: &str,
    retry_after: Option<u64>,
    kind: Option<&(String, Option<String>)>,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (kind, code) = match (kind, status.as_u16()) {
        (Some((kind, code)), _) => (kind.as_str(), code.as_deref()),
        (None, 401) => ("invalid_request_error", Some("invalid_api_key")),
        (None, 403) => ("request_forbidden", None),
        (None, 404) => ("invalid_request_error", Some("model_not_found")),
        (None, 429) => ("requests", Some("rate_limit_exceeded")),
        (None, 500..) => ("server_error", None),
        (None, _) => ("invalid_request_error", None),
    };
    let mut response = api_error(status, message, kind, None, code);
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// A response whose body fails at once: hyper drops the connection.
fn aborted() -> Response {
    Response::new(Body::from_stream(futures::stream::once(async {
        Err::<Bytes, io::Error>(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "fake provider stopped",
        ))
    })))
}

/// Sleeps for `delay`; returns false (early) when the server stops.
async fn sleep_unless_stopped(delay: Duration, stop: &watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = crate::net::stopped(stop.clone()) => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Chat completions

struct Completion {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Completion {
    /// A `chat.completion.chunk` object. With `include_usage`, OpenAI sends `"usage": null`
    /// on every chunk but the last.
    fn chunk(&self, choices: Value, usage: Option<Value>) -> Value {
        let mut object = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        });
        if self.include_usage {
            object["usage"] = usage.unwrap_or(Value::Null);
        }
        object
    }

    fn choice_chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        self.chunk(
            json!([{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }]),
            None,
        )
    }
}

async fn chat_completions(shared: &Shared, body: Option<Value>) -> Response {
    let Some(Value::Object(request)) = body else {
        return invalid_json();
    };
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return missing_model();
    };
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'messages'.",
            "invalid_request_error",
            Some("messages"),
            Some("missing_required_parameter"),
        );
    };
    let stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let include_usage = stream
        && request
            .get("stream_options")
            .and_then(|options| options.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);

    let reply = shared.next_reply();
    if !reply.first_byte_delay.is_zero()
        && !sleep_unless_stopped(reply.first_byte_delay, &shared.stop).await
    {
        return aborted();
    }
    let chunks = match reply.kind {
        ReplyKind::Hang => {
            crate::net::stopped(shared.stop.clone()).await;
            return aborted();
        }
        ReplyKind::Error {
            status,
            ref message,
            retry_after,
            ref kind,
        } => return scripted_error(status, message, retry_after, kind.as_ref()),
        ReplyKind::Chunks(ref chunks) => chunks,
    };

    let completion = Completion {
        id: shared.next_id("chatcmpl"),
        created: unix_now(),
        model: model.to_owned(),
        include_usage,
    };
    let usage = reply
        .usage
        .unwrap_or_else(|| default_usage(messages, chunks));
    let usage = usage_json(usage, reasoning_words(chunks));
    if stream {
        stream_response(shared, &completion, chunks, usage, &reply)
    } else {
        json_response(&completion, chunks, usage, reply.disconnect_after.is_some())
    }
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn reasoning_words(chunks: &[Chunk]) -> u64 {
    chunks
        .iter()
        .map(|chunk| match chunk {
            Chunk::Reasoning(text) => words(text),
            _ => 0,
        })
        .sum()
}

/// Word counts: the text of every request message vs. everything the reply generates.
fn default_usage(messages: &[Value], chunks: &[Chunk]) -> Usage {
    let prompt_tokens = messages
        .iter()
        .map(|message| match message.get("content") {
            Some(Value::String(text)) => words(text),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .map(words)
                .sum(),
            _ => 0,
        })
        .sum();
    let completion_tokens = chunks
        .iter()
        .map(|chunk| match chunk {
            Chunk::Text(text) | Chunk::Reasoning(text) => words(text),
            Chunk::ToolCall { arguments, .. } => words(arguments),
        })
        .sum();
    Usage {
        prompt_tokens,
        completion_tokens,
        cached_tokens: 0,
    }
}

fn usage_json(usage: Usage, reasoning_tokens: u64) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens.saturating_add(usage.completion_tokens),
        "prompt_tokens_details": { "cached_tokens": usage.cached_tokens, "audio_tokens": 0 },
        "completion_tokens_details": {
            "reasoning_tokens": reasoning_tokens.min(usage.completion_tokens),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    })
}

/// Splits tool-call arguments into pieces of at most 12 chars, at least two pieces when the
/// arguments have two or more chars (models stream arguments a few tokens at a time).
fn split_arguments(arguments: &str) -> Vec<String> {
    let chars: Vec<char> = arguments.chars().collect();
    if chars.len() < 2 {
        return if chars.is_empty() {
            Vec::new()
        } else {
            vec![arguments.to_owned()]
        };
    }
    let size = chars.len().div_ceil(2).min(12);
    chars
        .chunks(size)
        .map(|piece| piece.iter().collect())
        .collect()
}

fn has_tool_calls(chunks: &[Chunk]) -> bool {
    chunks
        .iter()
        .any(|chunk| matches!(chunk, Chunk::ToolCall { .. }))
}

fn finish_reason(chunks: &[Chunk]) -> &'static str {
    if has_tool_calls(chunks) {
        "tool_calls"
    } else {
        "stop"
    }
}

/// The deltas of the stream, in order, starting with the role delta.
fn stream_deltas(chunks: &[Chunk]) -> Vec<Value> {
    let mut deltas = Vec::new();
    let mut tool_index = 0u32;
    for chunk in chunks {
        match chunk {
            Chunk::Text(text) => deltas.push(json!({ "content": text })),
            Chunk::Reasoning(text) => deltas.push(json!({ "reasoning_content": text })),
            Chunk::ToolCall {
                id,
                name,
                arguments,
            } => {
                deltas.push(json!({
                    "tool_calls": [{
                        "index": tool_index,
                        "id": id,
                        "type": "function",
                        "function": { "name": name, "arguments": "" },
                    }]
                }));
                for part in split_arguments(arguments) {
                    deltas.push(json!({
                        "tool_calls": [{ "index": tool_index, "function": { "arguments": part } }]
                    }));
                }
                tool_index += 1;
            }
        }
    }
    // OpenAI announces the role in the first delta: on its own (with an empty content) before
    // text, merged into the first tool-call delta (with a null content) otherwise.
    match deltas.first_mut() {
        Some(Value::Object(first)) if first.contains_key("tool_calls") => {
            first.insert("role".into(), "assistant".into());
            first.insert("content".into(), Value::Null);
            first.insert("refusal".into(), Value::Null);
        }
        _ => deltas.insert(
            0,
            json!({ "role": "assistant", "content": "", "refusal": null }),
        ),
    }
    deltas
}

fn sse_frame(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

fn stream_response(
    shared: &Shared,
    completion: &Completion,
    chunks: &[Chunk],
    usage: Value,
    reply: &Reply,
) -> Response {
    let mut frames: VecDeque<Bytes> = stream_deltas(chunks)
        .into_iter()
        .map(|delta| sse_frame(&completion.choice_chunk(delta, None).to_string()))
        .collect();
    // Never reached by `disconnect_after`: the finish chunk, the usage chunk and [DONE].
    let finish_index = frames.len();
    frames.push_back(sse_frame(
        &completion
            .choice_chunk(json!({}), Some(finish_reason(chunks)))
            .to_string(),
    ));
    if completion.include_usage {
        frames.push_back(sse_frame(
            &completion.chunk(json!([]), Some(usage)).to_string(),
        ));
    }
    frames.push_back(sse_frame("[DONE]"));

    let state = SseState {
        frames,
        delay: reply.chunk_delay,
        disconnect_at: reply.disconnect_after.map(|n| n.min(finish_index)),
        sent: 0,
        done: false,
        stop: shared.stop.clone(),
    };
    let body = Body::from_stream(futures::stream::unfold(state, SseState::next));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

struct SseState {
    frames: VecDeque<Bytes>,
    delay: Duration,
    disconnect_at: Option<usize>,
    sent: usize,
    done: bool,
    stop: watch::Receiver<bool>,
}

impl SseState {
    async fn next(mut self) -> Option<(io::Result<Bytes>, SseState)> {
        if self.done {
            return None;
        }
        if self.disconnect_at == Some(self.sent) {
            self.done = true;
            // Let hyper flush what was already written (it does so when the body is pending)
            // before the error makes it drop the connection.
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
            let error = io::Error::new(io::ErrorKind::ConnectionAborted, "scripted disconnect");
            return Some((Err(error), self));
        }
        let frame = self.frames.pop_front()?;
        if self.sent > 0
            && !self.delay.is_zero()
            && !sleep_unless_stopped(self.delay, &self.stop).await
        {
            self.done = true;
            let error = io::Error::new(io::ErrorKind::ConnectionAborted, "fake provider stopped");
            return Some((Err(error), self));
        }
        self.sent += 1;
        Some((Ok(frame), self))
    }
}

fn json_response(
    completion: &Completion,
    chunks: &[Chunk],
    usage: Value,
    truncate: bool,
) -> Response {
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for chunk in chunks {
        match chunk {
            Chunk::Text(text) => content.push_str(text),
            Chunk::Reasoning(text) => reasoning.push_str(text),
            Chunk::ToolCall {
                id,
                name,
                arguments,
            } => tool_calls.push(json!({
                "id": id,
                "type": "function",
                "function": { "name": name, "arguments": arguments },
            })),
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert(
        "content".into(),
        if content.is_empty() && !tool_calls.is_empty() {
            Value::Null
        } else {
            content.into()
        },
    );
    message.insert("refusal".into(), Value::Null);
    message.insert("annotations".into(), json!([]));
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), reasoning.into());
    }
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), tool_calls.into());
    }
    let body = json!({
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(chunks),
        }],
        "usage": usage,
    });
    if !truncate {
        return Json(body).into_response();
    }
    // Scripted disconnect: half of the JSON, then the connection drops.
    let mut bytes = body.to_string().into_bytes();
    bytes.truncate(bytes.len() / 2);
    let parts = futures::stream::iter([
        Ok(Bytes::from(bytes)),
        Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "scripted disconnect",
        )),
    ]);
    let mut response = Response::new(Body::from_stream(futures::StreamExt::then(
        parts,
        |part| async move {
            if part.is_err() {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            part
        },
    )));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

// ---------------------------------------------------------------------------------------------
// Embeddings

enum EncodingFormat {
    Float,
    Base64,
}

fn embeddings(body: Option<Value>) -> Response {
    let Some(Value::Object(request)) = body else {
        return invalid_json();
    };
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return missing_model();
    };
    // (text hashed into the vector, tokens counted for usage)
    let inputs: Vec<(String, u64)> = match request.get("input") {
        Some(Value::String(text)) if !text.is_empty() => vec![(text.clone(), words(text))],
        Some(Value::Array(items)) if !items.is_empty() => {
            let is_tokens = |v: &Value| {
                v.as_array()
                    .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_u64))
            };
            if items
                .iter()
                .all(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|text| (text.to_owned(), words(text)))
                    .collect()
            } else if items.iter().all(Value::is_u64) {
                // A single input given as token ids.
                vec![(Value::Array(items.clone()).to_string(), items.len() as u64)]
            } else if items.iter().all(is_tokens) {
                items
                    .iter()
                    .map(|tokens| {
                        let count = tokens.as_array().map_or(0, Vec::len) as u64;
                        (tokens.to_string(), count)
                    })
                    .collect()
            } else {
                return invalid_param("input", "'$.input' is invalid.");
            }
        }
        _ => return invalid_param("input", "'$.input' is invalid."),
    };
    let dimensions = match request.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(value) => match value.as_u64() {
            Some(d) if (1..=MAX_DIMENSIONS).contains(&d) => d,
            _ => {
                return invalid_param(
                    "dimensions",
                    &format!(
                        "Invalid value for 'dimensions' = {value}. Must be between 1 and {MAX_DIMENSIONS}."
                    ),
                );
            }
        },
    };
    let format = match request.get("encoding_format") {
        None | Some(Value::Null) => EncodingFormat::Float,
        Some(Value::String(f)) if f == "float" => EncodingFormat::Float,
        Some(Value::String(f)) if f == "base64" => EncodingFormat::Base64,
        Some(other) => {
            return invalid_param(
                "encoding_format",
                &format!(
                    "Invalid value for 'encoding_format' = {other}. Supported values are: 'float' and 'base64'."
                ),
            );
        }
    };
    let tokens: u64 = inputs.iter().map(|(_, n)| n).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, (text, _))| {
            let vector = embedding_vector(text, dimensions as usize);
            let embedding = match format {
                EncodingFormat::Float => json!(vector),
                EncodingFormat::Base64 => {
                    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
    .into_response()
}

/// A deterministic, L2-normalized vector derived from an FNV-1a hash of `text`
/// (stable across runs, platforms and Rust versions).
pub fn embedding_vector(text: &str, dimensions: usize) -> Vec<f32> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let raw: Vec<f64> = (0..dimensions)
        .map(|_| {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // 53 random bits → [-1, 1)
            (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm == 0.0 {
        let mut unit = vec![0.0; dimensions];
        if let Some(first) = unit.first_mut() {
            *first = 1.0;
        }
        return unit;
    }
    raw.iter().map(|x| (x / norm) as f32).collect()
}

// ---------------------------------------------------------------------------------------------
// Models

fn model_object(id: &str, owned_by: &str) -> Value {
    json!({ "id": id, "object": "model", "created": MODELS_CREATED, "owned_by": owned_by })
}

fn list_models() -> Response {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|(id, owner)| model_object(id, owner))
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

fn retrieve_model(id: &str) -> Response {
    match MODELS.iter().find(|(known, _)| *known == id) {
        Some((id, owner)) => Json(model_object(id, owner)).into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            &format!("The model '{id}' does not exist"),
            "invalid_request_error",
            Some("model"),
            Some("model_not_found"),
        ),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_into_at_least_two_parts() {
        assert!(split_arguments("").is_empty());
        assert_eq!(split_arguments("x"), vec!["x"]);
        for args in [
            "{}",
            r#"{"a":1}"#,
            r#"{"city":"Paris","unit":"celsius","days":3}"#,
        ] {
            let parts = split_arguments(args);
            assert!(parts.len() >= 2, "{args}");
            assert_eq!(parts.concat(), args);
        }
    }

    #[test]
    fn embedding_vectors_are_deterministic_and_normalized() {
        let a = embedding_vector("hello", 16);
        assert_eq!(a, embedding_vector("hello", 16));
        assert_ne!(a, embedding_vector("hello!", 16));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(embedding_vector("", 3).len(), 3);
    }

    #[test]
    fn role_is_merged_into_a_leading_tool_call() {
        let deltas = stream_deltas(&[Chunk::tool_call("call_1", "f", "{}")]);
        assert_eq!(deltas[0]["role"], "assistant");
        assert_eq!(deltas[0]["tool_calls"][0]["id"], "call_1");
        let deltas = stream_deltas(&[Chunk::text("hi")]);
        assert_eq!(
            deltas[0],
            json!({"role": "assistant", "content": "", "refusal": null})
        );
        assert_eq!(deltas[1], json!({"content": "hi"}));
    }
}
