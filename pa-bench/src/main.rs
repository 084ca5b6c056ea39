//! Benchmarks that print a table (not tests).
//!
//! `cargo run -p pa-bench --release -- first-token [--runs N]`: time from POST run to the first
//! TEXT_MESSAGE_CONTENT on the SSE stream, through the whole in-process mesh on the real dev
//! stack (Postgres, Redis), with the offline model; and, as the baseline, a direct
//! svc-models StreamChat call to its first token. The difference is the platform's overhead.
//!
//! `cargo run -p pa-bench --release -- relay [--runs N]`: svc-models' StreamChat relay against
//! a scripted OpenAI-compatible provider (pa-testkit), next to calling that provider directly:
//! time to first chunk and the gap between chunks.
//!
//! `cargo run -p pa-bench --release -- durable [--runs N]`: first token of a durable run
//! (Temporal dev server, in-process worker; started eagerly by svc-worker, and through the task
//! queue as the baseline) next to an inline one, durable runs/s, and the Temporal workflow
//! history of a durable run (events, encoded bytes) in a short and in a long chat.
//!
//! `cargo run -p pa-bench --release -- memory [--runs N] [--scenarios 100k,100kx1000,1mx1000]`:
//! svc-memory's vector search on 100k memories of one user and on 100k and 1M memories over
//! 1,000 users (recall@10 vs exact, p50/p99) and the offline embedder's embeddings/s.
//!
//! `cargo run -p pa-bench --release -- streams [--streams 1,100,1000,2000] [--events N] [--grpc]`: the
//! gateway's relay from Redis Streams to SSE clients alone: events/s, CPU per event, delay
//! added to live events and memory per open stream (see streams.rs).
//!
//! `cargo run -p pa-bench --release -- costs [--runs N] [--concurrency 1,100,1000]
//! [--sections history,tools,memories,concurrent]`: first-token overhead as the chat's history,
//! the toolset and the user's memories grow, and events/s as runs stream at once (see costs.rs).
//!
//! `cargo run -p pa-bench --release -- chaos [--runs N] [--targets svc-runs,postgres]`: the
//! chaos table (kill -9 of each process mid-stream; see chaos.rs).
//!
//! `cargo run -p pa-bench --release -- sizing [--runs N] [--streams 100,250,500,1000]`: what one
//! replica of each service carries (run starts/s, concurrent streams; see sizing.rs).
//!
//! `cargo run -p pa-bench --release -- embed [--runs N]`: the offline embedder's latency for one
//! short query (recall's cost at run start).

mod chaos;
mod costs;
mod memory;
mod phases;
mod sizing;
mod streams;

use std::time::{Duration, Instant};

use futures::StreamExt;
use pa_proto::v1::model_service_client::ModelServiceClient;
use pa_proto::v1::{ChatTurnMessage, StreamChatRequest, stream_chat_chunk::Chunk};
use tests_e2e::Mesh;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

struct Summary {
    name: &'static str,
    samples: Vec<Duration>,
}

/// The header of the tables [`Summary::row`] fills; `count` names the sample-count column.
fn print_table_header(count: &str) {
    println!(
        "| {:<44} | {:>5} | {:>9} | {:>9} | {:>9} | {:>9} |",
        "path", count, "p50", "p99", "mean", "max"
    );
    println!(
        "|{:-<46}|{:-<7}|{:-<11}|{:-<11}|{:-<11}|{:-<11}|",
        "", "", "", "", "", ""
    );
}

impl Summary {
    fn row(&mut self) -> String {
        self.samples.sort();
        let mean = self.samples.iter().sum::<Duration>() / self.samples.len().max(1) as u32;
        format!(
            "| {:<44} | {:>5} | {:>9} | {:>9} | {:>9} | {:>9} |",
            self.name,
            self.samples.len(),
            ms(percentile(&self.samples, 0.50)),
            ms(percentile(&self.samples, 0.99)),
            ms(mean),
            ms(*self.samples.last().unwrap_or(&Duration::ZERO)),
        )
    }
}

async fn mesh_first_token(mesh: &Mesh, chat_id: &str) -> Result<Duration, BoxError> {
    mode_first_token(mesh, chat_id, false).await
}

/// POST run (inline or durable) → first TEXT_MESSAGE_CONTENT on its SSE stream.
async fn mode_first_token(mesh: &Mesh, chat_id: &str, durable: bool) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let body = serde_json::json!({
        "message": "benchmark the first token please", "model": "auto", "durable": durable,
    });
    let (status, run) = mesh
        .post_json(&format!("/v1/chats/{chat_id}/runs"), &body)
        .await?;
    if status != 202 {
        return Err(format!("start run: {status} {run}").into());
    }
    let run_id = run["run_id"].as_str().unwrap_or_default().to_string();
    if std::env::var("PA_BENCH_TRACE").is_ok() {
        eprintln!("post {:?}", started.elapsed());
    }
    let mut body = run_events(mesh, &run_id).await?.bytes_stream();
    let mut seen = String::new();
    while let Some(chunk) = body.next().await {
        seen.push_str(std::str::from_utf8(&chunk?)?);
        if seen.contains("\"type\":\"TEXT_MESSAGE_CONTENT\"") {
            let elapsed = started.elapsed();
            // Let the run finish before the next one, so runs do not overlap.
            while let Some(chunk) = body.next().await {
                seen.push_str(std::str::from_utf8(&chunk?)?);
                if seen.contains("RUN_FINISHED") {
                    break;
                }
            }
            return Ok(elapsed);
        }
    }
    Err("stream ended without a TEXT_MESSAGE_CONTENT".into())
}

/// GET a run's SSE stream.
async fn run_events(mesh: &Mesh, run_id: &str) -> Result<reqwest::Response, BoxError> {
    Ok(mesh
        .http
        .get(mesh.url(&format!("/v1/runs/{run_id}/events")))
        .send()
        .await?)
}

async fn direct_first_token(
    mesh: &Mesh,
    client: &mut ModelServiceClient<tonic::transport::Channel>,
) -> Result<Duration, BoxError> {
    let messages = vec![ChatTurnMessage {
        role: "user".into(),
        content: "benchmark the first token please".into(),
        ..Default::default()
    }];
    direct_first_token_of(mesh, client, messages, vec![]).await
}

/// svc-models StreamChat with these messages and tools → its first token (the baseline a
/// run's first token is compared with).
async fn direct_first_token_of(
    mesh: &Mesh,
    client: &mut ModelServiceClient<tonic::transport::Channel>,
    messages: Vec<ChatTurnMessage>,
    tools: Vec<pa_proto::v1::ChatToolDefinition>,
) -> Result<Duration, BoxError> {
    let identity = Mesh::identity("bench", "bench");
    let request = StreamChatRequest {
        label: "offline:echo".into(),
        messages,
        tools,
        ..Default::default()
    };
    let started = Instant::now();
    let mut stream = client
        .stream_chat(mesh.auth.request(&identity, request))
        .await?
        .into_inner();
    let mut elapsed = None;
    while let Some(chunk) = stream.next().await {
        if let Some(Chunk::TextDelta(_)) = chunk?.chunk
            && elapsed.is_none()
        {
            elapsed = Some(started.elapsed());
        }
    }
    elapsed.ok_or_else(|| "no token".into())
}

const RELAY_TEXT: &str = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty";

/// Arrival times of a streamed reply's chunks.
struct ChunkTimes {
    started: Instant,
    first: Option<Duration>,
    last: Option<Instant>,
    gaps: Vec<Duration>,
}

impl ChunkTimes {
    fn start() -> Self {
        Self {
            started: Instant::now(),
            first: None,
            last: None,
            gaps: Vec::new(),
        }
    }

    fn chunk(&mut self) {
        let now = Instant::now();
        match self.last {
            None => self.first = Some(now - self.started),
            Some(prev) => self.gaps.push(now - prev),
        }
        self.last = Some(now);
    }

    /// (time to the first chunk, gaps between chunks)
    fn finish(self) -> Result<(Duration, Vec<Duration>), BoxError> {
        Ok((self.first.ok_or("no content")?, self.gaps))
    }
}

/// (time to first content chunk, gaps between content chunks) calling the provider directly.
async fn direct_provider(
    http: &reqwest::Client,
    base_url: &str,
) -> Result<(Duration, Vec<Duration>), BoxError> {
    let body = serde_json::json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let mut times = ChunkTimes::start();
    let response = http
        .post(format!("{base_url}/chat/completions"))
        .json(&body)
        .send()
        .await?;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = stream.next().await {
        buffer.push_str(std::str::from_utf8(&chunk?)?);
        for event in complete_sse_events(&mut buffer) {
            if event.contains("\"content\":\"") && !event.contains("\"content\":\"\"") {
                times.chunk();
            }
        }
    }
    times.finish()
}

async fn via_relay(
    mesh: &Mesh,
    client: &mut ModelServiceClient<tonic::transport::Channel>,
) -> Result<(Duration, Vec<Duration>), BoxError> {
    let identity = Mesh::identity("bench", "bench");
    let request = StreamChatRequest {
        label: "fake:model".into(),
        messages: vec![ChatTurnMessage {
            role: "user".into(),
            content: "hi".into(),
            ..Default::default()
        }],
        classification: pa_proto::v1::DataClassification::Internal as i32,
        run_id: "bench".into(),
        ..Default::default()
    };
    let mut times = ChunkTimes::start();
    let mut stream = client
        .stream_chat(mesh.auth.request(&identity, request))
        .await?
        .into_inner();
    while let Some(chunk) = stream.next().await {
        match chunk?.chunk {
            Some(Chunk::TextDelta(_)) => times.chunk(),
            Some(Chunk::Failure(f)) => return Err(f.message.into()),
            _ => {}
        }
    }
    times.finish()
}

async fn relay(runs: usize) -> Result<(), BoxError> {
    let fake = pa_testkit::FakeProvider::start().await?;
    fake.set_default(pa_testkit::Reply::text(RELAY_TEXT));
    let mesh = Mesh::builder().start().await?;
    let provider = serde_json::json!({"id": "fake", "kind": "openai_compatible", "base_url": fake.base_url(),
        "tags": ["zero-retention"], "platform_api_key": "sk-bench"});
    let (status, body) = mesh.post_json("/v1/admin/providers", &provider).await?;
    if status != 200 {
        return Err(format!("add provider: {status} {body}").into());
    }
    let model = serde_json::json!({"label": "fake:model", "context_window": 8192});
    let (status, body) = mesh.post_json("/v1/admin/models", &model).await?;
    if status != 200 {
        return Err(format!("add model: {status} {body}").into());
    }
    let http = reqwest::Client::new();
    let mut client = ModelServiceClient::connect(mesh.models_url.clone()).await?;
    for _ in 0..20 {
        direct_provider(&http, &fake.base_url()).await?;
        via_relay(&mesh, &mut client).await?;
    }
    let mut direct_first = Summary {
        name: "provider direct: first chunk",
        samples: vec![],
    };
    let mut relay_first = Summary {
        name: "via svc-models StreamChat: first chunk",
        samples: vec![],
    };
    let mut direct_gap = Summary {
        name: "provider direct: gap between chunks",
        samples: vec![],
    };
    let mut relay_gap = Summary {
        name: "via svc-models StreamChat: gap between chunks",
        samples: vec![],
    };
    for _ in 0..runs {
        let (first, gaps) = direct_provider(&http, &fake.base_url()).await?;
        direct_first.samples.push(first);
        direct_gap.samples.extend(gaps);
        let (first, gaps) = via_relay(&mesh, &mut client).await?;
        relay_first.samples.push(first);
        relay_gap.samples.extend(gaps);
    }
    println!(
        "svc-models relay vs the provider directly, {runs} streamed replies of 20 chunks each, milliseconds"
    );
    print_table_header("n");
    for summary in [
        &mut direct_first,
        &mut relay_first,
        &mut direct_gap,
        &mut relay_gap,
    ] {
        println!("{}", summary.row());
    }
    mesh.stop().await
}

async fn first_token(runs: usize) -> Result<(), BoxError> {
    let mesh = Mesh::builder().start().await?;
    let chat_id = mesh.create_chat("bench").await?;
    let mut client = ModelServiceClient::connect(mesh.models_url.clone()).await?;
    let warmup = 20;
    for _ in 0..warmup {
        mesh_first_token(&mesh, &chat_id).await?;
        direct_first_token(&mesh, &mut client).await?;
    }
    let mut via_mesh = Summary {
        name: "POST run -> first TEXT_MESSAGE_CONTENT (SSE)",
        samples: vec![],
    };
    let mut direct = Summary {
        name: "svc-models StreamChat -> first token (gRPC)",
        samples: vec![],
    };
    let served_before = phases::ServedCalls::now();
    // The pool's connections are open after the warm-up, so these are the backends serving it.
    let postgres = phases::postgres_pids(&mesh.database_url).await;
    let work_before = phases::WorkDone::now(&postgres);
    for i in 0..runs {
        // A fresh chat every 50 runs keeps the history (and so the prompt) small.
        let chat = if i % 50 == 0 {
            mesh.create_chat("bench").await?
        } else {
            chat_id.clone()
        };
        via_mesh.samples.push(mesh_first_token(&mesh, &chat).await?);
        direct
            .samples
            .push(direct_first_token(&mesh, &mut client).await?);
    }
    let p50_overhead = {
        via_mesh.samples.sort();
        direct.samples.sort();
        percentile(&via_mesh.samples, 0.5).saturating_sub(percentile(&direct.samples, 0.5))
    };
    println!(
        "first-token latency, offline model, {runs} runs each (after {warmup} warm-up), milliseconds"
    );
    print_table_header("runs");
    println!("{}", via_mesh.row());
    println!("{}", direct.row());
    println!(
        "platform overhead at p50: {} ms (goal: <= 2 ms)",
        ms(p50_overhead)
    );
    // The baseline's own StreamChat calls are in the table too (one per run).
    phases::WorkDone::now(&postgres).print_since(
        &work_before,
        runs,
        "run and its baseline StreamChat",
    );
    phases::ServedCalls::now().print_since(&served_before, runs);
    mesh.stop().await
}

/// Durable (Temporal) vs inline first token, side by side, with an in-process worker: durable
/// runs started by svc-worker (eager start; svc-worker is Temporal's only client, ADR 0190); then
/// how many durable runs per second one worker sustains.
async fn durable(runs: usize) -> Result<(), BoxError> {
    // The product's Curator (it curates a chat once its turns pause), unless
    // PA_BENCH_CURATOR=off.
    let debounce = Duration::from_millis(
        std::env::var("PA_BENCH_CURATOR_DEBOUNCE_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(svc_worker::sweeper::DEFAULT_CURATOR_DEBOUNCE_MS),
    );
    let curator_on = !std::env::var("PA_BENCH_CURATOR").is_ok_and(|v| v == "off");
    let builder = Mesh::builder().worker().curator_debounce(debounce);
    let builder = if curator_on {
        builder
    } else {
        builder.without_curator()
    };
    let mesh = builder.start().await?;
    let warmup = 20;
    let mut chat = mesh.create_chat("bench").await?;
    for _ in 0..warmup {
        mode_first_token(&mesh, &chat, false).await?;
        mode_first_token(&mesh, &chat, true).await?;
    }
    let mut inline = Summary {
        name: "inline: POST run -> first token (SSE)",
        samples: vec![],
    };
    let mut durable = Summary {
        name: "durable, eager start by svc-worker",
        samples: vec![],
    };
    for i in 0..runs {
        if i % 50 == 0 {
            chat = mesh.create_chat("bench").await?;
        }
        inline
            .samples
            .push(mode_first_token(&mesh, &chat, false).await?);
        durable
            .samples
            .push(mode_first_token(&mesh, &chat, true).await?);
    }
    println!(
        "first-token latency, offline model, {runs} runs each (after {warmup} warm-up), milliseconds"
    );
    print_table_header("runs");
    println!("{}", inline.row());
    println!("{}", durable.row());
    println!("goal: durable <= 15 ms at p50 on the dev server");

    // Throughput: many durable runs at once, each in its own chat, until all have finished.
    let total = runs.clamp(50, 400);
    let concurrency = 32;
    let started = Instant::now();
    let mut chats = Vec::with_capacity(total);
    for _ in 0..total {
        chats.push(mesh.create_chat("throughput").await?);
    }
    let started_runs = Instant::now();
    let results: Vec<Result<Duration, BoxError>> = futures::stream::iter(chats.iter())
        .map(|chat| mode_first_token(&mesh, chat, true))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let elapsed = started_runs.elapsed();
    println!(
        "durable throughput, one worker: {total} runs ({concurrency} at a time) in {:.2} s = {:.1} runs/s ({failed} failed; set-up {:.1} s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        (started_runs - started).as_secs_f64()
    );
    if curator_on {
        curation_drain(&mesh, debounce).await?;
    }
    mesh.stop().await?;
    history_sizes().await
}

/// How long the Curator takes to curate every chat the throughput run left queued (ADR 0242: a
/// queue in svc-runs swept by the worker, no Temporal work per turn).
async fn curation_drain(mesh: &Mesh, debounce: Duration) -> Result<(), BoxError> {
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&mesh.database_url).await?;
    let count = "SELECT count(*) FROM runs.curations";
    let at_start: i64 = sqlx::query_scalar(count).fetch_one(&mut db).await?;
    let started = Instant::now();
    let mut left = at_start;
    while left > 0 && started.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = sqlx::query_scalar(count).fetch_one(&mut db).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "Curator: {at_start} chats queued when the throughput run ended, {} curated {secs:.2} s later ({left} left; debounce {} ms, so at least that long)",
        at_start - left,
        debounce.as_millis()
    );
    Ok(())
}

/// The workflow history of one durable run in a short chat and in a long one (200 earlier
/// messages of 1 KiB, all of which the run reads): large payloads travel by reference
/// (ADR 0161), so the size should not follow the chat's length.
async fn history_sizes() -> Result<(), BoxError> {
    let mesh = Mesh::builder()
        .worker()
        .without_curator()
        .history_messages(400)
        .start()
        .await?;
    let client = svc_worker::temporal::connect(&mesh.worker_config.temporal).await?;
    println!("durable run: Temporal workflow history (GetWorkflowExecutionHistory)");
    println!(
        "| chat | messages before | events | bytes | workflow tasks | activity tasks | local activities |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for earlier in [0usize, 200] {
        let chat = mesh.create_chat("history").await?;
        let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&mesh.database_url).await?;
        for i in 0..earlier {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            sqlx::query(
                "INSERT INTO runs.messages (tenant_id, id, chat_id, role, content) \
                 SELECT tenant_id, $1, id, $2, $3 FROM runs.chats WHERE id = $4",
            )
            .bind(format!("bench-{i}"))
            .bind(role)
            .bind(format!("message {i}: {}", "x".repeat(1024)))
            .bind(&chat)
            .execute(&mut db)
            .await?;
        }
        let body = serde_json::json!({ "message": "how long is this chat?", "durable": true });
        let (status, run) = mesh
            .post_json(&format!("/v1/chats/{chat}/runs"), &body)
            .await?;
        if status != 202 {
            return Err(format!("start run: {status} {run}").into());
        }
        let run_id = run["run_id"].as_str().unwrap_or_default().to_string();
        mesh.read_events(&run_id, None, None).await?;
        let size =
            svc_worker::temporal::closed_history_size(&client, &run_id, Duration::from_secs(30))
                .await?;
        let name = if earlier == 0 { "short" } else { "long" };
        println!(
            "| {name} | {earlier} | {} | {} | {} | {} | {} |",
            size.events,
            size.bytes,
            size.workflow_tasks,
            size.activity_tasks,
            size.local_activities
        );
    }
    println!("goal: the same size for both (history and large tool results go by reference)");
    mesh.stop().await
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// A comma-separated list of numbers after `--name`, or `default`.
fn numbers_flag(args: &[String], name: &str, default: &[usize]) -> Vec<usize> {
    flag(args, name).map_or_else(
        || default.to_vec(),
        |list| list.split(',').filter_map(|n| n.parse().ok()).collect(),
    )
}

/// Takes the complete SSE events (`…\n\n`) off the front of `pending`; a partial one stays.
fn complete_sse_events(pending: &mut String) -> Vec<String> {
    let mut events = Vec::new();
    while let Some(end) = pending.find("\n\n") {
        events.push(pending.drain(..end + 2).collect());
    }
    events
}

#[global_allocator]
static ALLOCATOR: pa_kit::Allocator = pa_kit::ALLOCATOR;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // The mesh runs in this process: svc-models' environment is the bench's (ADR 0226).
    pa_kit::process::exec_with_env_defaults(svc_models::embedder::KERNEL_THREADS_ENV);
    if std::env::var("PA_BENCH_TRACE").is_ok() {
        pa_kit::telemetry::init("pa-bench");
    }
    // The mesh and its load client share this process: 2,000 streams are 4,000 sockets.
    pa_kit::process::raise_open_files_limit_and_log("pa-bench");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs = flag(&args, "--runs")
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let result = match args.first().map(String::as_str) {
        Some("first-token") => first_token(runs).await,
        Some("relay") => relay(runs).await,
        Some("durable") => durable(runs).await,
        Some("streams") => {
            let levels = numbers_flag(&args, "--streams", &[1, 100, 1000, 2000]);
            let events = flag(&args, "--events")
                .and_then(|n| n.parse().ok())
                .unwrap_or(200_000);
            streams::run(&levels, events, args.iter().any(|a| a == "--grpc")).await
        }
        Some("costs") => {
            let levels = numbers_flag(&args, "--concurrency", &[1, 100, 1000]);
            let sections: Vec<&str> = flag(&args, "--sections").map_or_else(
                || costs::SECTIONS.to_vec(),
                |list| list.split(',').collect(),
            );
            costs::run(runs, &levels, &sections).await
        }
        Some("memory") => {
            let scenarios: Option<Option<Vec<memory::Scenario>>> =
                flag(&args, "--scenarios").map(|list| {
                    list.split(',')
                        .map(memory::Scenario::parse)
                        .collect::<Option<Vec<_>>>()
                });
            match scenarios {
                Some(None) => {
                    eprintln!("--scenarios: e.g. 100k,100kx1000,1mx1000 (memories x users)");
                    return std::process::ExitCode::from(2);
                }
                Some(Some(list)) => memory::run(runs.min(1000), &list).await,
                None => memory::run(runs.min(1000), &memory::Scenario::DEFAULT).await,
            }
        }
        Some("embed") => memory::query_latency(runs).await,
        Some("sizing") => {
            let levels = numbers_flag(&args, "--streams", &[100, 250, 500, 1000]);
            sizing::run(runs, &levels).await
        }
        Some("chaos") => {
            let targets = flag(&args, "--targets");
            // 20 per mode unless --runs says otherwise (issue 24's table).
            let runs = if args.iter().any(|a| a == "--runs") {
                runs.min(200)
            } else {
                20
            };
            let replicas = flag(&args, "--replicas")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            chaos::run(runs, targets, replicas).await
        }
        _ => {
            eprintln!(
                "usage: pa-bench first-token|relay|durable|costs|streams|memory|embed|chaos|sizing [--runs N] [--targets a,b] [--replicas 2] [--streams 100,250] [--concurrency 1,100] [--sections history,memories] [--events N] [--scenarios 100k,1mx1000]"
            );
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pa-bench: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
