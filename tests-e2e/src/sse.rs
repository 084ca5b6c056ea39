//! The SSE client: AG-UI events read from a response, and what two runs' events share.

use futures::StreamExt;
use serde_json::Value;

use crate::BoxError;

/// A run's events with what differs between two runs of the same conversation blanked out:
/// ids (run, thread, message) and timestamps.
pub fn normalized(events: &[SseEvent]) -> Vec<Value> {
    let run_id = events
        .first()
        .and_then(|e| e.data["runId"].as_str())
        .unwrap_or("?")
        .to_string();
    events
        .iter()
        .map(|e| {
            let mut data = e.data.clone();
            if let Some(obj) = data.as_object_mut() {
                for key in [
                    "runId",
                    "threadId",
                    "messageId",
                    "timestamp",
                    "parentMessageId",
                ] {
                    obj.remove(key);
                }
            }
            // Tool errors name the run's toolset snapshot.
            serde_json::from_str(&data.to_string().replace(&run_id, "<run>")).unwrap_or(data)
        })
        .collect()
}

pub fn tool_result(events: &[SseEvent], call_id: &str) -> String {
    events
        .iter()
        .find(|e| e.event_type() == "TOOL_CALL_RESULT" && e.data["toolCallId"] == call_id)
        .and_then(|e| e.data["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// One Server-Sent Event.
#[derive(Clone, Debug, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub data: Value,
}

impl SseEvent {
    pub fn event_type(&self) -> &str {
        self.data["type"].as_str().unwrap_or("")
    }
}

/// Parses an SSE response body until a terminal AG-UI event, the end, or `max` events.
pub async fn read_sse(
    response: reqwest::Response,
    max: Option<usize>,
) -> Result<Vec<SseEvent>, BoxError> {
    let mut events = Vec::new();
    read_sse_until(response, &mut events, &mut |_| {}, max).await?;
    Ok(events)
}

/// Parses an SSE response body into `events` (calling `seen` on each) until a terminal AG-UI
/// event (returns true) or the end of the body (false). Events read before a broken connection
/// stay in `events`, so a client can resume after the last one.
pub async fn read_sse_into(
    response: reqwest::Response,
    events: &mut Vec<SseEvent>,
    seen: &mut (dyn FnMut(&SseEvent) + Send),
) -> Result<bool, BoxError> {
    read_sse_until(response, events, seen, None).await
}

async fn read_sse_until(
    response: reqwest::Response,
    events: &mut Vec<SseEvent>,
    seen: &mut (dyn FnMut(&SseEvent) + Send),
    max: Option<usize>,
) -> Result<bool, BoxError> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut read = 0usize;
    while let Some(chunk) = stream.next().await {
        buffer.push_str(std::str::from_utf8(&chunk?)?);
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if data.is_empty() {
                continue; // a keep-alive comment
            }
            let event = SseEvent {
                id,
                data: serde_json::from_str(&data)?,
            };
            let terminal = matches!(event.event_type(), "RUN_FINISHED" | "RUN_ERROR");
            seen(&event);
            events.push(event);
            read += 1;
            if terminal {
                return Ok(true);
            }
            if max.is_some_and(|m| read >= m) {
                return Ok(false);
            }
        }
    }
    Ok(false)
}
