//! The OpenAPI document the gateway publishes describes its real answers: after creating a
//! little data, a sweep of endpoints (chats, runs, models, memories, integrations, keys, usage,
//! the admin catalog and users, devices, the meta endpoints) is checked field by field against
//! the schema the document gives for that operation and status. A field the schema does not
//! declare, a missing required field or a value of the wrong type fails, naming the operation
//! and the field.

use std::time::Duration;

use serde_json::{Map, Value, json};
use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A validator for the JSON Schema subset utoipa emits: `$ref` to components, `type` (one or a
/// list, `null` among them), `nullable`, `enum`, `minimum`, `properties`/`required`,
/// `additionalProperties`, `items`, `allOf`/`oneOf`/`anyOf`. An object schema with properties
/// and no `additionalProperties` is closed: an undeclared field is a mismatch.
struct Validator<'a> {
    doc: &'a Value,
}

impl Validator<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        match schema["$ref"].as_str() {
            Some(reference) => self
                .doc
                .pointer(reference.trim_start_matches('#'))
                .map(|target| self.resolve(target))
                .unwrap_or(&Value::Null),
            None => schema,
        }
    }

    /// The property names an object schema declares (across `allOf`); None = open.
    fn declared(&self, schema: &Value) -> Option<Vec<String>> {
        let schema = self.resolve(schema);
        if schema.get("additionalProperties").is_some() {
            return None;
        }
        let mut names: Vec<String> = schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        let mut closed = schema.get("properties").is_some();
        for part in schema["allOf"].as_array().into_iter().flatten() {
            names.extend(self.declared(part)?);
            closed = true;
        }
        closed.then_some(names)
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        self.check_with(schema, value, at, errors, true);
    }

    fn check_with(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        errors: &mut Vec<String>,
        closed: bool,
    ) {
        if schema.is_null() {
            errors.push(format!("{at}: the schema is missing (dangling $ref?)"));
            return;
        }
        let schema = self.resolve(schema);
        if schema == &Value::Bool(true) {
            return;
        }
        if let Some(parts) = schema["allOf"].as_array() {
            for part in parts {
                self.check_with(part, value, at, errors, false);
            }
            if closed {
                self.undeclared(schema, value, at, errors);
            }
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(variants) = schema[key].as_array() {
                let fits = variants.iter().any(|variant| {
                    let mut trial = Vec::new();
                    self.check(variant, value, at, &mut trial);
                    trial.is_empty()
                });
                if !fits {
                    let mut why = Vec::new();
                    for variant in variants {
                        self.check(variant, value, at, &mut why);
                    }
                    errors.push(format!(
                        "{at}: {value} fits none of the {key} variants ({})",
                        why.join("; ")
                    ));
                }
            }
        }
        if let Some(options) = schema["enum"].as_array()
            && !options.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {options:?}"));
        }
        let mut types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if schema["nullable"] == json!(true) {
            types.push("null");
        }
        if !types.is_empty() && !types.iter().any(|t| type_fits(t, value)) {
            errors.push(format!(
                "{at}: {value} is not of type {}",
                types.join(" | ")
            ));
            return;
        }
        if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), value.as_f64())
            && n < min
        {
            errors.push(format!("{at}: {n} is below the minimum {min}"));
        }
        if let Some(object) = value.as_object() {
            self.check_object(schema, object, at, errors, closed);
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, item) in array.iter().enumerate() {
                self.check(items, item, &format!("{at}[{i}]"), errors);
            }
        }
    }

    fn check_object(
        &self,
        schema: &Value,
        object: &Map<String, Value>,
        at: &str,
        errors: &mut Vec<String>,
        closed: bool,
    ) {
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                errors.push(format!("{at}.{name}: required but missing"));
            }
        }
        let properties = schema["properties"].as_object();
        for (name, field) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(property) => self.check(property, field, &format!("{at}.{name}"), errors),
                None => match schema.get("additionalProperties") {
                    Some(extra) if extra.is_object() => {
                        self.check(extra, field, &format!("{at}.{name}"), errors)
                    }
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{at}.{name}: not declared by the schema"))
                    }
                    _ if closed && properties.is_some() => {
                        errors.push(format!("{at}.{name}: not declared by the schema"))
                    }
                    _ => {}
                },
            }
        }
    }

    /// Fields of `value` that no part of an `allOf` declares.
    fn undeclared(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let (Some(declared), Some(object)) = (self.declared(schema), value.as_object()) else {
            return;
        };
        for name in object.keys() {
            if !declared.contains(name) {
                errors.push(format!("{at}.{name}: not declared by the schema"));
            }
        }
    }

    /// The errors of `body`, the answer `status` of `method path` (a path template), against
    /// the document.
    fn answer(&self, method: &str, path: &str, status: u16, body: &Value) -> Vec<String> {
        let operation = format!("{} {path} → {status}", method.to_uppercase());
        let Some(response) = self
            .doc
            .get("paths")
            .and_then(|p| p.get(path))
            .and_then(|item| item.get(method))
            .and_then(|op| op["responses"].get(status.to_string()))
        else {
            return vec![format!("{operation}: the document declares no such answer")];
        };
        let Some(schema) = response.pointer("/content/application~1json/schema") else {
            return vec![format!("{operation}: no application/json schema declared")];
        };
        let mut errors = Vec::new();
        self.check(schema, body, "body", &mut errors);
        errors
            .into_iter()
            .map(|e| format!("{operation}: {e}"))
            .collect()
    }
}

fn type_fits(t: &str, value: &Value) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

#[test]
fn the_validator_catches_mismatches() {
    let doc = json!({"components": {"schemas": {
        "Item": {"type": "object", "required": ["id"], "properties": {
            "id": {"type": "string"}, "n": {"type": ["integer", "null"], "minimum": 0}}},
        "Page": {"type": "object", "required": ["items"], "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}}}},
        "WithKey": {"allOf": [{"$ref": "#/components/schemas/Item"},
            {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}}]},
        "Maybe": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Item"}]},
    }}});
    let v = Validator { doc: &doc };
    let of = |name: &str, value: Value| {
        let mut errors = Vec::new();
        v.check(
            &json!({"$ref": format!("#/components/schemas/{name}")}),
            &value,
            "body",
            &mut errors,
        );
        errors
    };
    assert!(
        of(
            "Page",
            json!({"items": [{"id": "a", "n": null}, {"id": "b", "n": 2}]})
        )
        .is_empty()
    );
    assert_eq!(
        of("Page", json!({"items": [{"id": 1}]})),
        vec!["body.items[0].id: 1 is not of type string"]
    );
    assert_eq!(
        of("Page", json!({"items": [{"id": "a", "extra": true}]})),
        vec!["body.items[0].extra: not declared by the schema"]
    );
    assert_eq!(
        of("Page", json!({})),
        vec!["body.items: required but missing"]
    );
    assert_eq!(
        of("Item", json!({"id": "a", "n": -1})),
        vec!["body.n: -1 is below the minimum 0"]
    );
    assert!(of("WithKey", json!({"id": "a", "key": "k"})).is_empty());
    assert_eq!(
        of("WithKey", json!({"id": "a", "key": "k", "other": 1})),
        vec!["body.other: not declared by the schema"]
    );
    assert_eq!(
        of("WithKey", json!({"id": "a"})),
        vec!["body.key: required but missing"]
    );
    assert!(of("Maybe", Value::Null).is_empty());
    assert!(of("Maybe", json!({"id": "a"})).is_empty());
    assert_eq!(of("Maybe", json!(3)).len(), 1);
}

/// One call of the sweep: method, the operation's path template, the real path, the body.
struct Call {
    method: reqwest::Method,
    template: &'static str,
    path: String,
    body: Option<Value>,
}

fn get(template: &'static str, path: impl Into<String>) -> Call {
    Call {
        method: reqwest::Method::GET,
        template,
        path: path.into(),
        body: None,
    }
}

fn with_body(
    method: reqwest::Method,
    template: &'static str,
    path: impl Into<String>,
    body: Value,
) -> Call {
    Call {
        method,
        template,
        path: path.into(),
        body: Some(body),
    }
}

#[tokio::test]
async fn real_answers_match_the_published_schemas() -> R {
    use reqwest::Method as M;
    let mesh = Mesh::builder().start().await?;
    // A little data: a provider with a model and a key, a chat with a finished run, a memory,
    // an integration selected for the chat, an API key and a device enrollment.
    mesh.add_fake_model("http://127.0.0.1:9/v1").await?;
    let chat = mesh.create_chat("conformance").await?;
    let (run, _) = mesh
        .run_to_end(
            &chat,
            &json!({"message": "hello", "model": "auto"}),
            Duration::from_secs(60),
        )
        .await?;
    let (status, integration) = mesh
        .post_json(
            "/v1/me/integrations",
            &json!({"kind": "web_fetch", "name": "fetch"}),
        )
        .await?;
    assert_eq!(status, 201, "{integration}");
    let integration = integration["id"].as_str().unwrap_or_default().to_string();
    let doc: Value = mesh
        .http
        .get(mesh.url("/v1/openapi.json"))
        .send()
        .await?
        .json()
        .await?;
    let v = Validator { doc: &doc };

    let calls = vec![
        // Writes whose answers are checked too.
        with_body(
            M::POST,
            "/v1/chats",
            "/v1/chats",
            json!({"title": "second"}),
        ),
        with_body(
            M::POST,
            "/v1/me/memories",
            "/v1/me/memories",
            json!({"text": "I play the cello.", "tags": ["music"]}),
        ),
        with_body(
            M::PUT,
            "/v1/chats/{id}/tools",
            format!("/v1/chats/{chat}/tools"),
            json!({"integration_ids": [integration]}),
        ),
        with_body(
            M::POST,
            "/v1/me/api-keys",
            "/v1/me/api-keys",
            json!({"name": "script"}),
        ),
        with_body(
            M::PUT,
            "/v1/me/keys/{provider}",
            "/v1/me/keys/fp",
            json!({"api_key": "sk-conformance-1234"}),
        ),
        with_body(
            M::POST,
            "/v1/me/devices/enrollments",
            "/v1/me/devices/enrollments",
            json!({"name": "laptop"}),
        ),
        with_body(
            M::PUT,
            "/v1/admin/policies/{classification}",
            "/v1/admin/policies/restricted",
            json!({"required_tags": ["on-prem"]}),
        ),
        with_body(
            M::PATCH,
            "/v1/admin/models/{label}",
            "/v1/admin/models/fp:m",
            json!({"display_name": "Fake"}),
        ),
        // Reads.
        get("/v1", "/v1"),
        get("/v1/openapi.json", "/v1/openapi.json"),
        get("/v1/auth/config", "/v1/auth/config"),
        get("/readyz", "/readyz"),
        get("/v1/chats", "/v1/chats"),
        get("/v1/chats/{id}", format!("/v1/chats/{chat}")),
        get(
            "/v1/chats/{id}/messages",
            format!("/v1/chats/{chat}/messages"),
        ),
        get("/v1/runs/{id}", format!("/v1/runs/{run}")),
        get("/v1/models", "/v1/models"),
        get("/v1/me/memories", "/v1/me/memories"),
        get("/v1/me/memories", "/v1/me/memories?q=cello"),
        get("/v1/me/integrations", "/v1/me/integrations"),
        get(
            "/v1/me/integrations/{id}",
            format!("/v1/me/integrations/{integration}"),
        ),
        get("/v1/chats/{id}/tools", format!("/v1/chats/{chat}/tools")),
        get("/v1/me/api-keys", "/v1/me/api-keys"),
        get("/v1/me/keys", "/v1/me/keys"),
        get("/v1/me/usage", "/v1/me/usage"),
        get("/v1/admin/usage", "/v1/admin/usage"),
        get("/v1/admin/users", "/v1/admin/users"),
        get("/v1/admin/providers", "/v1/admin/providers"),
        get("/v1/admin/models", "/v1/admin/models"),
        get("/v1/admin/policies", "/v1/admin/policies"),
        get("/v1/me/devices", "/v1/me/devices"),
    ];
    let mut failures = Vec::new();
    let mut checked = Vec::new();
    for call in calls {
        let mut request = mesh.http.request(call.method.clone(), mesh.url(&call.path));
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let name = format!("{} {}", call.method, call.path);
        if !(200..300).contains(&status) {
            failures.push(format!("{name}: answered {status} {text}"));
            continue;
        }
        let body: Value = match serde_json::from_str(&text) {
            Ok(body) => body,
            Err(err) => {
                failures.push(format!("{name}: not JSON ({err}): {text}"));
                continue;
            }
        };
        let method = call.method.as_str().to_lowercase();
        failures.extend(v.answer(&method, call.template, status, &body));
        checked.push(name);
    }
    assert!(
        failures.is_empty(),
        "{} mismatches between the document and the answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked.len() >= 30, "{checked:?}");
    mesh.stop().await?;
    Ok(())
}
