//! The JSON messages on the device's WebSocket (one message per text frame).
//!
//! Device → gateway: `hello` first (its tools), then one `result` per `call`.
//! Gateway → device: `welcome` (who the gateway says the device is), `call`, `cancel`.
//! Liveness is WebSocket ping/pong: the device pings every [`PING_INTERVAL`], and either side
//! treats [`DEAD_AFTER`] without a frame from the other as a dead connection.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tools::ToolSpec;

pub const PING_INTERVAL: Duration = Duration::from_secs(15);
pub const DEAD_AFTER: Duration = Duration::from_secs(45);
/// The gateway path the device connects to (the device token as `Authorization: Bearer`).
pub const CONNECT_PATH: &str = "/v1/devices/connect";
/// The gateway path that trades an enrollment code for a device id and token.
pub const ENROLL_PATH: &str = "/v1/devices/enroll";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeviceMessage {
    Hello {
        agent_version: String,
        platform: String,
        read_only: bool,
        tools: Vec<ToolSpec>,
    },
    Result {
        id: String,
        content: String,
        is_error: bool,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GatewayMessage {
    Welcome {
        device_id: String,
        #[serde(default)]
        name: String,
    },
    Call {
        id: String,
        tool: String,
        #[serde(default)]
        arguments: Value,
    },
    /// The caller gave up on a call (timeout, run cancelled): stop it, no result is expected.
    Cancel { id: String },
}

/// The body of `POST /v1/devices/enroll`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub code: String,
    pub name: String,
    pub kind: String,
    pub platform: String,
}

/// Its answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub device_id: String,
    pub device_token: String,
    #[serde(default)]
    pub name: String,
}

pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let call: GatewayMessage = serde_json::from_str(
            r#"{"type":"call","id":"c1","tool":"fs_read","arguments":{"path":"a"}}"#,
        )
        .unwrap();
        assert_eq!(
            call,
            GatewayMessage::Call {
                id: "c1".into(),
                tool: "fs_read".into(),
                arguments: serde_json::json!({"path": "a"})
            }
        );
        let result = serde_json::to_value(DeviceMessage::Result {
            id: "c1".into(),
            content: "x".into(),
            is_error: false,
        })
        .unwrap();
        assert_eq!(result["type"], "result");
        assert_eq!(result["is_error"], false);
    }
}
