//! The shared half of the MaintenanceService contract (durable.proto): each service runs the
//! tasks over its own tables; this holds who may ask and how big one batch is.

use pa_proto::v1::{RunMaintenanceRequest, RunMaintenanceResponse};

use crate::error::PaError;
use crate::identity::{RequestIdentity, require_internal};

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
fn unknown_task(service: &str, task: &str) -> PaError {
    PaError::unimplemented(format!(
        "{service} does not run the maintenance task {task:?}"
    ))
}

/// Answers a MaintenanceService call for a `service` that owns one `task`: only internal
/// callers, only that task, one batch of at most `cap` rows done by `run`.
pub async fn answer<Fut, E>(
    service: &str,
    task: &str,
    cap: u32,
    request: tonic::Request<RunMaintenanceRequest>,
    run: impl FnOnce(u32) -> Fut,
) -> Result<tonic::Response<RunMaintenanceResponse>, tonic::Status>
where
    Fut: std::future::Future<Output = Result<(u64, bool), E>>,
    PaError: From<E>,
{
    require_internal(&request.identity()?)?;
    let request = request.into_inner();
    if request.task != task {
        return Err(unknown_task(service, &request.task).into());
    }
    let (affected, more) = run(batch(request.limit).min(cap))
        .await
        .map_err(PaError::from)?;
    Ok(tonic::Response::new(RunMaintenanceResponse {
        affected,
        more,
    }))
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
