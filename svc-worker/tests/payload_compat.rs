//! The workflow payloads are proto messages (ADR 0215), written as JSON in the shape they had as
//! Rust structs: what a worker wrote before keeps reading, and histories it wrote keep replaying.

use pa_agent::{AgentLoop, Input};
use pa_proto::v1::RunStatus;
use pa_proto::workflow::v1 as wire;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use svc_worker::payloads::inputs_of;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/payloads-before-proto.json")).expect("fixture")
}

/// A value a message leaves off the wire when it holds it (the older shape wrote it).
fn is_default(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    }
}

/// Everything the older shape wrote is written back, under the same name, with the same value.
fn assert_kept(old: &Value, new: &Value, path: &str) {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, value) in old {
                match new.get(key) {
                    Some(written) => assert_kept(value, written, &format!("{path}.{key}")),
                    None => assert!(is_default(value), "{path}.{key} = {value} is lost"),
                }
            }
        }
        (Value::Array(old), Value::Array(new)) => {
            assert_eq!(old.len(), new.len(), "{path}: {new:?}");
            for (i, (old, new)) in old.iter().zip(new).enumerate() {
                assert_kept(old, new, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(old, new, "{path}"),
    }
}

fn read<T: Serialize + DeserializeOwned>(fixture: &Value, name: &str) -> T {
    let old = &fixture[name];
    assert!(!old.is_null(), "no {name} in the fixture");
    let read: T =
        serde_json::from_value(old.clone()).unwrap_or_else(|e| panic!("{name} does not read: {e}"));
    assert_kept(old, &serde_json::to_value(&read).expect("writes"), name);
    read
}

#[test]
fn payloads_written_before_they_were_proto_messages_still_read() {
    let fixture = fixture();

    let run: wire::ChatRunInput = read(&fixture, "ChatRunInput");
    assert_eq!(run.spec.as_ref().expect("a spec").run_id, "run-1");
    assert_eq!(run.history[1].tool_calls[0].arguments_json, r#"{"q":"a"}"#);
    assert_eq!(run.history[2].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(run.history[0].tool_call_id, None);
    assert_eq!((run.recall_wait_ms, run.tainted), (250, true));

    let turn: wire::ModelTurnInput = read(&fixture, "ModelTurnInput");
    let state = turn.agent.clone().expect("the loop");
    assert_eq!(state.phase, wire::LoopPhase::AwaitingModel as i32);
    let agent = AgentLoop::from_state(state).expect("a loop");
    assert_kept(
        &fixture["ModelTurnInput"]["agent"],
        &serde_json::to_value(agent.to_state()).unwrap(),
        "the loop, back out",
    );
    assert!(agent.is_tainted());
    assert_eq!(turn.start.expect("a deferred start").recall_wait_ms, 250);

    // A loop awaiting its tools takes a tool's result (in any other phase it would refuse it).
    let state: wire::AgentLoopState = read(&fixture, "AgentLoopAwaitingTools");
    let mut agent = AgentLoop::from_state(state).expect("a loop");
    agent
        .step(Input::ToolResult {
            tool_call_id: "call_1".into(),
            content: "42".into(),
            is_error: false,
            untrusted: false,
            nested: Default::default(),
        })
        .expect("a loop awaiting its tools");

    let output: wire::ModelTurnOutput = read(&fixture, "ModelTurnOutput");
    let inputs = inputs_of(output.inputs).expect("every input reads");
    assert!(matches!(&inputs[0], Input::ModelReasoning(t) if t == "hmm"));
    assert!(matches!(&inputs[1], Input::ModelText(t) if t == "Hello"));
    assert!(matches!(&inputs[2], Input::ModelToolCall(c) if c.id == "call_1"));
    assert!(matches!(&inputs[3], Input::ModelFinished { usage } if usage.total_tokens == 20));
    assert!(matches!(&inputs[4], Input::ModelFailed { code, .. } if code == "unavailable"));
    assert!(matches!(
        &inputs[5],
        Input::ToolResult { untrusted: true, nested, .. } if nested.total_tokens == 3
    ));
    assert!(matches!(
        &inputs[6],
        Input::ApprovalDecision {
            approved: false,
            timed_out: true,
            ..
        }
    ));
    assert!(matches!(&inputs[7], Input::Cancel { reason } if reason == "cancelled by the user"));
    let start = Input::try_from(output.start.expect("a start")).expect("reads");
    assert!(
        matches!(start, Input::Start { tainted: true, ref approval_always_tools, .. } if approval_always_tools == &["shell"])
    );
    assert!(output.early);

    // Written before `untrusted` and `nested` existed.
    let older: wire::ModelTurnOutput = read(&fixture, "ModelTurnOutputOlder");
    let older = inputs_of(older.inputs).expect("reads");
    assert!(matches!(
        &older[..],
        [Input::ToolResult { is_error: true, untrusted: false, nested, .. }] if nested.total_tokens == 0
    ));

    let tool: wire::ToolCallInput = read(&fixture, "ToolCallInput");
    assert_eq!(tool.call.expect("the call").name, "lookup");
    assert_eq!(tool.spent.expect("spent").total_tokens, 15);

    let approval: wire::ApprovalInput = read(&fixture, "ApprovalInput");
    assert!(approval.event.expect("the request event").is_terminal());
    let _: wire::ExpireApprovalInput = read(&fixture, "ExpireApprovalInput");
    let decided: wire::ToolCallDecided = read(&fixture, "ToolCallDecided");
    assert!(decided.approved);

    let finishes: Vec<wire::FinishInput> = read(&fixture, "FinishInputs");
    let endings: Vec<_> = finishes
        .into_iter()
        .map(|f| pa_turn_io::RunEnding::from(f.ending.expect("an ending")))
        .collect();
    assert_eq!(
        endings.iter().map(|e| e.status).collect::<Vec<_>>(),
        [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled
        ]
    );
    assert_eq!(endings[1].error_message.as_deref(), Some("boom"));
    assert_eq!(endings[0].error_code, None);
    assert!(endings[0].tainted);

    let curator: wire::CuratorInput = read(&fixture, "CuratorInput");
    assert_eq!(curator.identity.expect("identity").tenant_id, "t1");
    let curate: wire::CurateInput = read(&fixture, "CurateInput");
    assert_eq!(curate.turns.len(), 2);
    let _: wire::MaintenanceInput = read(&fixture, "MaintenanceInput");
}

/// The loop a workflow hands an activity is the loop it has: both answer the next input alike.
#[test]
fn a_loop_survives_the_trip_through_its_payload() {
    use pa_agent::{RunIds, ToolCall, TurnMessage};
    let ids = RunIds {
        thread_id: "chat-1".into(),
        run_id: "run-1".into(),
        parent_run_id: None,
        assistant_message_id: "am-1".into(),
    };
    let mut agent = AgentLoop::new(ids, Default::default());
    for input in [
        Input::Start {
            history: vec![TurnMessage::new("user", "hi")],
            notices: vec![],
            high_privilege_tools: vec!["shell".into()],
            approval_always_tools: vec![],
            tainted: false,
        },
        Input::ModelReasoning("thinking".into()),
        Input::ModelText("Checking".into()),
        Input::ModelToolCall(ToolCall {
            id: "call_1".into(),
            name: "lookup".into(),
            arguments_json: "{}".into(),
        }),
    ] {
        agent.step(input).expect("steps");
    }
    let json = serde_json::to_string(&agent.to_state()).unwrap();
    let mut back = AgentLoop::from_state(serde_json::from_str(&json).unwrap()).expect("reads");
    let finished = Input::ModelFinished {
        usage: Default::default(),
    };
    // Every input survives its own trip too.
    let finished = Input::try_from(wire::LoopInput::from(finished)).expect("reads");
    assert_eq!(
        agent.step(finished.clone()).expect("steps"),
        back.step(finished).expect("steps")
    );
    assert_eq!(agent.to_state(), back.to_state());
}

#[test]
fn payloads_no_worker_writes_are_refused() {
    assert_eq!(
        Input::try_from(wire::LoopInput::default()),
        Err(pa_agent::WireError::EmptyInput)
    );
    let mut state = AgentLoop::new(Default::default(), Default::default()).to_state();
    state.phase = 99;
    // A number reads (and writes back) as a number; no phase has it.
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(json["phase"], 99);
    let state: wire::AgentLoopState = serde_json::from_value(json).unwrap();
    assert!(matches!(
        AgentLoop::from_state(state),
        Err(pa_agent::WireError::UnknownPhase(99))
    ));
    let mut state = AgentLoop::new(Default::default(), Default::default()).to_state();
    state.ids = None;
    assert!(AgentLoop::from_state(state).is_err());
    // A run input without its spec starts no turn.
    assert_eq!(
        svc_worker::payloads::first_turn(&wire::ChatRunInput::default()),
        Err(svc_worker::payloads::MissingPart("spec"))
    );
}

/// Histories a worker wrote while the payloads were Rust structs (a durable run; a chat's
/// Curator signalled by a finished turn), and a durable run started by the release before
/// ADR 0254 (its first turn and its finish under their patches' markers, with their
/// `TemporalChangeVersion` upserts; no `code_revision` in its input), replay against the
/// current workflow code.
#[tokio::test]
async fn histories_written_before_payloads_were_proto_messages_replay() {
    use temporalio_client::WorkflowHistory;
    use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<svc_worker::ChatAgentWorkflow>()
            .expect("registers")
            .register_workflow::<svc_worker::curator::CuratorWorkflow>()
            .expect("registers")
            .build(),
    )
    .expect("a replayer");
    let chat_run = include_bytes!("fixtures/histories/chat-run-2026-12-04.json");
    let under_patches = include_bytes!("fixtures/histories/chat-run-2026-12-06.json");
    for (name, json) in [
        ("chat-run", &chat_run[..]),
        (
            "curator",
            &include_bytes!("fixtures/histories/curator-2026-12-04.json")[..],
        ),
        ("chat-run under patches", &under_patches[..]),
    ] {
        let history = WorkflowHistory::from_json(json).expect("a history");
        replayer
            .replay_workflow(history)
            .await
            .unwrap_or_else(|e| panic!("{name} does not replay: {e}"));
    }
    // During a rolling upgrade a worker of the last release may run a run this release started
    // (revision 1 in its input): it asks the patches and records their markers and upserts.
    // This release, which asks no patch for such a run, replays them (ADR 0254).
    let upgraded = rename_in_payloads(
        under_patches,
        "{\"spec\":",
        "{\"code_revision\":1,\"spec\":",
    );
    replayer
        .replay_workflow(WorkflowHistory::from_json(&upgraded).expect("a history"))
        .await
        .unwrap_or_else(|e| panic!("a revision-1 run under patches does not replay: {e}"));
    // The replay reads the payloads: a model turn's result in a shape no worker wrote fails it.
    let renamed = rename_in_payloads(chat_run, "\"ModelText\"", "\"ModelWords\"");
    let history = WorkflowHistory::from_json(&renamed).expect("a history");
    assert!(replayer.replay_workflow(history).await.is_err());
}

/// The history with `from` replaced by `to` inside every payload's data (base64 in the
/// history's JSON).
fn rename_in_payloads(history: &[u8], from: &str, to: &str) -> Vec<u8> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    fn walk(value: &mut Value, from: &str, to: &str, renamed: &mut usize) {
        match value {
            Value::Object(map) => {
                if let (Some(Value::String(data)), true) =
                    (map.get("data"), map.contains_key("metadata"))
                {
                    let text = String::from_utf8(STANDARD.decode(data).expect("base64"))
                        .expect("JSON text");
                    if text.contains(from) {
                        *renamed += 1;
                        let replaced = STANDARD.encode(text.replace(from, to));
                        map.insert("data".into(), Value::from(replaced));
                    }
                    return;
                }
                for child in map.values_mut() {
                    walk(child, from, to, renamed);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|c| walk(c, from, to, renamed)),
            _ => {}
        }
    }
    let mut json: Value = serde_json::from_slice(history).expect("JSON");
    let mut renamed = 0;
    walk(&mut json, from, to, &mut renamed);
    assert!(renamed > 0, "{from} is in no payload");
    serde_json::to_vec(&json).expect("JSON")
}

/// How the histories in `tests/fixtures/histories/` were captured (not a test: run it by hand
/// against the Temporal server a worker of the older version ran on):
/// `PA_CAPTURE_WORKFLOW_ID=<id> PA_CAPTURE_FILE=<path> cargo nextest run --workspace
/// -E 'test(capture_a_history)' --run-ignored only`.
#[tokio::test]
#[ignore = "a tool: captures a workflow history from a running Temporal server"]
async fn capture_a_history() {
    let id = std::env::var("PA_CAPTURE_WORKFLOW_ID").expect("PA_CAPTURE_WORKFLOW_ID");
    let file = std::env::var("PA_CAPTURE_FILE").expect("PA_CAPTURE_FILE");
    let config = svc_worker::TemporalConfig::from_env();
    let client = svc_worker::temporal::connect(&config)
        .await
        .expect("Temporal");
    let handle = client.get_workflow_handle::<svc_worker::ChatAgentWorkflow>(id);
    let json = handle
        .fetch_history(Default::default())
        .to_json()
        .await
        .expect("the history");
    std::fs::write(file, json).expect("written");
}
