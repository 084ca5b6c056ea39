//! The device WebSocket's frames: the one definition (ADR 0205).
//!
//! A device (`pa-device`, the browser extension, the cloud browser) keeps one WebSocket to the
//! gateway ([`CONNECT_PATH`], subprotocol [`DEVICE_PROTOCOL`]); every message is one JSON text
//! frame with a `type`:
//!
//! - device → gateway ([`DeviceFrame`]): `hello` first (its [`AnnouncedTool`]s), one `result`
//!   per `call`, and `ping` from a browser, which cannot send WebSocket pings;
//! - gateway → device ([`GatewayFrame`]): `welcome`, `call`, `cancel`, and `error` before it
//!   closes a connection it refuses.
//!
//! Reading is lenient ([`DeviceFrame::parse`]: defaults for missing optional fields, unknown
//! fields ignored) so older devices keep working; tests hold clients to
//! [`DeviceFrame::parse_strict`]. [`json_schema`] describes the frames for the JS devices; it is
//! committed as `device-frames.schema.json` and a test keeps the file equal to it, and
//! `tests/roundtrip.rs` runs the browser extension's frames through these types.

mod constants;
mod enroll;
mod frames;
mod schema;

pub use constants::{
    CONNECT_PATH, DEAD_AFTER, DEVICE_PROTOCOL, ENROLL_PATH, MAX_FRAME_BYTES, PING_INTERVAL,
    TOKEN_PROTOCOL_PREFIX,
};
pub use enroll::{EnrollRequest, EnrollResponse};
pub use frames::{AnnouncedTool, DeviceFrame, FrameError, GatewayFrame};
pub use schema::json_schema;
