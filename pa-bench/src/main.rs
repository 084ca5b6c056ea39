//! Benchmarks that print a table (not tests).
//!
//! `cargo run -p pa-bench --release -- first-token [--runs N]`: time from POST run to the first
//! TEXT_MESSAGE_CONTENT on the SSE stream, through the whole in-process mesh on the real dev
//! stack (Postgres, Redis), with the offline model; and, as the baseline, a direct
//! svc-models StreamChat call to its first token. The difference is the platform's overhead.

use std::time::{Duration, Instant};

use futures::StreamExt;
use pa_proto::v1::model_service_client::ModelServiceClient;
use pa_proto::v1::{ChatTurnMessage, StreamChatRequest, stream_chat_chunk::Chunk};
use tests_e2e::Mesh;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
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
    let started = Instant::now();
    let run_id = mesh
        .start_run(chat_id, "benchmark the first token please")
        .await?;
    if std::env::var("PA_BENCH_TRACE").is_ok() {
        eprintln!("post {:?}", started.elapsed());
    }
    let response = mesh
        .http
        .get(mesh.url(&format!("/v1/runs/{run_id}/events")))
        .send()
        .await?;
    let mut body = response.bytes_stream();
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

async fn direct_first_token(
    mesh: &Mesh,
    client: &mut ModelServiceClient<tonic::transport::Channel>,
) -> Result<Duration, BoxError> {
    let identity = Mesh::identity("bench", "bench");
    let request = StreamChatRequest {
        label: "offline:echo".into(),
        messages: vec![ChatTurnMessage {
            role: "user".into(),
            content: "benchmark the first token please".into(),
            ..Default::default()
        }],
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
    println!(
        "| {:<44} | {:>5} | {:>9} | {:>9} | {:>9} | {:>9} |",
        "path", "runs", "p50", "p99", "mean", "max"
    );
    println!(
        "|{:-<46}|{:-<7}|{:-<11}|{:-<11}|{:-<11}|{:-<11}|",
        "", "", "", "", "", ""
    );
    println!("{}", via_mesh.row());
    println!("{}", direct.row());
    println!(
        "platform overhead at p50: {} ms (goal: <= 2 ms)",
        ms(p50_overhead)
    );
    mesh.stop().await
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::var("PA_BENCH_TRACE").is_ok() {
        pa_kit::telemetry::init("pa-bench");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let result = match args.first().map(String::as_str) {
        Some("first-token") => first_token(runs).await,
        _ => {
            eprintln!("usage: pa-bench first-token [--runs N]");
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
