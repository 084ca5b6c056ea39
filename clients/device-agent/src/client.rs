//! The device's side of the gateway: enrollment (one HTTP call) and the connection loop (one
//! outbound WebSocket, authenticated by the device token, reconnecting with exponential backoff
//! and jitter, serving tool calls concurrently).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::config::DeviceConfig;
use crate::protocol::{
    self, CONNECT_PATH, DEAD_AFTER, DeviceFrame, ENROLL_PATH, EnrollRequest, EnrollResponse,
    GatewayFrame, PING_INTERVAL,
};
use crate::tools::Device;

/// Calls served at once; more wait their turn.
const MAX_CONCURRENT_CALLS: usize = 16;
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that lasted this long was a good one: the next reconnect starts fast again.
const STABLE_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the gateway URL {0:?} is not http(s)://…")]
    BadGatewayUrl(String),
    #[error("the gateway refused the device token ({0}): enroll the device again")]
    Unauthorized(u16),
    #[error("enrollment refused ({status}): {message}")]
    EnrollRefused { status: u16, message: String },
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("WebSocket: {0}")]
    Ws(#[from] Box<tungstenite::Error>),
    #[error("the gateway closed the connection")]
    Closed,
    #[error("no frame from the gateway for {0:?}")]
    Silent(Duration),
    #[error("{0}")]
    Protocol(String),
}

impl From<tungstenite::Error> for ClientError {
    fn from(e: tungstenite::Error) -> Self {
        Self::Ws(Box::new(e))
    }
}

fn base(gateway: &str) -> Result<&str, ClientError> {
    let g = gateway.trim_end_matches('/');
    if g.starts_with("http://") || g.starts_with("https://") {
        Ok(g)
    } else {
        Err(ClientError::BadGatewayUrl(gateway.to_string()))
    }
}

/// `http(s)://host/prefix` → `ws(s)://host/prefix/v1/devices/connect`.
pub fn connect_url(gateway: &str) -> Result<String, ClientError> {
    let g = base(gateway)?;
    let ws = match g.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", g.trim_start_matches("http://")),
    };
    Ok(format!("{ws}{CONNECT_PATH}"))
}

/// Trades a one-time enrollment code for the device's id and token.
pub async fn enroll(gateway: &str, code: &str, name: &str) -> Result<EnrollResponse, ClientError> {
    let url = format!("{}{ENROLL_PATH}", base(gateway)?);
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?
        .post(url)
        .json(&EnrollRequest {
            code: code.trim().to_string(),
            name: name.to_string(),
            kind: "device_agent".into(),
            platform: protocol::platform(),
        })
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["detail"]
            .as_str()
            .or(body["title"].as_str())
            .unwrap_or("no reason given")
            .to_string();
        return Err(ClientError::EnrollRefused {
            status: status.as_u16(),
            message,
        });
    }
    Ok(response.json().await?)
}

/// The delay before reconnect attempt `attempt` (0-based): exponential from 0.5 s up to 30 s,
/// with "equal jitter" (half fixed, half random) so a gateway restart does not get every
/// device back at the same instant.
pub fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_START
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(BACKOFF_MAX);
    let half = exp / 2;
    let random = getrandom::u64().unwrap_or(0);
    let jitter = half.mul_f64((random >> 11) as f64 / (1u64 << 53) as f64);
    half + jitter
}

/// Keeps the device connected until `stop` resolves. Returns an error only when reconnecting
/// cannot help (the token is refused).
pub async fn run(
    config: &DeviceConfig,
    device: Device,
    stop: impl Future<Output = ()>,
) -> Result<(), ClientError> {
    // Both of rustls' providers may be compiled in (workspace feature unification): say which.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let url = connect_url(&config.gateway_url)?;
    let device = Arc::new(device);
    let forever = async {
        let mut attempt = 0u32;
        loop {
            match connect(&url, &config.device_token).await {
                Ok(ws) => {
                    tracing::info!(url = %url, "connected to the gateway");
                    let since = tokio::time::Instant::now();
                    match serve(ws, device.clone()).await {
                        Ok(()) => tracing::info!("connection closed"),
                        Err(e) => tracing::warn!(error = %e, "connection lost"),
                    }
                    // A connection that lasted starts the backoff over; one the gateway drops
                    // at once (it refused our hello) keeps backing off.
                    if since.elapsed() >= STABLE_AFTER {
                        attempt = 0;
                    }
                }
                Err(e @ ClientError::Unauthorized(_)) => return Err(e),
                Err(e) => tracing::warn!(error = %e, "cannot connect to the gateway"),
            }
            let delay = backoff(attempt);
            attempt = attempt.saturating_add(1);
            tracing::info!(?delay, "reconnecting");
            tokio::time::sleep(delay).await;
        }
    };
    tokio::select! {
        r = forever => r,
        () = stop => {
            if let Some(pty) = &device.pty {
                pty.kill_all();
            }
            Ok(())
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, token: &str) -> Result<Ws, ClientError> {
    let mut request = url.into_client_request()?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ClientError::Protocol("the device token is not a valid header".into()))?;
    request.headers_mut().insert(header::AUTHORIZATION, bearer);
    match tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::connect_async(request),
    )
    .await
    {
        Err(_) => Err(ClientError::Silent(Duration::from_secs(20))),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(response)))
            if matches!(response.status().as_u16(), 401 | 403) =>
        {
            Err(ClientError::Unauthorized(response.status().as_u16()))
        }
        Ok(Err(e)) => Err(e.into()),
    }
}

/// Serves one connection until it ends. In-flight calls are aborted when it does (their
/// results could not be delivered; the gateway fails them on its side).
async fn serve(ws: Ws, device: Arc<Device>) -> Result<(), ClientError> {
    let (mut sink, mut stream) = ws.split();
    let hello = DeviceFrame::Hello {
        agent_version: crate::VERSION.into(),
        platform: protocol::platform(),
        read_only: device.jail.read_only(),
        tools: device.tools(),
    };
    sink.send(text(&hello)?).await?;
    let (tx, mut rx) = mpsc::channel::<(String, DeviceFrame)>(64);
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_CALLS));
    let mut calls = Calls::default();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            frame = stream.next() => {
                last_heard = tokio::time::Instant::now();
                match frame {
                    None | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Message::Text(body))) => match GatewayFrame::parse(&body) {
                        Ok(GatewayFrame::Welcome { device_id, name }) => {
                            tracing::info!(%device_id, %name, "the gateway knows us");
                        }
                        Ok(GatewayFrame::Call { id, tool, arguments, .. }) => {
                            let (device, tx, permits, call_id) =
                                (device.clone(), tx.clone(), permits.clone(), id.clone());
                            calls.0.retain(|_, h| !h.is_finished());
                            calls.0.insert(id, tokio::spawn(async move {
                                let _permit = permits.acquire_owned().await;
                                tracing::debug!(id = %call_id, %tool, "call");
                                let outcome = device.call(&tool, &arguments).await;
                                let message = DeviceFrame::Result {
                                    id: call_id.clone(),
                                    content: outcome.content,
                                    is_error: outcome.is_error,
                                };
                                let _ = tx.send((call_id, message)).await;
                            }));
                        }
                        Ok(GatewayFrame::Cancel { id }) => {
                            if let Some(call) = calls.0.remove(&id) {
                                call.abort();
                            }
                        }
                        Ok(GatewayFrame::Error { message }) => {
                            tracing::warn!(%message, "the gateway refused us");
                        }
                        Err(e) => tracing::warn!(error = %e, "unknown message from the gateway"),
                    },
                    Some(Ok(_)) => {}
                }
            }
            Some((id, message)) = rx.recv() => {
                calls.0.remove(&id);
                sink.send(text(&message)?).await?;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > DEAD_AFTER {
                    return Err(ClientError::Silent(DEAD_AFTER));
                }
                sink.send(Message::Ping(Default::default())).await?;
            }
        }
    }
}

/// The connection's running calls, aborted when it goes.
#[derive(Default)]
struct Calls(HashMap<String, JoinHandle<()>>);

impl Drop for Calls {
    fn drop(&mut self) {
        for (_, call) in self.0.drain() {
            call.abort();
        }
    }
}

fn text(message: &DeviceFrame) -> Result<Message, ClientError> {
    serde_json::to_string(message)
        .map(|s| Message::Text(s.into()))
        .map_err(|e| ClientError::Protocol(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            connect_url("http://127.0.0.1:8080/").unwrap(),
            "ws://127.0.0.1:8080/v1/devices/connect"
        );
        assert_eq!(
            connect_url("https://pa.example.com/base").unwrap(),
            "wss://pa.example.com/base/v1/devices/connect"
        );
        assert!(connect_url("ftp://x").is_err());
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        for attempt in 0..40 {
            let d = backoff(attempt);
            let exp = BACKOFF_START
                .saturating_mul(2u32.saturating_pow(attempt.min(16)))
                .min(BACKOFF_MAX);
            assert!(d >= exp / 2 && d <= exp, "{attempt}: {d:?}");
        }
        assert!(backoff(30) >= BACKOFF_MAX / 2);
        let spread: std::collections::HashSet<_> = (0..20).map(|_| backoff(5)).collect();
        assert!(spread.len() > 1, "no jitter");
    }
}
