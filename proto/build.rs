//! Generates the Rust types for `personal_agent/v1/*.proto` into OUT_DIR.
//!
//! Every message also derives serde so the AG-UI events serialize straight to their wire JSON
//! (camelCase fields, `"type": "SCREAMING_SNAKE"` from the oneof), with one definition.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "personal_agent/v1/errors.proto",
    "personal_agent/v1/identity.proto",
    "personal_agent/v1/usage.proto",
    "personal_agent/v1/keys.proto",
    "personal_agent/v1/events.proto",
    "personal_agent/v1/runs.proto",
    "personal_agent/v1/models.proto",
    "personal_agent/v1/tools.proto",
    "personal_agent/v1/memory.proto",
    "personal_agent/v1/control.proto",
    "personal_agent/v1/durable.proto",
    "personal_agent/v1/public.proto",
];

/// Optional fields that AG-UI clients expect to be absent rather than `null` (matched by name
/// in every message; a default value is left out).
const OPTIONAL_FIELDS: &[&str] = &[
    "parent_run_id",
    "timestamp",
    "code",
    "parent_message_id",
    "role",
    "source",
    "content",
    "name",
    "tool_call_id",
    "run_id",
    "chat_id",
    "error_code",
    "error_message",
    "finished_at_ms",
    "description",
    "parent_tool_call_id",
    "parent_subagent_run_id",
    "result",
    "outcome",
];

/// `*_json` string fields whose content is embedded as JSON on the wire.
const JSON_FIELDS: &[(&str, &str)] = &[
    (".personal_agent.v1.StateSnapshot.snapshot_json", "snapshot"),
    (".personal_agent.v1.StateDelta.delta_json", "delta"),
    (".personal_agent.v1.Custom.value_json", "value"),
    (".personal_agent.v1.Raw.event_json", "event"),
];

/// The Temporal payloads of svc-worker's workflows (ADR 0215).
const WORKFLOW_PROTO: &str = "personal_agent/workflow/v1/workflow.proto";

/// Enum fields of the workflow payloads: written by name, read by name or number, as they were
/// when the payloads were Rust structs.
const WORKFLOW_ENUM_FIELDS: &[(&str, &str)] = &[
    (
        ".personal_agent.workflow.v1.AgentLoopState.phase",
        "crate::workflow::v1::LoopPhase",
    ),
    (
        ".personal_agent.workflow.v1.RunEnding.status",
        "crate::v1::RunStatus",
    ),
];

/// The workflow payloads keep the snake_case field names they had as Rust structs, so the
/// histories written before they were proto messages replay unchanged; `personal_agent.v1`'s
/// types inside them are the ones generated above.
fn compile_workflow_payloads() -> Result<(), Box<dyn std::error::Error>> {
    const PACKAGE: &str = ".personal_agent.workflow.v1";
    let mut builder = tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .extern_path(".personal_agent.v1", "crate::v1")
        .message_attribute(PACKAGE, "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(PACKAGE, "#[serde(default)]")
        .enum_attribute(PACKAGE, "#[derive(serde::Serialize, serde::Deserialize)]")
        // A oneof is written as `{"<Variant>": value}` in its message (a Rust enum's shape).
        // (A suffix: a full path would reach the oneof's variants too.)
        .field_attribute("LoopInput.input", "#[serde(flatten)]");
    for (path, rust_enum) in WORKFLOW_ENUM_FIELDS {
        builder = builder.field_attribute(
            *path,
            format!(
                "#[serde(serialize_with = \"crate::enum_name::serialize::<_, {rust_enum}>\", \
                 deserialize_with = \"crate::enum_name::deserialize::<_, {rust_enum}>\")]"
            ),
        );
    }
    builder.compile_protos(&[WORKFLOW_PROTO], &["."])?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut builder = tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("personal_agent_descriptor.bin"))
        .message_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".", "#[serde(default, rename_all = \"camelCase\")]")
        .enum_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .enum_attribute(
            ".personal_agent.v1.AgUiEvent.event",
            "#[serde(tag = \"type\", rename_all = \"SCREAMING_SNAKE_CASE\")]",
        );
    for field in OPTIONAL_FIELDS {
        builder = builder.field_attribute(
            *field,
            "#[serde(skip_serializing_if = \"crate::is_default\")]",
        );
    }
    builder = builder.field_attribute(
        ".personal_agent.v1.AgUiMessage.tool_calls",
        "#[serde(skip_serializing_if = \"Vec::is_empty\")]",
    );
    for (path, wire_name) in JSON_FIELDS {
        builder = builder.field_attribute(
            *path,
            format!("#[serde(rename = \"{wire_name}\", with = \"crate::json_string\")]"),
        );
    }
    builder.compile_protos(PROTOS, &["."])?;
    compile_workflow_payloads()?;
    for proto in PROTOS.iter().chain([&WORKFLOW_PROTO]) {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
