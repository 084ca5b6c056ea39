//! Recording how runs end, for both drivers: the run row, the reply, and the tokens counted
//! against the user's daily budget (once — a retried durable activity records nothing twice).

use pa_proto::v1::{FinishRunRequest, Identity, RunSpec, RunStatus};
use pa_turn_io::RunEnding;

use crate::error::RunsError;
use crate::store::RunStore;

/// Settles a finished run's share of its user's daily budget against the tokens it used (a run
/// without a share adds them); a failure only logs (the run itself is recorded either way).
pub async fn count_tokens(redis: &pa_kit::redis::Pool, spec: &RunSpec, tokens: u64) {
    let identity = spec.identity.clone().unwrap_or_default();
    let reservation = (spec.reserved_tokens > 0).then_some(pa_bus::limits::TokenReservation {
        tokens: spec.reserved_tokens,
        day: spec.budget_day,
    });
    if let Err(err) = pa_bus::limits::settle_tokens(
        redis,
        &identity.tenant_id,
        &identity.user_id,
        reservation,
        tokens,
    )
    .await
    {
        tracing::warn!(%err, run_id = %spec.run_id, "cannot count tokens against the daily budget");
    }
}

/// FinishRun from a durable run's activity. Returns false when the run had already ended.
pub async fn finish_durable(
    store: &RunStore,
    redis: &pa_kit::redis::Pool,
    identity: &Identity,
    request: FinishRunRequest,
) -> Result<bool, RunsError> {
    let status = RunStatus::try_from(request.status)
        .ok()
        .filter(|s| pa_proto::run_status_is_terminal(*s as i32))
        .ok_or_else(|| RunsError::Invalid("status must be a terminal run status".into()))?;
    let spec = store.spec(&identity.tenant_id, &request.run_id).await?;
    let owner = spec.identity.clone().unwrap_or_default();
    if owner.user_id != identity.user_id {
        return Err(RunsError::RunNotFound(request.run_id));
    }
    let some = |text: String| Some(text).filter(|t| !t.is_empty());
    let ending = RunEnding {
        status,
        usage: request.usage.unwrap_or_default(),
        error_code: some(request.error_code),
        error_message: some(request.error_message),
        assistant_text: request.assistant_text,
        tainted: request.tainted,
    };
    let recorded = store.finish_run(&spec, &ending, &request.attempts).await?;
    if recorded {
        // The worker tells the chat's Curator itself (ADR 0190).
        count_tokens(redis, &spec, ending.usage.total_tokens).await;
    }
    Ok(recorded)
}
