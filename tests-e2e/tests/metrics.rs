//! Prometheus metrics through the real mesh: after one run, the services' /metrics show the
//! run counted, svc-runs' RPC latency series and the platform overhead observed.

use tests_e2e::{Mesh, metric_sample as sample};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn scrape(
    mesh: &Mesh,
    base: &str,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let response = mesh.http.get(format!("{base}/metrics")).send().await?;
    assert_eq!(response.status(), 200, "{base}/metrics");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    Ok(response.text().await?)
}

#[tokio::test]
async fn a_run_shows_up_in_the_services_metrics() -> R {
    let mesh = Mesh::builder().start().await?;
    let chat_id = mesh.create_chat("metrics").await?;
    let run_id = mesh.start_run(&chat_id, "count me").await?;
    let events = mesh.read_events(&run_id, None, None).await?;
    assert_eq!(events.last().map(|e| e.event_type()), Some("RUN_FINISHED"));

    // svc-runs answers /metrics on its gRPC port (plain HTTP/1.1).
    let runs = scrape(&mesh, &mesh.runs_url).await?;
    let finished = sample(
        &runs,
        "pa_runs_finished_total",
        &[("mode", "inline"), ("status", "succeeded")],
    );
    assert_eq!(finished, Some(1.0), "the run is counted once");
    assert_eq!(
        sample(&runs, "pa_runs_started_total", &[("mode", "inline")]),
        Some(1.0)
    );
    let create_run = sample(
        &runs,
        "pa_grpc_server_handling_seconds_count",
        &[
            ("grpc_service", "personal_agent.v1.RunService"),
            ("grpc_method", "CreateRun"),
            ("grpc_code", "Ok"),
        ],
    );
    assert!(
        create_run >= Some(1.0),
        "CreateRun latency series: {create_run:?}"
    );
    assert!(
        sample(
            &runs,
            "pa_grpc_server_handling_seconds_bucket",
            &[("grpc_method", "CreateRun"), ("le", "+Inf")],
        ) >= Some(1.0)
    );
    let overhead = sample(
        &runs,
        "pa_platform_overhead_seconds_count",
        &[("mode", "inline")],
    );
    assert_eq!(overhead, Some(1.0), "one overhead observation per run");
    let overhead_sum = sample(
        &runs,
        "pa_platform_overhead_seconds_sum",
        &[("mode", "inline")],
    )
    .unwrap_or(-1.0);
    let wall_sum = sample(
        &runs,
        "pa_run_duration_seconds_sum",
        &[("mode", "inline"), ("status", "succeeded")],
    )
    .unwrap_or(-1.0);
    assert!(
        (0.0..=wall_sum).contains(&overhead_sum),
        "overhead {overhead_sum} is part of the wall time {wall_sum}"
    );

    // The model call's tokens (svc-models), the event stream's lag and the gateway's HTTP
    // series (svc-gateway, on its metrics listener).
    // StreamChat is observed once svc-models' response body is done, a moment after svc-runs
    // read its last chunk: scrape until it shows (30 s at most) instead of racing it.
    let stream_chat = [
        ("grpc_service", "personal_agent.v1.ModelService"),
        ("grpc_method", "StreamChat"),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let models = loop {
        let models = scrape(&mesh, &mesh.models_url).await?;
        if sample(
            &models,
            "pa_grpc_server_handling_seconds_count",
            &stream_chat,
        ) >= Some(1.0)
            || std::time::Instant::now() > deadline
        {
            break models;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        sample(
            &models,
            "pa_model_tokens_total",
            &[("model", "offline:echo"), ("kind", "output")]
        ) > Some(0.0)
    );
    assert!(
        sample(
            &models,
            "pa_grpc_server_handling_seconds_count",
            &stream_chat
        ) >= Some(1.0),
        "server-streaming calls are timed too"
    );
    let gateway = scrape(&mesh, &mesh.gateway_metrics_url).await?;
    assert!(sample(&gateway, "pa_run_event_lag_seconds_count", &[]) >= Some(1.0));
    assert!(
        sample(
            &gateway,
            "pa_http_server_request_seconds_count",
            &[
                ("route", "/v1/chats/{id}/runs"),
                ("method", "POST"),
                ("status", "202")
            ],
        ) >= Some(1.0)
    );
    assert!(gateway.contains("# TYPE pa_sse_clients gauge"));
    // Never on the public port: there it is an unknown route (problem+json 404).
    let public = mesh.http.get(mesh.url("/metrics")).send().await?;
    assert_eq!(public.status(), 404);
    assert_eq!(
        public
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    mesh.stop().await?;
    Ok(())
}
