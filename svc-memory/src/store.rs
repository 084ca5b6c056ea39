//! Memory items (schema `memory`). Search is a plain text match today; embeddings and hybrid
//! pgvector search arrive with the memory issue.

use pa_kit::PaError;
use pa_proto::v1::{Identity, MemoryItem, MemoryScope, ScoredMemory};
use sqlx::{PgPool, Row};

const MAX_CONTENT: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("memory item {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<MemoryError> for PaError {
    fn from(err: MemoryError) -> Self {
        match err {
            MemoryError::NotFound(_) => PaError::not_found(err.to_string()),
            MemoryError::Invalid(_) => PaError::bad_request(err.to_string()),
            MemoryError::Db(e) => e.into(),
        }
    }
}

#[derive(Clone)]
pub struct MemoryStore {
    pool: PgPool,
}

fn validate(item: &MemoryItem) -> Result<MemoryScope, MemoryError> {
    let scope = MemoryScope::try_from(item.scope).unwrap_or(MemoryScope::Unspecified);
    match scope {
        MemoryScope::Unspecified => Err(MemoryError::Invalid("scope must be WORLD or CHAT".into())),
        MemoryScope::Chat if item.chat_id.as_deref().unwrap_or("").is_empty() => {
            Err(MemoryError::Invalid("a CHAT memory needs chat_id".into()))
        }
        MemoryScope::World if item.chat_id.is_some() => {
            Err(MemoryError::Invalid("a WORLD memory has no chat_id".into()))
        }
        _ if item.content.trim().is_empty() => Err(MemoryError::Invalid("content is empty".into())),
        _ if item.content.len() > MAX_CONTENT => Err(MemoryError::Invalid(format!(
            "content is over {MAX_CONTENT} bytes"
        ))),
        scope => Ok(scope),
    }
}

fn from_row(row: &sqlx::postgres::PgRow) -> Result<MemoryItem, sqlx::Error> {
    let created: chrono::DateTime<chrono::Utc> = row.try_get("created_at")?;
    let updated: chrono::DateTime<chrono::Utc> = row.try_get("updated_at")?;
    Ok(MemoryItem {
        id: row.try_get("id")?,
        scope: i32::from(row.try_get::<i16, _>("scope")?),
        chat_id: row.try_get("chat_id")?,
        content: row.try_get("content")?,
        tags: row.try_get("tags")?,
        created_at_ms: created.timestamp_millis(),
        updated_at_ms: updated.timestamp_millis(),
    })
}

impl MemoryStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Inserts, or updates the caller's item with the same id.
    pub async fn upsert(
        &self,
        identity: &Identity,
        mut item: MemoryItem,
    ) -> Result<MemoryItem, MemoryError> {
        let scope = validate(&item)?;
        if item.id.is_empty() {
            item.id = uuid::Uuid::now_v7().to_string();
        }
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        let row = sqlx::query(
            "INSERT INTO items (tenant_id, id, user_id, scope, chat_id, content, tags) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, id) DO UPDATE SET content = EXCLUDED.content, \
               tags = EXCLUDED.tags, updated_at = now() \
             WHERE items.user_id = EXCLUDED.user_id \
             RETURNING id, scope, chat_id, content, tags, created_at, updated_at",
        )
        .bind(&identity.tenant_id)
        .bind(&item.id)
        .bind(&identity.user_id)
        .bind(scope as i16)
        .bind(&item.chat_id)
        .bind(&item.content)
        .bind(&item.tags)
        .fetch_optional(&mut *tx)
        .await?
        // The id exists but belongs to someone else: do not reveal it.
        .ok_or_else(|| MemoryError::NotFound(item.id.clone()))?;
        tx.commit().await?;
        Ok(from_row(&row)?)
    }

    pub async fn search(
        &self,
        identity: &Identity,
        query: &str,
        scope: MemoryScope,
        chat_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ScoredMemory>, MemoryError> {
        let limit = i64::from(limit.clamp(1, 100));
        let scope_filter = match scope {
            MemoryScope::Unspecified => None,
            other => Some(other as i16),
        };
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        let rows = sqlx::query(
            "SELECT id, scope, chat_id, content, tags, created_at, updated_at FROM items \
             WHERE tenant_id = $1 AND user_id = $2 \
               AND ($3::smallint IS NULL OR scope = $3) \
               AND ($4::text IS NULL OR chat_id = $4) \
               AND content ILIKE '%' || $5 || '%' \
             ORDER BY updated_at DESC LIMIT $6",
        )
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .bind(scope_filter)
        .bind(chat_id)
        .bind(
            query
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_"),
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(ScoredMemory {
                    item: Some(from_row(row)?),
                    score: 1.0,
                })
            })
            .collect()
    }

    pub async fn forget(&self, identity: &Identity, id: &str) -> Result<(), MemoryError> {
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        let done =
            sqlx::query("DELETE FROM items WHERE tenant_id = $1 AND user_id = $2 AND id = $3")
                .bind(&identity.tenant_id)
                .bind(&identity.user_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        if done.rows_affected() == 0 {
            return Err(MemoryError::NotFound(id.to_string()));
        }
        Ok(())
    }
}
