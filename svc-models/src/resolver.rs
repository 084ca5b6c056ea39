//! Resolve: turns "auto" or "provider:model" into the model a run uses, with its fallback
//! chain and the reason — through the governance gate, fail closed.

use pa_kit::{ErrorCode, PaError};
use pa_proto::v1::{Identity, ModelSelection, ResolveModelRequest};

use crate::catalog::CatalogModel;
use crate::governance::{AutoError, classification_of, enforce_classification, pick_auto_model};
use crate::relay::Relay;

impl From<AutoError> for PaError {
    fn from(err: AutoError) -> Self {
        match err {
            AutoError::NothingAllowed { .. } => {
                PaError::new(ErrorCode::PolicyDenied, err.to_string())
            }
            AutoError::NothingFits { .. } => {
                PaError::new(ErrorCode::FailedPrecondition, err.to_string())
            }
        }
    }
}

pub async fn resolve(
    relay: &Relay,
    identity: &Identity,
    request: &ResolveModelRequest,
) -> Result<ModelSelection, PaError> {
    let snapshot = relay.catalog.snapshot(&identity.tenant_id).await?;
    let classification = classification_of(request.classification)
        .map_err(|e| PaError::new(ErrorCode::PolicyDenied, e.to_string()))?;
    let needs = request.needs.unwrap_or_default();
    let callable = relay.callable(identity, &snapshot).await?;
    let callable = |m: &CatalogModel| callable.allows(m);
    let requested = request.requested.trim();
    if requested.is_empty() || requested == "auto" {
        let ranked = pick_auto_model(&snapshot, identity, classification, &needs, callable)?;
        let model = snapshot.model(&ranked.chosen);
        return Ok(ModelSelection {
            requested: "auto".into(),
            resolved_label: ranked.chosen,
            provider_tags: model
                .map(|m| m.info.provider_tags.clone())
                .unwrap_or_default(),
            reason: ranked.reason,
            fallback_labels: ranked.fallbacks,
        });
    }
    let model = snapshot.usable_model(requested)?;
    enforce_classification(&snapshot, identity, classification, model)
        .map_err(|e| PaError::new(ErrorCode::PolicyDenied, e.to_string()))?;
    if let Some(provider) = snapshot.provider(&model.info.provider) {
        // Fails early and clearly when there is no key to call it with.
        relay.key_for(identity, provider).await?;
    }
    let fallback_labels =
        match pick_auto_model(&snapshot, identity, classification, &needs, callable) {
            Ok(ranked) => std::iter::once(ranked.chosen)
                .chain(ranked.fallbacks)
                .filter(|l| *l != model.info.label)
                .filter(|l| {
                    model.provider_kind == "offline"
                        || snapshot
                            .model(l)
                            .is_some_and(|m| m.provider_kind != "offline")
                })
                .collect::<Vec<_>>(),
            Err(_) => Vec::new(),
        };
    // Prefer other providers first, as for auto.
    let ranked: Vec<&CatalogModel> = fallback_labels
        .iter()
        .filter_map(|l| snapshot.model(l))
        .collect();
    Ok(ModelSelection {
        requested: requested.to_string(),
        resolved_label: model.info.label.clone(),
        provider_tags: model.info.provider_tags.clone(),
        reason: "explicit: the requested model".into(),
        fallback_labels: crate::governance::provider_diverse(&model.info.provider, &ranked),
    })
}
