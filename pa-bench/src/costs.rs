//! `pa-bench costs [--runs N] [--concurrency 1,100,1000] [--sections history,tools,memories,concurrent]`: what a run costs as the work around
//! it grows (issue 23 item 4), each row side by side with its svc-models baseline:
//! - **history**: first-token overhead in a chat with 10, 100 and 1,000 earlier messages (the
//!   run reads the last `PA_HISTORY_MESSAGES`, 50 by default; the baseline sends svc-models the
//!   same messages);
//! - **MCP tools**: first-token overhead with 0, 10 and 100 MCP tools in the toolset, from an
//!   MCP server over streamable HTTP (pa-testkit's; the baseline sends the same tool list);
//! - **memories**: first-token overhead with none of the user's memories in reach and with 20
//!   (the recall then embeds the message and searches them);
//! - **concurrent runs**: events/s delivered over SSE, first token and the gap between tokens
//!   as 1, 100 and 1,000 runs stream at once (offline model at full speed, 100 tokens each).
//!
//! Memory search as memories grow is `pa-bench memory` (its 100k and 1M over 1,000 users rows).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pa_proto::v1::model_service_client::ModelServiceClient;
use pa_proto::v1::{ChatToolDefinition, ChatTurnMessage};
use tests_e2e::Mesh;

use crate::{BoxError, Summary, direct_first_token_of, mode_first_token, ms, percentile};

const HISTORY_LEVELS: [usize; 3] = [10, 100, 1_000];
const TOOL_LEVELS: [usize; 3] = [0, 10, 100];
/// svc-runs' default `PA_HISTORY_MESSAGES` (the Mesh's too).
const HISTORY_READ: usize = 50;
const PROMPT: &str = "benchmark the first token please";

fn earlier_message(i: usize) -> (String, String) {
    let role = if i.is_multiple_of(2) {
        "user"
    } else {
        "assistant"
    };
    (
        role.to_string(),
        format!("message {i}: {}", "lorem ipsum ".repeat(16)),
    )
}

/// A chat holding `earlier` messages, written straight into svc-runs' table in one statement.
async fn chat_with_history(mesh: &Mesh, earlier: usize) -> Result<String, BoxError> {
    let chat = mesh.create_chat("costs").await?;
    let (roles, contents): (Vec<String>, Vec<String>) = (0..earlier).map(earlier_message).unzip();
    let ids: Vec<String> = (0..earlier).map(|i| format!("{chat}-h{i:05}")).collect();
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&mesh.database_url).await?;
    sqlx::query(
        "INSERT INTO runs.messages (tenant_id, id, chat_id, role, content) \
         SELECT c.tenant_id, m.id, c.id, m.role, m.content \
         FROM runs.chats c, unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS m(id, role, content, n) \
         WHERE c.id = $1 ORDER BY m.n",
    )
    .bind(&chat)
    .bind(&ids)
    .bind(&roles)
    .bind(&contents)
    .execute(&mut db)
    .await?;
    Ok(chat)
}

fn row_pair(
    label: String,
    mesh_samples: Vec<Duration>,
    direct_samples: Vec<Duration>,
) -> (String, String) {
    let mut via = Summary {
        name: "",
        samples: mesh_samples,
    };
    let mut direct = Summary {
        name: "",
        samples: direct_samples,
    };
    via.samples.sort();
    direct.samples.sort();
    let overhead_p50 =
        percentile(&via.samples, 0.5).saturating_sub(percentile(&direct.samples, 0.5));
    let overhead_p99 =
        percentile(&via.samples, 0.99).saturating_sub(percentile(&direct.samples, 0.99));
    (
        label,
        format!(
            "{} / {} | {} / {} | {} / {}",
            ms(percentile(&via.samples, 0.5)),
            ms(percentile(&via.samples, 0.99)),
            ms(percentile(&direct.samples, 0.5)),
            ms(percentile(&direct.samples, 0.99)),
            ms(overhead_p50),
            ms(overhead_p99),
        ),
    )
}

fn print_rows(title: &str, first: &str, rows: &[(String, String)]) {
    println!("{title}");
    println!(
        "| {first} | POST -> first token p50 / p99 | svc-models alone p50 / p99 | overhead p50 / p99 |"
    );
    println!("|---:|---:|---:|---:|");
    for (label, cells) in rows {
        println!("| {label} | {cells} |");
    }
    println!();
}

/// `runs` pairs, after 10 warm-up pairs: a run's first token through the mesh in the chat
/// `chat_for(i)` gives, and svc-models' own StreamChat given the same `messages` and `tools`.
async fn paired_first_tokens(
    mesh: &Mesh,
    client: &mut ModelServiceClient<tonic::transport::Channel>,
    runs: usize,
    messages: &[ChatTurnMessage],
    tools: &[ChatToolDefinition],
    mut chat_for: impl AsyncFnMut(usize) -> Result<String, BoxError>,
) -> Result<(Vec<Duration>, Vec<Duration>), BoxError> {
    let (mut via, mut direct) = (Vec::new(), Vec::new());
    for i in 0..runs + 10 {
        let chat = chat_for(i).await?;
        let t = mode_first_token(mesh, &chat, false).await?;
        let d = direct_first_token_of(mesh, client, messages.to_vec(), tools.to_vec()).await?;
        if i >= 10 {
            via.push(t);
            direct.push(d);
        }
    }
    Ok((via, direct))
}

async fn history(runs: usize) -> Result<(), BoxError> {
    let mesh = Mesh::builder().start().await?;
    let mut client = ModelServiceClient::connect(mesh.models_url.clone()).await?;
    let mut rows = Vec::new();
    for earlier in HISTORY_LEVELS {
        // What svc-models receives: the last messages the run reads, then the new one.
        let mut messages: Vec<ChatTurnMessage> = (earlier.saturating_sub(HISTORY_READ - 1)
            ..earlier)
            .map(|i| {
                let (role, content) = earlier_message(i);
                ChatTurnMessage {
                    role,
                    content,
                    ..Default::default()
                }
            })
            .collect();
        messages.push(ChatTurnMessage {
            role: "user".into(),
            content: PROMPT.into(),
            ..Default::default()
        });
        // A fresh chat per run, so every run reads exactly `earlier` messages.
        let (via, direct) =
            paired_first_tokens(&mesh, &mut client, runs, &messages, &[], async |_| {
                chat_with_history(&mesh, earlier).await
            })
            .await?;
        rows.push(row_pair(format!("{earlier}"), via, direct));
    }
    print_rows(
        &format!(
            "first token as the chat's history grows ({runs} runs per row, a fresh chat each, the run reads the last {HISTORY_READ} messages), ms"
        ),
        "earlier messages",
        &rows,
    );
    mesh.stop().await
}

async fn mcp_tools(runs: usize) -> Result<(), BoxError> {
    let settings = svc_tools::ToolsSettings {
        // Only the local MCP server; everything else stays refused.
        allow: svc_tools::netguard::AllowList::parse("127.0.0.1/32")?,
        ..svc_tools::ToolsSettings::default()
    };
    let mesh = Mesh::builder().tools_settings(settings).start().await?;
    let mut client = ModelServiceClient::connect(mesh.models_url.clone()).await?;
    let mut rows = Vec::new();
    let mut servers = Vec::new();
    for tools in TOOL_LEVELS {
        let chat = mesh.create_chat("costs").await?;
        let mut definitions = Vec::new();
        if tools > 0 {
            let server = pa_testkit::McpToolServer::start(tools).await?;
            let body = serde_json::json!({ "kind": "mcp_http", "name": format!("bench{tools}"),
                "config": { "url": server.url() } });
            let (status, created) = mesh.post_json("/v1/me/integrations", &body).await?;
            if status != 201 {
                return Err(format!("add MCP integration: {status} {created}").into());
            }
            let response = mesh
                .http
                .put(mesh.url(&format!("/v1/chats/{chat}/tools")))
                .json(&serde_json::json!({ "integration_ids": [created["id"]] }))
                .send()
                .await?;
            if !response.status().is_success() {
                return Err(format!("select tools: {}", response.status()).into());
            }
            definitions = pa_testkit::mcp_tool_list(tools)
                .into_iter()
                .map(|tool| ChatToolDefinition {
                    name: format!(
                        "bench{tools}__{}",
                        tool["name"].as_str().unwrap_or_default()
                    ),
                    description: tool["description"].as_str().unwrap_or_default().into(),
                    parameters_json_schema: tool["inputSchema"].to_string(),
                })
                .collect();
            servers.push(server);
        }
        let messages = vec![ChatTurnMessage {
            role: "user".into(),
            content: PROMPT.into(),
            ..Default::default()
        }];
        let mut chat = chat;
        // The same chat (so the same selection), renewed every 40 runs to keep the history
        // short.
        let renewed = async |i: usize| {
            if i % 40 == 39 {
                let fresh = mesh.create_chat("costs").await?;
                let selected: serde_json::Value = mesh
                    .http
                    .get(mesh.url(&format!("/v1/chats/{chat}/tools")))
                    .send()
                    .await?
                    .json()
                    .await?;
                mesh.http
                    .put(mesh.url(&format!("/v1/chats/{fresh}/tools")))
                    .json(&serde_json::json!({ "integration_ids": selected["integration_ids"] }))
                    .send()
                    .await?;
                chat = fresh;
            }
            Ok::<_, BoxError>(chat.clone())
        };
        let (via, direct) =
            paired_first_tokens(&mesh, &mut client, runs, &messages, &definitions, renewed).await?;
        rows.push(row_pair(format!("{tools}"), via, direct));
    }
    if let Some(server) = servers.last() {
        println!(
            "(the {}-tool server answered {} tools/list requests)",
            TOOL_LEVELS[TOOL_LEVELS.len() - 1],
            server.listings()
        );
    }
    print_rows(
        &format!(
            "first token as the toolset grows: MCP tools over streamable HTTP ({runs} runs per row), ms"
        ),
        "MCP tools",
        &rows,
    );
    mesh.stop().await
}

/// The user's memories in reach at each row: with none, recall costs one indexed lookup; with
/// some, it embeds the message (svc-models' offline MiniLM, the interactive lane) and searches
/// them before the first model turn.
const RECALL_LEVELS: [usize; 2] = [0, 20];

async fn recall(runs: usize) -> Result<(), BoxError> {
    let mesh = Mesh::builder().start().await?;
    let mut client = ModelServiceClient::connect(mesh.models_url.clone()).await?;
    let messages = vec![ChatTurnMessage {
        role: "user".into(),
        content: PROMPT.into(),
        ..Default::default()
    }];
    let mut rows = Vec::new();
    let mut stored = 0;
    for memories in RECALL_LEVELS {
        while stored < memories {
            let body = serde_json::json!({
                "text": format!("Memory {stored}: I hiked around lake number {stored} last summer.")
            });
            let (status, created) = mesh.post_json("/v1/me/memories", &body).await?;
            if status != 201 {
                return Err(format!("store a memory: {status} {created}").into());
            }
            stored += 1;
        }
        let mut chat = mesh.create_chat("costs").await?;
        // Renewed every 40 runs to keep the history short.
        let renewed = async |i: usize| {
            if i % 40 == 39 {
                chat = mesh.create_chat("costs").await?;
            }
            Ok::<_, BoxError>(chat.clone())
        };
        let (via, direct) =
            paired_first_tokens(&mesh, &mut client, runs, &messages, &[], renewed).await?;
        rows.push(row_pair(format!("{memories}"), via, direct));
    }
    let kernel_threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".to_string());
    print_rows(
        &format!(
            "first token with the user's memories in reach: the recall embeds the message and searches them ({runs} runs per row, RAYON_NUM_THREADS={kernel_threads}), ms"
        ),
        "memories",
        &rows,
    );
    mesh.stop().await
}

async fn concurrent(levels: &[usize]) -> Result<(), BoxError> {
    let mesh = Mesh::builder().start().await?;
    let message = (0..100)
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "concurrent runs: each streams 100 tokens from the offline model at full speed, every client reading SSE; at most 64 POSTs in flight"
    );
    println!(
        "| runs at once | ended | token events/s | first token p50 / p99 | gap p50 / p99 (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for &runs in levels {
        let chats = futures::future::try_join_all((0..runs).map(|i| {
            let mesh = &mesh;
            async move { mesh.create_chat(&format!("concurrent {i}")).await }
        }))
        .await?;
        let gate = Arc::new(tokio::sync::Semaphore::new(64));
        let tokens = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let clients = chats.iter().map(|chat| {
            let (mesh, message, gate, tokens) = (&mesh, &message, gate.clone(), tokens.clone());
            async move {
                let permit = gate.acquire_owned().await?;
                let begun = Instant::now();
                let run_id = mesh.start_run(chat, message).await?;
                drop(permit);
                let followed = crate::sizing::follow(mesh, &run_id, begun).await?;
                tokens.fetch_add(followed.gaps.len() + 1, Ordering::Relaxed);
                Ok::<_, BoxError>(followed)
            }
        });
        let all = futures::future::try_join_all(clients).await?;
        let elapsed = started.elapsed();
        let ended = all.iter().filter(|f| f.finished).count();
        let mut firsts: Vec<Duration> = all.iter().map(|f| f.first_token).collect();
        let mut gaps: Vec<Duration> = all.into_iter().flat_map(|f| f.gaps).collect();
        firsts.sort();
        gaps.sort();
        println!(
            "| {runs} | {ended} | {:.0} | {} / {} | {} / {} |",
            tokens.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
            ms(percentile(&firsts, 0.5)),
            ms(percentile(&firsts, 0.99)),
            ms(percentile(&gaps, 0.5)),
            ms(percentile(&gaps, 0.99)),
        );
    }
    println!();
    mesh.stop().await
}

/// The tables `costs` prints, by the name `--sections` takes.
pub const SECTIONS: [&str; 4] = ["history", "tools", "memories", "concurrent"];

/// Prints the tables of `sections` (names from [`SECTIONS`]), in that order.
pub async fn run(runs: usize, levels: &[usize], sections: &[&str]) -> Result<(), BoxError> {
    for section in sections {
        match *section {
            "history" => history(runs).await?,
            "tools" => mcp_tools(runs).await?,
            "memories" => recall(runs).await?,
            "concurrent" => concurrent(levels).await?,
            other => {
                return Err(format!("unknown section {other:?}: one of {SECTIONS:?}").into());
            }
        }
    }
    Ok(())
}
