//! The frames, both ways, and how they are read.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::constants::MAX_FRAME_BYTES;

/// A tool as a device announces it in its `hello`. The gateway and svc-tools prefix the name
/// with the device and decide the tool's privilege from the device's kind; `privilege_class`
/// (read | write | exec) is only the device's own description.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AnnouncedTool {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The JSON schema of the tool's arguments.
    #[serde(default)]
    pub parameters: Value,
    #[serde(default)]
    pub privilege_class: String,
}

/// Device → gateway. Every field but a result's `id` has a default, so an older or smaller
/// device (the browser extension announces no `privilege_class`) is still read.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeviceFrame {
    /// The first frame: what the device is and the tools it offers.
    Hello {
        #[serde(default)]
        agent_version: String,
        #[serde(default)]
        platform: String,
        #[serde(default)]
        read_only: bool,
        #[serde(default)]
        tools: Vec<AnnouncedTool>,
    },
    /// The answer to one `call`.
    Result {
        id: String,
        #[serde(default)]
        content: String,
        #[serde(default)]
        is_error: bool,
    },
    /// A browser cannot send WebSocket pings: it sends this (any frame counts as alive).
    Ping {},
}

/// Gateway → device.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GatewayFrame {
    /// The device is online: who the gateway says it is.
    Welcome {
        device_id: String,
        #[serde(default)]
        name: String,
    },
    /// Run a tool; answer with a `result` of the same `id`.
    Call {
        id: String,
        /// The device's own name for the tool (unprefixed).
        tool: String,
        #[serde(default)]
        arguments: Value,
        /// The run the call belongs to (a browser keeps one isolated context per run); absent
        /// when unknown.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        run_id: String,
    },
    /// The caller gave up on a call (timeout, run cancelled): stop it, no result is expected.
    Cancel { id: String },
    /// The gateway refuses the connection (sent before it closes it).
    Error { message: String },
}

impl DeviceFrame {
    /// The tags of every variant, in declaration order.
    pub const TAGS: &'static [&'static str] = &["hello", "result", "ping"];

    /// The frame's `type`.
    pub fn tag(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Result { .. } => "result",
            Self::Ping {} => "ping",
        }
    }

    /// The gateway's reading: a missing optional field takes its default and a field the
    /// protocol does not know is ignored (older and newer devices keep working); an unknown
    /// `type`, a missing required field, a wrong type or a frame over [`MAX_FRAME_BYTES`] is
    /// an error.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        parse(text, Some(MAX_FRAME_BYTES))
    }

    /// As [`parse`](Self::parse), and a field the protocol does not know is an error too: what
    /// the tests hold every client's frames to.
    pub fn parse_strict(text: &str) -> Result<Self, FrameError> {
        parse_strict(text, Some(MAX_FRAME_BYTES))
    }
}

impl GatewayFrame {
    /// The tags of every variant, in declaration order.
    pub const TAGS: &'static [&'static str] = &["welcome", "call", "cancel", "error"];

    /// The frame's `type`.
    pub fn tag(&self) -> &'static str {
        match self {
            Self::Welcome { .. } => "welcome",
            Self::Call { .. } => "call",
            Self::Cancel { .. } => "cancel",
            Self::Error { .. } => "error",
        }
    }

    /// A device's reading: lenient like [`DeviceFrame::parse`], without its size limit (the
    /// gateway does not cap what it forwards; a device caps what its socket takes).
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        parse(text, None)
    }

    /// As [`parse`](Self::parse), refusing fields the protocol does not know.
    pub fn parse_strict(text: &str) -> Result<Self, FrameError> {
        parse_strict(text, None)
    }
}

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A device's frame over [`MAX_FRAME_BYTES`].
    TooLarge { bytes: usize },
    /// Not JSON, not an object, an unknown `type`, a missing required field or a wrong type
    /// (serde's message says which, cut to 300 characters).
    Invalid(String),
    /// Fields the protocol does not know (only [`DeviceFrame::parse_strict`] and
    /// [`GatewayFrame::parse_strict`] refuse them), as paths like `hello.tools[0].icon`.
    UnknownFields(Vec<String>),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { bytes } => write!(
                f,
                "the frame is {bytes} bytes, over the limit of {MAX_FRAME_BYTES}"
            ),
            Self::Invalid(why) => write!(f, "unreadable frame: {why}"),
            Self::UnknownFields(fields) => {
                write!(
                    f,
                    "fields the protocol does not know: {}",
                    fields.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

fn parse<T: DeserializeOwned>(text: &str, limit: Option<usize>) -> Result<T, FrameError> {
    if limit.is_some_and(|limit| text.len() > limit) {
        return Err(FrameError::TooLarge { bytes: text.len() });
    }
    serde_json::from_str(text).map_err(|e| FrameError::Invalid(shortened(e.to_string())))
}

/// serde quotes a wrong-typed string whole: a reason is kept to [`MAX_REASON_CHARS`].
fn shortened(mut reason: String) -> String {
    if let Some((at, _)) = reason.char_indices().nth(MAX_REASON_CHARS) {
        reason.truncate(at);
        reason.push('…');
    }
    reason
}

/// The longest reason a [`FrameError::Invalid`] carries, in characters.
const MAX_REASON_CHARS: usize = 300;

fn parse_strict<T: DeserializeOwned + Serialize + HasTag>(
    text: &str,
    limit: Option<usize>,
) -> Result<T, FrameError> {
    let frame: T = parse(text, limit)?;
    // Read again as a plain value (it parsed, so it is JSON) and compare with what the types
    // write back: every key of the frame must be one they know.
    let original: Value = parse(text, None)?;
    let again = serde_json::to_value(&frame).map_err(|e| FrameError::Invalid(e.to_string()))?;
    let mut unknown = Vec::new();
    unknown_keys(&original, &again, frame.tag_str(), &mut unknown);
    unknown.sort();
    if unknown.is_empty() {
        Ok(frame)
    } else {
        Err(FrameError::UnknownFields(unknown))
    }
}

trait HasTag {
    fn tag_str(&self) -> &'static str;
}

impl HasTag for DeviceFrame {
    fn tag_str(&self) -> &'static str {
        self.tag()
    }
}

impl HasTag for GatewayFrame {
    fn tag_str(&self) -> &'static str {
        self.tag()
    }
}

/// The paths of `original`'s object keys that `known` lacks. `known` is the frame as the types
/// write it, so free-form values (`parameters`, `arguments`) come back whole and match.
fn unknown_keys(original: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (original, known) {
        (Value::Object(given), Value::Object(known)) => {
            for (key, value) in given {
                let at = format!("{path}.{key}");
                match known.get(key) {
                    Some(k) => unknown_keys(value, k, &at, out),
                    None => out.push(at),
                }
            }
        }
        (Value::Array(given), Value::Array(known)) => {
            for (i, (value, k)) in given.iter().zip(known).enumerate() {
                unknown_keys(value, k, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn to_value(frame: &impl Serialize) -> Value {
        serde_json::to_value(frame).unwrap_or_default()
    }

    #[test]
    fn the_wire_format_is_the_one_the_devices_speak() {
        let call = GatewayFrame::parse(
            r#"{"type":"call","id":"c1","tool":"fs_read","arguments":{"path":"a"}}"#,
        );
        assert_eq!(
            call,
            Ok(GatewayFrame::Call {
                id: "c1".into(),
                tool: "fs_read".into(),
                arguments: json!({"path": "a"}),
                run_id: String::new(),
            })
        );
        assert_eq!(
            to_value(&DeviceFrame::Result {
                id: "c1".into(),
                content: "x".into(),
                is_error: false,
            }),
            json!({"type": "result", "id": "c1", "content": "x", "is_error": false})
        );
        assert_eq!(to_value(&DeviceFrame::Ping {}), json!({"type": "ping"}));
        assert_eq!(
            to_value(&GatewayFrame::Call {
                id: "c".into(),
                tool: "t".into(),
                arguments: json!({}),
                run_id: String::new(),
            }),
            json!({"type": "call", "id": "c", "tool": "t", "arguments": {}}),
            "an unknown run is left out, as the bus writes it"
        );
        assert_eq!(
            to_value(&GatewayFrame::Welcome {
                device_id: "d".into(),
                name: "n".into()
            }),
            json!({"type": "welcome", "device_id": "d", "name": "n"})
        );
    }

    #[test]
    fn old_devices_are_read_leniently_and_strictness_names_the_unknown_field() {
        let old = r#"{"type":"hello","tools":[{"name":"read_tab","icon":"x"}],"extra":1}"#;
        let Ok(DeviceFrame::Hello { tools, .. }) = DeviceFrame::parse(old) else {
            panic!("an old hello is read");
        };
        assert_eq!(tools[0].name, "read_tab");
        assert_eq!(
            DeviceFrame::parse_strict(old),
            Err(FrameError::UnknownFields(vec![
                "hello.extra".into(),
                "hello.tools[0].icon".into()
            ]))
        );
        assert!(DeviceFrame::parse_strict(r#"{"type":"ping"}"#).is_ok());
    }
}
