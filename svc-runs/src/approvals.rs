//! A human's decision on a tool call the untrusted-content gate holds. The decision goes to
//! Redis (`pa_bus::approvals`), where the run's driver finds it — an inline driver on whichever
//! svc-runs replica runs it — and, for a durable run, also as a signal to its workflow.

use pa_bus::approvals::{self, ApprovalState};
use pa_kit::PaError;
use pa_proto::v1::{Identity, RunMode};

use crate::error::RunsError;
use crate::launch::Launcher;
use crate::store::is_terminal;

/// Records the decision on `tool_call_id` of the caller's run `run_id`. Repeating the decision
/// already taken is fine (and re-signals a durable run, in case the first signal was lost);
/// the opposite decision, or one after the request timed out, is a conflict.
pub async fn decide(
    launcher: &Launcher,
    identity: &Identity,
    run_id: &str,
    tool_call_id: &str,
    approved: bool,
) -> Result<ApprovalState, RunsError> {
    // Authorizes: another user's (or tenant's) run is "not found", like any other call.
    let run = launcher.store.get_run(identity, run_id).await?;
    if tool_call_id.is_empty() || tool_call_id.len() > 200 {
        return Err(RunsError::Invalid(
            "tool_call_id must be 1-200 characters".into(),
        ));
    }
    let to = if approved {
        ApprovalState::Approved
    } else {
        ApprovalState::Denied
    };
    let not_waiting = || {
        RunsError::Upstream(PaError::not_found(format!(
            "no tool call {tool_call_id} is waiting for approval in run {run_id}"
        )))
    };
    if is_terminal(run.status) {
        // A request the run left open (it was cancelled meanwhile) cannot be decided any more.
        return match approvals::state(&launcher.redis, run_id, tool_call_id).await? {
            None => Err(not_waiting()),
            Some(same) if same == to => Ok(to),
            Some(_) => Err(RunsError::Conflict(format!("run {run_id} has ended"))),
        };
    }
    let before = approvals::decide(&launcher.redis, run_id, tool_call_id, to).await?;
    match before {
        None => return Err(not_waiting()),
        Some(ApprovalState::Pending) => {}
        Some(same) if same == to => {}
        Some(ApprovalState::TimedOut) => {
            return Err(RunsError::Conflict(format!(
                "tool call {tool_call_id} was refused: nobody approved it in time"
            )));
        }
        Some(other) => {
            return Err(RunsError::Conflict(format!(
                "tool call {tool_call_id} is already {}",
                other.as_str()
            )));
        }
    }
    if run.mode == RunMode::Durable as i32 {
        launcher
            .durable
            .decide_tool_call(identity, run_id, tool_call_id, approved)
            .await?;
    }
    Ok(to)
}
