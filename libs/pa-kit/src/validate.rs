//! One validation layer for text that enters the platform, used by the gateway (HTTP and its
//! public gRPC API) before anything is forwarded: no NUL character in any string (Postgres
//! refuses NUL in `text`, and a refusal there would surface as an internal error), ids of a
//! bounded length without control characters. The messages name the field, never echo the
//! value (it may be 8,000 characters or binary).

use serde::Serialize;
use serde_json::Value;

use crate::PaError;

/// The longest id a path or a message may carry (bytes of UTF-8).
pub const MAX_ID_BYTES: usize = 256;

/// Refuses a string with a NUL character.
pub fn text(field: &str, value: &str) -> Result<(), PaError> {
    if value.contains('\0') {
        return Err(PaError::bad_request(format!(
            "{field} must not contain NUL characters"
        )));
    }
    Ok(())
}

/// An id (of a chat, run, memory, key, provider, model label …): 1..=[`MAX_ID_BYTES`] bytes,
/// no control characters.
pub fn id(field: &str, value: &str) -> Result<(), PaError> {
    if value.is_empty() || value.len() > MAX_ID_BYTES {
        return Err(PaError::bad_request(format!(
            "{field} must be 1-{MAX_ID_BYTES} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(PaError::bad_request(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// Whether a JSON key names an id (`id`, `chat_id`, `runId` …).
fn is_id_key(key: &str) -> bool {
    key == "id" || key.ends_with("_id") || key.ends_with("Id")
}

/// Refuses a JSON document with a NUL character in any string or object key, or an id (a
/// non-empty string under a key named `id`, `…_id` or `…Id`) that [`id`] refuses; the error
/// names where (a JSON pointer).
pub fn json(value: &Value) -> Result<(), PaError> {
    fn walk(value: &Value, path: &mut String) -> Result<(), PaError> {
        let refuse = |path: &str| {
            PaError::bad_request(format!(
                "the string at {} must not contain NUL characters",
                if path.is_empty() { "/" } else { path }
            ))
        };
        match value {
            Value::String(s) if s.contains('\0') => Err(refuse(path)),
            Value::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                walk(item, path)?;
                path.truncate(len);
                Ok(())
            }),
            Value::Object(map) => map.iter().try_for_each(|(key, item)| {
                if key.contains('\0') {
                    return Err(refuse(path));
                }
                let len = path.len();
                path.push('/');
                path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                if is_id_key(key)
                    && let Value::String(value) = item
                    && !value.is_empty()
                {
                    id(path, value)?;
                }
                walk(item, path)?;
                path.truncate(len);
                Ok(())
            }),
            _ => Ok(()),
        }
    }
    walk(value, &mut String::new())
}

/// Refuses a message (a gRPC request, a DTO) with a NUL character in any of its strings.
pub fn message<T: Serialize>(message: &T) -> Result<(), PaError> {
    let value = serde_json::to_value(message)
        .map_err(|_| PaError::bad_request("the message cannot be read as text"))?;
    json(&value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nul_is_refused_anywhere_in_json() {
        assert!(json(&json!({"a": ["ok", {"b": "fine"}], "n": 1})).is_ok());
        let err = json(&json!({"a": ["ok", {"b": "x\u{0}y"}]})).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::BadRequest);
        assert!(err.message.contains("/a/1/b"), "{}", err.message);
        assert!(json(&json!({"k\u{0}": 1})).is_err());
        assert!(json(&json!("\u{0}")).is_err());
        // Ids are bounded wherever they are.
        assert!(json(&json!({"chat_id": "c1", "runId": "", "items": [{"id": "x"}]})).is_ok());
        assert!(json(&json!({"run_id": "r".repeat(8000)})).is_err());
        assert!(json(&json!({"items": [{"id": "a\nb"}]})).is_err());
        assert!(json(&json!({"title": "t".repeat(8000)})).is_ok());
    }

    #[test]
    fn ids_are_bounded_and_printable() {
        assert!(id("id", "0f8e2b7a-5c1d-4c7e-9a0b-1b2c3d4e5f60").is_ok());
        assert!(id("label", "openai:gpt-4o-mini").is_ok());
        assert!(id("id", "").is_err());
        assert!(id("id", &"a".repeat(MAX_ID_BYTES)).is_ok());
        let long = id("id", &"a".repeat(8000)).unwrap_err();
        assert!(long.message.len() < 100, "the value is never echoed");
        assert!(id("id", "a\u{0}b").is_err());
        assert!(id("id", "a\nb").is_err());
    }

    #[test]
    fn messages_are_checked_through_serde() {
        #[derive(Serialize)]
        struct Req {
            title: String,
            tags: Vec<String>,
        }
        let ok = Req {
            title: "hi".into(),
            tags: vec!["a".into()],
        };
        assert!(message(&ok).is_ok());
        let bad = Req {
            title: "hi".into(),
            tags: vec!["a\u{0}".into()],
        };
        assert!(message(&bad).is_err());
        assert!(text("title", "x\u{0}").is_err());
        assert!(text("title", "x").is_ok());
    }
}
