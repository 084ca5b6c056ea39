//! The shared half of the MaintenanceService contract (durable.proto): each service runs the
//! tasks over its own tables; this holds who may ask, how big one batch is, and the batch of a
//! purge by age.

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

/// One batch of a purge by age: deletes up to `limit` rows of `table` (keyed by `tenant_id`
/// and `id`) whose `due_column` is older than `retention`, oldest first, on the owner's pool
/// (every tenant's rows, ADR 0201). Returns how many went and whether more may be due.
pub async fn purge_batch(
    owner: &sqlx::PgPool,
    table: &'static str,
    due_column: &'static str,
    retention: std::time::Duration,
    limit: u32,
) -> Result<(u64, bool), sqlx::Error> {
    // Both names are the caller's constants, never input.
    let statement = format!(
        "WITH due AS ( \
           SELECT tenant_id, id FROM {table} \
           WHERE {due_column} < now() - make_interval(secs => $1) \
           ORDER BY {due_column} LIMIT $2) \
         DELETE FROM {table} t USING due WHERE t.tenant_id = due.tenant_id AND t.id = due.id"
    );
    let purged = sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(retention.as_secs_f64())
        .bind(i64::from(limit))
        .execute(owner)
        .await?
        .rows_affected();
    Ok((purged, purged == u64::from(limit)))
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
