//! Claim-check for a durable run's large payloads (ADR 0161). Temporal keeps every activity's
//! input and output in the workflow's history, so what the workflow hands around stays small:
//! a chat history or a tool result above the threshold is stored once in Redis (for as long as
//! the run's events) and travels as a reference, which only activities resolve — the workflow
//! never reads the store, so its replay stays deterministic.
//!
//! A reference is a tool message whose content is `MARK<sha256>`, or a message of role
//! [`HISTORY_ROLE`] standing for a stored run of messages. Keys are `pa:run:{run_id}:claim:
//! {sha256}`: content-addressed (a retried activity stores the same value under the same key)
//! and scoped to the run (a reference cannot reach another run's payloads). A tool result that
//! merely looks like a reference is claimed too, so every marker the workflow holds is real.

use deadpool_redis::redis;
use pa_agent::TurnMessage;
use pa_kit::PaError;
use pa_kit::redis::Pool;
use pa_proto::v1::AgUiEvent;
use pa_proto::v1::ag_ui_event::Event;
use sha2::{Digest, Sha256};

/// The default of `PA_CLAIM_CHECK_BYTES`.
pub const DEFAULT_THRESHOLD: usize = 64 * 1024;
/// The prefix of a claimed content.
pub const MARK: &str = "\u{1}pa-claim:";
/// The role of a message standing for a stored run of messages.
pub const HISTORY_ROLE: &str = "pa.claim";
/// As long as a run's events are kept.
const TTL_SECS: u64 = 24 * 3600;
/// A stored history holds at most this many levels of stored histories.
const MAX_DEPTH: usize = 3;

#[derive(Clone)]
pub struct Claims {
    redis: Pool,
    /// Payloads above this many bytes are claimed.
    pub threshold: usize,
}

fn key(run_id: &str, digest: &str) -> String {
    pa_bus::keys::run_claim(run_id, digest)
}

fn store_error(err: impl std::fmt::Display) -> PaError {
    tracing::warn!(%err, "claim store");
    PaError::unavailable("the run's payload store is unavailable").with_retry_after_ms(1000)
}

/// The digest a marker names, if `content` is one.
fn marked(content: &str) -> Option<&str> {
    let digest = content.strip_prefix(MARK)?;
    (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit())).then_some(digest)
}

impl Claims {
    pub fn new(redis: Pool, threshold: usize) -> Self {
        Self { redis, threshold }
    }

    async fn put(&self, run_id: &str, value: &str) -> Result<String, PaError> {
        let digest = hex::encode(Sha256::digest(value.as_bytes()));
        let mut set = redis::cmd("SET");
        set.arg(key(run_id, &digest))
            .arg(value)
            .arg("EX")
            .arg(TTL_SECS);
        pa_kit::redis::bounded(&self.redis, move |c| {
            Box::pin(async move { set.query_async::<()>(c).await })
        })
        .await
        .map_err(store_error)?;
        Ok(format!("{MARK}{digest}"))
    }

    async fn get(&self, run_id: &str, digest: &str) -> Result<String, PaError> {
        let mut get = redis::cmd("GETEX");
        get.arg(key(run_id, digest)).arg("EX").arg(TTL_SECS);
        let value: Option<String> = pa_kit::redis::bounded(&self.redis, move |c| {
            Box::pin(async move { get.query_async(c).await })
        })
        .await
        .map_err(store_error)?;
        value.ok_or_else(|| PaError::internal(format!("the run's stored payload {digest} is gone")))
    }

    /// A tool result's content as the workflow carries it: itself, or a reference when it is
    /// large (or looks like a reference).
    pub async fn check_content(&self, run_id: &str, content: String) -> Result<String, PaError> {
        if content.len() > self.threshold || content.starts_with(MARK) {
            self.put(run_id, &content).await
        } else {
            Ok(content)
        }
    }

    /// A history as the workflow carries it: itself, or one reference message when it is large
    /// (or holds a tool message that looks like a reference).
    pub async fn check_history(
        &self,
        run_id: &str,
        history: Vec<TurnMessage>,
    ) -> Result<Vec<TurnMessage>, PaError> {
        let json = serde_json::to_string(&history).map_err(PaError::internal)?;
        let forged = history
            .iter()
            .any(|m| m.role == "tool" && m.content.starts_with(MARK));
        if json.len() <= self.threshold && !forged {
            return Ok(history);
        }
        let marker = self.put(run_id, &json).await?;
        Ok(vec![TurnMessage::new(HISTORY_ROLE, marker)])
    }

    /// The messages with every reference resolved (what the model is sent).
    pub async fn hydrate_messages(
        &self,
        run_id: &str,
        messages: Vec<TurnMessage>,
    ) -> Result<Vec<TurnMessage>, PaError> {
        if !messages.iter().any(is_reference) {
            return Ok(messages);
        }
        let mut out = Vec::with_capacity(messages.len());
        for message in messages {
            if message.role == HISTORY_ROLE {
                out.extend(self.stored_history(run_id, &message.content, 0).await?);
            } else if let (true, Some(digest)) = (message.role == "tool", marked(&message.content))
            {
                let content = self.get(run_id, digest).await?;
                out.push(TurnMessage { content, ..message });
            } else {
                out.push(message);
            }
        }
        Ok(out)
    }

    /// A stored history: only its own history references are resolved (a tool message in it
    /// that looks like a reference is what the chat really holds).
    async fn stored_history(
        &self,
        run_id: &str,
        marker: &str,
        depth: usize,
    ) -> Result<Vec<TurnMessage>, PaError> {
        let digest =
            marked(marker).ok_or_else(|| PaError::internal("a malformed history reference"))?;
        let json = self.get(run_id, digest).await?;
        let stored: Vec<TurnMessage> = serde_json::from_str(&json).map_err(PaError::internal)?;
        let mut out = Vec::with_capacity(stored.len());
        for message in stored {
            if message.role == HISTORY_ROLE && depth < MAX_DEPTH {
                out.extend(
                    Box::pin(self.stored_history(run_id, &message.content, depth + 1)).await?,
                );
            } else {
                out.push(message);
            }
        }
        Ok(out)
    }

    /// The events with every claimed tool result resolved (what the stream gets).
    pub async fn hydrate_events(
        &self,
        run_id: &str,
        mut events: Vec<AgUiEvent>,
    ) -> Result<Vec<AgUiEvent>, PaError> {
        for event in &mut events {
            if let Some(Event::ToolCallResult(result)) = event.event.as_mut()
                && let Some(digest) = marked(&result.content)
            {
                result.content = self.get(run_id, digest).await?;
            }
        }
        Ok(events)
    }
}

fn is_reference(message: &TurnMessage) -> bool {
    message.role == HISTORY_ROLE || (message.role == "tool" && marked(&message.content).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_marker_is_a_reference() {
        let digest = "a".repeat(64);
        assert_eq!(marked(&format!("{MARK}{digest}")), Some(digest.as_str()));
        assert_eq!(marked(&format!("{MARK}{}", "a".repeat(63))), None);
        assert_eq!(marked(&format!("{MARK}../{}", "a".repeat(61))), None);
        assert_eq!(marked("plain text"), None);
        let user = TurnMessage::new("user", format!("{MARK}{digest}"));
        assert!(!is_reference(&user), "a user's text is never resolved");
        assert!(is_reference(&TurnMessage::new(
            "tool",
            format!("{MARK}{digest}")
        )));
    }

    fn claims(threshold: usize) -> Claims {
        let url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| pa_kit::config::DEFAULT_REDIS_URL.into());
        Claims::new(pa_kit::redis::pool(&url, 4).expect("pool"), threshold)
    }

    fn tool(content: String) -> TurnMessage {
        let mut message = TurnMessage::new("tool", content);
        message.tool_call_id = Some("call_1".into());
        message
    }

    #[tokio::test]
    async fn large_payloads_go_by_reference_and_come_back_whole() {
        let claims = claims(1024);
        let run = format!("claims-{}", std::process::id());
        let big = "y".repeat(5000);
        let marker = claims
            .check_content(&run, big.clone())
            .await
            .expect("stored");
        assert!(marker.starts_with(MARK) && marker.len() < 100, "{marker}");
        assert_eq!(
            claims
                .check_content(&run, "small".into())
                .await
                .expect("kept"),
            "small"
        );
        let history: Vec<TurnMessage> = (0..50)
            .map(|i| TurnMessage::new("user", format!("message {i} {}", "z".repeat(100))))
            .collect();
        let claimed = claims
            .check_history(&run, history.clone())
            .await
            .expect("stored");
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].role, HISTORY_ROLE);
        let mut carried = claimed.clone();
        carried.push(tool(marker.clone()));
        let mut expected = history.clone();
        expected.push(tool(big.clone()));
        assert_eq!(
            claims.hydrate_messages(&run, carried).await.expect("read"),
            expected
        );
    }

    #[tokio::test]
    async fn a_forged_reference_resolves_to_itself_and_never_to_another_runs_payload() {
        let claims = claims(1024);
        let victim = format!("victim-{}", std::process::id());
        let attacker = format!("attacker-{}", std::process::id());
        let secret = "s".repeat(5000);
        let victims = claims
            .check_content(&victim, secret.clone())
            .await
            .expect("stored");
        // A tool result (a web page) that is exactly the victim's marker: claimed as text.
        let carried = claims
            .check_content(&attacker, victims.clone())
            .await
            .expect("stored");
        assert_ne!(carried, victims);
        let back = claims
            .hydrate_messages(&attacker, vec![tool(carried)])
            .await
            .expect("read");
        assert_eq!(
            back[0].content, victims,
            "the page's own text, not the victim's data"
        );
        // A marker that slipped in unclaimed is looked up in this run's keys only.
        let stolen = claims
            .hydrate_messages(&attacker, vec![tool(victims)])
            .await;
        assert!(stolen.is_err(), "{stolen:?}");
        // A user's message is never resolved.
        let user = TurnMessage::new("user", carried_marker_text());
        let kept = claims
            .hydrate_messages(&attacker, vec![user.clone()])
            .await
            .expect("kept");
        assert_eq!(kept, vec![user]);
    }

    fn carried_marker_text() -> String {
        format!("{MARK}{}", "0".repeat(64))
    }
}
