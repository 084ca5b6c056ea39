//! Personal Agent contracts: the generated protobuf types and gRPC stubs of
//! `proto/personal_agent/v1`, plus the serde glue that makes the AG-UI events speak their JSON
//! wire format.

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("personal_agent.v1");
}

/// The payloads svc-worker's workflows and activities exchange through Temporal (ADR 0215).
pub mod workflow {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic, missing_docs)]
        tonic::include_proto!("personal_agent.workflow.v1");

        impl TurnMessage {
            pub fn new(role: &str, content: impl Into<String>) -> Self {
                Self {
                    role: role.into(),
                    content: content.into(),
                    tool_call_id: None,
                    tool_calls: Vec::new(),
                }
            }
        }
    }
}

/// An enum field (an `i32` in the generated struct) written by its name and read by name or
/// number: the workflow payloads' enums, as they were written when the payloads were Rust
/// structs. A number no variant has is written as the number.
pub mod enum_name {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S, E>(value: &i32, serializer: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        E: TryFrom<i32> + Serialize,
    {
        match E::try_from(*value) {
            Ok(known) => known.serialize(serializer),
            Err(_) => serializer.serialize_i32(*value),
        }
    }

    pub fn deserialize<'de, D, E>(deserializer: D) -> Result<i32, D::Error>
    where
        D: Deserializer<'de>,
        E: Deserialize<'de> + Into<i32>,
    {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NameOrNumber<E> {
            Number(i32),
            Name(E),
        }
        Ok(match NameOrNumber::<E>::deserialize(deserializer)? {
            NameOrNumber::Number(number) => number,
            NameOrNumber::Name(name) => name.into(),
        })
    }
}

/// The encoded file descriptor set, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("personal_agent_descriptor");

pub mod events;

/// Whether a `RunStatus` value is final (succeeded, failed or cancelled).
pub fn run_status_is_terminal(status: i32) -> bool {
    use v1::RunStatus;
    matches!(
        RunStatus::try_from(status),
        Ok(RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled)
    )
}

impl v1::RunSpec {
    /// The model the run was resolved to (`provider:model`), or "" before resolution.
    pub fn resolved_label(&self) -> String {
        self.model_selection
            .as_ref()
            .map(|m| m.resolved_label.clone())
            .unwrap_or_default()
    }
}

/// Used by the generated serde attributes: leave a field off the wire when it holds its default.
pub fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// (De)serializes a `String` holding JSON as the embedded JSON value itself.
pub mod json_string {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_empty() {
            return serializer.serialize_none();
        }
        let parsed: serde_json::Value =
            serde_json::from_str(value).map_err(serde::ser::Error::custom)?;
        parsed.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        if value.is_null() {
            return Ok(String::new());
        }
        serde_json::to_string(&value).map_err(serde::de::Error::custom)
    }
}

/// The sub-agent tools: offered by svc-tools like any first-party tool, but run by the run's
/// driver (inline or durable), which starts a sub-run through svc-runs' launch_run.
pub mod subagents {
    /// A sub-agent with only the read-only tools.
    pub const EXPLORE: &str = "explore";
    /// A sub-agent with the parent's tools (under its own model's tag gate).
    pub const DELEGATE: &str = "delegate";
    /// Several sub-agent steps, one after the other, each a durable sub-run.
    pub const RUN_AGENTS_SCRIPT: &str = "run_agents_script";
    /// The `source` of these tools in a toolset.
    pub const SOURCE: &str = "subagent";

    pub fn is_subagent_tool(name: &str) -> bool {
        matches!(name, EXPLORE | DELEGATE | RUN_AGENTS_SCRIPT)
    }
}
