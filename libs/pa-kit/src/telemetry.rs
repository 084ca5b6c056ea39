//! Logging with `tracing`: human-readable by default, JSON lines with `PA_LOG_FORMAT=json`,
//! filtered by `RUST_LOG` (default `info`). With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are
//! exported by OTLP/gRPC too (see [`crate::trace`]).

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The process's tracer provider, kept to flush it at exit.
static PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

pub fn init(service: &'static str) {
    // Every TLS client of the process (Postgres, Redis, OTLP) then agrees on one provider.
    crate::tls::install_crypto_provider();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("PA_LOG_FORMAT").is_ok_and(|f| f == "json");
    // Colours only on a terminal: `make up` writes logs to files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let otlp = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .and_then(
            |endpoint| match crate::trace::otlp_provider(service, endpoint.trim()) {
                Ok(provider) => Some(provider),
                Err(err) => {
                    eprintln!("OTLP export is off: {err}");
                    None
                }
            },
        );
    let otel = otlp.as_ref().map(|p| crate::trace::layer(p, service));
    // `PA_LOG_SPANS=close`: a line per finished span with its busy and idle time (where a
    // request's time goes, without an OTLP collector).
    let span_events = if std::env::var("PA_LOG_SPANS").is_ok_and(|v| v == "close") {
        tracing_subscriber::fmt::format::FmtSpan::CLOSE
    } else {
        tracing_subscriber::fmt::format::FmtSpan::NONE
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(ansi)
        .with_span_events(span_events);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    // try_init: tests start several services in one process.
    let _ = if json {
        registry.with(fmt.json()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
    if let Some(provider) = otlp {
        let _ = PROVIDER.set(provider);
    }
    tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
}

/// Exports the spans still buffered (call before the process exits).
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}
