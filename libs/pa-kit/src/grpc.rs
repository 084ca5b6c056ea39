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
        })
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
            mut server,
            service: _,
            mut routes,
            service_names,
            metrics,
            readiness,
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
        // Our own listener bypasses tonic's socket options: set TCP_NODELAY here, or each small
        // streamed message can wait ~40 ms on Nagle + delayed ACK.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
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
