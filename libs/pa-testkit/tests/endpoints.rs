//! Embeddings, models, unknown paths, request recording and the binary.

mod common;

use base64::Engine as _;
use common::{chat_body, client, post};
use pa_testkit::{FakeProvider, Reply, embedding_vector};
use serde_json::{Value, json};

fn vector(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .expect("embedding is an array")
        .iter()
        .map(|x| x.as_f64().expect("embedding holds numbers") as f32)
        .collect()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[tokio::test]
async fn embeddings_are_deterministic_and_sized() {
    let provider = FakeProvider::start().await.unwrap();
    let client = client();
    let url = format!("{}/embeddings", provider.base_url());

    // A single string, default dimensions.
    let response = post(
        &client,
        url.clone(),
        &json!({"model": "text-embedding-3-small", "input": "hello world"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "text-embedding-3-small");
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    assert_eq!(body["usage"]["total_tokens"], 2);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["object"], "embedding");
    assert_eq!(data[0]["index"], 0);
    let single = vector(&data[0]["embedding"]);
    assert_eq!(single.len(), 8);
    assert!((norm(&single) - 1.0).abs() < 1e-5);
    assert_eq!(single, embedding_vector("hello world", 8));

    // An array with dimensions: same text → same vector, other text → other vector.
    let request = json!({
        "model": "fake-embedding-model",
        "input": ["hello world", "goodbye", "hello world"],
        "dimensions": 32,
    });
    let first: Value = post(&client, url.clone(), &request)
        .await
        .json()
        .await
        .unwrap();
    let again: Value = post(&client, url.clone(), &request)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["data"], again["data"]);
    let data = first["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let vectors: Vec<Vec<f32>> = data.iter().map(|d| vector(&d["embedding"])).collect();
    for (i, (item, v)) in data.iter().zip(&vectors).enumerate() {
        assert_eq!(item["index"], i);
        assert_eq!(v.len(), 32);
        assert!((norm(v) - 1.0).abs() < 1e-5);
    }
    assert_eq!(vectors[0], vectors[2]);
    assert_ne!(vectors[0], vectors[1]);

    // base64: little-endian f32s, as OpenAI encodes them.
    let body: Value = post(
        &client,
        url.clone(),
        &json!({"model": "m", "input": "hello world", "encoding_format": "base64"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded, single);

    // Token-id inputs are accepted too.
    let body: Value = post(
        &client,
        url.clone(),
        &json!({"model": "m", "input": [[1, 2, 3], [4]]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["usage"]["prompt_tokens"], 4);

    // Invalid input / dimensions.
    for bad in [
        json!({"model": "m", "input": ""}),
        json!({"model": "m", "input": []}),
        json!({"model": "m", "input": [1, "x"]}),
        json!({"model": "m", "input": "x", "dimensions": 0}),
        json!({"input": "x"}),
    ] {
        let response = post(&client, url.clone(), &bad).await;
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
}

#[tokio::test]
async fn models_are_listed() {
    let provider = FakeProvider::start().await.unwrap();
    let client = client();
    let body: Value = client
        .get(format!("{}/models", provider.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().unwrap();
    assert!(data.len() >= 3);
    for model in data {
        assert_eq!(model["object"], "model");
        assert!(model["id"].is_string());
        assert!(model["created"].is_u64());
        assert!(model["owned_by"].is_string());
    }
    let model: Value = client
        .get(format!("{}/models/fake-model", provider.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(model["id"], "fake-model");
    let response = client
        .get(format!("{}/models/nope", provider.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn unknown_paths_are_openai_404s() {
    let provider = FakeProvider::start().await.unwrap();
    let client = client();
    let response = post(
        &client,
        format!("{}/responses", provider.base_url()),
        &json!({}),
    )
    .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Invalid URL (POST /v1/responses)");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["code"].is_null());

    // Wrong method on a known path.
    let response = client
        .get(format!("{}/chat/completions", provider.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(provider.request_count(), 2);
}

#[tokio::test]
async fn requests_are_recorded_in_order() {
    let provider = FakeProvider::start().await.unwrap();
    let client = client();
    provider.push(Reply::error(500, "boom"));
    let body = chat_body(true, true);
    post(
        &client,
        format!("{}/chat/completions", provider.base_url()),
        &body,
    )
    .await;
    client
        .get(format!("{}/models?limit=1", provider.base_url()))
        .header("OpenAI-Project", "proj_1")
        .send()
        .await
        .unwrap();
    client
        .delete(format!("{}/files/f1", provider.base_url()))
        .send()
        .await
        .unwrap();

    let requests = provider.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(provider.request_count(), 3);

    let chat = &requests[0];
    assert_eq!(chat.method, "POST");
    assert_eq!(chat.path, "/v1/chat/completions");
    assert_eq!(chat.authorization.as_deref(), Some("Bearer sk-test-key"));
    assert_eq!(chat.header("Authorization"), Some("Bearer sk-test-key"));
    assert_eq!(chat.header("content-type"), Some("application/json"));
    assert_eq!(chat.body, body);

    let models = &requests[1];
    assert_eq!(
        (models.method.as_str(), models.path.as_str()),
        ("GET", "/v1/models")
    );
    assert_eq!(models.authorization, None);
    assert_eq!(models.header("openai-project"), Some("proj_1"));
    assert_eq!(models.body, Value::Null);

    assert_eq!(requests[2].method, "DELETE");
    assert_eq!(provider.last_request().unwrap().path, "/v1/files/f1");

    provider.clear_requests();
    assert_eq!(provider.request_count(), 0);
}

#[tokio::test]
async fn binary_prints_base_url_and_serves() {
    use std::io::BufRead as _;

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pa-fake-provider"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first_line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    });
    let base_url = tokio::time::timeout(std::time::Duration::from_secs(30), first_line).await;
    let base_url = match base_url {
        Ok(Ok(Ok(line))) => line.trim().to_owned(),
        other => {
            let _ = child.kill();
            panic!("no base URL printed: {other:?}");
        }
    };
    let result = async {
        assert!(base_url.starts_with("http://127.0.0.1:"), "{base_url}");
        assert!(base_url.ends_with("/v1"), "{base_url}");
        let response = post(
            &client(),
            format!("{base_url}/chat/completions"),
            &chat_body(false, false),
        )
        .await;
        response.json::<Value>().await.unwrap()
    };
    let completion = tokio::time::timeout(std::time::Duration::from_secs(30), result).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        completion.unwrap()["choices"][0]["message"]["content"],
        "Hello from the fake provider."
    );
}
