//! Prometheus metrics: one process-wide registry, the metric families every service shares
//! (named here once, so dashboards and tests agree), a tower layer timing each gRPC call, an
//! axum middleware timing each HTTP request, and the `/metrics` text exposition.
//!
//! gRPC services answer `GET /metrics` on their gRPC port (the server accepts HTTP/1.1 for it);
//! the gateway on its HTTP port. `PA_METRICS=off` turns the endpoint off.

use std::pin::Pin;
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Latency buckets (seconds) from 1 ms to 2 min: RPCs and HTTP requests include streams.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Overhead and lag are expected to be small: finer at the low end.
const SMALL_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The registry `/metrics` exposes. Process-wide: when several services share a process (the
/// in-process test mesh) they share it too, and labels tell their series apart.
pub fn registry() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);
    &REGISTRY
}

fn register<T: prometheus::core::Collector + Clone + 'static>(metric: T) -> T {
    // Registration fails only for a duplicate name, which the statics below rule out.
    if let Err(err) = registry().register(Box::new(metric.clone())) {
        tracing::error!(%err, "cannot register a metric");
    }
    metric
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    match HistogramVec::new(opts, labels) {
        Ok(h) => register(h),
        // Only a malformed name or label could fail; they are constants.
        Err(err) => panic!("metric {name}: {err}"),
    }
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    match IntCounterVec::new(Opts::new(name, help), labels) {
        Ok(c) => register(c),
        Err(err) => panic!("metric {name}: {err}"),
    }
}

/// gRPC calls served, by service, method and status code; the `_count` is the request rate.
/// Streaming calls are timed to the end of the stream.
pub static GRPC_SERVER_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "pa_grpc_server_handling_seconds",
        "gRPC calls served: time from request to the end of the response (stream)",
        &["grpc_service", "grpc_method", "grpc_code"],
        LATENCY_BUCKETS,
    )
});

/// HTTP requests served by the gateway, by route template, method and status (time to the
/// response head; an SSE stream counts as answered when it starts).
pub static HTTP_SERVER_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "pa_http_server_request_seconds",
        "HTTP requests served: time to the response head",
        &["method", "route", "status"],
        LATENCY_BUCKETS,
    )
});

/// Runs launched, by mode (inline, durable).
pub static RUNS_STARTED: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter("pa_runs_started_total", "Runs launched, by mode", &["mode"]));

/// The toolsets runs were launched with, by source: `assembled` by svc-tools, or `reused` from
/// the chat's previous run while nothing it is made of changed (ADR 0251).
pub static RUN_TOOLSETS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "pa_run_toolsets_total",
        "Toolsets runs were launched with, by source (assembled, reused)",
        &["source"],
    )
});

/// Where a user run's chat history came from: `read` from Postgres, `known` from what this
/// svc-runs last wrote or read of the chat (its insert proved nobody wrote since), or `stale`
/// (known, but someone wrote since: read after all) (ADR 0252).
pub static RUN_HISTORIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "pa_run_histories_total",
        "Where user runs' chat histories came from (read, known, stale)",
        &["source"],
    )
});

/// Runs that ended, by mode and status (succeeded, failed, cancelled).
pub static RUNS_FINISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "pa_runs_finished_total",
        "Runs that ended, by mode and status",
        &["mode", "status"],
    )
});

/// Wall time of finished runs, from the run row's creation to its ending.
pub static RUN_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "pa_run_duration_seconds",
        "Wall time of finished runs",
        &["mode", "status"],
        LATENCY_BUCKETS,
    )
});

/// What the platform adds to a run: its wall time minus the time svc-models spent on provider
/// attempts (the sum of the attempts' latencies).
pub static PLATFORM_OVERHEAD_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "pa_platform_overhead_seconds",
        "Run wall time minus the time spent waiting on the model provider",
        &["mode"],
        SMALL_BUCKETS,
    )
});

/// Tokens of successful model calls, by model label and kind (input, output, cached_input).
pub static MODEL_TOKENS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "pa_model_tokens_total",
        "Tokens of model calls, by model and kind",
        &["model", "kind"],
    )
});

/// Model calls (one per attempt, fallbacks included), by model label and outcome.
pub static MODEL_ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "pa_model_attempts_total",
        "Model provider attempts, by model and outcome",
        &["model", "outcome"],
    )
});

/// Tool calls executed by svc-tools, by tool name and outcome (ok, error).
pub static TOOL_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "pa_tool_calls_total",
        "Tool calls executed, by tool and outcome",
        &["tool", "outcome"],
    )
});

/// Open SSE (and AG-UI) event streams on this gateway.
pub static SSE_CLIENTS: LazyLock<IntGauge> =
    LazyLock::new(
        || match IntGauge::new("pa_sse_clients", "Open SSE event streams") {
            Ok(g) => register(g),
            Err(err) => panic!("metric pa_sse_clients: {err}"),
        },
    );

/// Temporal activities running in this svc-worker, by activity type: each holds one of the
/// worker's activity slots, so a count stuck at the slot limit means nothing new can run.
pub static WORKER_ACTIVITIES_RUNNING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    match IntGaugeVec::new(
        Opts::new(
            "pa_worker_activities_running",
            "Temporal activities running in this worker, by activity",
        ),
        &["activity"],
    ) {
        Ok(g) => register(g),
        Err(err) => panic!("metric pa_worker_activities_running: {err}"),
    }
});

/// How long a run event waited in its Redis stream before a reader got it: the read time minus
/// the time in the event's stream id.
pub static RUN_EVENT_LAG_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "pa_run_event_lag_seconds",
        "Redis stream lag: from XADD to the reader, per event",
        &["reader"],
        SMALL_BUCKETS,
    )
});

/// The text exposition of every registered metric.
pub fn render() -> String {
    // Touch the families so they are listed (with no series yet) even before first use.
    LazyLock::force(&GRPC_SERVER_SECONDS);
    LazyLock::force(&RUNS_FINISHED);
    LazyLock::force(&PLATFORM_OVERHEAD_SECONDS);
    let mut out = Vec::new();
    if let Err(err) = TextEncoder::new().encode(&registry().gather(), &mut out) {
        tracing::error!(%err, "cannot encode metrics");
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /metrics` handler.
pub async fn serve() -> Response {
    let mut response = render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The `/metrics` handler of a service whose metrics are turned off.
pub async fn disabled() -> Response {
    (StatusCode::NOT_FOUND, "metrics are off (PA_METRICS=off)").into_response()
}

/// axum middleware: times every HTTP request by its route template (never the raw path, which
/// would make a series per id).
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    HTTP_SERVER_SECONDS
        .with_label_values(&[method.as_str(), &route, response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Tower layer timing every gRPC call (see [`GRPC_SERVER_SECONDS`]) and opening its span, a
/// child of the caller's (W3C `traceparent`), named for the service that serves it.
#[derive(Clone, Debug, Default)]
pub struct GrpcMetricsLayer {
    /// `pa.service` of the spans; set once by [`crate::grpc::GrpcServer::named`].
    pub(crate) service: Arc<OnceLock<&'static str>>,
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            service: self.service.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    service: Arc<OnceLock<&'static str>>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send,
    S::Future: Send + 'static,
    RB: http_body::Body + Unpin,
{
    type Response = http::Response<MeteredBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let is_grpc = request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        // `/package.Service/Method`
        let call = is_grpc
            .then(|| {
                let path = request.uri().path().trim_start_matches('/');
                path.split_once('/')
                    .map(|(service, method)| (service.to_owned(), method.to_owned()))
            })
            .flatten();
        let span = match &call {
            Some((service, method)) => {
                let span = tracing::info_span!(
                    "grpc.server",
                    otel.name = %format!("{service}/{method}"),
                    otel.kind = "server",
                    rpc.service = %service,
                    rpc.method = %method,
                    pa.service = self.service.get().copied().unwrap_or("unnamed"),
                );
                crate::trace::adopt_from_headers(&span, request.headers());
                span
            }
            None => tracing::Span::none(),
        };
        let future = span.in_scope(|| self.inner.call(request));
        let call_span = span.clone();
        let timed = async move {
            let started = Instant::now();
            let response = future.await?;
            let recorder = call.map(|(service, method)| Recorder {
                started,
                // The span lasts until the (possibly streamed) answer ends.
                _span: call_span,
                service,
                method,
                // A trailers-only answer (every error tonic returns from a handler) has its
                // status in the head; otherwise the trailers bring it.
                code: response.headers().get("grpc-status").map(code_name),
            });
            Ok(response.map(|inner| MeteredBody { inner, recorder }))
        };
        Box::pin(tracing::Instrument::instrument(timed, span))
    }
}

fn code_name(value: &HeaderValue) -> String {
    let code = tonic::Code::from_bytes(value.as_bytes());
    format!("{code:?}")
}

/// Observes the call when its response body ends or is dropped (a client that went away).
struct Recorder {
    started: Instant,
    _span: tracing::Span,
    service: String,
    method: String,
    code: Option<String>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let code = self.code.as_deref().unwrap_or("Cancelled");
        GRPC_SERVER_SECONDS
            .with_label_values(&[&self.service, &self.method, code])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// A response body that records its call's status from the trailers and its duration when done.
pub struct MeteredBody<B> {
    inner: B,
    recorder: Option<Recorder>,
}

impl<B> http_body::Body for MeteredBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(status) = frame.trailers_ref().and_then(|t| t.get("grpc-status"))
                    && let Some(recorder) = &mut this.recorder
                {
                    recorder.code = Some(code_name(status));
                }
            }
            Poll::Ready(None) => {
                if let Some(recorder) = &mut this.recorder {
                    recorder.code.get_or_insert_with(|| "Ok".into());
                }
                this.recorder.take();
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(recorder) = &mut this.recorder {
                    recorder.code.get_or_insert_with(|| "Internal".into());
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
