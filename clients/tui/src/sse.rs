//! Server-Sent Events: an incremental parser and a follower of a run's event stream that
//! reconnects with Last-Event-ID after a drop (same semantics as the web app's web/src/lib/sse.ts).

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

/// One parsed event: its id (if any) and its `data` lines joined with `\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub data: String,
}

/// Incremental text/event-stream parser. Works on bytes so a UTF-8 character split across two
/// network chunks is decoded whole.
#[derive(Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    data: Vec<String>,
    id: Option<String>,
}

impl SseParser {
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseMessage> {
        self.buffer.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = self.buffer.iter().position(|b| *b == b'\n' || *b == b'\r') {
            // A lone \r at the end may be the first half of \r\n: wait for more.
            if self.buffer[nl] == b'\r' && nl + 1 == self.buffer.len() {
                break;
            }
            let sep = if self.buffer[nl] == b'\r' && self.buffer.get(nl + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            let line: Vec<u8> = self.buffer.drain(..nl + sep).take(nl).collect();
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(SseMessage {
                        id: self.id.take(),
                        data: self.data.join("\n"),
                    });
                }
                self.data.clear();
                self.id = None;
                continue;
            }
            if line.starts_with(':') {
                continue; // a comment (keep-alive)
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "data" => self.data.push(value.to_string()),
                "id" if !value.contains('\0') => self.id = Some(value.to_string()),
                _ => {}
            }
        }
        out
    }
}

/// Orders Redis stream ids (`<ms>-<seq>`); other ids compare as strings.
pub fn compare_event_ids(a: &str, b: &str) -> std::cmp::Ordering {
    fn parse(s: &str) -> Option<(u64, u64)> {
        let (ms, seq) = s.split_once('-')?;
        Some((ms.parse().ok()?, seq.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

pub fn is_terminal(event: &Value) -> bool {
    matches!(event["type"].as_str(), Some("RUN_FINISHED" | "RUN_ERROR"))
}

#[derive(Debug)]
pub enum StreamError {
    /// The server refused the stream (4xx other than 408/429): retrying cannot help.
    Refused { status: u16, body: String },
    /// Every reconnect failed.
    GaveUp { attempts: u32, last: String },
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused { status, body } => write!(f, "event stream answered {status}: {body}"),
            Self::GaveUp { attempts, last } => {
                write!(
                    f,
                    "event stream: gave up after {attempts} attempts ({last})"
                )
            }
        }
    }
}

impl std::error::Error for StreamError {}

pub struct FollowOptions {
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Follows a run's event stream until the run's own RUN_FINISHED / RUN_ERROR (events of nested
/// sub-runs carry another runId and do not end it), reconnecting with Last-Event-ID after drops
/// and skipping events not after the last id seen, so no token is lost or repeated.
/// Returns the last event id.
pub async fn follow_run_events(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    run_id: &str,
    mut last_id: Option<String>,
    options: &FollowOptions,
    mut on_event: impl FnMut(&Value, Option<&str>),
) -> Result<Option<String>, StreamError> {
    let mut attempt = 0u32;
    loop {
        let failure = match connect(http, url, token, last_id.as_deref()).await {
            Err(e) => e,
            Ok(response) => {
                let mut parser = SseParser::default();
                let mut body = response.bytes_stream();
                let mut failure = "the stream ended before the run did".to_string();
                while let Some(chunk) = body.next().await {
                    let chunk = match chunk {
                        Ok(c) => c,
                        Err(e) => {
                            failure = e.to_string();
                            break;
                        }
                    };
                    for message in parser.feed(&chunk) {
                        if let (Some(id), Some(last)) = (&message.id, &last_id)
                            && compare_event_ids(id, last).is_le()
                        {
                            continue; // already seen before the reconnect
                        }
                        let Ok(event) = serde_json::from_str::<Value>(&message.data) else {
                            continue;
                        };
                        if message.id.is_some() {
                            last_id = message.id.clone();
                        }
                        attempt = 0;
                        on_event(&event, message.id.as_deref());
                        let own = event["runId"].as_str().is_none_or(|id| id == run_id);
                        if own && is_terminal(&event) {
                            return Ok(last_id);
                        }
                    }
                }
                Attempt::Retry(failure)
            }
        };
        let last = match failure {
            Attempt::Refused(status, body) => return Err(StreamError::Refused { status, body }),
            Attempt::Retry(e) => e,
        };
        attempt += 1;
        if attempt > options.max_attempts {
            return Err(StreamError::GaveUp {
                attempts: options.max_attempts,
                last,
            });
        }
        let delay = options
            .backoff_base
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(options.backoff_max);
        tokio::time::sleep(delay).await;
    }
}

enum Attempt {
    Refused(u16, String),
    Retry(String),
}

async fn connect(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    last_id: Option<&str>,
) -> Result<reqwest::Response, Attempt> {
    let mut request = http.get(url).header("accept", "text/event-stream");
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    let response = request
        .send()
        .await
        .map_err(|e| Attempt::Retry(e.to_string()))?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    if status >= 500 || status == 408 || status == 429 {
        Err(Attempt::Retry(format!("{status}: {body}")))
    } else {
        Err(Attempt::Refused(status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_their_ids_and_join_multi_line_data() {
        let mut p = SseParser::default();
        let out =
            p.feed(b": keep-alive\n\nid: 1-0\ndata: {\"a\":\ndata: 1}\n\nid:2-0\r\ndata:x\r\n\r\n");
        assert_eq!(
            out,
            vec![
                SseMessage {
                    id: Some("1-0".into()),
                    data: "{\"a\":\n1}".into()
                },
                SseMessage {
                    id: Some("2-0".into()),
                    data: "x".into()
                },
            ]
        );
        let v: Value = serde_json::from_str(&out[0].data).expect("multi-line JSON");
        assert_eq!(v["a"], 1);
    }

    #[test]
    fn chunks_split_anywhere_give_the_same_events() {
        let text = "id: 5-1\ndata: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"delta\":\"héllo\"}\r\n\r\ndata: no id\n\n";
        let whole = SseParser::default().feed(text.as_bytes());
        assert_eq!(whole.len(), 2);
        for split in 1..text.len() {
            let mut p = SseParser::default();
            let mut got = p.feed(&text.as_bytes()[..split]);
            got.extend(p.feed(&text.as_bytes()[split..]));
            assert_eq!(got, whole, "split at {split}");
        }
        assert_eq!(whole[1].id, None, "an id does not leak into the next event");
    }

    /// A local HTTP server: the first connection sends two events and drops; the reconnect must
    /// carry Last-Event-ID, and the replayed event it gets again is skipped.
    #[tokio::test]
    async fn a_dropped_stream_resumes_after_the_last_event_id() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let mut seen_last_ids = Vec::new();
            let bodies = [
                concat!(
                    "id: 1-0\ndata: {\"type\":\"RUN_STARTED\",\"runId\":\"r\"}\n\n",
                    "id: 2-0\ndata: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"delta\":\"Hel\"}\n\n",
                    // cut mid-event: the connection drops here
                    "id: 3-0\ndata: {\"type\":\"TEXT_MESS"
                ),
                concat!(
                    "id: 2-0\ndata: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"delta\":\"Hel\"}\n\n",
                    "id: 3-0\ndata: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"delta\":\"lo\"}\n\n",
                    "id: 4-0\ndata: {\"type\":\"RUN_FINISHED\",\"runId\":\"r\"}\n\n"
                ),
            ];
            for body in bodies {
                let (mut socket, _) = listener.accept().await.expect("accept");
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.expect("read");
                    assert!(n > 0, "client went away");
                    request.extend_from_slice(&buf[..n]);
                }
                let request = String::from_utf8_lossy(&request).to_lowercase();
                seen_last_ids.push(
                    request
                        .lines()
                        .find_map(|l| l.strip_prefix("last-event-id:"))
                        .map(|v| v.trim().to_string()),
                );
                // No content length: the body ends when the connection closes.
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                socket.write_all(head.as_bytes()).await.expect("write");
                socket.write_all(body.as_bytes()).await.expect("write");
                socket.shutdown().await.expect("shutdown");
            }
            seen_last_ids
        });
        let mut events = Vec::new();
        let options = FollowOptions {
            max_attempts: 3,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
        };
        let last = follow_run_events(
            &reqwest::Client::new(),
            &format!("http://{addr}/v1/runs/r/events"),
            None,
            "r",
            None,
            &options,
            |e, id| {
                events.push((
                    e["type"].as_str().unwrap_or("").to_string(),
                    id.map(str::to_string),
                ))
            },
        )
        .await
        .expect("the run's end");
        assert_eq!(last.as_deref(), Some("4-0"));
        let ids: Vec<_> = events.iter().filter_map(|(_, id)| id.as_deref()).collect();
        assert_eq!(ids, ["1-0", "2-0", "3-0", "4-0"], "{events:?}");
        assert_eq!(
            server.await.expect("server"),
            [None, Some("2-0".to_string())],
            "the reconnect asks for what follows the last complete event"
        );
    }

    #[tokio::test]
    async fn a_refused_stream_is_not_retried() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (returned, client_returned) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let body = r#"{"title":"Not Found","detail":"no such run"}"#;
            let answer = format!(
                "HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.expect("write");
            // A second connection would be a retry, made before the follow returned: by then it
            // waits in the listener's backlog, so accepting it does not depend on timing.
            let _ = client_returned.await;
            tokio::time::timeout(Duration::from_secs(1), listener.accept())
                .await
                .is_ok()
        });
        let err = follow_run_events(
            &reqwest::Client::new(),
            &format!("http://{addr}/v1/runs/x/events"),
            Some("tok"),
            "x",
            None,
            &FollowOptions::default(),
            |_, _| {},
        )
        .await
        .expect_err("a 404 ends the follow");
        let _ = returned.send(());
        assert!(
            matches!(err, StreamError::Refused { status: 404, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("no such run"));
        assert!(!server.await.expect("server"), "a 404 is not retried");
    }

    #[test]
    fn redis_ids_order_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_event_ids("9-0", "10-0"), Less);
        assert_eq!(compare_event_ids("10-2", "10-10"), Less);
        assert_eq!(compare_event_ids("10-2", "10-2"), Equal);
        assert_eq!(compare_event_ids("11-0", "10-99"), Greater);
    }
}
