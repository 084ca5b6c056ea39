//! The JSON Schema (draft 2020-12) of the frames, for the JS devices and for tests.
//!
//! It is written from the tables below, one row per field; the tests in this module hold the
//! tables to the serde types (the same fields, the same required ones, the same JSON types),
//! and `tests/schema_file.rs` holds the committed `device-frames.schema.json` to [`json_schema`].

use serde_json::{Map, Value, json};

use crate::constants::{
    CONNECT_PATH, DEAD_AFTER, DEVICE_PROTOCOL, ENROLL_PATH, MAX_FRAME_BYTES, PING_INTERVAL,
    TOKEN_PROTOCOL_PREFIX,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    String,
    Boolean,
    /// Any JSON value (a tool's parameter schema, a call's arguments).
    Any,
    /// A list of announced tools.
    Tools,
}

struct Field {
    name: &'static str,
    ty: Ty,
    required: bool,
    doc: &'static str,
}

struct Variant {
    tag: &'static str,
    doc: &'static str,
    fields: &'static [Field],
}

const fn req(name: &'static str, ty: Ty, doc: &'static str) -> Field {
    Field {
        name,
        ty,
        required: true,
        doc,
    }
}

const fn opt(name: &'static str, ty: Ty, doc: &'static str) -> Field {
    Field {
        name,
        ty,
        required: false,
        doc,
    }
}

const TOOL: &[Field] = &[
    req("name", Ty::String, "The device's own name for the tool."),
    opt(
        "description",
        Ty::String,
        "What the tool does, for the model.",
    ),
    opt(
        "parameters",
        Ty::Any,
        "The JSON schema of the tool's arguments.",
    ),
    opt(
        "privilege_class",
        Ty::String,
        "read | write | exec: the device's own description (svc-tools decides from the device's kind).",
    ),
];

const DEVICE: &[Variant] = &[
    Variant {
        tag: "hello",
        doc: "The device's first frame: what it is and the tools it offers.",
        fields: &[
            opt(
                "agent_version",
                Ty::String,
                "The device software's version.",
            ),
            opt(
                "platform",
                Ty::String,
                "What the device runs on (e.g. linux-x86_64).",
            ),
            opt(
                "read_only",
                Ty::Boolean,
                "The device offers no tool that changes anything.",
            ),
            opt("tools", Ty::Tools, "The tools the device offers."),
        ],
    },
    Variant {
        tag: "result",
        doc: "The answer to one call.",
        fields: &[
            req("id", Ty::String, "The call's id."),
            opt(
                "content",
                Ty::String,
                "The tool's output, or why it failed.",
            ),
            opt("is_error", Ty::Boolean, "The call failed."),
        ],
    },
    Variant {
        tag: "ping",
        doc: "A browser cannot send WebSocket pings: it sends this to stay alive.",
        fields: &[],
    },
];

const GATEWAY: &[Variant] = &[
    Variant {
        tag: "welcome",
        doc: "The device is online: who the gateway says it is.",
        fields: &[
            req("device_id", Ty::String, "The device's id."),
            opt("name", Ty::String, "The device's name."),
        ],
    },
    Variant {
        tag: "call",
        doc: "Run a tool; answer with a result of the same id.",
        fields: &[
            req("id", Ty::String, "The call's id."),
            req(
                "tool",
                Ty::String,
                "The device's own name for the tool (unprefixed).",
            ),
            opt("arguments", Ty::Any, "The tool's arguments."),
            opt(
                "run_id",
                Ty::String,
                "The run the call belongs to (a browser keeps one isolated context per run); absent when unknown.",
            ),
        ],
    },
    Variant {
        tag: "cancel",
        doc: "The caller gave up on a call: stop it, no result is expected.",
        fields: &[req("id", Ty::String, "The call's id.")],
    },
    Variant {
        tag: "error",
        doc: "The gateway refuses the connection (sent before it closes it).",
        fields: &[req("message", Ty::String, "Why.")],
    },
];

fn type_of(ty: Ty) -> Value {
    match ty {
        Ty::String => json!({"type": "string"}),
        Ty::Boolean => json!({"type": "boolean"}),
        Ty::Any => json!({}),
        Ty::Tools => json!({"type": "array", "items": {"$ref": "#/$defs/announced_tool"}}),
    }
}

fn object(doc: &str, tag: Option<&str>, fields: &[Field]) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    if let Some(tag) = tag {
        properties.insert("type".into(), json!({"const": tag}));
        required.push(json!("type"));
    }
    for field in fields {
        let mut property = type_of(field.ty);
        if let Value::Object(map) = &mut property {
            map.insert("description".into(), json!(field.doc));
        }
        properties.insert(field.name.into(), property);
        if field.required {
            required.push(json!(field.name));
        }
    }
    json!({
        "type": "object",
        "description": doc,
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// The frames' JSON Schema: `$defs` has one object per frame (`hello`, `result`, `ping`,
/// `welcome`, `call`, `cancel`, `error`), `device_frame` and `gateway_frame` (one of each
/// direction's) and `announced_tool`; the root accepts a frame of either direction.
/// `additionalProperties: false` everywhere: the schema is what clients are held to, stricter
/// than the gateway's reading. `x-constants` has the paths, subprotocols and timings.
pub fn json_schema() -> Value {
    let mut defs = Map::new();
    defs.insert(
        "announced_tool".into(),
        object("A tool as a device announces it.", None, TOOL),
    );
    let mut direction = |name: &str, doc: &str, variants: &[Variant]| {
        let mut one_of = Vec::new();
        for variant in variants {
            defs.insert(
                variant.tag.into(),
                object(variant.doc, Some(variant.tag), variant.fields),
            );
            one_of.push(json!({"$ref": format!("#/$defs/{}", variant.tag)}));
        }
        defs.insert(name.into(), json!({"description": doc, "oneOf": one_of}));
    };
    direction("device_frame", "Device → gateway.", DEVICE);
    direction("gateway_frame", "Gateway → device.", GATEWAY);
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Personal Agent device WebSocket frames",
        "description": "One JSON text frame per WebSocket message. Generated from libs/pa-device-wire (the one definition, ADR 0205); do not edit: `PA_BLESS=1 cargo nextest run --workspace -E 'package(pa-device-wire)'` rewrites it.",
        "oneOf": [
            {"$ref": "#/$defs/device_frame"},
            {"$ref": "#/$defs/gateway_frame"},
        ],
        "$defs": defs,
        "x-constants": {
            "connect_path": CONNECT_PATH,
            "enroll_path": ENROLL_PATH,
            "device_protocol": DEVICE_PROTOCOL,
            "token_protocol_prefix": TOKEN_PROTOCOL_PREFIX,
            "ping_interval_ms": PING_INTERVAL.as_millis() as u64,
            "dead_after_ms": DEAD_AFTER.as_millis() as u64,
            "max_frame_bytes": MAX_FRAME_BYTES,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::*;
    use crate::frames::{AnnouncedTool, DeviceFrame, GatewayFrame};

    fn tool() -> AnnouncedTool {
        AnnouncedTool {
            name: "fs_read".into(),
            description: "Reads a file".into(),
            parameters: json!({"type": "object"}),
            privilege_class: "read".into(),
        }
    }

    /// One frame per variant, every field set to a value that is not its default.
    fn device_samples() -> Vec<DeviceFrame> {
        let all = vec![
            DeviceFrame::Hello {
                agent_version: "1.0".into(),
                platform: "linux-x86_64".into(),
                read_only: true,
                tools: vec![tool()],
            },
            DeviceFrame::Result {
                id: "c1".into(),
                content: "text".into(),
                is_error: true,
            },
            DeviceFrame::Ping {},
        ];
        let tags: Vec<&str> = all.iter().map(DeviceFrame::tag).collect();
        assert_eq!(tags, DeviceFrame::TAGS, "a sample per variant");
        all
    }

    fn gateway_samples() -> Vec<GatewayFrame> {
        let all = vec![
            GatewayFrame::Welcome {
                device_id: "d1".into(),
                name: "laptop".into(),
            },
            GatewayFrame::Call {
                id: "c1".into(),
                tool: "fs_read".into(),
                arguments: json!({"path": "a"}),
                run_id: "r1".into(),
            },
            GatewayFrame::Cancel { id: "c1".into() },
            GatewayFrame::Error {
                message: "refused".into(),
            },
        ];
        let tags: Vec<&str> = all.iter().map(GatewayFrame::tag).collect();
        assert_eq!(tags, GatewayFrame::TAGS, "a sample per variant");
        all
    }

    fn value(v: &impl Serialize) -> Map<String, Value> {
        match serde_json::to_value(v) {
            Ok(Value::Object(map)) => map,
            other => panic!("not an object: {other:?}"),
        }
    }

    fn wrong_value(ty: Ty) -> Option<Value> {
        match ty {
            Ty::String => Some(json!(12)),
            Ty::Boolean => Some(json!("yes")),
            Ty::Tools => Some(json!([{"description": "no name"}])),
            Ty::Any => None,
        }
    }

    /// The table's fields are the type's (same names), required exactly where serde requires
    /// them, and of the JSON types serde accepts; the schema takes the sample and refuses each
    /// wrong type serde refuses.
    fn check<T: DeserializeOwned>(
        table_name: &str,
        fields: &[Field],
        sample: Map<String, Value>,
        tag: Option<&str>,
    ) {
        let validator = jsonschema::validator_for(&json_schema()).expect("the schema compiles");
        let parses = |map: &Map<String, Value>| {
            serde_json::from_value::<T>(Value::Object(map.clone())).is_ok()
        };
        let mut keys: BTreeSet<&str> = sample.keys().map(String::as_str).collect();
        if tag.is_some() {
            assert!(keys.remove("type"), "{table_name}: tagged");
        }
        let names: BTreeSet<&str> = fields.iter().map(|f| f.name).collect();
        assert_eq!(
            keys, names,
            "{table_name}: the table's fields are the type's"
        );
        assert!(parses(&sample), "{table_name}: the sample reads back");
        let in_frame = |map: Map<String, Value>| -> Value {
            match tag {
                Some(_) => Value::Object(map),
                // A tool is checked inside a hello.
                None => json!({"type": "hello", "tools": [map]}),
            }
        };
        assert!(
            validator.is_valid(&in_frame(sample.clone())),
            "{table_name}: the schema takes the sample"
        );
        for field in fields {
            let mut without = sample.clone();
            without.remove(field.name);
            assert_eq!(
                !parses(&without),
                field.required,
                "{table_name}.{}: required in the table as in serde",
                field.name
            );
            assert_eq!(
                !validator.is_valid(&in_frame(without)),
                field.required,
                "{table_name}.{}: required in the schema as in serde",
                field.name
            );
            if let Some(wrong) = wrong_value(field.ty) {
                let mut bad = sample.clone();
                bad.insert(field.name.into(), wrong);
                assert!(
                    !parses(&bad),
                    "{table_name}.{}: serde refuses a wrong type",
                    field.name
                );
                assert!(
                    !validator.is_valid(&in_frame(bad)),
                    "{table_name}.{}: so does the schema",
                    field.name
                );
            }
        }
        let mut extra = sample;
        extra.insert("unknown_field".into(), json!(1));
        assert!(
            !validator.is_valid(&in_frame(extra)),
            "{table_name}: the schema refuses an unknown field"
        );
    }

    #[test]
    fn the_tables_describe_the_types() {
        check::<AnnouncedTool>("announced_tool", TOOL, value(&tool()), None);
        for (frame, variant) in device_samples().iter().zip(DEVICE) {
            assert_eq!(frame.tag(), variant.tag);
            check::<DeviceFrame>(variant.tag, variant.fields, value(frame), Some(variant.tag));
        }
        for (frame, variant) in gateway_samples().iter().zip(GATEWAY) {
            assert_eq!(frame.tag(), variant.tag);
            check::<GatewayFrame>(variant.tag, variant.fields, value(frame), Some(variant.tag));
        }
        assert_eq!(DEVICE.len(), DeviceFrame::TAGS.len());
        assert_eq!(GATEWAY.len(), GatewayFrame::TAGS.len());
    }

    #[test]
    fn an_unknown_type_is_refused_by_the_schema() {
        let validator = jsonschema::validator_for(&json_schema()).expect("the schema compiles");
        assert!(!validator.is_valid(&json!({"type": "shutdown"})));
        assert!(!validator.is_valid(&json!({"id": "c1"})));
        assert!(validator.is_valid(&json!({"type": "ping"})));
    }
}
