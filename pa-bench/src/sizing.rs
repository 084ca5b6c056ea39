//! `pa-bench sizing`: what one replica of each service carries on this machine, for the sizing
//! table in `docs/src/deploying.md` (issue 20 item 4).
//!
//! The in-process mesh (one replica of every service in one process, on the real dev stack) is
//! measured twice:
//! - **run starts/s**: `--runs` inline runs of a short message with the offline model at full
//!   speed, started by 1, 16 and 64 clients that each follow their run to `RUN_FINISHED` before
//!   starting the next. Runs per second and the first token's p50/p99 at each level.
//! - **concurrent streams**: 100, 250, 500 and 1,000 runs streaming at once at 50 tokens/s each
//!   (a real model's pace; the offline model with 20 ms between tokens), every client reading
//!   its SSE stream. The gap between tokens as the client sees it (p50/p99, and p99 above the
//!   model's own 20 ms), the peak number of streams open at once, and how many ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tests_e2e::Mesh;

use crate::{BoxError, ms, percentile};

const TOKEN_DELAY: Duration = Duration::from_millis(20);

/// What one client saw of one run.
pub(crate) struct Followed {
    pub(crate) first_token: Duration,
    pub(crate) gaps: Vec<Duration>,
    pub(crate) finished: bool,
    /// How a run that did not finish ended (its RUN_ERROR, or the stream's end).
    failure: Option<String>,
}

/// Starts a run and reads its SSE stream to the end.
async fn run_and_follow(mesh: &Mesh, chat_id: &str, message: &str) -> Result<Followed, BoxError> {
    let started = Instant::now();
    let run_id = mesh.start_run(chat_id, message).await?;
    follow(mesh, &run_id, started).await
}

/// Reads a run's SSE stream to its end; `started` is when its POST went out.
pub(crate) async fn follow(
    mesh: &Mesh,
    run_id: &str,
    started: Instant,
) -> Result<Followed, BoxError> {
    let mut body = crate::run_events(mesh, run_id).await?.bytes_stream();
    let mut followed = Followed {
        first_token: Duration::ZERO,
        gaps: Vec::new(),
        finished: false,
        failure: None,
    };
    let mut last_token: Option<Instant> = None;
    let mut pending = String::new();
    while let Some(chunk) = body.next().await {
        pending.push_str(std::str::from_utf8(&chunk?)?);
        let now = Instant::now();
        // Whole events only: an event split across chunks is counted when it is complete.
        for event in crate::complete_sse_events(&mut pending) {
            if event.contains("\"type\":\"TEXT_MESSAGE_CONTENT\"") {
                match last_token {
                    None => followed.first_token = now - started,
                    Some(previous) => followed.gaps.push(now - previous),
                }
                last_token = Some(now);
            } else if event.contains("\"type\":\"RUN_FINISHED\"") {
                followed.finished = true;
                return Ok(followed);
            } else if event.contains("\"type\":\"RUN_ERROR\"") {
                followed.failure = Some(event.trim().to_string());
                return Ok(followed);
            }
        }
    }
    followed.failure = Some("the stream ended without a terminal event".into());
    Ok(followed)
}

fn words(n: usize) -> String {
    (0..n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run_starts(runs: usize) -> Result<(), BoxError> {
    let mesh = Mesh::builder().start().await?;
    println!(
        "run starts/s: inline runs of a short message, offline model at full speed, each client follows its run to the end"
    );
    println!(
        "| {:>7} | {:>5} | {:>8} | {:>13} | {:>13} |",
        "clients", "runs", "runs/s", "first tok p50", "first tok p99"
    );
    println!(
        "|{:-<9}|{:-<7}|{:-<10}|{:-<15}|{:-<15}|",
        "", "", "", "", ""
    );
    for clients in [1usize, 16, 64] {
        let chats = futures::future::try_join_all((0..clients).map(|i| {
            let mesh = &mesh;
            async move { mesh.create_chat(&format!("sizing {i}")).await }
        }))
        .await?;
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        let per_client = chats.iter().map(|chat| {
            let (mesh, next) = (&mesh, &next);
            async move {
                let mut firsts = Vec::new();
                let mut chat = chat.clone();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= runs {
                        return Ok::<_, BoxError>(firsts);
                    }
                    // A fresh chat every 20 runs keeps the history small, as in first-token.
                    if i % 20 == 19 {
                        chat = mesh.create_chat("sizing").await?;
                    }
                    let followed = run_and_follow(mesh, &chat, "size me please").await?;
                    if !followed.finished {
                        return Err("a run did not finish".into());
                    }
                    firsts.push(followed.first_token);
                }
            }
        });
        let mut firsts: Vec<Duration> = futures::future::try_join_all(per_client)
            .await?
            .into_iter()
            .flatten()
            .collect();
        let elapsed = started.elapsed();
        firsts.sort();
        println!(
            "| {:>7} | {:>5} | {:>8.1} | {:>13} | {:>13} |",
            clients,
            firsts.len(),
            firsts.len() as f64 / elapsed.as_secs_f64(),
            ms(percentile(&firsts, 0.5)),
            ms(percentile(&firsts, 0.99)),
        );
    }
    mesh.stop().await
}

async fn concurrent_streams(levels: &[usize]) -> Result<(), BoxError> {
    let mesh = Mesh::builder()
        .offline_token_delay(TOKEN_DELAY)
        .start()
        .await?;
    println!();
    println!(
        "concurrent streams: runs at 50 tokens/s each (offline model, 20 ms between tokens), every client reading SSE; gaps between tokens as the client sees them, ms"
    );
    println!(
        "| {:>7} | {:>9} | {:>7} | {:>8} | {:>8} | {:>10} | {:>8} |",
        "streams", "peak open", "ended", "gap p50", "gap p99", "added p99", "gap max"
    );
    println!(
        "|{:-<9}|{:-<11}|{:-<9}|{:-<10}|{:-<10}|{:-<12}|{:-<10}|",
        "", "", "", "", "", "", ""
    );
    for &streams in levels {
        // Long enough that the last stream starts before the first ends (starts run at tens to
        // hundreds per second on these cores).
        let message = words(200 + streams);
        let chats = futures::future::try_join_all((0..streams).map(|i| {
            let mesh = &mesh;
            async move { mesh.create_chat(&format!("streams {i}")).await }
        }))
        .await?;
        let open = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        // At most 64 POSTs in flight, as a fleet of browsers arriving would spread them.
        let gate = Arc::new(tokio::sync::Semaphore::new(64));
        let clients = chats.iter().map(|chat| {
            let (mesh, message, open, peak, gate) =
                (&mesh, &message, open.clone(), peak.clone(), gate.clone());
            async move {
                let permit = gate.acquire_owned().await?;
                let started = Instant::now();
                let run_id = mesh.start_run(chat, message).await?;
                drop(permit);
                let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now_open, Ordering::SeqCst);
                let followed = follow(mesh, &run_id, started).await;
                open.fetch_sub(1, Ordering::SeqCst);
                followed
            }
        });
        let all: Vec<Followed> = futures::future::try_join_all(clients).await?;
        let ended = all.iter().filter(|f| f.finished).count();
        let mut failures: Vec<&str> = all.iter().filter_map(|f| f.failure.as_deref()).collect();
        failures.sort();
        failures.dedup();
        for failure in failures.iter().take(3) {
            eprintln!("{streams} streams: a run ended with {failure}");
        }
        let mut gaps: Vec<Duration> = all.into_iter().flat_map(|f| f.gaps).collect();
        gaps.sort();
        let p99 = percentile(&gaps, 0.99);
        println!(
            "| {:>7} | {:>9} | {:>7} | {:>8} | {:>8} | {:>10} | {:>8} |",
            streams,
            peak.load(Ordering::SeqCst),
            ended,
            ms(percentile(&gaps, 0.5)),
            ms(p99),
            ms(p99.saturating_sub(TOKEN_DELAY)),
            ms(*gaps.last().unwrap_or(&Duration::ZERO)),
        );
    }
    mesh.stop().await
}

pub async fn run(runs: usize, levels: &[usize]) -> Result<(), BoxError> {
    run_starts(runs).await?;
    concurrent_streams(levels).await
}
