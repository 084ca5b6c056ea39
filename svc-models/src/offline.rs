//! The offline model: an honest, deterministic stand-in that needs no network and no key. It
//! says what it is and repeats the user's last message, token by token, so every part of the
//! platform can be tried without a provider.

use pa_proto::v1::{ChatTurnMessage, Usage};

pub const REPLY_PREFIX: &str = "(offline echo model: no real model is configured) You said: ";

/// The reply split into streamable tokens (words with their trailing whitespace).
pub fn reply_tokens(messages: &[ChatTurnMessage]) -> Vec<String> {
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.as_str())
        .unwrap_or("");
    let reply = if last_user.trim().is_empty() {
        "(offline echo model: no real model is configured) There was no message to echo."
            .to_string()
    } else {
        format!("{REPLY_PREFIX}{last_user}")
    };
    reply
        .split_inclusive(char::is_whitespace)
        .map(str::to_string)
        .collect()
}

/// Token counts in the offline model's own unit: whitespace-separated words.
pub fn usage(messages: &[ChatTurnMessage], output_tokens: usize) -> Usage {
    let input: usize = messages
        .iter()
        .map(|m| m.content.split_whitespace().count())
        .sum();
    Usage {
        input_tokens: input as u64,
        output_tokens: output_tokens as u64,
        total_tokens: (input + output_tokens) as u64,
        model_requests: 1,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(content: &str) -> ChatTurnMessage {
        ChatTurnMessage {
            role: "user".into(),
            content: content.into(),
            ..Default::default()
        }
    }

    #[test]
    fn echoes_the_last_user_message_token_by_token() {
        let tokens = reply_tokens(&[user("first"), user("hello  there")]);
        assert_eq!(tokens.concat(), format!("{REPLY_PREFIX}hello  there"));
        assert!(tokens.len() > 5);
        assert_eq!(tokens.last().map(String::as_str), Some("there"));
    }

    #[test]
    fn usage_counts_words() {
        let usage = usage(&[user("a b c")], 4);
        assert_eq!(
            (usage.input_tokens, usage.output_tokens, usage.total_tokens),
            (3, 4, 7)
        );
    }
}
