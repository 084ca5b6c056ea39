//! `POST /v1/chat/completions`: streamed and non-streamed wire format.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{chat_body, client, parse_chunks, post, read_body, sse_data};
use pa_testkit::{Chunk, FakeProvider, Reply};
use serde_json::{Value, json};

fn chat_url(provider: &FakeProvider) -> String {
    format!("{}/chat/completions", provider.base_url())
}

fn assert_chunk_envelope(chunk: &Value, id: &str, created: &Value) {
    assert_eq!(chunk["object"], "chat.completion.chunk");
    assert_eq!(chunk["id"], id);
    assert_eq!(&chunk["created"], created);
    assert_eq!(chunk["model"], "fake-model");
    for choice in chunk["choices"].as_array().expect("choices array") {
        assert_eq!(choice["index"], 0);
        assert!(choice["delta"].is_object());
        assert!(choice.get("logprobs").is_some_and(Value::is_null));
        assert!(choice.get("finish_reason").is_some());
    }
}

#[tokio::test]
async fn default_reply_streams_text_word_by_word() {
    let provider = FakeProvider::start().await.unwrap();
    let response = post(&client(), chat_url(&provider), &chat_body(true, false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let (body, error) = read_body(response).await;
    assert!(error.is_none());
    let events = sse_data(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(events.iter().filter(|e| *e == "[DONE]").count(), 1);

    let chunks = parse_chunks(&events);
    let id = chunks[0]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("chatcmpl-"));
    let created = chunks[0]["created"].clone();
    assert!(created.as_u64().unwrap() > 1_600_000_000);
    for chunk in &chunks {
        assert_chunk_envelope(chunk, &id, &created);
        assert!(
            chunk.get("usage").is_none(),
            "no usage without include_usage"
        );
        assert_eq!(chunk["choices"].as_array().unwrap().len(), 1);
    }

    // First delta: the role; last choice chunk: the finish reason.
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["delta"], json!({}));
    for chunk in &chunks[..chunks.len() - 1] {
        assert!(chunk["choices"][0]["finish_reason"].is_null());
    }

    let deltas: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(deltas, ["Hello", " from", " the", " fake", " provider."]);
    assert_eq!(deltas.concat(), "Hello from the fake provider.");
}

#[tokio::test]
async fn usage_chunk_only_with_include_usage() {
    let provider = FakeProvider::start().await.unwrap();
    let client = client();
    provider.push(Reply::text("one two three").with_usage(120, 3, 100));
    provider.push(Reply::text("one two three").with_usage(120, 3, 100));

    // include_usage: every chunk carries "usage": null, then a `choices: []` usage chunk.
    let response = post(&client, chat_url(&provider), &chat_body(true, true)).await;
    let events = sse_data(&read_body(response).await.0);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = parse_chunks(&events);
    let (usage_chunk, rest) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["object"], "chat.completion.chunk");
    assert_eq!(usage_chunk["choices"], json!([]));
    let usage = &usage_chunk["usage"];
    assert_eq!(usage["prompt_tokens"], 120);
    assert_eq!(usage["completion_tokens"], 3);
    assert_eq!(usage["total_tokens"], 123);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 100);
    for chunk in rest {
        assert!(chunk.get("usage").is_some_and(Value::is_null));
        assert_eq!(chunk["choices"].as_array().unwrap().len(), 1);
    }
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");

    // Same reply without include_usage: no usage chunk at all.
    let response = post(&client, chat_url(&provider), &chat_body(true, false)).await;
    let chunks = parse_chunks(&sse_data(&read_body(response).await.0));
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"].as_array().unwrap().len() == 1)
    );

    // Default usage counts words: prompt "You are terse." + "say hello please", completion 5.
    let response = post(&client, chat_url(&provider), &chat_body(true, true)).await;
    let chunks = parse_chunks(&sse_data(&read_body(response).await.0));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 6);
    assert_eq!(usage["completion_tokens"], 5);
    assert_eq!(usage["total_tokens"], 11);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
}

#[tokio::test]
async fn tool_call_deltas_reassemble() {
    let provider = FakeProvider::start().await.unwrap();
    let weather_args = r#"{"city":"Paris","unit":"celsius"}"#;
    let time_args = r#"{"tz":"Europe/Paris"}"#;
    provider.push(Reply::chunks(vec![
        Chunk::reasoning("Need weather "),
        Chunk::reasoning("and time."),
        Chunk::text("Let me check."),
        Chunk::tool_call("call_weather", "get_weather", weather_args),
        Chunk::tool_call("call_time", "get_time", time_args),
    ]));
    let response = post(&client(), chat_url(&provider), &chat_body(true, false)).await;
    let events = sse_data(&read_body(response).await.0);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = parse_chunks(&events);

    let mut reasoning = String::new();
    let mut content = String::new();
    // index -> (id, name, arguments, number of argument deltas)
    let mut calls: BTreeMap<u64, (String, String, String, usize)> = BTreeMap::new();
    for chunk in &chunks {
        let delta = &chunk["choices"][0]["delta"];
        if let Some(text) = delta["reasoning_content"].as_str() {
            reasoning.push_str(text);
        }
        if let Some(text) = delta["content"].as_str() {
            content.push_str(text);
        }
        let Some(tool_calls) = delta["tool_calls"].as_array() else {
            continue;
        };
        assert_eq!(tool_calls.len(), 1);
        let call = &tool_calls[0];
        let index = call["index"].as_u64().unwrap();
        if let Some(id) = call.get("id") {
            // First delta of a call: id, type, name and empty arguments.
            assert!(!calls.contains_key(&index));
            assert_eq!(call["type"], "function");
            assert_eq!(call["function"]["arguments"], "");
            let name = call["function"]["name"].as_str().unwrap().to_owned();
            calls.insert(
                index,
                (id.as_str().unwrap().to_owned(), name, String::new(), 0),
            );
        } else {
            // Following deltas: only index and function.arguments.
            assert_eq!(call.as_object().unwrap().len(), 2, "{call}");
            assert_eq!(call["function"].as_object().unwrap().len(), 1, "{call}");
            let entry = calls.get_mut(&index).unwrap();
            entry
                .2
                .push_str(call["function"]["arguments"].as_str().unwrap());
            entry.3 += 1;
        }
    }
    assert_eq!(reasoning, "Need weather and time.");
    assert_eq!(content, "Let me check.");
    assert_eq!(calls.len(), 2);
    let weather = &calls[&0];
    assert_eq!(
        (weather.0.as_str(), weather.1.as_str(), weather.2.as_str()),
        ("call_weather", "get_weather", weather_args)
    );
    assert!(weather.3 >= 2);
    let time = &calls[&1];
    assert_eq!(
        (time.0.as_str(), time.1.as_str(), time.2.as_str()),
        ("call_time", "get_time", time_args)
    );
    assert!(time.3 >= 2);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn leading_tool_call_carries_the_role() {
    let provider = FakeProvider::start().await.unwrap();
    provider.push(Reply::chunks(vec![Chunk::tool_call(
        "call_1",
        "search",
        r#"{"q":"rust"}"#,
    )]));
    let response = post(&client(), chat_url(&provider), &chat_body(true, false)).await;
    let chunks = parse_chunks(&sse_data(&read_body(response).await.0));
    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    assert!(first["content"].is_null());
    assert_eq!(first["tool_calls"][0]["id"], "call_1");
    assert_eq!(first["tool_calls"][0]["function"]["name"], "search");
}

#[tokio::test]
async fn non_streamed_completion() {
    let provider = FakeProvider::start().await.unwrap();
    let client = client();
    provider.push(Reply::text("Hi there.").with_usage(7, 2, 1));
    let mut body = chat_body(false, false);
    body.as_object_mut().unwrap().remove("stream");
    let response = post(&client, chat_url(&provider), &body).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let completion: Value = response.json().await.unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert!(completion["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(completion["model"], "fake-model");
    assert!(completion["created"].is_u64());
    let choice = &completion["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Hi there.");
    assert!(choice["message"].get("tool_calls").is_none());
    assert_eq!(completion["usage"]["prompt_tokens"], 7);
    assert_eq!(completion["usage"]["completion_tokens"], 2);
    assert_eq!(completion["usage"]["total_tokens"], 9);
    assert_eq!(
        completion["usage"]["prompt_tokens_details"]["cached_tokens"],
        1
    );

    provider.push(Reply::chunks(vec![
        Chunk::reasoning("thinking"),
        Chunk::tool_call("call_9", "lookup", r#"{"id":9}"#),
    ]));
    let response = post(&client, chat_url(&provider), &chat_body(false, false)).await;
    let completion: Value = response.json().await.unwrap();
    let choice = &completion["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    assert_eq!(choice["message"]["reasoning_content"], "thinking");
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([{
            "id": "call_9",
            "type": "function",
            "function": {"name": "lookup", "arguments": "{\"id\":9}"},
        }])
    );
    // Default usage: word counts.
    assert_eq!(completion["usage"]["prompt_tokens"], 6);
    assert_eq!(completion["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn replies_are_fifo_then_default() {
    let provider = FakeProvider::start().await.unwrap();
    let client = client();
    provider.push(Reply::text("first"));
    provider.push(Reply::text("second"));
    assert_eq!(provider.pending_replies(), 2);
    provider.set_default(Reply::text("fallback"));
    let mut seen = Vec::new();
    for _ in 0..4 {
        let response = post(&client, chat_url(&provider), &chat_body(false, false)).await;
        let completion: Value = response.json().await.unwrap();
        seen.push(
            completion["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(seen, ["first", "second", "fallback", "fallback"]);
    assert_eq!(provider.pending_replies(), 0);
}

#[tokio::test]
async fn delays_are_applied() {
    let provider = FakeProvider::start().await.unwrap();
    let client = client();

    provider.push(Reply::text("slow start").with_first_byte_delay(Duration::from_millis(150)));
    let started = Instant::now();
    let response = post(&client, chat_url(&provider), &chat_body(true, false)).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    read_body(response).await;

    // Headers come at once: with an hour between chunks they still arrive (no upper bound on
    // elapsed time, which a loaded machine could break).
    provider.push(Reply::text("a b c").with_chunk_delay(Duration::from_secs(3600)));
    let headers = tokio::time::timeout(
        Duration::from_secs(30),
        post(&client, chat_url(&provider), &chat_body(true, false)),
    )
    .await;
    assert!(headers.is_ok(), "the headers waited for the chunks");
    drop(headers);

    // role, 3 words, finish, [DONE] = 6 events → 5 delays.
    provider.push(Reply::text("a b c").with_chunk_delay(Duration::from_millis(100)));
    let started = Instant::now();
    let response = post(&client, chat_url(&provider), &chat_body(true, false)).await;
    let (body, error) = read_body(response).await;
    assert!(error.is_none());
    assert_eq!(sse_data(&body).len(), 6);
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn invalid_requests_are_rejected_without_consuming_replies() {
    let provider = FakeProvider::start().await.unwrap();
    let client = client();
    provider.push(Reply::text("kept"));

    let response = client
        .post(chat_url(&provider))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let response = post(&client, chat_url(&provider), &json!({"model": "m"})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "messages");

    assert_eq!(provider.pending_replies(), 1);
    assert_eq!(provider.request_count(), 2);
    assert_eq!(
        provider.requests()[0].body,
        Value::String("{not json".into())
    );
}
