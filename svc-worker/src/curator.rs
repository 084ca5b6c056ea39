//! The Curator: one workflow per chat that turns finished turns into memories. svc-worker signals
//! it (signal-with-start, `signals`) after each successful run — a durable run's own activity when
//! it records the end, an inline run's through `NotifyTurnFinished` from svc-runs; it waits a moment for more turns (debounce),
//! then one activity asks the model for a rolling summary and durable facts and writes them to
//! svc-memory. After `max_signals` turns it continues as new, so its history stays short.
//!
//! Idempotent per turn: the summary has a fixed id per chat (rewritten in place) and facts go
//! through svc-memory's near-duplicate check, so a retried activity changes nothing twice.

use std::time::Duration;

use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ContinueAsNewOptions, SyncWorkflowContext, WorkflowContext, WorkflowResult,
};

use crate::activities::RunActivities;
pub use crate::curation as prompt;
pub use crate::payloads::{CurateInput, CuratorInput, TurnFinished, curator_id};

#[workflow]
#[derive(Default)]
pub struct CuratorWorkflow {
    pending: Vec<TurnFinished>,
    signals: u32,
}

#[workflow_methods]
impl CuratorWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: CuratorInput) -> WorkflowResult<u32> {
        let mut curated = input.curated;
        loop {
            ctx.wait_condition(|s| !s.pending.is_empty()).await?;
            // Debounce: a burst of turns is curated once.
            ctx.timer(Duration::from_millis(input.debounce_ms)).await;
            let turns = ctx.state_mut(|s| std::mem::take(&mut s.pending));
            let curate = CurateInput {
                identity: input.identity.clone(),
                chat_id: input.chat_id.clone(),
                turns,
            };
            let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(120))
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
                        ..input.clone()
                    },
                    ContinueAsNewOptions::default(),
                )?;
            }
        }
    }

    #[signal]
    pub fn turn_finished(&mut self, _ctx: &mut SyncWorkflowContext<Self>, turn: TurnFinished) {
        self.pending.push(turn);
        self.signals += 1;
    }
}
