//! The OpenAPI document served at /v1/openapi.json describes exactly the routes the gateway's
//! router registers, and declares the problem+json errors every endpoint can answer.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

/// The real router, with backends that refuse connections and no authenticator: every API call
/// is a 401 problem, which is enough to tell a routed request from the fallback's 404.
fn app() -> axum::Router {
    let mut config = svc_gateway::Config::from_env().expect("config from the environment");
    config.auth_mode = svc_gateway::AuthMode::Disabled;
    config.oidc = None;
    config.web_dir = None;
    config.worker_url = None;
    // Port 9 (discard) is closed here: /readyz answers "down" at once.
    for url in [
        &mut config.runs_url,
        &mut config.models_url,
        &mut config.tools_url,
        &mut config.memory_url,
    ] {
        *url = "http://127.0.0.1:9".into();
    }
    let state = svc_gateway::build_state(&config, pa_kit::Shutdown::new(), None).expect("state");
    svc_gateway::router(state)
}

async fn call(app: &axum::Router, method: Method, uri: &str) -> (StatusCode, String, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, content_type, body)
}

async fn document(app: &axum::Router) -> Value {
    let (status, content_type, doc) = call(app, Method::GET, "/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert!(doc.is_object(), "the document is JSON");
    doc
}

/// (method, path) of every operation in the document.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut ops = Vec::new();
    for (path, item) in paths {
        for (method, _) in item.as_object().expect("path item") {
            if ["get", "post", "put", "patch", "delete", "head", "options"]
                .contains(&method.as_str())
            {
                ops.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test]
async fn the_document_is_openapi_3_and_covers_every_route() {
    let app = app();
    let doc = document(&app).await;
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3."), "OpenAPI 3.x, got {version}");
    assert!(doc["info"]["title"].as_str().is_some_and(|t| !t.is_empty()));

    // Every route the router registers is documented …
    let routes = svc_gateway::routes();
    assert!(routes.len() > 40, "the route table is the router's");
    let documented = operations(&doc);
    let missing: Vec<String> = routes
        .iter()
        .filter(|(m, p)| !documented.contains(&(m.to_string(), p.to_string())))
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without OpenAPI docs: {missing:?}"
    );
    // … and nothing else is.
    let extra: Vec<String> = documented
        .iter()
        .filter(|(m, p)| !routes.iter().any(|(rm, rp)| rm.as_str() == m && rp == p))
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    // routes() and the router come from one table; this checks the router itself answers each
    // documented operation with a handler rather than the fallback or a 405.
    let app = app();
    let doc = document(&app).await;
    for (method, path) in operations(&doc) {
        let uri = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let uri = if uri.is_empty() { "/".to_string() } else { uri };
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let (status, _, body) = call(&app, method.clone(), &uri).await;
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            !detail.contains("no such endpoint") && !detail.contains("method not allowed"),
            "{method} {uri} is documented but not routed: {status} {body}"
        );
    }
}

#[tokio::test]
async fn errors_are_declared_as_problem_json() {
    let app = app();
    let doc = document(&app).await;
    let problem = &doc["components"]["schemas"]["Problem"];
    let properties = problem["properties"]
        .as_object()
        .expect("Problem properties");
    for field in ["type", "title", "status", "detail", "code"] {
        assert!(properties.contains_key(field), "Problem.{field}");
    }
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let schema = &op["responses"]["default"]["content"]["application/problem+json"]["schema"];
        assert_eq!(
            schema["$ref"], "#/components/schemas/Problem",
            "{method} {path} declares its problem+json errors"
        );
    }
    // A real error matches the declared shape.
    let (status, content_type, body) = call(&app, Method::GET, "/v1/chats").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(content_type, "application/problem+json");
    let body = body.as_object().expect("problem object");
    for key in body.keys() {
        assert!(
            properties.contains_key(key),
            "undeclared problem field {key}"
        );
    }
    for required in problem["required"].as_array().expect("required") {
        let required = required.as_str().expect("name");
        assert!(body.contains_key(required), "missing {required}");
    }
}

/// The properties of the JSON request body of `method path` in the document.
fn body_properties(doc: &Value, method: &str, path: &str) -> Vec<String> {
    let pointer = format!(
        "/paths/{}/{method}/requestBody/content/application~1json/schema/$ref",
        path.replace('~', "~0").replace('/', "~1")
    );
    let reference = doc.pointer(&pointer).and_then(Value::as_str).unwrap_or("");
    let schema = doc
        .pointer(reference.trim_start_matches('#'))
        .unwrap_or(&Value::Null);
    let mut names: Vec<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Two handlers' body types of the same Rust name (`CreateBody` of integrations and of
/// memories) once shared one schema name, and the document described one with the other's
/// fields: every request body is documented with its own fields.
#[tokio::test]
async fn request_bodies_of_the_same_rust_name_are_documented_apart() {
    let doc = document(&app()).await;
    let integration = body_properties(&doc, "post", "/v1/me/integrations");
    assert!(integration.contains(&"kind".to_string()), "{integration:?}");
    assert!(
        !integration.contains(&"text".to_string()),
        "{integration:?}"
    );
    let memory = body_properties(&doc, "post", "/v1/me/memories");
    assert!(memory.contains(&"text".to_string()), "{memory:?}");
    assert!(!memory.contains(&"kind".to_string()) || !memory.contains(&"secrets".to_string()));
    let patch = body_properties(&doc, "patch", "/v1/me/integrations/{id}");
    assert!(patch.contains(&"enabled".to_string()), "{patch:?}");
    assert!(!patch.contains(&"text".to_string()), "{patch:?}");
    let patch = body_properties(&doc, "patch", "/v1/me/memories/{id}");
    assert!(patch.contains(&"pinned".to_string()), "{patch:?}");
    assert!(!patch.contains(&"enabled".to_string()), "{patch:?}");
}

/// Nested fields that are free-form JSON objects by design (their shape is the integration
/// kind's, the AG-UI client's or the OpenAPI specification's), as `Schema.field`.
const FREE_FORM_FIELDS: &[&str] = &[
    "IntegrationJson.config",
    "IntegrationCreateBody.config",
    "IntegrationPatchBody.config",
    "RunAgentInput.messages",
    "RunAgentInput.tools",
    "RunAgentInput.state",
    "RunAgentInput.forwardedProps",
    "OpenApiDocumentJson.paths",
    "OpenApiDocumentJson.components",
    "OpenApiInfoJson.license",
];

/// A schema that says nothing of its value's shape: `{}` (what `serde_json::Value` renders
/// as), or an object without properties, typed additional properties or a composition.
fn is_free_form(schema: &Value) -> bool {
    let Some(map) = schema.as_object() else {
        return schema == &Value::Bool(true);
    };
    let shaped = [
        "$ref",
        "properties",
        "items",
        "allOf",
        "oneOf",
        "anyOf",
        "enum",
        "const",
    ]
    .iter()
    .any(|k| map.contains_key(*k));
    if shaped {
        return false;
    }
    let types: Vec<&str> = match &map.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return true, // no type: anything
    };
    if !types.contains(&"object") {
        return false;
    }
    match map.get("additionalProperties") {
        None | Some(Value::Bool(true)) => true,
        Some(Value::Bool(false)) => false,
        Some(inner) => is_free_form(inner),
    }
}

/// Every free-form schema reachable from `schema`, as paths like `IntegrationJson.config`
/// (`where_` names the place `schema` sits), skipping the allowed ones.
fn free_forms(doc: &Value, schema: &Value, where_: &str, seen: &mut Vec<String>) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference
            .rsplit('/')
            .next()
            .unwrap_or(reference)
            .to_string();
        if seen.contains(&name) {
            return found;
        }
        seen.push(name.clone());
        let target = doc
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or(&Value::Null);
        if target.is_null() {
            return vec![format!("{where_}: dangling {reference}")];
        }
        return free_forms(doc, target, &name, seen);
    }
    if is_free_form(schema) {
        if !FREE_FORM_FIELDS.contains(&where_) {
            found.push(where_.to_string());
        }
        return found;
    }
    if let Some(props) = schema["properties"].as_object() {
        let owner = where_.split('.').next().unwrap_or(where_);
        for (name, prop) in props {
            let place = format!("{owner}.{name}");
            if FREE_FORM_FIELDS.contains(&place.as_str()) {
                continue;
            }
            // A generic list (`Page_IntegrationJson`, `Items_PolicyJson`) inlines its element
            // schema: name the element's fields after the element type.
            let place = match owner.split_once('_') {
                Some(("Page" | "Items", element)) if name == "items" => element.to_string(),
                _ => place,
            };
            found.extend(free_forms(doc, prop, &place, seen));
        }
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        for part in schema[key].as_array().into_iter().flatten() {
            found.extend(free_forms(doc, part, where_, seen));
        }
    }
    if schema.get("items").is_some() {
        found.extend(free_forms(doc, &schema["items"], where_, seen));
    }
    if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        found.extend(free_forms(doc, extra, where_, seen));
    }
    found
}

/// Issue 22: every request and response body of the document is a typed schema — none is a
/// `serde_json::Value` (`{}`) or an object of unknown shape, at the top or inside.
#[test]
fn no_body_is_free_form_json() {
    let doc: Value = serde_json::from_str(svc_gateway::openapi::document()).expect("JSON");
    let mut offenders = Vec::new();
    let mut bodies = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let name = format!("{} {path}", method.to_uppercase());
            let mut contents = Vec::new();
            if let Some(content) = op["requestBody"]["content"].as_object() {
                contents.extend(content.iter().map(|(t, c)| (format!("request {t}"), c)));
            }
            for (status, response) in op["responses"].as_object().into_iter().flatten() {
                for (t, c) in response["content"].as_object().into_iter().flatten() {
                    contents.push((format!("{status} {t}"), c));
                }
            }
            for (place, content) in contents {
                bodies += 1;
                let schema = &content["schema"];
                if is_free_form(schema) {
                    offenders.push(format!("{name} ({place}): the body is free-form"));
                    continue;
                }
                for field in free_forms(&doc, schema, "body", &mut Vec::new()) {
                    offenders.push(format!("{name} ({place}): {field} is free-form"));
                }
            }
        }
    }
    assert!(bodies > 60, "only {bodies} bodies walked");
    assert!(
        offenders.is_empty(),
        "{} untyped bodies or fields:\n{}",
        offenders.len(),
        offenders.join("\n")
    );
}

#[test]
fn the_free_form_check_knows_a_value() {
    assert!(is_free_form(&serde_json::json!({})));
    assert!(is_free_form(&serde_json::json!({"type": "object"})));
    assert!(is_free_form(
        &serde_json::json!({"type": ["object", "null"], "additionalProperties": {}})
    ));
    assert!(!is_free_form(
        &serde_json::json!({"type": "object", "additionalProperties": {"type": "string"}})
    ));
    assert!(!is_free_form(
        &serde_json::json!({"$ref": "#/components/schemas/Problem"})
    ));
    assert!(!is_free_form(&serde_json::json!({"type": "string"})));
}
