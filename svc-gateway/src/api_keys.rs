//! API keys for scripts and gRPC integrators: `pa_<id>_<secret>`, shown once, stored as a
//! SHA-256 of the secret (a 256-bit random secret needs no slow hash), scoped, expirable and
//! revocable. A key acts as its creator with the creator's *current* roles (those of their
//! latest sign-in, read at every use: a demoted admin's keys lose admin at once, a disabled
//! user's keys stop working), an administrator role only when the key has the `admin` scope,
//! and only on routes its scopes grant (see `auth::Scope`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use pa_kit::PaError;
use pa_proto::v1::{
    ApiKey, AuthMethod, CreateApiKeyRequest, CreatedApiKey, Identity, ListApiKeysRequest,
    ListApiKeysResponse, RevokeApiKeyRequest, RevokeApiKeyResponse,
};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::api::ApiJson;
use crate::api_key_store::{ApiKeyStore, PREFIX, SCOPES, hash, random_text};
use crate::auth::Caller;
use crate::dto::Items;
use crate::problem::ApiError;
use crate::state::AppState;

const MAX_KEYS_PER_USER: i64 = 50;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    name: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// RFC 3339; absent = never expires.
    #[serde(default)]
    expires_at: Option<String>,
}

/// An API key, without its secret.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiKeyJson {
    id: String,
    name: String,
    /// What the key may do: a subset of chats, runs, models, memories, tools, admin.
    scopes: Vec<String>,
    /// RFC 3339.
    created_at: Option<String>,
    /// RFC 3339; null = never expires.
    expires_at: Option<String>,
    /// RFC 3339; null = not revoked.
    revoked_at: Option<String>,
    /// RFC 3339; null = never used.
    last_used_at: Option<String>,
}

/// A new API key, with its secret.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedApiKeyJson {
    #[serde(flatten)]
    api_key: ApiKeyJson,
    /// The key (`pa_<id>_<secret>`): shown only now, only its hash is kept.
    key: String,
}

fn key_proto(row: &sqlx::postgres::PgRow) -> Result<ApiKey, sqlx::Error> {
    let ms = |name: &str| -> Result<i64, sqlx::Error> {
        Ok(row
            .try_get::<Option<DateTime<Utc>>, _>(name)?
            .map(|t| t.timestamp_millis())
            .unwrap_or(0))
    };
    Ok(ApiKey {
        id: row.try_get::<String, _>("id")?,
        name: row.try_get::<String, _>("name")?,
        scopes: row.try_get::<Vec<String>, _>("scopes")?,
        created_at_ms: ms("created_at")?,
        expires_at_ms: ms("expires_at")?,
        revoked_at_ms: ms("revoked_at")?,
        last_used_at_ms: ms("last_used_at")?,
    })
}

impl From<ApiKey> for ApiKeyJson {
    fn from(k: ApiKey) -> Self {
        let time = |ms: i64| {
            (ms != 0)
                .then(|| DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339()))
                .flatten()
        };
        Self {
            created_at: time(k.created_at_ms),
            expires_at: time(k.expires_at_ms),
            revoked_at: time(k.revoked_at_ms),
            last_used_at: time(k.last_used_at_ms),
            id: k.id,
            name: k.name,
            scopes: k.scopes,
        }
    }
}

fn store(state: &AppState) -> Result<&ApiKeyStore, PaError> {
    state
        .api_keys
        .as_ref()
        .ok_or_else(|| PaError::unavailable("API keys are not configured"))
}

#[utoipa::path(post, path = "/v1/me/api-keys", tag = "api-keys", request_body = CreateKeyBody, responses((status = 201, description = "`{id, name, scopes, key, ...}`: `key` (pa_...) is shown only now", body = CreatedApiKeyJson)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(identity): Caller,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<CreatedApiKeyJson>), ApiError> {
    if body.scopes.as_ref().is_some_and(Vec::is_empty) {
        return Err(PaError::bad_request(format!(
            "scopes must be a non-empty subset of {SCOPES:?}"
        ))
        .into());
    }
    let expires_at_ms = match &body.expires_at {
        None => 0,
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map_err(|_| PaError::bad_request("expires_at must be an RFC 3339 time"))?
            .timestamp_millis(),
    };
    let request = CreateApiKeyRequest {
        name: body.name,
        scopes: body.scopes.unwrap_or_default(),
        expires_at_ms,
    };
    let created = create_api_key(&state, &identity, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKeyJson {
            api_key: created.api_key.unwrap_or_default().into(),
            key: created.key,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/me/api-keys", tag = "api-keys", responses((status = 200, description = "`{items: [api key]}` without secrets", body = Items<ApiKeyJson>)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(identity): Caller,
) -> Result<Json<Items<ApiKeyJson>>, ApiError> {
    let listed = list_api_keys(&state, &identity, ListApiKeysRequest {}).await?;
    Ok(Json(Items {
        items: listed.api_keys.into_iter().map(ApiKeyJson::from).collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/me/api-keys/{id}", tag = "api-keys", params(("id" = String, Path, description = "The API key id")), responses((status = 204, description = "Revoked")))]
pub async fn revoke(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    revoke_api_key(&state, &identity, RevokeApiKeyRequest { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

// The operation layer of API keys (ADR 0211): the REST handlers above and the public gRPC
// ApiKeyService call these.

/// `ApiKeyService/CreateApiKey`: the key is returned only now; only its hash is kept.
pub(crate) async fn create_api_key(
    state: &AppState,
    identity: &Identity,
    request: CreateApiKeyRequest,
) -> Result<CreatedApiKey, PaError> {
    let store = store(state)?;
    if identity.auth_method == AuthMethod::ApiKey as i32 {
        return Err(PaError::new(
            pa_kit::ErrorCode::Forbidden,
            "an API key cannot create API keys",
        ));
    }
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(PaError::bad_request("name must be 1-100 characters"));
    }
    let scopes = if request.scopes.is_empty() {
        vec!["chats".into(), "runs".into(), "models".into()]
    } else {
        request.scopes
    };
    if scopes.iter().any(|s| !SCOPES.contains(&s.as_str())) {
        return Err(PaError::bad_request(format!(
            "scopes must be a non-empty subset of {SCOPES:?}"
        )));
    }
    let is_admin = identity.roles.iter().any(|r| r == "admin");
    if scopes.iter().any(|s| s == "admin") && !is_admin {
        return Err(PaError::new(
            pa_kit::ErrorCode::Forbidden,
            "only an admin can create an admin-scoped key",
        ));
    }
    let expires_at = match request.expires_at_ms {
        0 => None,
        ms => {
            let at = DateTime::<Utc>::from_timestamp_millis(ms)
                .ok_or_else(|| PaError::bad_request("expires_at is out of range"))?;
            if at <= Utc::now() {
                return Err(PaError::bad_request("expires_at must be in the future"));
            }
            Some(at)
        }
    };
    let mut tx = pa_kit::db::tenant_tx(&store.pool, &identity.tenant_id).await?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL")
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .fetch_one(&mut *tx)
        .await?;
    if count >= MAX_KEYS_PER_USER {
        return Err(PaError::new(
            pa_kit::ErrorCode::FailedPrecondition,
            format!("at most {MAX_KEYS_PER_USER} active keys per user"),
        ));
    }
    let id = random_text(12)?; // 16 characters
    let secret = random_text(32)?;
    let roles: Vec<String> = identity
        .roles
        .iter()
        .filter(|r| r.as_str() != "admin" || scopes.iter().any(|s| s == "admin"))
        .cloned()
        .collect();
    let row = sqlx::query(
        "INSERT INTO api_keys (tenant_id, id, user_id, name, secret_hash, scopes, roles, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         RETURNING id, name, scopes, created_at, expires_at, revoked_at, last_used_at",
    )
    .bind(&identity.tenant_id)
    .bind(&id)
    .bind(&identity.user_id)
    .bind(name)
    .bind(hash(&secret))
    .bind(&scopes)
    .bind(&roles)
    .bind(expires_at)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let api_key = key_proto(&row)?;
    // Shown once; only its hash is kept.
    let key = format!("{PREFIX}{id}_{secret}");
    Ok(CreatedApiKey {
        api_key: Some(api_key),
        key,
    })
}

/// `ApiKeyService/ListApiKeys`: the caller's keys, newest first, without secrets.
pub(crate) async fn list_api_keys(
    state: &AppState,
    identity: &Identity,
    _request: ListApiKeysRequest,
) -> Result<ListApiKeysResponse, PaError> {
    let store = store(state)?;
    let mut tx = pa_kit::db::tenant_tx(&store.pool, &identity.tenant_id).await?;
    let rows = sqlx::query(
        "SELECT id, name, scopes, created_at, expires_at, revoked_at, last_used_at FROM api_keys \
         WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at DESC",
    )
    .bind(&identity.tenant_id)
    .bind(&identity.user_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let api_keys = rows.iter().map(key_proto).collect::<Result<Vec<_>, _>>()?;
    Ok(ListApiKeysResponse { api_keys })
}

/// `ApiKeyService/RevokeApiKey` (idempotent for a key of the caller's; 404 otherwise).
pub(crate) async fn revoke_api_key(
    state: &AppState,
    identity: &Identity,
    request: RevokeApiKeyRequest,
) -> Result<RevokeApiKeyResponse, PaError> {
    let store = store(state)?;
    let mut tx = pa_kit::db::tenant_tx(&store.pool, &identity.tenant_id).await?;
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE tenant_id = $1 AND user_id = $2 AND id = $3",
    )
    .bind(&identity.tenant_id)
    .bind(&identity.user_id)
    .bind(&request.id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if done.rows_affected() == 0 {
        return Err(PaError::not_found(format!(
            "API key {} not found",
            request.id
        )));
    }
    Ok(RevokeApiKeyResponse {})
}
