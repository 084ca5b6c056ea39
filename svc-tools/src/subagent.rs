//! The sub-agent tools as the model is offered them. svc-tools only lists them (so they pass
//! the same gates and snapshot as every tool); the run's driver runs them, as sub-runs started
//! through svc-runs' launch_run.

use pa_proto::subagents::{DELEGATE, EXPLORE, RUN_AGENTS_SCRIPT, SOURCE};
use pa_proto::v1::ToolDefinition;
use serde_json::{Value, json};

fn tool(name: &str, description: &str, schema: Value, read_only: bool) -> ToolDefinition {
    ToolDefinition {
        name: name.into(),
        description: description.into(),
        parameters_json_schema: schema.to_string(),
        source: SOURCE.into(),
        // A sub-agent that may write acts with the run's tools but starts untainted: after
        // untrusted content, a human confirms handing work to it (the untrusted-content gate).
        high_privilege: !read_only,
        read_only,
        provider_tags_required: Vec::new(),
        provider_tags_blocked: Vec::new(),
        privilege_class: if read_only { "read" } else { "exec" }.into(),
        untrusted_output: false,
        origin_name: name.into(),
        // Set by the assembler (`sends_data_out`).
        egress: false,
        always_approve: false,
    }
}

fn task_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "task": { "type": "string", "description": "What the sub-agent should do, self-contained: it does not see this conversation." },
            "model": { "type": "string", "description": "Optional model label; default: this run's model." }
        },
        "required": ["task"],
        "additionalProperties": false
    })
}

/// explore, delegate and run_agents_script, in every snapshot (an explore sub-run's read-only
/// snapshot keeps only explore).
pub fn definitions() -> Vec<ToolDefinition> {
    vec![
        tool(
            EXPLORE,
            "Start a sub-agent with read-only tools to look something up; returns its report.",
            task_schema(),
            true,
        ),
        tool(
            DELEGATE,
            "Delegate a task to a sub-agent with this run's tools; returns its report.",
            task_schema(),
            false,
        ),
        tool(
            RUN_AGENTS_SCRIPT,
            "Run several sub-agent steps one after the other (each durable); every step sees the \
             earlier steps' results. Returns each step's result.",
            json!({
                "type": "object",
                "properties": {
                    "steps": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 8,
                        "items": {
                            "type": "object",
                            "properties": {
                                "agent": { "type": "string", "enum": ["explore", "delegate"] },
                                "task": { "type": "string" },
                                "model": { "type": "string" }
                            },
                            "required": ["task"],
                            "additionalProperties": false
                        }
                    }
                },
                "required": ["steps"],
                "additionalProperties": false
            }),
            false,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_explore_is_read_only_and_the_others_need_approval_after_untrusted_content() {
        let tools = definitions();
        let by_name = |n: &str| tools.iter().find(|t| t.name == n).unwrap().clone();
        assert!(by_name(EXPLORE).read_only && !by_name(EXPLORE).high_privilege);
        assert!(!by_name(DELEGATE).read_only && by_name(DELEGATE).high_privilege);
        assert!(by_name(RUN_AGENTS_SCRIPT).high_privilege);
        for tool in &tools {
            assert!(pa_proto::subagents::is_subagent_tool(&tool.name));
            let schema: Value = serde_json::from_str(&tool.parameters_json_schema).unwrap();
            assert_eq!(schema["type"], "object");
        }
    }
}
