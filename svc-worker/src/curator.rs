//! The Curator: one workflow per chat that turns finished turns into memories. svc-worker signals
//! it (signal-with-start, `signals`) after each successful run — a durable run's own activity when
//! it records the end, an inline run's through `NotifyTurnFinished` from svc-runs; it waits a moment for more turns (debounce),
//! then one activity asks the model for a rolling summary and durable facts and writes them to
//! svc-memory. After `max_signals` turns it continues as new, so its history stays short.
//!
//! Idempotent per turn: the summary has a fixed id per chat (rewritten in place) and facts go
//! through svc-memory's near-duplicate check, so a retried activity changes nothing twice.

use std::time::Duration;

use pa_proto::v1::Identity;
use serde::{Deserialize, Serialize};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ContinueAsNewOptions, SyncWorkflowContext, WorkflowContext, WorkflowResult,
};

use crate::activities::RunActivities;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CuratorInput {
    pub identity: Identity,
    pub chat_id: String,
    /// Turns curated by earlier runs of this workflow (carried across continue-as-new).
    pub curated: u32,
    pub debounce_ms: u64,
    pub max_signals: u32,
}

/// One finished turn: the run, and the model it used (the Curator asks the same one, so the
/// chat's data stays with a provider its classification allows).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TurnFinished {
    pub run_id: String,
    pub label: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CurateInput {
    pub identity: Identity,
    pub chat_id: String,
    pub turns: Vec<TurnFinished>,
}

/// The workflow id of a chat's Curator (chat ids are only unique within a tenant).
pub fn curator_id(tenant_id: &str, chat_id: &str) -> String {
    format!("curator-{tenant_id}-{chat_id}")
}

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

/// What the Curator asks the model, and how it reads the answer.
pub mod prompt {
    use serde::Deserialize;

    pub const INSTRUCTIONS: &str = "You maintain the long-term memory of a chat assistant. \
        Read the conversation and answer with JSON only: \
        {\"summary\": \"the conversation so far in at most three sentences\", \
         \"facts\": [\"durable facts or preferences about the user worth remembering across chats\"]}. \
        Leave facts empty when there are none.";

    #[derive(Debug, Default, Deserialize, PartialEq)]
    pub struct Curated {
        #[serde(default)]
        pub summary: String,
        #[serde(default)]
        pub facts: Vec<String>,
    }

    /// The model's answer as summary + facts. An answer that is not the JSON asked for becomes
    /// the summary as it is (a model that ignores the format still leaves a useful summary).
    pub fn parse(answer: &str) -> Curated {
        let json = answer
            .find('{')
            .zip(answer.rfind('}'))
            .filter(|(start, end)| start < end)
            .and_then(|(start, end)| serde_json::from_str::<Curated>(&answer[start..=end]).ok());
        let mut curated = json.unwrap_or_else(|| Curated {
            summary: answer.trim().to_string(),
            facts: Vec::new(),
        });
        curated.summary = curated.summary.trim().chars().take(2000).collect();
        curated.facts.retain(|f| !f.trim().is_empty());
        curated.facts.truncate(10);
        curated
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn json_answers_give_summary_and_facts() {
            let c = parse(
                "Sure! {\"summary\": \"Talked about Oslo.\", \"facts\": [\"lives in Oslo\", \" \"]} done",
            );
            assert_eq!(c.summary, "Talked about Oslo.");
            assert_eq!(c.facts, vec!["lives in Oslo".to_string()]);
        }

        #[test]
        fn other_answers_become_the_summary() {
            let c = parse("  just prose  ");
            assert_eq!(
                c,
                Curated {
                    summary: "just prose".into(),
                    facts: vec![]
                }
            );
        }
    }
}
