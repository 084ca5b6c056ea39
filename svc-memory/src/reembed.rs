//! The `reembed_memories` maintenance task. A search compares only vectors of the query's model,
//! so a memory without a vector (its embedding failed) or with one of another model (the
//! operator changed `PA_EMBED_LABEL`) is invisible to vector search until it is embedded again.
//! This does that, in batches, for every tenant: it reads on the schema owner's pool (no tenant's
//! request, like a migration) and embeds on behalf of each memory's owner, so their keys and
//! limits apply.

use pa_kit::identity::{AuthMethod, internal_identity};
use pa_proto::v1::{EmbedPurpose, Identity};
use pgvector::Vector;
use sqlx::PgPool;

use crate::embed::Embedder;
use crate::store::MemoryError;

#[derive(Clone)]
pub struct Reembed {
    pub owner: PgPool,
    pub embedder: Embedder,
}

/// A memory's owner, acting through the platform (never a user's own session).
fn owner_identity(tenant_id: &str, user_id: &str) -> Identity {
    Identity {
        tenant_id: tenant_id.into(),
        user_id: user_id.into(),
        auth_method: AuthMethod::Internal as i32,
        display_name: "svc-memory maintenance".into(),
        ..Default::default()
    }
}

impl Reembed {
    /// Re-embeds up to `limit` stale memories with the current model. Returns how many were
    /// updated and whether more are stale.
    pub async fn run(&self, limit: u32) -> Result<(u64, bool), MemoryError> {
        // Which model searches use now: ask once, as the platform.
        let current = self
            .embedder
            .embed(
                &internal_identity("svc-memory"),
                &["model probe".to_string()],
                EmbedPurpose::Query,
            )
            .await?
            .model;
        let mut rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT tenant_id, user_id, id, content FROM items \
             WHERE deleted_at IS NULL AND (embedding IS NULL OR embedding_model IS DISTINCT FROM $1) \
             ORDER BY tenant_id, user_id, id LIMIT $2",
        )
        .bind(&current)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.owner)
        .await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let mut updated = 0u64;
        for owned in rows.chunk_by(|a, b| (&a.0, &a.1) == (&b.0, &b.1)) {
            let (tenant, user) = (&owned[0].0, &owned[0].1);
            let texts: Vec<String> = owned.iter().map(|r| r.3.clone()).collect();
            let embedded = self
                .embedder
                .embed(
                    &owner_identity(tenant, user),
                    &texts,
                    EmbedPurpose::Document,
                )
                .await?;
            if embedded.model != current {
                // The model changed while we worked: the next run picks these up again.
                continue;
            }
            for (row, vector) in owned.iter().zip(embedded.vectors) {
                let dims = vector.len() as i32;
                // Guarded by the content: an edit meanwhile brought its own embedding.
                updated += sqlx::query(
                    "UPDATE items SET embedding = $1, embedding_model = $2, embedding_dims = $3 \
                     WHERE tenant_id = $4 AND id = $5 AND content = $6 AND deleted_at IS NULL",
                )
                .bind(Vector::from(vector))
                .bind(&current)
                .bind(dims)
                .bind(tenant)
                .bind(&row.2)
                .bind(&row.3)
                .execute(&self.owner)
                .await?
                .rows_affected();
            }
        }
        Ok((updated, more))
    }
}
