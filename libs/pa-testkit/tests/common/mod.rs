#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        // Generous: no test relies on it firing, and a loaded machine must not trip it.
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

pub fn chat_body(stream: bool, include_usage: bool) -> Value {
    let mut body = json!({
        "model": "fake-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "say hello please"}]},
        ],
        "stream": stream,
    });
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

pub async fn post(client: &reqwest::Client, url: String, body: &Value) -> reqwest::Response {
    client
        .post(url)
        .bearer_auth("sk-test-key")
        .json(body)
        .send()
        .await
        .expect("request sent")
}

/// Reads a body to its end; returns what arrived and the error that ended it, if any.
pub async fn read_body(response: reqwest::Response) -> (String, Option<reqwest::Error>) {
    let mut stream = response.bytes_stream();
    let mut buf = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(bytes) => buf.extend_from_slice(&bytes),
            Err(error) => return (String::from_utf8_lossy(&buf).into_owned(), Some(error)),
        }
    }
    (String::from_utf8_lossy(&buf).into_owned(), None)
}

/// The `data:` payloads of an SSE body, asserting the `data: ...\n\n` framing.
pub fn sse_data(body: &str) -> Vec<String> {
    let mut events = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let Some(end) = rest.find("\n\n") else {
            panic!("unterminated SSE event: {rest:?}");
        };
        let event = &rest[..end];
        let data = event
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("not a data event: {event:?}"));
        assert!(!data.contains('\n'), "multi-line data: {data:?}");
        events.push(data.to_owned());
        rest = &rest[end + 2..];
    }
    events
}

/// Parses every event but a trailing `[DONE]`.
pub fn parse_chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).expect("chunk is JSON"))
        .collect()
}
