//! `pa-bench streams [--streams 1,100,1000,2000] [--events N]`: the gateway's relay from Redis
//! Streams to SSE clients, alone (issue 23 item 3). Runs are started and then kept waiting
//! (the offline model's first token is minutes away), so their streams exist and the gateway
//! serves them; the bench itself writes the events into Redis, as a run driver would.
//! - **throughput**: `--events` events in all (200,000 by default; at most 40,000 per stream,
//!   below the stream's cap) spread over the streams, each ended by a RUN_FINISHED, then
//!   every client reads its stream from the start at once: events/s delivered over SSE, and the
//!   bench process's CPU per event (gateway and clients together: an upper bound on the
//!   gateway's).
//! - **live**: once every client has its stream open (how long that took is a column of its
//!   own), every stream gets one event every 20 ms (a model's 50 tokens/s) for 10 s, all
//!   streams written in one pipeline per tick ("at once", the worst case), then again with the
//!   streams in 10 groups each written at its own phase of the tick ("spread", as independent
//!   model streams arrive); each client measures when each event arrives
//!   against when it was written (the latency the relay adds), and the process's memory with
//!   the streams open. Every client reads on a task of its own, and the writer on another.
//! - `--grpc`: the clients read through the public gRPC API's `StreamRunEvents` (each its own
//!   HTTP/2 connection, an API key in the metadata) instead of SSE.

use std::time::{Duration, Instant};

use futures::StreamExt;
use pa_proto::v1::{AgUiEvent, RunFinished, TextMessageContent, ag_ui_event::Event};
use tests_e2e::Mesh;

use crate::{BoxError, ms, percentile};

const TICK: Duration = Duration::from_millis(20);
const LIVE_FOR: Duration = Duration::from_secs(10);

fn content(delta: String) -> AgUiEvent {
    AgUiEvent::new(Event::TextMessageContent(TextMessageContent {
        message_id: "bench-message".into(),
        delta,
        timestamp: None,
    }))
}

fn finished(run_id: &str) -> AgUiEvent {
    AgUiEvent::new(Event::RunFinished(RunFinished {
        thread_id: "bench".into(),
        run_id: run_id.into(),
        result_json: None,
        timestamp: None,
    }))
}

/// Seconds of CPU (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) are space-separated; utime and
    // stime are the 14th and 15th fields, in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// This process's resident memory, in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `n` runs started and left waiting for their first token.
async fn parked_runs(mesh: &Mesh, n: usize) -> Result<Vec<String>, BoxError> {
    let chats = futures::stream::iter(0..n)
        .map(|i| async move { mesh.create_chat(&format!("streams {i}")).await })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    futures::stream::iter(chats.iter())
        .map(|chat| mesh.start_run(chat, "wait for the bench"))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Cancels the parked runs (their drivers stop waiting).
async fn cancel_runs(mesh: &Mesh, runs: &[String]) -> Result<(), BoxError> {
    let results: Vec<Result<(u16, serde_json::Value), BoxError>> = futures::stream::iter(runs)
        .map(|run| async move {
            mesh.post_json(&format!("/v1/runs/{run}/cancel"), &serde_json::json!({}))
                .await
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for result in results {
        result?;
    }
    Ok(())
}

/// How the clients read their run's events: SSE over HTTP/1.1, or the public gRPC API's
/// `StreamRunEvents` (each client its own HTTP/2 connection), authorised by an API key.
#[derive(Clone)]
pub enum Transport {
    Sse,
    Grpc { url: String, key: String },
}

impl Transport {
    fn name(&self) -> &'static str {
        match self {
            Transport::Sse => "SSE",
            Transport::Grpc { .. } => "gRPC StreamRunEvents",
        }
    }
}

/// Counts a TEXT_MESSAGE_CONTENT event and, for a live one (whose delta is the microseconds
/// since `epoch` when written), how long it took to arrive.
fn saw_content(
    delta: &str,
    now: Instant,
    epoch: Option<Instant>,
    count: &mut usize,
    delays: &mut Vec<Duration>,
) {
    *count += 1;
    if let Some(epoch) = epoch
        && let Ok(micros) = delta.parse::<u64>()
    {
        let written = epoch + Duration::from_micros(micros);
        delays.push(now.saturating_duration_since(written));
    }
}

/// Reads a run's SSE stream to RUN_FINISHED; returns how many TEXT_MESSAGE_CONTENT events came
/// and, for live events, how long each took to arrive.
async fn read_stream(
    http: reqwest::Client,
    url: String,
    epoch: Option<Instant>,
    connected: tokio::sync::mpsc::UnboundedSender<()>,
) -> Result<(usize, Vec<Duration>), BoxError> {
    let mut body = http.get(url).send().await?.bytes_stream();
    // The stream is open (the gateway answered with its headers).
    let _ = connected.send(());
    let mut pending = String::new();
    let mut count = 0;
    let mut delays = Vec::new();
    while let Some(chunk) = body.next().await {
        pending.push_str(std::str::from_utf8(&chunk?)?);
        let now = Instant::now();
        for event in crate::complete_sse_events(&mut pending) {
            if event.contains("\"type\":\"TEXT_MESSAGE_CONTENT\"") {
                let delta = event
                    .split("\"delta\":\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_default();
                saw_content(delta, now, epoch, &mut count, &mut delays);
            } else if event.contains("\"type\":\"RUN_FINISHED\"") {
                return Ok((count, delays));
            }
        }
    }
    Err("the stream ended without RUN_FINISHED".into())
}

/// [`read_stream`] through the public gRPC API.
async fn read_grpc_stream(
    url: String,
    key: String,
    run_id: String,
    epoch: Option<Instant>,
    connected: tokio::sync::mpsc::UnboundedSender<()>,
) -> Result<(usize, Vec<Duration>), BoxError> {
    use pa_proto::v1::StreamRunEventsRequest;
    use pa_proto::v1::run_service_client::RunServiceClient;

    // A connection refused or reset while 2,000 clients connect at once is tried again, as real
    // clients do (opening is timed by a column of its own).
    let mut tries = 0;
    let mut events = loop {
        let opened = async {
            let mut client = RunServiceClient::connect(url.clone()).await?;
            let mut request = tonic::Request::new(StreamRunEventsRequest {
                run_id: run_id.clone(),
                after: String::new(),
            });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {key}").parse()?);
            Ok::<_, BoxError>(client.stream_run_events(request).await?.into_inner())
        }
        .await;
        match opened {
            Ok(events) => break events,
            Err(_) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20 * tries)).await;
            }
            Err(err) => return Err(err),
        }
    };
    let _ = connected.send(());
    let mut count = 0;
    let mut delays = Vec::new();
    while let Some(item) = events.next().await {
        let now = Instant::now();
        match item?.event.and_then(|e| e.event) {
            Some(Event::TextMessageContent(content)) => {
                saw_content(&content.delta, now, epoch, &mut count, &mut delays)
            }
            Some(Event::RunFinished(_)) => return Ok((count, delays)),
            _ => {}
        }
    }
    Err("the stream ended without RUN_FINISHED".into())
}

/// Every client reads on a task of its own, as separate clients would: in the bench's main
/// future they would all be served by one thread, and the figures would be the load client's.
async fn read_streams(
    mesh: &Mesh,
    transport: &Transport,
    runs: &[String],
    epoch: Option<Instant>,
    connected: tokio::sync::mpsc::UnboundedSender<()>,
) -> Result<Vec<(usize, Vec<Duration>)>, BoxError> {
    let readers: Vec<_> = runs
        .iter()
        .map(|run| match transport {
            Transport::Sse => tokio::spawn(read_stream(
                mesh.http.clone(),
                mesh.url(&format!("/v1/runs/{run}/events")),
                epoch,
                connected.clone(),
            )),
            Transport::Grpc { url, key } => tokio::spawn(read_grpc_stream(
                url.clone(),
                key.clone(),
                run.clone(),
                epoch,
                connected.clone(),
            )),
        })
        .collect();
    drop(connected);
    let mut read = Vec::with_capacity(readers.len());
    for reader in futures::future::try_join_all(readers).await? {
        read.push(reader?);
    }
    Ok(read)
}

async fn throughput(
    mesh: &Mesh,
    transport: &Transport,
    sink: &pa_bus::run_events::EventSink,
    levels: &[usize],
    events: usize,
) -> Result<(), BoxError> {
    println!(
        "relay throughput ({}): {events} token events spread over the streams (at most 40,000 each), then every client reads its stream from the start at once",
        transport.name()
    );
    println!("| streams | events | seconds | events/s | CPU µs/event (gateway + clients) |");
    println!("|---:|---:|---:|---:|---:|");
    for &streams in levels {
        let per_stream = (events / streams.max(1)).clamp(1, 40_000);
        let runs = parked_runs(mesh, streams).await?;
        for run in &runs {
            let mut batch: Vec<AgUiEvent> =
                (0..per_stream).map(|i| content(format!("t{i} "))).collect();
            batch.push(finished(run));
            for chunk in batch.chunks(1000) {
                sink.emit_to_runs(&[(run.as_str(), chunk.to_vec())]).await?;
            }
        }
        let cpu = cpu_seconds();
        let started = Instant::now();
        let (connected, _) = tokio::sync::mpsc::unbounded_channel();
        let counts = read_streams(mesh, transport, &runs, None, connected).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let used = cpu_seconds() - cpu;
        let total: usize = counts.iter().map(|(n, _)| n).sum();
        cancel_runs(mesh, &runs).await?;
        println!(
            "| {streams} | {total} | {elapsed:.2} | {:.0} | {:.1} |",
            total as f64 / elapsed,
            used * 1e6 / total.max(1) as f64
        );
    }
    println!();
    Ok(())
}

/// How the live writer spreads each tick's events.
#[derive(Clone, Copy)]
enum Writes {
    /// Every stream's event at the same instant, one pipeline per tick: the worst case.
    AtOnce,
    /// The streams in `PHASES` groups, one group's pipeline every `TICK / PHASES`: each stream
    /// still gets an event every tick, at its own phase, as independent model streams do.
    Spread,
}

/// Groups of streams written at their own phase of a tick (`Writes::Spread`).
const PHASES: usize = 10;
/// Pipelines in flight at once at most (the writer's Redis pool).
const WRITERS: usize = 8;

async fn live(
    mesh: &Mesh,
    transport: &Transport,
    sink: &pa_bus::run_events::EventSink,
    levels: &[usize],
) -> Result<(), BoxError> {
    println!(
        "live relay ({}): every stream gets a token event every {} ms for {} s, all streams in one pipeline per tick (at once) or in {PHASES} groups each at its own phase of the tick (spread); delay from the write to the client, ms",
        transport.name(),
        TICK.as_millis(),
        LIVE_FOR.as_secs()
    );
    println!(
        "| streams | writes | all open after (ms) | events | delay p50 | delay p99 | delay max | RSS with the streams open (MiB) | per 1,000 streams (MiB) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for &streams in levels {
        for writes in [Writes::AtOnce, Writes::Spread] {
            live_level(mesh, transport, sink, streams, writes).await?;
        }
    }
    println!();
    Ok(())
}

async fn live_level(
    mesh: &Mesh,
    transport: &Transport,
    sink: &pa_bus::run_events::EventSink,
    streams: usize,
    writes: Writes,
) -> Result<(), BoxError> {
    let runs = parked_runs(mesh, streams).await?;
    let rss_before = rss_mib();
    let epoch = Instant::now();
    let (connected, mut opened) = tokio::sync::mpsc::unbounded_channel();
    let reading = read_streams(mesh, transport, &runs, Some(epoch), connected);
    // The writer, too, is a task of its own (a run driver is not the clients' thread).
    let (sink, written_runs) = (sink.clone(), runs.clone());
    let writing = async move {
        let runs = written_runs;
        // Every client has its stream open before the first event (the delays are those of
        // open streams, not of connecting), then a moment for the last ones to be followed.
        let mut open = 0;
        let all_open = tokio::time::timeout(Duration::from_secs(120), async {
            while open < runs.len() && opened.recv().await.is_some() {
                open += 1;
            }
        })
        .await;
        if all_open.is_err() || open < runs.len() {
            return Err(format!("{open} of {} streams opened", runs.len()).into());
        }
        let connect = epoch.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_open = rss_mib();
        let (phases, every) = match writes {
            Writes::AtOnce => (1, TICK),
            Writes::Spread => (PHASES, TICK / PHASES as u32),
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let until = Instant::now() + LIVE_FOR;
        let mut phase = 0;
        // Spread, a group's pipeline does not wait for the one before (independent streams
        // are written by independent drivers), up to the writer pool's connections.
        let mut in_flight = tokio::task::JoinSet::new();
        while Instant::now() < until {
            tick.tick().await;
            let micros = epoch.elapsed().as_micros() as u64;
            let batches: Vec<(String, Vec<AgUiEvent>)> = runs
                .iter()
                .skip(phase)
                .step_by(phases)
                .map(|run| (run.clone(), vec![content(micros.to_string())]))
                .collect();
            phase = (phase + 1) % phases;
            while let Some(done) = in_flight.try_join_next() {
                done??;
            }
            if batches.is_empty() || in_flight.len() >= WRITERS {
                continue;
            }
            let sink = sink.clone();
            in_flight.spawn(async move {
                let batches: Vec<(&str, Vec<AgUiEvent>)> = batches
                    .iter()
                    .map(|(run, events)| (run.as_str(), events.clone()))
                    .collect();
                sink.emit_to_runs(&batches).await
            });
            if phases == 1 {
                // At once: one pipeline per tick, each waited for, as before.
                while let Some(done) = in_flight.join_next().await {
                    done??;
                }
            }
        }
        while let Some(done) = in_flight.join_next().await {
            done??;
        }
        let batches: Vec<(&str, Vec<AgUiEvent>)> = runs
            .iter()
            .map(|run| (run.as_str(), vec![finished(run)]))
            .collect();
        sink.emit_to_runs(&batches).await?;
        Ok::<(f64, Duration), BoxError>((rss_open, connect))
    };
    let (read, rss_open) = tokio::join!(reading, tokio::spawn(writing));
    let (read, (rss_open, connect)) = (read?, rss_open??);
    let total: usize = read.iter().map(|(n, _)| n).sum();
    cancel_runs(mesh, &runs).await?;
    let mut delays: Vec<Duration> = read.into_iter().flat_map(|(_, d)| d).collect();
    delays.sort();
    println!(
        "| {streams} | {} | {} | {total} | {} | {} | {} | {rss_open:.0} | {:.1} |",
        match writes {
            Writes::AtOnce => "at once",
            Writes::Spread => "spread",
        },
        ms(connect),
        ms(percentile(&delays, 0.5)),
        ms(percentile(&delays, 0.99)),
        ms(*delays.last().unwrap_or(&Duration::ZERO)),
        (rss_open - rss_before) * 1000.0 / streams as f64,
    );
    Ok(())
}

pub async fn run(levels: &[usize], events: usize, grpc: bool) -> Result<(), BoxError> {
    // The offline model's first token an hour away: the runs wait, their streams stay open.
    let mesh = Mesh::builder()
        .offline_token_delay(Duration::from_secs(3600))
        .start()
        .await?;
    let transport = if grpc {
        // An integrator's API key, made by the dev user over HTTP.
        let (status, created) = mesh
            .post_json("/v1/me/api-keys", &serde_json::json!({ "name": "bench" }))
            .await?;
        if status != 201 {
            return Err(format!("create an API key: {status} {created}").into());
        }
        Transport::Grpc {
            url: mesh.public_grpc_url.clone(),
            key: created["key"].as_str().unwrap_or_default().to_string(),
        }
    } else {
        Transport::Sse
    };
    let pool = pa_kit::redis::pool(&mesh.runs_config.common.redis_url, WRITERS)?;
    let sink = pa_bus::run_events::EventSink::new(pool);
    throughput(&mesh, &transport, &sink, levels, events).await?;
    live(&mesh, &transport, &sink, levels).await?;
    mesh.stop().await
}
