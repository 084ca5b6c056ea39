//! The API key store: `pa_<id>_<secret>` keys, the SHA-256 of the secret kept (a 256-bit
//! random secret needs no slow hash), verified at every use against the creator's *current*
//! standing. The routes that create, list and revoke keys are `api_keys`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pa_kit::PaError;
use pa_proto::v1::{AuthMethod, Identity};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

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

pub(crate) fn random_text(bytes: usize) -> Result<String, PaError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|_| PaError::internal("no randomness available"))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

pub(crate) fn hash(secret: &str) -> Vec<u8> {
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
    pub(crate) pool: PgPool,
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
        let (current, disabled) = crate::user_directory::standing(&self.pool, &tenant_id, &user_id)
            .await?
            .unwrap_or_default();
        if disabled {
            return Err(crate::user_directory::disabled());
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
