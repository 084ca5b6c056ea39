//! Governance: which models a chat may use. `enforce_classification` is the single fail-closed
//! gate — a chat's data classification against the model's provider tags. Any doubt (no policy,
//! a tag outside the known vocabulary, an unknown classification) refuses the model.
//!
//! `pick_auto_model` ranks the models that pass the gate and meet the request's needs.

use std::collections::HashSet;

use pa_proto::v1::{DataClassification, Identity, ModelNeeds};

use crate::catalog::{CatalogModel, Snapshot};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GovernanceError {
    #[error("no governance policy covers {0} data, so no model may be used")]
    MissingPolicy(&'static str),
    #[error("{label} carries provider tag {tag:?}, which governance does not know")]
    UnknownTag { label: String, tag: String },
    #[error(
        "{label} may not be used for {classification} data: it lacks the required tag(s) {missing:?}"
    )]
    MissingRequiredTags {
        label: String,
        classification: &'static str,
        missing: Vec<String>,
    },
    #[error(
        "{label} may not be used for {classification} data: its provider is tagged {forbidden:?}"
    )]
    ForbiddenTags {
        label: String,
        classification: &'static str,
        forbidden: Vec<String>,
    },
    #[error("the chat's data classification is not valid")]
    UnknownClassification,
}

pub fn classification_name(c: DataClassification) -> &'static str {
    match c {
        DataClassification::Public => "public",
        DataClassification::Internal | DataClassification::Unspecified => "internal",
        DataClassification::Confidential => "confidential",
        DataClassification::Restricted => "restricted",
    }
}

/// Unspecified is treated as internal (the default of a new chat); anything else unknown fails.
pub fn classification_of(value: i32) -> Result<DataClassification, GovernanceError> {
    match DataClassification::try_from(value) {
        Ok(DataClassification::Unspecified) => Ok(DataClassification::Internal),
        Ok(c) => Ok(c),
        Err(_) => Err(GovernanceError::UnknownClassification),
    }
}

/// The gate. `identity` selects the tenant's policies (a tenant policy overrides the platform's).
pub fn enforce_classification(
    snapshot: &Snapshot,
    identity: &Identity,
    classification: DataClassification,
    model: &CatalogModel,
) -> Result<(), GovernanceError> {
    let name = classification_name(classification);
    let policy = snapshot
        .policy(&identity.tenant_id, classification)
        .ok_or(GovernanceError::MissingPolicy(name))?;
    let tags: HashSet<&str> = model
        .info
        .provider_tags
        .iter()
        .map(String::as_str)
        .collect();
    if let Some(tag) = tags
        .iter()
        .find(|t| !snapshot.is_known_tag(&identity.tenant_id, t))
    {
        return Err(GovernanceError::UnknownTag {
            label: model.info.label.clone(),
            tag: (*tag).to_string(),
        });
    }
    let missing: Vec<String> = policy
        .required_tags
        .iter()
        .filter(|t| !tags.contains(t.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(GovernanceError::MissingRequiredTags {
            label: model.info.label.clone(),
            classification: name,
            missing,
        });
    }
    let forbidden: Vec<String> = policy
        .forbidden_tags
        .iter()
        .filter(|t| tags.contains(t.as_str()))
        .cloned()
        .collect();
    if !forbidden.is_empty() {
        return Err(GovernanceError::ForbiddenTags {
            label: model.info.label.clone(),
            classification: name,
            forbidden,
        });
    }
    Ok(())
}

/// Whether a model can serve a request with these needs.
pub fn meets_needs(model: &CatalogModel, needs: &ModelNeeds) -> bool {
    let caps = model.info.capabilities.unwrap_or_default();
    (!needs.tools || caps.tools)
        && (!needs.vision || caps.vision)
        && (!needs.reasoning || caps.reasoning)
        && model.info.context_window >= needs.min_context_window
}

/// The outcome of ranking: the chosen model, why, and the fallback chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked {
    pub chosen: String,
    pub reason: String,
    pub fallbacks: Vec<String>,
}

fn needs_text(needs: &ModelNeeds) -> String {
    let mut parts = Vec::new();
    if needs.tools {
        parts.push("tools".to_string());
    }
    if needs.vision {
        parts.push("vision".to_string());
    }
    if needs.reasoning {
        parts.push("reasoning".to_string());
    }
    if needs.min_context_window > 0 {
        parts.push(format!("context >= {}", needs.min_context_window));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// Orders fallbacks so that each next one prefers a provider not tried yet (a provider outage
/// takes all its models down together), keeping rank order otherwise.
pub fn provider_diverse(chosen_provider: &str, ranked: &[&CatalogModel]) -> Vec<String> {
    let mut used: Vec<&str> = vec![chosen_provider];
    let mut rest: Vec<&CatalogModel> = ranked.to_vec();
    let mut out = Vec::new();
    while !rest.is_empty() {
        let pos = rest
            .iter()
            .position(|m| !used.contains(&m.info.provider.as_str()))
            .unwrap_or(0);
        let next = rest.remove(pos);
        used.push(next.info.provider.as_str());
        out.push(next.info.label.clone());
    }
    out
}

/// `auto`: among enabled models that pass the gate and meet the needs, the cheapest (input +
/// output price per 1M tokens; ties by label) wins. Deterministic, and explained.
/// `callable` says whether the caller could call a model at all (a key exists for it).
pub fn pick_auto_model(
    snapshot: &Snapshot,
    identity: &Identity,
    classification: DataClassification,
    needs: &ModelNeeds,
    callable: impl Fn(&CatalogModel) -> bool,
) -> Result<Ranked, AutoError> {
    let enabled: Vec<&CatalogModel> = snapshot.usable_models().filter(|m| callable(m)).collect();
    let allowed: Vec<&CatalogModel> = enabled
        .iter()
        .copied()
        .filter(|m| enforce_classification(snapshot, identity, classification, m).is_ok())
        .collect();
    let mut fit: Vec<&CatalogModel> = allowed
        .iter()
        .copied()
        .filter(|m| meets_needs(m, needs))
        .collect();
    // The offline model is a stand-in, not a choice: once a real model qualifies it neither wins
    // `auto` (it costs nothing) nor serves as a fallback.
    if fit.iter().any(|m| m.provider_kind != "offline") {
        fit.retain(|m| m.provider_kind != "offline");
    }
    fit.sort_by(|a, b| {
        let price = |m: &CatalogModel| m.info.input_price_micros + m.info.output_price_micros;
        price(a)
            .cmp(&price(b))
            .then_with(|| a.info.label.cmp(&b.info.label))
    });
    let Some(chosen) = fit.first() else {
        return Err(if allowed.is_empty() {
            AutoError::NothingAllowed {
                classification: classification_name(classification),
                enabled: enabled.len(),
            }
        } else {
            AutoError::NothingFits {
                needs: needs_text(needs),
                allowed: allowed.len(),
            }
        });
    };
    Ok(Ranked {
        chosen: chosen.info.label.clone(),
        reason: format!(
            "auto: cheapest of {} model(s) allowed for {} data that meet the needs ({})",
            fit.len(),
            classification_name(classification),
            needs_text(needs)
        ),
        fallbacks: provider_diverse(&chosen.info.provider, &fit[1..]),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AutoError {
    #[error(
        "no enabled model is allowed for {classification} data ({enabled} enabled model(s) checked)"
    )]
    NothingAllowed {
        classification: &'static str,
        enabled: usize,
    },
    #[error("no allowed model meets the needs ({needs}); {allowed} allowed model(s) checked")]
    NothingFits { needs: String, allowed: usize },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_support::{model, snapshot};

    fn alice() -> Identity {
        Identity {
            tenant_id: "t".into(),
            user_id: "alice".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_gate_follows_the_policy_and_fails_closed() {
        let snap = snapshot(vec![
            model("a:local", "a", &["local", "zero-retention"], 1, false),
            model("b:cloud", "b", &["us-hosted", "trains-on-data"], 1, false),
            model("c:odd", "c", &["mystery"], 1, false),
        ]);
        let local = &snap.models[0];
        let cloud = &snap.models[1];
        let odd = &snap.models[2];
        let id = alice();
        assert!(enforce_classification(&snap, &id, DataClassification::Restricted, local).is_ok());
        assert!(enforce_classification(&snap, &id, DataClassification::Public, cloud).is_ok());
        assert!(matches!(
            enforce_classification(&snap, &id, DataClassification::Internal, cloud),
            Err(GovernanceError::ForbiddenTags { .. })
        ));
        assert!(matches!(
            enforce_classification(&snap, &id, DataClassification::Restricted, cloud),
            Err(GovernanceError::MissingRequiredTags { .. })
        ));
        assert!(matches!(
            enforce_classification(&snap, &id, DataClassification::Public, odd),
            Err(GovernanceError::UnknownTag { .. })
        ));
        let mut no_policy = snap.clone();
        no_policy.policies.clear();
        assert!(matches!(
            enforce_classification(&no_policy, &id, DataClassification::Public, local),
            Err(GovernanceError::MissingPolicy(_))
        ));
        assert!(classification_of(99).is_err());
    }

    #[test]
    fn auto_picks_the_cheapest_compatible_model_that_has_tools() {
        let snap = snapshot(vec![
            model("p1:cheap-no-tools", "p1", &["zero-retention"], 1, false),
            model("p1:mid-tools", "p1", &["zero-retention"], 5, true),
            model("p2:pricey-tools", "p2", &["zero-retention"], 9, true),
            model("p1:other-tools", "p1", &["zero-retention"], 7, true),
            model("p3:cheap-trains", "p3", &["trains-on-data"], 0, true),
        ]);
        let needs = ModelNeeds {
            tools: true,
            ..Default::default()
        };
        let ranked = pick_auto_model(
            &snap,
            &alice(),
            DataClassification::Confidential,
            &needs,
            |_| true,
        )
        .unwrap();
        assert_eq!(ranked.chosen, "p1:mid-tools");
        // Provider-diverse: p2 before the second p1 model although it costs more.
        assert_eq!(ranked.fallbacks, ["p2:pricey-tools", "p1:other-tools"]);
        assert!(ranked.reason.contains("cheapest of 3"), "{}", ranked.reason);
        let plain = pick_auto_model(
            &snap,
            &alice(),
            DataClassification::Confidential,
            &ModelNeeds::default(),
            |_| true,
        )
        .unwrap();
        assert_eq!(plain.chosen, "p1:cheap-no-tools");
    }

    #[test]
    fn auto_explains_why_nothing_fits() {
        let snap = snapshot(vec![model("b:cloud", "b", &["trains-on-data"], 1, false)]);
        let err = pick_auto_model(
            &snap,
            &alice(),
            DataClassification::Restricted,
            &ModelNeeds::default(),
            |_| true,
        )
        .unwrap_err();
        assert!(matches!(err, AutoError::NothingAllowed { .. }));
        let snap = snapshot(vec![model("a:local", "a", &["local"], 1, false)]);
        let needs = ModelNeeds {
            tools: true,
            ..Default::default()
        };
        let err = pick_auto_model(&snap, &alice(), DataClassification::Public, &needs, |_| {
            true
        })
        .unwrap_err();
        assert!(matches!(err, AutoError::NothingFits { .. }));
    }
}
