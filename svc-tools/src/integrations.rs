//! Each user's integrations (web search, web fetch, weather, MCP servers) and each chat's tool
//! selection, in schema `tools` under row-level security. Secrets are sealed with the same
//! envelope encryption as BYOK keys (pa_kit::crypto), bound to tenant, user and integration.

use std::collections::BTreeMap;
use std::sync::Arc;

use pa_kit::crypto::{KeyEncryption, Sealed, Secret};
use pa_proto::v1::{Identity, Integration};
use serde_json::Value;
use sqlx::{PgPool, Row};

use crate::error::{ToolsError, invalid};
use crate::generation::Generations;
use crate::sandbox::{Sandbox, check_user_env_name};

const MAX_NAME_CHARS: usize = 64;
const MAX_TAGS: usize = 32;
const MAX_CONFIG_BYTES: usize = 16 * 1024;
const MAX_SECRET_BYTES: usize = 8 * 1024;
const MAX_INTEGRATIONS: i64 = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Searxng,
    Brave,
    Tavily,
    WebFetch,
    OpenMeteo,
    McpStdio,
    McpHttp,
}

impl Kind {
    pub fn parse(kind: &str) -> Result<Self, ToolsError> {
        Ok(match kind {
            "searxng" => Self::Searxng,
            "brave" => Self::Brave,
            "tavily" => Self::Tavily,
            "web_fetch" => Self::WebFetch,
            "open_meteo" => Self::OpenMeteo,
            "mcp_stdio" => Self::McpStdio,
            "mcp_http" => Self::McpHttp,
            other => {
                return Err(invalid(format!(
                    "unknown integration kind {other:?}: expected searxng, brave, tavily, \
                     web_fetch, open_meteo, mcp_stdio or mcp_http"
                )));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Searxng => "searxng",
            Self::Brave => "brave",
            Self::Tavily => "tavily",
            Self::WebFetch => "web_fetch",
            Self::OpenMeteo => "open_meteo",
            Self::McpStdio => "mcp_stdio",
            Self::McpHttp => "mcp_http",
        }
    }

    pub fn is_mcp(self) -> bool {
        matches!(self, Self::McpStdio | Self::McpHttp)
    }

    fn secret_allowed(self, name: &str) -> bool {
        match self {
            Self::Brave | Self::Tavily => name == "api_key",
            Self::McpHttp => name == "bearer_token" || name.starts_with("header:"),
            Self::McpStdio => name.starts_with("env:"),
            Self::Searxng | Self::OpenMeteo | Self::WebFetch => false,
        }
    }
}

/// One integration as stored (secrets still sealed).
#[derive(Clone, Debug)]
pub struct Record {
    pub id: String,
    pub kind: Kind,
    pub name: String,
    pub enabled: bool,
    pub required: Vec<String>,
    pub blocked: Vec<String>,
    pub config: Value,
    pub secret_names: Vec<String>,
    pub sealed: Option<Sealed>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Record {
    pub fn to_proto(&self) -> Integration {
        Integration {
            id: self.id.clone(),
            kind: self.kind.as_str().into(),
            name: self.name.clone(),
            enabled: self.enabled,
            provider_tags_required: self.required.clone(),
            provider_tags_blocked: self.blocked.clone(),
            config_json: self.config.to_string(),
            secret_names: self.secret_names.clone(),
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        }
    }

    pub fn config_str(&self, key: &str) -> Option<&str> {
        self.config
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// What a create or update asks for, validated against the kind.
pub struct Draft {
    pub kind: Kind,
    pub name: String,
    pub enabled: bool,
    pub required: Vec<String>,
    pub blocked: Vec<String>,
    pub config: Value,
}

fn validate_tags(tags: &[String]) -> Result<Vec<String>, ToolsError> {
    if tags.len() > MAX_TAGS {
        return Err(invalid(format!("at most {MAX_TAGS} provider tags")));
    }
    tags.iter()
        .map(|t| {
            let t = t.trim();
            if t.is_empty()
                || t.len() > 64
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
            {
                Err(invalid(format!(
                    "provider tag {t:?} must be 1-64 characters of A-Z a-z 0-9 - _ . :"
                )))
            } else {
                Ok(t.to_string())
            }
        })
        .collect()
}

fn http_url(value: &str, field: &str) -> Result<(), ToolsError> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(invalid(format!("config.{field} must be an http(s) URL"))),
    }
}

fn string_map(config: &Value, field: &str) -> Result<(), ToolsError> {
    match config.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(map)) if map.values().all(Value::is_string) => Ok(()),
        _ => Err(invalid(format!(
            "config.{field} must be an object of strings"
        ))),
    }
}

/// What the operator allows stdio MCP servers: the commands they may run and the sandbox they
/// run in.
#[derive(Clone, Debug)]
pub struct StdioPolicy {
    pub commands: Vec<String>,
    pub sandbox: Sandbox,
}

impl Draft {
    /// Checks name, tags and the kind's settings against the operator's stdio policy.
    pub fn validate(mut self, stdio: &StdioPolicy) -> Result<Self, ToolsError> {
        self.name = self.name.trim().to_string();
        if self.name.is_empty()
            || self.name.chars().count() > MAX_NAME_CHARS
            || self.name.chars().any(char::is_control)
        {
            return Err(invalid(format!(
                "name must be 1-{MAX_NAME_CHARS} characters, no control characters"
            )));
        }
        self.required = validate_tags(&self.required)?;
        self.blocked = validate_tags(&self.blocked)?;
        if self.config.is_null() {
            self.config = Value::Object(Default::default());
        }
        if !self.config.is_object() {
            return Err(invalid("config must be a JSON object"));
        }
        if self.config.to_string().len() > MAX_CONFIG_BYTES {
            return Err(invalid(format!("config is over {MAX_CONFIG_BYTES} bytes")));
        }
        let get = |k: &str| self.config.get(k).and_then(Value::as_str).unwrap_or("");
        match self.kind {
            Kind::Searxng => http_url(get("base_url"), "base_url")?,
            Kind::Brave | Kind::Tavily | Kind::OpenMeteo | Kind::WebFetch => {
                for field in ["base_url", "forecast_url", "geocoding_url"] {
                    if !get(field).is_empty() {
                        http_url(get(field), field)?;
                    }
                }
            }
            Kind::McpHttp => {
                http_url(get("url"), "url")?;
                string_map(&self.config, "headers")?;
            }
            Kind::McpStdio => {
                let command = get("command");
                if command.is_empty() {
                    return Err(invalid("config.command is required for mcp_stdio"));
                }
                if !stdio.commands.iter().any(|c| c == command) {
                    return Err(invalid(format!(
                        "command {command:?} is not one the operator allows for stdio MCP \
                         servers (PA_TOOLS_MCP_STDIO_COMMANDS)"
                    )));
                }
                match self.config.get("args") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
                    _ => return Err(invalid("config.args must be an array of strings")),
                }
                string_map(&self.config, "env")?;
                if let Some(env) = self.config.get("env").and_then(Value::as_object) {
                    for name in env.keys() {
                        check_user_env_name(name)
                            .map_err(|e| invalid(format!("config.env: {e}")))?;
                    }
                }
                match self.config.get("network") {
                    None | Some(Value::Null) | Some(Value::Bool(false)) => {}
                    Some(Value::Bool(true)) if stdio.sandbox.settings().network_allowed => {}
                    Some(Value::Bool(true)) => {
                        return Err(invalid(
                            "config.network: the operator does not allow stdio MCP servers the \
                             network (PA_MCP_NETWORK_ALLOWED)",
                        ));
                    }
                    Some(_) => return Err(invalid("config.network must be true or false")),
                }
            }
        }
        Ok(self)
    }
}

fn validate_secrets(kind: Kind, secrets: &BTreeMap<String, String>) -> Result<(), ToolsError> {
    for (name, value) in secrets {
        if !kind.secret_allowed(name) {
            return Err(invalid(format!(
                "a {} integration has no secret named {name:?}",
                kind.as_str()
            )));
        }
        if kind == Kind::McpStdio
            && let Some(var) = name.strip_prefix("env:")
        {
            check_user_env_name(var).map_err(|e| invalid(format!("secret {name:?}: {e}")))?;
        }
        if value.is_empty() || value.len() > MAX_SECRET_BYTES {
            return Err(invalid(format!(
                "secret {name:?} must be 1-{MAX_SECRET_BYTES} bytes"
            )));
        }
    }
    if matches!(kind, Kind::Brave | Kind::Tavily) && !secrets.contains_key("api_key") {
        return Err(invalid(format!(
            "a {} integration needs the secret api_key",
            kind.as_str()
        )));
    }
    Ok(())
}

fn aad(tenant: &str, user: &str, id: &str) -> String {
    format!("integration/{tenant}/{user}/{id}")
}

fn owner(identity: &Identity) -> Result<(&str, &str), ToolsError> {
    if identity.tenant_id.is_empty() || identity.user_id.is_empty() {
        return Err(invalid("the caller's identity has no tenant or no user"));
    }
    Ok((&identity.tenant_id, &identity.user_id))
}

/// What [`IntegrationStore::assembly_reads_in`] reads.
#[derive(Debug)]
pub struct AssemblyReads {
    pub records: Vec<Record>,
    /// The chat's selected integrations (empty when it has none).
    pub selection: Vec<String>,
    pub has_devices: bool,
}

const COLUMNS: &str = "id, kind, name, enabled, required_provider_tags, provider_tags_blocked, \
     config, secret_names, kek_id, wrapped_dek, dek_nonce, ciphertext, nonce, created_at, updated_at";

fn record(row: &sqlx::postgres::PgRow) -> Result<Record, ToolsError> {
    let kek_id: Option<String> = row.try_get("kek_id")?;
    let sealed = match kek_id {
        Some(kek_id) => Some(Sealed {
            kek_id,
            wrapped_dek: row
                .try_get::<Option<Vec<u8>>, _>("wrapped_dek")?
                .unwrap_or_default(),
            dek_nonce: row
                .try_get::<Option<Vec<u8>>, _>("dek_nonce")?
                .unwrap_or_default(),
            ciphertext: row
                .try_get::<Option<Vec<u8>>, _>("ciphertext")?
                .unwrap_or_default(),
            nonce: row
                .try_get::<Option<Vec<u8>>, _>("nonce")?
                .unwrap_or_default(),
        }),
        None => None,
    };
    let kind: String = row.try_get("kind")?;
    Ok(Record {
        id: row.try_get("id")?,
        kind: Kind::parse(&kind)?,
        name: row.try_get("name")?,
        enabled: row.try_get("enabled")?,
        required: row.try_get("required_provider_tags")?,
        blocked: row.try_get("provider_tags_blocked")?,
        config: row.try_get("config")?,
        secret_names: row.try_get("secret_names")?,
        sealed,
        created_at_ms: row
            .try_get::<chrono::DateTime<chrono::Utc>, _>("created_at")?
            .timestamp_millis(),
        updated_at_ms: row
            .try_get::<chrono::DateTime<chrono::Utc>, _>("updated_at")?
            .timestamp_millis(),
    })
}

#[derive(Clone)]
pub struct IntegrationStore {
    pool: PgPool,
    enc: Arc<KeyEncryption>,
    stdio: Arc<StdioPolicy>,
    /// Renewed on every change of a user's integrations or selections (ADR 0251).
    generations: Generations,
}

impl IntegrationStore {
    pub fn new(
        pool: PgPool,
        enc: Arc<KeyEncryption>,
        stdio: StdioPolicy,
        generations: Generations,
    ) -> Self {
        Self {
            pool,
            enc,
            stdio: Arc::new(stdio),
            generations,
        }
    }

    pub fn stdio(&self) -> &StdioPolicy {
        &self.stdio
    }

    /// The users' toolset generations (ADR 0251).
    pub fn generations(&self) -> &Generations {
        &self.generations
    }

    fn seal(
        &self,
        identity: &Identity,
        id: &str,
        secrets: &BTreeMap<String, String>,
    ) -> Result<Option<Sealed>, ToolsError> {
        if secrets.is_empty() {
            return Ok(None);
        }
        let (tenant, user) = owner(identity)?;
        let plain = Secret::new(serde_json::to_string(secrets)?);
        Ok(Some(self.enc.seal(&plain, &aad(tenant, user, id))?))
    }

    /// The integration's secrets, opened (for the one call that needs them).
    pub fn open_secrets(
        &self,
        identity: &Identity,
        record: &Record,
    ) -> Result<BTreeMap<String, String>, ToolsError> {
        let Some(sealed) = &record.sealed else {
            return Ok(BTreeMap::new());
        };
        let (tenant, user) = owner(identity)?;
        let plain = self.enc.open(sealed, &aad(tenant, user, &record.id))?;
        Ok(serde_json::from_str(plain.expose())?)
    }

    pub async fn create(
        &self,
        identity: &Identity,
        draft: Draft,
        secrets: BTreeMap<String, String>,
    ) -> Result<Record, ToolsError> {
        let (tenant, user) = owner(identity)?;
        let draft = draft.validate(&self.stdio)?;
        validate_secrets(draft.kind, &secrets)?;
        // Where stdio servers cannot run, a new one is refused with the reason (an existing one
        // can still be changed, disabled or deleted; it is refused when it would start).
        if draft.kind == Kind::McpStdio
            && let Some(reason) = self.stdio.sandbox.unavailable()
        {
            return Err(ToolsError::SandboxUnavailable(reason));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let sealed = self.seal(identity, &id, &secrets)?;
        let names: Vec<String> = secrets.keys().cloned().collect();
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant).await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM integrations WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(tenant)
        .bind(user)
        .fetch_one(&mut *tx)
        .await?;
        if count >= MAX_INTEGRATIONS {
            return Err(invalid(format!(
                "at most {MAX_INTEGRATIONS} integrations per user"
            )));
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO integrations (tenant_id, id, user_id, kind, name, enabled, \
                 required_provider_tags, provider_tags_blocked, config, secret_names, kek_id, \
                 wrapped_dek, dek_nonce, ciphertext, nonce) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             RETURNING {COLUMNS}"
        )))
        .bind(tenant)
        .bind(&id)
        .bind(user)
        .bind(draft.kind.as_str())
        .bind(&draft.name)
        .bind(draft.enabled)
        .bind(&draft.required)
        .bind(&draft.blocked)
        .bind(&draft.config)
        .bind(&names)
        .bind(sealed.as_ref().map(|s| s.kek_id.clone()))
        .bind(sealed.as_ref().map(|s| s.wrapped_dek.clone()))
        .bind(sealed.as_ref().map(|s| s.dek_nonce.clone()))
        .bind(sealed.as_ref().map(|s| s.ciphertext.clone()))
        .bind(sealed.as_ref().map(|s| s.nonce.clone()))
        .fetch_one(&mut *tx)
        .await?;
        self.generations.commit_change(tx, tenant, user).await?;
        tracing::info!(
            tenant,
            user,
            id,
            kind = draft.kind.as_str(),
            "integration created"
        );
        record(&row)
    }

    pub async fn get(&self, identity: &Identity, id: &str) -> Result<Record, ToolsError> {
        let (tenant, user) = owner(identity)?;
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM integrations WHERE tenant_id = $1 AND user_id = $2 AND id = $3"
        )))
        .bind(tenant)
        .bind(user)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ToolsError::IntegrationNotFound(id.to_string()))?;
        tx.commit().await?;
        record(&row)
    }

    pub async fn list(&self, identity: &Identity) -> Result<Vec<Record>, ToolsError> {
        let (tenant, user) = owner(identity)?;
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM integrations WHERE tenant_id = $1 AND user_id = $2 \
             ORDER BY name, id"
        )))
        .bind(tenant)
        .bind(user)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(record).collect()
    }

    /// Applies `change` to the stored integration (validated as a whole afterwards);
    /// `secrets` = Some replaces the stored secrets.
    pub async fn update(
        &self,
        identity: &Identity,
        id: &str,
        change: impl FnOnce(&mut Draft),
        secrets: Option<BTreeMap<String, String>>,
    ) -> Result<Record, ToolsError> {
        let (tenant, user) = owner(identity)?;
        let current = self.get(identity, id).await?;
        let mut draft = Draft {
            kind: current.kind,
            name: current.name.clone(),
            enabled: current.enabled,
            required: current.required.clone(),
            blocked: current.blocked.clone(),
            config: current.config.clone(),
        };
        change(&mut draft);
        let draft = draft.validate(&self.stdio)?;
        let (sealed, names) = match &secrets {
            Some(secrets) => {
                validate_secrets(draft.kind, secrets)?;
                (
                    self.seal(identity, id, secrets)?,
                    secrets.keys().cloned().collect(),
                )
            }
            None => {
                if matches!(draft.kind, Kind::Brave | Kind::Tavily)
                    && !current.secret_names.iter().any(|n| n == "api_key")
                {
                    return Err(invalid(format!(
                        "a {} integration needs the secret api_key",
                        draft.kind.as_str()
                    )));
                }
                (current.sealed.clone(), current.secret_names.clone())
            }
        };
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE integrations SET name = $4, enabled = $5, required_provider_tags = $6, \
                 provider_tags_blocked = $7, config = $8, secret_names = $9, kek_id = $10, \
                 wrapped_dek = $11, dek_nonce = $12, ciphertext = $13, nonce = $14, \
                 updated_at = now() \
             WHERE tenant_id = $1 AND user_id = $2 AND id = $3 RETURNING {COLUMNS}"
        )))
        .bind(tenant)
        .bind(user)
        .bind(id)
        .bind(&draft.name)
        .bind(draft.enabled)
        .bind(&draft.required)
        .bind(&draft.blocked)
        .bind(&draft.config)
        .bind(&names)
        .bind(sealed.as_ref().map(|s| s.kek_id.clone()))
        .bind(sealed.as_ref().map(|s| s.wrapped_dek.clone()))
        .bind(sealed.as_ref().map(|s| s.dek_nonce.clone()))
        .bind(sealed.as_ref().map(|s| s.ciphertext.clone()))
        .bind(sealed.as_ref().map(|s| s.nonce.clone()))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ToolsError::IntegrationNotFound(id.to_string()))?;
        self.generations.commit_change(tx, tenant, user).await?;
        record(&row)
    }

    pub async fn delete(&self, identity: &Identity, id: &str) -> Result<(), ToolsError> {
        let (tenant, user) = owner(identity)?;
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant).await?;
        let deleted = sqlx::query(
            "DELETE FROM integrations WHERE tenant_id = $1 AND user_id = $2 AND id = $3",
        )
        .bind(tenant)
        .bind(user)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Chats that selected it forget it.
        sqlx::query(
            "UPDATE chat_tool_selection SET integration_ids = array_remove(integration_ids, $3), \
                 updated_at = now() \
             WHERE tenant_id = $1 AND user_id = $2 AND $3 = ANY(integration_ids)",
        )
        .bind(tenant)
        .bind(user)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        self.generations.commit_change(tx, tenant, user).await?;
        if deleted == 0 {
            return Err(ToolsError::IntegrationNotFound(id.to_string()));
        }
        Ok(())
    }

    pub async fn selection(
        &self,
        identity: &Identity,
        chat_id: &str,
    ) -> Result<Vec<String>, ToolsError> {
        let (tenant, user) = owner(identity)?;
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant).await?;
        let ids: Option<Vec<String>> = sqlx::query_scalar(
            "SELECT integration_ids FROM chat_tool_selection \
             WHERE tenant_id = $1 AND user_id = $2 AND chat_id = $3",
        )
        .bind(tenant)
        .bind(user)
        .bind(chat_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids.unwrap_or_default())
    }

    /// What a toolset's assembly reads, in one statement in `tx` (ADR 0220): the caller's
    /// integrations (as [`Self::list`]), the chat's selection (as [`Self::selection`]) and
    /// whether the caller has registered any device. A run's start waits for every round
    /// trip of its assembly.
    pub async fn assembly_reads_in(
        tx: &mut sqlx::PgConnection,
        identity: &Identity,
        chat_id: &str,
    ) -> Result<AssemblyReads, ToolsError> {
        let (tenant, user) = owner(identity)?;
        // One row at least (the inputs), with the integrations' columns NULL when there are
        // none.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, selection, has_devices FROM \
               (SELECT (SELECT integration_ids FROM chat_tool_selection \
                        WHERE tenant_id = $1 AND user_id = $2 AND chat_id = $3) AS selection, \
                       EXISTS (SELECT 1 FROM devices WHERE tenant_id = $1 AND user_id = $2) \
                         AS has_devices) AS inputs \
             LEFT JOIN integrations ON tenant_id = $1 AND user_id = $2 \
             ORDER BY name, id"
        )))
        .bind(tenant)
        .bind(user)
        .bind(chat_id)
        .fetch_all(tx)
        .await?;
        let first = rows
            .first()
            .ok_or_else(|| ToolsError::Corrupt("the assembly's inputs are missing".into()))?;
        let selection: Option<Vec<String>> = first.try_get("selection")?;
        let has_devices: bool = first.try_get("has_devices")?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.try_get::<Option<String>, _>("id")?.is_some() {
                records.push(record(row)?);
            }
        }
        Ok(AssemblyReads {
            records,
            selection: selection.unwrap_or_default(),
            has_devices,
        })
    }

    /// Replaces the chat's selection; every id must be one of the caller's integrations.
    /// The caller (the gateway) has checked the chat is the caller's.
    pub async fn set_selection(
        &self,
        identity: &Identity,
        chat_id: &str,
        ids: &[String],
    ) -> Result<Vec<String>, ToolsError> {
        let (tenant, user) = owner(identity)?;
        if chat_id.is_empty() || chat_id.len() > 128 {
            return Err(invalid("chat_id must be 1-128 characters"));
        }
        let mut unique: Vec<String> = Vec::new();
        for id in ids {
            if !unique.contains(id) {
                unique.push(id.clone());
            }
        }
        if unique.len() > MAX_INTEGRATIONS as usize {
            return Err(invalid("too many integrations"));
        }
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant).await?;
        let known: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM integrations WHERE tenant_id = $1 AND user_id = $2 AND id = ANY($3)",
        )
        .bind(tenant)
        .bind(user)
        .bind(&unique)
        .fetch_all(&mut *tx)
        .await?;
        if let Some(missing) = unique.iter().find(|id| !known.contains(id)) {
            return Err(ToolsError::IntegrationNotFound(missing.clone()));
        }
        let written = sqlx::query(
            "INSERT INTO chat_tool_selection (tenant_id, chat_id, user_id, integration_ids) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, chat_id) DO UPDATE SET \
                 integration_ids = EXCLUDED.integration_ids, updated_at = now() \
             WHERE chat_tool_selection.user_id = EXCLUDED.user_id",
        )
        .bind(tenant)
        .bind(chat_id)
        .bind(user)
        .bind(&unique)
        .execute(&mut *tx)
        .await?;
        // Chat ids are unique within a tenant: a row kept is another user's chat. Saying so
        // beats answering a selection that was never stored.
        if written.rows_affected() == 0 {
            return Err(ToolsError::ChatNotFound(chat_id.to_string()));
        }
        self.generations.commit_change(tx, tenant, user).await?;
        Ok(unique)
    }
}
