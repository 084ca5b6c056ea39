//! The model catalog (schema `models`), and resolving a requested model against it.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use pa_kit::PaError;
use pa_proto::v1::{ModelCapabilities, ModelInfo, ModelSelection};
use sqlx::{PgPool, Row};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("model label {0:?} is not of the form provider:model")]
    BadLabel(String),
    #[error("model {0} is not in the catalog")]
    UnknownModel(String),
    #[error("model {0} is disabled by the administrator")]
    Disabled(String),
    #[error("no enabled model is available")]
    NoModel,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<CatalogError> for PaError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::BadLabel(_) => PaError::bad_request(err.to_string()),
            CatalogError::UnknownModel(_) => PaError::not_found(err.to_string()),
            CatalogError::Disabled(_) => {
                PaError::new(pa_kit::ErrorCode::FailedPrecondition, err.to_string())
            }
            CatalogError::NoModel => PaError::unavailable(err.to_string()),
            CatalogError::Db(e) => e.into(),
        }
    }
}

/// A catalog entry with what calling it needs.
#[derive(Clone, Debug)]
pub struct CatalogModel {
    pub info: ModelInfo,
    pub provider_kind: String,
}

/// How long a read of the catalog is reused: model calls are the hot path and the catalog
/// changes rarely.
const CACHE_TTL: Duration = Duration::from_secs(2);

/// When it was read, and every model.
type CachedCatalog = (Instant, Arc<Vec<CatalogModel>>);

#[derive(Clone)]
pub struct Catalog {
    pool: PgPool,
    cache: Arc<RwLock<Option<CachedCatalog>>>,
}

const SELECT: &str = "SELECT m.label, m.provider_id, m.model, m.display_name, m.enabled, \
    m.context_window, m.input_price_micros, m.output_price_micros, m.supports_tools, \
    m.supports_vision, m.supports_reasoning, p.tags, p.kind \
    FROM models m JOIN providers p ON p.tenant_id = m.tenant_id AND p.id = m.provider_id";

fn from_row(row: &sqlx::postgres::PgRow) -> Result<CatalogModel, sqlx::Error> {
    Ok(CatalogModel {
        info: ModelInfo {
            label: row.try_get("label")?,
            provider: row.try_get("provider_id")?,
            model: row.try_get("model")?,
            display_name: row.try_get("display_name")?,
            enabled: row.try_get("enabled")?,
            context_window: row.try_get::<i32, _>("context_window")?.max(0) as u32,
            input_price_micros: row.try_get::<i64, _>("input_price_micros")?.max(0) as u64,
            output_price_micros: row.try_get::<i64, _>("output_price_micros")?.max(0) as u64,
            capabilities: Some(ModelCapabilities {
                tools: row.try_get("supports_tools")?,
                vision: row.try_get("supports_vision")?,
                reasoning: row.try_get("supports_reasoning")?,
            }),
            provider_tags: row.try_get("tags")?,
        },
        provider_kind: row.try_get("kind")?,
    })
}

impl Catalog {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Arc::default(),
        }
    }

    /// Drops the cached catalog (after an admin edit).
    #[allow(dead_code)]
    pub fn invalidate(&self) {
        if let Ok(mut cache) = self.cache.write() {
            *cache = None;
        }
    }

    /// Every platform model, cheapest first (ties by label).
    async fn all(&self) -> Result<Arc<Vec<CatalogModel>>, CatalogError> {
        if let Ok(cache) = self.cache.read()
            && let Some((at, models)) = cache.as_ref()
            && at.elapsed() < CACHE_TTL
        {
            return Ok(models.clone());
        }
        let sql = format!(
            "{SELECT} WHERE m.tenant_id = '_platform' \
             ORDER BY m.input_price_micros + m.output_price_micros, m.label"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        let models = Arc::new(rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?);
        if let Ok(mut cache) = self.cache.write() {
            *cache = Some((Instant::now(), models.clone()));
        }
        Ok(models)
    }

    pub async fn enabled_models(&self) -> Result<Vec<CatalogModel>, CatalogError> {
        Ok(self
            .all()
            .await?
            .iter()
            .filter(|m| m.info.enabled)
            .cloned()
            .collect())
    }

    pub async fn get(&self, label: &str) -> Result<CatalogModel, CatalogError> {
        if !is_label(label) {
            return Err(CatalogError::BadLabel(label.to_string()));
        }
        let model = self
            .all()
            .await?
            .iter()
            .find(|m| m.info.label == label)
            .cloned()
            .ok_or_else(|| CatalogError::UnknownModel(label.to_string()))?;
        if !model.info.enabled {
            return Err(CatalogError::Disabled(label.to_string()));
        }
        Ok(model)
    }

    /// `auto` picks the cheapest enabled model (ties by label, so it is deterministic) and says
    /// why; an explicit label must name an enabled catalog model.
    pub async fn resolve(&self, requested: &str) -> Result<ModelSelection, CatalogError> {
        let requested = requested.trim();
        if requested.is_empty() || requested == "auto" {
            let models = self.enabled_models().await?;
            let chosen = models.first().ok_or(CatalogError::NoModel)?;
            let fallback_labels = models
                .iter()
                .skip(1)
                .map(|m| m.info.label.clone())
                .collect();
            return Ok(ModelSelection {
                requested: "auto".into(),
                resolved_label: chosen.info.label.clone(),
                provider_tags: chosen.info.provider_tags.clone(),
                reason: format!(
                    "auto: cheapest of {} enabled model(s) available to you",
                    models.len()
                ),
                fallback_labels,
            });
        }
        let model = self.get(requested).await?;
        Ok(ModelSelection {
            requested: requested.to_string(),
            resolved_label: model.info.label.clone(),
            provider_tags: model.info.provider_tags.clone(),
            reason: "explicit".into(),
            fallback_labels: Vec::new(),
        })
    }
}

fn is_label(label: &str) -> bool {
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
