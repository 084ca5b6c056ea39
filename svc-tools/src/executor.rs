//! ExecuteTool: runs a tool of the run's snapshot. A tool that fails (a refused URL, an API
//! error, an MCP server that died) is a result the model sees (`is_error`), never a failed
//! run; only "this tool is not yours to run" is an error of the call itself.

use pa_proto::v1::{ExecuteToolResponse, Identity, ToolDefinition};
use serde_json::{Map, Value};

use crate::assembler::{READ_RESOURCE, SnapshotRun, ToolsetAssembler};
use crate::error::ToolsError;
use crate::integrations::{Kind, Record};
use crate::mcp;
use crate::memory::{self, DataFlow, RunContext};
use crate::web::{self, SearchApi, SearchConfig, ToolFailure, WeatherConfig};

const MAX_ARGUMENT_BYTES: usize = 64 * 1024;

/// What a tool produced: its text, whether it failed, and whether the text came from outside.
struct Outcome {
    content: String,
    is_error: bool,
    untrusted: bool,
}

impl Outcome {
    fn ok(content: String, untrusted: bool) -> Self {
        Self {
            content,
            is_error: false,
            untrusted,
        }
    }

    /// Our own refusal or failure: nothing from outside in it.
    fn failed(message: impl Into<String>) -> Self {
        Self {
            content: message.into(),
            is_error: true,
            untrusted: false,
        }
    }
}

fn parse_arguments(raw: &str) -> Result<Map<String, Value>, String> {
    if raw.len() > MAX_ARGUMENT_BYTES {
        return Err(format!("the arguments are over {MAX_ARGUMENT_BYTES} bytes"));
    }
    if raw.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the arguments must be a JSON object".into()),
        Err(e) => Err(format!("the arguments are not valid JSON: {e}")),
    }
}

impl ToolsetAssembler {
    pub async fn execute(
        &self,
        identity: &Identity,
        snapshot_id: &str,
        run_id: &str,
        name: &str,
        arguments_json: &str,
        flow: DataFlow,
    ) -> Result<ExecuteToolResponse, ToolsError> {
        let (tool, mut run) = self.tool_for_call(identity, snapshot_id, name).await?;
        // A snapshot may serve several runs of its chat (ADR 0251): what a tool records of its
        // run (a memory's source, a device call's run) is the calling run's. The caller is
        // internal and acts for `identity`, whose snapshot this is.
        if !run_id.is_empty() {
            run.run_id = run_id.to_string();
        }
        let outcome = match parse_arguments(arguments_json) {
            Ok(args) if memory::is_memory_tool(&tool) => {
                self.run_memory_tool(identity, &run, &tool, &args, flow)
                    .await
            }
            Ok(args) if tool.source.starts_with("device:") => {
                match self
                    .devices
                    .call(identity, &tool, Value::Object(args), &run.run_id)
                    .await
                {
                    Ok(result) => Outcome {
                        content: result.content,
                        is_error: result.is_error,
                        untrusted: tool.untrusted_output,
                    },
                    Err(message) => Outcome::failed(message),
                }
            }
            Ok(args) => self.run(identity, &tool, args).await,
            Err(message) => Outcome::failed(message),
        };
        Ok(ExecuteToolResponse {
            content: outcome.content,
            is_error: outcome.is_error,
            untrusted_content: outcome.untrusted,
            tool: Some(tool),
        })
    }

    async fn run_memory_tool(
        &self,
        identity: &Identity,
        run: &SnapshotRun,
        tool: &ToolDefinition,
        args: &Map<String, Value>,
        flow: DataFlow,
    ) -> Outcome {
        let context = RunContext {
            identity,
            run_id: &run.run_id,
            chat_id: &run.chat_id,
            flow,
        };
        // An untrusted memory that `recall` brings into the run taints it.
        match self.memory.run(&context, &tool.name, args).await {
            Ok((text, untrusted)) => Outcome::ok(text, untrusted),
            Err(message) => Outcome::failed(message),
        }
    }

    async fn integration(
        &self,
        identity: &Identity,
        tool: &ToolDefinition,
    ) -> Result<Record, String> {
        let id = tool
            .source
            .split_once(':')
            .map(|(_, id)| id)
            .unwrap_or_default();
        match self.store.get(identity, id).await {
            Ok(record) if record.enabled => Ok(record),
            Ok(_) => Err(format!("the integration behind {} is disabled", tool.name)),
            Err(ToolsError::IntegrationNotFound(_)) => Err(format!(
                "the integration behind {} no longer exists",
                tool.name
            )),
            Err(e) => {
                tracing::warn!(error = %e, tool = %tool.name, "cannot load integration");
                Err("the tool's integration could not be loaded".into())
            }
        }
    }

    async fn run(
        &self,
        identity: &Identity,
        tool: &ToolDefinition,
        args: Map<String, Value>,
    ) -> Outcome {
        let record = match self.integration(identity, tool).await {
            Ok(r) => r,
            Err(message) => return Outcome::failed(message),
        };
        let args = Value::Object(args);
        let web_result = |r: Result<String, ToolFailure>| match r {
            Ok(text) => Outcome::ok(text, true),
            Err(e) => Outcome::failed(e.0),
        };
        match record.kind {
            Kind::WebFetch => web_result(web::web_fetch(&self.guard, &args).await),
            Kind::Searxng | Kind::Brave | Kind::Tavily => {
                let secrets = match self.store.open_secrets(identity, &record) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, id = %record.id, "integration secrets do not open");
                        return Outcome::failed("the search integration's key could not be read");
                    }
                };
                let config = SearchConfig {
                    api: match record.kind {
                        Kind::Brave => SearchApi::Brave,
                        Kind::Tavily => SearchApi::Tavily,
                        _ => SearchApi::Searxng,
                    },
                    base_url: record.config_str("base_url").unwrap_or(match record.kind {
                        Kind::Tavily => web::TAVILY_API,
                        _ => web::BRAVE_API,
                    }),
                    api_key: secrets.get("api_key").map(String::as_str),
                };
                web_result(web::web_search(&self.guard, &config, &args).await)
            }
            Kind::OpenMeteo => {
                let config = WeatherConfig {
                    forecast_url: record
                        .config_str("forecast_url")
                        .or(record.config_str("base_url"))
                        .unwrap_or(web::OPEN_METEO_FORECAST),
                    geocoding_url: record
                        .config_str("geocoding_url")
                        .unwrap_or(web::OPEN_METEO_GEOCODING),
                };
                web_result(web::weather(&self.guard, &config, &args).await)
            }
            Kind::McpStdio | Kind::McpHttp => {
                let target = match self.mcp_target(identity, &record) {
                    Ok(t) => t,
                    Err(e) => return Outcome::failed(e.to_string()),
                };
                let timeout = self.settings.mcp_call_timeout;
                if tool.origin_name.is_empty() && tool.name.ends_with(READ_RESOURCE) {
                    let Some(uri) = args.get("uri").and_then(Value::as_str) else {
                        return Outcome::failed("argument \"uri\" (a string) is required");
                    };
                    return match mcp::read_resource(&target, &self.guard, timeout, uri).await {
                        Ok(text) => Outcome::ok(text, true),
                        Err(message) => Outcome::failed(message),
                    };
                }
                let Value::Object(args) = args else {
                    return Outcome::failed("the arguments must be a JSON object");
                };
                match mcp::call_tool(&target, &self.guard, timeout, &tool.origin_name, args).await {
                    Ok((content, is_error)) => Outcome {
                        content,
                        is_error,
                        untrusted: true,
                    },
                    Err(message) => Outcome::failed(message),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_must_be_a_json_object() {
        assert!(parse_arguments("").unwrap().is_empty());
        assert_eq!(parse_arguments(r#"{"a":1}"#).unwrap()["a"], 1);
        assert!(parse_arguments("[1]").is_err());
        assert!(parse_arguments("{").is_err());
        assert!(parse_arguments(&format!("\"{}\"", "x".repeat(MAX_ARGUMENT_BYTES))).is_err());
    }
}
