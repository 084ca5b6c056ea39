//! The gateway's public HTTP/1.1 server: axum's router on hyper, with the limits a port facing
//! the internet needs (ADR 0237). `axum::serve` sets none: a client that opens a connection and
//! sends nothing, or its headers a byte at a time, or keeps it idle, holds it (a task, buffers
//! and a file descriptor) for good, and enough of them leave the gateway without descriptors
//! for its own Redis and gRPC connections.
//! - A request's headers must arrive within `idle_timeout`, and a kept-alive connection is
//!   closed once idle that long (hyper's header-read timer runs from the end of the last
//!   exchange). A response being streamed (SSE) is not idle: the timer does not run meanwhile.
//!   A request's body must not pause longer than that between two pieces either: the
//!   handler reading it gets an error (a 4xx answer), and the connection closes.
//! - At most `max_connections` connections at once; one more is closed as soon as it is
//!   accepted, so the descriptors the gateway needs for itself stay free. A connection upgraded
//!   to a WebSocket keeps its slot until its socket closes.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use pa_kit::Shutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

/// The limits of the public HTTP port (`PA_HTTP_IDLE_TIMEOUT_MS`, `PA_HTTP_MAX_CONNECTIONS`).
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            idle_timeout: Duration::from_secs(75),
            max_connections: 10_000,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` fires, then closes idle connections, lets
/// requests in flight finish, and returns once every connection has ended.
pub async fn serve(listener: TcpListener, app: Router, limits: HttpLimits, shutdown: Shutdown) {
    // Readied once (every route turned into its service now, not per request); a connection
    // then clones an `Arc` (ADR 0236).
    let app = tower_http::timeout::RequestBodyTimeout::new(app.with_state(()), limits.idle_timeout);
    let mut slots = pa_kit::grpc::ConnectionSlots::new(limits.max_connections, "HTTP");
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, slot) = tokio::select! {
            accepted = slots.accept(&listener) => accepted,
            () = shutdown.triggered() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        let socket = SlottedSocket { tcp, _slot: slot };
        connections.spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.idle_timeout);
            let connection = http
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(err) = served {
                        tracing::debug!(%err, "HTTP connection ended");
                    }
                    return;
                }
                () = shutdown.triggered() => connection.as_mut().graceful_shutdown(),
            }
            if let Err(err) = connection.await {
                tracing::debug!(%err, "HTTP connection ended");
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// A connection's socket with its slot, freed when the socket closes: a WebSocket's socket
/// outlives hyper's connection (it is handed to the route's task on upgrade) and still counts.
struct SlottedSocket {
    tcp: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for SlottedSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SlottedSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
