//! Tool-call approvals of the untrusted-content gate, in Redis: one key per (run, tool call)
//! holding `pending`, `approved`, `denied` or `timed_out`. The run's driver opens it before it
//! asks a human (so an answer can never arrive for a request that does not exist yet) and reads
//! it; svc-runs' ControlService writes the human's decision. Being in Redis, a decision reaches
//! an inline driver on any svc-runs replica, and a durable run's workflow (which also gets a
//! signal) can still read a decision whose signal was lost when its timer fires.

use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands};
use pa_kit::redis::Pool;

use pa_kit::PaError;

/// A request outlives any sensible approval timeout, and then goes.
const TTL_SECS: u64 = 24 * 3600;
/// How often a waiting inline driver looks for the decision.
pub const POLL: Duration = Duration::from_millis(200);

const PENDING: &str = "pending";
const APPROVED: &str = "approved";
const DENIED: &str = "denied";
const TIMED_OUT: &str = "timed_out";

fn key(run_id: &str, tool_call_id: &str) -> String {
    crate::keys::run_approval(run_id, tool_call_id)
}

fn redis_error(err: impl std::fmt::Display) -> PaError {
    tracing::warn!(%err, "redis");
    PaError::unavailable("Redis (approvals) is unavailable; retry shortly")
        .with_retry_after_ms(1000)
}

/// Where an approval request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
    TimedOut,
}

impl ApprovalState {
    fn parse(value: &str) -> Option<Self> {
        match value {
            PENDING => Some(Self::Pending),
            APPROVED => Some(Self::Approved),
            DENIED => Some(Self::Denied),
            TIMED_OUT => Some(Self::TimedOut),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => PENDING,
            Self::Approved => APPROVED,
            Self::Denied => DENIED,
            Self::TimedOut => TIMED_OUT,
        }
    }

    /// The decision, once there is one (`Some(false)` for a timeout).
    pub fn approved(self) -> Option<bool> {
        match self {
            Self::Pending => None,
            Self::Approved => Some(true),
            Self::Denied | Self::TimedOut => Some(false),
        }
    }
}

/// Opens the request (pending). Idempotent: a retried driver never resets a decision.
pub async fn open(pool: &Pool, run_id: &str, tool_call_id: &str) -> Result<(), PaError> {
    let request = key(run_id, tool_call_id);
    let _: Option<String> = pa_kit::redis::bounded(pool, move |conn| {
        Box::pin(async move {
            redis::cmd("SET")
                .arg(&request)
                .arg(PENDING)
                .arg("NX")
                .arg("EX")
                .arg(TTL_SECS)
                .query_async(&mut *conn)
                .await
        })
    })
    .await
    .map_err(redis_error)?;
    Ok(())
}

/// The request's state; `None` when no such request was ever opened (or it expired).
pub async fn state(
    pool: &Pool,
    run_id: &str,
    tool_call_id: &str,
) -> Result<Option<ApprovalState>, PaError> {
    let request = key(run_id, tool_call_id);
    let value: Option<String> = pa_kit::redis::bounded(pool, move |conn| {
        Box::pin(async move { conn.get(&request).await })
    })
    .await
    .map_err(redis_error)?;
    Ok(value.as_deref().and_then(ApprovalState::parse))
}

/// Sets `to` only while the request is pending; returns the state before (nil = no request).
const DECIDE_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current == 'pending' then
  redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
end
return current
";

/// Decides a pending request, atomically. Returns the state it was in before: `Pending` means
/// this call decided it; anything else leaves it as it was (`None`: there is no such request).
pub async fn decide(
    pool: &Pool,
    run_id: &str,
    tool_call_id: &str,
    to: ApprovalState,
) -> Result<Option<ApprovalState>, PaError> {
    let request = key(run_id, tool_call_id);
    let to = to.as_str();
    let before: Option<String> = pa_kit::redis::bounded(pool, move |conn| {
        Box::pin(async move {
            redis::Script::new(DECIDE_SCRIPT)
                .key(&request)
                .arg(to)
                .invoke_async(&mut *conn)
                .await
        })
    })
    .await
    .map_err(redis_error)?;
    Ok(before.as_deref().and_then(ApprovalState::parse))
}

/// Ends the wait of a request nobody answered in time: marks it timed out unless a decision got
/// there first, and returns what stands (`Approved`, `Denied` or `TimedOut`).
pub async fn expire(
    pool: &Pool,
    run_id: &str,
    tool_call_id: &str,
) -> Result<ApprovalState, PaError> {
    let before = decide(pool, run_id, tool_call_id, ApprovalState::TimedOut).await?;
    Ok(match before {
        Some(decided @ (ApprovalState::Approved | ApprovalState::Denied)) => decided,
        _ => ApprovalState::TimedOut,
    })
}

/// Resolves with the decision once there is one (never, while it is pending). Redis errors
/// only delay it, like a run's cancel flag.
pub async fn decided(pool: &Pool, run_id: &str, tool_call_id: &str) -> bool {
    loop {
        if let Ok(Some(state)) = state(pool, run_id, tool_call_id).await
            && let Some(approved) = state.approved()
        {
            return approved;
        }
        tokio::time::sleep(POLL).await;
    }
}
