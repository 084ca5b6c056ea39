//! The Curator workflow of ADR 0190/0223/0239, kept only so that Curators opened before ADR 0242
//! finish: nothing starts or signals one any more (finished turns are queued in svc-runs and
//! curated by the worker's sweep, `sweeper`). Such a Curator curates what it was signalled, then
//! closes after its idle time (`idle_close_ms` from its last signal; one opened before ADR 0223
//! with no idle time waits for good: `docs/src/operating.md` has the command that ends those).
//! Its histories replay unchanged (`payload_compat.rs`).
//!
//! Idempotent per turn: the summary has a fixed id per chat (rewritten in place) and facts go
//! through svc-memory's near-duplicate check, so a retried activity changes nothing twice.

use std::time::Duration;

use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, CancellableFuture, ContinueAsNewOptions, SyncWorkflowContext, WorkflowContext,
    WorkflowResult,
};

use crate::activities::RunActivities;
pub use crate::curation as prompt;
pub use crate::payloads::{CurateInput, CuratorInput, TurnFinished, curator_id};

#[workflow]
#[derive(Default)]
pub struct CuratorWorkflow {
    pending: Vec<TurnFinished>,
    signals: u32,
    /// How long it stays open with nothing to curate: the latest signal's (0: open for good).
    idle_close_ms: u64,
}

#[workflow_methods]
impl CuratorWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: CuratorInput) -> WorkflowResult<u32> {
        let mut curated = input.curated;
        let mut delayed = input.delayed_start;
        // A signal delivered with the start (signal-with-start) brings its own.
        ctx.state_mut(|s| {
            if s.idle_close_ms == 0 {
                s.idle_close_ms = input.idle_close_ms;
            }
        });
        loop {
            if !wait_for_turns(ctx).await? {
                // Quiet for its idle time: the chat's next turn starts a new Curator.
                return Ok(curated);
            }
            // Debounce: a burst of turns is curated once. A Curator whose start was delayed by
            // the debounce (ADR 0239) waits only for what is left of it: nothing, unless a later
            // turn's signal cut the delay short.
            let debounce = Duration::from_millis(input.debounce_ms);
            let wait = if std::mem::take(&mut delayed) {
                debounce.saturating_sub(since_start(ctx))
            } else {
                debounce
            };
            if !wait.is_zero() {
                ctx.timer(wait).await;
            }
            let turns = ctx.state_mut(|s| std::mem::take(&mut s.pending));
            let curate = CurateInput {
                identity: input.identity.clone(),
                chat_id: input.chat_id.clone(),
                turns,
            };
            let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(120))
                .heartbeat_timeout(crate::activities::HEARTBEAT_TIMEOUT)
                .retry_policy(crate::activities::retry_policy())
                .build();
            // A failed curation (model down for good) is skipped, not fatal: the next turn's
            // curation covers the chat again.
            let _ = ctx
                .execute_activity(RunActivities::curate_chat, curate, options)
                .await;
            curated += 1;
            let (signals, idle) = ctx.state(|s| (s.signals, s.pending.is_empty()));
            if signals >= input.max_signals && idle {
                ctx.continue_as_new(
                    CuratorInput {
                        curated,
                        idle_close_ms: ctx.state(|s| s.idle_close_ms),
                        delayed_start: false,
                        ..input.clone()
                    },
                    ContinueAsNewOptions::default(),
                )?;
            }
        }
    }

    #[signal]
    pub fn turn_finished(&mut self, _ctx: &mut SyncWorkflowContext<Self>, turn: TurnFinished) {
        self.idle_close_ms = turn.idle_close_ms;
        self.pending.push(turn);
        self.signals += 1;
    }
}

/// How long the workflow has existed, in workflow time (from its history: deterministic).
fn since_start(ctx: &WorkflowContext<CuratorWorkflow>) -> Duration {
    match (ctx.workflow_time(), ctx.info().start_time()) {
        (Some(now), Some(start)) => now.duration_since(start).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

/// Waits until a turn is pending (true), or until the Curator has been idle for its idle close
/// with nothing pending (false: it closes).
async fn wait_for_turns(ctx: &mut WorkflowContext<CuratorWorkflow>) -> WorkflowResult<bool> {
    let (idle_close_ms, pending) = ctx.state(|s| (s.idle_close_ms, !s.pending.is_empty()));
    if idle_close_ms == 0 {
        // Open for good, as every Curator was before ADR 0223 (their histories replay so).
        ctx.wait_condition(|s| !s.pending.is_empty()).await?;
        return Ok(true);
    }
    if pending {
        return Ok(true);
    }
    let mut idle = std::pin::pin!(ctx.timer(Duration::from_millis(idle_close_ms)));
    let turned = temporalio_sdk::workflows::select! {
        _ = idle.as_mut() => false,
        _ = ctx.wait_condition(|s: &CuratorWorkflow| !s.pending.is_empty()) => true,
    };
    if turned {
        // A timer left running would wake the workflow for nothing.
        idle.cancel();
        return Ok(true);
    }
    // A turn signalled in the same workflow task as the timer fired is curated, not dropped.
    // One signalled while this last task completes makes Temporal refuse the completion and
    // replay the task with the signal in it; one signalled after the close starts a new Curator.
    Ok(ctx.state(|s| !s.pending.is_empty()))
}
