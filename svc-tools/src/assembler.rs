//! `ToolsetAssembler`: fixes a run's tools at run start, so a run never sees tools appear or
//! disappear mid-way. The snapshot is stored and ExecuteTool only runs tools that are in it.

use pa_kit::PaError;
use pa_proto::v1::{BlockedTool, Identity, Integration, ToolDefinition, Toolset};
use sqlx::{PgPool, Row};

#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error("toolset snapshot {0} not found")]
    UnknownSnapshot(String),
    #[error("tool {tool} is not in toolset snapshot {snapshot}")]
    NotInSnapshot { tool: String, snapshot: String },
    #[error("run_id must not be empty")]
    MissingRunId,
    #[error("snapshot_id must be at most 200 characters without spaces")]
    BadSnapshotId,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("stored toolset is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

impl From<ToolsError> for PaError {
    fn from(err: ToolsError) -> Self {
        match err {
            ToolsError::UnknownSnapshot(_) | ToolsError::NotInSnapshot { .. } => {
                PaError::not_found(err.to_string())
            }
            ToolsError::MissingRunId | ToolsError::BadSnapshotId => {
                PaError::bad_request(err.to_string())
            }
            ToolsError::Db(e) => e.into(),
            ToolsError::Corrupt(e) => PaError::internal(e),
        }
    }
}

#[derive(Clone)]
pub struct ToolsetAssembler {
    pool: PgPool,
}

impl ToolsetAssembler {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Snapshots the tools available to this run. No tool sources are registered yet (the
    /// first-party tools, MCP and devices arrive with the toolsets issue), so today's snapshot
    /// holds the user's enabled integrations' tools — none — and is still stored, so
    /// ExecuteTool already enforces "only what the snapshot holds".
    pub async fn assemble(
        &self,
        identity: &Identity,
        run_id: &str,
        snapshot_id: &str,
        provider_tags: &[String],
    ) -> Result<Toolset, ToolsError> {
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
        let tools: Vec<ToolDefinition> = Vec::new();
        let blocked: Vec<BlockedTool> = Vec::new();
        let snapshot_id = if snapshot_id.is_empty() {
            format!("ts-{run_id}")
        } else {
            snapshot_id.to_string()
        };
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        sqlx::query(
            "INSERT INTO toolset_snapshots (tenant_id, id, run_id, user_id, provider_tags, tools, blocked) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, id) DO NOTHING",
        )
        .bind(&identity.tenant_id)
        .bind(&snapshot_id)
        .bind(run_id)
        .bind(&identity.user_id)
        .bind(provider_tags)
        .bind(serde_json::to_value(&tools)?)
        .bind(serde_json::to_value(&blocked)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Toolset {
            snapshot_id,
            tools,
            blocked,
        })
    }

    pub async fn snapshot(
        &self,
        identity: &Identity,
        snapshot_id: &str,
    ) -> Result<Toolset, ToolsError> {
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        let row = sqlx::query(
            "SELECT tools, blocked FROM toolset_snapshots WHERE tenant_id = $1 AND id = $2 AND user_id = $3",
        )
        .bind(&identity.tenant_id)
        .bind(snapshot_id)
        .bind(&identity.user_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ToolsError::UnknownSnapshot(snapshot_id.to_string()))?;
        tx.commit().await?;
        Ok(Toolset {
            snapshot_id: snapshot_id.to_string(),
            tools: serde_json::from_value(row.try_get("tools")?)?,
            blocked: serde_json::from_value(row.try_get("blocked")?)?,
        })
    }

    /// Only a tool of the run's snapshot may run.
    pub async fn tool_for_call(
        &self,
        identity: &Identity,
        snapshot_id: &str,
        name: &str,
    ) -> Result<ToolDefinition, ToolsError> {
        let toolset = self.snapshot(identity, snapshot_id).await?;
        toolset
            .tools
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ToolsError::NotInSnapshot {
                tool: name.to_string(),
                snapshot: snapshot_id.to_string(),
            })
    }

    pub async fn integrations(&self, identity: &Identity) -> Result<Vec<Integration>, ToolsError> {
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        let rows = sqlx::query(
            "SELECT id, kind, name, enabled, required_provider_tags FROM integrations \
             WHERE tenant_id = $1 AND user_id = $2 ORDER BY name, id",
        )
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(Integration {
                    id: row.try_get("id")?,
                    kind: row.try_get("kind")?,
                    name: row.try_get("name")?,
                    enabled: row.try_get("enabled")?,
                    provider_tags_required: row.try_get("required_provider_tags")?,
                })
            })
            .collect()
    }

    pub async fn devices(
        &self,
        identity: &Identity,
    ) -> Result<Vec<pa_proto::v1::Device>, ToolsError> {
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        let rows = sqlx::query(
            "SELECT id, name, kind, last_seen_at > now() - interval '60 seconds' AS online \
             FROM devices WHERE tenant_id = $1 AND user_id = $2 ORDER BY name, id",
        )
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(pa_proto::v1::Device {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    kind: row.try_get("kind")?,
                    online: row.try_get::<Option<bool>, _>("online")?.unwrap_or(false),
                })
            })
            .collect()
    }
}
