//! What a sub-agent is told: its role, then its task (not the parent's chat).

use pa_agent::TurnMessage;
use pa_proto::subagents::EXPLORE;
use pa_proto::v1::RunSpec;

/// What a sub-agent is told it is, before its task.
fn role_prompt(kind: &str) -> &'static str {
    if kind == EXPLORE {
        "You are an explore sub-agent working for another agent. You have read-only tools: \
         look things up, then answer with a concise report of what you found. You cannot change \
         anything."
    } else {
        "You are a sub-agent the main agent delegated a task to. Do the task with the tools you \
         have, then answer with a concise report of what you did and found."
    }
}

/// The conversation a sub-run starts from: its role and its task (not the parent's chat).
pub fn opening(spec: &RunSpec) -> Vec<TurnMessage> {
    let task = spec
        .input
        .as_ref()
        .map(|i| i.message.clone())
        .unwrap_or_default();
    vec![
        TurnMessage::new("system", role_prompt(&spec.subagent_kind)),
        TurnMessage::new("user", task),
    ]
}
