//! Where a device connects, and the socket's timing and limits.

use std::time::Duration;

/// The gateway path a device opens its WebSocket on.
pub const CONNECT_PATH: &str = "/v1/devices/connect";
/// The gateway path that trades a one-time enrollment code for a device id and token.
pub const ENROLL_PATH: &str = "/v1/devices/enroll";
/// The WebSocket subprotocol a device speaks (the gateway selects it).
pub const DEVICE_PROTOCOL: &str = "pa-device";
/// A browser cannot set `Authorization` on a WebSocket: it offers its token as the subprotocol
/// `pa-device-token.<token>` next to [`DEVICE_PROTOCOL`] (never echoed back).
pub const TOKEN_PROTOCOL_PREFIX: &str = "pa-device-token.";
/// A device pings at least this often (WebSocket pings, or `ping` frames from a browser).
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Either side treats this long without a frame from the other as a dead connection.
pub const DEAD_AFTER: Duration = Duration::from_secs(45);
/// A frame is at most this (a device caps a file read well below it).
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
