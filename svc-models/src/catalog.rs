//! The model catalog (schema `models`): providers with their tags and (encrypted) platform
//! keys, models, the tag vocabulary and classification policies. Reads go through a short-lived
//! in-memory [`Snapshot`]: model calls are the hot path and the catalog changes rarely; every
//! admin write through this instance drops the snapshots at once.
//!
//! Row-level security (migration 0004): platform rows (`_platform`) are readable by everyone;
//! a tenant's own providers, models, overlays, policy overrides and tags only inside that
//! tenant's transaction. So a snapshot is per tenant: the shared platform rows plus that
//! tenant's own, never another tenant's.
//!
//! Who may write what (ADR 0130) is decided by the caller through [`Scope`]: platform rows only
//! in [`Scope::Platform`] (platform administrators), a tenant's rows only in its own
//! [`Scope::Tenant`]. A tenant's provider never shadows a platform one (ids are refused at
//! write time, and a platform provider added later wins in the snapshot).

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
/// Caps on administrator input (documented in the OpenAPI document).
pub const MAX_TAGS: usize = 32;
pub const MAX_DISPLAY_NAME: usize = 200;
pub const MAX_BASE_URL: usize = 2048;
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
    /// A tenant administrator touching a platform row.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Whose rows a write touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// The shared catalog (platform administrators only).
    Platform,
    /// One tenant's own rows.
    Tenant(&'a str),
}

impl Scope<'_> {
    pub fn tenant(&self) -> &str {
        match self {
            Scope::Platform => PLATFORM,
            Scope::Tenant(t) => t,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Scope::Platform => "platform",
            Scope::Tenant(_) => "tenant",
        }
    }
}

/// "platform" or "tenant" for a row's tenant id.
pub fn scope_name(tenant_id: &str) -> &'static str {
    if tenant_id == PLATFORM {
        "platform"
    } else {
        "tenant"
    }
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
            CatalogError::Forbidden(_) => {
                PaError::new(pa_kit::ErrorCode::Forbidden, err.to_string())
            }
            CatalogError::Conflict(_) => PaError::new(pa_kit::ErrorCode::Conflict, err.to_string()),
            CatalogError::Db(e) => e.into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Provider {
    /// `_platform` for the shared catalog, else the owning tenant.
    pub tenant_id: String,
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
            scope: scope_name(&self.tenant_id).into(),
        }
    }

    /// Unique across tenants (two tenants may both own a provider `local`): circuit breakers
    /// and the like key on it, so one tenant's failing server never trips another's.
    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant_id, self.id)
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

    /// Enabled models of enabled providers, not switched off for the tenant.
    pub fn usable_models(&self) -> impl Iterator<Item = &CatalogModel> {
        self.models.iter().filter(|m| m.usable())
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
        if !model.usable() {
            return Err(CatalogError::Disabled(label.to_string()));
        }
        Ok(model)
    }
}

impl CatalogModel {
    /// Enabled, its provider enabled, and not switched off by the tenant's overlay.
    pub fn usable(&self) -> bool {
        self.info.enabled && self.provider_enabled && !self.info.tenant_disabled
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
        let own = self.load_tenant(tenant).await?;
        let snap = if own.is_empty() {
            platform
        } else {
            Arc::new(merge(&platform, own))
        };
        self.remember(tenant, &snap);
        Ok(snap)
    }

    /// A tenant's own rows (providers, models, overlays, policy overrides, tags), read in its
    /// transaction.
    async fn load_tenant(&self, tenant: &str) -> Result<TenantRows, CatalogError> {
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant).await?;
        let (providers, models) = load_catalog_rows(&mut tx, tenant).await?;
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
        let overlays = sqlx::query_as::<_, (String, bool)>(
            "SELECT label, enabled FROM model_overlays WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TenantRows {
            providers,
            models,
            overlays,
            policies: policies_of(&policy_rows)?,
            known_tags,
        })
    }

    /// The platform rows: without a tenant setting, the policies admit `_platform` rows alone.
    /// A read: when the connection breaks under it, it is read once more on a fresh one.
    async fn load_platform(&self) -> Result<Snapshot, CatalogError> {
        match self.load_platform_once().await {
            Err(CatalogError::Db(err)) if pa_kit::db::worth_retrying(&err) => {
                pa_kit::db::note_connection_error();
                self.load_platform_once().await
            }
            other => other,
        }
    }

    async fn load_platform_once(&self) -> Result<Snapshot, CatalogError> {
        let mut conn = self.pool.acquire().await?;
        let (providers, models) = load_catalog_rows(&mut conn, PLATFORM).await?;
        drop(conn);
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

    /// A transaction allowed to write `scope`'s rows (the policies' WITH CHECK).
    async fn scope_tx(
        &self,
        scope: Scope<'_>,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        pa_kit::db::tenant_tx(&self.pool, scope.tenant()).await
    }

    // ---- administration --------------------------------------------------------------
    // The caller decides the scope from the caller's role (svc-models' service layer); here
    // every write stays inside it: a tenant scope never writes or changes a platform row.

    /// Creates or updates a provider of `scope`; `key` replaces the stored key when given.
    /// A tenant cannot take an id the platform uses (409), so a tenant provider never stands
    /// in for a shared one.
    pub async fn upsert_provider(
        &self,
        scope: Scope<'_>,
        info: &ProviderInfo,
        key: Option<&Sealed>,
    ) -> Result<Provider, CatalogError> {
        validate_id("provider id", &info.id)?;
        match info.kind.as_str() {
            "offline" if scope != Scope::Platform => {
                return Err(CatalogError::Invalid(
                    "a tenant provider must be openai_compatible".into(),
                ));
            }
            "offline" => {}
            "openai_compatible" => {
                let url = info.base_url.trim();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(CatalogError::Invalid(
                        "an openai_compatible provider needs an http(s) base_url".into(),
                    ));
                }
                if url.len() > MAX_BASE_URL {
                    return Err(CatalogError::Invalid(format!(
                        "base_url is longer than {MAX_BASE_URL} characters"
                    )));
                }
            }
            other => {
                return Err(CatalogError::Invalid(format!(
                    "provider kind {other:?} is not one of offline, openai_compatible"
                )));
            }
        }
        if info.tags.len() > MAX_TAGS {
            return Err(CatalogError::Invalid(format!(
                "at most {MAX_TAGS} tags per provider"
            )));
        }
        for tag in &info.tags {
            validate_id("tag", tag)?;
        }
        if info.display_name.chars().count() > MAX_DISPLAY_NAME {
            return Err(CatalogError::Invalid(format!(
                "display_name is longer than {MAX_DISPLAY_NAME} characters"
            )));
        }
        if let Scope::Tenant(tenant) = scope {
            let platform = self.snapshot(PLATFORM).await?;
            if platform.provider(&info.id).is_some() {
                return Err(CatalogError::Conflict(format!(
                    "provider id {:?} belongs to the platform catalog; choose another id for \
                     your organisation's provider (tenant {tenant})",
                    info.id
                )));
            }
        }
        let tenant = scope.tenant();
        let mut tx = self.scope_tx(scope).await?;
        sqlx::query(
            "INSERT INTO providers (tenant_id, id, kind, base_url, tags, enabled, display_name) \
             VALUES ($1, $2, $3, NULLIF($4, ''), $5, $6, $7) \
             ON CONFLICT (tenant_id, id) DO UPDATE SET kind = EXCLUDED.kind, base_url = EXCLUDED.base_url, \
               tags = EXCLUDED.tags, enabled = EXCLUDED.enabled, display_name = EXCLUDED.display_name, \
               updated_at = now()",
        )
        .bind(tenant)
        .bind(&info.id)
        .bind(&info.kind)
        .bind(info.base_url.trim())
        .bind(&info.tags)
        .bind(info.enabled)
        .bind(&info.display_name)
        .execute(&mut *tx)
        .await?;
        if let Some(sealed) = key {
            sqlx::query(
                "UPDATE providers SET platform_kek_id = $3, platform_wrapped_dek = $4, platform_dek_nonce = $5, \
                   platform_ciphertext = $6, platform_nonce = $7, updated_at = now() \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant)
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
        let snap = self.snapshot(tenant).await?;
        snap.provider(&info.id)
            .filter(|p| p.tenant_id == tenant)
            .cloned()
            .ok_or_else(|| CatalogError::UnknownProvider(info.id.clone()))
    }

    /// Creates or updates a model of `scope`. A tenant's models live on the tenant's own
    /// providers only (a platform provider's key is the platform's to spend).
    pub async fn upsert_model(
        &self,
        scope: Scope<'_>,
        info: &ModelInfo,
    ) -> Result<CatalogModel, CatalogError> {
        if !is_label(&info.label) {
            return Err(CatalogError::BadLabel(info.label.clone()));
        }
        let (provider, model) = info.label.split_once(':').unwrap_or_default();
        let tenant = scope.tenant();
        let snap = self.snapshot(tenant).await?;
        match snap.provider(provider) {
            None => return Err(CatalogError::UnknownProvider(provider.to_string())),
            Some(p) if p.tenant_id != tenant => {
                return Err(CatalogError::Forbidden(format!(
                    "provider {provider} belongs to the platform catalog: only a platform \
                     administrator adds its models"
                )));
            }
            Some(_) => {}
        }
        if info.context_window == 0 {
            return Err(CatalogError::Invalid("context_window must be > 0".into()));
        }
        if info.display_name.chars().count() > MAX_DISPLAY_NAME {
            return Err(CatalogError::Invalid(format!(
                "display_name is longer than {MAX_DISPLAY_NAME} characters"
            )));
        }
        let caps = info.capabilities.unwrap_or_default();
        let display = if info.display_name.trim().is_empty() {
            info.label.as_str()
        } else {
            info.display_name.trim()
        };
        let mut tx = self.scope_tx(scope).await?;
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
        .bind(tenant)
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
        let snap = self.snapshot(tenant).await?;
        snap.model(&info.label)
            .cloned()
            .ok_or_else(|| CatalogError::UnknownModel(info.label.clone()))
    }

    /// Applies the fields that are set, to a row of `scope`: a tenant administrator patching a
    /// platform model is refused (403; the overlay is [`Catalog::set_overlay`]).
    pub async fn patch_model(
        &self,
        scope: Scope<'_>,
        patch: &pa_proto::v1::PatchModelRequest,
    ) -> Result<CatalogModel, CatalogError> {
        let snap = self.snapshot(scope.tenant()).await?;
        let model = snap
            .model(&patch.label)
            .ok_or_else(|| CatalogError::UnknownModel(patch.label.clone()))?;
        if model.info.scope != scope.name() {
            return Err(CatalogError::Forbidden(format!(
                "model {} is a {} model; {}",
                patch.label,
                model.info.scope,
                if scope == Scope::Platform {
                    "a tenant's own model is changed by its tenant's administrators"
                } else {
                    "only a platform administrator changes it (switch it off for your \
                     organisation with PUT /v1/admin/model-overlays/{label})"
                }
            )));
        }
        let mut info = model.info.clone();
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
        self.upsert_model(scope, &info).await
    }

    /// Switches a platform model on or off for one tenant (the overlay); the platform row is
    /// not touched. A platform model the platform disabled stays disabled.
    pub async fn set_overlay(
        &self,
        tenant: &str,
        actor: &str,
        label: &str,
        enabled: bool,
    ) -> Result<CatalogModel, CatalogError> {
        if tenant == PLATFORM || tenant.is_empty() {
            return Err(CatalogError::Invalid(
                "an overlay belongs to a tenant".into(),
            ));
        }
        if !is_label(label) {
            return Err(CatalogError::BadLabel(label.to_string()));
        }
        let snap = self.snapshot(tenant).await?;
        match snap.model(label) {
            None => return Err(CatalogError::UnknownModel(label.to_string())),
            Some(m) if m.info.scope != "platform" => {
                return Err(CatalogError::Invalid(format!(
                    "{label} is your organisation's own model: PATCH it instead"
                )));
            }
            Some(_) => {}
        }
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant).await?;
        sqlx::query(
            "INSERT INTO model_overlays (tenant_id, label, enabled, updated_by) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, label) DO UPDATE SET enabled = EXCLUDED.enabled, \
               updated_by = EXCLUDED.updated_by, updated_at = now()",
        )
        .bind(tenant)
        .bind(label)
        .bind(enabled)
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.invalidate();
        let snap = self.snapshot(tenant).await?;
        snap.model(label)
            .cloned()
            .ok_or_else(|| CatalogError::UnknownModel(label.to_string()))
    }

    /// Sets `scope`'s policy for one classification (a tenant's overrides the platform's).
    pub async fn set_policy(
        &self,
        scope: Scope<'_>,
        policy: &ClassificationPolicy,
    ) -> Result<(), CatalogError> {
        let tenant_id = scope.tenant();
        let classification = DataClassification::try_from(policy.classification)
            .ok()
            .filter(|c| *c != DataClassification::Unspecified)
            .ok_or_else(|| {
                CatalogError::Invalid(
                    "classification must be public, internal, confidential or restricted".into(),
                )
            })?;
        if policy.required_tags.len() + policy.forbidden_tags.len() > 2 * MAX_TAGS {
            return Err(CatalogError::Invalid(format!(
                "at most {MAX_TAGS} required and {MAX_TAGS} forbidden tags"
            )));
        }
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
        let mut tx = self.scope_tx(Scope::Platform).await?;
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

/// One tenant's own rows, to merge over the platform's.
struct TenantRows {
    providers: Vec<Provider>,
    models: Vec<CatalogModel>,
    /// (label, enabled) of platform models.
    overlays: Vec<(String, bool)>,
    policies: Vec<Policy>,
    known_tags: Vec<(String, String)>,
}

impl TenantRows {
    fn is_empty(&self) -> bool {
        self.providers.is_empty()
            && self.models.is_empty()
            && self.overlays.is_empty()
            && self.policies.is_empty()
            && self.known_tags.is_empty()
    }
}

/// The platform snapshot with a tenant's rows over it. A tenant provider (and its models) whose
/// id a platform provider has is left out: the platform's wins, so no tenant can stand in for
/// a shared provider, not even inside its own tenant.
fn merge(platform: &Snapshot, own: TenantRows) -> Snapshot {
    let mut snap = platform.clone();
    let shadowed = |id: &str| platform.providers.iter().any(|p| p.id == id);
    for provider in own.providers {
        if shadowed(&provider.id) {
            tracing::warn!(tenant = %provider.tenant_id, provider = %provider.id,
                "a tenant provider has the id of a platform provider; the platform's is used");
        } else {
            snap.providers.push(provider);
        }
    }
    snap.models.extend(
        own.models
            .into_iter()
            .filter(|m| !shadowed(&m.info.provider)),
    );
    for (label, enabled) in own.overlays {
        if let Some(m) = snap
            .models
            .iter_mut()
            .find(|m| m.info.label == label && m.info.scope == "platform")
        {
            m.info.tenant_disabled = !enabled;
        }
    }
    snap.models.sort_by(|a, b| {
        let price = |m: &CatalogModel| {
            m.info
                .input_price_micros
                .saturating_add(m.info.output_price_micros)
        };
        price(a)
            .cmp(&price(b))
            .then_with(|| a.info.label.cmp(&b.info.label))
    });
    snap.policies.extend(own.policies);
    snap.known_tags.extend(own.known_tags);
    snap
}

/// The providers and models of one tenant (or of the platform), on a connection whose tenant
/// setting admits them.
async fn load_catalog_rows(
    conn: &mut sqlx::PgConnection,
    tenant: &str,
) -> Result<(Vec<Provider>, Vec<CatalogModel>), sqlx::Error> {
    let provider_rows = sqlx::query(
        "SELECT id, kind, COALESCE(base_url, '') AS base_url, tags, enabled, display_name, \
           platform_kek_id, platform_wrapped_dek, platform_dek_nonce, platform_ciphertext, platform_nonce \
         FROM providers WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await?;
    let providers = provider_rows
        .iter()
        .map(|row| {
            Ok(Provider {
                tenant_id: tenant.to_string(),
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
    .bind(tenant)
    .fetch_all(&mut *conn)
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
                scope: scope_name(tenant).into(),
                tenant_disabled: false,
            },
            provider_kind: provider.map(|p| p.kind.clone()).unwrap_or_default(),
            provider_enabled: provider.is_some_and(|p| p.enabled),
        });
    }
    Ok((providers, models))
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
                scope: "platform".into(),
                tenant_disabled: false,
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

    use super::test_support::{model, snapshot};
    use super::*;

    fn provider(tenant: &str, id: &str, url: &str) -> Provider {
        Provider {
            tenant_id: tenant.into(),
            id: id.into(),
            kind: "openai_compatible".into(),
            base_url: url.into(),
            tags: vec![],
            enabled: true,
            display_name: id.into(),
            platform_key: None,
        }
    }

    fn tenant_model(label: &str, provider: &str) -> CatalogModel {
        let mut m = model(label, provider, &[], 1, false);
        m.info.scope = "tenant".into();
        m
    }

    #[test]
    fn a_tenant_never_stands_in_for_a_platform_provider() {
        let mut platform = snapshot(vec![model("shared:m", "shared", &[], 5, false)]);
        platform.providers = vec![provider(PLATFORM, "shared", "https://shared.example/v1")];
        let own = TenantRows {
            providers: vec![
                provider("acme", "shared", "http://evil.example/v1"),
                provider("acme", "ours", "https://ours.example/v1"),
            ],
            models: vec![
                tenant_model("shared:other", "shared"),
                tenant_model("ours:m", "ours"),
            ],
            overlays: vec![("shared:m".into(), false), ("ours:m".into(), false)],
            policies: vec![],
            known_tags: vec![],
        };
        let merged = merge(&platform, own);
        let shared = merged
            .provider("shared")
            .map(|p| (p.tenant_id.as_str(), p.base_url.as_str()));
        assert_eq!(shared, Some((PLATFORM, "https://shared.example/v1")));
        assert!(
            merged.model("shared:other").is_none(),
            "a model of a shadowed id is dropped"
        );
        assert_eq!(
            merged.provider("ours").map(|p| p.key()),
            Some("acme/ours".into())
        );
        // The overlay switches the platform model off for the tenant and leaves the row enabled;
        // it never applies to the tenant's own models (those are patched directly).
        let shared_m = merged
            .model("shared:m")
            .map(|m| m.info.clone())
            .unwrap_or_default();
        assert!(shared_m.enabled && shared_m.tenant_disabled);
        assert!(merged.usable_model("shared:m").is_err());
        assert!(merged.usable_model("ours:m").is_ok());
        // The platform snapshot itself is untouched.
        assert!(platform.usable_model("shared:m").is_ok());
    }
}
