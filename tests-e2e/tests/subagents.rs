//! Sub-agents end to end, with a scripted model: `explore` (read-only tools) cannot write a
//! memory and `delegate` can; each sub-run has its own Run row, usage and stream, and its events
//! appear in the parent's stream attributed to it (AG-UI SUBAGENT_* + `subagentRunId`); a
//! runaway recursion stops at the depth limit and the parent's budget; a durable parent relays
//! its sub-runs too, and run_agents_script runs its steps as durable sub-runs.

use std::time::Duration;

use pa_testkit::{Chunk, FakeProvider, Reply};
use serde_json::{Value, json};
use tests_e2e::{Mesh, SseEvent};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn mesh(worker: bool) -> BoxResult<(Mesh, FakeProvider)> {
    pa_testkit::embed_model_dir()?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let builder = Mesh::builder().without_curator();
    let mesh = if worker { builder.worker() } else { builder }
        .start()
        .await?;
    let fake = FakeProvider::start().await?;
    mesh.add_fake_model(&fake.base_url()).await?;
    Ok((mesh, fake))
}

fn call(id: &str, tool: &str, args: Value) -> Reply {
    Reply::chunks(vec![Chunk::tool_call(id, tool, args.to_string())])
}

/// Starts a run and reads its stream to the end; returns (run id, events).
async fn run_to_end(mesh: &Mesh, chat: &str, body: Value) -> BoxResult<(String, Vec<SseEvent>)> {
    mesh.run_to_end(chat, &body, Duration::from_secs(90)).await
}

fn of_type<'a>(events: &'a [SseEvent], kind: &str) -> Vec<&'a SseEvent> {
    events.iter().filter(|e| e.event_type() == kind).collect()
}

/// The names of the tools the model was offered in the provider's `n`-th request.
fn offered_tools(fake: &FakeProvider, n: usize) -> Vec<String> {
    fake.requests()[n].body["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["function"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A tool result of the parent (not attributed to a sub-run) for `tool_call_id`.
fn own_result(events: &[SseEvent], tool_call_id: &str) -> String {
    events
        .iter()
        .find(|e| {
            e.event_type() == "TOOL_CALL_RESULT"
                && e.data["toolCallId"] == tool_call_id
                && e.data.get("subagentRunId").is_none()
        })
        .and_then(|e| e.data["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn explore_cannot_write_delegate_can_and_each_sub_run_is_its_own_run() -> R {
    let (mesh, fake) = mesh(false).await?;
    let chat = mesh.create_chat("sub-agents").await?;
    // parent → explore (tries to write, cannot; reports) → parent → delegate (writes) → parent.
    fake.push(call(
        "p1",
        "explore",
        json!({ "task": "Find what tea the user likes." }),
    ));
    fake.push(call(
        "e1",
        "remember",
        json!({ "text": "Explore wrote this." }),
    ));
    fake.push(Reply::text("Explore report: nothing written."));
    fake.push(call(
        "p2",
        "delegate",
        json!({ "task": "Remember that the user likes green tea." }),
    ));
    fake.push(call(
        "d1",
        "remember",
        json!({ "text": "The user likes green tea." }),
    ));
    fake.push(Reply::text("Delegate saved it."));
    fake.push(Reply::text("All done."));
    let (parent, events) = run_to_end(
        &mesh,
        &chat,
        json!({ "message": "Sort out my tea.", "model": "fp:m" }),
    )
    .await?;
    let kinds: Vec<&str> = events.iter().map(SseEvent::event_type).collect();
    assert_eq!(kinds.last(), Some(&"RUN_FINISHED"), "{kinds:?}");
    assert_eq!(fake.pending_replies(), 0, "every scripted reply was used");

    // The explore sub-run was offered only read-only tools; the delegate sub-run the parent's.
    let explore_tools = offered_tools(&fake, 1);
    assert!(
        explore_tools.contains(&"recall".to_string()),
        "{explore_tools:?}"
    );
    for write in ["remember", "forget", "delegate", "run_agents_script"] {
        assert!(
            !explore_tools.contains(&write.to_string()),
            "{write} offered to explore"
        );
    }
    let delegate_tools = offered_tools(&fake, 4);
    assert!(
        delegate_tools.contains(&"remember".to_string()),
        "{delegate_tools:?}"
    );
    // A sub-agent sees its task, not the chat.
    let explore_request = &fake.requests()[1].body;
    let text = explore_request["messages"].to_string();
    assert!(text.contains("Find what tea the user likes."), "{text}");
    assert!(!text.contains("Sort out my tea."), "{text}");

    // Results as the parent's model saw them.
    assert_eq!(
        own_result(&events, "p1"),
        "Explore report: nothing written."
    );
    assert_eq!(own_result(&events, "p2"), "Delegate saved it.");

    // The sub-runs in the parent's stream: started/finished, their events attributed.
    let started = of_type(&events, "SUBAGENT_STARTED");
    assert_eq!(started.len(), 2, "{kinds:?}");
    assert_eq!(started[0].data["name"], "explore");
    assert_eq!(started[0].data["parentToolCallId"], "p1");
    assert_eq!(started[1].data["name"], "delegate");
    let explore_run = started[0].data["subagentRunId"]
        .as_str()
        .unwrap()
        .to_string();
    let delegate_run = started[1].data["subagentRunId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(explore_run, delegate_run);
    assert_eq!(of_type(&events, "SUBAGENT_FINISHED").len(), 2);
    let refused = events
        .iter()
        .find(|e| {
            e.event_type() == "TOOL_CALL_RESULT" && e.data["subagentRunId"] == explore_run.as_str()
        })
        .expect("the explore sub-run's tool result is relayed");
    let refusal = refused.data["content"].as_str().unwrap_or_default();
    assert!(
        refusal.starts_with("error:") && refusal.contains("remember"),
        "{refusal}"
    );
    let relayed_text: String = events
        .iter()
        .filter(|e| {
            e.event_type() == "TEXT_MESSAGE_CONTENT"
                && e.data["subagentRunId"] == delegate_run.as_str()
        })
        .filter_map(|e| e.data["delta"].as_str())
        .collect();
    assert_eq!(relayed_text, "Delegate saved it.");
    // The parent's own reply carries no sub-run text.
    let own_text: String = events
        .iter()
        .filter(|e| {
            e.event_type() == "TEXT_MESSAGE_CONTENT" && e.data.get("subagentRunId").is_none()
        })
        .filter_map(|e| e.data["delta"].as_str())
        .collect();
    assert_eq!(own_text, "All done.");

    // Only delegate's write landed.
    let (status, memories) = mesh.get_json("/v1/me/memories").await?;
    assert_eq!(status, 200, "{memories}");
    let listed = memories.to_string();
    assert!(listed.contains("The user likes green tea."), "{listed}");
    assert!(!listed.contains("Explore wrote this."), "{listed}");

    // Each sub-run is a run of its own: parent link, own usage, own stream.
    for (child, tool_calls) in [(&explore_run, 1), (&delegate_run, 1)] {
        let (status, run) = mesh.get_json(&format!("/v1/runs/{child}")).await?;
        assert_eq!(status, 200, "{run}");
        assert_eq!(run["parent_run_id"], parent.as_str(), "{run}");
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["usage"]["model_requests"], 2, "{run}");
        assert_eq!(run["usage"]["tool_calls"], tool_calls, "{run}");
        let own = mesh.read_events(child, None, None).await?;
        assert_eq!(own[0].event_type(), "RUN_STARTED");
        assert_eq!(own[0].data["parentRunId"], parent.as_str());
        assert_eq!(own.last().map(SseEvent::event_type), Some("RUN_FINISHED"));
    }
    let (_, run) = mesh.get_json(&format!("/v1/runs/{parent}")).await?;
    assert_eq!(
        run["usage"]["model_requests"], 3,
        "the parent's own usage: {run}"
    );
    assert_eq!(run["usage"]["tool_calls"], 2, "{run}");
    assert_eq!(
        run["usage_with_sub_runs"]["model_requests"], 7,
        "with the sub-runs': {run}"
    );
    assert_eq!(run["usage_with_sub_runs"]["tool_calls"], 4, "{run}");

    // The chat holds the user's message and the parent's reply, not the sub-agents' turns.
    let (_, messages) = mesh.get_json(&format!("/v1/chats/{chat}/messages")).await?;
    let contents: Vec<&str> = messages["items"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["content"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(contents, ["Sort out my tea.", "All done."], "{messages}");
    mesh.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_runaway_recursion_stops_at_the_depth_limit_and_the_budget() -> R {
    let (mesh, fake) = mesh(false).await?;
    let chat = mesh.create_chat("runaway").await?;
    // Every turn of every run delegates again.
    fake.set_default(call(
        "again",
        "delegate",
        json!({ "task": "Delegate this again." }),
    ));
    let (_, events) =
        run_to_end(&mesh, &chat, json!({ "message": "Go.", "model": "fp:m" })).await?;
    let last = events.last().expect("events");
    assert_eq!(last.event_type(), "RUN_ERROR", "{:?}", last.data);
    assert_eq!(last.data["code"], "usage_limit", "{:?}", last.data);
    // The depth limit (2) refused a third level, visibly to the deepest sub-agent's model.
    let refused_deeper = events.iter().any(|e| {
        e.event_type() == "TOOL_CALL_RESULT"
            && e.data.get("subagentRunId").is_some()
            && e.data["content"]
                .as_str()
                .unwrap_or_default()
                .contains("nest at most 2 deep")
    });
    assert!(refused_deeper, "no depth refusal relayed");
    // No sub-run deeper than 2: every SUBAGENT_STARTED hangs under the run or one sub-run.
    let started = of_type(&events, "SUBAGENT_STARTED");
    let top: Vec<&str> = started
        .iter()
        .filter(|e| e.data.get("parentSubagentRunId").is_none())
        .filter_map(|e| e.data["subagentRunId"].as_str())
        .collect();
    assert_eq!(top.len(), 1, "one sub-run of the run itself: {top:?}");
    assert!(
        started
            .iter()
            .any(|e| e.data["parentSubagentRunId"] == top[0]),
        "the sub-run's own sub-run is relayed, nested under it"
    );
    for nested in started
        .iter()
        .filter(|e| e.data.get("parentSubagentRunId").is_some())
    {
        let parent = nested.data["parentSubagentRunId"]
            .as_str()
            .unwrap_or_default();
        assert!(
            top.contains(&parent),
            "a sub-run nested deeper than 2: {:?}",
            nested.data
        );
    }
    // The whole tree stayed within one run's model-request budget (16) plus the refused turns.
    assert!(
        fake.request_count() <= 16,
        "{} model requests",
        fake.request_count()
    );
    mesh.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_durable_parent_relays_its_sub_runs_and_a_script_runs_durable_steps() -> R {
    let (mesh, fake) = mesh(true).await?;
    let chat = mesh.create_chat("durable sub-agents").await?;
    // A durable parent delegates once.
    fake.push(call("p1", "delegate", json!({ "task": "Say hello." })));
    fake.push(Reply::text("Hello from the sub-agent."));
    fake.push(Reply::text("It said hello."));
    let (parent, events) = run_to_end(
        &mesh,
        &chat,
        json!({ "message": "Ask a sub-agent.", "model": "fp:m", "durable": true }),
    )
    .await?;
    let kinds: Vec<&str> = events.iter().map(SseEvent::event_type).collect();
    assert_eq!(kinds.last(), Some(&"RUN_FINISHED"), "{kinds:?}");
    let (_, run) = mesh.get_json(&format!("/v1/runs/{parent}")).await?;
    assert_eq!(run["mode"], "durable", "{run}");
    assert_eq!(own_result(&events, "p1"), "Hello from the sub-agent.");
    let relayed: String = events
        .iter()
        .filter(|e| {
            e.event_type() == "TEXT_MESSAGE_CONTENT" && e.data.get("subagentRunId").is_some()
        })
        .filter_map(|e| e.data["delta"].as_str())
        .collect();
    assert_eq!(relayed, "Hello from the sub-agent.");
    // Each relayed event once (the durable relay writes under the step's ids).
    let ids: Vec<&str> = events.iter().filter_map(|e| e.id.as_deref()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids.len(), unique.len());

    // run_agents_script: two steps, each a durable sub-run; the second sees the first's result.
    fake.push(call(
        "s1",
        "run_agents_script",
        json!({ "steps": [
            { "agent": "explore", "task": "Count the files." },
            { "agent": "delegate", "task": "Report the count." }
        ] }),
    ));
    fake.push(Reply::text("There are 3 files."));
    fake.push(Reply::text("Reported: 3."));
    fake.push(Reply::text("Script done."));
    let before = fake.request_count();
    let (_, events) = run_to_end(
        &mesh,
        &chat,
        json!({ "message": "Run the script.", "model": "fp:m" }),
    )
    .await?;
    let kinds: Vec<&str> = events.iter().map(SseEvent::event_type).collect();
    assert_eq!(kinds.last(), Some(&"RUN_FINISHED"), "{kinds:?}");
    let result: Value = serde_json::from_str(&own_result(&events, "s1"))?;
    let steps = result["steps"].as_array().cloned().unwrap_or_default();
    assert_eq!(steps.len(), 2, "{result}");
    assert_eq!(steps[0]["result"], "There are 3 files.");
    assert_eq!(steps[1]["result"], "Reported: 3.");
    for step in &steps {
        assert_eq!(step["status"], "succeeded", "{result}");
        let (_, run) = mesh
            .get_json(&format!(
                "/v1/runs/{}",
                step["runId"].as_str().unwrap_or_default()
            ))
            .await?;
        assert_eq!(run["mode"], "durable", "a script step runs durable: {run}");
    }
    let second_step = fake.requests()[before + 2].body["messages"].to_string();
    assert!(second_step.contains("There are 3 files."), "{second_step}");
    mesh.stop().await?;
    Ok(())
}
