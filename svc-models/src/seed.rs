//! The declarative catalog: a TOML file (`PA_MODELS_CONFIG`, default `models.toml` when it
//! exists) applied at every start, so an operator keeps providers, models, tags and policies in
//! git. Entries in the file are created or updated; what the file does not mention is left as
//! it is (admins may add more through the API).

use pa_proto::v1::{
    ClassificationPolicy, DataClassification, ModelCapabilities, ModelInfo, ProviderInfo,
};
use serde::Deserialize;

use crate::catalog::{Catalog, CatalogError, PLATFORM, Scope};
use crate::keys::{KeyEncryption, Secret};
use crate::relay::provider_key_aad;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ModelsFile {
    #[serde(default)]
    pub tags: Vec<TagEntry>,
    #[serde(default)]
    pub providers: Vec<ProviderEntry>,
    #[serde(default)]
    pub models: Vec<ModelEntry>,
    #[serde(default)]
    pub policies: Vec<PolicyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagEntry {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    pub id: String,
    pub kind: String,
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The environment variable holding the platform key (the key never goes in the file).
    #[serde(default)]
    pub api_key_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub label: String,
    #[serde(default)]
    pub display_name: String,
    pub context_window: u32,
    /// Price per 1M input tokens, in currency units (e.g. 0.15 = $0.15).
    #[serde(default)]
    pub input_price_per_million: f64,
    #[serde(default)]
    pub output_price_per_million: f64,
    /// Any of tools, vision, reasoning.
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEntry {
    pub classification: String,
    #[serde(default)]
    pub required_tags: Vec<String>,
    #[serde(default)]
    pub forbidden_tags: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid models file: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: {source}")]
    Catalog { path: String, source: CatalogError },
}

fn micros(price: f64) -> Result<u64, String> {
    if !(0.0..=1_000_000.0).contains(&price) || !price.is_finite() {
        return Err(format!("price {price} is out of range"));
    }
    Ok((price * 1_000_000.0).round() as u64)
}

fn classification(name: &str) -> Result<DataClassification, String> {
    match name {
        "public" => Ok(DataClassification::Public),
        "internal" => Ok(DataClassification::Internal),
        "confidential" => Ok(DataClassification::Confidential),
        "restricted" => Ok(DataClassification::Restricted),
        other => Err(format!(
            "classification {other:?} is not public, internal, confidential or restricted"
        )),
    }
}

pub fn parse(path: &str, text: &str) -> Result<ModelsFile, SeedError> {
    toml::from_str(text).map_err(|source| SeedError::Parse {
        path: path.to_string(),
        source,
    })
}

/// Applies the file to the catalog. Platform keys are read from the named environment
/// variables and stored encrypted.
pub async fn apply(
    catalog: &Catalog,
    enc: &KeyEncryption,
    path: &str,
    file: &ModelsFile,
) -> Result<(), SeedError> {
    let invalid = |message: String| SeedError::Invalid {
        path: path.to_string(),
        message,
    };
    let catalog_err = |source: CatalogError| SeedError::Catalog {
        path: path.to_string(),
        source,
    };
    let tags: Vec<(String, String)> = file
        .tags
        .iter()
        .map(|t| (t.name.clone(), t.description.clone()))
        .collect();
    catalog.add_known_tags(&tags).await.map_err(catalog_err)?;
    for p in &file.providers {
        let info = ProviderInfo {
            id: p.id.clone(),
            kind: p.kind.clone(),
            base_url: p.base_url.clone(),
            tags: p.tags.clone(),
            enabled: p.enabled,
            has_platform_key: false,
            scope: "platform".into(),
            display_name: if p.display_name.is_empty() {
                p.id.clone()
            } else {
                p.display_name.clone()
            },
        };
        let key = match &p.api_key_env {
            Some(var) => match std::env::var(var) {
                Ok(value) if !value.trim().is_empty() => Some(
                    enc.seal(
                        &Secret::new(value.trim()),
                        &provider_key_aad(PLATFORM, &p.id),
                    )
                    .map_err(|e| invalid(format!("provider {}: {e}", p.id)))?,
                ),
                _ => {
                    tracing::warn!(provider = %p.id, var, "platform key variable is not set; users need their own key");
                    None
                }
            },
            None => None,
        };
        catalog
            .upsert_provider(Scope::Platform, &info, key.as_ref())
            .await
            .map_err(catalog_err)?;
    }
    for m in &file.models {
        let mut caps = ModelCapabilities::default();
        for c in &m.capabilities {
            match c.as_str() {
                "tools" => caps.tools = true,
                "vision" => caps.vision = true,
                "reasoning" => caps.reasoning = true,
                other => {
                    return Err(invalid(format!(
                        "model {}: unknown capability {other:?}",
                        m.label
                    )));
                }
            }
        }
        let info = ModelInfo {
            label: m.label.clone(),
            provider: String::new(),
            model: String::new(),
            display_name: m.display_name.clone(),
            enabled: m.enabled,
            context_window: m.context_window,
            input_price_micros: micros(m.input_price_per_million)
                .map_err(|e| invalid(format!("model {}: {e}", m.label)))?,
            output_price_micros: micros(m.output_price_per_million)
                .map_err(|e| invalid(format!("model {}: {e}", m.label)))?,
            capabilities: Some(caps),
            provider_tags: Vec::new(),
            scope: "platform".into(),
            tenant_disabled: false,
        };
        catalog
            .upsert_model(Scope::Platform, &info)
            .await
            .map_err(catalog_err)?;
    }
    for p in &file.policies {
        let policy = ClassificationPolicy {
            classification: classification(&p.classification).map_err(invalid)? as i32,
            required_tags: p.required_tags.clone(),
            forbidden_tags: p.forbidden_tags.clone(),
            scope: "platform".into(),
        };
        catalog
            .set_policy(Scope::Platform, &policy)
            .await
            .map_err(catalog_err)?;
    }
    tracing::info!(
        path,
        providers = file.providers.len(),
        models = file.models.len(),
        policies = file.policies.len(),
        "catalog file applied"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../../deploy/models.example.toml");
        let file = super::parse("models.example.toml", text).unwrap();
        assert!(!file.providers.is_empty() && !file.models.is_empty() && !file.policies.is_empty());
        assert!(
            super::parse(
                "x",
                "[[models]]\nlabel = 'a:b'\ncontext_window = 1\nsurprise = 1\n"
            )
            .is_err()
        );
    }

    #[test]
    fn prices_are_micros_per_million() {
        assert_eq!(super::micros(0.15).unwrap(), 150_000);
        assert!(super::micros(-1.0).is_err());
    }
}
