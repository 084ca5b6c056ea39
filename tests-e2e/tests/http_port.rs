//! The gateway's public HTTP port against clients that hold connections (ADR 0237): headers
//! that never finish, connections that send nothing or stay idle, and more connections than
//! the gateway allows. A stream that takes longer than the idle timeout is not cut.

use std::time::{Duration, Instant};

use serde_json::json;
use svc_gateway::http_server::HttpLimits;
use tests_e2e::Mesh;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type E = Box<dyn std::error::Error + Send + Sync>;

async fn connect(mesh: &Mesh) -> Result<TcpStream, E> {
    Ok(TcpStream::connect(mesh.gateway_url.trim_start_matches("http://")).await?)
}

/// Reads until the gateway closes the connection (EOF or reset), for up to `within`; returns
/// what it sent and when it closed, or `None` if it was still open.
async fn read_to_close(
    tcp: &mut TcpStream,
    within: Duration,
) -> Result<Option<(Vec<u8>, Instant)>, E> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return Ok(None),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(Some((got, Instant::now()))),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n";

/// The start of the first `/healthz` answer a new connection gets, trying for up to 15 s (a
/// slot freed by a closed connection is free once the gateway has seen it close).
async fn health_served(mesh: &Mesh) -> Result<String, E> {
    for _ in 0..50 {
        let mut tcp = connect(mesh).await?;
        tcp.write_all(HEALTH).await?;
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut buf)).await
            && n > 0
        {
            return Ok(String::from_utf8_lossy(&buf[..n]).to_string());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("no connection was served".into())
}

#[tokio::test]
async fn slow_headers_silent_and_idle_connections_are_closed_but_a_long_stream_is_not() -> R {
    let idle = Duration::from_millis(500);
    let mesh = Mesh::builder()
        .offline_token_delay(Duration::from_millis(100))
        .http_limits(HttpLimits {
            idle_timeout: idle,
            ..Default::default()
        })
        .start()
        .await?;
    // Headers begun and never finished (slowloris), and a connection that sends nothing.
    let mut slow = connect(&mesh).await?;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n")
        .await?;
    let mut silent = connect(&mesh).await?;
    let opened = Instant::now();
    for (name, tcp) in [("slow headers", &mut slow), ("silent", &mut silent)] {
        let (sent, closed) = read_to_close(tcp, Duration::from_secs(10))
            .await?
            .ok_or(format!("{name}: still open after 10 s"))?;
        assert!(
            closed - opened >= idle - Duration::from_millis(100),
            "{name}: closed too early"
        );
        assert!(
            !String::from_utf8_lossy(&sent).contains("200 OK"),
            "{name}: {}",
            String::from_utf8_lossy(&sent)
        );
    }

    // A body that stops coming is answered with an error, and its connection closed.
    let mut trickle = connect(&mesh).await?;
    trickle
        .write_all(
            b"POST /v1/chats HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n\
              Content-Length: 200\r\n\r\n{\"title\": \"trick",
        )
        .await?;
    let (sent, _) = read_to_close(&mut trickle, Duration::from_secs(10))
        .await?
        .ok_or("a body that stopped coming held its connection for 10 s")?;
    let sent = String::from_utf8_lossy(&sent);
    assert!(sent.starts_with("HTTP/1.1 4"), "{sent}");
    let (_, chats) = mesh.get_json("/v1/chats").await?;
    assert!(!chats.to_string().contains("trick"), "{chats}");

    // A kept-alive connection is served, then closed once idle.
    let mut kept = connect(&mesh).await?;
    kept.write_all(HEALTH).await?;
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut buf)).await??;
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    let answered = Instant::now();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let (_, closed) = read_to_close(&mut kept, Duration::from_secs(10))
        .await?
        .ok_or("an idle kept-alive connection stayed open")?;
    assert!(
        closed - answered >= idle - Duration::from_millis(100),
        "kept alive for a while"
    );

    // A run whose stream lasts several idle timeouts (30 tokens, 100 ms apart) arrives whole.
    let chat = mesh.create_chat("long stream").await?;
    let message = (1..=30)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let (status, accepted) = mesh
        .post_json(
            &format!("/v1/chats/{chat}/runs"),
            &json!({ "message": message }),
        )
        .await?;
    assert_eq!(status, 202, "{accepted}");
    let run_id = accepted["run_id"].as_str().unwrap_or_default().to_string();
    let started = Instant::now();
    let events = mesh.read_events(&run_id, None, None).await?;
    assert!(started.elapsed() > idle * 3, "{:?}", started.elapsed());
    assert_eq!(
        events.last().map(|e| e.event_type()),
        Some("RUN_FINISHED"),
        "{events:?}"
    );
    mesh.stop().await
}

#[tokio::test]
async fn connections_above_the_cap_are_closed_at_once_and_the_gateway_serves_when_one_ends() -> R {
    let cap = 4;
    let mesh = Mesh::builder()
        .http_limits(HttpLimits {
            max_connections: cap,
            ..Default::default()
        })
        .start()
        .await?;
    // Idle connections (the mesh's own client may hold one of the slots) until one is refused.
    let mut held = Vec::new();
    let mut refused = false;
    for _ in 0..cap + 2 {
        let mut tcp = connect(&mesh).await?;
        if read_to_close(&mut tcp, Duration::from_millis(300))
            .await?
            .is_some()
        {
            refused = true;
            break;
        }
        held.push(tcp);
    }
    assert!(refused, "{} connections held, cap {cap}", held.len());
    assert!(!held.is_empty() && held.len() <= cap, "{}", held.len());
    // One of them ends: a new connection is served.
    drop(held.pop());
    let served = health_served(&mesh).await?;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    drop(held);
    mesh.stop().await
}

#[tokio::test]
async fn a_websocket_keeps_its_connection_slot_until_it_closes() -> R {
    let cap = 3;
    let mesh = Mesh::builder()
        .http_limits(HttpLimits {
            max_connections: cap,
            idle_timeout: Duration::from_millis(300),
        })
        .start()
        .await?;
    // The mesh's own client's kept-alive connections close once idle: every slot is free.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut sockets = Vec::new();
    for i in 0..cap {
        let mut tcp = connect(&mesh).await?;
        tcp.write_all(
            b"GET /v1/control HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade\r\n\
              Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await?;
        let mut answer = Vec::new();
        while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await??;
            assert!(n > 0, "socket {i} closed before the upgrade");
            answer.extend_from_slice(&buf[..n]);
        }
        let answer = String::from_utf8_lossy(&answer).to_string();
        assert!(answer.starts_with("HTTP/1.1 101"), "socket {i}: {answer}");
        sockets.push(tcp);
    }
    // Every slot is a WebSocket's: one more connection is closed unanswered.
    let mut extra = connect(&mesh).await?;
    extra.write_all(HEALTH).await?;
    let (sent, _) = read_to_close(&mut extra, Duration::from_secs(2))
        .await?
        .ok_or("a connection beyond the cap stayed open")?;
    assert!(
        sent.is_empty(),
        "a connection beyond the cap was served while {cap} WebSockets were open: {}",
        String::from_utf8_lossy(&sent)
    );
    // A WebSocket closes: its slot serves a new connection.
    drop(sockets.pop());
    let served = health_served(&mesh).await?;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    drop(sockets);
    mesh.stop().await
}
