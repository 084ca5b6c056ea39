//! One chat turn, end to end, on the real mesh and the real dev stack.

use std::time::Duration;

use serde_json::json;
use tests_e2e::{Mesh, SseEvent};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn types(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(SseEvent::event_type).collect()
}

#[tokio::test]
async fn a_chat_turn_streams_to_run_finished_and_persists_the_reply() -> R {
    let mesh = Mesh::builder().start().await?;
    let chat_id = mesh.create_chat("first chat").await?;
    let run_id = mesh.start_run(&chat_id, "hello mesh").await?;

    let events = mesh.read_events(&run_id, None, None).await?;
    let kinds = types(&events);
    assert_eq!(kinds.first(), Some(&"RUN_STARTED"));
    assert_eq!(kinds.get(1), Some(&"TEXT_MESSAGE_START"));
    assert_eq!(
        &kinds[kinds.len() - 2..],
        ["TEXT_MESSAGE_END", "RUN_FINISHED"]
    );
    let contents = kinds
        .iter()
        .filter(|k| **k == "TEXT_MESSAGE_CONTENT")
        .count();
    assert!(
        contents > 3,
        "the reply streams token by token, got {contents} chunks"
    );
    assert_eq!(events[0].data["threadId"], json!(chat_id));
    assert_eq!(events[0].data["runId"], json!(run_id));
    // Every event has a stream id, strictly increasing.
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e.id.as_deref().unwrap_or(""))
        .collect();
    assert!(ids.iter().all(|id| !id.is_empty()));
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| {
        let (ms, seq) = id.split_once('-').unwrap_or(("0", "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    });
    assert_eq!(ids, sorted);

    let streamed: String = events
        .iter()
        .filter(|e| e.event_type() == "TEXT_MESSAGE_CONTENT")
        .map(|e| e.data["delta"].as_str().unwrap_or(""))
        .collect();
    assert!(
        streamed.contains("hello mesh"),
        "offline echo repeats the message: {streamed}"
    );

    // The reply is persisted by the time RUN_FINISHED is visible.
    let (status, messages) = mesh
        .get_json(&format!("/v1/chats/{chat_id}/messages"))
        .await?;
    assert_eq!(status, 200);
    let items = messages["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2, "{messages}");
    assert_eq!(items[0]["role"], "user");
    assert_eq!(items[0]["content"], "hello mesh");
    assert_eq!(items[1]["role"], "assistant");
    assert_eq!(items[1]["content"], json!(streamed));
    assert_eq!(items[1]["run_id"], json!(run_id));

    let (status, run) = mesh.get_json(&format!("/v1/runs/{run_id}")).await?;
    assert_eq!(status, 200);
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["mode"], "inline");
    assert_eq!(run["model"]["resolved"], "offline:echo");
    assert!(
        run["model"]["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("auto")
    );
    assert!(run["usage"]["output_tokens"].as_u64().unwrap_or(0) > 0);
    assert_eq!(run["usage"]["model_requests"], 1);
    assert_eq!(run["attempts"].as_array().map(Vec::len), Some(1), "{run}");
    assert_eq!(run["attempts"][0]["label"], "offline:echo");
    assert_eq!(run["attempts"][0]["outcome"], "ok");
    assert!(run["finished_at"].is_string());

    // A finished run's stream can be read again, whole.
    let again = mesh.read_events(&run_id, None, None).await?;
    assert_eq!(again, events);
    mesh.stop().await
}

#[tokio::test]
async fn a_second_turn_sees_the_chat_history() -> R {
    let mesh = Mesh::builder().start().await?;
    let chat_id = mesh.create_chat("two turns").await?;
    let first = mesh.start_run(&chat_id, "one").await?;
    mesh.read_events(&first, None, None).await?;
    let second = mesh.start_run(&chat_id, "two").await?;
    let events = mesh.read_events(&second, None, None).await?;
    assert_eq!(
        events.last().map(SseEvent::event_type),
        Some("RUN_FINISHED")
    );
    let (_, messages) = mesh
        .get_json(&format!("/v1/chats/{chat_id}/messages"))
        .await?;
    let roles: Vec<_> = messages["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["role"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    // Pagination over messages.
    let (_, page) = mesh
        .get_json(&format!("/v1/chats/{chat_id}/messages?limit=3"))
        .await?;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(3));
    let cursor = page["next_cursor"].as_str().unwrap_or_default().to_string();
    let (_, rest) = mesh
        .get_json(&format!(
            "/v1/chats/{chat_id}/messages?limit=3&cursor={cursor}"
        ))
        .await?;
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(1));
    assert!(rest["next_cursor"].is_null());
    mesh.stop().await
}

#[tokio::test]
async fn resuming_with_last_event_id_loses_and_repeats_nothing() -> R {
    // A token delay keeps the run going while the client is away.
    let mesh = Mesh::builder()
        .offline_token_delay(Duration::from_millis(5))
        .start()
        .await?;
    let chat_id = mesh.create_chat("resume").await?;
    let message = (0..40)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let run_id = mesh.start_run(&chat_id, &message).await?;

    let first = mesh.read_events(&run_id, None, Some(5)).await?;
    assert_eq!(first.len(), 5);
    let last_id = first.last().and_then(|e| e.id.clone()).unwrap_or_default();
    let rest = mesh.read_events(&run_id, Some(&last_id), None).await?;
    assert_eq!(rest.last().map(SseEvent::event_type), Some("RUN_FINISHED"));

    let full = mesh.read_events(&run_id, None, None).await?;
    let mut union = first.clone();
    union.extend(rest.clone());
    assert_eq!(
        union, full,
        "the two halves are exactly the whole stream, once"
    );

    // `?after=` does the same for fetch-based clients.
    let r = mesh
        .http
        .get(mesh.url(&format!("/v1/runs/{run_id}/events?after={last_id}")))
        .send()
        .await?;
    let via_query = tests_e2e::read_sse(r, None).await?;
    assert_eq!(via_query, rest);
    mesh.stop().await
}

#[tokio::test]
async fn cancel_stops_a_running_run_and_keeps_the_partial_reply() -> R {
    let mesh = Mesh::builder()
        .offline_token_delay(Duration::from_millis(40))
        .start()
        .await?;
    let chat_id = mesh.create_chat("cancel").await?;
    let message = (0..200)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let run_id = mesh.start_run(&chat_id, &message).await?;
    let head = mesh.read_events(&run_id, None, Some(4)).await?;
    assert_eq!(head.len(), 4);

    let (status, run) = mesh
        .post_json(&format!("/v1/runs/{run_id}/cancel"), &json!({}))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["error"]["code"], "cancelled");

    let events = mesh.read_events(&run_id, None, None).await?;
    let last = events.last().cloned().ok_or("no events")?;
    assert_eq!(last.event_type(), "RUN_ERROR");
    assert_eq!(last.data["code"], "cancelled");
    assert!(
        types(&events).contains(&"TEXT_MESSAGE_END"),
        "the open message is closed"
    );

    let (_, messages) = mesh
        .get_json(&format!("/v1/chats/{chat_id}/messages"))
        .await?;
    let items = messages["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2);
    let partial = items[1]["content"].as_str().unwrap_or("");
    assert!(
        !partial.is_empty() && !partial.contains("w199"),
        "partial reply kept: {partial}"
    );

    // Cancelling again is harmless and changes nothing.
    let (status, again) = mesh
        .post_json(&format!("/v1/runs/{run_id}/cancel"), &json!({}))
        .await?;
    assert_eq!((status, &again["status"]), (200, &json!("cancelled")));
    mesh.stop().await
}

#[tokio::test]
async fn a_retried_run_id_returns_the_same_run() -> R {
    let mesh = Mesh::builder().start().await?;
    let chat_id = mesh.create_chat("idempotent").await?;
    let run_id = format!("client-run-{}", uuid::Uuid::new_v4().simple());
    let body = json!({ "message": "once", "run_id": &run_id });
    let (s1, r1) = mesh
        .post_json(&format!("/v1/chats/{chat_id}/runs"), &body)
        .await?;
    let (s2, r2) = mesh
        .post_json(&format!("/v1/chats/{chat_id}/runs"), &body)
        .await?;
    assert_eq!((s1, s2), (202, 200));
    assert_eq!(r1["run_id"], json!(run_id));
    assert_eq!(r2["run_id"], json!(run_id));
    assert_eq!(
        (r1["existing"].clone(), r2["existing"].clone()),
        (json!(false), json!(true))
    );
    mesh.read_events(&run_id, None, None).await?;
    let (_, messages) = mesh
        .get_json(&format!("/v1/chats/{chat_id}/messages"))
        .await?;
    assert_eq!(
        messages["items"].as_array().map(Vec::len),
        Some(2),
        "one user message, one reply"
    );
    mesh.stop().await
}

#[tokio::test]
async fn chats_page_newest_first_and_delete_removes_everything() -> R {
    let mesh = Mesh::builder().start().await?;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(mesh.create_chat(&format!("chat {i}")).await?);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/chats?limit=2&cursor={c}"),
            None => "/v1/chats?limit=2".to_string(),
        };
        let (status, page) = mesh.get_json(&path).await?;
        assert_eq!(status, 200);
        for chat in page["items"].as_array().cloned().unwrap_or_default() {
            seen.push(chat["id"].as_str().unwrap_or("").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    created.reverse();
    assert_eq!(seen, created, "every chat once, newest first");

    let victim = &created[0];
    let run_id = mesh.start_run(victim, "bye").await?;
    mesh.read_events(&run_id, None, None).await?;
    let r = mesh
        .http
        .delete(mesh.url(&format!("/v1/chats/{victim}")))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    assert_eq!(mesh.get_json(&format!("/v1/chats/{victim}")).await?.0, 404);
    assert_eq!(
        mesh.get_json(&format!("/v1/chats/{victim}/messages"))
            .await?
            .0,
        404
    );
    assert_eq!(mesh.get_json(&format!("/v1/runs/{run_id}")).await?.0, 404);
    let r = mesh
        .http
        .delete(mesh.url(&format!("/v1/chats/{victim}")))
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    mesh.stop().await
}

#[tokio::test]
async fn users_see_only_their_own_chats_and_runs() -> R {
    let mesh = Mesh::builder().start().await?;
    let chat_id = mesh.create_chat("alice's").await?; // the default dev user
    let run_id = mesh.start_run(&chat_id, "private").await?;
    mesh.read_events(&run_id, None, None).await?;
    for (tenant, user) in [("dev", "bob"), ("other-tenant", "dev-user")] {
        let get = |path: String| {
            mesh.http
                .get(mesh.url(&path))
                .header("x-pa-dev-user", user)
                .header("x-pa-dev-tenant", tenant)
                .send()
        };
        assert_eq!(get(format!("/v1/chats/{chat_id}")).await?.status(), 404);
        assert_eq!(
            get(format!("/v1/chats/{chat_id}/messages")).await?.status(),
            404
        );
        assert_eq!(get(format!("/v1/runs/{run_id}")).await?.status(), 404);
        assert_eq!(
            get(format!("/v1/runs/{run_id}/events")).await?.status(),
            404
        );
        let list: serde_json::Value = get("/v1/chats".into()).await?.json().await?;
        assert_eq!(list["items"], json!([]));
    }
    mesh.stop().await
}

#[tokio::test]
async fn models_lists_the_offline_model() -> R {
    let mesh = Mesh::builder().start().await?;
    let (status, models) = mesh.get_json("/v1/models").await?;
    assert_eq!(status, 200);
    assert_eq!(models["items"][0]["label"], "offline:echo");
    assert!(
        models["items"][0]["display_name"]
            .as_str()
            .unwrap_or("")
            .contains("no real model")
    );
    mesh.stop().await
}

#[tokio::test]
async fn shutdown_drains_an_inline_run_before_svc_runs_exits() -> R {
    let mut mesh = Mesh::builder()
        .offline_token_delay(Duration::from_millis(20))
        .start()
        .await?;
    let chat_id = mesh.create_chat("drain").await?;
    let message = (0..30)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let run_id = mesh.start_run(&chat_id, &message).await?;
    mesh.read_events(&run_id, None, Some(3)).await?;
    // SIGTERM-equivalent: svc-runs stops taking runs, lets this one finish, then exits.
    mesh.stop_service("svc-runs").await?;
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&mesh.database_url).await?;
    let (status, content): (i16, String) = sqlx::query_as(
        "SELECT r.status, m.content FROM runs.runs r JOIN runs.messages m ON m.run_id = r.id AND m.role = 'assistant' WHERE r.id = $1",
    )
    .bind(&run_id)
    .fetch_one(&mut db)
    .await?;
    assert_eq!(status, pa_proto::v1::RunStatus::Succeeded as i16);
    assert!(
        content.ends_with("w29"),
        "the whole reply was written: {content}"
    );
    mesh.stop().await
}

/// The replica that started a run authorises its first SSE read itself (ADR 0212); every other
/// read still asks svc-runs: another replica serves the owner, refuses anyone else, and a run of
/// a deleted chat is no longer readable on the replica that started it.
#[tokio::test]
async fn a_run_just_started_is_read_on_any_replica_and_only_by_its_owner() -> R {
    let mut mesh = Mesh::builder().start().await?;
    let replica = mesh.add_gateway().await?;
    let chat_id = mesh.create_chat("replicas").await?;
    let run_id = mesh.start_run(&chat_id, "hello replicas").await?;
    // The owner on another replica (which did not start it): served, to the end.
    let response = mesh
        .http
        .get(format!("{replica}/v1/runs/{run_id}/events"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let events = tests_e2e::read_sse(response, None).await?;
    assert_eq!(
        events.last().map(|e| e.data["type"].clone()),
        Some(json!("RUN_FINISHED"))
    );
    // Someone else, on both replicas, right after the start: 404.
    let second = mesh.start_run(&chat_id, "and again").await?;
    for base in [mesh.gateway_url.clone(), replica.clone()] {
        for (tenant, user) in [("dev", "bob"), ("other-tenant", "dev-user")] {
            let status = mesh
                .http
                .get(format!("{base}/v1/runs/{second}/events"))
                .header("x-pa-dev-user", user)
                .header("x-pa-dev-tenant", tenant)
                .send()
                .await?
                .status();
            assert_eq!(status, 404, "{user}@{tenant} on {base}");
        }
    }
    mesh.read_events(&second, None, None).await?;
    // The chat is deleted: the replica that started its runs vouches for them no more.
    let third = mesh.start_run(&chat_id, "one more").await?;
    mesh.read_events(&third, None, None).await?;
    assert_eq!(mesh.delete_chat(&chat_id).await?, 204);
    let status = mesh
        .http
        .get(mesh.url(&format!("/v1/runs/{third}/events")))
        .send()
        .await?
        .status();
    assert_eq!(status, 404);
    mesh.stop().await
}

/// svc-runs remembers the classification of a chat it started runs in, so a later run there
/// skips the chat read (ADR 0212); the run row's insert still checks the chat. Once the chat is
/// deleted, or for anyone else, a run there is refused with 404 and nothing is written.
#[tokio::test]
async fn a_chat_remembered_by_svc_runs_still_refuses_runs_once_deleted_or_foreign() -> R {
    let mesh = Mesh::builder().start().await?;
    let (status, chat) = mesh
        .post_json(
            "/v1/chats",
            &json!({"title": "secret", "classification": "confidential"}),
        )
        .await?;
    assert_eq!(status, 201, "{chat}");
    let chat_id = chat["id"].as_str().ok_or("no chat id")?.to_string();
    let first = mesh.start_run(&chat_id, "first").await?;
    mesh.read_events(&first, None, None).await?;
    // Remembered now: the second run is as classified as the chat.
    let second = mesh.start_run(&chat_id, "second").await?;
    mesh.read_events(&second, None, None).await?;
    let (_, run) = mesh.get_json(&format!("/v1/runs/{second}")).await?;
    assert_eq!(run["status"], json!("succeeded"), "{run}");
    // Someone else in the same tenant names the chat: 404.
    let foreign = mesh
        .http
        .post(mesh.url(&format!("/v1/chats/{chat_id}/runs")))
        .header("x-pa-dev-user", "bob")
        .json(&json!({"message": "let me in"}))
        .send()
        .await?;
    assert_eq!(foreign.status(), 404);
    assert_eq!(mesh.delete_chat(&chat_id).await?, 204);
    let (status, problem) = mesh
        .post_json(
            &format!("/v1/chats/{chat_id}/runs"),
            &json!({"message": "after the delete", "run_id": "after-delete-1"}),
        )
        .await?;
    assert_eq!(status, 404, "{problem}");
    let (status, _) = mesh.get_json("/v1/runs/after-delete-1").await?;
    assert_eq!(status, 404, "a run row was written for a deleted chat");
    mesh.stop().await
}

/// What the model is sent: the chat's earlier messages once each, oldest first, then this
/// run's message, once (the history is read in the run row's transaction, after the row's own
/// copy of the message is written: ADR 0218), inline and durable alike; another chat's
/// messages never.
#[tokio::test]
async fn the_model_sees_the_earlier_messages_once_and_this_message_last() -> R {
    let fake = pa_testkit::FakeProvider::start().await?;
    fake.set_default(pa_testkit::Reply::text("noted"));
    // No Curator: the model's last request is the run's own.
    let mesh = Mesh::builder().worker().without_curator().start().await?;
    mesh.add_fake_model(&fake.base_url()).await?;
    let chat = mesh.create_chat("history").await?;
    let other = mesh.create_chat("elsewhere").await?;
    let run = |chat: String, message: &'static str, durable: bool| {
        let mesh = &mesh;
        async move {
            let body = json!({ "message": message, "model": "fp:m", "durable": durable });
            let (_, events) = mesh
                .run_to_end(&chat, &body, Duration::from_secs(60))
                .await?;
            assert_eq!(
                events.last().map(SseEvent::event_type),
                Some("RUN_FINISHED")
            );
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }
    };
    let sent = |fake: &pa_testkit::FakeProvider| -> Vec<(String, String)> {
        fake.last_request()
            .and_then(|r| {
                r.body["messages"].as_array().map(|m| {
                    m.iter()
                        .filter(|m| m["role"] != "system")
                        .map(|m| {
                            (
                                m["role"].as_str().unwrap_or("").to_string(),
                                m["content"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
            })
            .unwrap_or_default()
    };
    let pair = |role: &str, content: &str| (role.to_string(), content.to_string());
    run(other.clone(), "a secret of another chat", false).await?;
    run(chat.clone(), "first", false).await?;
    assert_eq!(sent(&fake), [pair("user", "first")]);
    run(chat.clone(), "second", true).await?;
    assert_eq!(
        sent(&fake),
        [
            pair("user", "first"),
            pair("assistant", "noted"),
            pair("user", "second")
        ]
    );
    run(chat.clone(), "third", false).await?;
    assert_eq!(
        sent(&fake),
        [
            pair("user", "first"),
            pair("assistant", "noted"),
            pair("user", "second"),
            pair("assistant", "noted"),
            pair("user", "third")
        ]
    );
    mesh.stop().await
}

/// svc-runs keeps the latest messages of the chats it starts runs in, so a chat's next run
/// need not read them (ADR 0252), and uses them only when its run row's insert proves nobody
/// wrote to the chat since. A turn started and ended by another replica, and a chat deleted,
/// purged and created again under the same id, are what the next run sees; another chat's and
/// the old chat's messages never.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chats_known_history_is_used_only_while_nobody_else_wrote_to_it() -> R {
    use pa_proto::v1::run_service_client::RunServiceClient;
    use pa_proto::v1::{CreateChatRequest, CreateRunRequest, DeleteChatRequest, GetRunRequest};
    let fake = pa_testkit::FakeProvider::start().await?;
    fake.set_default(pa_testkit::Reply::text("noted"));
    let mesh = Mesh::builder()
        .without_curator()
        .deleted_chat_retention(Duration::ZERO)
        .start()
        .await?;
    mesh.add_fake_model(&fake.base_url()).await?;
    let replica = tests_e2e::RunsReplica::start(mesh.runs_config.clone()).await?;
    let who = Mesh::identity("dev", &format!("u-{}", uuid::Uuid::now_v7()));
    let chat = format!("known-{}", uuid::Uuid::now_v7().simple());
    let here = RunServiceClient::connect(mesh.runs_url.clone()).await?;
    let there = RunServiceClient::connect(replica.url.clone()).await?;
    let create_chat = |mut runs: RunServiceClient<tonic::transport::Channel>| {
        let request = mesh.auth.request(
            &who,
            CreateChatRequest {
                chat_id: chat.clone(),
                title: "known".into(),
                ..Default::default()
            },
        );
        async move { runs.create_chat(request).await.map(|_| ()) }
    };
    // A run of `message` through `runs`, to its end; what the model was sent (roles, contents).
    let turn = |mut runs: RunServiceClient<tonic::transport::Channel>, message: &'static str| {
        let (mesh, who, chat, fake) = (&mesh, &who, chat.clone(), &fake);
        async move {
            let run = runs
                .create_run(mesh.auth.request(
                    who,
                    CreateRunRequest {
                        chat_id: chat,
                        message: message.into(),
                        model: "fp:m".into(),
                        ..Default::default()
                    },
                ))
                .await?
                .into_inner()
                .run
                .ok_or("no run")?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let now = runs
                    .get_run(mesh.auth.request(
                        who,
                        GetRunRequest {
                            run_id: run.id.clone(),
                        },
                    ))
                    .await?
                    .into_inner();
                if now.status == pa_proto::v1::RunStatus::Succeeded as i32 {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "run {} did not succeed: {now:?}",
                    run.id
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let sent: Vec<String> = fake
                .last_request()
                .and_then(|r| {
                    r.body["messages"].as_array().map(|m| {
                        m.iter()
                            .filter(|m| m["role"] != "system")
                            .map(|m| m["content"].as_str().unwrap_or("").to_string())
                            .collect()
                    })
                })
                .unwrap_or_default();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(sent)
        }
    };
    create_chat(here.clone()).await?;
    assert_eq!(turn(here.clone(), "first").await?, ["first"]);
    assert_eq!(
        turn(here.clone(), "second").await?,
        ["first", "noted", "second"]
    );
    // Another replica runs a turn of the chat: the first replica's next run sees it.
    assert_eq!(
        turn(there.clone(), "third").await?,
        ["first", "noted", "second", "noted", "third"]
    );
    assert_eq!(
        turn(here.clone(), "fourth").await?,
        [
            "first", "noted", "second", "noted", "third", "noted", "fourth"
        ]
    );
    // Deleted, purged, created again under its id and written to elsewhere until its count of
    // writes is what the first replica knew of the old chat (8): none of the old chat's
    // messages come back.
    here.clone()
        .delete_chat(mesh.auth.request(
            &who,
            DeleteChatRequest {
                chat_id: chat.clone(),
            },
        ))
        .await?;
    let mut maintenance =
        pa_proto::v1::maintenance_service_client::MaintenanceServiceClient::connect(
            mesh.runs_url.clone(),
        )
        .await?;
    maintenance
        .run_maintenance(mesh.auth.request(
            &pa_kit::identity::internal_identity("test"),
            pa_proto::v1::RunMaintenanceRequest {
                task: "purge_deleted_chats".into(),
                limit: 0,
            },
        ))
        .await?;
    create_chat(there.clone()).await?;
    for message in ["a", "b", "c"] {
        turn(there.clone(), message).await?;
    }
    assert_eq!(
        turn(there.clone(), "d").await?,
        ["a", "noted", "b", "noted", "c", "noted", "d"]
    );
    assert_eq!(
        turn(here.clone(), "e").await?,
        ["a", "noted", "b", "noted", "c", "noted", "d", "noted", "e"]
    );
    assert_eq!(
        turn(here.clone(), "f").await?,
        [
            "a", "noted", "b", "noted", "c", "noted", "d", "noted", "e", "noted", "f"
        ]
    );
    // A message written by a release that does not count its writes yet (a rolling upgrade):
    // the next run sees it.
    let mut owner =
        <sqlx::PgConnection as sqlx::Connection>::connect(&mesh.admin_database_url()).await?;
    sqlx::query(
        "INSERT INTO runs.messages (tenant_id, id, chat_id, role, content) \
         VALUES ($1, $2, $3, 'user', 'from an earlier release')",
    )
    .bind(&who.tenant_id)
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(&chat)
    .execute(&mut owner)
    .await?;
    let sent = turn(here.clone(), "g").await?;
    assert_eq!(
        sent[sent.len() - 3..],
        ["noted", "from an earlier release", "g"]
    );
    // Which runs used what their replica knew (both replicas count in this process).
    let metrics = tests_e2e::scrape_metrics(&mesh.http, &mesh.runs_url).await?;
    let count = |source: &str| {
        tests_e2e::metric_sample(&metrics, "pa_run_histories_total", &[("source", source)])
    };
    // read: first (here), third (there); known: second, b, c, d (there), f (here); stale: fourth
    // (here), a (there: it knew the old chat), e (here), g (here).
    assert_eq!(
        (count("read"), count("known"), count("stale")),
        (Some(2.0), Some(5.0), Some(4.0))
    );
    replica.kill();
    mesh.stop().await
}
