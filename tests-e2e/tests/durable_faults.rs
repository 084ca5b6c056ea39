//! Durable runs through the death of what they depend on (issue 24): a model turn that breaks
//! off (the provider stream cut, svc-models killed) is retried under a new message id and the
//! broken message is marked `message_discarded` (ADR 0160); a long chat and a huge tool result
//! travel through Temporal by reference (ADR 0161); a run's end reaches its stream while
//! svc-runs cannot store it, and is stored once Postgres is back (ADR 0162).

use std::time::Duration;

use pa_testkit::{Chunk, FakeProvider, Reply};
use serde_json::{Value, json};
use tests_e2e::{CutProxy, Mesh, SseEvent};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type E = Box<dyn std::error::Error + Send + Sync>;

async fn start(mesh: &Mesh, chat: &str, body: Value) -> Result<String, E> {
    let (status, accepted) = mesh
        .post_json(&format!("/v1/chats/{chat}/runs"), &body)
        .await?;
    assert_eq!(status, 202, "{accepted}");
    Ok(accepted["run_id"].as_str().unwrap_or_default().to_string())
}

async fn events_to_end(mesh: &Mesh, run_id: &str) -> Result<Vec<SseEvent>, E> {
    tokio::time::timeout(
        Duration::from_secs(90),
        mesh.read_events(run_id, None, None),
    )
    .await?
}

async fn add_fake_model(mesh: &Mesh, id: &str, fake: &FakeProvider, tools: bool) -> R {
    let provider = json!({ "id": id, "kind": "openai_compatible", "base_url": fake.base_url(),
                           "tags": ["zero-retention"], "platform_api_key": format!("sk-{id}") });
    let (status, saved) = mesh.post_json("/v1/admin/providers", &provider).await?;
    assert_eq!(status, 200, "{saved}");
    let capabilities: Vec<&str> = if tools { vec!["tools"] } else { vec![] };
    let model = json!({ "label": format!("{id}:model"), "context_window": 1_000_000,
                        "capabilities": capabilities });
    let (status, saved) = mesh.post_json("/v1/admin/models", &model).await?;
    assert_eq!(status, 200, "{saved}");
    Ok(())
}

/// The `message_discarded` events' values.
fn discarded(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.event_type() == "CUSTOM" && e.data["name"] == "message_discarded")
        .map(|e| e.data["value"].clone())
        .collect()
}

/// What a client that drops discarded messages shows: the text of the other messages.
fn kept_text(events: &[SseEvent]) -> String {
    let gone: Vec<Value> = discarded(events)
        .into_iter()
        .map(|v| v["messageId"].clone())
        .collect();
    events
        .iter()
        .filter(|e| e.event_type() == "TEXT_MESSAGE_CONTENT")
        .filter(|e| !gone.contains(&e.data["messageId"]))
        .filter_map(|e| e.data["delta"].as_str())
        .collect()
}

fn assert_ids_unique(events: &[SseEvent]) {
    let ids: Vec<&str> = events.iter().filter_map(|e| e.id.as_deref()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(ids.len(), unique.len(), "no event id twice: {ids:?}");
}

async fn assistant_messages(mesh: &Mesh, chat: &str) -> Result<Vec<String>, E> {
    let (_, messages) = mesh.get_json(&format!("/v1/chats/{chat}/messages")).await?;
    Ok(messages["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect())
}

/// A worker process killed (SIGKILL) when the test is done with it, however it ends.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl KilledOnDrop {
    /// Kills the worker (SIGKILL) and starts another in its place.
    fn kill_and_replace(&mut self, mesh: &Mesh, binary: &str) -> R {
        self.0.kill()?;
        self.0.wait()?;
        self.0 = mesh.spawn_worker_process(binary)?;
        Ok(())
    }
}

/// The run's end is stored (succeeded) within `within`, its reply once, and its stream holds
/// one terminal event.
async fn assert_end_stored_once(mesh: &Mesh, chat: &str, run_id: &str, within: Duration) -> R {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
        if status == 200 && run["status"] == "succeeded" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run is stored once Postgres is back: {status} {run}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = assistant_messages(mesh, chat).await?;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let again = mesh.read_events(run_id, None, None).await?;
    assert_eq!(
        again
            .iter()
            .filter(|e| matches!(e.event_type(), "RUN_FINISHED" | "RUN_ERROR"))
            .count(),
        1,
        "one terminal event"
    );
    assert_ids_unique(&again);
    Ok(())
}

#[tokio::test]
async fn a_model_stream_cut_mid_turn_is_retried_under_a_new_message_id() -> R {
    let mesh = Mesh::builder().worker().without_curator().start().await?;
    let fake = FakeProvider::start().await?;
    add_fake_model(&mesh, "cut", &fake, false).await?;
    // The provider's stream breaks off after its first tokens; the retry gets a whole answer.
    fake.push(
        Reply::chunks(vec![
            Chunk::text("Partial "),
            Chunk::text("answer "),
            Chunk::text("lost"),
        ])
        .disconnect_after(3),
    );
    fake.push(Reply::text("The whole answer."));
    let chat = mesh.create_chat("cut").await?;
    let run_id = start(
        &mesh,
        &chat,
        json!({ "message": "hello", "model": "cut:model", "durable": true }),
    )
    .await?;
    let events = events_to_end(&mesh, &run_id).await?;
    assert_eq!(
        events.last().map(SseEvent::event_type),
        Some("RUN_FINISHED")
    );
    let gone = discarded(&events);
    assert_eq!(gone.len(), 1, "one message_discarded: {gone:?}");
    let first_id = events
        .iter()
        .find(|e| e.event_type() == "TEXT_MESSAGE_START")
        .map(|e| e.data["messageId"].clone())
        .unwrap_or_default();
    assert_eq!(
        gone[0]["messageId"], first_id,
        "the broken message is the one discarded"
    );
    assert!(gone[0]["reason"].as_str().is_some_and(|r| !r.is_empty()));
    // The broken message was closed before it was discarded; the retry has its own id.
    let ends: Vec<&Value> = events
        .iter()
        .filter(|e| e.event_type() == "TEXT_MESSAGE_END")
        .map(|e| &e.data["messageId"])
        .collect();
    assert_eq!(ends.len(), 2, "{ends:?}");
    assert_eq!(*ends[0], first_id);
    assert_ne!(*ends[1], first_id);
    assert_eq!(kept_text(&events), "The whole answer.");
    assert_ids_unique(&events);
    assert_eq!(fake.request_count(), 2, "one retry");
    let (_, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        assistant_messages(&mesh, &chat).await?,
        vec!["The whole answer.".to_string()],
        "the history keeps the completed attempt only"
    );
    mesh.stop().await
}

#[tokio::test]
async fn a_model_turn_that_keeps_breaking_off_ends_with_a_retryable_run_error() -> R {
    // The test mesh's worker tries a turn 3 times.
    let mesh = Mesh::builder().worker().without_curator().start().await?;
    let fake = FakeProvider::start().await?;
    add_fake_model(&mesh, "broken", &fake, false).await?;
    for _ in 0..3 {
        fake.push(
            Reply::chunks(vec![Chunk::text("Never "), Chunk::text("whole")]).disconnect_after(2),
        );
    }
    fake.push(Reply::text("not asked"));
    let chat = mesh.create_chat("broken").await?;
    let run_id = start(
        &mesh,
        &chat,
        json!({ "message": "hello", "model": "broken:model", "durable": true }),
    )
    .await?;
    let events = events_to_end(&mesh, &run_id).await?;
    let last = events.last().ok_or("no events")?;
    assert_eq!(last.event_type(), "RUN_ERROR", "{:?}", last.data);
    assert_eq!(last.data["code"], "unavailable", "a retryable code");
    assert!(
        last.data["message"]
            .as_str()
            .is_some_and(|m| m.contains("3 times")),
        "{}",
        last.data
    );
    assert_eq!(
        discarded(&events).len(),
        3,
        "every broken attempt is discarded"
    );
    assert_eq!(kept_text(&events), "");
    assert_eq!(fake.request_count(), 3, "the limit holds");
    assert_ids_unique(&events);
    let (_, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(assistant_messages(&mesh, &chat).await?.is_empty());
    mesh.stop().await
}

#[tokio::test]
async fn svc_models_dying_mid_turn_is_survived_by_a_durable_run() -> R {
    let mut mesh = Mesh::builder()
        .offline_token_delay(Duration::from_millis(60))
        .without_curator()
        .worker_process()
        .start()
        .await?;
    // The worker reaches svc-models through a proxy: cutting it is svc-models' death as the
    // worker sees it (its stream resets), and its next connection a restarted replica.
    let relay = CutProxy::start(mesh.models_url.trim_start_matches("http://").to_string()).await?;
    mesh.worker_config.models_url = relay.url();
    let mut worker = mesh.spawn_worker_process(env!("CARGO_BIN_EXE_pa-e2e-worker"))?;
    mesh.wait_worker_process(Duration::from_secs(60)).await?;
    let chat = mesh.create_chat("relay").await?;
    let words: Vec<String> = (1..=30).map(|i| format!("w{i}")).collect();
    let message = words.join(" ");
    let run_id = start(&mesh, &chat, json!({ "message": message, "durable": true })).await?;
    let early = mesh.read_events(&run_id, None, Some(8)).await?;
    assert!(
        early
            .iter()
            .any(|e| e.event_type() == "TEXT_MESSAGE_CONTENT"),
        "tokens are streaming"
    );
    relay.cut();
    let resumed_from = early.last().and_then(|e| e.id.clone()).unwrap_or_default();
    let rest = tokio::time::timeout(
        Duration::from_secs(90),
        mesh.read_events(&run_id, Some(&resumed_from), None),
    )
    .await??;
    worker.kill()?;
    worker.wait()?;
    relay.down();
    let all: Vec<SseEvent> = early.into_iter().chain(rest).collect();
    assert_eq!(all.last().map(SseEvent::event_type), Some("RUN_FINISHED"));
    assert_eq!(discarded(&all).len(), 1, "one message_discarded");
    let kept = kept_text(&all);
    assert!(kept.contains(&message), "the retried answer, whole: {kept}");
    assert_eq!(kept.matches("w17 ").count(), 1, "{kept}");
    assert_ids_unique(&all);
    let stored = assistant_messages(&mesh, &chat).await?;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0], kept);
    mesh.stop().await
}

#[tokio::test]
async fn a_long_chat_and_a_huge_tool_result_travel_through_temporal_by_reference() -> R {
    let mesh = Mesh::builder()
        .worker()
        .without_curator()
        .history_messages(400)
        .start()
        .await?;
    let fake = FakeProvider::start().await?;
    mesh.add_fake_model(&fake.base_url()).await?;
    let chat = mesh.create_chat("long").await?;
    // 200 earlier messages (1 KiB each) in the chat.
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&mesh.database_url).await?;
    for i in 0..200 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        let content = format!("message {i}: {}", "x".repeat(1024));
        sqlx::query(
            "INSERT INTO runs.messages (tenant_id, id, chat_id, role, content) \
             SELECT tenant_id, $1, id, $2, $3 FROM runs.chats WHERE id = $4",
        )
        .bind(format!("old-{i}"))
        .bind(role)
        .bind(content)
        .bind(&chat)
        .execute(&mut db)
        .await?;
    }
    // The tool result: a sub-agent's 1.5 MiB report (web_fetch and MCP results are cut to
    // 40k characters; a report is not).
    let line = "All work and no play makes a big tool result.\n";
    let piece = line.repeat(100_000 / line.len());
    let report = piece.repeat(16);
    fake.push(Reply::chunks(vec![Chunk::tool_call(
        "call_big",
        "delegate",
        json!({ "task": "Write a long report." }).to_string(),
    )]));
    // Streamed in 16 deltas of 100 kB.
    fake.push(Reply::chunks(vec![Chunk::text(piece.clone()); 16]));
    fake.push(Reply::text("It is a big report."));
    let run_id = start(
        &mesh,
        &chat,
        json!({ "message": "how big is it?", "model": "fp:m", "durable": true }),
    )
    .await?;
    let events = events_to_end(&mesh, &run_id).await?;
    assert_eq!(
        events.last().map(SseEvent::event_type),
        Some("RUN_FINISHED"),
        "{:?}",
        events.last().map(|e| &e.data)
    );
    let result = events
        .iter()
        .find(|e| {
            e.event_type() == "TOOL_CALL_RESULT"
                && e.data["toolCallId"] == "call_big"
                && e.data.get("subagentRunId").is_none()
        })
        .and_then(|e| e.data["content"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        result.len() > 1_500_000,
        "the whole result streams: {}",
        result.len()
    );
    assert_eq!(result, report);
    // The model saw the whole history and the whole result.
    let asked = fake.last_request().ok_or("no request")?;
    let messages = asked.body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(messages.len() >= 203, "{} messages", messages.len());
    assert!(
        messages.iter().any(|m| m["content"]
            .as_str()
            .is_some_and(|c| c.starts_with("message 0: "))),
        "the oldest message reached the model"
    );
    assert_eq!(fake.last_tool_message("call_big"), report);
    let (_, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    // The workflow's history holds references, not the payloads.
    let client = svc_worker::temporal::connect(&mesh.worker_config.temporal).await?;
    let size = svc_worker::temporal::history_size(&client, &run_id).await?;
    assert!(
        size.bytes < 256 * 1024,
        "the workflow history is {} bytes in {} events",
        size.bytes,
        size.events
    );
    mesh.stop().await
}

#[tokio::test]
async fn a_runs_end_reaches_its_stream_while_postgres_is_away_and_is_stored_once_it_is_back() -> R {
    let mesh = Mesh::builder()
        .offline_token_delay(Duration::from_millis(40))
        .worker()
        .without_curator()
        .runs_db_behind_proxy()
        .start()
        .await?;
    let db = mesh.runs_db.clone().ok_or("no proxy")?;
    let chat = mesh.create_chat("outage").await?;
    let message = "one two three four five six seven eight nine ten eleven twelve";
    let run_id = start(&mesh, &chat, json!({ "message": message, "durable": true })).await?;
    // The client follows the stream; Postgres goes away for svc-runs mid-turn, once the
    // client has its first events (its stream is open: the owner check is behind it).
    let (streaming_tx, streaming) = tokio::sync::oneshot::channel::<()>();
    let mut follow = tokio::spawn({
        let http = mesh.http.clone();
        let url = mesh.url(&format!("/v1/runs/{run_id}/events"));
        async move {
            let response = http.get(url).send().await?;
            let mut events = Vec::new();
            let mut streaming_tx = Some(streaming_tx);
            tests_e2e::read_sse_into(response, &mut events, &mut |_| {
                if let Some(tx) = streaming_tx.take() {
                    let _ = tx.send(());
                }
            })
            .await?;
            Ok::<_, E>(events)
        }
    });
    tokio::time::timeout(Duration::from_secs(30), streaming).await??;
    db.down();
    let events = tokio::time::timeout(Duration::from_secs(30), &mut follow).await???;
    let last = events.last().ok_or("no events")?;
    assert_eq!(
        last.event_type(),
        "RUN_FINISHED",
        "the end arrives during the outage"
    );
    let terminal = events
        .iter()
        .filter(|e| matches!(e.event_type(), "RUN_FINISHED" | "RUN_ERROR"))
        .count();
    assert_eq!(terminal, 1);
    // svc-runs could not store it: the row (read past the proxy) is still running.
    let mut direct = <sqlx::PgConnection as sqlx::Connection>::connect(&mesh.database_url).await?;
    let (status,): (i16,) = sqlx::query_as("SELECT status FROM runs.runs WHERE id = $1")
        .bind(&run_id)
        .fetch_one(&mut direct)
        .await?;
    assert_eq!(
        status,
        pa_proto::v1::RunStatus::Running as i16,
        "the end reached the stream before the store"
    );
    // Postgres comes back: the outcome lands (the finish activity retries it).
    db.up();
    assert_end_stored_once(&mesh, &chat, &run_id, Duration::from_secs(60)).await?;
    mesh.stop().await
}

/// A run's end is a local activity (ADR 0219): its worker retries it in its own memory. Killed
/// (SIGKILL) while svc-runs cannot store the end, that worker's workflow task times out and a
/// new worker runs the finish again: the end is stored once Postgres is back, and the stream
/// holds one terminal event.
#[tokio::test]
async fn a_worker_killed_while_its_runs_end_is_retried_is_replaced_and_the_end_stored_once() -> R {
    let mesh = Mesh::builder()
        .offline_token_delay(Duration::from_millis(40))
        .without_curator()
        .worker_process()
        .runs_db_behind_proxy()
        .start()
        .await?;
    let binary = env!("CARGO_BIN_EXE_pa-e2e-worker");
    let mut worker = mesh.spawn_worker_process(binary)?;
    mesh.wait_worker_process(Duration::from_secs(60)).await?;
    let db = mesh.runs_db.clone().ok_or("no proxy")?;
    let chat = mesh.create_chat("killed finish").await?;
    let message = "one two three four five six seven eight nine ten eleven twelve";
    let run_id = start(&mesh, &chat, json!({ "message": message, "durable": true })).await?;
    // Postgres goes away for svc-runs once tokens stream: the end cannot be stored.
    let early = mesh.read_events(&run_id, None, Some(3)).await?;
    assert_eq!(early.len(), 3);
    db.down();
    let events = events_to_end(&mesh, &run_id).await?;
    assert_eq!(
        events.last().map(SseEvent::event_type),
        Some("RUN_FINISHED"),
        "the end reaches the stream during the outage"
    );
    // The worker is retrying the record: kill it, start another, bring Postgres back.
    worker.kill()?;
    worker.wait()?;
    let replacement = KilledOnDrop(mesh.spawn_worker_process(binary)?);
    db.up();
    assert_end_stored_once(&mesh, &chat, &run_id, Duration::from_secs(90)).await?;
    drop(replacement);
    let kept = assistant_messages(&mesh, &chat).await?;
    assert!(kept[0].contains("twelve"), "{kept:?}");
    mesh.stop().await
}

/// Turns that finish while no worker runs (killed with SIGKILL) wait in svc-runs' queue, with the
/// runs' ends that made them turns (ADR 0242): the worker that comes back curates them.
#[tokio::test]
async fn turns_finished_while_no_worker_runs_are_curated_when_one_returns() -> R {
    let mesh = Mesh::builder()
        .worker_process()
        .curator_debounce(Duration::from_millis(100))
        .start()
        .await?;
    let binary = env!("CARGO_BIN_EXE_pa-e2e-worker");
    let mut worker = KilledOnDrop(mesh.spawn_worker_process(binary)?);
    mesh.wait_worker_process(Duration::from_secs(60)).await?;
    let result = async {
        let fake = FakeProvider::start().await?;
        add_fake_model(&mesh, "cur", &fake, false).await?;
        fake.set_default(Reply::text(r#"{"summary": "A chat.", "facts": []}"#));
        let chat = mesh.create_chat("no worker").await?;
        let body = json!({ "message": "hello", "model": "cur:model" });
        let first = start(&mesh, &chat, body.clone()).await?;
        events_to_end(&mesh, &first).await?;
        mesh.await_curated(&chat, &first).await?;
        worker.0.kill()?;
        worker.0.wait()?;
        // Inline turns need no worker: two finish, and wait.
        let mut last = String::new();
        for _ in 0..2 {
            last = start(&mesh, &chat, body.clone()).await?;
            events_to_end(&mesh, &last).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            mesh.curated_from(&chat).await?.as_deref(),
            Some(first.as_str())
        );
        worker = KilledOnDrop(mesh.spawn_worker_process(binary)?);
        mesh.wait_worker_process(Duration::from_secs(60)).await?;
        mesh.await_curated(&chat, &last).await?;
        Ok::<_, E>(())
    }
    .await;
    drop(worker);
    mesh.stop().await?;
    result
}

/// How a curating worker goes away.
#[derive(Clone, Copy, PartialEq)]
enum WorkerEnd {
    /// SIGKILL: it leaves its claims to their lease.
    Killed,
    /// SIGTERM (a deploy, a scale-down): it hands its claims back before it exits.
    Stopped,
}

/// A worker goes (`end`) while its curation waits on a model that never answers; another worker
/// is started and must curate the chat within `await_curated`'s 30 s, asking the model again
/// once. The Curator's claims are held for `lease`.
async fn a_curating_worker_goes(end: WorkerEnd, lease: Duration) -> R {
    let mesh = Mesh::builder()
        .worker_process()
        .curator_debounce(Duration::from_millis(100))
        .curator_lease(lease)
        .start()
        .await?;
    let binary = env!("CARGO_BIN_EXE_pa-e2e-worker");
    let mut worker = KilledOnDrop(mesh.spawn_worker_process(binary)?);
    mesh.wait_worker_process(Duration::from_secs(60)).await?;
    let result = async {
        let fake = FakeProvider::start().await?;
        add_fake_model(&mesh, "cur", &fake, false).await?;
        // The run's answer, then a curation whose answer never comes, then curations that do.
        fake.push(Reply::text("Hello."));
        fake.push(Reply::hang());
        fake.set_default(Reply::text(r#"{"summary": "A greeting.", "facts": []}"#));
        let chat = mesh.create_chat("worker gone mid-curation").await?;
        let body = json!({ "message": "hello", "model": "cur:model" });
        let run_id = start(&mesh, &chat, body).await?;
        events_to_end(&mesh, &run_id).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while fake.request_count() < 2 {
            if tokio::time::Instant::now() > deadline {
                return Err("the Curator never asked the model".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The curation waits on the model: its worker goes.
        match end {
            WorkerEnd::Killed => worker.kill_and_replace(&mesh, binary)?,
            WorkerEnd::Stopped => {
                let stopped = std::process::Command::new("kill")
                    .args(["-TERM", &worker.0.id().to_string()])
                    .status()?;
                assert!(stopped.success());
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while worker.0.try_wait()?.is_none() {
                    if std::time::Instant::now() > deadline {
                        return Err("the stopped worker did not exit".into());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                worker.0 = mesh.spawn_worker_process(binary)?;
            }
        }
        mesh.await_curated(&chat, &run_id).await?;
        assert_eq!(fake.request_count(), 3, "one curation, asked again once");
        Ok::<_, E>(())
    }
    .await;
    drop(worker);
    mesh.stop().await?;
    result
}

/// A curation whose worker is killed (SIGKILL) while the model answers is taken up by another
/// worker once the dead one's claim runs out (its lease, 3 s here; 2 minutes by default).
#[tokio::test]
async fn a_curation_whose_worker_is_killed_mid_answer_is_finished_by_another() -> R {
    a_curating_worker_goes(WorkerEnd::Killed, Duration::from_secs(3)).await
}

/// A curation whose worker is stopped (SIGTERM: a deploy, a scale-down) while the model answers
/// is handed back and taken up by another worker at once, not after its claim's lease (two
/// minutes here, as by default, against `await_curated`'s 30 s): the stopping worker releases
/// what it leaves unfinished (ADR 0248).
#[tokio::test]
async fn a_curation_whose_worker_is_stopped_mid_answer_is_handed_back_and_finished_by_another() -> R
{
    a_curating_worker_goes(WorkerEnd::Stopped, Duration::from_secs(120)).await
}

/// A maintenance task whose worker is killed (SIGKILL) mid-task is finished by another worker
/// within seconds: the activity heartbeats (ADR 0235), so Temporal retries it once the beats
/// stop, not after its ten-minute start-to-close timeout. The purge is exact: every due row of
/// both tenants goes, the recent ones stay.
#[tokio::test]
async fn a_maintenance_task_whose_worker_is_killed_mid_task_is_finished_by_another() -> R {
    use sqlx::Connection;
    let mesh = Mesh::builder()
        .without_curator()
        .worker_process_with_schedules()
        .start()
        .await?;
    let binary = env!("CARGO_BIN_EXE_pa-e2e-worker");
    let result = async {
        let mut worker = KilledOnDrop(mesh.spawn_worker_process(binary)?);
        mesh.wait_worker_process(Duration::from_secs(60)).await?;
        let mut owner = sqlx::PgConnection::connect(&mesh.admin_database_url()).await?;
        // 1,800 snapshots past the 90-day retention over two tenants (four batches of 500),
        // and 20 recent ones.
        sqlx::query(
            "INSERT INTO tools.toolset_snapshots \
               (tenant_id, id, run_id, user_id, provider_tags, chat_id, created_at) \
             SELECT CASE WHEN i % 2 = 0 THEN 'dev' ELSE 'tenant-b' END, \
               CASE WHEN i <= 1800 THEN 'old-' ELSE 'recent-' END || i, 'r-' || i, 'u', '{}', '', \
               CASE WHEN i <= 1800 THEN now() - interval '100 days' - i * interval '1 second' \
                    ELSE now() END \
             FROM generate_series(1, 1820) i",
        )
        .execute(&mut owner)
        .await?;
        // The test holds the table, so the task's first batch waits for it: the worker is
        // killed with its task in flight.
        let mut holder = sqlx::PgConnection::connect(&mesh.admin_database_url()).await?;
        let mut hold = holder.begin().await?;
        sqlx::query("LOCK TABLE tools.toolset_snapshots IN SHARE MODE")
            .execute(&mut *hold)
            .await?;
        let client = svc_worker::temporal::connect(&mesh.worker_config.temporal).await?;
        let id = svc_worker::schedules::schedule_id(
            &mesh.worker_config.temporal.task_queue,
            "purge_toolset_snapshots",
        );
        svc_worker::schedules::trigger(&client, &id).await?;
        let waiting = "SELECT count(*) FROM pg_stat_activity \
                       WHERE wait_event_type = 'Lock' AND query LIKE $1";
        tests_e2e::eventually(
            &mut owner,
            waiting,
            "%DELETE FROM toolset_snapshots%",
            |n| n >= 1,
        )
        .await?;
        worker.kill_and_replace(&mesh, binary)?;
        hold.commit().await?;
        // Well within the start-to-close timeout (10 min).
        let old = "SELECT count(*) FROM tools.toolset_snapshots WHERE id LIKE $1";
        let left = tokio::time::timeout(
            Duration::from_secs(45),
            tests_e2e::eventually(&mut owner, old, "old-%", |n| n == 0),
        )
        .await
        .map_err(|_| "the killed worker's task was not taken over within 45 s")??;
        assert_eq!(left, 0);
        let recent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tools.toolset_snapshots WHERE id LIKE 'recent-%'",
        )
        .fetch_one(&mut owner)
        .await?;
        assert_eq!(recent, 20, "only what is past the retention goes");
        Ok::<(), E>(())
    }
    .await;
    mesh.delete_schedules().await?;
    result?;
    mesh.stop().await
}
