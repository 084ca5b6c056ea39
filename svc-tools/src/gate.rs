//! The BLOCK-mode tag gate, applied once the model is resolved: a tool whose data may not go to
//! the model's provider (the provider lacks one of the tool's required tags), or that may not
//! see data from that provider (the provider has one of the tool's blocked tags), is removed,
//! and the removal reported.

use pa_proto::v1::{BlockedTool, ToolDefinition};

pub const TAG_GATE: &str = "tag_gate";

/// Splits `tools` into those the model may use and those the gate removed. Tags compare
/// case-insensitively.
pub fn tag_gate(
    tools: Vec<ToolDefinition>,
    provider_tags: &[String],
) -> (Vec<ToolDefinition>, Vec<BlockedTool>) {
    let has = |tag: &str| provider_tags.iter().any(|t| t.eq_ignore_ascii_case(tag));
    let mut kept = Vec::new();
    let mut blocked = Vec::new();
    for tool in tools {
        let missing: Vec<&str> = tool
            .provider_tags_required
            .iter()
            .map(String::as_str)
            .filter(|t| !has(t))
            .collect();
        let forbidden: Vec<&str> = tool
            .provider_tags_blocked
            .iter()
            .map(String::as_str)
            .filter(|t| has(t))
            .collect();
        let reason = match (missing.is_empty(), forbidden.is_empty()) {
            (true, true) => {
                kept.push(tool);
                continue;
            }
            (false, _) => format!(
                "the model's provider lacks the tag(s) {} that this tool's data requires",
                missing.join(", ")
            ),
            (true, false) => format!(
                "this tool may not see data from a provider tagged {}",
                forbidden.join(", ")
            ),
        };
        blocked.push(BlockedTool {
            name: tool.name,
            reason,
            gate: TAG_GATE.into(),
            source: tool.source,
        });
    }
    (kept, blocked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, required: &[&str], blocked: &[&str]) -> ToolDefinition {
        ToolDefinition {
            name: name.into(),
            source: format!("integration:{name}"),
            provider_tags_required: required.iter().map(|s| s.to_string()).collect(),
            provider_tags_blocked: blocked.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    fn names(tools: &[ToolDefinition]) -> Vec<&str> {
        tools.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn untagged_tools_pass_every_model() {
        let (kept, blocked) = tag_gate(vec![tool("a", &[], &[]), tool("b", &[], &[])], &[]);
        assert_eq!(names(&kept), ["a", "b"]);
        assert!(blocked.is_empty());
    }

    #[test]
    fn required_tags_must_all_be_on_the_provider() {
        let tools = || {
            vec![
                tool("crm", &["eu-hosted", "zero-retention"], &[]),
                tool("x", &[], &[]),
            ]
        };
        let (kept, blocked) = tag_gate(tools(), &tags(&["eu-hosted"]));
        assert_eq!(names(&kept), ["x"]);
        assert_eq!(blocked.len(), 1);
        assert_eq!(blocked[0].name, "crm");
        assert_eq!(blocked[0].gate, TAG_GATE);
        assert_eq!(blocked[0].source, "integration:crm");
        assert!(
            blocked[0].reason.contains("zero-retention"),
            "{}",
            blocked[0].reason
        );
        assert!(!blocked[0].reason.contains("eu-hosted,"));

        let (kept, blocked) = tag_gate(tools(), &tags(&["Zero-Retention", "EU-hosted", "x"]));
        assert_eq!(names(&kept), ["crm", "x"]);
        assert!(blocked.is_empty());
    }

    #[test]
    fn blocked_tags_on_the_provider_remove_the_tool() {
        let tools = || vec![tool("search", &[], &["local-only"])];
        let (kept, blocked) = tag_gate(tools(), &tags(&["local-only", "eu-hosted"]));
        assert!(kept.is_empty());
        assert!(blocked[0].reason.contains("local-only"));
        let (kept, blocked) = tag_gate(tools(), &tags(&["eu-hosted"]));
        assert_eq!(names(&kept), ["search"]);
        assert!(blocked.is_empty());
    }
}
