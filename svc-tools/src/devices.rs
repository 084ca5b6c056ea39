//! The device registry and device tool calls.
//!
//! A signed-in user asks for a one-time enrollment code for one kind of device (12 random
//! characters, stored as a SHA-256 with the kind, valid [`ENROLLMENT_TTL`]); the device trades it (through the gateway, without
//! a user login) for a device id and a device token `pad_<device id>_<secret>` (only the
//! secret's SHA-256 is stored). The gateway authenticates the device's socket with the token,
//! records what the device announced (its tools) and keeps its online key in Redis (see
//! [`pa_bus::device_bus`]).
//!
//! The device's kind is the code's: the privilege of its tools follows the kind, so a device
//! never picks it (one that claims another kind at enrollment is refused).
//!
//! The toolset of a run holds the tools of the user's online devices, named
//! `<device>__<tool>`, source `device:<id>`. Only the known tools that read nothing private and
//! send nothing out are low privilege (see [`privilege`]); everything else — and any tool a
//! device announces that we do not know — is high privilege, so the untrusted-content gate asks
//! a human first. Everything a device returns is untrusted content.
//!
//! A call is published to the connection holding the device and its result awaited (BLPOP) for
//! at most the device call timeout; when the socket drops mid-call, the gateway pushes a failure
//! at once, so the model hears "the device disconnected" rather than waiting for the timeout.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use deadpool_redis::redis::{self, AsyncCommands};
use pa_bus::device_bus::{self, BusCall, BusResult};
use pa_proto::v1::{
    AuthMethod, Device, DeviceEnrollment, DeviceTool, EnrollDeviceResponse, Identity,
    ToolDefinition,
};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use crate::error::{ToolsError, invalid};
use crate::mcp;

pub const ENROLLMENT_TTL: Duration = Duration::from_secs(10 * 60);
pub const TOKEN_PREFIX: &str = "pad_";
/// The device tools that only read; everything else a device offers is high privilege.
pub const READ_ONLY_TOOLS: &[&str] = &["fs_list", "fs_read", "fs_search"];
/// The browser extension's tools that only look.
pub const BROWSER_READ_TOOLS: &[&str] = &["read_tab", "list_tabs", "screenshot"];
/// Of those, the ones that read the user's own, logged-in pages: high privilege.
pub const BROWSER_PRIVATE_READS: &[&str] = &["read_tab", "screenshot"];
/// Codes use letters and digits that cannot be mistaken for one another (no 0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
const CODE_LEN: usize = 12;
const MAX_TOOLS: usize = 64;
const MAX_DEVICES_PER_USER: i64 = 50;
const OPEN_ENROLLMENTS_PER_USER: i64 = 20;
pub const KINDS: &[&str] = &["device_agent", "browser_sandbox", "browser_extension"];

#[derive(Clone)]
pub struct DeviceRegistry {
    pool: PgPool,
    call_timeout: Duration,
    /// Renewed when a user gets a device (ADR 0251); its Redis is where devices are present
    /// and their calls queued.
    generations: crate::generation::Generations,
}

fn sha256(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

fn random_bytes(n: usize) -> Result<Vec<u8>, ToolsError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|_| invalid("no randomness available"))?;
    Ok(buf)
}

/// `ABCD-EFGH-JKMN`. 12 characters of a 31-letter alphabet: 59 bits.
fn new_code() -> Result<String, ToolsError> {
    let raw: String = random_bytes(CODE_LEN * 2)?
        .chunks(2)
        .map(|pair| {
            let n = u16::from_le_bytes([pair[0], pair[1]]) as usize;
            CODE_ALPHABET[n % CODE_ALPHABET.len()] as char
        })
        .collect();
    Ok(format!("{}-{}-{}", &raw[..4], &raw[4..8], &raw[8..]))
}

/// What is hashed: upper case, without separators, so `abcd efgh-jkmn` works too.
fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// `pad_<device id>_<secret>` → (device id, secret). Device ids are hex, so the first `_` after
/// the prefix ends the id.
fn split_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
    let ok = id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) && !secret.is_empty();
    ok.then_some((id, secret))
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn valid_name(name: &str) -> Result<String, ToolsError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(invalid(
            "a device name is 1-64 characters without control characters",
        ));
    }
    Ok(name.to_string())
}

/// A device kind ('' = device_agent).
fn known_kind(kind: &str) -> Result<&'static str, ToolsError> {
    let kind = if kind.is_empty() {
        "device_agent"
    } else {
        kind
    };
    KINDS.iter().find(|k| **k == kind).copied().ok_or_else(|| {
        invalid(format!(
            "unknown device kind {kind:?}: expected {}",
            KINDS.join(", ")
        ))
    })
}

fn millis(t: Option<DateTime<Utc>>) -> i64 {
    t.map(|t| t.timestamp_millis()).unwrap_or_default()
}

/// The prefix of a device's tool names: its name, like an MCP server's.
pub fn prefix(device_name: &str) -> String {
    let p = mcp::prefix(device_name);
    if p == "mcp" { "device".into() } else { p }
}

/// Checks what a device announces: a bounded list of well-named tools with object schemas.
fn checked_tools(tools: Vec<DeviceTool>) -> Result<Vec<DeviceTool>, ToolsError> {
    if tools.len() > MAX_TOOLS {
        return Err(invalid(format!(
            "a device offers at most {MAX_TOOLS} tools"
        )));
    }
    for t in &tools {
        let ok_name = !t.name.is_empty()
            && t.name.len() <= 32
            && t.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok_name {
            return Err(invalid(format!(
                "device tool name {:?} is not 1-32 of A-Z a-z 0-9 _",
                t.name
            )));
        }
        if t.description.len() > 2000 {
            return Err(invalid(format!(
                "device tool {}: description over 2000 bytes",
                t.name
            )));
        }
        let schema: serde_json::Value = serde_json::from_str(&t.parameters_json_schema)
            .map_err(|e| invalid(format!("device tool {}: schema is not JSON: {e}", t.name)))?;
        mcp::validate_schema(&schema)
            .map_err(|e| invalid(format!("device tool {}: {e}", t.name)))?;
    }
    Ok(tools)
}

/// What a device's tool may do, decided here from the device's kind (fixed by its enrollment
/// code) and the tool's name, never from what the device announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Privilege {
    /// It changes nothing (an `explore` sub-agent may have it).
    pub read_only: bool,
    /// It needs a human's approval once the run has read untrusted content.
    pub high: bool,
    pub class: &'static str,
}

const fn privilege_of(read_only: bool, high: bool, class: &'static str) -> Privilege {
    Privilege {
        read_only,
        high,
        class,
    }
}

/// The privilege of a device's tool (docs/src/adr/0112-2026-12-03-device-and-browser-tool-privilege.md):
///
/// - the device agent: listing, reading and searching files are low-privilege reads; the rest
///   writes files or runs commands;
/// - the cloud browser (`browser_sandbox`): every tool is a read. It is a throwaway browser
///   with no one's cookies, one context per run, whose egress refuses private addresses: like
///   web_fetch, it can only look at the public web (which tools can send data out once a run
///   is tainted is decided with the run's taint, not here);
/// - the browser extension: listing tabs is a low-privilege read; reading a tab and taking a
///   screenshot read the user's own, logged-in browser (high privilege, still reads);
///   navigating, clicking and typing act in it.
pub fn privilege(kind: &str, tool: &str) -> Privilege {
    match kind {
        "browser_sandbox" => privilege_of(true, false, "read"),
        "browser_extension" if BROWSER_PRIVATE_READS.contains(&tool) => {
            privilege_of(true, true, "read_private")
        }
        "browser_extension" if BROWSER_READ_TOOLS.contains(&tool) => {
            privilege_of(true, false, "read")
        }
        "browser_extension" => privilege_of(false, true, "act"),
        _ if READ_ONLY_TOOLS.contains(&tool) => privilege_of(true, false, "read"),
        _ if tool.starts_with("fs_") => privilege_of(false, true, "write"),
        _ => privilege_of(false, true, "exec"),
    }
}

/// Whether a device tool's output is untrusted content: always. A web page is the web's; a
/// file or a command's output on the user's machine may hold text someone else wrote (a
/// download, a cloned repository, a mail), so it taints the run like a web page does.
pub fn untrusted_output(_kind: &str) -> bool {
    true
}

/// The toolset entry of a device's tool.
pub fn definition(device: &Device, tool: &DeviceTool) -> ToolDefinition {
    let privilege = privilege(&device.kind, &tool.name);
    ToolDefinition {
        name: format!("{}__{}", prefix(&device.name), tool.name),
        description: format!("[device {}] {}", device.name, tool.description),
        parameters_json_schema: tool.parameters_json_schema.clone(),
        source: format!("device:{}", device.id),
        high_privilege: privilege.high,
        read_only: privilege.read_only,
        provider_tags_required: Vec::new(),
        provider_tags_blocked: Vec::new(),
        privilege_class: privilege.class.into(),
        untrusted_output: untrusted_output(&device.kind),
        origin_name: tool.name.clone(),
        // Set by the assembler (`sends_data_out`).
        egress: false,
        // Reading the user's own, logged-in browser asks every time (ADR 0112).
        always_approve: always_approve(&device.kind, &tool.name),
    }
}

/// Whether every call of a device's tool waits for its user's approval, tainted run or not:
/// the extension's reads of the user's own, logged-in pages (a tab's text, a screenshot).
pub fn always_approve(kind: &str, tool: &str) -> bool {
    kind == "browser_extension" && BROWSER_PRIVATE_READS.contains(&tool)
}

impl DeviceRegistry {
    pub fn new(
        pool: PgPool,
        generations: crate::generation::Generations,
        call_timeout: Duration,
    ) -> Self {
        Self {
            pool,
            call_timeout,
            generations,
        }
    }

    fn redis(&self) -> &pa_kit::redis::Pool {
        self.generations.redis()
    }

    pub async fn create_enrollment(
        &self,
        identity: &Identity,
        name: &str,
        kind: &str,
    ) -> Result<DeviceEnrollment, ToolsError> {
        let name = if name.trim().is_empty() {
            String::new()
        } else {
            valid_name(name)?
        };
        let kind = known_kind(kind)?;
        let code = new_code()?;
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM device_enrollments WHERE tenant_id = $1 AND user_id = $2 \
             AND used_at IS NULL AND expires_at > now()",
        )
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .fetch_one(&mut *tx)
        .await?;
        if open >= OPEN_ENROLLMENTS_PER_USER {
            return Err(invalid(format!(
                "at most {OPEN_ENROLLMENTS_PER_USER} unused enrollment codes at a time"
            )));
        }
        let expires: DateTime<Utc> = sqlx::query_scalar(
            "INSERT INTO device_enrollments (tenant_id, code_hash, user_id, name, expires_at, kind) \
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6) RETURNING expires_at",
        )
        .bind(&identity.tenant_id)
        .bind(sha256(&normalize_code(&code)))
        .bind(&identity.user_id)
        .bind(&name)
        .bind(ENROLLMENT_TTL.as_secs_f64())
        .bind(kind)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(DeviceEnrollment {
            code,
            expires_at_ms: expires.timestamp_millis(),
        })
    }

    /// Redeems a code (once, before it expires) for a new device of the code's user, of the
    /// code's kind. `kind` is what the device claims: empty, or the code's kind; any other is
    /// refused and the code stays unused.
    pub async fn enroll(
        &self,
        code: &str,
        name: &str,
        kind: &str,
        platform: &str,
    ) -> Result<EnrollDeviceResponse, ToolsError> {
        let refused = || {
            ToolsError::Unauthenticated("the enrollment code is unknown, used or expired".into())
        };
        let normalized = normalize_code(code);
        if normalized.len() != CODE_LEN {
            return Err(refused());
        }
        let claimed = if kind.is_empty() {
            None
        } else {
            Some(known_kind(kind)?)
        };
        let code_hash = sha256(&normalized);
        let device_id = uuid::Uuid::new_v4().simple().to_string();
        let mut tx = pa_kit::db::scoped_tx(
            &self.pool,
            &[
                ("pa.device_code_hash", &hex::encode(&code_hash)),
                ("pa.device_id", &device_id),
            ],
        )
        .await?;
        let row = sqlx::query(
            "UPDATE device_enrollments SET used_at = now(), device_id = $2 \
             WHERE code_hash = $1 AND used_at IS NULL AND expires_at > now() \
             RETURNING tenant_id, user_id, name, kind",
        )
        .bind(&code_hash)
        .bind(&device_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(refused)?;
        let tenant_id: String = row.try_get("tenant_id")?;
        let user_id: String = row.try_get("user_id")?;
        let enrolled_name: String = row.try_get("name")?;
        let kind: String = row.try_get("kind")?;
        if let Some(claimed) = claimed
            && claimed != kind
        {
            // Dropping the transaction rolls the redemption back: the code stays usable by the
            // device it was made for.
            tracing::warn!(%tenant_id, %user_id, claimed, code_kind = %kind, "enrollment refused: the device claims another kind");
            return Err(invalid(format!(
                "this enrollment code is for a {kind}, not a {claimed}: create a code for a \
                 {claimed} in the web app (Settings → Devices)"
            )));
        }
        let name = match (name.trim().is_empty(), enrolled_name.is_empty()) {
            (false, _) => valid_name(name)?,
            (true, false) => enrolled_name,
            (true, true) => "device".into(),
        };
        // Now that the tenant is known, the transaction may see the user's devices.
        sqlx::query("SELECT set_config('pa.tenant_id', $1, true)")
            .bind(&tenant_id)
            .execute(&mut *tx)
            .await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM devices WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(&tenant_id)
        .bind(&user_id)
        .fetch_one(&mut *tx)
        .await?;
        if count >= MAX_DEVICES_PER_USER {
            return Err(invalid(format!(
                "at most {MAX_DEVICES_PER_USER} devices per user: delete one first"
            )));
        }
        let secret = URL_SAFE_NO_PAD.encode(random_bytes(32)?);
        let token = format!("{TOKEN_PREFIX}{device_id}_{secret}");
        sqlx::query(
            "INSERT INTO devices (tenant_id, id, user_id, name, kind, token_hash, platform) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&tenant_id)
        .bind(&device_id)
        .bind(&user_id)
        .bind(&name)
        .bind(&kind)
        .bind(sha256(&secret))
        .bind(platform.chars().take(64).collect::<String>())
        .execute(&mut *tx)
        .await?;
        // A user with a device gets toolsets that are not reused (ADR 0251).
        self.generations
            .commit_change(tx, &tenant_id, &user_id)
            .await?;
        tracing::info!(%tenant_id, %user_id, %device_id, %kind, "device enrolled");
        Ok(EnrollDeviceResponse {
            device_id,
            device_token: token,
            name,
        })
    }

    /// The device a token belongs to and its owner, or Unauthenticated.
    pub async fn authenticate(&self, token: &str) -> Result<(Device, Identity), ToolsError> {
        let refused = || ToolsError::Unauthenticated("invalid device token".into());
        let (id, secret) = split_token(token).ok_or_else(refused)?;
        let mut tx = pa_kit::db::scoped_tx(&self.pool, &[("pa.device_id", id)]).await?;
        let row = sqlx::query(
            "SELECT tenant_id, user_id, token_hash, name, kind, platform, read_only, created_at, last_seen_at \
             FROM devices WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(refused)?;
        tx.commit().await?;
        let stored: Option<Vec<u8>> = row.try_get("token_hash")?;
        if !stored.is_some_and(|h| same(&h, &sha256(secret))) {
            return Err(refused());
        }
        let user_id: String = row.try_get("user_id")?;
        let owner = Identity {
            tenant_id: row.try_get("tenant_id")?,
            display_name: user_id.clone(),
            user_id,
            roles: Vec::new(),
            scopes: Vec::new(),
            auth_method: AuthMethod::Unspecified as i32,
        };
        let device = Device {
            id: id.to_string(),
            name: row.try_get("name")?,
            kind: row.try_get("kind")?,
            online: false,
            platform: row.try_get("platform")?,
            read_only: row.try_get("read_only")?,
            tools: Vec::new(),
            created_at_ms: millis(row.try_get("created_at")?),
            last_seen_at_ms: millis(row.try_get("last_seen_at")?),
        };
        Ok((device, owner))
    }

    /// Records a connection (with what the device announced) or a heartbeat. NotFound when the
    /// device was deleted: the gateway then closes its socket.
    pub async fn set_online(
        &self,
        device_id: &str,
        connection_id: &str,
        heartbeat: bool,
        platform: &str,
        read_only: bool,
        tools: Vec<DeviceTool>,
    ) -> Result<(), ToolsError> {
        let mut tx = pa_kit::db::scoped_tx(&self.pool, &[("pa.device_id", device_id)]).await?;
        let updated = if heartbeat {
            sqlx::query("UPDATE devices SET last_seen_at = now() WHERE id = $1")
                .bind(device_id)
                .execute(&mut *tx)
                .await?
        } else {
            let tools = checked_tools(tools)?;
            sqlx::query(
                "UPDATE devices SET last_seen_at = now(), connection_id = $2, platform = $3, \
                 read_only = $4, tools = $5 WHERE id = $1",
            )
            .bind(device_id)
            .bind(connection_id)
            .bind(platform.chars().take(64).collect::<String>())
            .bind(read_only)
            .bind(serde_json::to_value(&tools)?)
            .execute(&mut *tx)
            .await?
        };
        tx.commit().await?;
        if updated.rows_affected() == 0 {
            return Err(ToolsError::DeviceNotFound(device_id.to_string()));
        }
        Ok(())
    }

    pub async fn set_offline(
        &self,
        device_id: &str,
        connection_id: &str,
    ) -> Result<(), ToolsError> {
        let mut tx = pa_kit::db::scoped_tx(&self.pool, &[("pa.device_id", device_id)]).await?;
        sqlx::query(
            "UPDATE devices SET connection_id = NULL, last_seen_at = now() \
             WHERE id = $1 AND connection_id = $2",
        )
        .bind(device_id)
        .bind(connection_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Which of `ids` have an online key.
    async fn online(&self, ids: &[String]) -> Result<Vec<bool>, ToolsError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self
            .redis()
            .get()
            .await
            .map_err(|e| ToolsError::Redis(e.to_string()))?;
        let keys: Vec<String> = ids.iter().map(|id| device_bus::online_key(id)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(|e| ToolsError::Redis(e.to_string()))?;
        Ok(values.into_iter().map(|v| v.is_some()).collect())
    }

    pub async fn list(&self, identity: &Identity) -> Result<Vec<Device>, ToolsError> {
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        let devices = self.list_in(&mut tx, identity).await?;
        tx.commit().await?;
        Ok(devices)
    }

    /// The caller's devices, read in `tx` (a tenant transaction of the caller's tenant), and
    /// which of them are online (Redis).
    pub async fn list_in(
        &self,
        tx: &mut sqlx::PgConnection,
        identity: &Identity,
    ) -> Result<Vec<Device>, ToolsError> {
        let rows = sqlx::query(
            "SELECT id, name, kind, platform, read_only, tools, created_at, last_seen_at \
             FROM devices WHERE tenant_id = $1 AND user_id = $2 ORDER BY name, id",
        )
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .fetch_all(tx)
        .await?;
        let mut devices = rows
            .iter()
            .map(|row| {
                Ok(Device {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    kind: row.try_get("kind")?,
                    online: false,
                    platform: row.try_get("platform")?,
                    read_only: row.try_get("read_only")?,
                    tools: serde_json::from_value(row.try_get("tools")?)?,
                    created_at_ms: millis(row.try_get("created_at")?),
                    last_seen_at_ms: millis(row.try_get("last_seen_at")?),
                })
            })
            .collect::<Result<Vec<_>, ToolsError>>()?;
        let ids: Vec<String> = devices.iter().map(|d| d.id.clone()).collect();
        for (device, online) in devices.iter_mut().zip(self.online(&ids).await?) {
            device.online = online;
        }
        Ok(devices)
    }

    /// Deletes the device (its token stops working; a connected socket is closed at its next
    /// heartbeat).
    pub async fn delete(&self, identity: &Identity, id: &str) -> Result<(), ToolsError> {
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        let deleted =
            sqlx::query("DELETE FROM devices WHERE tenant_id = $1 AND user_id = $2 AND id = $3")
                .bind(&identity.tenant_id)
                .bind(&identity.user_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        if deleted.rows_affected() == 0 {
            return Err(ToolsError::DeviceNotFound(id.to_string()));
        }
        if let Ok(mut conn) = self.redis().get().await {
            let _: Result<(), _> = conn.del(device_bus::online_key(id)).await;
        }
        Ok(())
    }

    /// The tools of the caller's online devices, for a toolset; the devices are read in `tx` (see
    /// [`Self::list_in`]).
    pub async fn online_tools_in(
        &self,
        tx: &mut sqlx::PgConnection,
        identity: &Identity,
    ) -> Result<Vec<ToolDefinition>, ToolsError> {
        let devices = self.list_in(tx, identity).await?;
        Ok(devices
            .iter()
            .filter(|d| d.online)
            .flat_map(|d| d.tools.iter().map(|t| definition(d, t)))
            .collect())
    }

    /// Runs `tool` on the device behind it. `Err` is the failure the model reads.
    pub async fn call(
        &self,
        identity: &Identity,
        tool: &ToolDefinition,
        arguments: serde_json::Value,
        run_id: &str,
    ) -> Result<BusResult, String> {
        let device_id = tool.source.strip_prefix("device:").unwrap_or_default();
        let owned = self
            .list(identity)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot load devices");
                "the device registry could not be read".to_string()
            })?
            .into_iter()
            .find(|d| d.id == device_id);
        let Some(device) = owned else {
            return Err(format!("the device behind {} no longer exists", tool.name));
        };
        let unreachable = |e: redis::RedisError| {
            tracing::warn!(error = %e, "device bus");
            "the device could not be reached (Redis)".to_string()
        };
        let offline = || format!("the device {:?} is offline", device.name);
        let mut conn = self.redis().get().await.map_err(|e| {
            tracing::warn!(error = %e, "device bus");
            "the device could not be reached (Redis)".to_string()
        })?;
        let connection: Option<String> = conn
            .get(device_bus::online_key(device_id))
            .await
            .map_err(unreachable)?;
        let Some(connection) = connection else {
            return Err(offline());
        };
        let call_id = uuid::Uuid::new_v4().simple().to_string();
        let call = BusCall::Call {
            id: call_id.clone(),
            tool: tool.origin_name.clone(),
            arguments,
            run_id: run_id.to_string(),
        };
        let channel = device_bus::calls_channel(&connection);
        let body = serde_json::to_string(&call).map_err(|e| e.to_string())?;
        let receivers: i64 = conn.publish(&channel, body).await.map_err(unreachable)?;
        if receivers == 0 {
            return Err(offline());
        }
        let answer: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(device_bus::result_key(&call_id))
            .arg(self.call_timeout.as_secs_f64())
            .query_async(&mut conn)
            .await
            .map_err(unreachable)?;
        match answer {
            Some((_, body)) => serde_json::from_str(&body)
                .map_err(|_| "the device's answer was unreadable".to_string()),
            None => {
                let cancel =
                    serde_json::to_string(&BusCall::Cancel { id: call_id }).unwrap_or_default();
                let _: Result<i64, _> = conn.publish(&channel, cancel).await;
                Err(format!(
                    "the device {:?} did not answer within {} s (the call was cancelled)",
                    device.name,
                    self.call_timeout.as_secs()
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_readable_and_normalize() {
        let code = new_code().unwrap_or_default();
        assert_eq!(code.len(), 14, "{code}");
        assert_eq!(normalize_code(&code).len(), CODE_LEN);
        assert_eq!(
            normalize_code(&code.to_lowercase().replace('-', " ")),
            normalize_code(&code)
        );
        assert_ne!(new_code().unwrap_or_default(), code);
    }

    #[test]
    fn tokens_split_at_the_device_id() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            split_token(&format!("pad_{id}_se_cr-et")),
            Some((id, "se_cr-et"))
        );
        assert_eq!(split_token("pad_short_secret"), None);
        assert_eq!(split_token(&format!("pa_{id}_x")), None);
        assert_eq!(split_token(&format!("pad_{id}_")), None);
    }

    #[test]
    fn only_known_read_tools_are_low_privilege() {
        let tool = |name: &str| DeviceTool {
            name: name.into(),
            parameters_json_schema: r#"{"type":"object"}"#.into(),
            ..Default::default()
        };
        let device = |kind: &str, name: &str| Device {
            id: "d1".into(),
            name: name.into(),
            kind: kind.into(),
            ..Default::default()
        };
        let laptop = device("device_agent", "My Laptop");
        let read = definition(&laptop, &tool("fs_read"));
        assert_eq!(read.name, "my_laptop__fs_read");
        assert_eq!(read.source, "device:d1");
        // A file may hold what someone else wrote: untrusted, like a web page.
        assert!(!read.high_privilege && read.read_only && read.untrusted_output);
        for name in ["fs_write", "pty_exec", "pty_start", "something_new"] {
            let t = definition(&laptop, &tool(name));
            assert!(t.high_privilege && !t.read_only, "{name}");
        }
        assert_eq!(
            definition(&laptop, &tool("fs_write")).privilege_class,
            "write"
        );
        assert_eq!(
            definition(&laptop, &tool("pty_exec")).privilege_class,
            "exec"
        );

        // A device cannot make its tools harmless by naming them like another kind's reads.
        let extension = device("browser_extension", "chrome");
        // Reading a tab or a screenshot of the user's logged-in browser: high privilege.
        for name in ["read_tab", "screenshot"] {
            let t = definition(&extension, &tool(name));
            assert!(
                t.read_only && t.high_privilege && t.untrusted_output,
                "{name}"
            );
            assert_eq!(t.privilege_class, "read_private");
        }
        let list_tabs = definition(&extension, &tool("list_tabs"));
        assert!(list_tabs.read_only && !list_tabs.high_privilege && list_tabs.untrusted_output);
        for name in ["navigate", "click", "type_text", "fs_write", "fs_read"] {
            let t = definition(&extension, &tool(name));
            assert!(t.high_privilege && t.privilege_class == "act", "{name}");
        }
        assert!(definition(&laptop, &tool("read_tab")).high_privilege);
        // A tab or a screenshot of the user's own browser is asked for every time; listing the
        // tabs, another kind's tool of the same name, and the cloud browser are not.
        assert!(always_approve("browser_extension", "read_tab"));
        assert!(always_approve("browser_extension", "screenshot"));
        assert!(!always_approve("browser_extension", "list_tabs"));
        assert!(!always_approve("browser_sandbox", "read_tab"));
        assert!(!always_approve("device_agent", "screenshot"));

        // The cloud browser only looks at the public web, and all it reads is untrusted.
        let sandbox = device("browser_sandbox", "cloud");
        for name in ["navigate", "click", "read_page"] {
            let t = definition(&sandbox, &tool(name));
            assert!(
                t.read_only && !t.high_privilege && t.untrusted_output,
                "{name}"
            );
        }
    }

    #[test]
    fn announced_tools_are_checked() {
        let tool = |name: &str, schema: &str| DeviceTool {
            name: name.into(),
            parameters_json_schema: schema.into(),
            ..Default::default()
        };
        assert!(checked_tools(vec![tool("fs_read", r#"{"type":"object"}"#)]).is_ok());
        assert!(checked_tools(vec![tool("bad name", r#"{"type":"object"}"#)]).is_err());
        assert!(checked_tools(vec![tool("x", "not json")]).is_err());
        assert!(
            checked_tools(
                (0..65)
                    .map(|i| tool(&format!("t{i}"), r#"{"type":"object"}"#))
                    .collect()
            )
            .is_err()
        );
    }
}
