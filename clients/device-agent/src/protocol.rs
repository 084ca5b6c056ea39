//! The JSON messages on the device's WebSocket (one message per text frame), defined once in
//! `pa-device-wire` (ADR 0205) for the gateway, this agent and the browser devices.
//!
//! Device → gateway: `hello` first (its tools), then one `result` per `call`.
//! Gateway → device: `welcome` (who the gateway says the device is), `call`, `cancel`, and
//! `error` when it refuses the connection.
//! Liveness is WebSocket ping/pong: the device pings every [`PING_INTERVAL`], and either side
//! treats [`DEAD_AFTER`] without a frame from the other as a dead connection.

pub use pa_device_wire::{
    AnnouncedTool, CONNECT_PATH, DEAD_AFTER, DeviceFrame, ENROLL_PATH, EnrollRequest,
    EnrollResponse, GatewayFrame, PING_INTERVAL,
};

/// What this agent says it runs on, e.g. `linux-x86_64`.
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}
