//! Plumbing every Personal Agent service shares. Nothing here knows a service's domain.

pub mod config;
pub mod db;
pub mod error;
pub mod grpc;
pub mod identity;
pub mod redis;
pub mod run_events;
pub mod shutdown;
pub mod telemetry;

pub use error::{ErrorCode, PaError};
pub use identity::{InternalAuth, RequestIdentity};
pub use shutdown::Shutdown;
