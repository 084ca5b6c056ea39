//! How a tool call reaches a device across gateway replicas, through Redis. svc-tools and the
//! gateway share these names and shapes; nothing else does.
//!
//! - `pa:device:{device_id}:online` = the id of the gateway connection holding the device's
//!   socket, with a TTL ([`ONLINE_TTL`]) the gateway refreshes every [`HEARTBEAT`]. Absent =
//!   offline (a replica that died takes its devices offline within the TTL).
//! - `pa:device:conn:{connection_id}:calls`: the pub/sub channel of that connection. svc-tools
//!   publishes a [`BusCall`] (no subscriber = the device just went away: the call fails at once).
//! - `pa:device:result:{call_id}`: a list the gateway pushes the [`BusResult`] onto (the device's
//!   answer, or a failure when the socket drops mid-call); svc-tools waits on it with BLPOP.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const ONLINE_TTL: Duration = Duration::from_secs(30);
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A result nobody collected (the caller timed out) does not linger.
pub const RESULT_TTL: Duration = Duration::from_secs(120);

pub use crate::keys::{
    device_calls_channel as calls_channel, device_online as online_key, device_result as result_key,
};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BusCall {
    Call {
        id: String,
        /// The device's own name for the tool (unprefixed).
        tool: String,
        #[serde(default)]
        arguments: serde_json::Value,
        /// The run the call belongs to: a browser device keeps one isolated browser context per
        /// run. Empty when unknown.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        run_id: String,
    },
    /// The caller gave up (timeout): the device should stop the call.
    Cancel { id: String },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BusResult {
    pub content: String,
    pub is_error: bool,
}
