//! Who is calling. The gateway is the only place an [`Identity`] is built; services receive it
//! signed with the internal credential.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use pa_kit::PaError;
use pa_proto::v1::{AuthMethod, Identity};

use crate::config::AuthMode;
use crate::problem::ApiError;
use crate::state::AppState;

pub const DEV_USER_HEADER: &str = "x-pa-dev-user";
pub const DEV_TENANT_HEADER: &str = "x-pa-dev-tenant";
/// Comma-separated roles of the dev caller (default `user,admin,platform-admin`: the one dev
/// user runs the whole platform).
pub const DEV_ROLES_HEADER: &str = "x-pa-dev-roles";

/// The authenticated caller of a request.
pub struct Caller(pub Identity);

/// What an API key needs to call a route. Every route of the table declares one (see
/// `lib.rs`); a request that reaches [`Caller`] without one is refused to API keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// No authentication (health, the API's index, the web app, a device's own credentials).
    Public,
    /// Signed-in users only: an API key never manages credentials (API keys, provider keys).
    SessionOnly,
    Chats,
    Runs,
    Models,
    Memory,
    Devices,
    Integrations,
    Admin,
}

impl Scope {
    /// The API-key scope that grants the route; `None`: no API key may call it.
    pub fn key_scope(self) -> Option<&'static str> {
        Some(match self {
            Scope::Public | Scope::SessionOnly => return None,
            Scope::Chats => "chats",
            Scope::Runs => "runs",
            Scope::Models => "models",
            Scope::Memory => "memory",
            Scope::Devices => "devices",
            Scope::Integrations => "integrations",
            Scope::Admin => "admin",
        })
    }
}

/// A dev header's value: 1-64 characters of A-Z a-z 0-9 - _ . @ and the `extra` ones.
fn dev_value(parts: &Parts, header: &str, default: &str, extra: &str) -> Result<String, ApiError> {
    match parts.headers.get(header) {
        None => Ok(default.to_string()),
        Some(value) => {
            let value = value.to_str().unwrap_or("");
            let ok = !value.is_empty()
                && value.len() <= 64
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c) || extra.contains(c));
            if ok {
                Ok(value.to_string())
            } else {
                Err(PaError::bad_request(format!(
                    "{header} must be 1-64 characters of A-Z a-z 0-9 - _ . @{extra}"
                ))
                .into())
            }
        }
    }
}

fn dev_name(parts: &Parts, header: &str, default: &str) -> Result<String, ApiError> {
    dev_value(parts, header, default, "")
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// Authenticates, then counts the request against the caller's rate limits.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Self::authenticate(parts, state).await?;
        if let Some(users) = &state.users {
            users.admit(&caller.0).await?;
        }
        pa_bus::limits::check_rate(
            &state.redis,
            state.rate_limits,
            &caller.0.tenant_id,
            &caller.0.user_id,
        )
        .await?;
        Ok(caller)
    }
}

impl Caller {
    async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // API keys work in every mode: they are real credentials, checked against their hash.
        if let Some(key) = bearer(parts).filter(|t| t.starts_with(crate::api_key_store::PREFIX))
            && let Some(store) = &state.api_keys
        {
            // Fail closed: a route without a declared scope takes no API key.
            let needed = parts.extensions.get::<Scope>().and_then(|s| s.key_scope());
            let Some(needed) = needed else {
                return Err(PaError::new(
                    pa_kit::ErrorCode::Forbidden,
                    "API keys cannot call this endpoint; sign in",
                )
                .into());
            };
            let identity = store.verify(key).await?;
            if !identity.scopes.iter().any(|s| s == needed) {
                return Err(PaError::new(
                    pa_kit::ErrorCode::Forbidden,
                    format!("this API key lacks the {needed:?} scope"),
                )
                .into());
            }
            return Ok(Caller(identity));
        }
        match state.auth_mode {
            AuthMode::Dev => {
                let user_id = dev_name(parts, DEV_USER_HEADER, "dev-user")?;
                let tenant_id = dev_name(parts, DEV_TENANT_HEADER, "dev")?;
                Ok(Caller(Identity {
                    display_name: user_id.clone(),
                    tenant_id,
                    user_id,
                    roles: dev_value(parts, DEV_ROLES_HEADER, "user,admin,platform-admin", ",")?
                        .split(',')
                        .filter(|r| !r.is_empty())
                        .map(str::to_string)
                        .collect(),
                    scopes: vec!["*".into()],
                    auth_method: AuthMethod::Dev as i32,
                }))
            }
            AuthMode::Oidc => {
                let verifier = state
                    .oidc
                    .as_ref()
                    .ok_or_else(|| PaError::internal("OIDC mode without a verifier"))?;
                let token = bearer(parts).ok_or_else(|| {
                    PaError::unauthenticated("missing Authorization: Bearer <token>")
                })?;
                Ok(Caller(verifier.verify(token).await?))
            }
            AuthMode::Disabled => Err(PaError::unauthenticated(
                "no authentication is configured: run with PA_AUTH_MODE=dev for local use",
            )
            .into()),
        }
    }
}

/// The bearer token of a request, if any.
fn bearer(parts: &Parts) -> Option<&str> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of the table declares a scope, and the declaration matches what the route
    /// does: a route fails this test when it is added without a thought about API keys.
    #[test]
    fn every_route_declares_its_scope() {
        let public = [
            "/",
            "/v1",
            "/v1/openapi.json",
            "/healthz",
            "/readyz",
            "/v1/auth/config",
            "/v1/devices/enroll",
            "/v1/devices/connect",
        ];
        for (method, path, scope) in crate::route_scopes() {
            let expected = if public.contains(&path) {
                Scope::Public
            } else if path.starts_with("/v1/admin/") {
                Scope::Admin
            } else if path.starts_with("/v1/me/api-keys") || path.starts_with("/v1/me/keys") {
                Scope::SessionOnly
            } else if path.starts_with("/v1/me/integrations") || path.ends_with("/tools") {
                Scope::Integrations
            } else if path.starts_with("/v1/me/memories") {
                Scope::Memory
            } else if path.starts_with("/v1/me/devices") {
                Scope::Devices
            } else if path.starts_with("/v1/runs")
                || path.ends_with("/runs")
                || path == "/v1/control"
                || path == "/v1/ag-ui"
            {
                Scope::Runs
            } else if path.starts_with("/v1/chats") {
                Scope::Chats
            } else if path == "/v1/models" || path == "/v1/me/usage" {
                Scope::Models
            } else {
                panic!("{method} {path}: no expectation for its scope; add one here")
            };
            assert_eq!(scope, expected, "{method} {path}");
        }
    }
}
