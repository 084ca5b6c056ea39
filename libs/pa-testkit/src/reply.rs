//! Scripted replies for `POST /v1/chat/completions`.

use std::time::Duration;

/// One scripted piece of an assistant turn.
///
/// In a streamed reply every `Text` / `Reasoning` chunk becomes exactly one SSE delta; a
/// `ToolCall` becomes one header delta (id, type, name, empty arguments) followed by two or
/// more argument deltas, exactly like OpenAI streams tool calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Assistant text (`delta.content`).
    Text(String),
    /// Reasoning text (`delta.reasoning_content`, the vLLM / DeepSeek convention).
    Reasoning(String),
    /// A function tool call. `arguments` is the raw JSON text the model "generates".
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
}

impl Chunk {
    /// Shorthand for [`Chunk::Text`].
    pub fn text(text: impl Into<String>) -> Chunk {
        Chunk::Text(text.into())
    }

    /// Shorthand for [`Chunk::Reasoning`].
    pub fn reasoning(text: impl Into<String>) -> Chunk {
        Chunk::Reasoning(text.into())
    }

    /// Shorthand for [`Chunk::ToolCall`].
    pub fn tool_call(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Chunk {
        Chunk::ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }
}

/// Token usage reported for a reply (see [`Reply::with_usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
}

#[derive(Debug, Clone)]
pub(crate) enum ReplyKind {
    Chunks(Vec<Chunk>),
    Error {
        status: u16,
        message: String,
        retry_after: Option<u64>,
        /// Explicit `(type, code)`; derived from the status when `None`.
        kind: Option<(String, Option<String>)>,
    },
    Hang,
}

/// A scripted answer to one `POST /v1/chat/completions` request (builder).
///
/// The same reply is rendered as an SSE stream when the request has `"stream": true` and as a
/// plain `chat.completion` object otherwise.
#[derive(Debug, Clone)]
pub struct Reply {
    pub(crate) kind: ReplyKind,
    pub(crate) usage: Option<Usage>,
    pub(crate) chunk_delay: Duration,
    pub(crate) first_byte_delay: Duration,
    pub(crate) disconnect_after: Option<usize>,
}

impl Reply {
    fn new(kind: ReplyKind) -> Reply {
        Reply {
            kind,
            usage: None,
            chunk_delay: Duration::ZERO,
            first_byte_delay: Duration::ZERO,
            disconnect_after: None,
        }
    }

    /// Assistant text, streamed word by word (each delta is a word with its leading
    /// whitespace, so the deltas concatenate back to exactly `text`).
    pub fn text(text: &str) -> Reply {
        Reply::chunks(split_words(text).into_iter().map(Chunk::Text).collect())
    }

    /// An explicit sequence of chunks; each `Text`/`Reasoning` chunk is one delta.
    pub fn chunks(chunks: Vec<Chunk>) -> Reply {
        Reply::new(ReplyKind::Chunks(chunks))
    }

    /// Report this usage instead of the default (word counts): in the final
    /// `choices: []` chunk when the request has `stream_options.include_usage = true`, and in
    /// the `usage` field of non-streamed replies.
    pub fn with_usage(mut self, prompt: u64, completion: u64, cached: u64) -> Reply {
        self.usage = Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
        });
        self
    }

    /// Wait this long before every SSE event except the first.
    pub fn with_chunk_delay(mut self, delay: Duration) -> Reply {
        self.chunk_delay = delay;
        self
    }

    /// Wait this long before sending the response headers (applies to every kind of reply).
    pub fn with_first_byte_delay(mut self, delay: Duration) -> Reply {
        self.first_byte_delay = delay;
        self
    }

    /// An HTTP error with an OpenAI-style body
    /// `{"error":{"message":..,"type":..,"param":null,"code":..}}`.
    ///
    /// `type`/`code` follow OpenAI's conventions for the status: 400 → `invalid_request_error`,
    /// 401 → `invalid_request_error`/`invalid_api_key`, 403 → `request_forbidden`,
    /// 404 → `invalid_request_error`/`model_not_found`,
    /// 429 → `requests`/`rate_limit_exceeded`, 5xx → `server_error`, others →
    /// `invalid_request_error`. An invalid status code is sent as 500.
    ///
    /// Note: `async-openai`'s default client retries 429 and 5xx (3 retries, honouring
    /// `Retry-After`), so such a reply may be followed by retried requests.
    pub fn error(status: u16, message: &str) -> Reply {
        Reply::new(ReplyKind::Error {
            status,
            message: message.to_owned(),
            retry_after: None,
            kind: None,
        })
    }

    /// Like [`Reply::error`] with an explicit error `type` and `code`, e.g.
    /// `Reply::error_with_type(429, "You exceeded your current quota", "insufficient_quota",
    /// Some("insufficient_quota"))` (a 429 that clients must not retry).
    pub fn error_with_type(
        status: u16,
        message: &str,
        error_type: &str,
        code: Option<&str>,
    ) -> Reply {
        Reply::new(ReplyKind::Error {
            status,
            message: message.to_owned(),
            retry_after: None,
            kind: Some((error_type.to_owned(), code.map(str::to_owned))),
        })
    }

    /// `429 Too Many Requests` with a `Retry-After: <secs>` header and an OpenAI rate-limit body
    /// (`type: "requests"`, `code: "rate_limit_exceeded"`). `rate_limited(0)` makes retrying
    /// clients retry at once.
    pub fn rate_limited(retry_after_secs: u64) -> Reply {
        Reply::new(ReplyKind::Error {
            status: 429,
            message: format!(
                "Rate limit reached for requests. Please try again in {retry_after_secs}s."
            ),
            retry_after: Some(retry_after_secs),
            kind: None,
        })
    }

    /// Accept the request and never answer. The connection is dropped when the server stops.
    pub fn hang() -> Reply {
        Reply::new(ReplyKind::Hang)
    }

    /// Send `n_chunks` SSE events (`data:` lines, counting the initial role chunk), then drop
    /// the connection abruptly: the chunked body is never terminated, so the client sees a
    /// body error / unexpected EOF. The finish chunk, the usage chunk and `[DONE]` are never
    /// sent (`n_chunks` is capped to the number of events before the finish chunk).
    ///
    /// For non-streamed requests the first half of the JSON body is sent before the drop.
    pub fn disconnect_after(mut self, n_chunks: usize) -> Reply {
        self.disconnect_after = Some(n_chunks);
        self
    }
}

impl Default for Reply {
    /// The provider's initial default reply: a short streamed text.
    fn default() -> Reply {
        Reply::text("Hello from the fake provider.")
    }
}

/// Splits `text` into words, each carrying its leading whitespace; concatenation is lossless.
pub(crate) fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut current));
                in_word = false;
            }
        } else {
            in_word = true;
        }
        current.push(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_words_is_lossless() {
        for text in [
            "",
            "one",
            "Hello from the fake provider.",
            "  leading and trailing  ",
            "multi\nline\ttext",
            "héllo wörld ✓",
        ] {
            let words = split_words(text);
            assert_eq!(words.concat(), text, "{text:?}");
        }
        assert_eq!(split_words("a b  c"), vec!["a", " b", "  c"]);
    }
}
