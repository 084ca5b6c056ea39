//! The frames of the one definition against a JS device, and against forged frames.
//!
//! - The browser extension's frames (built by `clients/browser-extension/src/frames.js`, printed
//!   by `frames-roundtrip.mjs` there) are read strictly by the Rust types (a type or field they
//!   do not know fails) and validated by the committed JSON schema; gateway frames built in
//!   Rust are read by the extension's parser, which must see what was sent.
//! - A forged frame (unknown type, missing id, wrong type, too large, too deep) is refused by
//!   the gateway's reading with an error that says why, never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pa_device_wire::{
    CONNECT_PATH, DEAD_AFTER, DEVICE_PROTOCOL, DeviceFrame, ENROLL_PATH, EnrollRequest, FrameError,
    GatewayFrame, MAX_FRAME_BYTES, TOKEN_PROTOCOL_PREFIX,
};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn schema_validator() -> jsonschema::Validator {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("device-frames.schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let schema: Value = serde_json::from_str(&text).expect("the schema file is JSON");
    jsonschema::validator_for(&schema).expect("the schema compiles")
}

/// Runs the extension's script with `input` on stdin; None when there is no `node` here.
fn run_node(dir: &Path, script: &str, input: String) -> Option<Vec<Value>> {
    let child = Command::new("node")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot start node: {e}"),
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("node runs");
    writer
        .join()
        .expect("the writer thread")
        .expect("node reads stdin");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node {script} failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Some(
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect(),
    )
}

/// What the extension's parser must make of a gateway frame: every field, defaults filled in.
fn as_read(frame: &GatewayFrame) -> Value {
    match frame {
        GatewayFrame::Welcome { device_id, name } => {
            json!({"type": "welcome", "device_id": device_id, "name": name})
        }
        GatewayFrame::Call {
            id,
            tool,
            arguments,
            run_id,
        } => {
            json!({"type": "call", "id": id, "tool": tool, "arguments": arguments, "run_id": run_id})
        }
        GatewayFrame::Cancel { id } => json!({"type": "cancel", "id": id}),
        GatewayFrame::Error { message } => json!({"type": "error", "message": message}),
    }
}

#[test]
fn the_browser_extensions_frames_round_trip_through_the_rust_types() {
    let gateway_frames = vec![
        GatewayFrame::Welcome {
            device_id: "d1".into(),
            name: "my browser".into(),
        },
        GatewayFrame::Call {
            id: "c1".into(),
            tool: "read_tab".into(),
            arguments: json!({"tab_id": 3, "offset": 0}),
            run_id: "r1".into(),
        },
        GatewayFrame::Call {
            id: "c2".into(),
            tool: "type_text".into(),
            arguments: json!({"text": "line one\nline «two»\u{2028}", "selector": "#q"}),
            run_id: String::new(),
        },
        GatewayFrame::Cancel { id: "c1".into() },
        GatewayFrame::Error {
            message: "the first frame must be hello".into(),
        },
    ];
    // What the extension must ignore rather than act on.
    let ignored = [
        "not json",
        "",
        "null",
        "[]",
        r#""call""#,
        r#"{"type":"shutdown"}"#,
        r#"{"type":"call","tool":"click"}"#,
        r#"{"type":"call","id":7,"tool":"click"}"#,
        r#"{"type":"welcome","name":"no id"}"#,
        r#"{"type":"cancel"}"#,
        r#"{"type":"error","message":{"html":"<b>"}}"#,
    ];
    let mut input = String::new();
    for frame in &gateway_frames {
        let text = serde_json::to_string(frame).expect("serializes");
        assert!(!text.contains('\n'), "one frame per line");
        input.push_str(&text);
        input.push('\n');
    }
    for line in ignored {
        input.push_str(line);
        input.push('\n');
    }

    let extension = repo().join("clients/browser-extension");
    let Some(lines) = run_node(&extension, "frames-roundtrip.mjs", input) else {
        eprintln!(
            "SKIPPED: no `node` on this machine, the browser extension's frames were not checked"
        );
        return;
    };
    let end = lines
        .iter()
        .position(|l| l["case"] == "end")
        .expect("the script ends its frames with {case: end}");
    let (built, read) = lines.split_at(end);
    let read = &read[1..];
    let case = |name: &str| -> &Value {
        built
            .iter()
            .find(|l| l["case"] == name)
            .unwrap_or_else(|| panic!("the script printed no {name}: {built:?}"))
    };

    // The extension's constants are the definition's.
    let constants = &case("constants")["value"];
    assert_eq!(constants["connect_path"], CONNECT_PATH);
    assert_eq!(constants["enroll_path"], ENROLL_PATH);
    assert_eq!(constants["device_protocol"], DEVICE_PROTOCOL);
    assert_eq!(constants["token_protocol_prefix"], TOKEN_PROTOCOL_PREFIX);
    assert_eq!(
        constants["connect_url"],
        format!("wss://gw.example{CONNECT_PATH}")
    );
    assert_eq!(
        constants["protocols"],
        json!([DEVICE_PROTOCOL, format!("{TOKEN_PROTOCOL_PREFIX}tok")])
    );
    let keepalive = constants["keepalive_ms"].as_u64().expect("keepalive_ms");
    assert!(
        keepalive > 0 && u128::from(keepalive) * 2 <= DEAD_AFTER.as_millis(),
        "the extension pings every {keepalive} ms: at least twice within {DEAD_AFTER:?}"
    );

    // Its frames, strictly, and against the committed schema.
    let validator = schema_validator();
    let device_frame = |name: &str| -> DeviceFrame {
        let text = case(name)["text"].as_str().expect("text").to_string();
        let value: Value = serde_json::from_str(&text).expect("JSON");
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{name}: the schema refuses {text}: {errors:?}"
        );
        DeviceFrame::parse_strict(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"))
    };
    match device_frame("hello") {
        DeviceFrame::Hello {
            agent_version,
            platform,
            read_only,
            tools,
        } => {
            assert!(!agent_version.is_empty());
            assert!(platform.starts_with("chrome-extension/"), "{platform}");
            assert!(!read_only);
            let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
            names.sort_unstable();
            assert_eq!(
                names,
                [
                    "click",
                    "list_tabs",
                    "navigate",
                    "read_tab",
                    "screenshot",
                    "type_text"
                ]
            );
            for tool in &tools {
                assert!(!tool.description.is_empty(), "{}", tool.name);
                assert_eq!(tool.parameters["type"], "object", "{}", tool.name);
            }
        }
        other => panic!("not a hello: {other:?}"),
    }
    assert_eq!(
        device_frame("result_ok"),
        DeviceFrame::Result {
            id: "c1".into(),
            content: "the page's text: «ok»\n".into(),
            is_error: false
        }
    );
    assert_eq!(
        device_frame("result_error"),
        DeviceFrame::Result {
            id: "c2".into(),
            content: "refused: file: URLs are not opened".into(),
            is_error: true
        }
    );
    assert_eq!(device_frame("ping"), DeviceFrame::Ping {});

    // The enrollment body: every field the request has, nothing else.
    let text = case("enroll")["text"].as_str().expect("text");
    let sent: Value = serde_json::from_str(text).expect("JSON");
    let request: EnrollRequest = serde_json::from_str(text).expect("an enroll request");
    assert_eq!(serde_json::to_value(&request).expect("serializes"), sent);
    assert_eq!(
        request,
        EnrollRequest {
            code: "ABCD-1234".into(),
            name: "browser".into(),
            kind: "browser_extension".into(),
            platform: "chrome-extension".into(),
        }
    );

    // The gateway's frames, as the extension reads them.
    assert_eq!(read.len(), gateway_frames.len() + ignored.len(), "{read:?}");
    for (frame, line) in gateway_frames.iter().zip(read) {
        assert_eq!(
            line["parsed"],
            as_read(frame),
            "the extension misread {frame:?}"
        );
    }
    for (sent, line) in ignored.iter().zip(&read[gateway_frames.len()..]) {
        assert_eq!(
            line["parsed"],
            Value::Null,
            "the extension acted on {sent:?}"
        );
    }
}

fn refused(text: &str) -> FrameError {
    match DeviceFrame::parse(text) {
        Ok(frame) => panic!("a forged frame was read: {frame:?} from {text:.200}"),
        Err(e) => e,
    }
}

fn assert_says(error: &FrameError, words: &str) {
    let message = error.to_string();
    assert!(
        message.contains(words),
        "{message:?} does not say {words:?}"
    );
    assert!(message.len() < 1024, "a short message: {message:.200}…");
}

#[test]
fn forged_frames_are_refused_with_a_reason_not_a_panic() {
    assert_says(
        &refused(r#"{"type":"shutdown","now":true}"#),
        "unknown variant `shutdown`",
    );
    assert_says(
        &refused(r#"{"id":"c1","content":"x"}"#),
        "missing field `type`",
    );
    assert_says(
        &refused(r#"{"type":"result","content":"x","is_error":false}"#),
        "missing field `id`",
    );
    assert_says(
        &refused(r#"{"type":"result","id":7,"content":"x"}"#),
        "invalid type: integer `7`, expected a string",
    );
    assert_says(
        &refused(r#"{"type":"result","id":"c1","is_error":"yes"}"#),
        "invalid type: string \"yes\", expected a boolean",
    );
    assert_says(
        &refused(r#"{"type":"result","id":"c1","content":null}"#),
        "invalid type: null",
    );
    assert_says(
        &refused(r#"{"type":"hello","tools":"everything"}"#),
        "invalid type",
    );
    assert_says(
        &refused(r#"{"type":"hello","tools":[{"description":"no name"}]}"#),
        "missing field `name`",
    );
    assert_says(&refused(r#"{"type":7}"#), "invalid type");
    for not_a_frame in [
        "",
        "not json",
        "null",
        "[]",
        "\"hello\"",
        "{",
        "{\"type\":\"ping\"} x",
    ] {
        assert_says(&refused(not_a_frame), "unreadable frame");
    }

    // A huge value of the wrong type: the reason quotes only its start.
    let wrong = format!(
        r#"{{"type":"result","id":"c1","is_error":"{}"}}"#,
        "y".repeat(1_000_000)
    );
    assert_says(&refused(&wrong), "invalid type: string \"yyy");

    // Too large: refused before it is parsed.
    let huge = format!(
        r#"{{"type":"result","id":"c1","content":"{}"}}"#,
        "x".repeat(MAX_FRAME_BYTES)
    );
    let error = refused(&huge);
    assert_eq!(error, FrameError::TooLarge { bytes: huge.len() });
    assert_says(&error, "over the limit");

    // Too deep: serde_json's recursion limit, not a stack overflow.
    let deep = format!(
        r#"{{"type":"hello","tools":[{{"name":"t","parameters":{}{}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_says(&refused(&deep), "recursion limit exceeded");

    // Under the limit, a long field is only data.
    let long = format!(
        r#"{{"type":"result","id":"c1","content":"{}"}}"#,
        "x".repeat(MAX_FRAME_BYTES - 100)
    );
    assert!(
        matches!(DeviceFrame::parse(&long), Ok(DeviceFrame::Result { content, .. }) if content.len() == MAX_FRAME_BYTES - 100)
    );

    // The device side reads the gateway's frames as carefully.
    let error = GatewayFrame::parse(r#"{"type":"call","tool":"fs_read"}"#)
        .expect_err("a call without an id");
    assert_says(&error, "missing field `id`");
    let error =
        GatewayFrame::parse(r#"{"type":"exec","cmd":"rm -rf /"}"#).expect_err("an unknown frame");
    assert_says(&error, "unknown variant `exec`");
}

#[test]
fn an_old_device_is_still_read_and_a_strict_read_names_what_it_does_not_know() {
    // A hello from before agent_version, a tool without privilege_class, a field from the future.
    let old = r#"{"type":"hello","platform":"linux","tools":[{"name":"fs_list","parameters":{"type":"object"},"since":"v9"}],"compression":"none"}"#;
    let Ok(DeviceFrame::Hello { tools, .. }) = DeviceFrame::parse(old) else {
        panic!("an older device's hello is read");
    };
    assert_eq!(tools[0].privilege_class, "");
    let error = DeviceFrame::parse_strict(old).expect_err("unknown fields");
    assert_eq!(
        error,
        FrameError::UnknownFields(vec![
            "hello.compression".into(),
            "hello.tools[0].since".into()
        ])
    );
    assert_says(&error, "hello.compression");
    assert!(DeviceFrame::parse(r#"{"type":"ping","at":1}"#).is_ok());
    assert!(matches!(
        DeviceFrame::parse(r#"{"type":"result","id":"c1"}"#),
        Ok(DeviceFrame::Result { content, is_error: false, .. }) if content.is_empty()
    ));
}
