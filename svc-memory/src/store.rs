//! Memory items (schema `memory`): text, kind, provenance, an embedding (model id and
//! dimension stored with it) and a full-text vector. Search is hybrid: nearest neighbours by
//! cosine (HNSW) and full-text matches, merged by reciprocal-rank fusion. Every query runs in a
//! tenant transaction under row-level security and filters on the caller's user id.

use pa_kit::PaError;
use pa_proto::v1::{
    DataClassification, Identity, MemoryItem, MemoryKind, MemoryScope, MemorySource, ScoredMemory,
};
use pgvector::Vector;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

pub const MAX_CONTENT: usize = 16 * 1024;
/// Cosine similarity from which a new memory is the same as an existing one.
pub const DEDUP_SIMILARITY: f32 = 0.95;
/// Reciprocal-rank fusion constant (the usual 60).
const RRF_K: f32 = 60.0;
/// Candidates each ranking contributes before fusion, per requested result.
const CANDIDATES_PER_RESULT: i64 = 4;
const MIN_CANDIDATES: i64 = 40;

const COLUMNS: &str = "id, scope, chat_id, content, tags, created_at, updated_at, kind, \
    source_chat_id, source_run_id, source_message_id, document_id, document_name, chunk_index, \
    pinned, embedding_model, embedding_dims, untrusted, classification";

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("memory item {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Upstream(#[from] PaError),
}

impl From<MemoryError> for PaError {
    fn from(err: MemoryError) -> Self {
        match err {
            MemoryError::NotFound(_) => PaError::not_found(err.to_string()),
            MemoryError::Invalid(_) => PaError::bad_request(err.to_string()),
            MemoryError::Db(e) => e.into(),
            MemoryError::Upstream(e) => e,
        }
    }
}

/// A memory's vector and the model that made it.
#[derive(Clone, Debug)]
pub struct Embedding {
    pub model: String,
    pub vector: Vec<f32>,
}

/// What to search and how.
#[derive(Clone, Debug, Default)]
pub struct SearchQuery {
    pub text: String,
    pub scope: Option<MemoryScope>,
    pub chat_id: Option<String>,
    pub kinds: Vec<i16>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: u32,
    pub min_similarity: f32,
    pub vector: bool,
    pub full_text: bool,
    /// Only memories classified at most this (a run's chat classification); None = any.
    pub max_classification: Option<i16>,
}

#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub scope: Option<MemoryScope>,
    pub chat_id: Option<String>,
    pub kinds: Vec<i16>,
    pub limit: u32,
    pub cursor: String,
    pub pinned_only: bool,
}

/// Where a document's chunks go.
pub struct NewDocument<'a> {
    pub chat_id: &'a str,
    pub document_id: &'a str,
    pub name: &'a str,
    /// The chat's classification (see [`classification_level`]).
    pub classification: i16,
}

/// A classification as stored: the DataClassification number, UNSPECIFIED (or an unknown
/// number) as INTERNAL, the default of a chat.
pub fn classification_level(classification: i32) -> i16 {
    match DataClassification::try_from(classification) {
        Ok(DataClassification::Unspecified) | Err(_) => DataClassification::Internal as i16,
        Ok(c) => c as i16,
    }
}

#[derive(Clone)]
pub struct MemoryStore {
    pool: PgPool,
}

/// Checks an item for writing; returns its scope and kind.
pub fn validate(item: &MemoryItem) -> Result<(MemoryScope, MemoryKind), MemoryError> {
    let scope = MemoryScope::try_from(item.scope).unwrap_or(MemoryScope::Unspecified);
    let kind = match MemoryKind::try_from(item.kind) {
        Ok(MemoryKind::Unspecified) => MemoryKind::Fact,
        Ok(kind) => kind,
        Err(_) => return Err(MemoryError::Invalid("unknown memory kind".into())),
    };
    match scope {
        MemoryScope::Unspecified => Err(MemoryError::Invalid("scope must be WORLD or CHAT".into())),
        MemoryScope::Chat if item.chat_id.as_deref().unwrap_or("").is_empty() => {
            Err(MemoryError::Invalid("a CHAT memory needs chat_id".into()))
        }
        MemoryScope::World if item.chat_id.is_some() => {
            Err(MemoryError::Invalid("a WORLD memory has no chat_id".into()))
        }
        MemoryScope::World if kind == MemoryKind::DocumentChunk => Err(MemoryError::Invalid(
            "a document chunk belongs to a chat (CHAT scope)".into(),
        )),
        _ => validate_content(&item.content).map(|()| (scope, kind)),
    }
}

pub fn validate_content(content: &str) -> Result<(), MemoryError> {
    if content.trim().is_empty() {
        return Err(MemoryError::Invalid("content is empty".into()));
    }
    if content.len() > MAX_CONTENT {
        return Err(MemoryError::Invalid(format!(
            "content is over {MAX_CONTENT} bytes"
        )));
    }
    Ok(())
}

fn non_empty(s: Option<String>) -> String {
    s.unwrap_or_default()
}

fn from_row(row: &PgRow) -> Result<MemoryItem, sqlx::Error> {
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
        kind: i32::from(row.try_get::<i16, _>("kind")?),
        source: Some(MemorySource {
            chat_id: non_empty(row.try_get("source_chat_id")?),
            run_id: non_empty(row.try_get("source_run_id")?),
            message_id: non_empty(row.try_get("source_message_id")?),
            document_id: non_empty(row.try_get("document_id")?),
            document_name: non_empty(row.try_get("document_name")?),
            chunk_index: row
                .try_get::<Option<i32>, _>("chunk_index")?
                .unwrap_or(0)
                .max(0) as u32,
        }),
        pinned: row.try_get("pinned")?,
        untrusted: row.try_get("untrusted")?,
        classification: i32::from(row.try_get::<i16, _>("classification")?),
        embedding_model: non_empty(row.try_get("embedding_model")?),
        embedding_dims: row
            .try_get::<Option<i32>, _>("embedding_dims")?
            .unwrap_or(0)
            .max(0) as u32,
    })
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// `AND …` filters shared by search and list: owner, not deleted, scope/chat, kinds, time.
fn push_filters<'a>(
    qb: &mut QueryBuilder<Postgres>,
    identity: &'a Identity,
    scope: Option<MemoryScope>,
    chat_id: Option<&'a str>,
    kinds: &'a [i16],
) {
    qb.push(" tenant_id = ")
        .push_bind(identity.tenant_id.as_str())
        .push(" AND user_id = ")
        .push_bind(identity.user_id.as_str())
        .push(" AND deleted_at IS NULL");
    match (scope, chat_id) {
        (Some(MemoryScope::World), _) => {
            qb.push(" AND scope = 1");
        }
        (Some(MemoryScope::Chat), Some(chat)) => {
            qb.push(" AND scope = 2 AND chat_id = ").push_bind(chat);
        }
        (Some(MemoryScope::Chat), None) => {
            qb.push(" AND scope = 2");
        }
        // Both: world memories plus this chat's.
        (_, Some(chat)) => {
            qb.push(" AND (scope = 1 OR chat_id = ")
                .push_bind(chat)
                .push(")");
        }
        (_, None) => {}
    }
    if !kinds.is_empty() {
        qb.push(" AND kind = ANY(").push_bind(kinds).push(")");
    }
}

/// A search's filters: whose, which scope, chat and kinds, and when.
fn push_search_filters<'a>(
    qb: &mut QueryBuilder<Postgres>,
    identity: &'a Identity,
    query: &'a SearchQuery,
) {
    push_filters(
        qb,
        identity,
        query.scope,
        query.chat_id.as_deref(),
        &query.kinds,
    );
    push_time(qb, query.since_ms, query.until_ms);
    if let Some(max) = query.max_classification {
        qb.push(" AND classification <= ").push_bind(max);
    }
}

fn push_time(qb: &mut QueryBuilder<Postgres>, since_ms: Option<i64>, until_ms: Option<i64>) {
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    if let Some(ms) = since_ms {
        qb.push(" AND created_at >= ").push_bind(at(ms));
    }
    if let Some(ms) = until_ms {
        qb.push(" AND created_at < ").push_bind(at(ms));
    }
}

impl MemoryStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Writes `item` with its embedding: updates the caller's item of the same id, else (with
    /// `dedup`) the caller's near-duplicate, else inserts. Returns the stored item.
    pub async fn upsert(
        &self,
        identity: &Identity,
        mut item: MemoryItem,
        embedding: Embedding,
        dedup: bool,
    ) -> Result<MemoryItem, MemoryError> {
        let (scope, kind) = validate(&item)?;
        let dims = embedding.vector.len();
        let source = item.source.clone().unwrap_or_default();
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        if item.id.is_empty() && dedup && kind != MemoryKind::DocumentChunk {
            // One writer per user at a time, so two near-duplicates written at once cannot
            // both be inserted.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))")
                .bind(&identity.tenant_id)
                .bind(&identity.user_id)
                .execute(&mut *tx)
                .await?;
            let sql = format!(
                "SELECT id, 1 - ((embedding::vector({dims})) <=> $1::vector({dims})) AS sim FROM items \
                 WHERE tenant_id = $2 AND user_id = $3 AND deleted_at IS NULL AND scope = $4 \
                   AND chat_id IS NOT DISTINCT FROM $5 AND kind <> 4 \
                   AND embedding_dims = {dims} AND embedding_model = $6 \
                 ORDER BY (embedding::vector({dims})) <=> $1::vector({dims}) LIMIT 1"
            );
            let nearest = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(Vector::from(embedding.vector.clone()))
                .bind(&identity.tenant_id)
                .bind(&identity.user_id)
                .bind(scope as i16)
                .bind(&item.chat_id)
                .bind(&embedding.model)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = nearest {
                let sim: f64 = row.try_get("sim")?;
                if sim as f32 >= DEDUP_SIMILARITY {
                    item.id = row.try_get("id")?;
                }
            }
        }
        let fresh = item.id.is_empty();
        if fresh {
            item.id = uuid::Uuid::now_v7().to_string();
        }
        let sql = format!(
            "INSERT INTO items (tenant_id, id, user_id, scope, chat_id, content, tags, kind, \
               source_chat_id, source_run_id, source_message_id, document_id, document_name, \
               chunk_index, pinned, embedding, embedding_model, embedding_dims, untrusted, \
               classification) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
               $19, $20) \
             ON CONFLICT (tenant_id, id) DO UPDATE SET content = EXCLUDED.content, \
               tags = CASE WHEN cardinality(EXCLUDED.tags) > 0 THEN EXCLUDED.tags ELSE items.tags END, \
               kind = EXCLUDED.kind, \
               source_chat_id = coalesce(EXCLUDED.source_chat_id, items.source_chat_id), \
               source_run_id = coalesce(EXCLUDED.source_run_id, items.source_run_id), \
               source_message_id = coalesce(EXCLUDED.source_message_id, items.source_message_id), \
               pinned = items.pinned OR EXCLUDED.pinned, \
               untrusted = items.untrusted OR EXCLUDED.untrusted, \
               classification = GREATEST(items.classification, EXCLUDED.classification), \
               embedding = EXCLUDED.embedding, embedding_model = EXCLUDED.embedding_model, \
               embedding_dims = EXCLUDED.embedding_dims, deleted_at = NULL, updated_at = now() \
             WHERE items.user_id = EXCLUDED.user_id AND items.scope = EXCLUDED.scope \
               AND items.chat_id IS NOT DISTINCT FROM EXCLUDED.chat_id \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&identity.tenant_id)
            .bind(&item.id)
            .bind(&identity.user_id)
            .bind(scope as i16)
            .bind(&item.chat_id)
            .bind(&item.content)
            .bind(&item.tags)
            .bind(kind as i16)
            .bind(opt(&source.chat_id))
            .bind(opt(&source.run_id))
            .bind(opt(&source.message_id))
            .bind(opt(&source.document_id))
            .bind(opt(&source.document_name))
            .bind((kind == MemoryKind::DocumentChunk).then_some(source.chunk_index as i32))
            .bind(item.pinned)
            .bind(Vector::from(embedding.vector))
            .bind(&embedding.model)
            .bind(dims as i32)
            // A document chunk is always untrusted: a file comes from outside.
            .bind(item.untrusted || kind == MemoryKind::DocumentChunk)
            .bind(classification_level(item.classification))
            .fetch_optional(&mut *tx)
            .await?
            // The id exists but is someone else's (or in another scope): do not reveal it.
            .ok_or_else(|| MemoryError::NotFound(item.id.clone()))?;
        tx.commit().await?;
        Ok(from_row(&row)?)
    }

    /// Hybrid search: the `vector` ranking (cosine, nearest first, at least `min_similarity`)
    /// and the `full_text` ranking fused by reciprocal rank; top `limit`.
    /// Whether any memory passes the query's filters (scope, chat, kinds, time): when none
    /// does, a search has nothing to rank and its query needs no embedding.
    pub async fn any_matching(
        &self,
        identity: &Identity,
        query: &SearchQuery,
    ) -> Result<bool, MemoryError> {
        let mut tx = pa_kit::db::tenant_read(&self.pool, &identity.tenant_id).await?;
        let mut qb = QueryBuilder::<Postgres>::new("SELECT EXISTS (SELECT 1 FROM items WHERE");
        push_search_filters(&mut qb, identity, query);
        qb.push(")");
        let any: bool = qb.build_query_scalar().fetch_one(&mut *tx).await?;
        Ok(any)
    }

    pub async fn search(
        &self,
        identity: &Identity,
        query: &SearchQuery,
        embedding: Option<&Embedding>,
    ) -> Result<Vec<ScoredMemory>, MemoryError> {
        let limit = i64::from(query.limit.clamp(1, 100));
        let candidates = (limit * CANDIDATES_PER_RESULT).max(MIN_CANDIDATES);
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        // (item, similarity, vector rank, text rank)
        let mut found: Vec<(MemoryItem, f32, Option<usize>, Option<usize>)> = Vec::new();
        if let (true, Some(embedding)) = (query.vector, embedding) {
            let dims = embedding.vector.len();
            // Filtered HNSW scans keep going until enough rows pass the filters.
            sqlx::raw_sql(
                "SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = 100",
            )
            .execute(&mut *tx)
            .await?;
            let mut qb = QueryBuilder::<Postgres>::new(format!(
                "SELECT {COLUMNS}, 1 - ((embedding::vector({dims})) <=> "
            ));
            qb.push_bind(Vector::from(embedding.vector.clone()))
                .push(format!("::vector({dims})) AS sim FROM items WHERE"));
            push_search_filters(&mut qb, identity, query);
            qb.push(format!(
                " AND embedding_dims = {dims} AND embedding_model = "
            ))
            .push_bind(embedding.model.as_str())
            .push(format!(" ORDER BY (embedding::vector({dims})) <=> "))
            .push_bind(Vector::from(embedding.vector.clone()))
            .push(format!("::vector({dims}) LIMIT "))
            .push_bind(candidates);
            let rows = qb.build().fetch_all(&mut *tx).await?;
            let mut ranked = Vec::with_capacity(rows.len());
            for row in &rows {
                let sim = row.try_get::<f64, _>("sim")? as f32;
                if sim >= query.min_similarity {
                    ranked.push((from_row(row)?, sim));
                }
            }
            // relaxed_order may return neighbours slightly out of order.
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (rank, (item, sim)) in ranked.into_iter().enumerate() {
                found.push((item, sim, Some(rank), None));
            }
        }
        if query.full_text && !query.text.trim().is_empty() {
            // Any of the words (stemmed, stop words dropped), ranked by cover density.
            let mut qb = QueryBuilder::<Postgres>::new(format!(
                "SELECT {COLUMNS}, ts_rank_cd(tsv, tq.q) AS rank FROM items, \
                 (SELECT replace(plainto_tsquery('english', "
            ));
            qb.push_bind(query.text.as_str())
                .push(")::text, '&', '|')::tsquery AS q) AS tq WHERE tsv @@ tq.q AND");
            push_search_filters(&mut qb, identity, query);
            qb.push(" ORDER BY rank DESC, updated_at DESC LIMIT ")
                .push_bind(candidates);
            let rows = qb.build().fetch_all(&mut *tx).await?;
            for (rank, row) in rows.iter().enumerate() {
                let item = from_row(row)?;
                match found.iter_mut().find(|f| f.0.id == item.id) {
                    Some(f) => f.3 = Some(rank),
                    None => found.push((item, 0.0, None, Some(rank))),
                }
            }
        }
        tx.commit().await?;
        let rrf = |rank: Option<usize>| rank.map_or(0.0, |r| 1.0 / (RRF_K + r as f32 + 1.0));
        let mut scored: Vec<ScoredMemory> = found
            .into_iter()
            .map(|(item, sim, v, t)| ScoredMemory {
                item: Some(item),
                score: rrf(v) + rrf(t),
                similarity: sim,
                text_match: t.is_some(),
            })
            .collect();
        scored.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(b.similarity.total_cmp(&a.similarity))
        });
        scored.truncate(limit as usize);
        Ok(scored)
    }

    /// Newest first, `limit` per page; the cursor is `<created_at µs>_<id>` of the last item.
    pub async fn list(
        &self,
        identity: &Identity,
        query: &ListQuery,
    ) -> Result<(Vec<MemoryItem>, String), MemoryError> {
        let limit = i64::from(if query.limit == 0 {
            50
        } else {
            query.limit.min(200)
        });
        let after = if query.cursor.is_empty() {
            None
        } else {
            let (micros, id) = query
                .cursor
                .split_once('_')
                .and_then(|(m, id)| Some((m.parse::<i64>().ok()?, id)))
                .ok_or_else(|| MemoryError::Invalid("invalid cursor".into()))?;
            let at = chrono::DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| MemoryError::Invalid("invalid cursor".into()))?;
            Some((at, id))
        };
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        let mut qb = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM items WHERE"));
        push_filters(
            &mut qb,
            identity,
            query.scope,
            query.chat_id.as_deref(),
            &query.kinds,
        );
        if query.pinned_only {
            qb.push(" AND pinned");
        }
        if let Some((at, id)) = after {
            qb.push(" AND (created_at, id) < (")
                .push_bind(at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(limit + 1);
        let rows = qb.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut items = Vec::with_capacity(rows.len());
        let mut last_created = None;
        for row in rows.iter().take(limit as usize) {
            let created: chrono::DateTime<chrono::Utc> = row.try_get("created_at")?;
            last_created = Some(created.timestamp_micros());
            items.push(from_row(row)?);
        }
        let next = match (rows.len() as i64 > limit, last_created, items.last()) {
            (true, Some(micros), Some(item)) => format!("{micros}_{}", item.id),
            _ => String::new(),
        };
        Ok((items, next))
    }

    /// One of the caller's memories.
    pub async fn get(&self, identity: &Identity, id: &str) -> Result<MemoryItem, MemoryError> {
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM items WHERE tenant_id = $1 AND user_id = $2 AND id = $3 \
             AND deleted_at IS NULL"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&identity.tenant_id)
            .bind(&identity.user_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| MemoryError::NotFound(id.to_string()))?;
        tx.commit().await?;
        Ok(from_row(&row)?)
    }

    /// Edits the caller's memory: content (with its new embedding) and/or pinned.
    pub async fn update(
        &self,
        identity: &Identity,
        id: &str,
        content: Option<(&str, Embedding)>,
        pinned: Option<bool>,
    ) -> Result<MemoryItem, MemoryError> {
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        let (text, vector, model, dims) = match content {
            Some((text, e)) => {
                let dims = e.vector.len() as i32;
                (
                    Some(text),
                    Some(Vector::from(e.vector)),
                    Some(e.model),
                    Some(dims),
                )
            }
            None => (None, None, None, None),
        };
        let sql = format!(
            "UPDATE items SET content = coalesce($4, content), \
               embedding = coalesce($5, embedding), embedding_model = coalesce($6, embedding_model), \
               embedding_dims = coalesce($7, embedding_dims), pinned = coalesce($8, pinned), \
               updated_at = now() \
             WHERE tenant_id = $1 AND user_id = $2 AND id = $3 AND deleted_at IS NULL \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&identity.tenant_id)
            .bind(&identity.user_id)
            .bind(id)
            .bind(text)
            .bind(vector)
            .bind(model)
            .bind(dims)
            .bind(pinned)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| MemoryError::NotFound(id.to_string()))?;
        tx.commit().await?;
        Ok(from_row(&row)?)
    }

    /// Soft-deletes the caller's memory `id`, or every chunk of `document_id`, or every CHAT
    /// memory of `chat_id`. Returns how many.
    pub async fn forget(
        &self,
        identity: &Identity,
        id: &str,
        document_id: &str,
        chat_id: &str,
    ) -> Result<u64, MemoryError> {
        let (column, value) = match (id, document_id, chat_id) {
            (v, "", "") if !v.is_empty() => ("id", v),
            ("", v, "") if !v.is_empty() => ("document_id", v),
            ("", "", v) if !v.is_empty() => ("chat_id", v),
            _ => {
                return Err(MemoryError::Invalid(
                    "give exactly one of id, document_id, chat_id".into(),
                ));
            }
        };
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        // `column` is one of three constants above.
        let sql = format!(
            "UPDATE items SET deleted_at = now(), updated_at = now() \
             WHERE tenant_id = $1 AND user_id = $2 AND {column} = $3 AND deleted_at IS NULL"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&identity.tenant_id)
            .bind(&identity.user_id)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if done.rows_affected() == 0 && column != "chat_id" {
            return Err(MemoryError::NotFound(value.to_string()));
        }
        Ok(done.rows_affected())
    }

    /// Stores a document's chunks (already embedded) as CHAT-scope document-chunk memories.
    pub async fn insert_document(
        &self,
        identity: &Identity,
        doc: &NewDocument<'_>,
        chunks: Vec<String>,
        model: &str,
        vectors: Vec<Vec<f32>>,
    ) -> Result<(), MemoryError> {
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        for (index, (chunk, vector)) in chunks.into_iter().zip(vectors).enumerate() {
            let dims = vector.len() as i32;
            sqlx::query(
                "INSERT INTO items (tenant_id, id, user_id, scope, chat_id, content, kind, \
                   source_chat_id, document_id, document_name, chunk_index, embedding, \
                   embedding_model, embedding_dims, untrusted, classification) \
                 VALUES ($1, $2, $3, 2, $4, $5, 4, $4, $6, $7, $8, $9, $10, $11, true, $12)",
            )
            .bind(&identity.tenant_id)
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(&identity.user_id)
            .bind(doc.chat_id)
            .bind(chunk)
            .bind(doc.document_id)
            .bind(doc.name)
            .bind(index as i32)
            .bind(Vector::from(vector))
            .bind(model)
            .bind(dims)
            .bind(doc.classification)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifications_are_stored_as_their_level_unspecified_as_internal() {
        assert_eq!(classification_level(0), 2);
        assert_eq!(classification_level(99), 2);
        assert_eq!(classification_level(DataClassification::Public as i32), 1);
        assert_eq!(
            classification_level(DataClassification::Restricted as i32),
            4
        );
    }
}
