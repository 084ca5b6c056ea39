//! The shared half of the MaintenanceService contract (durable.proto): each service runs the
//! tasks over its own tables; this holds who may ask and how big one batch is.

use crate::error::PaError;

/// Rows per call when the caller leaves `limit` at 0.
pub const DEFAULT_BATCH: u32 = 500;
/// The most rows one call touches, whatever the caller asks.
pub const MAX_BATCH: u32 = 10_000;

/// The batch size for a request's `limit`.
pub fn batch(limit: u32) -> u32 {
    if limit == 0 {
        DEFAULT_BATCH
    } else {
        limit.min(MAX_BATCH)
    }
}

/// A task this service does not own.
pub fn unknown_task(service: &str, task: &str) -> PaError {
    PaError::unimplemented(format!(
        "{service} does not run the maintenance task {task:?}"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_batch_is_the_default_when_unset_and_never_above_the_cap() {
        assert_eq!(super::batch(0), super::DEFAULT_BATCH);
        assert_eq!(super::batch(7), 7);
        assert_eq!(super::batch(u32::MAX), super::MAX_BATCH);
    }
}
