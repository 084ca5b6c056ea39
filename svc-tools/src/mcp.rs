//! MCP client (rmcp): a user's MCP servers, over stdio (a child process in the sandbox of
//! `sandbox.rs`, with only the environment it allows, killed when the call ends) or streamable HTTP (through the guarded client, so
//! the same address rules as web_fetch apply). Each listing and each call opens its own session
//! and closes it afterwards: nothing long-lived to leak, and a server that died is simply
//! started again on the next call. Every failure comes back as a message for the model.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, ReadResourceRequestParams};
use rmcp::service::RunningService;
use rmcp::transport::common::client_side_sse::NeverRetry;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value};

use crate::netguard::NetGuard;
use crate::sandbox::Sandbox;

/// The longest schema we accept for one tool.
const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Text handed back to the model from one call.
const MAX_RESULT_CHARS: usize = 40_000;

/// Where a server is.
#[derive(Clone, Debug)]
pub enum Target {
    Stdio {
        command: String,
        args: Vec<String>,
        /// The integration's own variables (config.env and env:<NAME> secrets).
        env: BTreeMap<String, String>,
        /// The integration asked for the network (honoured if the operator allows it).
        network: bool,
        sandbox: Sandbox,
    },
    Http {
        url: String,
        headers: BTreeMap<String, String>,
        bearer: Option<String>,
    },
}

/// One tool as the server lists it.
#[derive(Clone, Debug)]
pub struct McpTool {
    pub name: String,
    pub description: String,
    pub schema: Value,
    pub read_only: bool,
}

#[derive(Clone, Debug)]
pub struct McpResource {
    pub uri: String,
    pub name: String,
    pub description: String,
}

#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub tools: Vec<McpTool>,
    pub resources: Vec<McpResource>,
}

async fn connect(
    target: &Target,
    guard: &NetGuard,
) -> Result<RunningService<RoleClient, ()>, String> {
    match target {
        Target::Stdio {
            command,
            args,
            env,
            network,
            sandbox,
        } => {
            let mut cmd = sandbox.command(command, args, env, *network)?;
            cmd.kill_on_drop(true);
            let (transport, _) = TokioChildProcess::builder(cmd)
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("the MCP server could not be started: {e}"))?;
            ().serve(transport)
                .await
                .map_err(|e| format!("the MCP server did not start a session: {e}"))
        }
        Target::Http {
            url,
            headers,
            bearer,
        } => {
            let parsed =
                url::Url::parse(url).map_err(|e| format!("the MCP server URL is invalid: {e}"))?;
            guard.check_url(&parsed).map_err(|e| e.to_string())?;
            let mut custom = HashMap::new();
            for (name, value) in headers {
                let name = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("invalid header name {name:?}"))?;
                let value = http::HeaderValue::from_str(value)
                    .map_err(|_| format!("invalid value for header {name}"))?;
                custom.insert(name, value);
            }
            let mut config =
                StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(custom);
            if let Some(token) = bearer {
                config = config.auth_header(token.clone());
            }
            // A broken stream is the call's end: each call is its own short session, so there
            // is nothing to resume, and retrying would only hold the run until the timeout.
            config.retry_config = std::sync::Arc::new(NeverRetry::default());
            let transport = StreamableHttpClientTransport::with_client(guard.client(), config);
            ().serve(transport)
                .await
                .map_err(|e| format!("the MCP server did not start a session: {e}"))
        }
    }
}

/// Runs `body` on a fresh session within `timeout`, then closes the session (a stdio server is
/// killed).
async fn with_session<T, F, Fut>(
    target: &Target,
    guard: &NetGuard,
    timeout: Duration,
    body: F,
) -> Result<T, String>
where
    F: FnOnce(RunningService<RoleClient, ()>) -> Fut,
    Fut: Future<Output = (Result<T, String>, RunningService<RoleClient, ()>)>,
{
    let work = async {
        let session = connect(target, guard).await?;
        let (result, session) = body(session).await;
        // Closing may fail if the server is gone; the result stands either way.
        let _ = tokio::time::timeout(Duration::from_secs(2), session.cancel()).await;
        result
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the MCP server did not answer within {} s",
            timeout.as_secs()
        )),
    }
}

/// Checks a tool's input schema: a JSON object schema of bounded size.
pub fn validate_schema(schema: &Value) -> Result<(), String> {
    let Some(object) = schema.as_object() else {
        return Err("its input schema is not a JSON object".into());
    };
    match object.get("type").and_then(Value::as_str) {
        Some("object") => {}
        _ => return Err("its input schema is not of type \"object\"".into()),
    }
    if let Some(properties) = object.get("properties")
        && !properties.is_object()
    {
        return Err("its input schema's properties is not an object".into());
    }
    if let Some(required) = object.get("required")
        && !required
            .as_array()
            .is_some_and(|r| r.iter().all(Value::is_string))
    {
        return Err("its input schema's required is not a list of names".into());
    }
    if schema.to_string().len() > MAX_SCHEMA_BYTES {
        return Err(format!("its input schema is over {MAX_SCHEMA_BYTES} bytes"));
    }
    Ok(())
}

/// The server's tools and resources.
pub async fn list(target: &Target, guard: &NetGuard, timeout: Duration) -> Result<Listing, String> {
    with_session(target, guard, timeout, |session| async move {
        let result = async {
            let tools = session
                .list_all_tools()
                .await
                .map_err(|e| format!("listing the MCP server's tools failed: {e}"))?;
            let has_resources = session
                .peer_info()
                .is_some_and(|info| info.capabilities.resources.is_some());
            let resources = if has_resources {
                session.list_all_resources().await.unwrap_or_default()
            } else {
                Vec::new()
            };
            let mut listing = Listing::default();
            for tool in tools {
                let json = serde_json::to_value(&tool).unwrap_or(Value::Null);
                listing.tools.push(McpTool {
                    name: json["name"].as_str().unwrap_or("").to_string(),
                    description: json["description"].as_str().unwrap_or("").to_string(),
                    schema: json["inputSchema"].clone(),
                    read_only: json["annotations"]["readOnlyHint"]
                        .as_bool()
                        .unwrap_or(false),
                });
            }
            for resource in resources {
                let json = serde_json::to_value(&resource).unwrap_or(Value::Null);
                listing.resources.push(McpResource {
                    uri: json["uri"].as_str().unwrap_or("").to_string(),
                    name: json["name"].as_str().unwrap_or("").to_string(),
                    description: json["description"].as_str().unwrap_or("").to_string(),
                });
            }
            Ok(listing)
        }
        .await;
        (result, session)
    })
    .await
}

fn cut(text: String) -> String {
    match text.char_indices().nth(MAX_RESULT_CHARS) {
        Some((at, _)) => format!("{}\n\n[truncated]", &text[..at]),
        None => text,
    }
}

/// Text of MCP content blocks (text, embedded text resources; other kinds are named).
fn content_text(content: &Value) -> String {
    let mut parts = Vec::new();
    for block in content.as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => parts.push(block["text"].as_str().unwrap_or("").to_string()),
            Some("resource") => {
                let resource = &block["resource"];
                match resource["text"].as_str() {
                    Some(text) => parts.push(text.to_string()),
                    None => parts.push(format!(
                        "[binary resource {}]",
                        resource["uri"].as_str().unwrap_or("")
                    )),
                }
            }
            Some("resource_link") => parts.push(format!(
                "[resource {}]",
                block["uri"].as_str().unwrap_or("")
            )),
            Some(other) => parts.push(format!("[{other} content]")),
            None => {}
        }
    }
    parts.join("\n")
}

/// Calls `tool` with `arguments`; Ok((text, is_error)). A transport or protocol failure (the
/// server died, timed out, refused) is Err with a message for the model.
pub async fn call_tool(
    target: &Target,
    guard: &NetGuard,
    timeout: Duration,
    tool: &str,
    arguments: Map<String, Value>,
) -> Result<(String, bool), String> {
    let tool = tool.to_string();
    with_session(target, guard, timeout, |session| async move {
        let params = CallToolRequestParams::new(tool.clone()).with_arguments(arguments);
        let result = match session.call_tool(params).await {
            Ok(result) => {
                let json = serde_json::to_value(&result).unwrap_or(Value::Null);
                let mut text = content_text(&json["content"]);
                if text.is_empty()
                    && let Some(structured) = json.get("structuredContent")
                {
                    text = structured.to_string();
                }
                let is_error = json["isError"].as_bool().unwrap_or(false);
                Ok((cut(text), is_error))
            }
            Err(e) => Err(format!("the MCP tool {tool} failed: {e}")),
        };
        (result, session)
    })
    .await
}

/// The text of a resource.
pub async fn read_resource(
    target: &Target,
    guard: &NetGuard,
    timeout: Duration,
    uri: &str,
) -> Result<String, String> {
    let uri = uri.to_string();
    with_session(target, guard, timeout, |session| async move {
        let result = match session
            .read_resource(ReadResourceRequestParams::new(uri.clone()))
            .await
        {
            Ok(result) => {
                let json = serde_json::to_value(&result).unwrap_or(Value::Null);
                let mut parts = Vec::new();
                for item in json["contents"].as_array().into_iter().flatten() {
                    match item["text"].as_str() {
                        Some(text) => parts.push(text.to_string()),
                        None => parts.push(format!(
                            "[binary content of {}]",
                            item["uri"].as_str().unwrap_or("")
                        )),
                    }
                }
                Ok(cut(parts.join("\n")))
            }
            Err(e) => Err(format!("reading {uri} failed: {e}")),
        };
        (result, session)
    })
    .await
}

/// A tool-name prefix from a server's name: `[a-z0-9_-]`, at most 24 characters.
pub fn prefix(server_name: &str) -> String {
    let mut out: String = server_name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    if out.is_empty() {
        out.push_str("mcp");
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn schemas_are_validated() {
        assert!(validate_schema(&json!({"type": "object"})).is_ok());
        assert!(
            validate_schema(
                &json!({"type": "object", "properties": {"a": {"type": "string"}},
                                     "required": ["a"]})
            )
            .is_ok()
        );
        for bad in [
            json!(null),
            json!("x"),
            json!({"type": "string"}),
            json!({"properties": {}}),
            json!({"type": "object", "properties": []}),
            json!({"type": "object", "required": [1]}),
            json!({"type": "object", "description": "x".repeat(MAX_SCHEMA_BYTES)}),
        ] {
            assert!(validate_schema(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_are_tool_name_safe() {
        assert_eq!(prefix("Everything Server!"), "everything_server_");
        assert_eq!(prefix(""), "mcp");
        assert_eq!(prefix(&"a".repeat(40)).len(), 24);
    }

    #[test]
    fn content_blocks_become_text() {
        let content = json!([
            {"type": "text", "text": "hello"},
            {"type": "image", "data": "...", "mimeType": "image/png"},
            {"type": "resource", "resource": {"uri": "x://1", "text": "inner"}}
        ]);
        assert_eq!(content_text(&content), "hello\n[image content]\ninner");
    }
}
