//! The model catalog (schema `models`): providers with their tags and (encrypted) platform
//! keys, models, the tag vocabulary and classification policies. Reads go through a short-lived
//! in-memory [`Snapshot`]: model calls are the hot path and the catalog changes rarely; every
//! admin write through this instance drops the snapshots at once.
//!
//! Row-level security (migration 0004): platform rows (`_platform`) are readable by everyone;
//! a tenant's policy overrides and tags only inside that tenant's transaction. So a snapshot is
//! per tenant: the shared platform rows plus that tenant's own, never another tenant's.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use pa_kit::PaError;
use pa_proto::v1::{
    ClassificationPolicy, DataClassification, ModelCapabilities, ModelInfo, ProviderInfo,
};
use sqlx::{PgPool, Row};

use crate::keys::Sealed;

pub const PLATFORM: &str = "_platform";
const CACHE_TTL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("model label {0:?} is not of the form provider:model")]
    BadLabel(String),
    #[error("model {0} is not in the catalog")]
    UnknownModel(String),
    #[error("model {0} is disabled by the administrator")]
    Disabled(String),
    #[error("provider {0} is not in the catalog")]
    UnknownProvider(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<CatalogError> for PaError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::BadLabel(_) | CatalogError::Invalid(_) => {
                PaError::bad_request(err.to_string())
            }
            CatalogError::UnknownModel(_) | CatalogError::UnknownProvider(_) => {
                PaError::not_found(err.to_string())
            }
            CatalogError::Disabled(_) => {
                PaError::new(pa_kit::ErrorCode::FailedPrecondition, err.to_string())
            }
            CatalogError::Db(e) => e.into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Provider {
    pub id: String,
    pub kind: String,
    pub base_url: String,
    pub tags: Vec<String>,
    pub enabled: bool,
    pub display_name: String,
    pub platform_key: Option<Sealed>,
}

impl Provider {
    pub fn info(&self) -> ProviderInfo {
        ProviderInfo {
            id: self.id.clone(),
            kind: self.kind.clone(),
            base_url: self.base_url.clone(),
            tags: self.tags.clone(),
            enabled: self.enabled,
            has_platform_key: self.platform_key.is_some(),
            display_name: self.display_name.clone(),
        }
    }
}

/// A catalog model with its provider's kind and state.
#[derive(Clone, Debug)]
pub struct CatalogModel {
    pub info: ModelInfo,
    pub provider_kind: String,
    pub provider_enabled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub tenant_id: String,
    pub classification: DataClassification,
    pub required_tags: Vec<String>,
    pub forbidden_tags: Vec<String>,
}

/// Everything governance and resolution read for one tenant, as of one moment: the platform
/// rows and that tenant's own policies and tags.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub providers: Vec<Provider>,
    /// Cheapest first (input + output price), ties by label.
    pub models: Vec<CatalogModel>,
    pub policies: Vec<Policy>,
    /// (tenant_id, tag)
    pub known_tags: Vec<(String, String)>,
}

impl Snapshot {
    /// The tenant's policy for a classification, else the platform's.
    pub fn policy(&self, tenant_id: &str, classification: DataClassification) -> Option<&Policy> {
        let find = |tenant: &str| {
            self.policies
                .iter()
                .find(|p| p.tenant_id == tenant && p.classification == classification)
        };
        find(tenant_id).or_else(|| find(PLATFORM))
    }

    pub fn is_known_tag(&self, tenant_id: &str, tag: &str) -> bool {
        self.known_tags
            .iter()
            .any(|(t, known)| known == tag && (t == PLATFORM || t == tenant_id))
    }

    /// Enabled models of enabled providers.
    pub fn usable_models(&self) -> impl Iterator<Item = &CatalogModel> {
        self.models
            .iter()
            .filter(|m| m.info.enabled && m.provider_enabled)
    }

    pub fn model(&self, label: &str) -> Option<&CatalogModel> {
        self.models.iter().find(|m| m.info.label == label)
    }

    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.id == id)
    }

    /// A model that may be called: in the catalog, enabled, its provider enabled.
    pub fn usable_model(&self, label: &str) -> Result<&CatalogModel, CatalogError> {
        if !is_label(label) {
            return Err(CatalogError::BadLabel(label.to_string()));
        }
        let model = self
            .model(label)
            .ok_or_else(|| CatalogError::UnknownModel(label.to_string()))?;
        if !model.info.enabled || !model.provider_enabled {
            return Err(CatalogError::Disabled(label.to_string()));
        }
        Ok(model)
    }
}

type Cached = (Instant, Arc<Snapshot>);

#[derive(Clone)]
pub struct Catalog {
    /// The application role's pool: every query here is subject to the policies.
    pool: PgPool,
    /// By tenant; the platform's own snapshot under [`PLATFORM`].
    cache: Arc<RwLock<HashMap<String, Cached>>>,
}

fn sealed_from_row(row: &sqlx::postgres::PgRow) -> Result<Option<Sealed>, sqlx::Error> {
    let kek_id: Option<String> = row.try_get("platform_kek_id")?;
    let Some(kek_id) = kek_id else {
        return Ok(None);
    };
    Ok(Some(Sealed {
        kek_id,
        wrapped_dek: row
            .try_get::<Option<Vec<u8>>, _>("platform_wrapped_dek")?
            .unwrap_or_default(),
        dek_nonce: row
            .try_get::<Option<Vec<u8>>, _>("platform_dek_nonce")?
            .unwrap_or_default(),
        ciphertext: row
            .try_get::<Option<Vec<u8>>, _>("platform_ciphertext")?
            .unwrap_or_default(),
        nonce: row
            .try_get::<Option<Vec<u8>>, _>("platform_nonce")?
            .unwrap_or_default(),
    }))
}

fn u64_of(row: &sqlx::postgres::PgRow, name: &str) -> Result<u64, sqlx::Error> {
    Ok(row.try_get::<i64, _>(name)?.max(0) as u64)
}

impl Catalog {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Arc::default(),
        }
    }

    pub fn invalidate(&self) {
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
    }

    fn cached(&self, tenant: &str) -> Option<Arc<Snapshot>> {
        let cache = self.cache.read().ok()?;
        let (at, snap) = cache.get(tenant)?;
        (at.elapsed() < CACHE_TTL).then(|| snap.clone())
    }

    fn remember(&self, tenant: &str, snap: &Arc<Snapshot>) {
        if let Ok(mut cache) = self.cache.write() {
            // Stale entries go on every insert, so the map holds only recently active tenants.
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            cache.insert(tenant.to_string(), (Instant::now(), snap.clone()));
        }
    }

    /// The catalog as `tenant_id` sees it (an empty tenant sees the platform's alone).
    pub async fn snapshot(&self, tenant_id: &str) -> Result<Arc<Snapshot>, CatalogError> {
        let tenant = if tenant_id.is_empty() {
            PLATFORM
        } else {
            tenant_id
        };
        if let Some(snap) = self.cached(tenant) {
            return Ok(snap);
        }
        let platform = match self.cached(PLATFORM) {
            Some(snap) => snap,
            None => {
                let snap = Arc::new(self.load_platform().await?);
                self.remember(PLATFORM, &snap);
                snap
            }
        };
        if tenant == PLATFORM {
            return Ok(platform);
        }
        let (policies, known_tags) = self.load_tenant_rules(tenant).await?;
        let snap = if policies.is_empty() && known_tags.is_empty() {
            platform
        } else {
            let mut own = Snapshot::clone(&platform);
            own.policies.extend(policies);
            own.known_tags.extend(known_tags);
            Arc::new(own)
        };
        self.remember(tenant, &snap);
        Ok(snap)
    }

    /// A tenant's own policy overrides and tags, read in its transaction.
    async fn load_tenant_rules(
        &self,
        tenant: &str,
    ) -> Result<(Vec<Policy>, Vec<(String, String)>), CatalogError> {
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant).await?;
        let policy_rows = sqlx::query(
            "SELECT tenant_id, classification, required_tags, forbidden_tags FROM policies \
             WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?;
        let known_tags = sqlx::query_as::<_, (String, String)>(
            "SELECT tenant_id, tag FROM known_tags WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((policies_of(&policy_rows)?, known_tags))
    }

    /// The platform rows: without a tenant setting, the policies admit `_platform` rows alone.
    async fn load_platform(&self) -> Result<Snapshot, CatalogError> {
        let provider_rows = sqlx::query(
            "SELECT id, kind, COALESCE(base_url, '') AS base_url, tags, enabled, display_name, \
               platform_kek_id, platform_wrapped_dek, platform_dek_nonce, platform_ciphertext, platform_nonce \
             FROM providers WHERE tenant_id = $1 ORDER BY id",
        )
        .bind(PLATFORM)
        .fetch_all(&self.pool)
        .await?;
        let providers = provider_rows
            .iter()
            .map(|row| {
                Ok(Provider {
                    id: row.try_get("id")?,
                    kind: row.try_get("kind")?,
                    base_url: row.try_get("base_url")?,
                    tags: row.try_get("tags")?,
                    enabled: row.try_get("enabled")?,
                    display_name: row.try_get("display_name")?,
                    platform_key: sealed_from_row(row)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let model_rows = sqlx::query(
            "SELECT m.label, m.provider_id, m.model, m.display_name, m.enabled, m.context_window, \
               m.input_price_micros, m.output_price_micros, m.supports_tools, m.supports_vision, \
               m.supports_reasoning \
             FROM models m WHERE m.tenant_id = $1 \
             ORDER BY m.input_price_micros + m.output_price_micros, m.label",
        )
        .bind(PLATFORM)
        .fetch_all(&self.pool)
        .await?;
        let mut models = Vec::with_capacity(model_rows.len());
        for row in &model_rows {
            let provider_id: String = row.try_get("provider_id")?;
            let provider = providers.iter().find(|p| p.id == provider_id);
            models.push(CatalogModel {
                info: ModelInfo {
                    label: row.try_get("label")?,
                    provider: provider_id.clone(),
                    model: row.try_get("model")?,
                    display_name: row.try_get("display_name")?,
                    enabled: row.try_get("enabled")?,
                    context_window: row.try_get::<i32, _>("context_window")?.max(0) as u32,
                    input_price_micros: u64_of(row, "input_price_micros")?,
                    output_price_micros: u64_of(row, "output_price_micros")?,
                    capabilities: Some(ModelCapabilities {
                        tools: row.try_get("supports_tools")?,
                        vision: row.try_get("supports_vision")?,
                        reasoning: row.try_get("supports_reasoning")?,
                    }),
                    provider_tags: provider.map(|p| p.tags.clone()).unwrap_or_default(),
                },
                provider_kind: provider.map(|p| p.kind.clone()).unwrap_or_default(),
                provider_enabled: provider.is_some_and(|p| p.enabled),
            });
        }
        let policy_rows = sqlx::query(
            "SELECT tenant_id, classification, required_tags, forbidden_tags FROM policies \
             WHERE tenant_id = $1",
        )
        .bind(PLATFORM)
        .fetch_all(&self.pool)
        .await?;
        let known_tags = sqlx::query_as::<_, (String, String)>(
            "SELECT tenant_id, tag FROM known_tags WHERE tenant_id = $1",
        )
        .bind(PLATFORM)
        .fetch_all(&self.pool)
        .await?;
        Ok(Snapshot {
            providers,
            models,
            policies: policies_of(&policy_rows)?,
            known_tags,
        })
    }

    /// A transaction allowed to write platform rows (the policies' WITH CHECK).
    async fn platform_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        pa_kit::db::tenant_tx(&self.pool, PLATFORM).await
    }

    // ---- administration --------------------------------------------------------------

    /// Creates or updates a provider; `platform_key` replaces the stored key when given.
    pub async fn upsert_provider(
        &self,
        info: &ProviderInfo,
        platform_key: Option<&Sealed>,
    ) -> Result<Provider, CatalogError> {
        validate_id("provider id", &info.id)?;
        match info.kind.as_str() {
            "offline" => {}
            "openai_compatible" => {
                let url = info.base_url.trim();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(CatalogError::Invalid(
                        "an openai_compatible provider needs an http(s) base_url".into(),
                    ));
                }
            }
            other => {
                return Err(CatalogError::Invalid(format!(
                    "provider kind {other:?} is not one of offline, openai_compatible"
                )));
            }
        }
        for tag in &info.tags {
            validate_id("tag", tag)?;
        }
        let mut tx = self.platform_tx().await?;
        sqlx::query(
            "INSERT INTO providers (tenant_id, id, kind, base_url, tags, enabled, display_name) \
             VALUES ($1, $2, $3, NULLIF($4, ''), $5, $6, $7) \
             ON CONFLICT (tenant_id, id) DO UPDATE SET kind = EXCLUDED.kind, base_url = EXCLUDED.base_url, \
               tags = EXCLUDED.tags, enabled = EXCLUDED.enabled, display_name = EXCLUDED.display_name, \
               updated_at = now()",
        )
        .bind(PLATFORM)
        .bind(&info.id)
        .bind(&info.kind)
        .bind(info.base_url.trim())
        .bind(&info.tags)
        .bind(info.enabled)
        .bind(&info.display_name)
        .execute(&mut *tx)
        .await?;
        if let Some(sealed) = platform_key {
            sqlx::query(
                "UPDATE providers SET platform_kek_id = $3, platform_wrapped_dek = $4, platform_dek_nonce = $5, \
                   platform_ciphertext = $6, platform_nonce = $7, updated_at = now() \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(PLATFORM)
            .bind(&info.id)
            .bind(&sealed.kek_id)
            .bind(&sealed.wrapped_dek)
            .bind(&sealed.dek_nonce)
            .bind(&sealed.ciphertext)
            .bind(&sealed.nonce)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.invalidate();
        let snap = self.snapshot(PLATFORM).await?;
        snap.provider(&info.id)
            .cloned()
            .ok_or_else(|| CatalogError::UnknownProvider(info.id.clone()))
    }

    pub async fn upsert_model(&self, info: &ModelInfo) -> Result<CatalogModel, CatalogError> {
        if !is_label(&info.label) {
            return Err(CatalogError::BadLabel(info.label.clone()));
        }
        let (provider, model) = info.label.split_once(':').unwrap_or_default();
        let snap = self.snapshot(PLATFORM).await?;
        if snap.provider(provider).is_none() {
            return Err(CatalogError::UnknownProvider(provider.to_string()));
        }
        if info.context_window == 0 {
            return Err(CatalogError::Invalid("context_window must be > 0".into()));
        }
        let caps = info.capabilities.unwrap_or_default();
        let display = if info.display_name.trim().is_empty() {
            info.label.as_str()
        } else {
            info.display_name.trim()
        };
        let mut tx = self.platform_tx().await?;
        sqlx::query(
            "INSERT INTO models (tenant_id, label, provider_id, model, display_name, enabled, context_window, \
               input_price_micros, output_price_micros, supports_tools, supports_vision, supports_reasoning) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (tenant_id, label) DO UPDATE SET display_name = EXCLUDED.display_name, \
               enabled = EXCLUDED.enabled, context_window = EXCLUDED.context_window, \
               input_price_micros = EXCLUDED.input_price_micros, output_price_micros = EXCLUDED.output_price_micros, \
               supports_tools = EXCLUDED.supports_tools, supports_vision = EXCLUDED.supports_vision, \
               supports_reasoning = EXCLUDED.supports_reasoning",
        )
        .bind(PLATFORM)
        .bind(&info.label)
        .bind(provider)
        .bind(model)
        .bind(display)
        .bind(info.enabled)
        .bind(i32::try_from(info.context_window).unwrap_or(i32::MAX))
        .bind(i64::try_from(info.input_price_micros).unwrap_or(i64::MAX))
        .bind(i64::try_from(info.output_price_micros).unwrap_or(i64::MAX))
        .bind(caps.tools)
        .bind(caps.vision)
        .bind(caps.reasoning)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.invalidate();
        let snap = self.snapshot(PLATFORM).await?;
        snap.model(&info.label)
            .cloned()
            .ok_or_else(|| CatalogError::UnknownModel(info.label.clone()))
    }

    /// Applies the fields that are set.
    pub async fn patch_model(
        &self,
        patch: &pa_proto::v1::PatchModelRequest,
    ) -> Result<CatalogModel, CatalogError> {
        let snap = self.snapshot(PLATFORM).await?;
        let mut info = snap
            .model(&patch.label)
            .map(|m| m.info.clone())
            .ok_or_else(|| CatalogError::UnknownModel(patch.label.clone()))?;
        if let Some(enabled) = patch.enabled {
            info.enabled = enabled;
        }
        if let Some(window) = patch.context_window {
            info.context_window = window;
        }
        if let Some(price) = patch.input_price_micros {
            info.input_price_micros = price;
        }
        if let Some(price) = patch.output_price_micros {
            info.output_price_micros = price;
        }
        if let Some(name) = &patch.display_name {
            info.display_name = name.clone();
        }
        if let Some(caps) = patch.capabilities {
            info.capabilities = Some(caps);
        }
        self.upsert_model(&info).await
    }

    pub async fn set_policy(
        &self,
        tenant_id: &str,
        policy: &ClassificationPolicy,
    ) -> Result<(), CatalogError> {
        let classification = DataClassification::try_from(policy.classification)
            .ok()
            .filter(|c| *c != DataClassification::Unspecified)
            .ok_or_else(|| {
                CatalogError::Invalid(
                    "classification must be public, internal, confidential or restricted".into(),
                )
            })?;
        for tag in policy.required_tags.iter().chain(&policy.forbidden_tags) {
            validate_id("tag", tag)?;
        }
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant_id).await?;
        sqlx::query(
            "INSERT INTO policies (tenant_id, classification, required_tags, forbidden_tags) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, classification) DO UPDATE SET required_tags = EXCLUDED.required_tags, \
               forbidden_tags = EXCLUDED.forbidden_tags, updated_at = now()",
        )
        .bind(tenant_id)
        .bind(classification as i16)
        .bind(&policy.required_tags)
        .bind(&policy.forbidden_tags)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.invalidate();
        Ok(())
    }

    /// Adds tags to the platform vocabulary (from the declarative config).
    pub async fn add_known_tags(&self, tags: &[(String, String)]) -> Result<(), CatalogError> {
        let mut tx = self.platform_tx().await?;
        for (tag, description) in tags {
            validate_id("tag", tag)?;
            sqlx::query(
                "INSERT INTO known_tags (tenant_id, tag, description) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, tag) DO UPDATE SET description = EXCLUDED.description",
            )
            .bind(PLATFORM)
            .bind(tag)
            .bind(description)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.invalidate();
        Ok(())
    }
}

fn policies_of(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Policy>, sqlx::Error> {
    let mut policies = Vec::with_capacity(rows.len());
    for row in rows {
        let value: i16 = row.try_get("classification")?;
        // A row with a classification we do not know is skipped: no policy = refused.
        if let Ok(classification) = DataClassification::try_from(i32::from(value)) {
            policies.push(Policy {
                tenant_id: row.try_get("tenant_id")?,
                classification,
                required_tags: row.try_get("required_tags")?,
                forbidden_tags: row.try_get("forbidden_tags")?,
            });
        }
    }
    Ok(policies)
}

fn validate_id(kind: &str, id: &str) -> Result<(), CatalogError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        });
    if ok {
        Ok(())
    } else {
        Err(CatalogError::Invalid(format!(
            "{kind} {id:?} must be 1-64 characters of a-z 0-9 - _ ."
        )))
    }
}

pub fn is_label(label: &str) -> bool {
    match label.split_once(':') {
        Some((provider, model)) => {
            !provider.is_empty()
                && !model.is_empty()
                && label.len() <= 200
                && label.chars().all(|c| !c.is_control() && !c.is_whitespace())
        }
        None => false,
    }
}

#[cfg(test)]
pub mod test_support {
    use super::*;

    pub fn model(
        label: &str,
        provider: &str,
        tags: &[&str],
        price: u64,
        tools: bool,
    ) -> CatalogModel {
        CatalogModel {
            info: ModelInfo {
                label: label.into(),
                provider: provider.into(),
                model: label
                    .split_once(':')
                    .map(|(_, m)| m.to_string())
                    .unwrap_or_default(),
                display_name: label.into(),
                enabled: true,
                context_window: 8192,
                input_price_micros: price,
                output_price_micros: price,
                capabilities: Some(ModelCapabilities {
                    tools,
                    vision: false,
                    reasoning: false,
                }),
                provider_tags: tags.iter().map(|t| t.to_string()).collect(),
            },
            provider_kind: "openai_compatible".into(),
            provider_enabled: true,
        }
    }

    /// The platform defaults of migration 0002.
    pub fn snapshot(models: Vec<CatalogModel>) -> Snapshot {
        let policy = |c, req: &[&str], forb: &[&str]| Policy {
            tenant_id: PLATFORM.into(),
            classification: c,
            required_tags: req.iter().map(|t| t.to_string()).collect(),
            forbidden_tags: forb.iter().map(|t| t.to_string()).collect(),
        };
        Snapshot {
            providers: Vec::new(),
            models,
            policies: vec![
                policy(DataClassification::Public, &[], &[]),
                policy(DataClassification::Internal, &[], &["trains-on-data"]),
                policy(
                    DataClassification::Confidential,
                    &["zero-retention"],
                    &["trains-on-data"],
                ),
                policy(
                    DataClassification::Restricted,
                    &["local"],
                    &["trains-on-data"],
                ),
            ],
            known_tags: [
                "local",
                "self-hosted",
                "zero-retention",
                "eu-hosted",
                "us-hosted",
                "trains-on-data",
            ]
            .iter()
            .map(|t| (PLATFORM.to_string(), t.to_string()))
            .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_need_provider_and_model() {
        assert!(super::is_label("offline:echo"));
        assert!(super::is_label("openai:gpt-4o-mini"));
        assert!(!super::is_label("echo"));
        assert!(!super::is_label(":echo"));
        assert!(!super::is_label("a: b"));
    }
}
