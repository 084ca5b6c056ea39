//! The user directory: each caller the gateway admits (name, roles of the last sign-in, first
//! and last seen) and whether an admin disabled them, read at most every [`RECHECK`] per
//! replica. The admin routes over it are `users`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pa_kit::{ErrorCode, PaError};
use pa_proto::v1::{AuthMethod, DirectoryUser, Identity};
use sqlx::{PgPool, Row};

/// How long a replica trusts what it last read about a user.
pub const RECHECK: Duration = Duration::from_secs(10);
const MAX_CACHED: usize = 100_000;
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// One user of the tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub user_id: String,
    pub display_name: String,
    pub roles: Vec<String>,
    pub auth_method: String,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_by: Option<String>,
}

impl UserRecord {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            user_id: row.try_get("user_id")?,
            display_name: row.try_get("display_name")?,
            roles: row.try_get("roles")?,
            auth_method: row.try_get("auth_method")?,
            first_seen_at: row.try_get("first_seen_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
            disabled_at: row.try_get("disabled_at")?,
            disabled_by: row.try_get("disabled_by")?,
        })
    }

    pub fn proto(&self) -> DirectoryUser {
        let ms = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis()).unwrap_or(0);
        DirectoryUser {
            user_id: self.user_id.clone(),
            display_name: self.display_name.clone(),
            roles: self.roles.clone(),
            auth_method: self.auth_method.clone(),
            first_seen_at_ms: self.first_seen_at.timestamp_millis(),
            last_seen_at_ms: self.last_seen_at.timestamp_millis(),
            disabled: self.disabled_at.is_some(),
            disabled_at_ms: ms(self.disabled_at),
            disabled_by: self.disabled_by.clone().unwrap_or_default(),
        }
    }
}

impl From<DirectoryUser> for UserJson {
    fn from(u: DirectoryUser) -> Self {
        let time = |ms: i64| {
            DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap_or_default()
                .to_rfc3339()
        };
        Self {
            first_seen_at: time(u.first_seen_at_ms),
            last_seen_at: time(u.last_seen_at_ms),
            disabled_at: u.disabled.then(|| time(u.disabled_at_ms)),
            disabled_by: (u.disabled && !u.disabled_by.is_empty()).then_some(u.disabled_by),
            disabled: u.disabled,
            user_id: u.user_id,
            display_name: u.display_name,
            roles: u.roles,
            auth_method: u.auth_method,
        }
    }
}

/// A user who signed in to the tenant, as the gateway recorded them.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct UserJson {
    /// The token's subject.
    pub user_id: String,
    pub display_name: String,
    /// The roles of the user's latest sign-in.
    pub roles: Vec<String>,
    /// How they last authenticated: oidc, api_key, dev or other.
    pub auth_method: String,
    /// RFC 3339.
    pub first_seen_at: String,
    /// RFC 3339.
    pub last_seen_at: String,
    /// Every request of the user is refused (403 `forbidden`).
    pub disabled: bool,
    /// RFC 3339; null when not disabled.
    pub disabled_at: Option<String>,
    /// The administrator who disabled the user; null when not disabled.
    pub disabled_by: Option<String>,
}

fn method_name(identity: &Identity) -> &'static str {
    match AuthMethod::try_from(identity.auth_method) {
        Ok(AuthMethod::Oidc) => "oidc",
        Ok(AuthMethod::ApiKey) => "api_key",
        Ok(AuthMethod::Dev) => "dev",
        _ => "other",
    }
}

fn disabled_error() -> PaError {
    PaError::new(
        ErrorCode::Forbidden,
        "this account is disabled by an administrator of your organisation",
    )
}

type CacheKey = (String, String);

struct Seen {
    at: Instant,
    disabled: bool,
    roles: Vec<String>,
}

/// What the gateway knows of a user now: their roles of the latest sign-in, and whether an
/// admin disabled them. `None`: the user never signed in to the tenant.
pub async fn standing(
    pool: &PgPool,
    tenant_id: &str,
    user_id: &str,
) -> Result<Option<(Vec<String>, bool)>, PaError> {
    let mut tx = pa_kit::db::tenant_tx(pool, tenant_id).await?;
    let row = sqlx::query(
        "SELECT roles, disabled_at IS NOT NULL AS disabled FROM users \
         WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(tenant_id)
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.map(|row| Ok((row.try_get("roles")?, row.try_get("disabled")?)))
        .transpose()
        .map_err(|e: sqlx::Error| PaError::from(e))
}

/// Refused: the user is disabled.
pub fn disabled() -> PaError {
    disabled_error()
}

pub struct UserDirectory {
    pool: PgPool,
    /// (tenant, user) → (when read, disabled, roles recorded).
    seen: Mutex<HashMap<CacheKey, Seen>>,
}

impl UserDirectory {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the user is disabled, as read less than [`RECHECK`] ago; `None` when that is
    /// older, or when a signed-in caller now has other roles than recorded (a promotion or a
    /// demotion is recorded at once, so the user's API keys follow it).
    fn cached(&self, key: &CacheKey, identity: &Identity) -> Option<bool> {
        let seen = self.seen.lock().ok()?;
        let signed_in = identity.auth_method != AuthMethod::ApiKey as i32;
        seen.get(key)
            .filter(|s| s.at.elapsed() < RECHECK)
            .filter(|s| !signed_in || s.roles == identity.roles)
            .map(|s| s.disabled)
    }

    fn remember(&self, key: CacheKey, disabled: bool, roles: Vec<String>) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= MAX_CACHED {
                seen.clear();
            }
            seen.insert(
                key,
                Seen {
                    at: Instant::now(),
                    disabled,
                    roles,
                },
            );
        }
    }

    /// Records the caller (at most every [`RECHECK`] per replica, at once when a signed-in
    /// caller's roles changed) and refuses a disabled one.
    pub async fn admit(&self, identity: &Identity) -> Result<(), PaError> {
        let key = (identity.tenant_id.clone(), identity.user_id.clone());
        let disabled = match self.cached(&key, identity) {
            Some(disabled) => disabled,
            None => {
                let disabled = self.record(identity).await?;
                self.remember(key, disabled, identity.roles.clone());
                disabled
            }
        };
        if disabled {
            Err(disabled_error())
        } else {
            Ok(())
        }
    }

    /// Upserts the caller; returns whether they are disabled. An API key's roles are a subset
    /// of its creator's, so only a sign-in updates the recorded roles.
    async fn record(&self, identity: &Identity) -> Result<bool, PaError> {
        let signed_in = identity.auth_method != AuthMethod::ApiKey as i32;
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        let disabled: bool = sqlx::query_scalar(
            "INSERT INTO users (tenant_id, user_id, display_name, roles, auth_method) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET last_seen_at = now(), \
               display_name = CASE WHEN $6 THEN EXCLUDED.display_name ELSE users.display_name END, \
               roles = CASE WHEN $6 THEN EXCLUDED.roles ELSE users.roles END, \
               auth_method = CASE WHEN $6 THEN EXCLUDED.auth_method ELSE users.auth_method END \
             RETURNING disabled_at IS NOT NULL",
        )
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .bind(&identity.display_name)
        .bind(&identity.roles)
        .bind(method_name(identity))
        .bind(signed_in)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(disabled)
    }

    /// A page of the tenant's users by id, optionally filtered by `query` (id or name).
    pub async fn list(
        &self,
        tenant_id: &str,
        query: &str,
        after: &str,
        limit: i64,
    ) -> Result<(Vec<UserRecord>, Option<String>), PaError> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let pattern = format!(
            "%{}%",
            query
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant_id).await?;
        let rows = sqlx::query(
            "SELECT user_id, display_name, roles, auth_method, first_seen_at, last_seen_at, \
                    disabled_at, disabled_by FROM users \
             WHERE tenant_id = $1 AND user_id > $2 \
               AND ($3 = '%%' OR user_id ILIKE $3 OR display_name ILIKE $3) \
             ORDER BY user_id LIMIT $4",
        )
        .bind(tenant_id)
        .bind(after)
        .bind(&pattern)
        .bind(limit + 1)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut users = rows
            .iter()
            .map(UserRecord::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if users.len() as i64 > limit {
            users.truncate(limit as usize);
            users.last().map(|u| u.user_id.clone())
        } else {
            None
        };
        Ok((users, next))
    }

    /// Disables or re-enables `user_id` (an admin acting; never on themselves).
    pub async fn set_disabled(
        &self,
        admin: &Identity,
        user_id: &str,
        disabled: bool,
    ) -> Result<UserRecord, PaError> {
        if disabled && user_id == admin.user_id {
            return Err(PaError::new(
                ErrorCode::FailedPrecondition,
                "you cannot disable yourself",
            ));
        }
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &admin.tenant_id).await?;
        let row = sqlx::query(
            "UPDATE users SET \
               disabled_at = CASE WHEN $3 THEN coalesce(disabled_at, now()) END, \
               disabled_by = CASE WHEN $3 THEN coalesce(disabled_by, $4) END \
             WHERE tenant_id = $1 AND user_id = $2 \
             RETURNING user_id, display_name, roles, auth_method, first_seen_at, last_seen_at, \
                       disabled_at, disabled_by",
        )
        .bind(&admin.tenant_id)
        .bind(user_id)
        .bind(disabled)
        .bind(&admin.user_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let row = row.ok_or_else(|| {
            PaError::not_found(format!("no user {user_id:?} has signed in to this tenant"))
        })?;
        let record = UserRecord::from_row(&row)?;
        self.remember(
            (admin.tenant_id.clone(), user_id.to_string()),
            disabled,
            record.roles.clone(),
        );
        Ok(record)
    }
}
