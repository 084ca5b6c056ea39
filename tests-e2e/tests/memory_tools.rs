//! The agent's memory end to end, through real runs with a scripted model: the remember, recall
//! and forget tools (svc-runs → svc-tools.ExecuteTool → svc-memory, as the run's user, on the
//! run's chat), automatic recall at run start (inline and durable: what the provider received,
//! and the STEP naming the memories), a deleted chat's memories, and svc-memory being down.

use std::time::Duration;

use pa_testkit::{Chunk, FakeProvider, Reply};
use serde_json::{Value, json};
use tests_e2e::{Mesh, SseEvent, normalized};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn mesh(worker: bool) -> BoxResult<(Mesh, FakeProvider)> {
    // The real embedder (all-MiniLM-L6-v2): extract it first if this machine lacks it.
    pa_testkit::embed_model_dir()?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let builder = Mesh::builder();
    let mesh = if worker { builder.worker() } else { builder }
        .start()
        .await?;
    let fake = FakeProvider::start().await?;
    mesh.add_fake_model(&fake.base_url()).await?;
    Ok((mesh, fake))
}

async fn run_to_end(mesh: &Mesh, chat: &str, body: Value) -> BoxResult<Vec<SseEvent>> {
    let (_, events) = mesh
        .run_to_end(chat, &body, Duration::from_secs(60))
        .await?;
    let kinds: Vec<&str> = events.iter().map(SseEvent::event_type).collect();
    assert_eq!(kinds.last(), Some(&"RUN_FINISHED"), "{kinds:?}");
    Ok(events)
}

/// One run in which the scripted model calls `tool` with `args`, then answers; returns the
/// tool's result as the model saw it.
async fn tool_turn(
    mesh: &Mesh,
    fake: &FakeProvider,
    chat: &str,
    tool: &str,
    args: Value,
) -> BoxResult<String> {
    fake.push(Reply::chunks(vec![Chunk::tool_call(
        "call_1",
        tool,
        args.to_string(),
    )]));
    fake.push(Reply::text("Done."));
    let events = run_to_end(
        mesh,
        chat,
        json!({ "message": format!("please use {tool}"), "model": "fp:m" }),
    )
    .await?;
    Ok(events
        .iter()
        .find(|e| e.event_type() == "TOOL_CALL_RESULT")
        .and_then(|e| e.data["content"].as_str())
        .unwrap_or("")
        .to_string())
}

/// The memory id in a remember result ("Saved as memory <id> (…").
fn saved_id(result: &str) -> String {
    result
        .split_whitespace()
        .skip_while(|w| *w != "memory")
        .nth(1)
        .unwrap_or("")
        .to_string()
}

fn steps(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event_type() == "STEP_STARTED")
        .filter_map(|e| e.data["stepName"].as_str().map(String::from))
        .collect()
}

/// A memory written through REST as `user` (dev identity).
async fn rest_memory(mesh: &Mesh, user: &str, body: Value) -> BoxResult<Value> {
    let r = mesh
        .http
        .post(mesh.url("/v1/me/memories"))
        .header("x-pa-dev-user", user)
        .json(&body)
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    Ok(r.json().await?)
}

async fn rest_search(mesh: &Mesh, query: &str) -> BoxResult<Vec<String>> {
    let (status, found) = mesh.get_json(&format!("/v1/me/memories?q={query}")).await?;
    assert_eq!(status, 200, "{found}");
    Ok(found["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["text"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

#[tokio::test]
async fn remember_in_one_chat_recall_in_another_chat_scope_stays_and_forget_removes() -> R {
    let (mesh, fake) = mesh(false).await?;
    let chat1 = mesh.create_chat("one").await?;
    let chat2 = mesh.create_chat("two").await?;

    let saved = tool_turn(
        &mesh,
        &fake,
        &chat1,
        "remember",
        json!({ "text": "My favourite colour is teal.", "scope": "world", "kind": "preference" }),
    )
    .await?;
    assert!(saved.starts_with("Saved as memory "), "{saved}");
    assert!(saved.contains("world scope, preference"), "{saved}");
    let teal = saved_id(&saved);
    let lisbon = tool_turn(
        &mesh,
        &fake,
        &chat1,
        "remember",
        json!({ "text": "In this chat we are planning the Lisbon trip.", "scope": "chat" }),
    )
    .await?;
    assert!(lisbon.contains("chat scope, fact"), "{lisbon}");
    // Provenance: the run's chat, as the snapshot fixed it.
    let (_, listed) = mesh
        .get_json(&format!("/v1/me/memories?scope=chat&chat_id={chat1}"))
        .await?;
    assert_eq!(
        listed["items"][0]["text"],
        "In this chat we are planning the Lisbon trip."
    );
    assert_eq!(
        listed["items"][0]["source"]["chat_id"],
        chat1.as_str(),
        "{listed}"
    );
    // And the run that saved it: the chat's second run, which used its first run's toolset
    // snapshot again (ADR 0251) — the snapshot says which tools may run, not whose run it is.
    let (_, messages) = mesh
        .get_json(&format!("/v1/chats/{chat1}/messages"))
        .await?;
    let second_run = messages["items"][3]["run_id"]
        .as_str()
        .ok_or("no second run")?
        .to_string();
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&mesh.database_url).await?;
    let snapshot = tests_e2e::recorded_snapshot(&mut db, &second_run).await?;
    assert_ne!(
        snapshot,
        format!("ts-{second_run}"),
        "the snapshot was reused"
    );
    assert_eq!(
        listed["items"][0]["source"]["run_id"],
        second_run.as_str(),
        "{listed}"
    );

    // Chat 2 recalls the world memory, never chat 1's.
    let found = tool_turn(
        &mesh,
        &fake,
        &chat2,
        "recall",
        json!({ "query": "favourite colour and the Lisbon trip", "scope": "all" }),
    )
    .await?;
    assert!(found.contains("My favourite colour is teal."), "{found}");
    assert!(found.contains(&teal), "the id is given for forget: {found}");
    assert!(!found.contains("Lisbon"), "chat 1's memory leaked: {found}");
    let only_chat = tool_turn(
        &mesh,
        &fake,
        &chat2,
        "recall",
        json!({ "query": "Lisbon trip", "scope": "chat" }),
    )
    .await?;
    assert!(!only_chat.contains("Lisbon"), "{only_chat}");
    // Chat 1 sees both.
    let both = tool_turn(
        &mesh,
        &fake,
        &chat1,
        "recall",
        json!({ "query": "Lisbon trip colour", "top_k": 5 }),
    )
    .await?;
    assert!(both.contains("Lisbon") && both.contains("teal"), "{both}");

    // Bad arguments are the model's to fix, not a failed run.
    let bad = tool_turn(
        &mesh,
        &fake,
        &chat2,
        "remember",
        json!({ "scope": "galaxy" }),
    )
    .await?;
    assert!(bad.contains("\"text\""), "{bad}");

    // Forget, from the other chat: gone from recall and from the user's list.
    let forgot = tool_turn(&mesh, &fake, &chat2, "forget", json!({ "id": teal })).await?;
    assert_eq!(forgot, format!("Forgot memory {teal}."));
    let after = tool_turn(
        &mesh,
        &fake,
        &chat2,
        "recall",
        json!({ "query": "favourite colour" }),
    )
    .await?;
    assert!(!after.contains("teal"), "{after}");
    assert!(
        !rest_search(&mesh, "teal")
            .await?
            .iter()
            .any(|t| t.contains("teal"))
    );
    let again = tool_turn(&mesh, &fake, &chat2, "forget", json!({ "id": teal })).await?;
    assert!(again.contains("not found"), "{again}");
    mesh.stop().await
}

#[tokio::test]
async fn another_users_memories_are_never_recalled_nor_forgotten() -> R {
    let (mesh, fake) = mesh(false).await?;
    let bobs = rest_memory(
        &mesh,
        "bob",
        json!({ "text": "Bob's bank PIN hint is the year of the comet." }),
    )
    .await?;
    let bob_id = bobs["id"].as_str().unwrap_or_default().to_string();
    let chat = mesh.create_chat("mine").await?;
    let found = tool_turn(
        &mesh,
        &fake,
        &chat,
        "recall",
        json!({ "query": "bank PIN hint comet", "top_k": 20 }),
    )
    .await?;
    assert_eq!(found, "No memories match.");
    // Nor did automatic recall give the model anything of Bob's.
    for request in fake.requests() {
        assert!(
            !request.body.to_string().contains("year of the comet"),
            "{}",
            request.body
        );
    }
    let refused = tool_turn(&mesh, &fake, &chat, "forget", json!({ "id": bob_id })).await?;
    assert!(refused.contains("not found"), "{refused}");
    let r = mesh
        .http
        .get(mesh.url("/v1/me/memories"))
        .header("x-pa-dev-user", "bob")
        .send()
        .await?;
    let bob_list: Value = r.json().await?;
    assert_eq!(bob_list["items"][0]["id"], bob_id.as_str(), "{bob_list}");
    mesh.stop().await
}

/// One auto-recall run in `mode`; returns the events and the provider's first request for it (the
/// Curator, curating earlier chats, may ask the same provider meanwhile).
async fn recalled_run(
    mesh: &Mesh,
    fake: &FakeProvider,
    message: &str,
    durable: bool,
) -> BoxResult<(Vec<SseEvent>, Value)> {
    fake.clear_requests();
    fake.push(Reply::text("Your dog is Biscuit."));
    let chat = mesh.create_chat("recall").await?;
    let events = run_to_end(
        mesh,
        &chat,
        json!({ "message": message, "model": "fp:m", "durable": durable }),
    )
    .await?;
    let body = fake
        .requests()
        .into_iter()
        .find(|r| {
            r.path == "/v1/chat/completions"
                && r.body["messages"]
                    .as_array()
                    .and_then(|m| m.last())
                    .is_some_and(|m| m["content"] == message)
        })
        .map(|r| r.body)
        .ok_or("the provider was not called")?;
    Ok((events, body))
}

#[tokio::test]
async fn automatic_recall_puts_relevant_memories_before_the_history_in_both_modes() -> R {
    let (mesh, fake) = mesh(true).await?;
    let dog = rest_memory(
        &mesh,
        "dev-user",
        json!({ "text": "My dog is a beagle called Biscuit." }),
    )
    .await?;
    let dog_id = dog["id"].as_str().unwrap_or_default().to_string();
    rest_memory(
        &mesh,
        "dev-user",
        json!({ "text": "I work as a structural engineer in Rotterdam." }),
    )
    .await?;

    for durable in [false, true] {
        let (events, body) =
            recalled_run(&mesh, &fake, "What is the name of my dog?", durable).await?;
        let messages = body["messages"].as_array().ok_or("no messages")?;
        assert_eq!(messages[0]["role"], "system", "{body}");
        let context = messages[0]["content"].as_str().unwrap_or("");
        assert!(
            context.contains("My dog is a beagle called Biscuit."),
            "{context}"
        );
        assert!(context.contains(&dog_id), "{context}");
        assert_eq!(
            messages.last().map(|m| m["content"].clone()),
            Some(json!("What is the name of my dog?")),
            "{body}"
        );
        let steps = steps(&events);
        let step = steps
            .iter()
            .find(|s| s.starts_with("memory_recall: injected memories "))
            .ok_or(format!("no recall step in {steps:?}"))?;
        assert!(step.contains(&dog_id), "{step}");
        // The STEP names exactly what the model was given.
        let named: Vec<&str> = step
            .trim_start_matches("memory_recall: injected memories ")
            .split(", ")
            .collect();
        for id in &named {
            assert!(
                context.contains(id),
                "{id} named but not injected: {context}"
            );
        }
    }

    // Nothing relevant (no semantic match above the minimum, no shared word): nothing injected.
    let (events, body) = recalled_run(&mesh, &fake, "Quelle heure est-il?", false).await?;
    assert_ne!(body["messages"][0]["role"], "system", "{body}");
    assert!(steps(&events).is_empty(), "{:?}", steps(&events));
    mesh.stop().await
}

/// A durable run that is ready to start while its recall is still running (svc-memory answers
/// slowly) does not wait for it: the workflow starts, and its first model turn takes the recall
/// when svc-runs hands it over. The events and the model's request are those of an inline run,
/// which waits for its recall before it starts.
#[tokio::test]
async fn a_durable_run_starts_before_its_recall_and_its_first_turn_takes_it() -> R {
    pa_testkit::embed_model_dir()?;
    let mesh = Mesh::builder()
        .worker()
        .without_curator()
        // Slow enough that the durable run is always ready before its recall (it hands it
        // over), with the recall's timeout raised to match (see `slow_recall`).
        .slow_recall(Duration::from_millis(1500))
        .start()
        .await?;
    let fake = FakeProvider::start().await?;
    mesh.add_fake_model(&fake.base_url()).await?;
    let dog = rest_memory(
        &mesh,
        "dev-user",
        json!({ "text": "My dog is a beagle called Biscuit." }),
    )
    .await?;
    let dog_id = dog["id"].as_str().unwrap_or_default().to_string();
    let mut runs = Vec::new();
    for durable in [false, true] {
        let (events, body) =
            recalled_run(&mesh, &fake, "What is the name of my dog?", durable).await?;
        assert_eq!(body["messages"][0]["role"], "system", "{body}");
        let context = body["messages"][0]["content"].as_str().unwrap_or("");
        assert!(
            context.contains("My dog is a beagle called Biscuit."),
            "durable {durable}: {context}"
        );
        let named = steps(&events);
        assert!(
            named.iter().any(|s| s.contains(&dog_id)),
            "durable {durable}: {named:?}"
        );
        runs.push(events);
    }
    assert_eq!(normalized(&runs[0]), normalized(&runs[1]));
    // Only the durable run's recall went through the hand-over (svc-runs started its workflow
    // without waiting for it); the inline run waited.
    let redis = pa_kit::redis::pool(&mesh.worker_config.common.redis_url, 1)?;
    let mut conn = redis.get().await?;
    let mut handed = Vec::new();
    for events in &runs {
        let run_id = events[0].data["runId"].as_str().unwrap_or_default();
        let value: Option<String> = deadpool_redis::redis::cmd("LINDEX")
            .arg(pa_bus::keys::run_handover(
                run_id,
                pa_bus::keys::Handover::Recall,
            ))
            .arg(0)
            .query_async(&mut conn)
            .await?;
        handed.push(value);
    }
    assert_eq!(handed[0], None, "the inline run handed nothing over");
    assert!(
        handed[1].as_deref().is_some_and(|v| v.contains(&dog_id)),
        "{:?}",
        handed[1]
    );
    mesh.stop().await
}

#[tokio::test]
async fn deleting_a_chat_forgets_its_memories_but_not_the_world_ones() -> R {
    let (mesh, _fake) = mesh(false).await?;
    let chat = mesh.create_chat("to delete").await?;
    let other = mesh.create_chat("to keep").await?;
    for (scope, chat_id, text) in [
        (
            "chat",
            Some(&chat),
            "The draft budget of this project is 40k.",
        ),
        ("chat", Some(&other), "The other project's budget is 90k."),
        ("world", None, "I prefer short answers."),
    ] {
        rest_memory(
            &mesh,
            "dev-user",
            json!({ "text": text, "scope": scope, "chat_id": chat_id }),
        )
        .await?;
    }
    let r = mesh
        .http
        .delete(mesh.url(&format!("/v1/chats/{chat}")))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    let (_, left) = mesh.get_json("/v1/me/memories").await?;
    let texts: Vec<&str> = left["items"]
        .as_array()
        .map(|i| i.iter().filter_map(|m| m["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        texts,
        [
            "I prefer short answers.",
            "The other project's budget is 90k."
        ],
        "{left}"
    );
    mesh.stop().await
}

#[tokio::test]
async fn without_svc_memory_runs_still_finish_and_memory_tools_report_an_error() -> R {
    let (mut mesh, fake) = mesh(false).await?;
    rest_memory(
        &mesh,
        "dev-user",
        json!({ "text": "My dog is called Biscuit." }),
    )
    .await?;
    let chat = mesh.create_chat("no memory").await?;
    mesh.stop_service("svc-memory").await?;

    fake.clear_requests();
    let result = tool_turn(&mesh, &fake, &chat, "recall", json!({ "query": "dog" })).await?;
    assert!(result.contains("memory is unavailable"), "{result}");
    let first = fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/chat/completions")
        .ok_or("no model call")?;
    assert_ne!(
        first.body["messages"][0]["role"], "system",
        "{}",
        first.body
    );
    let saved = tool_turn(
        &mesh,
        &fake,
        &chat,
        "remember",
        json!({ "text": "I like tea." }),
    )
    .await?;
    assert!(saved.contains("remember failed"), "{saved}");

    // A chat whose memories cannot be forgotten now is not deleted (the client retries).
    let r = mesh
        .http
        .delete(mesh.url(&format!("/v1/chats/{chat}")))
        .send()
        .await?;
    assert_eq!(r.status(), 503);
    let (status, _) = mesh.get_json(&format!("/v1/chats/{chat}")).await?;
    assert_eq!(status, 200);
    mesh.stop().await
}
