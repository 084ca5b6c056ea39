//! Distributed tracing across the mesh: W3C trace context (`traceparent`) travels in the gRPC
//! metadata of every internal call (signed calls carry it: [`crate::InternalAuth::sign_into`])
//! and in a durable run's RunSpec into its Temporal activities; each service opens a span per
//! call under it, with `pa.service` naming the service (an in-process mesh shares one tracer
//! provider). Spans are exported by OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header.
pub const TRACEPARENT: &str = "traceparent";

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct TraceparentExtractor<'a>(&'a str);

impl Extractor for TraceparentExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT && !self.0.is_empty()).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// Puts the current span's trace context into outgoing metadata (nothing when tracing is off).
pub fn inject_current(metadata: &mut MetadataMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// The current span's `traceparent` ("" when there is none), to carry where metadata cannot go
/// (a durable run's spec, into its Temporal activities).
pub fn current_traceparent() -> String {
    let mut metadata = MetadataMap::new();
    inject_current(&mut metadata);
    metadata
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Makes `span` a child of the caller's span named by the request's headers, if any.
pub fn adopt_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if headers.contains_key(TRACEPARENT) {
        let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` a child of the span a `traceparent` string names ("" = none).
pub fn adopt(span: &tracing::Span, traceparent: &str) {
    if !traceparent.is_empty() {
        let cx: Context = TraceContextPropagator::new().extract(&TraceparentExtractor(traceparent));
        let _ = span.set_parent(cx);
    }
}

/// The OTLP exporter calls tonic, which needs a Tokio reactor; the SDK's batch processor
/// exports from a plain thread. This runtime (never dropped) runs the exports.
fn export_runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("pa-otlp-export")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// An exporter whose exports run on [`export_runtime`].
#[derive(Debug)]
struct OnExportRuntime<E> {
    inner: Arc<E>,
    runtime: &'static tokio::runtime::Runtime,
}

impl<E: SpanExporter + Send + Sync + 'static> SpanExporter for OnExportRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = self.inner.clone();
        match self
            .runtime
            .spawn(async move { inner.export(batch).await })
            .await
        {
            Ok(result) => result,
            Err(err) => Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                err.to_string(),
            )),
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        // Called once, while the provider is built: nobody else holds the exporter yet.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// TLS of the OTLP export, by the OpenTelemetry specification's variables (ADR 0208):
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` (PEM of the collector's CA; without it an `https://`
/// endpoint is checked against the OS roots), `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` +
/// `OTEL_EXPORTER_OTLP_CLIENT_KEY` (mutual TLS).
#[derive(Clone, Debug, Default)]
pub struct OtlpTls {
    pub ca_pem: Option<Vec<u8>>,
    pub client: Option<crate::tls::ClientIdentity>,
}

impl OtlpTls {
    pub fn from_env() -> Result<Self, crate::tls::PemFileError> {
        Ok(Self {
            ca_pem: crate::tls::pem_from_env("OTEL_EXPORTER_OTLP_CERTIFICATE")?,
            client: crate::tls::identity_from_env(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            )?,
        })
    }

    /// The channel's TLS for `endpoint`: none for `http://`, where a certificate setting is
    /// refused rather than silently ignored.
    fn channel_config(&self, endpoint: &str) -> Result<Option<ClientTlsConfig>, String> {
        if !endpoint.starts_with("https://") {
            if self.ca_pem.is_some() || self.client.is_some() {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_CERTIFICATE or _CLIENT_CERTIFICATE is set but the endpoint {endpoint:?} is not https://"
                ));
            }
            return Ok(None);
        }
        let config = match &self.ca_pem {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        Ok(Some(match &self.client {
            Some(id) => config.identity(Identity::from_pem(&id.cert, &id.key)),
            None => config,
        }))
    }
}

/// A tracer provider exporting to an OTLP/gRPC endpoint, for `service`, with TLS as
/// [`OtlpTls::from_env`] says.
pub fn otlp_provider(service: &str, endpoint: &str) -> Result<SdkTracerProvider, String> {
    let tls = OtlpTls::from_env().map_err(|e| e.to_string())?;
    otlp_provider_with_tls(service, endpoint, &tls)
}

/// [`otlp_provider`] with the TLS settings given.
pub fn otlp_provider_with_tls(
    service: &str,
    endpoint: &str,
    tls: &OtlpTls,
) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithTonicConfig;
    let tls = tls.channel_config(endpoint)?;
    let runtime = export_runtime()?;
    // The tonic channel is made inside the runtime that will drive it.
    let exporter = {
        let _entered = runtime.enter();
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5));
        if let Some(tls) = tls {
            builder = builder.with_tls_config(tls);
        }
        builder.build().map_err(|e| e.to_string())?
    };
    let exporter = OnExportRuntime {
        inner: Arc::new(exporter),
        runtime,
    };
    let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(500))
                .build(),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build())
}

/// The tracing layer that turns `tracing` spans into OpenTelemetry spans of `provider`.
pub fn layer<S>(
    provider: &SdkTracerProvider,
    service: &str,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_span_nothing_is_injected() {
        let mut metadata = MetadataMap::new();
        inject_current(&mut metadata);
        assert!(metadata.get(TRACEPARENT).is_none());
        assert_eq!(current_traceparent(), "");
    }

    #[test]
    fn a_traceparent_round_trips_through_a_span() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::layer::SubscriberExt::with(
            tracing_subscriber::registry(),
            layer(&provider, "test"),
        );
        tracing::subscriber::with_default(subscriber, || {
            let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let span = tracing::info_span!("child");
            adopt(&span, tp);
            let _entered = span.enter();
            let out = current_traceparent();
            // Same trace, a new span id (the child's), sampled.
            assert!(
                out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{out}"
            );
            assert!(!out.contains("00f067aa0ba902b7"), "{out}");
            assert!(out.ends_with("-01"), "{out}");
        });
    }
}
