//! Provider API keys at rest (BYOK user keys; the same sealing serves platform keys).
//!
//! Envelope encryption with AES-256-GCM: every secret gets a fresh random 256-bit data key (DEK)
//! and a random 96-bit nonce; the DEK is itself sealed ("wrapped") under a key-encryption key
//! (KEK) from config, whose id is stored next to it. Rotating means configuring a new current KEK
//! and keeping the old one under `previous` until [`KeyStore::rewrap_all`] has moved every row.
//! Both layers are bound to the owner through the associated data, so a row copied to another
//! owner does not open.
//!
//! A key is never returned by an API and never logged: [`Secret`] prints as `Secret(***)`, and no
//! [`KeyError`] message carries key material (neither a provider key nor a KEK).

use std::fmt;
use std::sync::Arc;

use pa_kit::PaError;
pub use pa_kit::crypto::{CryptoError, KeyEncryption, Sealed, Secret};
use pa_proto::v1::{Identity, KeyRef};
use sqlx::{PgPool, Row};

const MAX_PROVIDER_LEN: usize = 64;
const MAX_API_KEY_BYTES: usize = 4096;
/// How many rows [`KeyStore::rewrap_all`] reads at a time.
const REWRAP_BATCH: i64 = 100;

// ------------------------------------------------------------------------------------------------
// Errors

/// What can go wrong with keys. No message carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The KEK configuration is unusable (startup).
    #[error("invalid key-encryption key configuration: {0}")]
    Config(String),
    /// The provider name is malformed. It is not echoed: it might be a pasted key.
    #[error("invalid provider: expected 1-{MAX_PROVIDER_LEN} characters of a-z, 0-9, '_' or '-'")]
    InvalidProvider,
    #[error("invalid api key: {0}")]
    InvalidKey(&'static str),
    #[error("the caller's identity has no tenant or no user")]
    NoIdentity,
    #[error("no key is stored for provider {0}")]
    NotFound(String),
    /// A stored key names a KEK that is not configured (any more).
    #[error("key-encryption key {0:?} is not configured")]
    UnknownKek(String),
    /// Authentication failed: wrong KEK, wrong owner, or a damaged row. Deliberately no detail.
    #[error("a stored key could not be decrypted")]
    Decrypt,
    #[error("a key could not be encrypted")]
    Encrypt,
    #[error("the system random number generator failed")]
    Random,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<CryptoError> for KeyError {
    fn from(err: CryptoError) -> Self {
        match err {
            CryptoError::Config(message) => KeyError::Config(message),
            CryptoError::UnknownKek(id) => KeyError::UnknownKek(id),
            CryptoError::Decrypt => KeyError::Decrypt,
            CryptoError::Encrypt => KeyError::Encrypt,
            CryptoError::Random => KeyError::Random,
        }
    }
}
impl From<KeyError> for PaError {
    fn from(err: KeyError) -> Self {
        match err {
            KeyError::InvalidProvider | KeyError::InvalidKey(_) => {
                PaError::bad_request(err.to_string())
            }
            KeyError::NoIdentity => PaError::unauthenticated(err.to_string()),
            KeyError::NotFound(_) => PaError::not_found(err.to_string()),
            KeyError::Db(e) => e.into(),
            KeyError::Config(_)
            | KeyError::UnknownKek(_)
            | KeyError::Decrypt
            | KeyError::Encrypt
            | KeyError::Random => PaError::internal(err),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The store

fn validate_provider(provider: &str) -> Result<(), KeyError> {
    let ok = !provider.is_empty()
        && provider.len() <= MAX_PROVIDER_LEN
        && provider
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(KeyError::InvalidProvider)
    }
}

fn validate_api_key(api_key: &str) -> Result<(), KeyError> {
    if api_key.is_empty() {
        return Err(KeyError::InvalidKey("it is empty"));
    }
    if api_key.len() > MAX_API_KEY_BYTES {
        return Err(KeyError::InvalidKey("it is longer than 4096 bytes"));
    }
    if api_key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(KeyError::InvalidKey(
            "it contains whitespace or control characters",
        ));
    }
    Ok(())
}

/// The caller's tenant and user, both required.
fn owner(identity: &Identity) -> Result<(&str, &str), KeyError> {
    if identity.tenant_id.is_empty() || identity.user_id.is_empty() {
        return Err(KeyError::NoIdentity);
    }
    Ok((&identity.tenant_id, &identity.user_id))
}

fn user_key_aad(tenant: &str, user: &str, provider: &str) -> String {
    format!("user-key/{tenant}/{user}/{provider}")
}

/// A stored key's reference (never the key) from a row of provider, key_id, last4, created_at
/// and bound_base_url.
fn key_ref_of(row: &sqlx::postgres::PgRow) -> Result<KeyRef, sqlx::Error> {
    Ok(KeyRef {
        provider: row.try_get("provider")?,
        key_id: row.try_get("key_id")?,
        last4: row.try_get("last4")?,
        created_at_ms: row
            .try_get::<chrono::DateTime<chrono::Utc>, _>("created_at")?
            .timestamp_millis(),
        bound_base_url: row.try_get("bound_base_url")?,
        ..Default::default()
    })
}

fn sealed_from_row(row: &sqlx::postgres::PgRow) -> Result<Sealed, sqlx::Error> {
    Ok(Sealed {
        kek_id: row.try_get("kek_id")?,
        wrapped_dek: row.try_get("wrapped_dek")?,
        dek_nonce: row.try_get("dek_nonce")?,
        ciphertext: row.try_get("ciphertext")?,
        nonce: row.try_get("nonce")?,
    })
}

/// Users' provider keys in table `user_keys`, one per tenant + user + provider.
#[derive(Clone)]
pub struct KeyStore {
    pool: PgPool,
    enc: Arc<KeyEncryption>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("enc", &self.enc)
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    pub fn new(pool: PgPool, enc: Arc<KeyEncryption>) -> Self {
        Self { pool, enc }
    }

    /// Stores (or replaces) the caller's key for `provider`, bound to the provider's current
    /// `base_url` (the key goes there and nowhere else); every put gets a new `key_id`.
    pub async fn put(
        &self,
        identity: &Identity,
        provider: &str,
        base_url: &str,
        api_key: &str,
    ) -> Result<KeyRef, KeyError> {
        let (tenant, user) = owner(identity)?;
        validate_provider(provider)?;
        validate_api_key(api_key)?;
        let secret = Secret::new(api_key);
        let sealed = self
            .enc
            .seal(&secret, &user_key_aad(tenant, user, provider))?;
        let key_id = uuid::Uuid::now_v7().to_string();
        let last4 = secret.last4();
        drop(secret);
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant).await?;
        let created_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
            "INSERT INTO user_keys (tenant_id, user_id, provider, key_id, kek_id, wrapped_dek, \
                 dek_nonce, ciphertext, nonce, last4, bound_base_url) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (tenant_id, user_id, provider) DO UPDATE SET \
                 key_id = EXCLUDED.key_id, kek_id = EXCLUDED.kek_id, \
                 wrapped_dek = EXCLUDED.wrapped_dek, dek_nonce = EXCLUDED.dek_nonce, \
                 ciphertext = EXCLUDED.ciphertext, nonce = EXCLUDED.nonce, \
                 last4 = EXCLUDED.last4, bound_base_url = EXCLUDED.bound_base_url, \
                 created_at = now(), updated_at = now() \
             RETURNING created_at",
        )
        .bind(tenant)
        .bind(user)
        .bind(provider)
        .bind(&key_id)
        .bind(&sealed.kek_id)
        .bind(&sealed.wrapped_dek)
        .bind(&sealed.dek_nonce)
        .bind(&sealed.ciphertext)
        .bind(&sealed.nonce)
        .bind(&last4)
        .bind(base_url)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(tenant, user, provider, key_id, "user key stored");
        Ok(KeyRef {
            provider: provider.to_string(),
            key_id,
            last4,
            created_at_ms: created_at.timestamp_millis(),
            bound_base_url: base_url.to_string(),
            ..Default::default()
        })
    }

    /// Binds the caller's key for `provider` to `base_url` (the user confirmed it); returns the
    /// key as it is now.
    pub async fn confirm(
        &self,
        identity: &Identity,
        provider: &str,
        base_url: &str,
    ) -> Result<KeyRef, KeyError> {
        let (tenant, user) = owner(identity)?;
        validate_provider(provider)?;
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant).await?;
        let row = sqlx::query(
            "UPDATE user_keys SET bound_base_url = $4, updated_at = now() \
             WHERE tenant_id = $1 AND user_id = $2 AND provider = $3 \
             RETURNING provider, key_id, last4, created_at, bound_base_url",
        )
        .bind(tenant)
        .bind(user)
        .bind(provider)
        .bind(base_url)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else {
            return Err(KeyError::NotFound(provider.to_string()));
        };
        tracing::info!(
            tenant,
            user,
            provider,
            base_url,
            "user key confirmed for a base URL"
        );
        Ok(key_ref_of(&row)?)
    }

    /// The caller's keys, by provider; references only.
    pub async fn list(&self, identity: &Identity) -> Result<Vec<KeyRef>, KeyError> {
        let (tenant, user) = owner(identity)?;
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant).await?;
        let rows = sqlx::query(
            "SELECT provider, key_id, last4, created_at, bound_base_url FROM user_keys \
             WHERE tenant_id = $1 AND user_id = $2 ORDER BY provider",
        )
        .bind(tenant)
        .bind(user)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(|row| Ok(key_ref_of(row)?)).collect()
    }

    /// Deletes the caller's key for `provider`; [`KeyError::NotFound`] when there is none.
    pub async fn delete(&self, identity: &Identity, provider: &str) -> Result<(), KeyError> {
        let (tenant, user) = owner(identity)?;
        validate_provider(provider)?;
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant).await?;
        let deleted = sqlx::query(
            "DELETE FROM user_keys WHERE tenant_id = $1 AND user_id = $2 AND provider = $3",
        )
        .bind(tenant)
        .bind(user)
        .bind(provider)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        if deleted == 0 {
            return Err(KeyError::NotFound(provider.to_string()));
        }
        tracing::info!(tenant, user, provider, "user key deleted");
        Ok(())
    }

    /// The caller's key for `provider`, decrypted for a provider call, with the base URL it is
    /// bound to ('' = stored before keys were bound); `None` when there is none.
    pub async fn get(
        &self,
        identity: &Identity,
        provider: &str,
    ) -> Result<Option<(Secret, String)>, KeyError> {
        let (tenant, user) = owner(identity)?;
        validate_provider(provider)?;
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant).await?;
        let row = sqlx::query(
            "SELECT kek_id, wrapped_dek, dek_nonce, ciphertext, nonce, bound_base_url FROM user_keys \
             WHERE tenant_id = $1 AND user_id = $2 AND provider = $3",
        )
        .bind(tenant)
        .bind(user)
        .bind(provider)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sealed = sealed_from_row(&row)?;
        let bound: String = row.try_get("bound_base_url")?;
        let aad = user_key_aad(tenant, user, provider);
        match self.enc.open(&sealed, &aad) {
            Ok(secret) => Ok(Some((secret, bound))),
            Err(err) => {
                tracing::error!(tenant, user, provider, kek_id = %sealed.kek_id, error = %err,
                    "a stored user key does not open");
                Err(err.into())
            }
        }
    }

    /// Moves every row not under the current KEK to it (the DEK is re-wrapped; the ciphertext
    /// stays). Returns how many rows moved. Stops at the first row that does not open (logged
    /// with its owner), leaving the rows moved so far moved: running it again is safe.
    ///
    /// It walks every tenant's rows, like a migration, so it runs on the schema owner's pool
    /// (`owner`), which row-level security does not restrict; requests never reach it.
    pub async fn rewrap_all(&self, owner: &PgPool) -> Result<u64, KeyError> {
        let current = self.enc.current_id();
        let mut moved = 0u64;
        let mut after = (String::new(), String::new(), String::new());
        loop {
            let rows = sqlx::query(
                "SELECT tenant_id, user_id, provider, key_id, kek_id, wrapped_dek, dek_nonce, \
                     ciphertext, nonce FROM user_keys \
                 WHERE kek_id <> $1 AND (tenant_id, user_id, provider) > ($2, $3, $4) \
                 ORDER BY tenant_id, user_id, provider LIMIT $5",
            )
            .bind(current)
            .bind(&after.0)
            .bind(&after.1)
            .bind(&after.2)
            .bind(REWRAP_BATCH)
            .fetch_all(owner)
            .await?;
            for row in &rows {
                let tenant: String = row.try_get("tenant_id")?;
                let user: String = row.try_get("user_id")?;
                let provider: String = row.try_get("provider")?;
                after = (tenant.clone(), user.clone(), provider.clone());
                let key_id: String = row.try_get("key_id")?;
                let sealed = sealed_from_row(row)?;
                let aad = user_key_aad(&tenant, &user, &provider);
                let rewrapped = match self.enc.rewrap(&sealed, &aad) {
                    Ok(Some(rewrapped)) => rewrapped,
                    Ok(None) => continue,
                    Err(err) => {
                        tracing::error!(tenant, user, provider, kek_id = %sealed.kek_id,
                            error = %err, "a stored user key does not open; rewrap stopped");
                        return Err(err.into());
                    }
                };
                // Guarded by key_id and kek_id: a put that replaced the row meanwhile wins.
                moved += sqlx::query(
                    "UPDATE user_keys SET kek_id = $1, wrapped_dek = $2, dek_nonce = $3, \
                         updated_at = now() \
                     WHERE tenant_id = $4 AND user_id = $5 AND provider = $6 \
                         AND key_id = $7 AND kek_id = $8",
                )
                .bind(&rewrapped.kek_id)
                .bind(&rewrapped.wrapped_dek)
                .bind(&rewrapped.dek_nonce)
                .bind(&tenant)
                .bind(&user)
                .bind(&provider)
                .bind(&key_id)
                .bind(&sealed.kek_id)
                .execute(owner)
                .await?
                .rows_affected();
            }
            if rows.len() < REWRAP_BATCH as usize {
                break;
            }
        }
        if moved > 0 {
            tracing::info!(
                moved,
                kek_id = current,
                "user keys re-wrapped under the current KEK"
            );
        }
        Ok(moved)
    }
}

// ------------------------------------------------------------------------------------------------
#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-test-0123456789abcdefWXYZ";

    fn b64(key: &[u8; 32]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(key)
    }

    fn enc(id: &str, key: &[u8; 32], previous: &str) -> KeyEncryption {
        KeyEncryption::from_config(id, &b64(key), previous).unwrap()
    }

    #[test]
    fn input_validation_and_error_codes() {
        assert!(validate_provider("openai").is_ok());
        assert!(validate_provider("my_provider-2").is_ok());
        for bad in ["", "OpenAI", "a b", "a/b", "ü", &"a".repeat(65)] {
            assert!(matches!(
                validate_provider(bad),
                Err(KeyError::InvalidProvider)
            ));
        }
        assert!(validate_api_key(KEY).is_ok());
        for bad in [
            String::new(),
            "sk abc".into(),
            "sk-abc\n".into(),
            "sk\u{7f}".into(),
            "a".repeat(4097),
        ] {
            let err = validate_api_key(&bad).unwrap_err();
            if !bad.is_empty() {
                assert!(!err.to_string().contains(bad.trim()));
            }
            assert_eq!(PaError::from(err).code, pa_kit::ErrorCode::BadRequest);
        }
        assert!(validate_api_key(&"a".repeat(4096)).is_ok());
        assert_eq!(
            PaError::from(KeyError::InvalidProvider).code,
            pa_kit::ErrorCode::BadRequest
        );
        assert_eq!(
            PaError::from(KeyError::NotFound("openai".into())).code,
            pa_kit::ErrorCode::NotFound
        );
        for internal in [
            KeyError::Decrypt,
            KeyError::UnknownKek("k0".into()),
            KeyError::Config("x".into()),
        ] {
            let err = PaError::from(internal);
            assert_eq!(err.code, pa_kit::ErrorCode::Internal);
            assert!(!err.message.contains("k0"));
        }
    }

    // -------------------------------------------------------------------------------------------
    // Against Postgres at DATABASE_URL (the dev stack), in a throwaway schema.

    mod pg {
        use std::str::FromStr;

        use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

        use super::*;

        const MIGRATIONS: [&str; 2] = [
            include_str!("../migrations/0003_user_keys.sql"),
            include_str!("../migrations/0006_tenant_catalog.sql"),
        ];

        fn identity(tenant: &str, user: &str) -> Identity {
            Identity {
                tenant_id: tenant.into(),
                user_id: user.into(),
                ..Default::default()
            }
        }

        /// Runs `body` against a fresh schema holding only `user_keys`, and drops the schema
        /// afterwards, also when `body` panics.
        async fn with_schema<F, Fut>(body: F)
        where
            F: FnOnce(PgPool) -> Fut,
            Fut: Future<Output = ()> + Send + 'static,
        {
            let url = std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| pa_kit::config::DEFAULT_DATABASE_URL.to_string());
            let base = PgConnectOptions::from_str(&url).unwrap();
            let schema = format!("keys_test_{}", uuid::Uuid::new_v4().simple());
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(base.clone())
                .await
                .expect("Postgres at DATABASE_URL (start the dev stack: make stack)");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
                .execute(&admin)
                .await
                .unwrap();
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .connect_with(base.options([("search_path", schema.as_str())]))
                .await
                .unwrap();
            let outcome = async {
                for migration in MIGRATIONS {
                    sqlx::raw_sql(migration).execute(&pool).await.unwrap();
                }
                tokio::spawn(body(pool.clone())).await
            }
            .await;
            pool.close().await;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA \"{schema}\" CASCADE"
            )))
            .execute(&admin)
            .await
            .unwrap();
            admin.close().await;
            if let Err(err) = outcome {
                std::panic::resume_unwind(err.into_panic());
            }
        }

        #[tokio::test]
        async fn pg_put_list_get_delete() {
            with_schema(|pool| async move {
                let store = KeyStore::new(pool.clone(), Arc::new(enc("k1", &[9; 32], "")));
                let alice = identity("t1", "alice");
                let bob = identity("t1", "bob");
                let alice_elsewhere = identity("t2", "alice");

                assert!(store.list(&alice).await.unwrap().is_empty());
                assert!(store.get(&alice, "openai").await.unwrap().is_none());

                let first = store
                    .put(&alice, "openai", "https://api.example.com/v1", KEY)
                    .await
                    .unwrap();
                assert_eq!(first.provider, "openai");
                assert_eq!(first.last4, "WXYZ");
                assert!(uuid::Uuid::parse_str(&first.key_id).is_ok());
                assert!(first.created_at_ms > 0);
                assert_eq!(first.bound_base_url, "https://api.example.com/v1");
                // Confirming binds the key to another base URL; `get` says which.
                store
                    .confirm(&alice, "openai", "https://moved.example.com/v1")
                    .await
                    .unwrap();
                assert_eq!(
                    store.get(&alice, "openai").await.unwrap().unwrap().1,
                    "https://moved.example.com/v1"
                );
                assert!(matches!(
                    store.confirm(&bob, "openai", "https://x.example.com").await,
                    Err(KeyError::NotFound(_))
                ));
                store
                    .confirm(&alice, "openai", "https://api.example.com/v1")
                    .await
                    .unwrap();
                let other = store
                    .put(
                        &alice,
                        "anthropic",
                        "https://api.example.com/v1",
                        "sk-ant-zzzzzzzzzzzz9876",
                    )
                    .await
                    .unwrap();

                let listed = store.list(&alice).await.unwrap();
                assert_eq!(listed, vec![other.clone(), first.clone()]);
                assert_eq!(
                    store
                        .get(&alice, "openai")
                        .await
                        .unwrap()
                        .unwrap()
                        .0
                        .expose(),
                    KEY
                );

                // Another user or tenant sees nothing.
                assert!(store.get(&bob, "openai").await.unwrap().is_none());
                assert!(
                    store
                        .get(&alice_elsewhere, "openai")
                        .await
                        .unwrap()
                        .is_none()
                );
                assert!(store.list(&bob).await.unwrap().is_empty());
                assert!(matches!(
                    store.delete(&bob, "openai").await,
                    Err(KeyError::NotFound(_))
                ));

                // A second put replaces the key, with a new key_id.
                let second = store
                    .put(
                        &alice,
                        "openai",
                        "https://api.example.com/v1",
                        "sk-test-replacement-0000",
                    )
                    .await
                    .unwrap();
                assert_ne!(second.key_id, first.key_id);
                assert_eq!(second.last4, "0000");
                assert_eq!(
                    store
                        .get(&alice, "openai")
                        .await
                        .unwrap()
                        .unwrap()
                        .0
                        .expose(),
                    "sk-test-replacement-0000"
                );
                assert_eq!(store.list(&alice).await.unwrap(), vec![other, second]);

                // No plaintext in any column (raw or hex-encoded).
                for row in sqlx::query("SELECT t::text AS row, ciphertext FROM user_keys t")
                    .fetch_all(&pool)
                    .await
                    .unwrap()
                {
                    let text: String = row.get("row");
                    let ciphertext: Vec<u8> = row.get("ciphertext");
                    for key in ["sk-test-replacement-0000", "sk-ant-zzzzzzzzzzzz9876", KEY] {
                        assert!(!text.contains(key), "{text}");
                        let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
                        assert!(!text.contains(&hex), "{text}");
                        assert!(!ciphertext.windows(key.len()).any(|w| w == key.as_bytes()));
                    }
                }

                // A row copied to another owner does not open there.
                sqlx::query(
                    "INSERT INTO user_keys (tenant_id, user_id, provider, key_id, kek_id, \
                         wrapped_dek, dek_nonce, ciphertext, nonce, last4) \
                     SELECT tenant_id, 'bob', provider, key_id, kek_id, wrapped_dek, \
                         dek_nonce, ciphertext, nonce, last4 \
                     FROM user_keys WHERE user_id = 'alice' AND provider = 'openai'",
                )
                .execute(&pool)
                .await
                .unwrap();
                assert!(matches!(
                    store.get(&bob, "openai").await,
                    Err(KeyError::Decrypt)
                ));

                // Bad input.
                assert!(matches!(
                    store
                        .put(&alice, "Open AI", "https://api.example.com/v1", KEY)
                        .await,
                    Err(KeyError::InvalidProvider)
                ));
                assert!(matches!(
                    store
                        .put(
                            &alice,
                            "openai",
                            "https://api.example.com/v1",
                            "sk with space"
                        )
                        .await,
                    Err(KeyError::InvalidKey(_))
                ));
                assert!(matches!(
                    store
                        .put(
                            &identity("t1", ""),
                            "openai",
                            "https://api.example.com/v1",
                            KEY
                        )
                        .await,
                    Err(KeyError::NoIdentity)
                ));

                store.delete(&alice, "openai").await.unwrap();
                assert!(store.get(&alice, "openai").await.unwrap().is_none());
                assert!(matches!(
                    store.delete(&alice, "openai").await,
                    Err(KeyError::NotFound(_))
                ));
                assert_eq!(store.list(&alice).await.unwrap().len(), 1);
            })
            .await;
        }

        #[tokio::test]
        async fn pg_rewrap_all_moves_rows_to_the_current_kek() {
            with_schema(|pool| async move {
                let old_key = [5u8; 32];
                let old = KeyStore::new(pool.clone(), Arc::new(enc("k1", &old_key, "")));
                let users: Vec<Identity> = (0..(REWRAP_BATCH + 5))
                    .map(|i| identity("t1", &format!("user{i:03}")))
                    .collect();
                for user in &users {
                    old.put(
                        user,
                        "openai",
                        "https://api.example.com/v1",
                        &format!("sk-{}", user.user_id),
                    )
                    .await
                    .unwrap();
                }
                let refs = old.list(&users[0]).await.unwrap();

                let rotated = KeyStore::new(
                    pool.clone(),
                    Arc::new(enc("k2", &[6; 32], &format!("k1:{}", b64(&old_key)))),
                );
                // Readable before moving, under the previous KEK.
                assert_eq!(
                    rotated
                        .get(&users[1], "openai")
                        .await
                        .unwrap()
                        .unwrap()
                        .0
                        .expose(),
                    "sk-user001"
                );
                assert_eq!(rotated.rewrap_all(&pool).await.unwrap(), users.len() as u64);
                assert_eq!(rotated.rewrap_all(&pool).await.unwrap(), 0);
                let stale: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM user_keys WHERE kek_id <> 'k2'")
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                assert_eq!(stale, 0);
                // The key_id (and what lists) is unchanged by re-wrapping.
                assert_eq!(rotated.list(&users[0]).await.unwrap(), refs);

                let new_only = KeyStore::new(pool.clone(), Arc::new(enc("k2", &[6; 32], "")));
                for user in [&users[0], &users[users.len() - 1]] {
                    assert_eq!(
                        new_only
                            .get(user, "openai")
                            .await
                            .unwrap()
                            .unwrap()
                            .0
                            .expose(),
                        format!("sk-{}", user.user_id)
                    );
                }
                // And the old configuration can no longer read them.
                assert!(matches!(
                    old.get(&users[0], "openai").await,
                    Err(KeyError::UnknownKek(_))
                ));
            })
            .await;
        }
    }
}
