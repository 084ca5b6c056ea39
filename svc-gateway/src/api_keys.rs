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
use pa_proto::v1::AuthMethod;
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

fn key_json(row: &sqlx::postgres::PgRow) -> Result<ApiKeyJson, sqlx::Error> {
    let time = |name: &str| -> Result<Option<String>, sqlx::Error> {
        Ok(row
            .try_get::<Option<DateTime<Utc>>, _>(name)?
            .map(|t| t.to_rfc3339()))
    };
    Ok(ApiKeyJson {
        id: row.try_get::<String, _>("id")?,
        name: row.try_get::<String, _>("name")?,
        scopes: row.try_get::<Vec<String>, _>("scopes")?,
        created_at: time("created_at")?,
        expires_at: time("expires_at")?,
        revoked_at: time("revoked_at")?,
        last_used_at: time("last_used_at")?,
    })
}

fn store(state: &AppState) -> Result<&ApiKeyStore, ApiError> {
    state
        .api_keys
        .as_ref()
        .ok_or_else(|| PaError::unavailable("API keys are not configured").into())
}

#[utoipa::path(post, path = "/v1/me/api-keys", tag = "api-keys", request_body = CreateKeyBody, responses((status = 201, description = "`{id, name, scopes, key, ...}`: `key` (pa_...) is shown only now", body = CreatedApiKeyJson)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(identity): Caller,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<CreatedApiKeyJson>), ApiError> {
    let store = store(&state)?;
    if identity.auth_method == AuthMethod::ApiKey as i32 {
        return Err(PaError::new(
            pa_kit::ErrorCode::Forbidden,
            "an API key cannot create API keys",
        )
        .into());
    }
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(PaError::bad_request("name must be 1-100 characters").into());
    }
    let scopes = body
        .scopes
        .unwrap_or_else(|| vec!["chats".into(), "runs".into(), "models".into()]);
    if scopes.is_empty() || scopes.iter().any(|s| !SCOPES.contains(&s.as_str())) {
        return Err(PaError::bad_request(format!(
            "scopes must be a non-empty subset of {SCOPES:?}"
        ))
        .into());
    }
    let is_admin = identity.roles.iter().any(|r| r == "admin");
    if scopes.iter().any(|s| s == "admin") && !is_admin {
        return Err(PaError::new(
            pa_kit::ErrorCode::Forbidden,
            "only an admin can create an admin-scoped key",
        )
        .into());
    }
    let expires_at = match &body.expires_at {
        None => None,
        Some(text) => {
            let at = DateTime::parse_from_rfc3339(text)
                .map_err(|_| PaError::bad_request("expires_at must be an RFC 3339 time"))?
                .with_timezone(&Utc);
            if at <= Utc::now() {
                return Err(PaError::bad_request("expires_at must be in the future").into());
            }
            Some(at)
        }
    };
    let mut tx = pa_kit::db::tenant_tx(&store.pool, &identity.tenant_id)
        .await
        .map_err(PaError::from)?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL")
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(PaError::from)?;
    if count >= MAX_KEYS_PER_USER {
        return Err(PaError::new(
            pa_kit::ErrorCode::FailedPrecondition,
            format!("at most {MAX_KEYS_PER_USER} active keys per user"),
        )
        .into());
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
    .await
    .map_err(PaError::from)?;
    tx.commit().await.map_err(PaError::from)?;
    let api_key = key_json(&row).map_err(PaError::from)?;
    // Shown once; only its hash is kept.
    let key = format!("{PREFIX}{id}_{secret}");
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKeyJson { api_key, key }),
    ))
}

#[utoipa::path(get, path = "/v1/me/api-keys", tag = "api-keys", responses((status = 200, description = "`{items: [api key]}` without secrets", body = Items<ApiKeyJson>)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(identity): Caller,
) -> Result<Json<Items<ApiKeyJson>>, ApiError> {
    let store = store(&state)?;
    let mut tx = pa_kit::db::tenant_tx(&store.pool, &identity.tenant_id)
        .await
        .map_err(PaError::from)?;
    let rows = sqlx::query(
        "SELECT id, name, scopes, created_at, expires_at, revoked_at, last_used_at FROM api_keys \
         WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at DESC",
    )
    .bind(&identity.tenant_id)
    .bind(&identity.user_id)
    .fetch_all(&mut *tx)
    .await
    .map_err(PaError::from)?;
    tx.commit().await.map_err(PaError::from)?;
    let items = rows
        .iter()
        .map(key_json)
        .collect::<Result<Vec<_>, _>>()
        .map_err(PaError::from)?;
    Ok(Json(Items { items }))
}

#[utoipa::path(delete, path = "/v1/me/api-keys/{id}", tag = "api-keys", params(("id" = String, Path, description = "The API key id")), responses((status = 204, description = "Revoked")))]
pub async fn revoke(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = store(&state)?;
    let mut tx = pa_kit::db::tenant_tx(&store.pool, &identity.tenant_id)
        .await
        .map_err(PaError::from)?;
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE tenant_id = $1 AND user_id = $2 AND id = $3",
    )
    .bind(&identity.tenant_id)
    .bind(&identity.user_id)
    .bind(&id)
    .execute(&mut *tx)
    .await
    .map_err(PaError::from)?;
    tx.commit().await.map_err(PaError::from)?;
    if done.rows_affected() == 0 {
        return Err(PaError::not_found(format!("API key {id} not found")).into());
    }
    Ok(StatusCode::NO_CONTENT)
}
