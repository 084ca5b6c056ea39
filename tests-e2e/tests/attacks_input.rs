//! The bad-input sweep (issue 21 item 7): every operation of the gateway's own OpenAPI document
//! gets hostile input generated from the document itself — hostile path ids (NUL, 8,000
//! characters, control characters, `../`, invalid UTF-8, unicode, and another tenant's real
//! ids), NUL / huge / out-of-range query values, JSON bodies derived from the request schema
//! with NUL strings, 100k-character strings, 10k-element arrays and wrong types, malformed,
//! empty, 20 MiB and wrongly typed bodies, and the methods a path does not declare. Every answer
//! must be a 4xx `application/problem+json` with a stable `code` that never echoes the hostile
//! id or a NUL; afterwards the mesh is healthy, a chat turn still runs end to end, and the other
//! tenant's data is exactly as it was. A route added to the document is swept automatically.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The 8,000-character id: no answer may repeat it (nor a long piece of it).
const LONG_ID_CHAR: char = 'Q';
const LONG_ID_LEN: usize = 8_000;
/// A piece of the long id that an answer must not contain.
const LONG_ID_PIECE: usize = 64;
const PER_REQUEST: Duration = Duration::from_secs(20);
const CONCURRENCY: usize = 6;

/// A client acting as a dev user of a tenant (dev auth headers on every request).
fn client(user: &str, tenant: &str, roles: &str) -> Result<reqwest::Client, BoxError> {
    let mut headers = HeaderMap::new();
    headers.insert("x-pa-dev-user", HeaderValue::from_str(user)?);
    headers.insert("x-pa-dev-tenant", HeaderValue::from_str(tenant)?);
    headers.insert("x-pa-dev-roles", HeaderValue::from_str(roles)?);
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .timeout(PER_REQUEST)
        .pool_max_idle_per_host(16)
        .build()?)
}

// ---- the OpenAPI document ---------------------------------------------------------------------

/// Follows a `$ref` to `#/components/schemas/…` (once per level, at most 16 levels).
fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
            break;
        };
        let pointer = reference.trim_start_matches('#');
        match doc.pointer(pointer) {
            Some(target) => schema = target,
            None => break,
        }
    }
    schema
}

/// The schema's type other than `null` (`"type": ["string", "null"]`, `oneOf: [null, X]` …),
/// with the schema that carries it.
fn kind<'a>(doc: &'a Value, schema: &'a Value) -> (Option<&'a str>, &'a Value) {
    let schema = resolve(doc, schema);
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if let Some(options) = schema.get(combinator).and_then(Value::as_array) {
            for option in options {
                let (k, s) = kind(doc, option);
                if k.is_some_and(|k| k != "null") {
                    return (k, s);
                }
            }
        }
    }
    let k = match schema.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ if schema.get("properties").is_some() => Some("object"),
        _ => None,
    };
    (k, schema)
}

/// A plausible value of a schema (every property present), to mutate one slot at a time.
fn baseline(doc: &Value, schema: &Value, depth: usize) -> Value {
    value_of(doc, schema, depth, false)
}

/// The smallest valid-looking value: only the required properties.
fn minimal(doc: &Value, schema: &Value) -> Value {
    value_of(doc, schema, 0, true)
}

fn value_of(doc: &Value, schema: &Value, depth: usize, required_only: bool) -> Value {
    let (k, schema) = kind(doc, schema);
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.iter().find(|v| !v.is_null()))
    {
        return first.clone();
    }
    // A documented example is a value the handler takes.
    if let Some(example) = schema
        .get("example")
        .or_else(|| schema.pointer("/examples/0"))
        .filter(|e| !e.is_null())
    {
        return example.clone();
    }
    if depth > 6 {
        return Value::Null;
    }
    match k {
        Some("object") => {
            let mut object = serde_json::Map::new();
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    if !required_only || required.contains(&name.as_str()) {
                        object.insert(name.clone(), value_of(doc, prop, depth + 1, required_only));
                    }
                }
            }
            if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object())
                && !required_only
            {
                object.insert(
                    "sweep_key".into(),
                    value_of(doc, extra, depth + 1, required_only),
                );
            }
            Value::Object(object)
        }
        Some("array") => match schema.get("items") {
            Some(items) => json!([value_of(doc, items, depth + 1, false)]),
            None => json!([]),
        },
        Some("string") => json!("sweep"),
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(false),
        _ => json!("sweep"),
    }
}

/// Every slot (a JSON pointer into the baseline) with its type, depth first.
fn slots(
    doc: &Value,
    schema: &Value,
    pointer: &str,
    depth: usize,
    out: &mut Vec<(String, String)>,
) {
    if depth > 6 {
        return;
    }
    let (k, schema) = kind(doc, schema);
    if !pointer.is_empty() {
        out.push((pointer.to_string(), k.unwrap_or("any").to_string()));
    }
    match k {
        Some("object") => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    let escaped = name.replace('~', "~0").replace('/', "~1");
                    slots(doc, prop, &format!("{pointer}/{escaped}"), depth + 1, out);
                }
            }
            if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                slots(doc, extra, &format!("{pointer}/sweep_key"), depth + 1, out);
            }
        }
        Some("array") => {
            if let Some(items) = schema.get("items") {
                slots(doc, items, &format!("{pointer}/0"), depth + 1, out);
            }
        }
        _ => {}
    }
}

/// One request of the sweep and what it is (for the report).
#[derive(Clone)]
struct Case {
    what: String,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    headers: Vec<(String, String)>,
    /// 405 with `Allow` expected.
    expect_405: bool,
}

impl Case {
    fn new(what: String, method: Method, path: String) -> Case {
        Case {
            what,
            method,
            path,
            content_type: None,
            body: None,
            headers: Vec::new(),
            expect_405: false,
        }
    }

    fn json(mut self, body: &Value) -> Case {
        self.content_type = Some("application/json");
        self.body = Some(body.to_string().into_bytes());
        self
    }

    fn raw(mut self, content_type: Option<&'static str>, body: Vec<u8>) -> Case {
        self.content_type = content_type;
        self.body = Some(body);
        self
    }
}

/// Fills a path template's `{params}` with `value` (already percent-encoded as needed).
fn fill(template: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                out.push_str(value);
                rest = &rest[start + end + 1..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Minimal percent-encoding of an id for a path segment (what a client would send).
fn encode_segment(id: &str) -> String {
    let mut out = String::new();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every request of the sweep, generated from the document. `real_ids` are another tenant's
/// objects (their ids must not be reachable).
fn cases(
    doc: &Value,
    real_ids: &[String],
    own: &std::collections::HashMap<String, String>,
) -> Vec<Case> {
    let long_id: String = std::iter::repeat_n(LONG_ID_CHAR, LONG_ID_LEN).collect();
    let mut hostile_ids: Vec<(String, String)> = vec![
        ("NUL id".into(), "a%00b".into()),
        ("8,000-character id".into(), long_id.clone()),
        ("control-character id".into(), "a%01b%0Ac%7F".into()),
        ("traversal id".into(), "..%2F..%2F..%2Fetc%2Fpasswd".into()),
        ("invalid UTF-8 id".into(), "%FF%FE".into()),
        (
            "unicode id".into(),
            encode_segment("ünï\u{202e}cødé💥\u{fffd}"),
        ),
        ("SQL-ish id".into(), encode_segment("' OR '1'='1")),
    ];
    for id in real_ids {
        hostile_ids.push((format!("the other tenant's id {id}"), encode_segment(id)));
    }

    let mut out = Vec::new();
    let Some(paths) = doc["paths"].as_object() else {
        return out;
    };
    for (template, item) in paths {
        let has_params = template.contains('{');
        // A path id the sweeping user does not have: the handler's own checks answer.
        // A path of the sweeping user's own object when there is one (so the handler's field
        // checks answer, not its 404), else of the other tenant's (404 expected).
        let other_path = template
            .find("/{")
            .and_then(|i| own.get(&template[..i]))
            .map(|id| fill(template, &encode_segment(id)))
            .or_else(|| {
                real_ids
                    .first()
                    .map(|id| fill(template, &encode_segment(id)))
            })
            .unwrap_or_else(|| fill(template, "nobody"));
        // Undeclared methods: 405 with Allow.
        for method in METHODS {
            if item.get(method).is_none() {
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap_or(Method::GET);
                let mut case = Case::new(
                    format!("undeclared {method}"),
                    m,
                    fill(template, "sweep-id"),
                );
                case.expect_405 = true;
                if method != "get" && method != "delete" {
                    case = case.json(&json!({}));
                }
                out.push(case);
            }
        }
        for method in METHODS {
            let Some(op) = item.get(method) else {
                continue;
            };
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap_or(Method::GET);
            let label = format!("{} {template}", method.to_uppercase());
            let body_schema = op
                .pointer("/requestBody/content/application~1json/schema")
                .cloned();
            let raw_body = op.get("requestBody").is_some() && body_schema.is_none();
            let base_body = body_schema.as_ref().map(|s| baseline(doc, s, 0));
            let with_base = |case: Case| match (&base_body, raw_body) {
                (Some(b), _) => case.json(b),
                (None, true) => case.raw(Some("text/plain"), b"sweep".to_vec()),
                _ => case,
            };

            // Hostile path ids (every parameter at once).
            if has_params {
                for (what, id) in &hostile_ids {
                    out.push(with_base(Case::new(
                        format!("{label}: {what}"),
                        m.clone(),
                        fill(template, id),
                    )));
                }
            }

            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            // The documented query parameters.
            for param in params.iter().filter(|p| p["in"] == "query") {
                let name = param["name"].as_str().unwrap_or_default();
                let schema = param.get("schema").cloned().unwrap_or(Value::Null);
                let (k, s) = kind(doc, &schema);
                let mut values: Vec<(&str, String)> = vec![
                    ("NUL", "a%00b".into()),
                    ("huge", "h".repeat(10_000)),
                    ("invalid UTF-8", "%FF%FE".into()),
                ];
                match k {
                    Some("integer") | Some("number") => {
                        for v in ["0", "-1", "1000000000000", "abc", "1.5"] {
                            values.push(("out of range", v.into()));
                        }
                    }
                    Some("boolean") => values.push(("not a boolean", "abc".into())),
                    _ if s.get("enum").is_some() => values.push(("not in the enum", "abc".into())),
                    _ => {}
                }
                for (what, value) in values {
                    let path = if has_params {
                        other_path.clone()
                    } else {
                        template.clone()
                    };
                    out.push(with_base(Case::new(
                        format!(
                            "{label}: query {name} {what} ({})",
                            &value[..value.len().min(20)]
                        ),
                        m.clone(),
                        format!("{path}?{name}={value}"),
                    )));
                }
            }
            // An undocumented query parameter with a NUL, and a header parameter's junk.
            out.push(with_base(Case::new(
                format!("{label}: undocumented query with NUL"),
                m.clone(),
                format!("{}?sweep%00=%00", fill(template, "sweep-id")),
            )));
            for param in params.iter().filter(|p| p["in"] == "header") {
                let name = param["name"].as_str().unwrap_or_default().to_string();
                for value in [long_id.clone(), "abc\tdef".to_string()] {
                    let mut case = with_base(Case::new(
                        format!("{label}: header {name} junk"),
                        m.clone(),
                        fill(template, "sweep-id"),
                    ));
                    case.headers.push((name.clone(), value));
                    out.push(case);
                }
            }

            // Bodies.
            // An operation without a request body ignores one: nothing to refuse.
            if !(matches!(method, "post" | "put" | "patch")) || op.get("requestBody").is_none() {
                continue;
            }
            let path = if has_params {
                other_path.clone()
            } else {
                template.clone()
            };
            let case = |what: &str| Case::new(format!("{label}: {what}"), m.clone(), path.clone());
            out.push(
                case("malformed JSON").raw(Some("application/json"), b"{\"a\": [1, 2".to_vec()),
            );
            out.push(case("NUL in a key").json(&json!({"sweep\u{0}key": 1})));
            out.push(case("a bare NUL string").json(&json!("\u{0}")));
            out.push(case("20 MiB body").raw(Some("application/json"), {
                let mut big = b"{\"sweep\": \"".to_vec();
                big.resize(20 * 1024 * 1024, b'z');
                big.extend_from_slice(b"\"}");
                big
            }));
            out.push(case("invalid UTF-8 body").raw(
                Some("application/json"),
                b"{\"title\": \"\xff\xfe\"}".to_vec(),
            ));
            if raw_body {
                out.push(
                    case("wrong Content-Type").raw(Some("application/x-sweep"), b"sweep".to_vec()),
                );
                continue;
            }
            // An optional body may be empty; a required one may not.
            let required = op["requestBody"]["required"].as_bool().unwrap_or(false);
            if required {
                out.push(case("empty body").raw(Some("application/json"), Vec::new()));
            }
            let full = base_body.clone().unwrap_or(json!({}));
            let base = body_schema
                .as_ref()
                .map(|s| minimal(doc, s))
                .unwrap_or(json!({}));
            if required || has_params {
                out.push(case("wrong Content-Type").raw(
                    Some("application/x-www-form-urlencoded"),
                    base.to_string().into_bytes(),
                ));
            }
            let mut targets = Vec::new();
            if let Some(schema) = &body_schema {
                slots(doc, schema, "", 0, &mut targets);
            }
            if targets.is_empty() {
                // A free-form body: NUL and size inside an object.
                out.push(case("free-form body with NUL").json(&json!({"sweep": "a\u{0}b"})));
                out.push(
                    case("free-form body with a NUL id")
                        .json(&json!({"threadId": "a\u{0}b", "runId": "x"})),
                );
                continue;
            }
            for (pointer, k) in targets {
                let mut mutations: Vec<(&str, Value)> = Vec::new();
                match k.as_str() {
                    "string" | "any" => {
                        mutations.push(("NUL string", json!("sweep\u{0}nul")));
                        mutations.push(("100k string", json!("s".repeat(100_000))));
                        if k == "string" {
                            mutations.push(("wrong type", json!(12345)));
                        }
                    }
                    "integer" | "number" => {
                        mutations.push(("negative", json!(-1)));
                        mutations.push(("huge", json!(1_000_000_000_000_000_000u64)));
                        mutations.push(("wrong type", json!("abc")));
                    }
                    "boolean" => mutations.push(("wrong type", json!("abc"))),
                    "array" => {
                        let item = full
                            .pointer(&format!("{pointer}/0"))
                            .cloned()
                            .unwrap_or(json!("sweep"));
                        mutations.push(("10k elements", Value::Array(vec![item; 10_000])));
                        mutations.push(("wrong type", json!("abc")));
                    }
                    "object" => mutations.push(("wrong type", json!("abc"))),
                    _ => {}
                }
                // The minimal body, with the mutated slot's top-level property from the full one.
                let mut with_slot = base.clone();
                let top = pointer.split('/').nth(1).unwrap_or_default().to_string();
                if let (Some(object), Some(value)) = (with_slot.as_object_mut(), full.get(&top))
                    && !object.contains_key(&top)
                {
                    object.insert(top.clone(), value.clone());
                }
                for (what, value) in mutations {
                    let mut body = with_slot.clone();
                    if let Some(slot) = body.pointer_mut(&pointer) {
                        *slot = value;
                        out.push(case(&format!("body {pointer} {what}")).json(&body));
                    }
                }
            }
        }
    }
    out
}

/// What is wrong with one answer (None: a proper refusal).
async fn judge(http: &reqwest::Client, base: &str, case: &Case) -> Option<String> {
    let verdict = judge_inner(http, base, case).await;
    if let Ok(log) = std::env::var("PA_SWEEP_LOG") {
        use std::io::Write;
        let path: String = case.path.chars().take(100).collect();
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(
                f,
                "{} {path} | {} | {} {:?} {}",
                case.method, case.what, verdict.0, verdict.2, verdict.1
            );
        }
    }
    verdict.2
}

async fn judge_inner(
    http: &reqwest::Client,
    base: &str,
    case: &Case,
) -> (u16, String, Option<String>) {
    let mut request = http.request(case.method.clone(), format!("{base}{}", case.path));
    if let Some(ct) = case.content_type {
        request = request.header("content-type", ct);
    }
    for (name, value) in &case.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if let Some(body) = &case.body {
        request = request.body(body.clone());
    }
    let response = match tokio::time::timeout(PER_REQUEST, request.send()).await {
        Err(_) => return (0, String::new(), Some("no answer in time (a hang)".into())),
        Ok(Err(err)) => return (0, String::new(), Some(format!("no answer: {err}"))),
        Ok(Ok(r)) => r,
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = match tokio::time::timeout(PER_REQUEST, response.bytes()).await {
        Ok(Ok(b)) => b,
        Ok(Err(err)) => {
            return (
                status,
                String::new(),
                Some(format!("{status}, body unreadable: {err}")),
            );
        }
        Err(_) => {
            return (
                status,
                String::new(),
                Some(format!("{status}, the body never ended (a hang)")),
            );
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let short: String = text.chars().take(300).collect();
    let mut problems = Vec::new();
    if !(400..500).contains(&status) {
        problems.push(format!("status {status}"));
    }
    // 499 (cancelled) is what a caller sees when a backend connection broke under it, and a
    // 429 without Retry-After is not a rate limit (this mesh has none): both are failures.
    if status == 499 {
        problems.push("499: a call was cancelled (a broken backend connection?)".into());
    }
    if status == 429 && !headers.contains_key("retry-after") {
        problems.push("429 without Retry-After".into());
    }
    for leak in [
        "protocol error",
        "transport error",
        "http2 error",
        "connect error",
    ] {
        if text.contains(leak) {
            problems.push(format!("the answer repeats a library error ({leak})"));
        }
    }
    if case.expect_405 {
        if status != 405 {
            problems.push(format!("{status} instead of 405"));
        }
        if !headers.contains_key("allow") {
            problems.push("a 405 without Allow".into());
        }
    }
    if !content_type.starts_with("application/problem+json") {
        problems.push(format!("content-type {content_type:?}"));
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(body) => {
                let code = body["code"].as_str().unwrap_or("");
                if code.is_empty() || !code.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    problems.push(format!("no stable code: {short}"));
                }
                if body["status"] != json!(status) {
                    problems.push(format!("status field {} != {status}", body["status"]));
                }
            }
            Err(_) => problems.push("problem+json that is not JSON".into()),
        }
    }
    let piece: String = std::iter::repeat_n(LONG_ID_CHAR, LONG_ID_PIECE).collect();
    if text.contains(&piece) {
        problems.push("the answer echoes the long id".into());
    }
    if headers
        .iter()
        .any(|(_, v)| String::from_utf8_lossy(v.as_bytes()).contains(&piece))
    {
        problems.push("a header echoes the long id".into());
    }
    if bytes.contains(&0) || text.contains("\\u0000") {
        problems.push("the answer echoes a NUL".into());
    }
    if problems.is_empty() {
        (status, short, None)
    } else {
        (
            status,
            short.clone(),
            Some(format!("{} — {short}", problems.join("; "))),
        )
    }
}

/// Everything user A can read about their own data (compared before and after the sweep).
async fn snapshot(
    a: &reqwest::Client,
    base: &str,
    chat: &str,
    run: &str,
) -> Result<Value, BoxError> {
    let mut out = serde_json::Map::new();
    for path in [
        format!("/v1/chats/{chat}"),
        format!("/v1/chats/{chat}/messages"),
        format!("/v1/chats/{chat}/tools"),
        format!("/v1/runs/{run}"),
        "/v1/chats".to_string(),
        "/v1/me/memories".to_string(),
        "/v1/me/integrations".to_string(),
        "/v1/me/api-keys".to_string(),
        "/v1/me/keys".to_string(),
        "/v1/me/devices".to_string(),
        "/v1/admin/providers".to_string(),
        "/v1/admin/models".to_string(),
        "/v1/admin/policies".to_string(),
        "/v1/admin/users".to_string(),
        "/v1/models".to_string(),
    ] {
        let r = a.get(format!("{base}{path}")).send().await?;
        let status = r.status().as_u16();
        let mut body: Value = r.json().await.unwrap_or(Value::Null);
        // What changes by itself: when a key or user was last seen.
        if let Some(items) = body.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                if let Some(o) = item.as_object_mut() {
                    o.remove("last_used_at");
                    o.remove("last_seen_at");
                    o.remove("last_sign_in_at");
                }
            }
        }
        out.insert(path, json!({"status": status, "body": body}));
    }
    Ok(Value::Object(out))
}

/// POSTs `body` to `path` as `who`, expecting `status`; returns the answer.
async fn post(
    who: &reqwest::Client,
    url: String,
    body: Value,
    expect: u16,
) -> Result<Value, BoxError> {
    let r = who.post(url).json(&body).send().await?;
    let status = r.status().as_u16();
    let answer: Value = r.json().await.unwrap_or(Value::Null);
    if status != expect {
        return Err(format!("{status} (expected {expect}): {answer}").into());
    }
    Ok(answer)
}

/// Creates a chat as `who`, runs one turn in it and reads the events to RUN_FINISHED.
async fn chat_turn(
    who: &reqwest::Client,
    base: &str,
    message: &str,
) -> Result<(String, String), BoxError> {
    let chat = post(
        who,
        format!("{base}/v1/chats"),
        json!({"title": "sweep"}),
        201,
    )
    .await?;
    let chat_id = chat["id"].as_str().unwrap_or_default().to_string();
    let run = post(
        who,
        format!("{base}/v1/chats/{chat_id}/runs"),
        json!({"message": message}),
        202,
    )
    .await?;
    let run_id = run["run_id"].as_str().unwrap_or_default().to_string();
    let response = who
        .get(format!("{base}/v1/runs/{run_id}/events"))
        .send()
        .await?;
    let events = tokio::time::timeout(Duration::from_secs(30), tests_e2e::read_sse(response, None))
        .await??;
    let last = events.last().map(|e| e.event_type().to_string());
    if last.as_deref() != Some("RUN_FINISHED") {
        return Err(format!("the run ended with {last:?}").into());
    }
    Ok((chat_id, run_id))
}

#[tokio::test]
async fn every_route_refuses_hostile_input_with_problem_json_and_the_mesh_stays_healthy() -> R {
    let mesh = Mesh::builder().start().await?;
    let base = mesh.gateway_url.clone();
    let alice = client("sweep-alice", "sweep-t1", "user,admin")?;
    let mallory = client("sweep-mallory", "sweep-t2", "user,admin")?;

    // Tenant T1's data, made before the sweep.
    let (chat_id, run_id) = chat_turn(&alice, &base, "hello before the sweep").await?;
    let memory = post(
        &alice,
        format!("{base}/v1/me/memories"),
        json!({"text": "alice likes tea", "tags": ["drinks"]}),
        201,
    )
    .await?;
    let integration = post(
        &alice,
        format!("{base}/v1/me/integrations"),
        json!({"kind": "web_fetch", "name": "alice fetch"}),
        201,
    )
    .await?;
    let api_key = post(
        &alice,
        format!("{base}/v1/me/api-keys"),
        json!({"name": "alice script"}),
        201,
    )
    .await?;
    let mut real_ids = vec![chat_id.clone(), run_id.clone(), "sweep-alice".to_string()];
    for object in [&memory, &integration, &api_key] {
        if let Some(id) = object["id"].as_str() {
            real_ids.push(id.to_string());
        }
    }
    let before = snapshot(&alice, &base, &chat_id, &run_id).await?;

    let doc: Value = mesh
        .http
        .get(format!("{base}/v1/openapi.json"))
        .send()
        .await?
        .json()
        .await?;
    // The sweeping user's own objects, so field checks behind an id are reached too: the id of
    // the first item each listing of the document answers with.
    let (own_chat, own_run) = chat_turn(&mallory, &base, "mallory's own chat").await?;
    post(
        &mallory,
        format!("{base}/v1/me/memories"),
        json!({"text": "mallory's note"}),
        201,
    )
    .await?;
    post(
        &mallory,
        format!("{base}/v1/me/integrations"),
        json!({"kind": "web_fetch", "name": "m"}),
        201,
    )
    .await?;
    let mut own = std::collections::HashMap::new();
    own.insert("/v1/runs".to_string(), own_run);
    let listings: Vec<String> = doc["paths"]
        .as_object()
        .map(|p| {
            p.iter()
                .filter(|(t, i)| !t.contains('{') && i.get("get").is_some())
                .map(|(t, _)| t.clone())
                .collect()
        })
        .unwrap_or_default();
    for listing in listings {
        let Ok(r) = mallory.get(format!("{base}{listing}")).send().await else {
            continue;
        };
        let page: Value = r.json().await.unwrap_or(Value::Null);
        if let Some(id) = page.pointer("/items/0/id").and_then(Value::as_str) {
            own.insert(listing, id.to_string());
        }
    }
    own.entry("/v1/chats".to_string()).or_insert(own_chat);
    let cases = cases(&doc, &real_ids, &own);
    let operations: usize = doc["paths"]
        .as_object()
        .map(|p| {
            p.values()
                .map(|i| METHODS.iter().filter(|m| i.get(**m).is_some()).count())
                .sum()
        })
        .unwrap_or(0);
    assert!(
        operations >= 50,
        "the document lists {operations} operations"
    );
    eprintln!(
        "sweeping {operations} operations with {} requests",
        cases.len()
    );

    let started = std::time::Instant::now();
    let failures: Vec<String> = futures::stream::iter(cases.iter())
        .map(|case| {
            let mallory = mallory.clone();
            let base = base.clone();
            async move {
                judge(&mallory, &base, case).await.map(|problem| {
                    let path: String = case.path.chars().take(120).collect();
                    format!("{} [{} {path}]: {problem}", case.what, case.method)
                })
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    eprintln!("swept in {:?}", started.elapsed());
    for failure in &failures {
        eprintln!("FAIL {failure}");
    }

    // Healthy afterwards.
    for path in ["/healthz", "/readyz"] {
        let status = mesh
            .http
            .get(format!("{base}{path}"))
            .send()
            .await?
            .status();
        assert_eq!(status, 200, "{path} after the sweep");
    }
    // The other tenant's data is as it was, and a chat turn still runs end to end.
    let after = snapshot(&alice, &base, &chat_id, &run_id).await?;
    assert_eq!(before, after, "tenant T1's data changed during the sweep");
    chat_turn(&alice, &base, "hello after the sweep").await?;
    chat_turn(&mallory, &base, "mallory after the sweep").await?;

    assert!(
        failures.is_empty(),
        "{} of {} hostile requests were not a clean 4xx problem+json:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    mesh.stop().await
}

/// Behind the gateway too: a service reached directly (an internal caller that skipped the
/// validation layer) answers a NUL that Postgres refuses with InvalidArgument, not Internal.
#[tokio::test]
async fn a_nul_that_postgres_refuses_is_invalid_argument_not_internal() -> R {
    use pa_proto::v1::CreateChatRequest;
    use pa_proto::v1::run_service_client::RunServiceClient;

    let mesh = Mesh::builder().start().await?;
    let mut runs = RunServiceClient::connect(mesh.runs_url.clone()).await?;
    let who = Mesh::identity("sweep-t1", "sweep-alice");
    let status = runs
        .create_chat(mesh.auth.request(
            &who,
            CreateChatRequest {
                title: "a\u{0}b".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a NUL in a title is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get("x-pa-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("bad_request")
    );
    assert!(!status.message().contains('\u{0}'));
    // The service is fine afterwards.
    let chat = runs
        .create_chat(mesh.auth.request(
            &who,
            CreateChatRequest {
                title: "fine".into(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    assert_eq!(chat.title, "fine");
    mesh.stop().await
}
