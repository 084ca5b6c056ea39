//! Sub-agent runs: a parent's `explore` / `delegate` / `run_agents_script` tool call becomes a
//! sub-run through the same launch path as any run (its own Run row, usage, toolset and its own
//! model's tag gate), with `parent_run_id`, one level deeper, on what is left of the parent's
//! budget. The parent's driver follows the sub-run's stream (pa-turn-io's SubAgentIo).

use pa_proto::subagents::{DELEGATE, EXPLORE};
use pa_proto::v1::{Identity, RunInput, StartSubRunRequest, Usage, UsageLimits};
use sha2::{Digest, Sha256};

use crate::error::RunsError;
use crate::launch::{LaunchPlan, Launched, Launcher, MAX_MESSAGE_BYTES, SubRunPlan};

/// The sub-run of (parent, its model turn, tool call, step): the same id every time, so a
/// retried driver finds the sub-run it started rather than starting another. The parent's
/// model-request count tells its turns apart (a model may reuse a tool call id).
pub fn sub_run_id(parent_run_id: &str, turn: u32, tool_call_id: &str, step: u32) -> String {
    let mut hash = Sha256::new();
    hash.update(parent_run_id.as_bytes());
    hash.update([0]);
    hash.update(turn.to_be_bytes());
    hash.update(tool_call_id.as_bytes());
    hash.update([0]);
    hash.update(step.to_be_bytes());
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("sub-{hex}")
}

/// What is left of `limits` after `spent`; a limit of 0 stays unlimited. Refused when any
/// limited budget is used up.
pub fn remaining_limits(limits: UsageLimits, spent: &Usage) -> Result<UsageLimits, RunsError> {
    let left = |max: u32, used: u32, what: &str| -> Result<u32, RunsError> {
        if max == 0 {
            return Ok(0);
        }
        match max.saturating_sub(used) {
            0 => Err(RunsError::UsageLimit(format!(
                "usage limit: the run has no {what} left for a sub-agent (at most {max})"
            ))),
            n => Ok(n),
        }
    };
    let tokens = if limits.max_total_tokens == 0 {
        0
    } else {
        match limits.max_total_tokens.saturating_sub(spent.total_tokens) {
            0 => {
                return Err(RunsError::UsageLimit(format!(
                    "usage limit: the run has no tokens left for a sub-agent (at most {})",
                    limits.max_total_tokens
                )));
            }
            n => n,
        }
    };
    Ok(UsageLimits {
        max_model_requests: left(
            limits.max_model_requests,
            spent.model_requests,
            "model requests",
        )?,
        max_tool_calls: left(limits.max_tool_calls, spent.tool_calls, "tool calls")?,
        max_total_tokens: tokens,
        max_subagent_depth: limits.max_subagent_depth,
    })
}

/// The depth a sub-run of a run at `parent_depth` gets, unless that is too deep.
pub fn child_depth(parent_depth: u32, max_depth: u32) -> Result<u32, RunsError> {
    let depth = parent_depth + 1;
    if max_depth > 0 && depth > max_depth {
        return Err(RunsError::UsageLimit(format!(
            "usage limit: sub-agents may nest at most {max_depth} deep"
        )));
    }
    Ok(depth)
}

impl Launcher {
    /// StartSubRun: launches (or finds) the sub-run of a parent's sub-agent tool call.
    pub async fn start_sub_run(
        &self,
        identity: &Identity,
        request: StartSubRunRequest,
    ) -> Result<Launched, RunsError> {
        if request.kind != EXPLORE && request.kind != DELEGATE {
            return Err(RunsError::Invalid(format!(
                "kind must be \"{EXPLORE}\" or \"{DELEGATE}\""
            )));
        }
        let task = request.task.trim();
        if task.is_empty() {
            return Err(RunsError::Invalid("a sub-agent needs a task".into()));
        }
        if task.len() > MAX_MESSAGE_BYTES {
            return Err(RunsError::Invalid(format!(
                "a sub-agent's task is over {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        let parent = self
            .store
            .spec(&identity.tenant_id, &request.parent_run_id)
            .await?;
        let owner = parent.identity.clone().unwrap_or_default();
        if owner.user_id != identity.user_id {
            return Err(RunsError::RunNotFound(request.parent_run_id));
        }
        let spent = request.parent_usage.unwrap_or_default();
        let run_id = sub_run_id(
            &parent.run_id,
            spent.model_requests,
            &request.tool_call_id,
            request.step,
        );
        match self.store.get_run(identity, &run_id).await {
            Ok(run) => {
                return Ok(Launched {
                    run,
                    existing: true,
                });
            }
            Err(RunsError::RunNotFound(_)) => {}
            Err(other) => return Err(other),
        }
        let parent_limits = parent.limits.unwrap_or_default();
        let max_depth = match parent_limits.max_subagent_depth {
            0 => self.limits.max_subagent_depth,
            n => n,
        };
        let depth = child_depth(parent.depth, max_depth)?;
        let limits = remaining_limits(parent_limits, &spent)?;
        let chat = self.store.get_chat(identity, &parent.chat_id).await?;
        let model = if request.model.trim().is_empty() {
            parent
                .model_selection
                .as_ref()
                .map(|m| m.requested.clone())
                .unwrap_or_default()
        } else {
            request.model
        };
        let plan = LaunchPlan {
            run_id,
            client_chose_id: false,
            chat,
            model,
            input: RunInput {
                message: task.to_string(),
                ..Default::default()
            },
            requested_durable: false,
            sub_run: Some(SubRunPlan {
                parent_run_id: parent.run_id,
                depth,
                kind: request.kind,
                limits,
                scripted: request.scripted,
                tainted: request.tainted,
            }),
        };
        self.launch_plan(identity, plan).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sub_run_id_is_stable_per_call_and_step_and_short() {
        let a = sub_run_id("run-1", 1, "call-1", 0);
        assert_eq!(a, sub_run_id("run-1", 1, "call-1", 0));
        assert_ne!(a, sub_run_id("run-1", 1, "call-1", 1));
        assert_ne!(a, sub_run_id("run-1", 1, "call-2", 0));
        assert_ne!(a, sub_run_id("run-1", 2, "call-1", 0));
        assert_ne!(a, sub_run_id("run-2", 1, "call-1", 0));
        assert!(crate::launch::validate_client_id("run id", &a).is_ok());
        // Nesting does not grow the id.
        assert_eq!(sub_run_id(&a, 1, "call-1", 0).len(), a.len());
    }

    #[test]
    fn depth_is_refused_past_the_limit_and_unlimited_at_zero() {
        assert_eq!(child_depth(0, 2).unwrap(), 1);
        assert_eq!(child_depth(1, 2).unwrap(), 2);
        assert!(matches!(child_depth(2, 2), Err(RunsError::UsageLimit(_))));
        assert_eq!(child_depth(7, 0).unwrap(), 8);
    }

    #[test]
    fn a_sub_run_gets_what_is_left_of_the_parents_budget() {
        let limits = UsageLimits {
            max_model_requests: 10,
            max_tool_calls: 5,
            max_total_tokens: 0,
            max_subagent_depth: 2,
        };
        let spent = Usage {
            model_requests: 4,
            tool_calls: 2,
            total_tokens: 1_000,
            ..Default::default()
        };
        let left = remaining_limits(limits, &spent).unwrap();
        assert_eq!(left.max_model_requests, 6);
        assert_eq!(left.max_tool_calls, 3);
        assert_eq!(left.max_total_tokens, 0, "unlimited stays unlimited");
        assert_eq!(left.max_subagent_depth, 2);
        let used_up = Usage {
            tool_calls: 5,
            ..Default::default()
        };
        assert!(matches!(
            remaining_limits(limits, &used_up),
            Err(RunsError::UsageLimit(m)) if m.contains("tool calls")
        ));
    }
}
