//! REST for memory: `/v1/me/memories` lets users see, search and correct what the agent
//! remembers about them; `POST /v1/chats/{id}/files` adds a document to a chat's memory.

use crate::dto::Page;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, SecondsFormat, Utc};
use pa_kit::PaError;
use pa_proto::v1::{
    DataClassification, ForgetMemoryRequest, ForgetMemoryResponse, GetChatRequest, Identity,
    IngestDocumentRequest, IngestDocumentResponse, ListMemoriesRequest, ListMemoriesResponse,
    MemoryItem, MemoryKind, MemoryScope, MemorySource, SearchMemoryRequest, SearchMemoryResponse,
    UpdateMemoryRequest, UpsertMemoryRequest,
};
use serde::{Deserialize, Serialize};

use crate::api::ApiJson;
use crate::auth::Caller;
use crate::operations::forward_operation;
use crate::problem::ApiError;
use crate::state::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// Largest upload (svc-memory takes the same).
pub const MAX_UPLOAD_BYTES: usize = 10 * 1024 * 1024;

fn time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn scope_name(v: i32) -> &'static str {
    match MemoryScope::try_from(v) {
        Ok(MemoryScope::Chat) => "chat",
        _ => "world",
    }
}

fn kind_name(v: i32) -> &'static str {
    match MemoryKind::try_from(v) {
        Ok(MemoryKind::Preference) => "preference",
        Ok(MemoryKind::Summary) => "summary",
        Ok(MemoryKind::DocumentChunk) => "document_chunk",
        _ => "fact",
    }
}

fn parse_scope(name: &str) -> Result<MemoryScope, PaError> {
    match name {
        "world" => Ok(MemoryScope::World),
        "chat" => Ok(MemoryScope::Chat),
        _ => Err(PaError::bad_request("scope must be world or chat")),
    }
}

fn parse_kind(name: &str) -> Result<MemoryKind, PaError> {
    match name {
        "fact" => Ok(MemoryKind::Fact),
        "preference" => Ok(MemoryKind::Preference),
        "summary" => Ok(MemoryKind::Summary),
        "document_chunk" => Ok(MemoryKind::DocumentChunk),
        _ => Err(PaError::bad_request(
            "kind must be fact, preference, summary or document_chunk",
        )),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MemoryJson {
    id: String,
    scope: &'static str,
    chat_id: Option<String>,
    kind: &'static str,
    text: String,
    tags: Vec<String>,
    pinned: bool,
    /// Where the memory came from.
    source: MemorySourceJson,
    /// Untrusted content (written from a run that had read untrusted content, or a file's
    /// chunk): a run that recalls it is tainted.
    untrusted: bool,
    /// The classification of the chat it came from: recalled only into chats classified at
    /// least as high.
    classification: &'static str,
    embedding_model: String,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    similarity: Option<f32>,
}

/// Where a memory came from: the chat, run and message that wrote it, or the uploaded file.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MemorySourceJson {
    chat_id: Option<String>,
    run_id: Option<String>,
    message_id: Option<String>,
    /// A document chunk's file (absent for other memories).
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<DocumentSourceJson>,
}

/// The uploaded file a document chunk belongs to.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DocumentSourceJson {
    /// The document id.
    id: String,
    /// Its file name.
    name: String,
    /// The chunk's index in the document, from 0.
    chunk: u32,
}

impl From<MemoryItem> for MemoryJson {
    fn from(m: MemoryItem) -> Self {
        let s = m.source.unwrap_or_default();
        let some = |v: String| (!v.is_empty()).then_some(v);
        let document = (!s.document_id.is_empty()).then_some(DocumentSourceJson {
            id: s.document_id,
            name: s.document_name,
            chunk: s.chunk_index,
        });
        let source = MemorySourceJson {
            chat_id: some(s.chat_id),
            run_id: some(s.run_id),
            message_id: some(s.message_id),
            document,
        };
        Self {
            id: m.id,
            scope: scope_name(m.scope),
            chat_id: m.chat_id,
            kind: kind_name(m.kind),
            text: m.content,
            tags: m.tags,
            pinned: m.pinned,
            source,
            untrusted: m.untrusted,
            classification: crate::dto::classification_name(m.classification),
            embedding_model: m.embedding_model,
            created_at: time(m.created_at_ms),
            updated_at: time(m.updated_at_ms),
            score: None,
            similarity: None,
        }
    }
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    q: Option<String>,
    scope: Option<String>,
    chat_id: Option<String>,
    kind: Option<String>,
    /// 1-200 (a search with `q` returns at most 100); outside: 400.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    cursor: Option<String>,
    pinned: Option<bool>,
}

/// `GET /v1/me/memories`: newest first, paged; with `?q=` a hybrid search (top `limit`, no paging).
#[utoipa::path(get, path = "/v1/me/memories", tag = "memories", params(ListParams), responses((status = 200, description = "`{items: [memory], next_cursor}`; with `q` a hybrid search, best first", body = Page<MemoryJson>)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(identity): Caller,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Page<MemoryJson>>> {
    let Query(p) = params?;
    let scope = p.scope.as_deref().map(parse_scope).transpose()?;
    let kinds: Vec<i32> = match p.kind.as_deref() {
        Some(k) => vec![parse_kind(k)? as i32],
        None => vec![],
    };
    crate::dto::check_limit(p.limit)?;
    let limit = p.limit.unwrap_or(0);
    if let Some(q) = p.q.filter(|q| !q.trim().is_empty()) {
        let request = SearchMemoryRequest {
            query: q,
            scope: scope.unwrap_or(MemoryScope::Unspecified) as i32,
            chat_id: p.chat_id,
            limit: limit.min(100),
            kinds,
            ..Default::default()
        };
        let found = search_memories(&state, &identity, request).await?;
        let items: Vec<MemoryJson> = found
            .results
            .into_iter()
            .filter_map(|r| {
                let mut json = MemoryJson::from(r.item?);
                json.score = Some(r.score);
                json.similarity = Some(r.similarity);
                Some(json)
            })
            .collect();
        return Ok(Json(Page {
            items,
            next_cursor: None,
        }));
    }
    let request = ListMemoriesRequest {
        scope: scope.unwrap_or(MemoryScope::Unspecified) as i32,
        chat_id: p.chat_id,
        kinds,
        limit,
        cursor: p.cursor.unwrap_or_default(),
        pinned_only: p.pinned.unwrap_or(false),
    };
    let page = list_memories(&state, &identity, request).await?;
    let items: Vec<MemoryJson> = page.items.into_iter().map(MemoryJson::from).collect();
    Ok(Json(Page::new(items, page.next_cursor)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MemoryCreateBody)]
pub struct CreateBody {
    text: String,
    scope: Option<String>,
    chat_id: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    pinned: bool,
    /// At most 32 tags of at most 64 characters.
    #[serde(default)]
    #[schema(max_items = 32)]
    tags: Vec<String>,
    /// Recalled only into chats classified at least this: `public`, `internal`, `confidential`,
    /// `restricted` (default: the chat's for a chat memory, else `internal`).
    classification: Option<String>,
}

/// `POST /v1/me/memories`: remember something (near-duplicates update the existing memory).
#[utoipa::path(post, path = "/v1/me/memories", tag = "memories", request_body = CreateBody, responses((status = 201, description = "The memory (a near-duplicate updates the existing one)", body = MemoryJson)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(identity): Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    let scope = match body.scope.as_deref() {
        Some(s) => parse_scope(s)?,
        None if body.chat_id.is_some() => MemoryScope::Chat,
        None => MemoryScope::World,
    };
    let kind = body.kind.as_deref().map(parse_kind).transpose()?;
    let classification = match body.classification.as_deref() {
        None => DataClassification::Unspecified,
        Some(name) => crate::dto::parse_classification(name).ok_or_else(|| {
            PaError::bad_request(
                "classification must be public, internal, confidential or restricted",
            )
        })?,
    };
    let item = MemoryItem {
        scope: scope as i32,
        chat_id: body.chat_id,
        content: body.text,
        tags: body.tags,
        kind: kind.unwrap_or(MemoryKind::Fact) as i32,
        pinned: body.pinned,
        classification: classification as i32,
        ..Default::default()
    };
    let stored = create_memory(
        &state,
        &identity,
        UpsertMemoryRequest {
            item: Some(item),
            no_dedup: false,
        },
    )
    .await?;
    let location = format!("/v1/me/memories/{}", stored.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(MemoryJson::from(stored)),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MemoryPatchBody)]
pub struct PatchBody {
    text: Option<String>,
    pinned: Option<bool>,
}

/// `PATCH /v1/me/memories/{id}`: correct the text and/or pin.
#[utoipa::path(patch, path = "/v1/me/memories/{id}", tag = "memories", params(("id" = String, Path, description = "The memory id")), request_body = PatchBody, responses((status = 200, description = "The memory", body = MemoryJson)))]
pub async fn patch(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchBody>,
) -> ApiResult<Json<MemoryJson>> {
    let request = UpdateMemoryRequest {
        id,
        content: body.text,
        pinned: body.pinned,
    };
    Ok(Json(
        update_memory(&state, &identity, request).await?.into(),
    ))
}

/// `DELETE /v1/me/memories/{id}`: forget it.
#[utoipa::path(delete, path = "/v1/me/memories/{id}", tag = "memories", params(("id" = String, Path, description = "The memory id")), responses((status = 204, description = "Forgotten")))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let request = ForgetMemoryRequest {
        id,
        ..Default::default()
    };
    forget_memory(&state, &identity, request).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// At most 255 characters, no control characters.
    #[param(max_length = 255)]
    filename: Option<String>,
}

/// An upload's name: at most [`crate::dto::caps::MAX_FILENAME_CHARS`] characters of text.
fn check_filename(name: &str) -> Result<(), PaError> {
    let max = crate::dto::caps::MAX_FILENAME_CHARS;
    if name.chars().count() > max || name.chars().any(char::is_control) {
        return Err(PaError::bad_request(format!(
            "filename must be at most {max} characters, without control characters"
        )));
    }
    Ok(())
}

/// A text upload must be text: valid UTF-8 without NUL (a PDF is svc-memory's to read).
fn check_text_upload(content_type: &str, body: &[u8]) -> Result<(), PaError> {
    if !content_type
        .trim()
        .to_ascii_lowercase()
        .starts_with("text/")
    {
        return Ok(());
    }
    let text =
        std::str::from_utf8(body).map_err(|_| PaError::bad_request("a text file must be UTF-8"))?;
    pa_kit::validate::text("the file", text)
}

/// An uploaded file, kept as a chat's document memory.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UploadedDocumentJson {
    document_id: String,
    chat_id: String,
    filename: String,
    /// How many chunks (memories of kind `document_chunk`) it was cut into.
    chunks: u32,
    /// The characters of text read from it.
    chars: u32,
    /// The model that embedded its chunks.
    embedding_model: String,
}

/// `POST /v1/chats/{id}/files?filename=`: the raw file as the body (Content-Type text/plain,
/// text/markdown or application/pdf). Its text is chunked, embedded and kept as the chat's
/// document memory, which searches of that chat find.
#[utoipa::path(post, path = "/v1/chats/{id}/files", tag = "memories", params(("id" = String, Path, description = "The chat id"), UploadParams), request_body(description = "The raw file (10 MiB at most)", content((Vec<u8> = "text/plain"), (Vec<u8> = "text/markdown"), (Vec<u8> = "application/pdf"))), responses((status = 201, description = "The file, chunked and embedded as the chat's document memory", body = UploadedDocumentJson)))]
pub async fn upload_file(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(chat_id): Path<String>,
    params: Result<Query<UploadParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    // Over MAX_UPLOAD_BYTES: axum's 413, which leaves as problem+json `payload_too_large`.
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let Query(params) = params?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let filename = params.filename.unwrap_or_default();
    let request = IngestDocumentRequest {
        chat_id: chat_id.clone(),
        filename: filename.clone(),
        content_type,
        data: body.to_vec(),
        classification: DataClassification::Unspecified as i32,
    };
    let done = ingest_document(&state, &identity, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(UploadedDocumentJson {
            document_id: done.document_id,
            chat_id,
            filename,
            chunks: done.chunks,
            chars: done.chars,
            embedding_model: done.embedding_model,
        }),
    ))
}

// The operation layer of memory (ADR 0211): the REST handlers above and the public gRPC
// MemoryService call these, with the same checks.

forward_operation!(
    /// Newest first, paged (`MemoryService/List`).
    list_memories(memory.list, ListMemoriesRequest) -> ListMemoriesResponse
);

/// A hybrid search of the caller's memories (`MemoryService/Search`): at most 100 results, and
/// never filtered by another chat's classification ceiling (a run's recall sets that).
pub(crate) async fn search_memories(
    state: &AppState,
    identity: &Identity,
    mut request: SearchMemoryRequest,
) -> Result<SearchMemoryResponse, PaError> {
    if request.limit > 100 {
        return Err(PaError::bad_request("limit must be 1-100"));
    }
    request.max_classification = DataClassification::Unspecified as i32;
    Ok(state
        .memory
        .clone()
        .search(state.auth.request(identity, request))
        .await?
        .into_inner())
}

/// Remembers something for the caller (`MemoryService/Upsert`; a near-duplicate updates the
/// existing memory). Only what a person may say about themselves is taken from the request:
/// the id, provenance, trust, embedding and times are the platform's to set, documents come
/// from an upload, and a chat memory without a classification takes its chat's.
pub(crate) async fn create_memory(
    state: &AppState,
    identity: &Identity,
    request: UpsertMemoryRequest,
) -> Result<MemoryItem, PaError> {
    let given = request
        .item
        .ok_or_else(|| PaError::bad_request("item is required"))?;
    if !given.id.is_empty() {
        return Err(PaError::bad_request(
            "a new memory has no id: change one with MemoryService/Update (PATCH /v1/me/memories/{id})",
        ));
    }
    if request.no_dedup {
        return Err(PaError::bad_request("no_dedup is internal"));
    }
    let kind = MemoryKind::try_from(given.kind)
        .map_err(|_| PaError::bad_request("unknown memory kind"))?;
    if kind == MemoryKind::DocumentChunk {
        return Err(PaError::bad_request(
            "upload documents with POST /v1/chats/{id}/files (MemoryService/IngestDocument)",
        ));
    }
    let chat_id = given.chat_id.filter(|c| !c.is_empty());
    let scope = match MemoryScope::try_from(given.scope) {
        Ok(MemoryScope::Unspecified) if chat_id.is_some() => MemoryScope::Chat,
        Ok(MemoryScope::Unspecified) => MemoryScope::World,
        Ok(scope) => scope,
        Err(_) => return Err(PaError::bad_request("scope must be world or chat")),
    };
    crate::dto::check_tags("tags", &given.tags)?;
    let classification = match DataClassification::try_from(given.classification) {
        // A chat's memory is the chat's data: it keeps the chat's classification.
        Ok(DataClassification::Unspecified) => match chat_id.as_deref() {
            Some(chat_id) => DataClassification::try_from(
                crate::api::op::get_chat(
                    state,
                    identity,
                    GetChatRequest {
                        chat_id: chat_id.to_string(),
                    },
                )
                .await?
                .classification,
            )
            .unwrap_or(DataClassification::Internal),
            None => DataClassification::Internal,
        },
        Ok(classification) => classification,
        Err(_) => return Err(PaError::bad_request("unknown classification")),
    };
    let item = MemoryItem {
        scope: scope as i32,
        source: Some(MemorySource {
            chat_id: chat_id.clone().unwrap_or_default(),
            ..Default::default()
        }),
        chat_id,
        content: given.content,
        tags: given.tags,
        kind: if kind == MemoryKind::Unspecified {
            MemoryKind::Fact
        } else {
            kind
        } as i32,
        pinned: given.pinned,
        classification: classification as i32,
        ..Default::default()
    };
    Ok(state
        .memory
        .clone()
        .upsert(state.auth.request(
            identity,
            UpsertMemoryRequest {
                item: Some(item),
                no_dedup: false,
            },
        ))
        .await?
        .into_inner())
}

forward_operation!(
    /// Corrects a memory's text and/or pin (`MemoryService/Update`).
    update_memory(memory.update, UpdateMemoryRequest) -> MemoryItem,
    check: |_, r| {
        if r.content.is_none() && r.pinned.is_none() {
            return Err(PaError::bad_request("give text and/or pinned"));
        }
        Ok(())
    }
);

forward_operation!(
    /// Forgets one memory, a document's chunks or a chat's memories (`MemoryService/Forget`).
    forget_memory(memory.forget, ForgetMemoryRequest) -> ForgetMemoryResponse
);

/// Keeps a file as a chat's document memory (`MemoryService/IngestDocument`). The chat must be
/// the caller's, and its chunks take the chat's classification whatever the request says.
pub(crate) async fn ingest_document(
    state: &AppState,
    identity: &Identity,
    mut request: IngestDocumentRequest,
) -> Result<IngestDocumentResponse, PaError> {
    if request.data.is_empty() {
        return Err(PaError::bad_request(
            "the body is empty: send the file as the body",
        ));
    }
    if request.data.len() > MAX_UPLOAD_BYTES {
        return Err(PaError::bad_request(format!(
            "a file is at most {MAX_UPLOAD_BYTES} bytes"
        )));
    }
    check_filename(&request.filename)?;
    let chat = crate::api::op::get_chat(
        state,
        identity,
        GetChatRequest {
            chat_id: request.chat_id.clone(),
        },
    )
    .await?;
    check_text_upload(&request.content_type, &request.data)?;
    request.classification = chat.classification;
    Ok(state
        .memory
        .clone()
        .ingest_document(state.auth.request(identity, request))
        .await?
        .into_inner())
}
