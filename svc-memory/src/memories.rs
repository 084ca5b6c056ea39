//! The memory operations: each embeds what it needs through svc-models, then reads or writes
//! the store. Knows nothing of gRPC.

use pa_kit::PaError;
use pa_proto::v1::{EmbedPurpose, Identity, MemoryItem, ScoredMemory};

use crate::documents;
use crate::embed::Embedder;
use crate::store::{Embedding, ListQuery, MemoryError, MemoryStore, NewDocument, SearchQuery};

#[derive(Clone)]
pub struct Memories {
    pub store: MemoryStore,
    pub embedder: Embedder,
}

/// A stored document.
pub struct Ingested {
    pub document_id: String,
    pub chunks: usize,
    pub chars: usize,
    pub model: String,
}

impl Memories {
    async fn embed_one(
        &self,
        identity: &Identity,
        text: &str,
        purpose: EmbedPurpose,
    ) -> Result<Embedding, MemoryError> {
        let mut e = self
            .embedder
            .embed(identity, &[text.to_string()], purpose)
            .await?;
        Ok(Embedding {
            model: e.model,
            vector: e.vectors.pop().unwrap_or_default(),
        })
    }

    pub async fn upsert(
        &self,
        identity: &Identity,
        item: MemoryItem,
        dedup: bool,
    ) -> Result<MemoryItem, MemoryError> {
        crate::store::validate(&item)?;
        let embedding = self
            .embed_one(identity, &item.content, EmbedPurpose::Document)
            .await?;
        self.store.upsert(identity, item, embedding, dedup).await
    }

    /// Returns the results and the query's embedding model ("" for a full-text-only search).
    pub async fn search(
        &self,
        identity: &Identity,
        query: SearchQuery,
    ) -> Result<(Vec<ScoredMemory>, String), MemoryError> {
        if query.text.trim().is_empty() {
            return Err(MemoryError::Invalid("query is empty".into()));
        }
        if query.text.len() > crate::store::MAX_CONTENT {
            return Err(MemoryError::Invalid("query is too long".into()));
        }
        // Recall runs at the start of every run: for a user with nothing stored in reach it
        // costs one indexed lookup, not an embedding.
        if !self.store.any_matching(identity, &query).await? {
            return Ok((Vec::new(), String::new()));
        }
        let embedding = if query.vector {
            Some(
                self.embed_one(identity, &query.text, EmbedPurpose::Query)
                    .await?,
            )
        } else {
            None
        };
        let results = self
            .store
            .search(identity, &query, embedding.as_ref())
            .await?;
        Ok((results, embedding.map(|e| e.model).unwrap_or_default()))
    }

    pub async fn list(
        &self,
        identity: &Identity,
        query: &ListQuery,
    ) -> Result<(Vec<MemoryItem>, String), MemoryError> {
        self.store.list(identity, query).await
    }

    pub async fn update(
        &self,
        identity: &Identity,
        id: &str,
        content: Option<String>,
        pinned: Option<bool>,
    ) -> Result<MemoryItem, MemoryError> {
        if id.is_empty() {
            return Err(MemoryError::Invalid("id is required".into()));
        }
        let content = match content {
            Some(text) => {
                crate::store::validate_content(&text)?;
                let embedding = self
                    .embed_one(identity, &text, EmbedPurpose::Document)
                    .await?;
                Some((text, embedding))
            }
            None => None,
        };
        if content.is_none() && pinned.is_none() {
            return self.store.get(identity, id).await;
        }
        self.store
            .update(
                identity,
                id,
                content.as_ref().map(|(t, e)| (t.as_str(), e.clone())),
                pinned,
            )
            .await
    }

    pub async fn forget(
        &self,
        identity: &Identity,
        id: &str,
        document_id: &str,
        chat_id: &str,
    ) -> Result<u64, MemoryError> {
        self.store.forget(identity, id, document_id, chat_id).await
    }

    /// A file uploaded to a chat: text out, chunks, embeddings, stored as document chunks.
    pub async fn ingest(
        &self,
        identity: &Identity,
        chat_id: &str,
        filename: &str,
        content_type: &str,
        data: Vec<u8>,
        classification: i32,
    ) -> Result<Ingested, MemoryError> {
        if chat_id.is_empty() {
            return Err(MemoryError::Invalid("chat_id is required".into()));
        }
        let name = if filename.trim().is_empty() {
            "document".to_string()
        } else {
            filename.chars().take(255).collect()
        };
        let invalid = |e: documents::DocumentError| MemoryError::Invalid(e.to_string());
        let format = documents::format_of(content_type, &name).map_err(invalid)?;
        // PDF parsing is CPU work, and a malformed file may make the parser panic: keep both
        // off the async workers.
        let text = tokio::task::spawn_blocking(move || documents::extract_text(format, &data))
            .await
            .map_err(|_| MemoryError::Invalid("cannot read the file (malformed)".into()))?
            .map_err(invalid)?;
        let chunks = documents::chunk(&text);
        if chunks.is_empty() {
            return Err(invalid(documents::DocumentError::Empty));
        }
        let embeddings = self
            .embedder
            .embed(identity, &chunks, EmbedPurpose::Document)
            .await?;
        let document_id = uuid::Uuid::now_v7().to_string();
        let count = chunks.len();
        self.store
            .insert_document(
                identity,
                &NewDocument {
                    chat_id,
                    document_id: &document_id,
                    name: &name,
                    classification: crate::store::classification_level(classification),
                },
                chunks,
                &embeddings.model,
                embeddings.vectors,
            )
            .await?;
        Ok(Ingested {
            document_id,
            chunks: count,
            chars: text.chars().count(),
            model: embeddings.model,
        })
    }
}

impl From<MemoryError> for tonic::Status {
    fn from(err: MemoryError) -> Self {
        PaError::from(err).into()
    }
}
