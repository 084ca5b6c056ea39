//! Durable runs on Temporal (the dev server from `scripts/stack.sh`), end to end through the
//! gateway: the same assertions as the inline chat turn, identical AG-UI events in both modes,
//! cancel, and a worker killed mid-turn or mid tool call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pa_testkit::{Chunk, FakeProvider, Reply};
use serde_json::{Value, json};
use tests_e2e::{Mesh, MeshBuilder, SseEvent, normalized};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type E = Box<dyn std::error::Error + Send + Sync>;

async fn start(mesh: &Mesh, chat: &str, body: Value) -> Result<String, E> {
    let (status, accepted) = mesh
        .post_json(&format!("/v1/chats/{chat}/runs"), &body)
        .await?;
    assert_eq!(status, 202, "{accepted}");
    Ok(accepted["run_id"].as_str().unwrap_or_default().to_string())
}

async fn run_to_end(mesh: &Mesh, chat: &str, body: Value) -> Result<(Value, Vec<SseEvent>), E> {
    let run_id = start(mesh, chat, body).await?;
    let events = tokio::time::timeout(
        Duration::from_secs(60),
        mesh.read_events(&run_id, None, None),
    )
    .await??;
    let (_, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
    Ok((run, events))
}

/// The text a run's TEXT_MESSAGE_CONTENT events carry, in order.
fn text_of(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.event_type() == "TEXT_MESSAGE_CONTENT")
        .filter_map(|e| e.data["delta"].as_str())
        .collect()
}

/// Registers `fake` as provider `id` with the model `<id>:model` (able to call tools or not).
async fn add_fake_model(mesh: &Mesh, id: &str, fake: &FakeProvider, tools: bool) -> R {
    let provider = json!({ "id": id, "kind": "openai_compatible", "base_url": fake.base_url(),
                           "tags": ["zero-retention"], "platform_api_key": format!("sk-{id}") });
    let (status, saved) = mesh.post_json("/v1/admin/providers", &provider).await?;
    assert_eq!(status, 200, "{saved}");
    let capabilities: Vec<&str> = if tools { vec!["tools"] } else { vec![] };
    let model = json!({ "label": format!("{id}:model"), "context_window": 32000,
                        "capabilities": capabilities });
    let (status, saved) = mesh.post_json("/v1/admin/models", &model).await?;
    assert_eq!(status, 200, "{saved}");
    Ok(())
}

#[tokio::test]
async fn a_durable_run_answers_through_the_gateway_and_is_recorded() -> R {
    let mesh = Mesh::builder().worker().start().await?;
    let chat = mesh.create_chat("durable").await?;
    let (run, events) = run_to_end(
        &mesh,
        &chat,
        json!({ "message": "hello durable world", "durable": true }),
    )
    .await?;
    let kinds: Vec<&str> = events.iter().map(SseEvent::event_type).collect();
    assert_eq!(kinds.first(), Some(&"RUN_STARTED"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"RUN_FINISHED"), "{kinds:?}");
    let text = text_of(&events);
    assert!(text.contains("hello durable world"), "{text}");
    assert_eq!(run["mode"], "durable", "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    // Stream ids are the workflow's `<step>-<seq>`.
    assert!(
        events
            .iter()
            .all(|e| e.id.as_deref().is_some_and(|id| id.contains('-')))
    );
    let (_, messages) = mesh.get_json(&format!("/v1/chats/{chat}/messages")).await?;
    let roles: Vec<&str> = messages["items"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["role"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(roles, ["user", "assistant"], "{messages}");
    // Resuming after the third event gives exactly the rest.
    let third = events[2].id.clone().unwrap_or_default();
    let rest = mesh
        .read_events(run["id"].as_str().unwrap_or_default(), Some(&third), None)
        .await?;
    assert_eq!(rest, events[3..].to_vec());
    // What the run cost Temporal (ADR 0219, 0238): its quick first turn and its end are local
    // activities of its one workflow task; no activity task. Seven events: started, its task
    // scheduled / started / completed, the two local activities' markers, completed — no patch
    // marker and no `TemporalChangeVersion` upsert (ADR 0254).
    let client = svc_worker::temporal::connect(&mesh.worker_config.temporal).await?;
    let run_id = run["id"].as_str().unwrap_or_default();
    let size =
        svc_worker::temporal::closed_history_size(&client, run_id, Duration::from_secs(30)).await?;
    assert!(size.closed, "the workflow closes: {size:?}");
    assert_eq!(
        (
            size.activity_tasks,
            size.local_activities,
            size.workflow_tasks,
            size.events
        ),
        (0, 2, 1, 7),
        "{size:?}"
    );
    mesh.stop().await
}

/// svc-runs starts durable runs only through svc-worker, Temporal's only client (ADR 0190), and
/// answers the client before the start (ADR 0243). When svc-worker does not answer, the run so
/// accepted ends with a retryable `unavailable` RUN_ERROR that says why (never `internal`, never
/// left RUNNING); the next durable start is refused at once (503) until one reaches the worker
/// again; inline runs of the same chat still work.
#[tokio::test]
async fn a_durable_start_is_refused_as_unavailable_when_svc_worker_does_not_answer() -> R {
    let unanswered = std::net::TcpListener::bind("127.0.0.1:0")?;
    let dead = format!("http://{}", unanswered.local_addr()?);
    drop(unanswered);
    let mesh = Mesh::builder()
        .worker()
        .without_curator()
        .runs_worker_url(&dead)
        .start()
        .await?;
    let chat = mesh.create_chat("no worker").await?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let (status, answer) = mesh
        .post_json(
            &format!("/v1/chats/{chat}/runs"),
            &json!({ "message": "nobody starts me", "durable": true, "run_id": run_id }),
        )
        .await?;
    assert_eq!(status, 202, "answered before the start: {answer}");
    let events = tokio::time::timeout(
        Duration::from_secs(60),
        mesh.read_events(&run_id, None, None),
    )
    .await??;
    let last = events.last().ok_or("no events")?;
    assert_eq!(last.event_type(), "RUN_ERROR", "{:?}", last.data);
    assert_eq!(last.data["code"], "unavailable", "{:?}", last.data);
    assert!(
        last.data["message"]
            .as_str()
            .unwrap_or_default()
            .contains("durable runs are unavailable"),
        "{:?}",
        last.data
    );
    let (status, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
    assert_eq!((status, &run["status"]), (200, &json!("failed")), "{run}");
    // The worker is known unreachable now: the next start is tried before the answer.
    let second = uuid::Uuid::new_v4().to_string();
    let (status, answer) = mesh
        .post_json(
            &format!("/v1/chats/{chat}/runs"),
            &json!({ "message": "nobody starts me either", "durable": true, "run_id": second }),
        )
        .await?;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["code"], "unavailable", "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("durable runs are unavailable"),
        "{answer}"
    );
    // The refused run is not left behind: it is failed (or was never kept).
    let (status, run) = mesh.get_json(&format!("/v1/runs/{second}")).await?;
    assert!(
        status == 404 || (status == 200 && run["status"] == "failed"),
        "a refused durable start left a run behind: {status} {run}"
    );
    let (run, events) =
        run_to_end(&mesh, &chat, json!({ "message": "inline still works" })).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(text_of(&events).contains("inline still works"));
    // The gateway stays ready (it serves inline chat) and says what it cannot do.
    let (status, ready) = mesh.get_json("/readyz").await?;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["degraded"], json!(["svc-worker"]), "{ready}");
    assert_eq!(ready["services"]["svc-worker"], "down", "{ready}");
    assert_eq!(ready["services"]["svc-runs"], "serving", "{ready}");
    mesh.stop().await
}

/// A closed run's model turns as its history records them: the outputs of its `model_turn`
/// activity tasks, and the results of its `first_turn_here` local activity (ADR 0238).
async fn recorded_turns(mesh: &Mesh, run_id: &str) -> Result<(Vec<Value>, Vec<Value>), E> {
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;

    let client = svc_worker::temporal::connect(&mesh.worker_config.temporal).await?;
    let handle = client.get_workflow_handle::<svc_worker::ChatAgentWorkflow>(run_id.to_string());
    // The turn's completion is recorded after its events are out: wait for the close event.
    let _ = tokio::time::timeout(
        Duration::from_secs(60),
        handle.get_result(Default::default()),
    )
    .await?;
    let json_of =
        |payloads: Option<&temporalio_common::protos::temporal::api::common::v1::Payloads>| {
            payloads
                .and_then(|p| p.payloads.first())
                .and_then(|p| serde_json::from_slice::<Value>(&p.data).ok())
                .unwrap_or(Value::Null)
        };
    let (mut activities, mut here) = (Vec::new(), Vec::new());
    for event in handle
        .fetch_history(Default::default())
        .into_events()
        .await?
    {
        match event.attributes {
            Some(Attributes::ActivityTaskCompletedEventAttributes(done)) => {
                let output = json_of(done.result.as_ref());
                if output.get("inputs").is_some() {
                    activities.push(output);
                }
            }
            Some(Attributes::MarkerRecordedEventAttributes(marker))
                if json_of(marker.details.get("data"))["activity_type"]
                    == "RunActivities::first_turn_here" =>
            {
                here.push(json_of(marker.details.get("result")));
            }
            _ => {}
        }
    }
    Ok((activities, here))
}

/// svc-worker begins a new run's first turn as soon as Temporal has recorded the workflow; a turn
/// that ends within a moment is taken by the workflow's first task on that worker (a local
/// activity), so the run costs Temporal no activity task (ADR 0238): the model is asked once, and
/// the history records the turn as begun early.
#[tokio::test]
async fn a_durable_runs_first_turn_begins_at_the_start_and_when_quick_needs_no_activity() -> R {
    let mesh = Mesh::builder().worker().without_curator().start().await?;
    let fake = FakeProvider::start().await?;
    add_fake_model(&mesh, "early", &fake, false).await?;
    fake.push(Reply::text("An early answer."));
    let chat = mesh.create_chat("early").await?;
    let (run, events) = run_to_end(
        &mesh,
        &chat,
        json!({ "message": "answer early", "model": "early:model", "durable": true }),
    )
    .await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(text_of(&events), "An early answer.");
    assert_eq!(fake.request_count(), 1, "the turn ran once");
    let (activities, here) = recorded_turns(&mesh, run["id"].as_str().unwrap_or_default()).await?;
    assert!(activities.is_empty(), "no activity task: {activities:?}");
    assert_eq!(here.len(), 1, "{here:?}");
    assert_eq!(here[0]["ended"], true, "{}", here[0]);
    assert_eq!(here[0]["output"]["early"], true, "{}", here[0]);
    mesh.stop().await
}

/// A first turn that takes longer than the workflow task waits for it
/// (`FIRST_TURN_HERE_WAIT`) runs on: the turn's activity, handed to the same worker, adopts it.
/// The model is still asked once, and the activity's output is the turn begun early.
#[tokio::test]
async fn a_slow_first_turn_is_adopted_by_its_activity_and_runs_once() -> R {
    let mesh = Mesh::builder().worker().without_curator().start().await?;
    let fake = FakeProvider::start().await?;
    add_fake_model(&mesh, "slow", &fake, false).await?;
    let wait = svc_worker::activities::FIRST_TURN_HERE_WAIT;
    fake.push(Reply::text("A slow answer.").with_first_byte_delay(wait + Duration::from_secs(1)));
    let chat = mesh.create_chat("slow").await?;
    let (run, events) = run_to_end(
        &mesh,
        &chat,
        json!({ "message": "answer slowly", "model": "slow:model", "durable": true }),
    )
    .await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(text_of(&events), "A slow answer.");
    assert_eq!(fake.request_count(), 1, "the turn ran once");
    let (activities, here) = recorded_turns(&mesh, run["id"].as_str().unwrap_or_default()).await?;
    assert_eq!(here.len(), 1, "{here:?}");
    assert_ne!(here[0]["ended"], true, "not ended in time: {}", here[0]);
    assert_eq!(activities.len(), 1, "one model turn: {activities:?}");
    assert_eq!(activities[0]["early"], true, "{}", activities[0]);
    mesh.stop().await
}

/// StartDurableRun is idempotent per run id and refuses a request without a run.
#[tokio::test]
async fn svc_worker_starts_a_run_once_and_refuses_a_request_without_one() -> R {
    use pa_proto::v1::durable_run_service_client::DurableRunServiceClient;
    use pa_proto::v1::{RunInput, RunSpec, StartDurableRunRequest};

    let mesh = Mesh::builder().worker().without_curator().start().await?;
    let chat = mesh.create_chat("starts").await?;
    // A real run, so the workflow has a spec to finish with; its start went through svc-worker.
    let (run, _) = run_to_end(
        &mesh,
        &chat,
        json!({ "message": "once only", "durable": true }),
    )
    .await?;
    let run_id = run["id"].as_str().unwrap_or_default().to_string();
    let identity = Mesh::identity("dev", "dev");
    let mut worker =
        DurableRunServiceClient::connect(mesh.worker_url.clone().ok_or("no worker")?).await?;
    let again = StartDurableRunRequest {
        spec: Some(RunSpec {
            run_id: run_id.clone(),
            chat_id: chat.clone(),
            identity: Some(identity.clone()),
            input: Some(RunInput {
                message: "once only".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let answer = worker
        .start_durable_run(mesh.auth.request(&identity, again))
        .await?
        .into_inner();
    assert!(
        answer.existing,
        "a second start of run {run_id} found its workflow"
    );
    let refused = worker
        .start_durable_run(
            mesh.auth
                .request(&identity, StartDurableRunRequest::default()),
        )
        .await
        .expect_err("a request without a spec is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    mesh.stop().await
}

#[tokio::test]
async fn inline_and_durable_runs_emit_identical_events() -> R {
    // No Curator: it asks the chat's model too and could take a scripted reply.
    let mesh = Mesh::builder().worker().without_curator().start().await?;
    let fake = FakeProvider::start().await?;
    add_fake_model(&mesh, "tc", &fake, true).await?;
    let mut runs = Vec::new();
    for durable in [false, true] {
        // Text, then two tool calls in one turn, then the answer.
        fake.push(Reply::chunks(vec![
            Chunk::text("Let me check. "),
            Chunk::tool_call("call_1", "lookup", r#"{"q":"oslo"}"#),
            Chunk::tool_call("call_2", "lookup", r#"{"q":"bergen"}"#),
        ]));
        fake.push(Reply::text("Both are rainy."));
        let chat = mesh.create_chat("same").await?;
        let (run, events) = run_to_end(
            &mesh,
            &chat,
            json!({ "message": "weather?", "model": "tc:model", "durable": durable }),
        )
        .await?;
        assert_eq!(run["status"], "succeeded", "{run}");
        runs.push(events);
    }
    let kinds: Vec<&str> = runs[1].iter().map(SseEvent::event_type).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "TOOL_CALL_RESULT").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(normalized(&runs[0]), normalized(&runs[1]));
    mesh.stop().await
}

#[tokio::test]
async fn cancelling_a_durable_run_ends_it_with_run_error_cancelled() -> R {
    let mesh = Mesh::builder()
        .worker()
        .offline_token_delay(Duration::from_millis(100))
        .start()
        .await?;
    let chat = mesh.create_chat("cancel").await?;
    // ~30 s of tokens: the cancel lands mid-run however loaded the machine is.
    let message = (1..=300)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let run_id = start(&mesh, &chat, json!({ "message": message, "durable": true })).await?;
    // Wait for the first token, then cancel.
    let first = mesh.read_events(&run_id, None, Some(3)).await?;
    assert_eq!(first.len(), 3);
    // The run's status is a workflow query.
    let client = svc_worker::temporal::connect(&mesh.worker_config.temporal).await?;
    let workflow =
        client.get_workflow_handle::<svc_worker::chat::ChatAgentWorkflow>(run_id.clone());
    let workflow_status = || {
        workflow.query(
            svc_worker::chat::ChatAgentWorkflow::status,
            (),
            Default::default(),
        )
    };
    // The first tokens may come before Temporal has recorded the workflow (ADR 0243).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let running = loop {
        match workflow_status().await {
            Ok(status) => break status,
            Err(err) if tokio::time::Instant::now() > deadline => return Err(err.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert_eq!(running, "running");
    let (status, run) = mesh
        .post_json(&format!("/v1/runs/{run_id}/cancel"), &json!({}))
        .await?;
    assert_eq!(status, 200, "{run}");
    let events = tokio::time::timeout(
        Duration::from_secs(30),
        mesh.read_events(&run_id, None, None),
    )
    .await??;
    let last = events.last().map(|e| e.data.clone()).unwrap_or_default();
    assert_eq!(last["type"], "RUN_ERROR", "{last}");
    assert_eq!(last["code"], "cancelled", "{last}");
    let (_, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(
        workflow_status().await?,
        "cancelled",
        "the query answers after the end too"
    );
    mesh.stop().await
}

/// Reads `run_id`'s first `kill_after` events, kills `worker` (SIGKILL) mid-turn, starts a
/// replacement, and reads the rest as a client that reconnects with Last-Event-ID would: every
/// event the client got, in order.
async fn read_through_a_worker_kill(
    mesh: &Mesh,
    mut worker: std::process::Child,
    run_id: &str,
    kill_after: usize,
) -> Result<Vec<SseEvent>, E> {
    let early = mesh.read_events(run_id, None, Some(kill_after)).await?;
    assert_eq!(early.len(), kill_after);
    worker.kill()?;
    worker.wait()?;
    let mut replacement = mesh.spawn_worker_process(env!("CARGO_BIN_EXE_pa-e2e-worker"))?;
    let resumed_from = early.last().and_then(|e| e.id.clone()).unwrap_or_default();
    let rest = tokio::time::timeout(
        Duration::from_secs(60),
        mesh.read_events(run_id, Some(&resumed_from), None),
    )
    .await??;
    replacement.kill()?;
    replacement.wait()?;
    Ok(early.into_iter().chain(rest).collect())
}

/// A worker killed (SIGKILL) mid-turn, once `kill_after` events of a `words`-token turn (60 ms a
/// token) are out, is replaced, and every token arrives once.
async fn worker_killed_mid_turn(words: usize, kill_after: usize) -> R {
    let mesh = Mesh::builder()
        .offline_token_delay(Duration::from_millis(60))
        .worker_process()
        .start()
        .await?;
    let worker = mesh.spawn_worker_process(env!("CARGO_BIN_EXE_pa-e2e-worker"))?;
    mesh.wait_worker_process(Duration::from_secs(60)).await?;
    let chat = mesh.create_chat("crash").await?;
    let words: Vec<String> = (1..=words).map(|i| format!("w{i}")).collect();
    let message = words.join(" ");
    let run_id = start(&mesh, &chat, json!({ "message": message, "durable": true })).await?;
    let all = read_through_a_worker_kill(&mesh, worker, &run_id, kill_after).await?;
    // What the dead worker streamed of its message is withdrawn (ADR 0245): the text a client
    // shows is the replacement's, whole and once.
    let text = tests_e2e::chaos::visible_text(&all);
    assert!(
        text.trim_end().ends_with(&message) && text.matches("w17 ").count() == 1,
        "every token once, in order: {text}"
    );
    assert!(
        all.iter()
            .any(|e| e.event_type() == "CUSTOM" && e.data["name"] == "message_discarded"),
        "the dead worker's message is withdrawn"
    );
    let ids: Vec<&str> = all.iter().filter_map(|e| e.id.as_deref()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique, "no event twice");
    assert_eq!(all.last().map(SseEvent::event_type), Some("RUN_FINISHED"));
    let (_, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    mesh.stop().await
}

/// Killed while the run's first workflow task waits for the turn begun on its worker (ADR 0238):
/// the task times out and the replacement runs the turn as its activity.
#[tokio::test]
async fn a_worker_killed_mid_turn_is_replaced_and_every_token_arrives_once() -> R {
    worker_killed_mid_turn(40, 6).await
}

/// Killed once the turn, longer than that wait, went on in its activity: the activity is retried.
#[tokio::test]
async fn a_worker_killed_after_its_turn_went_to_its_activity_is_replaced_and_every_token_arrives_once()
-> R {
    // 50 events at 60 ms a token are past FIRST_TURN_HERE_WAIT (2 s).
    assert!(svc_worker::activities::FIRST_TURN_HERE_WAIT < Duration::from_millis(2500));
    worker_killed_mid_turn(70, 50).await
}

/// A sampling model answers differently each time it is asked. A worker killed mid-turn leaves
/// part of one answer in the stream; its replacement asks again and gets another. The client
/// shows the second answer whole, not the first one's opening spliced onto the second's rest,
/// and it is the answer the chat stores (ADR 0245).
#[tokio::test]
async fn a_worker_killed_mid_turn_of_a_sampling_model_leaves_one_answer_not_two_spliced() -> R {
    let mesh = Mesh::builder()
        .worker_process()
        .without_curator()
        .start()
        .await?;
    let fake = FakeProvider::start().await?;
    add_fake_model(&mesh, "sampling", &fake, false).await?;
    let answer = |word: &str| -> Vec<Chunk> {
        (1..=40)
            .map(|i| Chunk::text(format!("{word}{i} ")))
            .collect()
    };
    fake.push(Reply::chunks(answer("first")).with_chunk_delay(Duration::from_millis(60)));
    fake.push(Reply::chunks(answer("second")).with_chunk_delay(Duration::from_millis(60)));
    let worker = mesh.spawn_worker_process(env!("CARGO_BIN_EXE_pa-e2e-worker"))?;
    mesh.wait_worker_process(Duration::from_secs(60)).await?;
    let chat = mesh.create_chat("sampling").await?;
    let run_id = start(
        &mesh,
        &chat,
        json!({ "message": "say something", "model": "sampling:model", "durable": true }),
    )
    .await?;
    let all = read_through_a_worker_kill(&mesh, worker, &run_id, 8).await?;
    assert!(
        text_of(&all).starts_with("first1 "),
        "the dead worker streamed part of the first answer: {}",
        text_of(&all)
    );
    let second: String = (1..=40).map(|i| format!("second{i} ")).collect();
    let shown = tests_e2e::chaos::visible_text(&all);
    assert_eq!(shown, second, "one answer, whole");
    assert_eq!(all.last().map(SseEvent::event_type), Some("RUN_FINISHED"));
    let (_, messages) = mesh.get_json(&format!("/v1/chats/{chat}/messages")).await?;
    let stored = messages["items"]
        .as_array()
        .and_then(|m| m.iter().find(|x| x["role"] == "assistant"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        stored.trim(),
        second.trim(),
        "the chat stores what was shown"
    );
    mesh.stop().await
}

/// A page that takes its time (long enough to kill a worker while a tool call waits on it),
/// counting the requests it gets.
async fn slow_site(hits: Arc<AtomicUsize>) -> Result<SocketAddr, E> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::get(move || {
            let hits = hits.clone();
            async move {
                // The first request (the one the killed worker waits on) never answers in
                // time, so the kill always lands mid-call; the retry is answered at once.
                if hits.fetch_add(1, Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                }
                "<html><body><p>The slow page says 7.</p></body></html>"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// The model's answer that calls web_fetch (as `id`) on `site`'s page.
fn fetch_call(site: SocketAddr, id: &str) -> Reply {
    let url = format!("http://slow.test:{}/slow", site.port());
    Reply::chunks(vec![Chunk::tool_call(
        id,
        "web_fetch",
        json!({ "url": url }).to_string(),
    )])
}

/// A mesh whose worker is a separate process (killable), whose user has the web_fetch tool
/// (`slow.test` resolving to this machine), and a fake provider to register as a model.
async fn mesh_with_web_fetch() -> Result<(Mesh, FakeProvider), E> {
    mesh_with_web_fetch_and(|builder| builder).await
}

/// [`mesh_with_web_fetch`], with more of the test's own settings.
async fn mesh_with_web_fetch_and(
    configure: impl FnOnce(MeshBuilder) -> MeshBuilder,
) -> Result<(Mesh, FakeProvider), E> {
    let builder = Mesh::builder()
        .tools_settings(svc_tools::ToolsSettings {
            allow: svc_tools::netguard::AllowList::parse("slow.test")?,
            dns_overrides: vec![("slow.test".into(), "127.0.0.1".parse()?)],
            fetch_timeout: Duration::from_secs(20),
            ..svc_tools::ToolsSettings::default()
        })
        .worker_process();
    let mesh = configure(builder).start().await?;
    let (status, created) = mesh
        .post_json(
            "/v1/me/integrations",
            &json!({ "kind": "web_fetch", "name": "Web" }),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    Ok((mesh, FakeProvider::start().await?))
}

#[tokio::test]
async fn a_worker_killed_mid_tool_call_is_replaced_and_the_call_runs_again() -> R {
    let hits = Arc::new(AtomicUsize::new(0));
    let site = slow_site(hits.clone()).await?;
    let (mesh, fake) = mesh_with_web_fetch().await?;
    add_fake_model(&mesh, "slowtool", &fake, true).await?;
    fake.push(fetch_call(site, "call_slow"));
    fake.push(Reply::text("The page says 7."));

    let binary = env!("CARGO_BIN_EXE_pa-e2e-worker");
    let mut worker = mesh.spawn_worker_process(binary)?;
    mesh.wait_worker_process(Duration::from_secs(60)).await?;
    let chat = mesh.create_chat("crash-tool").await?;
    let run_id = start(
        &mesh,
        &chat,
        json!({ "message": "what does the page say?", "model": "slowtool:model", "durable": true }),
    )
    .await?;
    // The tool call is on its way to the page: kill -9 the worker while it waits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while hits.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tool call reaches the page"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.kill()?;
    worker.wait()?;
    let mut replacement = mesh.spawn_worker_process(binary)?;
    let events = tokio::time::timeout(
        Duration::from_secs(60),
        mesh.read_events(&run_id, None, None),
    )
    .await??;
    replacement.kill()?;
    replacement.wait()?;

    assert!(
        hits.load(Ordering::SeqCst) >= 2,
        "the interrupted call ran again on the new worker"
    );
    let results: Vec<&SseEvent> = events
        .iter()
        .filter(|e| e.event_type() == "TOOL_CALL_RESULT")
        .collect();
    assert_eq!(results.len(), 1, "one result for the one call");
    let content = results[0].data["content"].as_str().unwrap_or_default();
    assert!(content.contains("The slow page says 7."), "{content}");
    let starts = events
        .iter()
        .filter(|e| e.event_type() == "TOOL_CALL_START")
        .count();
    assert_eq!(starts, 1, "the call is announced once");
    let ids: Vec<&str> = events.iter().filter_map(|e| e.id.as_deref()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(ids.len(), unique.len(), "no event twice");
    let text = text_of(&events);
    assert_eq!(text, "The page says 7.");
    assert_eq!(
        events.last().map(SseEvent::event_type),
        Some("RUN_FINISHED")
    );
    let (_, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    mesh.stop().await
}

/// The tool calls a client shows after every `message_discarded` it was sent withdrew what it
/// had shown so far (by message id, and by tool call id at the time it arrives): `(id, result)`.
fn shown_tool_calls(events: &[SseEvent]) -> Vec<(String, Option<String>)> {
    let mut shown: Vec<(String, Option<String>)> = Vec::new();
    for event in events {
        let id = event.data["toolCallId"].as_str().unwrap_or_default();
        match event.event_type() {
            "TOOL_CALL_START" => shown.push((id.to_string(), None)),
            "TOOL_CALL_RESULT" => {
                if let Some(call) = shown.iter_mut().rev().find(|(c, _)| c == id) {
                    call.1 = event.data["content"].as_str().map(str::to_string);
                }
            }
            "CUSTOM" if event.data["name"] == "message_discarded" => {
                let gone = event.data["value"]["toolCallIds"].as_array().cloned();
                let gone: Vec<String> = gone
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect();
                shown.retain(|(c, _)| !gone.contains(c));
            }
            _ => {}
        }
    }
    shown
}

/// Reads `run_id`'s events after those in `events`, one at a time, until one matches `wanted`
/// (each within `within`).
async fn read_until(
    events: &mut Vec<SseEvent>,
    mesh: &Mesh,
    run_id: &str,
    within: Duration,
    wanted: impl Fn(&SseEvent) -> bool,
) -> R {
    while !events.iter().any(&wanted) {
        let last = events.last().and_then(|e| e.id.clone());
        let next = tokio::time::timeout(within, mesh.read_events(run_id, last.as_deref(), Some(1)))
            .await??;
        if next.is_empty() {
            return Err("the stream ended before the event waited for".into());
        }
        events.extend(next);
    }
    Ok(())
}

/// A worker killed after its model turn announced a tool call, before Temporal heard that the
/// turn had ended (its connection to Temporal stalled first), is replaced: the model is asked
/// again, and the call the dead turn announced is withdrawn with it (`message_discarded`
/// `toolCallIds`, ADR 0247). A real model answers under new call ids: the client must end up
/// showing the call that ran, with its result, and not the dead turn's.
#[tokio::test]
async fn a_tool_call_announced_by_a_killed_workers_turn_is_withdrawn_and_the_new_one_shown() -> R {
    let hits = Arc::new(AtomicUsize::new(0));
    let site = slow_site(hits.clone()).await?;
    let (mesh, fake) = mesh_with_web_fetch().await?;
    add_fake_model(&mesh, "deadturn", &fake, true).await?;
    // The page answers at once (its first request is not the slow one: `hits` starts at 1).
    hits.store(1, Ordering::SeqCst);
    let call = |id: &str| fetch_call(site, id);
    fake.push(call("call_first"));
    // The turn the worker dies in: answered late enough to stall its Temporal connection first.
    fake.push(call("call_dead").with_first_byte_delay(Duration::from_secs(2)));
    fake.push(call("call_new"));
    fake.push(Reply::text("The page says 7."));

    let binary = env!("CARGO_BIN_EXE_pa-e2e-worker");
    let temporal = tests_e2e::CutProxy::start(mesh.temporal_address().to_string()).await?;
    let mut worker = mesh
        .worker_process_command(binary)?
        .env("TEMPORAL_ADDRESS", temporal.addr.to_string())
        .spawn()?;
    mesh.wait_worker_process(Duration::from_secs(60)).await?;
    let chat = mesh.create_chat("dead-turn").await?;
    let run_id = start(
        &mesh,
        &chat,
        json!({ "message": "what does the page say?", "model": "deadturn:model", "durable": true }),
    )
    .await?;
    // The second turn has asked the model: from now on Temporal hears nothing from this worker,
    // so the turn's end (written to the stream) never reaches it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fake.request_count() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second turn asks the model"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    temporal.stall();
    let mut events: Vec<SseEvent> = Vec::new();
    read_until(&mut events, &mesh, &run_id, Duration::from_secs(30), |e| {
        e.event_type() == "TOOL_CALL_END" && e.data["toolCallId"] == "call_dead"
    })
    .await?;
    worker.kill()?;
    worker.wait()?;
    let mut replacement = mesh.spawn_worker_process(binary)?;
    // The first call's page is untrusted content, so the next web call waits for approval
    // (ADR 0122): asked for the call that the new turn announced, never the withdrawn one.
    read_until(&mut events, &mesh, &run_id, Duration::from_secs(90), |e| {
        e.event_type() == "CUSTOM" && e.data["name"] == "tool_call_approval"
    })
    .await?;
    let request = &events.last().map(|e| e.data.clone()).unwrap_or_default();
    assert_eq!(request["value"]["toolCallId"], "call_new", "{request}");
    let body = json!({ "approve": true });
    let approval = |call: &str| format!("/v1/runs/{run_id}/approvals/{call}");
    let (status, refused) = mesh.post_json(&approval("call_dead"), &body).await?;
    assert!(
        (400..500).contains(&status),
        "a withdrawn call cannot be approved: {status} {refused}"
    );
    let (status, approved) = mesh.post_json(&approval("call_new"), &body).await?;
    assert!((200..300).contains(&status), "{status} {approved}");
    let last = events.last().and_then(|e| e.id.clone());
    let rest = tokio::time::timeout(
        Duration::from_secs(60),
        mesh.read_events(&run_id, last.as_deref(), None),
    )
    .await??;
    replacement.kill()?;
    replacement.wait()?;
    events.extend(rest);

    let withdrawn: Vec<&Value> = events
        .iter()
        .filter(|e| e.event_type() == "CUSTOM" && e.data["name"] == "message_discarded")
        .map(|e| &e.data["value"])
        .collect();
    assert_eq!(withdrawn.len(), 1, "{withdrawn:?}");
    assert_eq!(withdrawn[0]["toolCallIds"], json!(["call_dead"]));
    assert!(
        withdrawn[0].get("messageId").is_none(),
        "the turn streamed no text: {}",
        withdrawn[0]
    );
    let shown = shown_tool_calls(&events);
    let ids: Vec<&str> = shown.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["call_first", "call_new"], "{shown:?}");
    for (id, result) in &shown {
        assert!(
            result
                .as_deref()
                .is_some_and(|r| r.contains("The slow page says 7.")),
            "{id} shows its result: {shown:?}"
        );
    }
    assert!(
        !events
            .iter()
            .any(|e| e.event_type() == "TOOL_CALL_RESULT" && e.data["toolCallId"] == "call_dead"),
        "the dead turn's call never ran"
    );
    let event_ids: Vec<&str> = events.iter().filter_map(|e| e.id.as_deref()).collect();
    let mut unique = event_ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(event_ids.len(), unique.len(), "no event twice");
    assert_eq!(text_of(&events), "The page says 7.");
    assert_eq!(
        events.last().map(SseEvent::event_type),
        Some("RUN_FINISHED")
    );
    assert!(
        fake.last_tool_message("call_new")
            .contains("The slow page says 7."),
        "the model is given the result of the call that ran"
    );
    let (_, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    mesh.stop().await
}

#[tokio::test]
async fn the_curator_turns_a_finished_turn_into_a_chat_summary_with_provenance() -> R {
    let mesh = Mesh::builder().worker().start().await?;
    let fake = FakeProvider::start().await?;
    add_fake_model(&mesh, "cur", &fake, false).await?;
    // The turn's answer, then the Curator's (asked of the same model).
    fake.push(Reply::text("Teal is a fine colour."));
    fake.push(Reply::text(
        r#"{"summary": "The user said their favourite colour is teal.", "facts": ["favourite colour: teal"]}"#,
    ));
    let chat = mesh.create_chat("curated").await?;
    let (run, _) = run_to_end(
        &mesh,
        &chat,
        json!({ "message": "my favourite colour is teal", "model": "cur:model" }),
    )
    .await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    let run_id = run["id"].as_str().unwrap_or_default().to_string();
    let mut found = Value::Null;
    for _ in 0..300 {
        let (_, page) = mesh.get_json("/v1/me/memories").await?;
        if let Some(items) = page["items"].as_array()
            && items.iter().any(|m| m["kind"] == "summary")
            && items.iter().any(|m| m["kind"] == "fact")
        {
            found = page;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let items = found["items"].as_array().cloned().unwrap_or_default();
    let summary = items
        .iter()
        .find(|m| m["kind"] == "summary")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        summary["text"], "The user said their favourite colour is teal.",
        "{found}"
    );
    assert_eq!(summary["scope"], "chat");
    assert_eq!(summary["chat_id"].as_str(), Some(chat.as_str()));
    assert_eq!(summary["source"]["run_id"].as_str(), Some(run_id.as_str()));
    let fact = items
        .iter()
        .find(|m| m["kind"] == "fact")
        .cloned()
        .unwrap_or_default();
    assert_eq!(fact["text"], "favourite colour: teal");
    assert_eq!(fact["scope"], "world");
    // The Curator asked the chat's own model, with the conversation.
    let asked = &fake.requests()[1].body;
    assert!(
        asked.to_string().contains("my favourite colour is teal"),
        "{asked}"
    );
    mesh.stop().await
}

/// A mesh whose Curator curates a chat once its turns pause for `debounce`, on a fake model that
/// answers every request (turns and curations) with a summary.
async fn curator_mesh(debounce: Duration) -> Result<(Mesh, FakeProvider), E> {
    let mesh = Mesh::builder()
        .worker()
        .curator_debounce(debounce)
        .start()
        .await?;
    let fake = FakeProvider::start().await?;
    add_fake_model(&mesh, "cur", &fake, false).await?;
    fake.set_default(Reply::text(
        r#"{"summary": "The user keeps talking.", "facts": []}"#,
    ));
    Ok((mesh, fake))
}

/// The opening of the Curator's instructions (the whole has quotes, escaped in a request body).
const CURATOR_ASKS: &str = "You maintain the long-term memory of a chat assistant";

/// The Curator's requests the fake model has seen, per chat message they quote (a curation asks
/// with the conversation; a turn with the Curator's instructions nowhere in it).
fn curations_quoting(fake: &FakeProvider, text: &str) -> usize {
    assert!(svc_worker::curation::INSTRUCTIONS.starts_with(CURATOR_ASKS));
    fake.requests()
        .iter()
        .map(|r| r.body.to_string())
        .filter(|body| body.contains(CURATOR_ASKS) && body.contains(text))
        .count()
}

/// The chats waiting in the Curator's queue (svc-runs' `curations`), read as the schema owner.
async fn queued_chats(mesh: &Mesh) -> Result<Vec<(String, String, i32)>, E> {
    use sqlx::Connection;
    let mut owner = sqlx::PgConnection::connect(&mesh.admin_database_url()).await?;
    Ok(
        sqlx::query_as("SELECT tenant_id, chat_id, turns FROM runs.curations ORDER BY chat_id")
            .fetch_all(&mut owner)
            .await?,
    )
}

/// Waits (10 s at most) until `chat` has left the Curator's queue.
async fn await_unqueued(mesh: &Mesh, chat: &str) -> R {
    for _ in 0..200 {
        if !queued_chats(mesh).await?.iter().any(|(_, c, _)| c == chat) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("chat {chat} is still queued").into())
}

/// A chat is curated once its turns pause for the debounce (ADR 0242): not before, and a burst of
/// turns (inline and durable) is curated once, from its last turn. No Temporal workflow is
/// involved, and the chat leaves the queue once curated.
#[tokio::test]
async fn a_chats_turns_are_curated_once_after_they_pause() -> R {
    let debounce = Duration::from_secs(2);
    let (mesh, fake) = curator_mesh(debounce).await?;
    let result = async {
        let one = mesh.create_chat("one turn").await?;
        let body = json!({ "message": "one turn here", "model": "cur:model" });
        let (run, _) = run_to_end(&mesh, &one, body).await?;
        let ended = std::time::Instant::now();
        let queued = queued_chats(&mesh).await?;
        assert_eq!(
            queued,
            [("dev".to_string(), one.clone(), 1)],
            "queued with the run's end"
        );
        mesh.await_curated(&one, run["id"].as_str().unwrap_or_default())
            .await?;
        assert!(
            ended.elapsed() >= debounce - Duration::from_millis(200),
            "curated {:?} after the turn, before the debounce",
            ended.elapsed()
        );
        assert_eq!(curations_quoting(&fake, "one turn here"), 1);

        // A burst: an inline turn, then a durable one at once. Curated once, from the last.
        let burst = mesh.create_chat("burst").await?;
        run_to_end(
            &mesh,
            &burst,
            json!({ "message": "burst turn", "model": "cur:model" }),
        )
        .await?;
        let (last, _) = run_to_end(
            &mesh,
            &burst,
            json!({ "message": "burst again", "model": "cur:model", "durable": true }),
        )
        .await?;
        assert_eq!(last["mode"], "durable", "{last}");
        let queued = queued_chats(&mesh).await?;
        assert!(
            queued.contains(&("dev".to_string(), burst.clone(), 2)),
            "both turns wait on one row: {queued:?}"
        );
        mesh.await_curated(&burst, last["id"].as_str().unwrap_or_default())
            .await?;
        // Long enough for a second curation, were there one.
        tokio::time::sleep(debounce).await;
        assert_eq!(curations_quoting(&fake, "burst again"), 1, "one curation");
        await_unqueued(&mesh, &burst).await?;
        let client = svc_worker::temporal::connect(&mesh.worker_config.temporal).await?;
        let curator = svc_worker::curator::curator_id("dev", &burst);
        assert!(
            svc_worker::temporal::history_size(&client, &curator)
                .await
                .is_err(),
            "no Curator workflow was started"
        );
        Ok::<_, E>(())
    }
    .await;
    mesh.stop().await?;
    result
}

/// A turn that finishes while its chat is being curated is not lost: the curation's claim does
/// not remove the row it did not see, and the chat is curated again from the new turn.
#[tokio::test]
async fn a_turn_finished_during_its_chats_curation_is_curated_after_it() -> R {
    let (mesh, fake) = curator_mesh(Duration::from_millis(100)).await?;
    let result = async {
        let chat = mesh.create_chat("racing").await?;
        fake.push(Reply::text("First answer."));
        // The first curation takes 3 s to answer; the second turn ends meanwhile.
        fake.push(
            Reply::text(r#"{"summary": "Slowly curated.", "facts": []}"#)
                .with_first_byte_delay(Duration::from_secs(3)),
        );
        let (first, _) = run_to_end(
            &mesh,
            &chat,
            json!({ "message": "first", "model": "cur:model" }),
        )
        .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while fake.request_count() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no curation began");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (second, _) = run_to_end(
            &mesh,
            &chat,
            json!({ "message": "second", "model": "cur:model" }),
        )
        .await?;
        assert_ne!(first["id"], second["id"]);
        mesh.await_curated(&chat, second["id"].as_str().unwrap_or_default())
            .await?;
        await_unqueued(&mesh, &chat).await?;
        assert_eq!(curations_quoting(&fake, "second"), 1, "curated again, once");
        Ok::<_, E>(())
    }
    .await;
    mesh.stop().await?;
    result
}

/// A curation the model refuses is retried after a back-off (2 s for the first), and the chat is
/// curated then. Failed runs are not queued, and a chat deleted before its turns are due is
/// never curated.
#[tokio::test]
async fn a_failed_curation_is_retried_and_failed_runs_are_not_curated() -> R {
    // Long enough to delete a chat before its turn is due, whatever the machine's load.
    let (mesh, fake) = curator_mesh(Duration::from_secs(1)).await?;
    let result = async {
        let chat = mesh.create_chat("retried").await?;
        fake.push(Reply::text("An answer."));
        fake.push(Reply::error(400, "the curation is refused once"));
        let (run, _) = run_to_end(
            &mesh,
            &chat,
            json!({ "message": "retry me", "model": "cur:model" }),
        )
        .await?;
        mesh.await_curated(&chat, run["id"].as_str().unwrap_or_default())
            .await?;
        assert_eq!(
            curations_quoting(&fake, "retry me"),
            2,
            "refused, then curated"
        );

        // A failed run is no turn to curate.
        let failed = mesh.create_chat("failed").await?;
        fake.push(Reply::error(400, "the turn fails"));
        let (run, _) = run_to_end(
            &mesh,
            &failed,
            json!({ "message": "fail me", "model": "cur:model" }),
        )
        .await?;
        assert_eq!(run["status"], "failed", "{run}");
        let queued = queued_chats(&mesh).await?;
        assert!(!queued.iter().any(|(_, c, _)| *c == failed), "{queued:?}");

        // A chat deleted before its turns are curated: never curated.
        let deleted = mesh.create_chat("deleted").await?;
        fake.push(Reply::text("An answer to forget."));
        let start_body = json!({ "message": "forget me", "model": "cur:model" });
        let run_id = start(&mesh, &deleted, start_body).await?;
        mesh.read_events(&run_id, None, None).await?;
        let status = mesh.delete_chat(&deleted).await?;
        assert_eq!(status, 204);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(curations_quoting(&fake, "forget me"), 0);
        Ok::<_, E>(())
    }
    .await;
    mesh.stop().await?;
    result
}

/// The queue's own rules, asked directly as the platform with no Curator sweeping: two claimers
/// at once get disjoint chats, a claimed chat is nobody else's until its lease runs out, a
/// settlement for a version the chat has moved past keeps the row, a failure backs off, a
/// release makes the chat due again at once.
#[tokio::test]
async fn the_curation_queue_leases_each_chat_to_one_claimer() -> R {
    let mesh = Mesh::builder().worker().without_curator().start().await?;
    let result = async {
        let mut chats = Vec::new();
        for i in 0..3 {
            let chat = mesh.create_chat(&format!("queued {i}")).await?;
            let run = mesh.start_run(&chat, "hello").await?;
            mesh.read_events(&run, None, None).await?;
            chats.push(chat);
        }
        let queue = pa_proto::v1::curation_service_client::CurationServiceClient::connect(
            mesh.runs_url.clone(),
        )
        .await?;
        let platform = pa_kit::identity::internal_identity("test");
        let claim = |limit: u32, lease_ms: u64| {
            let mut queue = queue.clone();
            let request = mesh.auth.request(
                &platform,
                pa_proto::v1::ClaimCurationsRequest {
                    quiet_ms: 0,
                    limit,
                    lease_ms,
                },
            );
            async move { Ok::<_, E>(queue.claim_curations(request).await?.into_inner().claims) }
        };
        let (a, b) = tokio::join!(claim(1, 60_000), claim(1, 60_000));
        let (a, b) = (a?, b?);
        let mut claimed: Vec<String> = a.iter().chain(&b).map(|c| c.chat_id.clone()).collect();
        claimed.sort();
        let before = claimed.len();
        claimed.dedup();
        assert_eq!(before, claimed.len(), "disjoint claims: {a:?} {b:?}");
        let rest = claim(10, 1000).await?;
        assert_eq!(
            (claimed.len(), rest.len()),
            (2, 1),
            "every chat claimed once: {rest:?}"
        );
        assert!(claim(10, 1000).await?.is_empty(), "all held");
        for c in a.iter().chain(&b).chain(&rest) {
            let identity = c.identity.clone().unwrap_or_default();
            assert_eq!(
                (identity.tenant_id.as_str(), identity.user_id.as_str()),
                ("dev", "dev-user")
            );
            assert_eq!((c.turns, c.attempt), (1, 1), "{c:?}");
        }

        // `rest`'s lease (1 s) runs out: its chats are claimed again, second attempt.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let again = claim(10, 60_000).await?;
        let mut ids: Vec<_> = again.iter().map(|c| c.chat_id.clone()).collect();
        let mut expected: Vec<_> = rest.iter().map(|c| c.chat_id.clone()).collect();
        ids.sort();
        expected.sort();
        assert_eq!(ids, expected);
        assert!(again.iter().all(|c| c.attempt == 2), "{again:?}");

        let settle = |c: &pa_proto::v1::CurationClaim, version: i64, outcome| {
            let mut queue = queue.clone();
            let request = mesh.auth.request(
                &platform,
                pa_proto::v1::FinishCurationRequest {
                    tenant_id: "dev".into(),
                    chat_id: c.chat_id.clone(),
                    version,
                    outcome: outcome as i32,
                },
            );
            async move { Ok::<_, E>(queue.finish_curation(request).await?.into_inner().removed) }
        };
        use pa_proto::v1::CurationOutcome::{Curated, Failed, Released};
        let first = a
            .first()
            .or(b.first())
            .cloned()
            .ok_or("nothing claimed at once")?;
        // A settlement for a version the chat has moved past (a turn finished meanwhile).
        assert!(
            !settle(&first, first.version - 1, Curated).await?,
            "a stale claim keeps the row"
        );
        assert!(settle(&first, first.version, Curated).await?, "removed");
        assert!(
            !settle(&first, first.version, Curated).await?,
            "settled twice: nothing"
        );
        let queued = queued_chats(&mesh).await?;
        assert!(
            !queued.iter().any(|(_, c, _)| *c == first.chat_id),
            "{queued:?}"
        );
        // A failure backs off: the chat is not claimable at once.
        let failed = again.first().cloned().ok_or("nothing claimed again")?;
        assert!(
            !settle(&failed, failed.version, Failed).await?,
            "kept for a retry"
        );
        let soon = claim(10, 1000).await?;
        assert!(
            !soon.iter().any(|c| c.chat_id == failed.chat_id),
            "backing off: {soon:?}"
        );
        // A release (a stopping worker hands its claim back) makes the chat due again at once,
        // its lease notwithstanding, and the attempt does not count.
        let held = a
            .iter()
            .chain(&b)
            .find(|c| c.chat_id != first.chat_id)
            .cloned()
            .ok_or("a second chat held")?;
        assert!(
            !soon.iter().any(|c| c.chat_id == held.chat_id),
            "held by its lease: {soon:?}"
        );
        assert!(
            !settle(&held, held.version, Released).await?,
            "a released chat stays queued"
        );
        let back = claim(10, 60_000).await?;
        let retaken = back
            .iter()
            .find(|c| c.chat_id == held.chat_id)
            .ok_or("the released chat is claimed again at once")?;
        assert_eq!(retaken.attempt, held.attempt, "{retaken:?}");
        Ok::<_, E>(())
    }
    .await;
    mesh.stop().await?;
    result
}

/// Hostile: the queue spans every tenant, so only the platform's own services may claim or settle
/// (a tenant admin's signed identity is refused; an unsigned one never reaches it), and each
/// chat is curated as its own user, in its own tenant.
#[tokio::test]
async fn the_curation_queue_is_the_platforms_and_curates_each_chat_in_its_tenant() -> R {
    let mesh = Mesh::builder()
        .worker()
        .curator_debounce(Duration::from_millis(100))
        .start()
        .await?;
    let result = async {
        let mut queue = pa_proto::v1::curation_service_client::CurationServiceClient::connect(
            mesh.runs_url.clone(),
        )
        .await?;
        let mut admin = Mesh::identity("tenant-b", "mallory");
        admin.roles.push("admin".into());
        let claim = pa_proto::v1::ClaimCurationsRequest {
            quiet_ms: 0,
            limit: 100,
            lease_ms: 0,
        };
        let refused = queue
            .claim_curations(mesh.auth.request(&admin, claim))
            .await
            .expect_err("an admin is not the platform");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        let settle = pa_proto::v1::FinishCurationRequest {
            tenant_id: "dev".into(),
            chat_id: "any".into(),
            version: 1,
            outcome: pa_proto::v1::CurationOutcome::Curated as i32,
        };
        let refused = queue
            .finish_curation(mesh.auth.request(&admin, settle.clone()))
            .await
            .expect_err("an admin is not the platform");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        let forger = pa_kit::InternalAuth::new("not-the-secret");
        let platform = pa_kit::identity::internal_identity("svc-worker");
        let forged = queue
            .claim_curations(forger.request(&platform, claim))
            .await
            .expect_err("a forged signature");
        assert_eq!(forged.code(), tonic::Code::Unauthenticated, "{forged:?}");
        let nonsense = queue
            .finish_curation(mesh.auth.request(
                &platform,
                pa_proto::v1::FinishCurationRequest {
                    outcome: 0,
                    ..settle
                },
            ))
            .await
            .expect_err("no outcome");
        assert_eq!(
            nonsense.code(),
            tonic::Code::InvalidArgument,
            "{nonsense:?}"
        );

        // Two tenants' chats, one turn each (the offline model): each summary lands in its own
        // tenant, for its own user, and nowhere else.
        let as_user = |tenant: &'static str, user: &'static str| {
            move |r: reqwest::RequestBuilder| {
                r.header("x-pa-dev-tenant", tenant)
                    .header("x-pa-dev-user", user)
            }
        };
        let mut chats = Vec::new();
        for (tenant, user) in [("dev", "dev-user"), ("tenant-b", "bob")] {
            let who = as_user(tenant, user);
            let chat: Value = who(mesh.http.post(mesh.url("/v1/chats")))
                .json(&json!({ "title": format!("{tenant}'s chat") }))
                .send()
                .await?
                .json()
                .await?;
            let chat = chat["id"].as_str().unwrap_or_default().to_string();
            let accepted: Value = who(mesh.http.post(mesh.url(&format!("/v1/chats/{chat}/runs"))))
                .json(&json!({ "message": format!("{tenant} says hello") }))
                .send()
                .await?
                .json()
                .await?;
            let run = accepted["run_id"].as_str().unwrap_or_default().to_string();
            assert!(!run.is_empty(), "{accepted}");
            chats.push((tenant, user, chat, run));
        }
        for (tenant, user, chat, _) in &chats {
            let who = as_user(tenant, user);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let summaries = loop {
                let page: Value = who(mesh.http.get(mesh.url("/v1/me/memories")))
                    .send()
                    .await?
                    .json()
                    .await?;
                let summaries: Vec<Value> = page["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|m| m["kind"] == "summary")
                    .collect();
                if !summaries.is_empty() || tokio::time::Instant::now() > deadline {
                    break summaries;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert_eq!(summaries.len(), 1, "{tenant}/{user}: {summaries:?}");
            assert_eq!(summaries[0]["chat_id"].as_str(), Some(chat.as_str()));
        }
        Ok::<_, E>(())
    }
    .await;
    mesh.stop().await?;
    result
}

#[tokio::test]
async fn maintenance_schedules_exist_and_a_triggered_one_does_its_job() -> R {
    let mesh = Mesh::builder().worker_with_schedules().start().await?;
    let result = async {
        let (status, listed) = mesh.get_json("/v1/admin/schedules").await?;
        assert_eq!(status, 200, "{listed}");
        let items = listed["items"].as_array().cloned().unwrap_or_default();
        let trim = items
            .iter()
            .find(|s| s["task"] == "trim_run_streams")
            .cloned()
            .ok_or("no trim_run_streams schedule")?;
        assert!(trim["next_run_at"].is_string(), "{trim}");
        assert_eq!(trim["every_secs"], 3600);
        // A run stream someone left without an expiry.
        let redis = pa_kit::redis::pool(&mesh.worker_config.common.redis_url, 2)?;
        let key = pa_bus::keys::run_events(&format!("orphan-{}", uuid::Uuid::new_v4().simple()));
        let mut conn = redis.get().await?;
        let _: String = deadpool_redis::redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("e")
            .arg("{}")
            .query_async(&mut conn)
            .await?;
        assert_eq!(ttl(&mut conn, &key).await?, -1);
        let id = trim["id"].as_str().unwrap_or_default().to_string();
        let (status, body) = mesh
            .post_json(&format!("/v1/admin/schedules/{id}/trigger"), &json!({}))
            .await?;
        assert_eq!(status, 202, "{body}");
        let mut expires = -1;
        for _ in 0..300 {
            expires = ttl(&mut conn, &key).await?;
            if expires > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _: i64 = deadpool_redis::redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        assert!(expires > 0, "the triggered run gave the stream an expiry");
        let (_, listed) = mesh.get_json("/v1/admin/schedules").await?;
        let runs = listed["items"][0]["runs"].as_u64().unwrap_or(0);
        assert!(runs >= 1, "{listed}");
        let (status, _) = mesh
            .post_json("/v1/admin/schedules/nope/trigger", &json!({}))
            .await?;
        assert_eq!(status, 404);
        Ok::<(), E>(())
    }
    .await;
    // Schedules outlive the mesh in Temporal: remove this mesh's.
    mesh.delete_schedules().await?;
    result?;
    mesh.stop().await
}

/// Triggers the schedule of `task` through the gateway.
async fn trigger(mesh: &Mesh, task: &str) -> R {
    let id = svc_worker::schedules::schedule_id(&mesh.worker_config.temporal.task_queue, task);
    let (status, body) = mesh
        .post_json(&format!("/v1/admin/schedules/{id}/trigger"), &json!({}))
        .await?;
    assert_eq!(status, 202, "{body}");
    Ok(())
}

#[tokio::test]
async fn maintenance_purges_deleted_chats_rolls_up_usage_and_reembeds_memories() -> R {
    use sqlx::Connection;
    // The services connect as an owner that is neither a superuser nor BYPASSRLS, as on a
    // managed Postgres: maintenance must still reach every tenant's rows (ADR 0201).
    let mesh = Mesh::builder()
        .managed_owner()
        .worker_with_schedules()
        .deleted_chat_retention(Duration::ZERO)
        .start()
        .await?;
    let result = async {
        // The server's administrator: seeds and inspects every tenant's rows.
        let mut owner = sqlx::PgConnection::connect(&mesh.admin_database_url()).await?;
        let (superuser, bypass): (bool, bool) =
            sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
                .bind(tests_e2e::MANAGED_OWNER)
                .fetch_one(&mut owner)
                .await?;
        assert!(
            !superuser && !bypass,
            "the services' owner is an ordinary role"
        );
        let tables_owner: String = sqlx::query_scalar(
            "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'runs' LIMIT 1",
        )
        .fetch_one(&mut owner)
        .await?;
        assert_eq!(tables_owner, tests_e2e::MANAGED_OWNER);
        // Another tenant's deleted chat and its forgotten memory, beside dev's below.
        let as_b = |request: reqwest::RequestBuilder| request.header("x-pa-dev-tenant", "tenant-b");
        let (status, other_chat) = tests_e2e::json_answer(
            as_b(mesh.http.post(mesh.url("/v1/chats"))).json(&json!({ "title": "b's" })),
        )
        .await?;
        assert_eq!(status, 201, "{other_chat}");
        let other_chat = other_chat["id"].as_str().unwrap_or_default().to_string();
        let deleted = as_b(
            mesh.http
                .delete(mesh.url(&format!("/v1/chats/{other_chat}"))),
        )
        .send()
        .await?;
        assert!(deleted.status().is_success(), "{}", deleted.status());
        let (status, other_memory) = tests_e2e::json_answer(
            as_b(mesh.http.post(mesh.url("/v1/me/memories")))
                .json(&json!({ "text": "Tenant B's user likes tea." })),
        )
        .await?;
        assert_eq!(status, 201, "{other_memory}");
        let other_memory = other_memory["id"].as_str().unwrap_or_default().to_string();
        let (status, listed) = mesh.get_json("/v1/admin/schedules").await?;
        assert_eq!(status, 200, "{listed}");
        let tasks: Vec<&str> = listed["items"]
            .as_array()
            .map(|items| items.iter().filter_map(|s| s["task"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            tasks,
            [
                "trim_run_streams",
                "rollup_usage",
                "purge_deleted_chats",
                "reembed_memories",
                "purge_toolset_snapshots"
            ]
        );

        // A deleted chat is gone for every read at once, and kept (hidden) until the purge.
        let chat = mesh.create_chat("doomed").await?;
        let (run, _) = run_to_end(&mesh, &chat, json!({ "message": "goodbye" })).await?;
        assert_eq!(run["status"], "succeeded", "{run}");
        let deleted = mesh
            .http
            .delete(mesh.url(&format!("/v1/chats/{chat}")))
            .send()
            .await?;
        assert!(deleted.status().is_success(), "{}", deleted.status());
        let (status, _) = mesh.get_json(&format!("/v1/chats/{chat}")).await?;
        assert_eq!(status, 404);
        let (status, _) = mesh.get_json(&format!("/v1/chats/{chat}/messages")).await?;
        assert_eq!(status, 404);
        let (_, chats) = mesh.get_json("/v1/chats").await?;
        assert!(!chats.to_string().contains(&chat), "{chats}");
        let (status, _) = mesh
            .post_json(
                &format!("/v1/chats/{chat}/runs"),
                &json!({ "message": "still there?" }),
            )
            .await?;
        assert_eq!(status, 404);
        let messages = "SELECT count(*) FROM runs.messages WHERE chat_id = $1";
        assert_eq!(
            tests_e2e::eventually(&mut owner, messages, &chat, |n| n == 2).await?,
            2
        );

        // Usage of a finished day (two calls of yesterday), beside today's run above.
        for tenant in ["dev", "dev", "tenant-b"] {
            sqlx::query(
                "INSERT INTO models.usage_records (tenant_id, user_id, run_id, label, key_source, \
                   input_tokens, output_tokens, cached_input_tokens, cost_micros, created_at) \
                 VALUES ($1, 'dev-user', 'r-yesterday', 'offline:echo', 'none', 100, 50, 0, 7, \
                   now() - interval '1 day')",
            )
            .bind(tenant)
            .execute(&mut owner)
            .await?;
        }
        let yesterday: String = sqlx::query_scalar(
            "SELECT to_char((now() AT TIME ZONE 'UTC')::date - 1, 'YYYY-MM-DD')",
        )
        .fetch_one(&mut owner)
        .await?;
        let usage_path = format!("/v1/me/usage?from={yesterday}");
        // Yesterday's reading (today's still grows: the Curator calls the model too).
        let yesterdays = |usage: &Value| -> Value {
            usage["items"]
                .as_array()
                .and_then(|items| items.iter().find(|d| d["day"] == yesterday.as_str()))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let (status, before) = mesh.get_json(&usage_path).await?;
        assert_eq!(status, 200, "{before}");
        let before = yesterdays(&before);
        assert_eq!(before["requests"], 2, "{before}");
        assert_eq!(before["input_tokens"], 200, "{before}");

        // A memory whose embedding never happened is invisible to vector search.
        let (status, memory) = mesh
            .post_json(
                "/v1/me/memories",
                &json!({ "text": "The user's cat is called Miso." }),
            )
            .await?;
        assert_eq!(status, 201, "{memory}");
        let memory_id = memory["id"].as_str().unwrap_or_default().to_string();
        for id in [&memory_id, &other_memory] {
            sqlx::query(
                "UPDATE memory.items SET embedding = NULL, embedding_dims = NULL, \
                   embedding_model = NULL WHERE id = $1",
            )
            .bind(id)
            .execute(&mut owner)
            .await?;
        }

        for task in ["purge_deleted_chats", "rollup_usage", "reembed_memories"] {
            trigger(&mesh, task).await?;
        }
        let chats = "SELECT count(*) FROM runs.chats WHERE id = $1";
        tests_e2e::eventually(&mut owner, chats, &chat, |n| n == 0).await?;
        assert_eq!(
            tests_e2e::eventually(&mut owner, messages, &chat, |n| n == 0).await?,
            0,
            "the messages went with the chat"
        );
        tests_e2e::eventually(&mut owner, chats, &other_chat, |n| n == 0).await?;
        let rolled = "SELECT coalesce(sum(calls), 0)::bigint FROM models.usage_daily \
                      WHERE tenant_id = $1 AND day = (now() AT TIME ZONE 'UTC')::date - 1";
        assert_eq!(
            tests_e2e::eventually(&mut owner, rolled, "dev", |n| n == 2).await?,
            2
        );
        assert_eq!(
            tests_e2e::eventually(&mut owner, rolled, "tenant-b", |n| n == 1).await?,
            1,
            "every tenant's usage is rolled up"
        );
        let (_, after) = mesh.get_json(&usage_path).await?;
        assert_eq!(
            yesterdays(&after),
            before,
            "the same reading before and after the rollup"
        );
        let embedded = "SELECT count(*) FROM memory.items WHERE id = $1 \
                        AND embedding IS NOT NULL AND embedding_model IS NOT NULL";
        tests_e2e::eventually(&mut owner, embedded, &memory_id, |n| n == 1).await?;
        tests_e2e::eventually(&mut owner, embedded, &other_memory, |n| n == 1).await?;

        // Key rotation as the same owner: every tenant's stored key moves to the new KEK when a
        // svc-models replica starts with it (and the dev KEK as the previous one).
        mesh.add_fake_model("http://127.0.0.1:9/v1").await?;
        for tenant in ["dev", "tenant-b"] {
            let (status, stored) = tests_e2e::json_answer(
                mesh.http
                    .put(mesh.url("/v1/me/keys/fp"))
                    .header("x-pa-dev-tenant", tenant)
                    .json(&json!({ "api_key": format!("sk-{tenant}-key-0000") })),
            )
            .await?;
            assert_eq!(status, 200, "{stored}");
        }
        let on_kek = "SELECT count(*) FROM models.user_keys WHERE kek_id = $1";
        assert_eq!(
            tests_e2e::eventually(&mut owner, on_kek, pa_kit::crypto::DEV_KEK_ID, |n| n == 2)
                .await?,
            2
        );
        {
            use base64::Engine as _;
            let b64 = |key: &[u8]| base64::engine::general_purpose::STANDARD.encode(key);
            let mut config = svc_models::Config::for_tests(mesh.runs_config.common.clone());
            config.kek = Some((
                "rotated".into(),
                b64(&[7u8; 32]),
                format!(
                    "{}:{}",
                    pa_kit::crypto::DEV_KEK_ID,
                    b64(b"personal-agent-dev-insecure-kek!")
                ),
            ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let shutdown = pa_kit::Shutdown::new();
            let replica = tokio::spawn(svc_models::run(config, listener, shutdown.clone()));
            let moved = tests_e2e::eventually(&mut owner, on_kek, "rotated", |n| n == 2).await;
            shutdown.trigger();
            let _ = replica.await;
            assert_eq!(moved?, 2, "both tenants' keys were re-encrypted");
        }

        // Toolset snapshots older than the retention (90 days) go, every tenant's; a recent one
        // stays and is still read.
        let (status, b_chat) = tests_e2e::json_answer(
            as_b(mesh.http.post(mesh.url("/v1/chats"))).json(&json!({ "title": "b's tools" })),
        )
        .await?;
        assert_eq!(status, 201, "{b_chat}");
        let b_chat = b_chat["id"].as_str().unwrap_or_default().to_string();
        let (status, b_run) = tests_e2e::json_answer(
            as_b(
                mesh.http
                    .post(mesh.url(&format!("/v1/chats/{b_chat}/runs"))),
            )
            .json(&json!({ "message": "which tools?" })),
        )
        .await?;
        assert_eq!(status, 202, "{b_run}");
        let old_snapshot: String =
            sqlx::query_scalar("SELECT id FROM tools.toolset_snapshots WHERE run_id = $1")
                .bind(run["id"].as_str().unwrap_or_default())
                .fetch_one(&mut owner)
                .await?;
        sqlx::query("UPDATE tools.toolset_snapshots SET created_at = now() - interval '100 days'")
            .execute(&mut owner)
            .await?;
        let old_tenants: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT tenant_id FROM tools.toolset_snapshots ORDER BY 1")
                .fetch_all(&mut owner)
                .await?;
        assert_eq!(old_tenants, ["dev", "tenant-b"]);
        let kept_chat = mesh.create_chat("kept").await?;
        let (kept_run, _) = run_to_end(&mesh, &kept_chat, json!({ "message": "hello" })).await?;
        let kept_run = kept_run["id"].as_str().unwrap_or_default().to_string();
        trigger(&mesh, "purge_toolset_snapshots").await?;
        let old = "SELECT count(*) FROM tools.toolset_snapshots \
                   WHERE created_at < now() - interval '90 days' AND tenant_id <> $1";
        tests_e2e::eventually(&mut owner, old, "", |n| n == 0).await?;
        let kept_snapshot: String =
            sqlx::query_scalar("SELECT id FROM tools.toolset_snapshots WHERE run_id = $1")
                .bind(&kept_run)
                .fetch_one(&mut owner)
                .await?;
        let mut tools =
            pa_proto::v1::tool_service_client::ToolServiceClient::connect(mesh.tools_url.clone())
                .await?;
        let user = Mesh::identity("dev", "dev-user");
        let read = |snapshot_id: &str| {
            mesh.auth.request(
                &user,
                pa_proto::v1::GetToolsetRequest {
                    snapshot_id: snapshot_id.into(),
                },
            )
        };
        let kept = tools.get_toolset(read(&kept_snapshot)).await?.into_inner();
        assert!(!kept.tools.is_empty(), "{kept:?}");
        let purged = tools
            .get_toolset(read(&old_snapshot))
            .await
            .expect_err("a purged snapshot is gone");
        assert_eq!(purged.code(), tonic::Code::NotFound, "{purged:?}");

        // Only the platform's own services may ask; a task goes to the service that owns it.
        let mut runs_maintenance =
            pa_proto::v1::maintenance_service_client::MaintenanceServiceClient::connect(
                mesh.runs_url.clone(),
            )
            .await?;
        let ask = |task: &str| pa_proto::v1::RunMaintenanceRequest {
            task: task.into(),
            limit: 0,
        };
        let mut admin = Mesh::identity("dev", "dev-user");
        admin.roles.push("admin".into());
        let refused = runs_maintenance
            .run_maintenance(mesh.auth.request(&admin, ask("purge_deleted_chats")))
            .await
            .expect_err("an admin is not the platform");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        let platform = pa_kit::identity::internal_identity("test");
        let elsewhere = runs_maintenance
            .run_maintenance(mesh.auth.request(&platform, ask("rollup_usage")))
            .await
            .expect_err("svc-runs does not own usage");
        assert_eq!(elsewhere.code(), tonic::Code::Unimplemented);
        let again = runs_maintenance
            .run_maintenance(mesh.auth.request(&platform, ask("purge_deleted_chats")))
            .await?
            .into_inner();
        assert_eq!((again.affected, again.more), (0, false), "nothing left");
        let mut tools_maintenance =
            pa_proto::v1::maintenance_service_client::MaintenanceServiceClient::connect(
                mesh.tools_url.clone(),
            )
            .await?;
        let refused = tools_maintenance
            .run_maintenance(mesh.auth.request(&admin, ask("purge_toolset_snapshots")))
            .await
            .expect_err("an admin is not the platform");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        let elsewhere = tools_maintenance
            .run_maintenance(mesh.auth.request(&platform, ask("purge_deleted_chats")))
            .await
            .expect_err("svc-tools does not own chats");
        assert_eq!(elsewhere.code(), tonic::Code::Unimplemented);
        let again = tools_maintenance
            .run_maintenance(mesh.auth.request(&platform, ask("purge_toolset_snapshots")))
            .await?
            .into_inner();
        assert_eq!((again.affected, again.more), (0, false), "nothing left");
        Ok::<(), E>(())
    }
    .await;
    mesh.delete_schedules().await?;
    result?;
    mesh.stop().await
}

async fn ttl(
    conn: &mut pa_kit::redis::Connection,
    key: &str,
) -> Result<i64, deadpool_redis::redis::RedisError> {
    deadpool_redis::redis::cmd("TTL")
        .arg(key)
        .query_async::<i64>(conn)
        .await
}

/// Histories captured from real durable runs (text, two tool calls, a second turn; and a
/// cancelled one) replay deterministically against the current workflow code.
#[tokio::test]
async fn captured_histories_replay_deterministically() -> R {
    use svc_worker::chat::ChatAgentWorkflow;
    use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

    let mesh = Mesh::builder()
        .worker()
        .offline_token_delay(Duration::from_millis(50))
        .start()
        .await?;
    let fake = FakeProvider::start().await?;
    add_fake_model(&mesh, "rp", &fake, true).await?;
    fake.push(Reply::chunks(vec![
        Chunk::text("Checking. "),
        Chunk::tool_call("call_1", "lookup", r#"{"q":"a"}"#),
        Chunk::tool_call("call_2", "lookup", r#"{"q":"b"}"#),
    ]));
    fake.push(Reply::text("Done."));
    let chat = mesh.create_chat("replay").await?;
    let (tools_run, _) = run_to_end(
        &mesh,
        &chat,
        json!({ "message": "look things up", "model": "rp:model", "durable": true }),
    )
    .await?;
    assert_eq!(tools_run["status"], "succeeded", "{tools_run}");
    // A cancelled one too: its history has the signal in it.
    let cancelled = start(
        &mesh,
        &chat,
        // ~25 s of tokens: cancelled mid-run however loaded the machine is.
        json!({ "message": (1..=500).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" "), "durable": true }),
    )
    .await?;
    mesh.read_events(&cancelled, None, Some(3)).await?;
    let (status, _) = mesh
        .post_json(&format!("/v1/runs/{cancelled}/cancel"), &json!({}))
        .await?;
    assert_eq!(status, 200);
    mesh.read_events(&cancelled, None, None).await?;
    // And one whose recall was still running when it started (its first turn starts the loop).
    let slow = Mesh::builder()
        .worker()
        .without_curator()
        // (If the recall wins anyway on a loaded machine, the run still replays: it only covers
        // less.)
        .slow_recall(Duration::from_millis(300))
        .start()
        .await?;
    // Its own provider: the first mesh's Curator may still ask `fake` for a summary.
    let slow_fake = FakeProvider::start().await?;
    add_fake_model(&slow, "rp", &slow_fake, true).await?;
    slow_fake.push(Reply::chunks(vec![Chunk::tool_call(
        "call_1",
        "lookup",
        r#"{"q":"a"}"#,
    )]));
    slow_fake.push(Reply::text("Done."));
    let slow_chat = slow.create_chat("replay").await?;
    let (deferred_run, _) = run_to_end(
        &slow,
        &slow_chat,
        json!({ "message": "look it up", "model": "rp:model", "durable": true }),
    )
    .await?;
    assert_eq!(deferred_run["status"], "succeeded", "{deferred_run}");

    let client = svc_worker::temporal::connect(&mesh.worker_config.temporal).await?;
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<ChatAgentWorkflow>()?
            .build(),
    )?;
    for (_owner, run_id) in [
        (&mesh, tools_run["id"].as_str().unwrap_or_default()),
        (&mesh, cancelled.as_str()),
        (&slow, deferred_run["id"].as_str().unwrap_or_default()),
    ] {
        let handle = client.get_workflow_handle::<ChatAgentWorkflow>(run_id.to_string());
        // The workflow has closed (the run's end is written after the outcome is stored): its
        // close event, not a guessed while.
        let _ = tokio::time::timeout(
            Duration::from_secs(60),
            handle.get_result(Default::default()),
        )
        .await?;
        let history = handle.fetch_history(Default::default());
        replayer.replay_workflow(history).await?;
    }
    slow.stop().await?;
    mesh.stop().await
}

/// A worker killed inside a tool call's approval activities — opening the request, then
/// expiring it when nobody answered — is replaced within seconds each time: the activities
/// heartbeat (ADR 0249); before, a dead worker's attempt held the run for their one-minute
/// start-to-close timeout. The workers reach Redis through a proxy that stalls at the request's
/// key, so each kill lands inside the activity.
#[tokio::test]
async fn a_worker_killed_inside_an_approval_activity_is_replaced_within_seconds() -> R {
    // The page answers at once (`hits` starts past the slow first request).
    let hits = Arc::new(AtomicUsize::new(1));
    let site = slow_site(hits.clone()).await?;
    let (mesh, fake) =
        mesh_with_web_fetch_and(|b| b.approval_timeout(Duration::from_secs(4))).await?;
    add_fake_model(&mesh, "askdead", &fake, true).await?;
    let call = |id: &str| fetch_call(site, id);
    fake.push(call("call_first"));
    // After untrusted content, the next web call waits for approval (ADR 0122).
    fake.push(call("call_gated"));
    fake.push(Reply::text("I was not allowed to read it again."));

    let redis_addr = redis_host_port(&mesh.worker_config.common.redis_url)?;
    let redis = tests_e2e::CutProxy::start(redis_addr).await?;
    let proxied = tests_e2e::with_host_port(&mesh.worker_config.common.redis_url, redis.addr);
    let binary = env!("CARGO_BIN_EXE_pa-e2e-worker");
    let worker_via_proxy = || -> Result<std::process::Child, E> {
        Ok(mesh
            .worker_process_command(binary)?
            .env("REDIS_URL", &proxied)
            .spawn()?)
    };
    let mut worker = worker_via_proxy()?;
    mesh.wait_worker_process(Duration::from_secs(60)).await?;
    let chat = mesh.create_chat("approval-dead").await?;
    let run_id = start(
        &mesh,
        &chat,
        json!({ "message": "read the page twice", "model": "askdead:model", "durable": true }),
    )
    .await?;
    let request_key = pa_bus::keys::run_approval(&run_id, "call_gated");
    let approval_asked = |e: &SseEvent| {
        e.event_type() == "CUSTOM"
            && e.data["name"] == "tool_call_approval"
            && e.data["value"]["toolCallId"] == "call_gated"
    };
    let mut events: Vec<SseEvent> = Vec::new();

    // 1. Killed while it opens the request.
    redis.stall_on(request_key.as_bytes());
    wait_for_trip(&redis, Duration::from_secs(60), "the request is opened").await?;
    worker.kill()?;
    worker.wait()?;
    redis.flow();
    let mut replacement = worker_via_proxy()?;
    read_until(
        &mut events,
        &mesh,
        &run_id,
        Duration::from_secs(20),
        approval_asked,
    )
    .await?;

    // 2. Killed while it expires the request nobody answered.
    redis.stall_on(request_key.as_bytes());
    wait_for_trip(&redis, Duration::from_secs(30), "the request expires").await?;
    replacement.kill()?;
    replacement.wait()?;
    redis.flow();
    let mut third = worker_via_proxy()?;
    read_until(&mut events, &mesh, &run_id, Duration::from_secs(20), |e| {
        matches!(e.event_type(), "RUN_FINISHED" | "RUN_ERROR")
    })
    .await?;
    third.kill()?;
    third.wait()?;

    assert_eq!(events.last().map(|e| e.event_type()), Some("RUN_FINISHED"));
    assert_eq!(events.iter().filter(|e| approval_asked(e)).count(), 1);
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e.id.as_deref()).collect();
    let all = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all, "no event id twice");
    // Nobody approved: the gated call never ran (the page was fetched once), and the model
    // was told so.
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    let gated = events
        .iter()
        .find(|e| e.event_type() == "TOOL_CALL_RESULT" && e.data["toolCallId"] == "call_gated")
        .ok_or("the gated call has a result")?;
    assert!(
        !gated.data["content"]
            .as_str()
            .unwrap_or_default()
            .contains("The slow page says 7."),
        "{}",
        gated.data
    );
    assert_eq!(fake.request_count(), 3);
    Ok(())
}

/// `host:port` of a `redis://` URL.
fn redis_host_port(url: &str) -> Result<String, E> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    if host_port.is_empty() {
        return Err(format!("no host in {url}").into());
    }
    Ok(host_port.to_string())
}

/// Waits until `proxy`'s tripwire is tripped.
async fn wait_for_trip(proxy: &tests_e2e::CutProxy, within: Duration, what: &str) -> R {
    let deadline = tokio::time::Instant::now() + within;
    while !proxy.tripped() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("not tripped within {within:?}: {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
