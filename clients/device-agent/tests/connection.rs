//! The device against a stand-in gateway (a real WebSocket server): it authenticates with its
//! token, announces its tools, serves calls from the jail and the PTY, reconnects after the
//! connection drops, and stops for good when its token is refused. And `pa-device enroll`
//! stores what the gateway returned, readable by its owner only.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::result_large_err)] // tungstenite's handshake callback type

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pa_device::client::{self, ClientError};
use pa_device::config::DeviceConfig;
use pa_device::protocol::{DeviceFrame, GatewayFrame};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

const TOKEN: &str = "dev-token-abc";

fn temp_root(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pa-conn-{tag}-{}-{}",
        std::process::id(),
        getrandom::u64().unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Accepts one WebSocket whose bearer token is `accept_token` (else answers 401).
async fn accept(listener: &TcpListener, accept_token: &str) -> Option<WebSocketStream<TcpStream>> {
    let (stream, _) = listener.accept().await.unwrap();
    let expected = format!("Bearer {accept_token}");
    let check = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        assert_eq!(req.uri().path(), "/v1/devices/connect");
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if given == Some(expected.as_str()) {
            Ok(resp)
        } else {
            let mut refused = ErrorResponse::new(Some("bad token".into()));
            *refused.status_mut() = StatusCode::UNAUTHORIZED;
            Err(refused)
        }
    };
    tokio_tungstenite::accept_hdr_async(stream, check)
        .await
        .ok()
}

async fn next_message(ws: &mut WebSocketStream<TcpStream>) -> DeviceFrame {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("the device went silent")
            .expect("the device closed")
            .unwrap();
        if let Message::Text(body) = frame {
            return serde_json::from_str(&body).unwrap();
        }
    }
}

async fn call(
    ws: &mut WebSocketStream<TcpStream>,
    id: &str,
    tool: &str,
    arguments: serde_json::Value,
) -> (String, bool) {
    let message = GatewayFrame::Call {
        id: id.into(),
        tool: tool.into(),
        arguments,
        run_id: String::new(),
    };
    ws.send(Message::Text(
        serde_json::to_string(&message).unwrap().into(),
    ))
    .await
    .unwrap();
    match next_message(ws).await {
        DeviceFrame::Result {
            id: got,
            content,
            is_error,
        } => {
            assert_eq!(got, id);
            (content, is_error)
        }
        other => panic!("expected a result, got {other:?}"),
    }
}

#[tokio::test]
async fn serves_calls_reconnects_and_stops_when_refused() {
    let root = temp_root("serve");
    std::fs::write(root.join("hello.txt"), "text in the jail").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = DeviceConfig {
        gateway_url: format!("http://{}", listener.local_addr().unwrap()),
        device_id: "dev-1".into(),
        device_token: TOKEN.into(),
        name: "test".into(),
        root: root.clone(),
        read_only: false,
        pty: true,
    };
    let device = pa_device::device_from(&config).unwrap();
    let agent =
        tokio::spawn(async move { client::run(&config, device, std::future::pending()).await });

    let mut ws = accept(&listener, TOKEN).await.unwrap();
    let DeviceFrame::Hello {
        tools, read_only, ..
    } = next_message(&mut ws).await
    else {
        panic!("no hello first");
    };
    assert!(!read_only);
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    for want in [
        "fs_list",
        "fs_read",
        "fs_write",
        "fs_search",
        "pty_exec",
        "pty_start",
        "pty_kill",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
    let welcome = GatewayFrame::Welcome {
        device_id: "dev-1".into(),
        name: "test".into(),
    };
    ws.send(Message::Text(
        serde_json::to_string(&welcome).unwrap().into(),
    ))
    .await
    .unwrap();

    let (listing, is_error) = call(&mut ws, "c1", "fs_list", json!({})).await;
    assert!(!is_error && listing.contains("hello.txt"), "{listing}");
    let (text, is_error) = call(&mut ws, "c2", "fs_read", json!({"path": "hello.txt"})).await;
    assert_eq!((text.as_str(), is_error), ("text in the jail", false));
    let (refused, is_error) =
        call(&mut ws, "c3", "fs_read", json!({"path": "../etc/passwd"})).await;
    assert!(is_error && refused.contains("refused"), "{refused}");
    let (out, is_error) = call(&mut ws, "c4", "pty_exec", json!({"command": "echo hello"})).await;
    assert!(!is_error && out.contains("hello"), "{out}");
    let (_, is_error) = call(&mut ws, "c5", "no_such_tool", json!({})).await;
    assert!(is_error);

    // Calls run concurrently: a slow one does not hold up a quick one. The slow one waits for
    // a file the test writes only once the quick answer is in (a signal, not a race).
    let gate = root.join("slow.gate");
    let slow = GatewayFrame::Call {
        id: "slow".into(),
        tool: "pty_exec".into(),
        arguments: json!({
            "command": format!("until [ -e '{}' ]; do sleep 0.05; done; echo slow", gate.display())
        }),
        run_id: String::new(),
    };
    ws.send(Message::Text(serde_json::to_string(&slow).unwrap().into()))
        .await
        .unwrap();
    let (text, _) = call(&mut ws, "quick", "fs_read", json!({"path": "hello.txt"})).await;
    assert_eq!(text, "text in the jail");
    std::fs::write(&gate, "").unwrap();
    match next_message(&mut ws).await {
        DeviceFrame::Result { id, content, .. } => {
            assert!(id == "slow" && content.contains("slow"))
        }
        other => panic!("{other:?}"),
    }

    // A cancelled call stops (its command is killed) and the device goes on serving.
    let marker = format!("sleep 30.{}", std::process::id());
    let long = GatewayFrame::Call {
        id: "long".into(),
        tool: "pty_exec".into(),
        arguments: json!({ "command": marker }),
        run_id: String::new(),
    };
    ws.send(Message::Text(serde_json::to_string(&long).unwrap().into()))
        .await
        .unwrap();
    let running = || {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&ps.stdout).contains(&marker)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !running() {
        assert!(std::time::Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancel = GatewayFrame::Cancel { id: "long".into() };
    ws.send(Message::Text(
        serde_json::to_string(&cancel).unwrap().into(),
    ))
    .await
    .unwrap();
    let (text, _) = call(&mut ws, "after", "fs_read", json!({"path": "hello.txt"})).await;
    assert_eq!(text, "text in the jail");
    let (out, is_error) = call(
        &mut ws,
        "after2",
        "pty_exec",
        json!({"command": "echo after"}),
    )
    .await;
    assert!(!is_error && out.contains("after"), "{out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the cancelled command still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The gateway goes away: the device comes back (with backoff) and says hello again.
    drop(ws);
    let mut ws = tokio::time::timeout(Duration::from_secs(20), accept(&listener, TOKEN))
        .await
        .expect("no reconnect")
        .unwrap();
    assert!(matches!(
        next_message(&mut ws).await,
        DeviceFrame::Hello { .. }
    ));
    drop(ws);

    // The token is revoked: the device stops instead of hammering the gateway.
    loop {
        if accept(&listener, "another-token").await.is_none() {
            break;
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .expect("still running")
        .unwrap();
    assert!(
        matches!(ended, Err(ClientError::Unauthorized(401))),
        "{ended:?}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// One HTTP/1.1 request, one JSON answer.
async fn answer_once(
    listener: TcpListener,
    status: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let body_in = loop {
        let n = stream.read(&mut buf).await.unwrap();
        request.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&request).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            assert!(head.starts_with("POST /v1/devices/enroll "), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if rest.len() >= len {
                break serde_json::from_str(&rest[..len]).unwrap();
            }
        }
    };
    let body = body.to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await.unwrap();
    body_in
}

#[tokio::test]
async fn enroll_command_stores_a_private_config() {
    let dir = temp_root("enroll");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(answer_once(
        listener,
        "200 OK",
        json!({"device_id": "dev-42", "device_token": "tok-secret", "name": "box"}),
    ));
    let config_path = dir.join("conf/device.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pa-device"))
        .args([
            "enroll",
            "CODE-1234",
            "--gateway",
            &gateway,
            "--name",
            "box",
            "--read-only",
        ])
        .arg("--root")
        .arg(dir.join("shared"))
        .arg("--config")
        .arg(&config_path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = server.await.unwrap();
    assert_eq!(sent["code"], "CODE-1234");
    assert_eq!(sent["name"], "box");
    assert_eq!(sent["kind"], "device_agent");
    let stored = pa_device::config::load(&config_path).unwrap();
    assert_eq!(stored.device_id, "dev-42");
    assert_eq!(stored.device_token, "tok-secret");
    assert_eq!(stored.gateway_url, gateway);
    assert!(stored.read_only && stored.pty);
    assert_eq!(
        stored.root,
        std::fs::canonicalize(dir.join("shared")).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&config_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // A refused code: a clear message and a failing exit code, nothing stored.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(answer_once(
        listener,
        "400 Bad Request",
        json!({"title": "Bad Request", "detail": "the enrollment code is unknown or expired"}),
    ));
    let other = dir.join("other.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pa-device"))
        .args(["enroll", "WRONG", "--gateway", &gateway])
        .arg("--root")
        .arg(dir.join("shared"))
        .arg("--config")
        .arg(&other)
        .output()
        .await
        .unwrap();
    server.await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown or expired"));
    assert!(!other.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
