//! HTTP helpers: a JSON call, a page to load, a proxy that answers slowly.

use std::time::Duration;

use serde_json::Value;

use crate::BoxError;

/// Sends `request`; its status and JSON body (`null` when the body is not JSON).
pub async fn json_answer(request: reqwest::RequestBuilder) -> Result<(u16, Value), BoxError> {
    let r = request.send().await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Serves `html` at `http://127.0.0.1:<port>/page` until the test ends: a page with an
/// instruction planted in it, as a hostile site would serve.
pub async fn serve_page(html: &'static str) -> Result<std::net::SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/page",
        axum::routing::get(move || async move {
            ([(axum::http::header::CONTENT_TYPE, "text/html")], html)
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// The content of the TOOL_CALL_RESULT of tool call `call_id` among `events` ("" if none).
/// A TCP proxy to `upstream` (host:port) that holds every piece of the answers for `delay`
/// before passing it on: a slow dependency. Returns its `http://` URL.
pub async fn slow_answers_proxy(upstream: String, delay: Duration) -> Result<String, BoxError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let asks = tokio::io::copy(&mut client_read, &mut server_write);
                let answers = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                        tokio::time::sleep(delay).await;
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let _ = tokio::join!(asks, answers);
            });
        }
    });
    Ok(url)
}

/// A TCP proxy to `upstream` (host:port) whose connections a test can cut, as the death of the
/// process behind it would (every open connection reset at once); while it is `down`, new
/// connections are refused too (dropped on accept), until [`CutProxy::up`]. It can also
/// [`CutProxy::stall`]: bytes stop flowing, nothing is reset (a partition, or a frozen peer).
#[derive(Clone)]
pub struct CutProxy {
    pub addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stalled: tokio::sync::watch::Sender<bool>,
    tripwire: Tripwire,
}

/// What [`CutProxy::stall_on`] waits for in what clients send, and whether it came.
#[derive(Clone, Default)]
struct Tripwire {
    pattern: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    tripped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Tripwire {
    /// Whether `bytes` trip the wire (which is then disarmed).
    fn trips(&self, bytes: &[u8]) -> bool {
        let mut pattern = self.pattern.lock().unwrap_or_else(|e| e.into_inner());
        let hit = pattern
            .as_deref()
            .is_some_and(|p| p.is_empty() || bytes.windows(p.len()).any(|w| w == p));
        if hit {
            *pattern = None;
            self.tripped
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        hit
    }
}

/// Copies `from` to `to`, holding what it reads while `stalled` says so; bytes that trip
/// `tripwire` stall the proxy before they go through.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stall: tokio::sync::watch::Sender<bool>,
    tripwire: Option<Tripwire>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stalled = stall.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if tripwire.as_ref().is_some_and(|t| t.trips(&buf[..n])) {
            stall.send_replace(true);
        }
        if stalled.wait_for(|stalled| !*stalled).await.is_err()
            || to.write_all(&buf[..n]).await.is_err()
        {
            return;
        }
    }
}

impl CutProxy {
    pub async fn start(upstream: String) -> Result<CutProxy, BoxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stalled, _) = tokio::sync::watch::channel(false);
        let tripwire = Tripwire::default();
        let proxy = CutProxy {
            addr,
            cut: cut.clone(),
            down: down.clone(),
            stalled: stalled.clone(),
            tripwire: tripwire.clone(),
        };
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if down.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cuts = cut.subscribe();
                let stalled = stalled.clone();
                let tripwire = tripwire.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let asks = pump(client_read, server_write, stalled.clone(), Some(tripwire));
                    let answers = pump(server_read, client_write, stalled, None);
                    // Either side closing (or a cut) ends the connection on both.
                    tokio::select! {
                        _ = asks => {}
                        _ = answers => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Ok(proxy)
    }

    /// The proxy's `http://` URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resets every open connection and refuses new ones.
    pub fn down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Resets every open connection; new ones go through (a process killed and restarted).
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn up(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Holds every byte either side sends (on open and new connections) until [`CutProxy::flow`].
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Lets held and new bytes through again.
    pub fn flow(&self) {
        self.stalled.send_replace(false);
    }

    /// Arms a tripwire: the first bytes a client sends that contain `pattern` (e.g. a Redis
    /// key) [`CutProxy::stall`] the proxy, held with everything after them: the peer is
    /// stopped exactly at that request. Disarmed once tripped.
    pub fn stall_on(&self, pattern: &[u8]) {
        self.tripwire
            .tripped
            .store(false, std::sync::atomic::Ordering::SeqCst);
        *self
            .tripwire
            .pattern
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(pattern.to_vec());
    }

    /// Whether the tripwire armed last has been tripped.
    pub fn tripped(&self) -> bool {
        self.tripwire
            .tripped
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `url` (a Postgres URL) with its host and port replaced by `addr`.
pub fn with_host_port(url: &str, addr: std::net::SocketAddr) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let userinfo = authority
        .rfind('@')
        .map(|i| &authority[..=i])
        .unwrap_or_default();
    format!(
        "{}{userinfo}{addr}{}",
        &url[..scheme_end],
        &rest[authority_end..]
    )
}
