//! Scripted failures: HTTP errors, rate limits, hangs, disconnects, server stop.

mod common;

use std::time::{Duration, Instant};

use common::{chat_body, client, parse_chunks, post, read_body, sse_data};
use pa_testkit::{FakeProvider, Reply};
use serde_json::Value;

fn chat_url(provider: &FakeProvider) -> String {
    format!("{}/chat/completions", provider.base_url())
}

fn assert_error_shape(body: &Value) {
    let error = body["error"].as_object().expect("error object");
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"]);
    assert!(body["error"]["message"].is_string());
    assert!(body["error"]["type"].is_string());
}

#[tokio::test]
async fn scripted_errors_have_openai_bodies() {
    let provider = FakeProvider::start().await.unwrap();
    let client = client();
    let cases = [
        (400, "invalid_request_error", Value::Null),
        (401, "invalid_request_error", "invalid_api_key".into()),
        (404, "invalid_request_error", "model_not_found".into()),
        (500, "server_error", Value::Null),
        (503, "server_error", Value::Null),
    ];
    for (status, kind, code) in cases {
        provider.push(Reply::error(status, "scripted failure"));
        // Streamed requests get the same plain JSON error (OpenAI errors before streaming).
        let response = post(&client, chat_url(&provider), &chat_body(true, true)).await;
        assert_eq!(response.status().as_u16(), status);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        assert!(response.headers().get("retry-after").is_none());
        let body: Value = response.json().await.unwrap();
        assert_error_shape(&body);
        assert_eq!(body["error"]["message"], "scripted failure");
        assert_eq!(body["error"]["type"], kind);
        assert_eq!(body["error"]["code"], code);
    }
    assert_eq!(provider.request_count(), 5);

    provider.push(Reply::error_with_type(
        429,
        "You exceeded your current quota.",
        "insufficient_quota",
        Some("insufficient_quota"),
    ));
    let response = post(&client, chat_url(&provider), &chat_body(false, false)).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_none());
    let body: Value = response.json().await.unwrap();
    assert_error_shape(&body);
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert_eq!(body["error"]["code"], "insufficient_quota");
}

#[tokio::test]
async fn rate_limited_has_retry_after() {
    let provider = FakeProvider::start().await.unwrap();
    provider.push(Reply::rate_limited(7));
    let response = post(&client(), chat_url(&provider), &chat_body(false, false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await.unwrap();
    assert_error_shape(&body);
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("7s"));
}

#[tokio::test]
async fn hang_never_answers() {
    let provider = FakeProvider::start().await.unwrap();
    provider.push(Reply::hang());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let error = client
        .post(chat_url(&provider))
        .bearer_auth("sk-hang")
        .json(&chat_body(true, false))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Counted even though it was never answered.
    assert_eq!(provider.request_count(), 1);
    assert_eq!(
        provider.requests()[0].authorization.as_deref(),
        Some("Bearer sk-hang")
    );
    // The queue moved on: the next request gets the default reply.
    let response = post(
        &common::client(),
        chat_url(&provider),
        &chat_body(false, false),
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_drops_hanging_requests_and_refuses_new_ones() {
    let provider = FakeProvider::start().await.unwrap();
    provider.set_default(Reply::hang());
    let url = chat_url(&provider);
    let pending = tokio::spawn({
        let url = url.clone();
        async move {
            let started = Instant::now();
            let result = client()
                .post(url)
                .json(&chat_body(true, false))
                .send()
                .await;
            (result, started.elapsed())
        }
    });
    while provider.request_count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    provider.stop();
    let (result, elapsed) = pending.await.unwrap();
    let error = result.unwrap_err();
    assert!(!error.is_timeout(), "{error:?}");
    // Well before the client's own timeout (60 s): dropped, not left hanging.
    assert!(elapsed < Duration::from_secs(50), "{elapsed:?}");

    // The listener closes once the server task has seen the stop: wait for it.
    let error = refused(&format!("{}/models", provider.base_url())).await;
    assert!(error.is_connect(), "{error:?}");
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    let provider = FakeProvider::start().await.unwrap();
    let models = format!("{}/models", provider.base_url());
    let clone = provider.clone();
    drop(provider);
    assert_eq!(client().get(&models).send().await.unwrap().status(), 200);
    drop(clone);
    refused(&models).await;
}

/// Polls `url` until connecting to it is refused (30 s at most); returns that error.
async fn refused(url: &str) -> reqwest::Error {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client().get(url).send().await {
            Err(error) if error.is_connect() => return error,
            other => assert!(Instant::now() < deadline, "still served: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn disconnect_after_drops_the_stream_without_done() {
    let provider = FakeProvider::start().await.unwrap();
    let client = client();
    // role chunk + 2 words, then the connection drops.
    provider.push(Reply::text("one two three four").disconnect_after(3));
    let response = post(&client, chat_url(&provider), &chat_body(true, true)).await;
    assert_eq!(response.status(), 200);
    let (body, error) = read_body(response).await;
    assert!(
        error.is_some(),
        "the body must end with an error, got {body:?}"
    );
    assert!(!body.contains("[DONE]"));
    let events = sse_data(&body);
    assert_eq!(events.len(), 3);
    let chunks = parse_chunks(&events);
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    assert_eq!(chunks[2]["choices"][0]["delta"]["content"], " two");

    // With delays, and a count beyond the content: capped before the finish chunk.
    provider.push(
        Reply::text("a b")
            .with_chunk_delay(Duration::from_millis(10))
            .disconnect_after(100),
    );
    let response = post(&client, chat_url(&provider), &chat_body(true, true)).await;
    let (body, error) = read_body(response).await;
    assert!(error.is_some());
    let chunks = parse_chunks(&sse_data(&body));
    assert_eq!(chunks.len(), 3);
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );

    // Non-streamed: a truncated JSON body.
    provider.push(Reply::text("partial").disconnect_after(0));
    let response = post(&client, chat_url(&provider), &chat_body(false, false)).await;
    let (body, error) = read_body(response).await;
    assert!(error.is_some());
    assert!(serde_json::from_str::<Value>(&body).is_err());

    // The server is still fine afterwards.
    let response = post(&client, chat_url(&provider), &chat_body(false, false)).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_after_on_a_multi_thread_runtime() {
    let provider = FakeProvider::start().await.unwrap();
    let client = client();
    for n in 0..4 {
        provider.push(Reply::text("w x y z").disconnect_after(n));
        let response = post(&client, chat_url(&provider), &chat_body(true, false)).await;
        let (body, error) = read_body(response).await;
        assert!(error.is_some(), "n={n}: {body:?}");
        assert_eq!(sse_data(&body).len(), n, "n={n}");
    }
}
