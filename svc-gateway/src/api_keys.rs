//! API keys for scripts and gRPC integrators: `pa_<id>_<secret>`, shown once, stored as a
//! SHA-256 of the secret (a 256-bit random secret needs no slow hash), scoped, expirable and
//! revocable. A key acts as its creator with the creator's *current* roles (those of their
//! latest sign-in, read at every use: a demoted admin's keys lose admin at once, a disabled
//! user's keys stop working), an administrator role only when the key has the `admin` scope,
//! and only on routes its scopes grant (see `auth::Scope`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use pa_kit::PaError;
use pa_proto::v1::{AuthMethod, Identity};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use crate::api::ApiJson;
use crate::auth::Caller;
use crate::problem::ApiError;
use crate::state::AppState;

pub const PREFIX: &str = "pa_";
pub const SCOPES: &[&str] = &[
    "chats",
    "runs",
    "models",
    "memory",
    "devices",
    "integrations",
    "admin",
];

/// The roles a key acts with: its user's current roles, without any administrator role
/// (`admin`, a platform administrator role …) unless the key has the `admin` scope.
pub fn key_roles(current: &[String], scopes: &[String]) -> Vec<String> {
    let admin_scope = scopes.iter().any(|s| s == "admin");
    current
        .iter()
        .filter(|r| admin_scope || !r.contains("admin"))
        .cloned()
        .collect()
}
const MAX_KEYS_PER_USER: i64 = 50;

fn random_text(bytes: usize) -> Result<String, PaError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|_| PaError::internal("no randomness available"))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Splits `pa_<id>_<secret>`; the id is 16 characters of base64url (which may contain `_`, so the
/// split is by position).
fn split(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = (rest.get(..16)?, rest.get(17..)?);
    (rest.as_bytes().get(16) == Some(&b'_') && !secret.is_empty()).then_some((id, secret))
}

#[derive(Clone)]
pub struct ApiKeyStore {
    pool: PgPool,
}

impl ApiKeyStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The identity a presented key stands for, or 401.
    pub async fn verify(&self, key: &str) -> Result<Identity, PaError> {
        let refuse = || PaError::unauthenticated("invalid API key");
        let (id, secret) = split(key).ok_or_else(refuse)?;
        // The tenant is not known yet: the lookup policy admits exactly the row whose public id
        // is presented (see migration 0002), and nothing else.
        let mut tx = pa_kit::db::scoped_tx(&self.pool, &[("pa.api_key_id", id)]).await?;
        let row = sqlx::query(
            "UPDATE api_keys SET last_used_at = now() WHERE id = $1 AND revoked_at IS NULL \
               AND (expires_at IS NULL OR expires_at > now()) \
             RETURNING tenant_id, user_id, secret_hash, scopes, roles",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let row = row.ok_or_else(refuse)?;
        let stored: Vec<u8> = row.try_get("secret_hash").map_err(PaError::from)?;
        let presented = hash(secret);
        // Constant-time comparison.
        let same = stored.len() == presented.len()
            && stored
                .iter()
                .zip(&presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(refuse());
        }
        let user_id: String = row.try_get("user_id").map_err(PaError::from)?;
        let tenant_id: String = row.try_get("tenant_id").map_err(PaError::from)?;
        let scopes: Vec<String> = row.try_get("scopes").map_err(PaError::from)?;
        // The user's standing now, not when the key was made.
        let (current, disabled) = crate::users::standing(&self.pool, &tenant_id, &user_id)
            .await?
            .unwrap_or_default();
        if disabled {
            return Err(crate::users::disabled());
        }
        Ok(Identity {
            tenant_id,
            display_name: user_id.clone(),
            user_id,
            roles: key_roles(&current, &scopes),
            scopes,
            auth_method: AuthMethod::ApiKey as i32,
        })
    }
}

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

fn key_json(row: &sqlx::postgres::PgRow) -> Result<Value, sqlx::Error> {
    let time = |name: &str| -> Result<Option<String>, sqlx::Error> {
        Ok(row
            .try_get::<Option<DateTime<Utc>>, _>(name)?
            .map(|t| t.to_rfc3339()))
    };
    Ok(json!({
        "id": row.try_get::<String, _>("id")?,
        "name": row.try_get::<String, _>("name")?,
        "scopes": row.try_get::<Vec<String>, _>("scopes")?,
        "created_at": time("created_at")?,
        "expires_at": time("expires_at")?,
        "revoked_at": time("revoked_at")?,
        "last_used_at": time("last_used_at")?,
    }))
}

fn store(state: &AppState) -> Result<&ApiKeyStore, ApiError> {
    state
        .api_keys
        .as_ref()
        .ok_or_else(|| PaError::unavailable("API keys are not configured").into())
}

#[utoipa::path(post, path = "/v1/me/api-keys", tag = "api-keys", request_body = CreateKeyBody, responses((status = 201, description = "`{id, name, scopes, key, ...}`: `key` (pa_...) is shown only now", body = serde_json::Value)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(identity): Caller,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let mut out = key_json(&row).map_err(PaError::from)?;
    // Shown once; only its hash is kept.
    out["key"] = json!(format!("{PREFIX}{id}_{secret}"));
    Ok((StatusCode::CREATED, Json(out)))
}

#[utoipa::path(get, path = "/v1/me/api-keys", tag = "api-keys", responses((status = 200, description = "`{items: [api key]}` without secrets", body = serde_json::Value)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(identity): Caller,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "items": items })))
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

#[cfg(test)]
mod tests {
    #[test]
    fn keys_get_admin_roles_only_with_the_admin_scope() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let current = strings(&["user", "admin", "platform-admin"]);
        assert_eq!(
            super::key_roles(&current, &strings(&["chats", "admin"])),
            current
        );
        assert_eq!(
            super::key_roles(&current, &strings(&["chats", "runs"])),
            strings(&["user"])
        );
        // A demoted user's key has what the user has now.
        assert_eq!(
            super::key_roles(&strings(&["user"]), &strings(&["admin"])),
            strings(&["user"])
        );
        assert!(super::key_roles(&[], &strings(&["admin"])).is_empty());
    }

    #[test]
    fn keys_split_by_position() {
        assert_eq!(
            super::split("pa_abcdefghijklmn_p_secret"),
            Some(("abcdefghijklmn_p", "secret"))
        );
        assert_eq!(super::split("pa_abc_def"), None);
        assert_eq!(super::split("sk_abcdefghijklmnop_x"), None);
    }
}
