//! Serving and calling gRPC the same way everywhere: tonic-health, reflection, timeout and
//! load-shed layers, ordered graceful shutdown; lazy client channels.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::{Channel, Server};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

use crate::shutdown::Shutdown;

/// How long in-flight work may take to finish after a stop signal.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(25);
const MAX_CONCURRENT_CALLS_PER_CONNECTION: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Connections the kernel completes and queues for a listener before it accepts them (capped
/// by `net.core.somaxconn`, 4096 on current kernels). tokio's `TcpListener::bind` asks for
/// 1024: 2,000 clients connecting at once overflowed it, and each dropped SYN costs its client
/// a one-second retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener on `addr` (`host:port`, every address it resolves to tried in turn) with
/// [`LISTEN_BACKLOG`]. Every service's ports are bound here.
pub async fn bind(addr: &str) -> Result<TcpListener, ServeError> {
    let failed = |source| ServeError::Bind {
        addr: addr.to_string(),
        source,
    };
    let mut last = None;
    for resolved in tokio::net::lookup_host(addr).await.map_err(failed)? {
        match listen_on(resolved) {
            Ok(listener) => return Ok(listener),
            Err(err) => last = Some(err),
        }
    }
    Err(failed(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    })))
}

fn listen_on(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As tokio's own bind: a restarted service gets its port back at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What one client may hold on a gRPC port (ADR 0250). tonic bounds none of it: a connection
/// that sends nothing stays open for good (hyper's HTTP/1.1 header timer starts only once the
/// protocol is known, and HTTP/2 has no timer before its handshake ends), and so does one whose
/// peer stopped answering; enough of them leave the process without descriptors for its own
/// connections. The gateway's public gRPC port faces the internet.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// A connection from which nothing was read for this long is closed. A healthy HTTP/2 peer
    /// is never that quiet: it answers the keep-alive pings.
    pub idle_timeout: Duration,
    /// The server pings every HTTP/2 connection this often, busy or idle…
    pub keepalive_interval: Duration,
    /// …and closes one whose peer has not answered within this.
    pub keepalive_timeout: Duration,
    /// Connections at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            idle_timeout: Duration::from_secs(75),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_connections: 10_000,
        }
    }
}

/// An accepted connection on a gRPC port: it holds one of the port's slots until it is dropped,
/// and fails its reads once nothing was read from it for the idle timeout.
pub struct LimitedConnection {
    tcp: tokio::net::TcpStream,
    _slot: tokio::sync::OwnedSemaphorePermit,
    idle_timeout: Duration,
    /// Fires at the idle timeout from `last_read` or earlier: moved forward only when it fires,
    /// so a read costs a clock read, not a timer update.
    idle: std::pin::Pin<Box<tokio::time::Sleep>>,
    last_read: tokio::time::Instant,
}

impl tokio::io::AsyncRead for LimitedConnection {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        use std::task::Poll;
        let this = self.get_mut();
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.last_read = tokio::time::Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => loop {
                if this.idle.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let due = this.last_read + this.idle_timeout;
                if due <= tokio::time::Instant::now() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "nothing read from the connection for the idle timeout",
                    )));
                }
                // Something was read since it was set: wait for the rest of the timeout.
                this.idle.as_mut().reset(due);
            },
            other => other,
        }
    }
}

impl tokio::io::AsyncWrite for LimitedConnection {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for LimitedConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::Connected::connect_info(&self.tcp)
    }
}

/// A listening port's connection slots (ADR 0237, ADR 0250): every connection holds one until
/// it is dropped, so the port never holds more than its limit of the process's descriptors.
pub struct ConnectionSlots {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    max: usize,
    /// What the port serves, for its log lines (`HTTP`, `gRPC`).
    what: &'static str,
    /// One warning per episode of saturation, not one per refused connection.
    saturated: bool,
}

impl ConnectionSlots {
    pub fn new(max: usize, what: &'static str) -> Self {
        ConnectionSlots {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(max.max(1))),
            max,
            what,
            saturated: false,
        }
    }

    /// The next connection `listener` accepts while a slot is free, with its slot and
    /// TCP_NODELAY set (small streamed frames must leave at once: Nagle + delayed ACK add
    /// ~40 ms). One past the limit is closed as soon as it is accepted; an accept error (out of
    /// descriptors, a connection reset before it was accepted) is waited out, not spun on.
    /// Cancel-safe.
    pub async fn accept(
        &mut self,
        listener: &TcpListener,
    ) -> (tokio::net::TcpStream, tokio::sync::OwnedSemaphorePermit) {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    tracing::warn!(%err, what = self.what, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                if !std::mem::replace(&mut self.saturated, true) {
                    tracing::warn!(
                        max = self.max,
                        what = self.what,
                        "connections at their limit: new ones are closed"
                    );
                }
                drop(tcp);
                continue;
            };
            self.saturated = false;
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(%err, "cannot set TCP_NODELAY");
            }
            return (tcp, slot);
        }
    }
}

/// The connections `listener` accepts, within `limits` (see [`ConnectionSlots::accept`]).
fn limited_incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl futures::Stream<Item = Result<LimitedConnection, std::io::Error>> {
    let slots = ConnectionSlots::new(limits.max_connections, "gRPC");
    futures::stream::unfold((listener, slots), move |(listener, mut slots)| async move {
        let (tcp, slot) = slots.accept(&listener).await;
        let connection = LimitedConnection {
            tcp,
            _slot: slot,
            idle_timeout: limits.idle_timeout,
            idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            last_read: tokio::time::Instant::now(),
        };
        Some((Ok(connection), (listener, slots)))
    })
}

/// A tonic server builder with the standard layers, plus the health and reflection services
/// and `GET /metrics` (Prometheus text, over HTTP/1.1 on the same port).
pub struct GrpcServer {
    pub health: HealthReporter,
    server: Server<Stack<crate::metrics::GrpcMetricsLayer, Identity>>,
    /// The name the layer's spans carry (`pa.service`).
    service: std::sync::Arc<std::sync::OnceLock<&'static str>>,
    routes: Routes,
    service_names: Vec<&'static str>,
    metrics: bool,
    readiness: Option<crate::readiness::Readiness>,
    limits: ConnectionLimits,
}

impl GrpcServer {
    /// `request_timeout` bounds unary calls; streaming services wrap long streams themselves.
    pub fn new(request_timeout: Duration) -> Result<Self, ServeError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pa_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        // Timeout bounds each call; past the per-connection concurrency limit, calls are shed
        // with UNAVAILABLE instead of queueing without bound.
        // HTTP/1.1 is accepted for Prometheus' scrape of /metrics; gRPC clients speak HTTP/2.
        let layer = crate::metrics::GrpcMetricsLayer::default();
        let service = layer.service.clone();
        let server = Server::builder()
            .timeout(request_timeout)
            .concurrency_limit_per_connection(MAX_CONCURRENT_CALLS_PER_CONNECTION)
            .load_shed(true)
            .tcp_nodelay(true)
            .accept_http1(true)
            .layer(layer);
        let routes = Routes::new(health_service).add_service(reflection);
        Ok(Self {
            health,
            server,
            service,
            routes,
            service_names: Vec::new(),
            metrics: true,
            readiness: None,
            limits: ConnectionLimits::default(),
        })
    }

    /// What one client may hold on the port (the defaults suit every port; tests shrink them).
    pub fn connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The service's name on its spans (`pa.service`), e.g. `svc-runs`.
    pub fn named(self, service: &'static str) -> Self {
        let _ = self.service.set(service);
        self
    }

    /// Whether `GET /metrics` answers (`PA_METRICS`, see [`crate::config::CommonConfig`]).
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// The health status follows the service's stores: NOT_SERVING while one is down (see
    /// [`crate::readiness`]). Without it, the service serves from start to shutdown.
    pub fn readiness(mut self, readiness: crate::readiness::Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME);
        self.routes = self.routes.add_service(service);
        self
    }

    /// Serves until `shutdown` fires, then: NOT_SERVING, stop accepting, drain, exit.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> Result<(), ServeError> {
        let Self {
            health,
            server,
            service: _,
            mut routes,
            service_names,
            metrics,
            readiness,
            limits,
        } = self;
        let router = routes.axum_router_mut();
        let handler = if metrics {
            axum::routing::get(crate::metrics::serve)
        } else {
            axum::routing::get(crate::metrics::disabled)
        };
        *router = std::mem::take(router).route("/metrics", handler);
        for name in &service_names {
            health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        health.set_service_status("", ServingStatus::Serving).await;
        if let Some(mut readiness) = readiness {
            let health = health.clone();
            let names = service_names.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut now = readiness.current();
                loop {
                    // Shutdown's NOT_SERVING is final.
                    if shutdown.is_triggered() {
                        return;
                    }
                    let status = if now.ready() {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    for name in names.iter().copied().chain([""]) {
                        health.set_service_status(name, status).await;
                    }
                    if shutdown.is_triggered() {
                        // It fired while we wrote: its NOT_SERVING must be the last word.
                        for name in names.iter().copied().chain([""]) {
                            health
                                .set_service_status(name, ServingStatus::NotServing)
                                .await;
                        }
                        return;
                    }
                    tokio::select! {
                        _ = shutdown.triggered() => return,
                        next = readiness.changed() => match next {
                            Some(next) => now = next,
                            None => return,
                        },
                    }
                }
            });
        }
        let addr = listener.local_addr().ok();
        tracing::info!(?addr, services = ?service_names, "gRPC serving");
        let incoming = limited_incoming(listener, limits);
        let mut server = server
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout));
        let stop = {
            let shutdown = shutdown.clone();
            let health = health.clone();
            async move {
                shutdown.triggered().await;
                for name in &service_names {
                    health
                        .set_service_status(*name, ServingStatus::NotServing)
                        .await;
                }
                health
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
                let left = shutdown.drain(DRAIN_DEADLINE).await;
                tracing::info!(left, "drained; closing gRPC server");
            }
        };
        server
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, stop)
            .await?;
        Ok(())
    }
}

/// A lazily connecting client channel: services start in any order. `urls` is one URL or a
/// comma-separated list of a service's replicas, balanced (see [`crate::endpoints`]).
pub fn channel(urls: &str) -> Result<Channel, tonic::transport::Error> {
    crate::endpoints::channel(urls)
}

/// Asks a service's tonic-health endpoint whether it serves.
pub async fn is_serving(channel: Channel) -> bool {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), client.check(request)).await,
        Ok(Ok(response)) if response.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1,500 clients connecting at once to a listener that has not accepted yet (a service busy
    /// starting, a burst of reconnects) all get their connection: the kernel queues them, rather
    /// than dropping SYNs past tokio's default backlog of 1024 (each drop costs its client a
    /// one-second retransmit).
    #[tokio::test]
    async fn a_listener_queues_a_burst_of_connections_before_it_accepts() {
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(LISTEN_BACKLOG);
        let burst = 1500;
        assert!(
            somaxconn > burst,
            "net.core.somaxconn is {somaxconn}: this machine cannot queue {burst} connections"
        );
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = (0..burst).map(|_| {
            tokio::time::timeout(
                Duration::from_millis(800),
                tokio::net::TcpStream::connect(addr),
            )
        });
        let results = futures::future::join_all(connects).await;
        let connected = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(
            connected, burst as usize,
            "connections queued before accept"
        );
        // The listener really is the one they reached.
        drop(results);
        let (_, peer) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .unwrap()
            .unwrap();
        assert!(peer.ip().is_loopback());
    }

    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A server on a free port with `limits` (health only): its address and health reporter.
    async fn limited_server(
        limits: ConnectionLimits,
    ) -> (std::net::SocketAddr, HealthReporter, crate::Shutdown) {
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = GrpcServer::new(Duration::from_secs(5))
            .unwrap()
            .connection_limits(limits);
        let health = server.health.clone();
        let shutdown = crate::Shutdown::new();
        tokio::spawn(server.serve(listener, shutdown.clone()));
        (addr, health, shutdown)
    }

    /// When the server closed `tcp` (EOF or reset), reading for up to `within`; `None` if open.
    async fn closed_within(tcp: &mut TcpStream, within: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut buf = [0u8; 1024];
            match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// A connection that sends nothing, one that stops after HTTP/2's preface, and an HTTP/1.1
    /// request whose headers never finish are closed once nothing came for the idle timeout,
    /// not before. Before ADR 0250 the first two were held for good.
    #[tokio::test]
    async fn silent_and_unfinished_connections_are_closed_after_the_idle_timeout() {
        let idle = Duration::from_millis(600);
        let (addr, _health, _shutdown) = limited_server(ConnectionLimits {
            idle_timeout: idle,
            ..ConnectionLimits::default()
        })
        .await;
        let opened = Instant::now();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut preface = TcpStream::connect(addr).await.unwrap();
        preface
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut headers = TcpStream::connect(addr).await.unwrap();
        headers
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        for (name, tcp) in [
            ("silent", &mut silent),
            ("preface only", &mut preface),
            ("unfinished headers", &mut headers),
        ] {
            let closed = closed_within(tcp, Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("{name}: still open after 10 s"));
            assert!(
                closed - opened >= idle - Duration::from_millis(100),
                "{name}: closed too early"
            );
        }
    }

    /// A live client's stream that carries nothing for several idle timeouts stays open: the
    /// server's keep-alive pings are answered, and an answer is something read.
    #[tokio::test]
    async fn a_quiet_stream_of_a_live_client_outlasts_the_idle_timeout() {
        use tonic_health::pb::health_check_response::ServingStatus as Status;
        let idle = Duration::from_millis(400);
        let (addr, health, _shutdown) = limited_server(ConnectionLimits {
            idle_timeout: idle,
            keepalive_interval: Duration::from_millis(100),
            keepalive_timeout: Duration::from_secs(2),
            ..ConnectionLimits::default()
        })
        .await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let request = tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        };
        let mut watch = client.watch(request).await.unwrap().into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.status, Status::Serving as i32);
        tokio::time::sleep(idle * 4).await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("the stream delivers the change")
            .expect("the stream is still open")
            .expect("a message");
        assert_eq!(next.status, Status::NotServing as i32);
    }

    /// Past `max_connections`, a new connection is closed at once while the others stay; once
    /// one goes, a client is served again.
    #[tokio::test]
    async fn past_the_connection_limit_a_new_connection_is_closed_and_a_freed_slot_serves() {
        let (addr, _health, _shutdown) = limited_server(ConnectionLimits {
            max_connections: 2,
            ..ConnectionLimits::default()
        })
        .await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_within(&mut third, Duration::from_secs(2))
                .await
                .is_some(),
            "the connection past the limit is closed"
        );
        assert!(
            closed_within(&mut first, Duration::from_millis(200))
                .await
                .is_none()
        );
        assert!(
            closed_within(&mut second, Duration::from_millis(200))
                .await
                .is_none()
        );
        drop(first);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_lazy();
            if is_serving(channel).await {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a freed slot serves a client"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An address that resolves to nothing, or a port taken, is a clear error naming it.
    #[tokio::test]
    async fn a_port_taken_is_an_error_naming_the_address() {
        let taken = bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = bind(&addr).await.unwrap_err().to_string();
        assert!(err.contains(&addr), "{err}");
        assert!(bind("no-such-host.invalid:80").await.is_err());
    }
}
