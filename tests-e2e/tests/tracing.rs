//! Tracing across the mesh: the spans of one run, exported by OTLP/gRPC to a receiver in this
//! test (the real OTLP protocol, opentelemetry-proto's TraceService), form one connected trace
//! from the gateway's request through svc-runs, svc-models, svc-tools and svc-memory — and, for a
//! durable run, through svc-worker's Temporal activities.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use pa_testkit::{Chunk, FakeProvider, Reply};
use serde_json::json;
use tests_e2e::{Mesh, SseEvent};
use tracing_subscriber::layer::SubscriberExt;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// One span as the receiver got it.
#[derive(Clone, Debug)]
struct Collected {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    name: String,
    attributes: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Collected>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(any_value::Value::StringValue(s)) => s.clone(),
                                Some(any_value::Value::IntValue(i)) => i.to_string(),
                                Some(other) => format!("{other:?}"),
                                None => String::new(),
                            };
                            (kv.key.clone(), value)
                        })
                        .collect();
                    spans.push(Collected {
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                        name: span.name,
                        attributes,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    fn all(&self) -> Vec<Collected> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The spans of the trace holding a span that `pick` chooses, once `done` says the trace is
    /// complete (spans arrive in batches), or after the deadline.
    async fn trace_of(
        &self,
        pick: impl Fn(&Collected) -> bool,
        done: impl Fn(&[Collected]) -> bool,
    ) -> Vec<Collected> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let all = self.all();
            let trace: Vec<Collected> = match all.iter().find(|s| pick(s)) {
                Some(anchor) => all
                    .iter()
                    .filter(|s| s.trace_id == anchor.trace_id)
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            if (!trace.is_empty() && done(&trace)) || Instant::now() > deadline {
                return trace;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Receiver {
    /// The trace of the span `pick` chooses, once it spans every `wanted` service; asserts it
    /// does and that it is one connected tree.
    async fn connected_trace(
        &self,
        pick: impl Fn(&Collected) -> bool,
        wanted: &[&str],
    ) -> Vec<Collected> {
        let trace = self
            .trace_of(pick, |t| wanted.iter().all(|w| services(t).contains(*w)))
            .await;
        let seen = services(&trace);
        for service in wanted {
            assert!(
                seen.contains(*service),
                "{service} missing from the trace: {seen:?}"
            );
        }
        assert_connected(&trace);
        trace
    }
}

fn services(trace: &[Collected]) -> BTreeSet<String> {
    trace
        .iter()
        .filter_map(|s| s.attributes.get("pa.service").cloned())
        .collect()
}

/// One root, and every other span's parent is in the trace.
fn assert_connected(trace: &[Collected]) {
    let ids: HashSet<&Vec<u8>> = trace.iter().map(|s| &s.span_id).collect();
    let roots: Vec<&Collected> = trace
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    assert_eq!(
        roots[0].attributes.get("pa.service").map(String::as_str),
        Some("svc-gateway"),
        "the root is the gateway's request: {:#?}",
        roots[0]
    );
    for span in trace {
        if !span.parent_span_id.is_empty() {
            assert!(
                ids.contains(&span.parent_span_id),
                "span {} ({:?}) hangs off a parent outside the trace",
                span.name,
                span.attributes.get("pa.service")
            );
        }
    }
}

async fn finished(mesh: &Mesh, run_id: &str) -> R {
    let events = tokio::time::timeout(
        Duration::from_secs(60),
        mesh.read_events(run_id, None, None),
    )
    .await??;
    let kinds: Vec<&str> = events.iter().map(SseEvent::event_type).collect();
    assert_eq!(kinds.last(), Some(&"RUN_FINISHED"), "{kinds:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_run_is_one_connected_trace_across_the_services() -> R {
    pa_testkit::embed_model_dir()?;
    // The OTLP receiver, and this process's spans exported to it.
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let provider = pa_kit::trace::otlp_provider("pa-mesh", &endpoint)?;
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(pa_kit::trace::layer(&provider, "pa-mesh"));
    tracing::subscriber::set_global_default(subscriber)?;

    let mesh = Mesh::builder().worker().without_curator().start().await?;
    let fake = FakeProvider::start().await?;
    mesh.add_fake_model(&fake.base_url()).await?;
    let chat = mesh.create_chat("traced").await?;

    // Inline: a model turn that calls `recall` (svc-tools → svc-memory), then an answer.
    fake.push(Reply::chunks(vec![Chunk::tool_call(
        "call_1",
        "recall",
        json!({ "query": "tea" }).to_string(),
    )]));
    fake.push(Reply::text("Nothing about tea yet."));
    let (status, accepted) = mesh
        .post_json(
            &format!("/v1/chats/{chat}/runs"),
            &json!({ "message": "What tea do I like?", "model": "fp:m" }),
        )
        .await?;
    assert_eq!(status, 202, "{accepted}");
    let inline_run = accepted["run_id"].as_str().unwrap_or_default().to_string();
    finished(&mesh, &inline_run).await?;

    // Durable: the same request, run by the worker's activities.
    fake.push(Reply::text("Durably answered."));
    let (status, accepted) = mesh
        .post_json(
            &format!("/v1/chats/{chat}/runs"),
            &json!({ "message": "Again, durably.", "model": "fp:m", "durable": true }),
        )
        .await?;
    assert_eq!(status, 202, "{accepted}");
    let durable_run = accepted["run_id"].as_str().unwrap_or_default().to_string();
    finished(&mesh, &durable_run).await?;
    let _ = provider.force_flush();

    let wanted = [
        "svc-gateway",
        "svc-runs",
        "svc-models",
        "svc-tools",
        "svc-memory",
    ];
    let trace = receiver
        .connected_trace(
            |s| s.name == "run" && s.attributes.get("run_id") == Some(&inline_run),
            &wanted,
        )
        .await;
    let turn = trace
        .iter()
        .find(|s| s.name == "model_turn")
        .expect("a model_turn span");
    assert_eq!(
        turn.attributes.get("model").map(String::as_str),
        Some("fp:m")
    );
    assert!(turn.attributes.contains_key("tokens"), "{turn:?}");
    assert!(
        trace.iter().any(|s| s.name == "tool_call recall"
            && s.attributes.get("tool").map(String::as_str) == Some("recall")),
        "a tool_call span for recall"
    );

    let wanted = ["svc-gateway", "svc-runs", "svc-worker", "svc-models"];
    let trace = receiver
        .connected_trace(
            |s| {
                s.name == "model_turn"
                    && s.attributes.get("run_id") == Some(&durable_run)
                    && s.attributes.get("pa.service").map(String::as_str) == Some("svc-worker")
            },
            &wanted,
        )
        .await;
    let turn = trace
        .iter()
        .find(|s| {
            s.name == "model_turn"
                && s.attributes.get("pa.service").map(String::as_str) == Some("svc-worker")
        })
        .expect("the worker's model_turn span");
    assert!(turn.attributes.contains_key("tokens"), "{turn:?}");
    mesh.stop().await?;
    let _ = provider.shutdown();
    Ok(())
}
