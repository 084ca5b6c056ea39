//! The Redis bus: every key, channel and payload that crosses a process boundary through Redis,
//! in one crate (ADR 0200). Services name a key only through [`keys`]; `tests-static` refuses a
//! `"pa:` key literal anywhere else.
//!
//! - [`run_events`]: a run's AG-UI event stream, its cancel flag and the recall hand-over.
//! - [`event_hub`]: one Redis reader for every run stream a process follows.
//! - [`approvals`]: a tool call's pending approval and its decision.
//! - [`device_bus`]: tool calls to a device across gateway replicas.
//! - [`limits`]: request rate windows and the daily token quota.
//! - [`toolset_generation`]: when a user's toolsets may be reused (ADR 0251).
//! - [`keys`]: the names themselves (also svc-runs' leases and outbox, svc-worker's claim-checked
//!   payloads and the gateway's presence sets).

pub mod approvals;
pub mod device_bus;
pub mod event_hub;
pub mod keys;
pub mod limits;
pub mod run_events;
pub mod toolset_generation;
