//! Which driver runs a run. One rule, in one place, with no I/O: `launch_run` gathers the facts
//! and asks [`decide_mode`].

use pa_proto::v1::{RunMode, ToolDefinition};

/// The facts the choice depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModeFacts {
    /// The client asked for a durable run (`"durable": true` / `"mode": "durable"`).
    pub requested_durable: bool,
    /// The toolset holds a tool that may run for a long time or lives on a user's device
    /// (a device can go away mid-call; only a durable run waits for it to come back).
    pub long_running_tools: bool,
    /// A `run_agents_script` sub-agent: several steps that must survive a crash together.
    pub agents_script: bool,
    /// Started by a schedule, with nobody watching to retry it.
    pub scheduled: bool,
}

/// DURABLE when any fact asks for it; INLINE otherwise (the fast path).
pub fn decide_mode(facts: ModeFacts) -> RunMode {
    if facts.requested_durable || facts.long_running_tools || facts.agents_script || facts.scheduled
    {
        RunMode::Durable
    } else {
        RunMode::Inline
    }
}

/// Whether a toolset has a tool only a durable run should wait on: device tools.
pub fn has_long_running_tools(tools: &[ToolDefinition]) -> bool {
    tools.iter().any(|t| t.source.starts_with("device:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_chat_turn_runs_inline() {
        assert_eq!(decide_mode(ModeFacts::default()), RunMode::Inline);
    }

    #[test]
    fn each_reason_alone_makes_a_run_durable() {
        let reasons = [
            ModeFacts {
                requested_durable: true,
                ..Default::default()
            },
            ModeFacts {
                long_running_tools: true,
                ..Default::default()
            },
            ModeFacts {
                agents_script: true,
                ..Default::default()
            },
            ModeFacts {
                scheduled: true,
                ..Default::default()
            },
        ];
        for facts in reasons {
            assert_eq!(decide_mode(facts), RunMode::Durable, "{facts:?}");
        }
    }

    #[test]
    fn device_tools_count_as_long_running_and_first_party_ones_do_not() {
        let tool = |source: &str| ToolDefinition {
            name: "t".into(),
            source: source.into(),
            ..Default::default()
        };
        assert!(!has_long_running_tools(&[
            tool("first_party"),
            tool("mcp:files")
        ]));
        assert!(has_long_running_tools(&[
            tool("first_party"),
            tool("device:laptop-1")
        ]));
        assert!(!has_long_running_tools(&[]));
    }
}
