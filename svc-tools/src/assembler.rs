//! `ToolsetAssembler`: fixes a run's tools at run start, so a run never sees tools appear or
//! disappear mid-way (and a durable run replays with the same tools). The snapshot is stored
//! and ExecuteTool only runs tools that are in it.
//!
//! A toolset is: the ambient web tools (web_fetch, web_search, weather — from ALL the user's
//! enabled integrations, whatever the chat selected), the tools of the MCP servers the chat
//! selected (listed now, or a recent listing of the same server: `mcp_listings.rs`; names
//! prefixed by server, schemas validated), the memory tools
//! (remember, recall, forget), the tools of the user's online devices (`<device>__<tool>`, see
//! `devices.rs`), minus what the tag gate removes for the resolved model's provider.

use std::sync::Arc;

use pa_proto::v1::{BlockedTool, Identity, ToolDefinition, Toolset};
use serde_json::json;
use sha2::Digest;
use sqlx::{PgPool, Row};

use crate::config::ToolsSettings;
use crate::devices::DeviceRegistry;
use crate::error::ToolsError;
use crate::gate::tag_gate;
use crate::integrations::{IntegrationStore, Kind, Record};
use crate::mcp;
use crate::mcp_listings::{ListingKey, McpListings};
use crate::memory::{self, MemoryTools};
use crate::netguard::NetGuard;
use crate::web;

/// OpenAI-style tool names: `^[a-zA-Z0-9_-]{1,64}$`.
const MAX_TOOL_NAME: usize = 64;
/// Resources named in a read_resource tool's schema.
const MAX_RESOURCES: usize = 50;

pub const READ_RESOURCE: &str = "read_resource";

#[derive(Clone)]
pub struct ToolsetAssembler {
    pool: PgPool,
    pub store: IntegrationStore,
    pub guard: NetGuard,
    pub settings: ToolsSettings,
    pub memory: MemoryTools,
    pub devices: DeviceRegistry,
    /// MCP tool listings reused across assemblies (`mcp_listings.rs`).
    listings: Arc<McpListings>,
}

/// What a snapshot says about its run, for the tools that act on it.
#[derive(Clone, Debug, Default)]
pub struct SnapshotRun {
    pub run_id: String,
    /// '' when assembled without a chat.
    pub chat_id: String,
}

pub fn source_of(record: &Record) -> String {
    if record.kind.is_mcp() {
        format!("mcp:{}", record.id)
    } else {
        format!("integration:{}", record.id)
    }
}

fn ambient_tool(
    record: &Record,
    name: &str,
    description: &str,
    schema: serde_json::Value,
) -> ToolDefinition {
    ToolDefinition {
        name: name.into(),
        description: description.into(),
        parameters_json_schema: schema.to_string(),
        source: source_of(record),
        high_privilege: false,
        read_only: true,
        provider_tags_required: record.required.clone(),
        provider_tags_blocked: record.blocked.clone(),
        privilege_class: "network".into(),
        untrusted_output: true,
        origin_name: name.into(),
        // Set by the assembler (`sends_data_out`).
        egress: false,
        always_approve: false,
    }
}

/// The device tools that only look: a browser reading a page or a tab, listing tabs, taking a
/// screenshot; the device agent listing, reading and searching files. Every other device tool
/// can send something out (a browser navigating to a URL, clicking a submit, typing into a
/// form; a terminal running `curl`), and so does one a device announces that is not listed
/// here.
const DEVICE_LOOK_TOOLS: &[&str] = &[
    "read_tab",
    "list_tabs",
    "screenshot",
    "read_page",
    "fs_list",
    "fs_read",
    "fs_search",
];

/// Whether `tool` can send data to a destination the model chooses: web_fetch (its URL,
/// query string included, is the model's), a device tool that does more than look (a
/// browser's navigate/click/type, a terminal), an MCP tool not marked read-only (the server
/// may do anything with its arguments). Once a run has ingested untrusted content, such a tool counts as high privilege
/// and waits for a human's approval, so planted instructions cannot carry the run's data out
/// (docs/src/adr/0122-2026-12-03-egress-tools-after-taint.md).
pub fn sends_data_out(tool: &ToolDefinition) -> bool {
    let origin = if tool.origin_name.is_empty() {
        tool.name.as_str()
    } else {
        tool.origin_name.as_str()
    };
    if tool.source.starts_with("mcp:") {
        return !tool.read_only;
    }
    if tool.source.starts_with("device:") {
        return !DEVICE_LOOK_TOOLS.contains(&origin);
    }
    tool.source.starts_with("integration:") && origin == "web_fetch"
}

/// web_fetch, web_search and weather from the first enabled integration of each kind.
pub fn ambient_tools(records: &[Record]) -> Vec<ToolDefinition> {
    let first = |kinds: &[Kind]| {
        records
            .iter()
            .find(|r| r.enabled && kinds.contains(&r.kind))
    };
    let mut tools = Vec::new();
    if let Some(r) = first(&[Kind::WebFetch]) {
        tools.push(ambient_tool(
            r,
            "web_fetch",
            "Fetch a web page (http/https) and return its readable text.",
            web::web_fetch_schema(),
        ));
    }
    if let Some(r) = first(&[Kind::Searxng, Kind::Brave, Kind::Tavily]) {
        tools.push(ambient_tool(
            r,
            "web_search",
            "Search the web; returns titles, URLs and snippets.",
            web::web_search_schema(),
        ));
    }
    if let Some(r) = first(&[Kind::OpenMeteo]) {
        tools.push(ambient_tool(
            r,
            "weather",
            "Current weather and a 3-day forecast for a place or coordinates.",
            web::weather_schema(),
        ));
    }
    tools
}

impl ToolsetAssembler {
    pub fn new(
        pool: PgPool,
        store: IntegrationStore,
        guard: NetGuard,
        settings: ToolsSettings,
        memory: MemoryTools,
        devices: DeviceRegistry,
    ) -> Self {
        Self {
            listings: Arc::new(McpListings::new(settings.mcp_list_cache)),
            pool,
            store,
            guard,
            settings,
            memory,
            devices,
        }
    }

    /// Where an MCP integration's server is, with its secrets opened.
    pub fn mcp_target(
        &self,
        identity: &Identity,
        record: &Record,
    ) -> Result<mcp::Target, ToolsError> {
        let secrets = self.store.open_secrets(identity, record)?;
        let map = |key: &str| -> std::collections::BTreeMap<String, String> {
            record.config[key]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(match record.kind {
            Kind::McpStdio => {
                let command = record.config_str("command").unwrap_or("").to_string();
                let stdio = self.store.stdio();
                if let Some(reason) = stdio.sandbox.unavailable() {
                    return Err(ToolsError::SandboxUnavailable(reason));
                }
                // The operator's list is checked again: it may have shrunk since creation.
                if !stdio.commands.contains(&command) {
                    return Err(ToolsError::Invalid(format!(
                        "the command {command:?} is no longer allowed for stdio MCP servers"
                    )));
                }
                // The integration's own variables; the sandbox drops any reserved name.
                let mut env = map("env");
                for (name, value) in &secrets {
                    if let Some(var) = name.strip_prefix("env:") {
                        env.insert(var.to_string(), value.clone());
                    }
                }
                mcp::Target::Stdio {
                    command,
                    args: record.config["args"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                    env,
                    network: record.config["network"].as_bool().unwrap_or(false),
                    sandbox: stdio.sandbox.clone(),
                }
            }
            _ => {
                let mut headers = map("headers");
                for (name, value) in &secrets {
                    if let Some(header) = name.strip_prefix("header:") {
                        headers.insert(header.to_string(), value.clone());
                    }
                }
                mcp::Target::Http {
                    url: record.config_str("url").unwrap_or("").to_string(),
                    headers,
                    bearer: secrets.get("bearer_token").cloned(),
                }
            }
        })
    }

    /// The tools of one MCP server, or why there are none.
    async fn mcp_tools(
        &self,
        identity: &Identity,
        record: &Record,
    ) -> (Vec<ToolDefinition>, Vec<BlockedTool>) {
        let prefix = mcp::prefix(&record.name);
        let unavailable = |reason: String| BlockedTool {
            name: format!("{prefix}__*"),
            reason,
            gate: "mcp_unavailable".into(),
            source: source_of(record),
        };
        let target = match self.mcp_target(identity, record) {
            Ok(t) => t,
            Err(e) => return (Vec::new(), vec![unavailable(e.to_string())]),
        };
        let key = ListingKey::new(identity, &record.id, &target);
        let listing = match self.listings.get(&key) {
            Some(listing) => listing,
            None => match mcp::list(&target, &self.guard, self.settings.mcp_list_timeout).await {
                Ok(listing) => {
                    let listing = Arc::new(listing);
                    self.listings.put(key, listing.clone());
                    listing
                }
                Err(e) => return (Vec::new(), vec![unavailable(e)]),
            },
        };
        let mut tools = Vec::new();
        let mut blocked = Vec::new();
        for tool in listing.tools.iter().cloned() {
            let name = format!("{prefix}__{}", tool.name);
            let bad_name = tool.name.is_empty()
                || name.len() > MAX_TOOL_NAME
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            let problem = if bad_name {
                Some("its name is not 1-64 characters of A-Z a-z 0-9 _ -".to_string())
            } else {
                mcp::validate_schema(&tool.schema).err()
            };
            if let Some(reason) = problem {
                blocked.push(BlockedTool {
                    name,
                    reason,
                    gate: "mcp_schema".into(),
                    source: source_of(record),
                });
                continue;
            }
            tools.push(ToolDefinition {
                name,
                description: tool.description,
                parameters_json_schema: tool.schema.to_string(),
                source: source_of(record),
                // What an MCP tool does is up to its server: unless it says it only reads, it
                // is treated as able to change things.
                high_privilege: !tool.read_only,
                read_only: tool.read_only,
                provider_tags_required: record.required.clone(),
                provider_tags_blocked: record.blocked.clone(),
                privilege_class: if tool.read_only { "read" } else { "write" }.into(),
                untrusted_output: true,
                origin_name: tool.name,
                // Set by the assembler (`sends_data_out`).
                egress: false,
                always_approve: false,
            });
        }
        if !listing.resources.is_empty() {
            let uris: Vec<&str> = listing
                .resources
                .iter()
                .take(MAX_RESOURCES)
                .map(|r| r.uri.as_str())
                .collect();
            let list: Vec<String> = listing
                .resources
                .iter()
                .take(MAX_RESOURCES)
                .map(|r| {
                    format!(
                        "- {} ({}){}",
                        r.uri,
                        r.name,
                        if r.description.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", r.description)
                        }
                    )
                })
                .collect();
            tools.push(ToolDefinition {
                name: format!("{prefix}__{READ_RESOURCE}"),
                description: format!(
                    "Read a resource of the {} MCP server as context. Resources:\n{}",
                    record.name,
                    list.join("\n")
                ),
                parameters_json_schema: json!({
                    "type": "object",
                    "properties": { "uri": { "type": "string", "enum": uris } },
                    "required": ["uri"],
                    "additionalProperties": false
                })
                .to_string(),
                source: source_of(record),
                high_privilege: false,
                read_only: true,
                provider_tags_required: record.required.clone(),
                provider_tags_blocked: record.blocked.clone(),
                privilege_class: "read".into(),
                untrusted_output: true,
                origin_name: String::new(),
                // Set by the assembler (`sends_data_out`).
                egress: false,
                always_approve: false,
            });
        }
        (tools, blocked)
    }

    /// Snapshots the tools available to this run, after the tag gate for `provider_tags`.
    pub async fn assemble(
        &self,
        identity: &Identity,
        request: &pa_proto::v1::AssembleToolsetRequest,
    ) -> Result<Toolset, ToolsError> {
        let pa_proto::v1::AssembleToolsetRequest {
            run_id,
            chat_id,
            provider_tags,
            selected_integrations: selected,
            snapshot_id,
            read_only,
        } = request;
        let read_only = *read_only;
        if run_id.is_empty() {
            return Err(ToolsError::MissingRunId);
        }
        if snapshot_id.len() > 200
            || snapshot_id
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(ToolsError::BadSnapshotId);
        }
        let snapshot_id = if snapshot_id.is_empty() {
            format!("ts-{run_id}")
        } else {
            snapshot_id.to_string()
        };
        // What the toolset is made of is read in one tenant transaction, which also writes the
        // snapshot when no MCP server has to be listed in between: a run's start waits for
        // this call, and each transaction saved is a BEGIN, a COMMIT and a connection
        // (issue 23, ADR 0216). A retried assemble finds its snapshot taken when it writes it.
        // The user's toolset generation is read before what the toolset is made of, beside the
        // transaction's BEGIN (which reads nothing): a toolset is never newer than the token it
        // is reusable under (ADR 0251). Without Redis the toolset is simply not reusable.
        let reusable_request = !read_only && selected.is_empty();
        let generation = async {
            if !reusable_request {
                return None;
            }
            self.store
                .generations()
                .current(&identity.tenant_id, &identity.user_id)
                .await
        };
        let (tx, generation) = tokio::join!(
            pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id),
            generation
        );
        let mut tx = tx?;
        let reads = IntegrationStore::assembly_reads_in(&mut tx, identity, chat_id).await?;
        let records = reads.records;
        let selected = if selected.is_empty() {
            reads.selection
        } else {
            selected.to_vec()
        };
        // The devices' tools are read only for a user who has devices (one round trip less
        // for everyone else).
        let device_tools = if reads.has_devices {
            self.devices.online_tools_in(&mut tx, identity).await
        } else {
            Ok(Vec::new())
        };
        let mut tools = ambient_tools(&records);
        tools.extend(memory::definitions());
        tools.extend(crate::subagent::definitions());
        let mut blocked = Vec::new();
        let servers: Vec<&Record> = records
            .iter()
            .filter(|r| r.enabled && r.kind.is_mcp() && selected.contains(&r.id))
            .collect();
        // A device's presence and an MCP server's listing change without a new generation, so a
        // toolset that depends on either is assembled for every run.
        let reusable_under = match generation {
            Some(token) if !reads.has_devices && servers.is_empty() => token,
            _ => String::new(),
        };
        let (mut tx, listed) = if servers.is_empty() {
            (tx, Vec::new())
        } else {
            // Listing may take seconds (a stdio server starting): no transaction stays open
            // across it.
            tx.commit().await?;
            let listed =
                futures::future::join_all(servers.iter().map(|r| self.mcp_tools(identity, r)))
                    .await;
            (
                pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?,
                listed,
            )
        };
        // The user's online devices, then the MCP servers' tools; a name taken is reported.
        let device_tools = match device_tools {
            Ok(t) => t,
            // The transaction cannot go on after a failed statement.
            Err(e @ ToolsError::Db(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the user's devices");
                blocked.push(BlockedTool {
                    name: "*__*".into(),
                    reason: format!("the devices could not be listed: {e}"),
                    gate: "device_unavailable".into(),
                    source: "device:*".into(),
                });
                Vec::new()
            }
        };
        for (server_tools, server_blocked) in
            std::iter::once((device_tools, Vec::new())).chain(listed)
        {
            for tool in server_tools {
                if tools.iter().any(|t| t.name == tool.name) {
                    blocked.push(BlockedTool {
                        reason: "another tool has this name".into(),
                        gate: "duplicate_name".into(),
                        source: tool.source,
                        name: tool.name,
                    });
                } else {
                    tools.push(tool);
                }
            }
            blocked.extend(server_blocked);
        }
        let (mut tools, gated) = tag_gate(tools, provider_tags);
        blocked.extend(gated);
        for tool in &mut tools {
            tool.egress = sends_data_out(tool);
        }
        if read_only {
            // An explore sub-agent: what could change anything is not offered at all.
            tools.retain(|t| t.read_only);
        }
        // The tools are stored once per distinct toolset of the user (ADR 0217): a run whose
        // toolset is the same as an earlier one's only writes its snapshot row.
        let content = Toolset {
            snapshot_id: String::new(),
            tools,
            blocked,
            reusable_under: String::new(),
        };
        let encoded = prost::Message::encode_to_vec(&content);
        let digest = sha2::Sha256::digest(&encoded).to_vec();
        let written = sqlx::query(
            "WITH content AS ( \
               INSERT INTO toolset_contents (tenant_id, user_id, digest, toolset) \
               VALUES ($1, $4, $7, $8) \
               ON CONFLICT (tenant_id, user_id, digest) DO NOTHING) \
             INSERT INTO toolset_snapshots (tenant_id, id, run_id, user_id, provider_tags, chat_id, content_digest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, id) DO NOTHING",
        )
        .bind(&identity.tenant_id)
        .bind(&snapshot_id)
        .bind(run_id)
        .bind(&identity.user_id)
        .bind(provider_tags)
        .bind(chat_id)
        .bind(&digest)
        .bind(&encoded)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if written.rows_affected() == 0 {
            // A retried assemble returns the snapshot made the first time (and a snapshot id
            // someone else took is no snapshot of this caller's: `UnknownSnapshot`).
            return self.snapshot(identity, &snapshot_id).await;
        }
        Ok(Toolset {
            snapshot_id,
            reusable_under,
            ..content
        })
    }

    pub async fn snapshot(
        &self,
        identity: &Identity,
        snapshot_id: &str,
    ) -> Result<Toolset, ToolsError> {
        Ok(self.snapshot_with_run(identity, snapshot_id).await?.0)
    }

    async fn snapshot_with_run(
        &self,
        identity: &Identity,
        snapshot_id: &str,
    ) -> Result<(Toolset, SnapshotRun), ToolsError> {
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        let row = sqlx::query(
            "SELECT s.tools, s.blocked, s.run_id, s.chat_id, c.toolset \
             FROM toolset_snapshots s LEFT JOIN toolset_contents c \
               ON c.tenant_id = s.tenant_id AND c.user_id = s.user_id \
              AND c.digest = s.content_digest \
             WHERE s.tenant_id = $1 AND s.id = $2 AND s.user_id = $3",
        )
        .bind(&identity.tenant_id)
        .bind(snapshot_id)
        .bind(&identity.user_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ToolsError::UnknownSnapshot(snapshot_id.to_string()))?;
        tx.commit().await?;
        let toolset = Toolset {
            snapshot_id: snapshot_id.to_string(),
            ..stored_toolset(&row)?
        };
        let run = SnapshotRun {
            run_id: row.try_get("run_id")?,
            chat_id: row.try_get("chat_id")?,
        };
        Ok((toolset, run))
    }

    /// Only a tool of the run's snapshot may run; with the run it was assembled for.
    pub async fn tool_for_call(
        &self,
        identity: &Identity,
        snapshot_id: &str,
        name: &str,
    ) -> Result<(ToolDefinition, SnapshotRun), ToolsError> {
        let (toolset, run) = self.snapshot_with_run(identity, snapshot_id).await?;
        toolset
            .tools
            .into_iter()
            .find(|t| t.name == name)
            .map(|tool| (tool, run))
            .ok_or_else(|| ToolsError::NotInSnapshot {
                tool: name.to_string(),
                snapshot: snapshot_id.to_string(),
            })
    }
}

/// A snapshot row's tools and blocked tools: from its content (ADR 0217), or from the JSON
/// columns of a snapshot written before contents existed.
fn stored_toolset(row: &sqlx::postgres::PgRow) -> Result<Toolset, ToolsError> {
    if let Some(encoded) = row.try_get::<Option<Vec<u8>>, _>("toolset")? {
        return <Toolset as prost::Message>::decode(encoded.as_slice())
            .map_err(|e| ToolsError::Corrupt(e.to_string()));
    }
    match (
        row.try_get::<Option<serde_json::Value>, _>("tools")?,
        row.try_get::<Option<serde_json::Value>, _>("blocked")?,
    ) {
        (Some(tools), Some(blocked)) => Ok(Toolset {
            snapshot_id: String::new(),
            tools: serde_json::from_value(tools)?,
            blocked: serde_json::from_value(blocked)?,
            reusable_under: String::new(),
        }),
        _ => Err(ToolsError::Corrupt(
            "the snapshot's content is missing".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, source: &str, read_only: bool, untrusted_output: bool) -> ToolDefinition {
        ToolDefinition {
            name: name.into(),
            origin_name: name.rsplit("__").next().unwrap_or(name).into(),
            source: source.into(),
            read_only,
            untrusted_output,
            ..Default::default()
        }
    }

    #[test]
    fn tools_that_can_send_data_out_are_egress() {
        assert!(sends_data_out(&tool(
            "web_fetch",
            "integration:i1",
            true,
            true
        )));
        assert!(!sends_data_out(&tool(
            "web_search",
            "integration:i2",
            true,
            true
        )));
        assert!(!sends_data_out(&tool(
            "weather",
            "integration:i3",
            true,
            true
        )));
        // An MCP server's tools: what is not marked read-only may do anything.
        assert!(sends_data_out(&tool(
            "gh__create_issue",
            "mcp:m1",
            false,
            true
        )));
        assert!(!sends_data_out(&tool("gh__search", "mcp:m1", true, true)));
        // A device: anything but looking, whatever its kind or what it announces.
        for name in [
            "navigate",
            "click",
            "type_text",
            "pty_exec",
            "fs_write",
            "new_tool",
        ] {
            let t = tool(&format!("dev__{name}"), "device:d1", true, true);
            assert!(sends_data_out(&t), "{name}");
        }
        for name in [
            "read_tab",
            "list_tabs",
            "screenshot",
            "read_page",
            "fs_list",
            "fs_read",
            "fs_search",
        ] {
            let t = tool(&format!("dev__{name}"), "device:d1", true, true);
            assert!(!sends_data_out(&t), "{name}");
        }
        // First-party tools: the memory tools and sub-agents are gated by their own privilege.
        assert!(!sends_data_out(&tool(
            "remember",
            "first_party",
            false,
            false
        )));
        assert!(!sends_data_out(&tool(
            "web_fetch",
            "first_party",
            true,
            false
        )));
    }
}
