//! svc-models over gRPC: ModelService, ModelAdminService, KeyService and UsageService. Each
//! converts, checks the caller, and delegates to the domain modules.

use std::pin::Pin;

use futures::Stream;
use pa_kit::{ErrorCode, PaError, RequestIdentity};
use pa_proto::v1::key_service_server::KeyService;
use pa_proto::v1::model_admin_service_server::ModelAdminService;
use pa_proto::v1::model_service_server::ModelService;
use pa_proto::v1::usage_service_server::UsageService;
use pa_proto::v1::{
    ClassificationPolicy, ConfirmUserKeyRequest, DeleteUserKeyRequest, DeleteUserKeyResponse,
    EmbedRequest, EmbedResponse, Embedding, GetUsageRequest, GetUsageResponse, Identity, KeyRef,
    ListAllModelsRequest, ListModelsRequest, ListModelsResponse, ListPoliciesRequest,
    ListPoliciesResponse, ListProvidersRequest, ListProvidersResponse, ListUserKeysRequest,
    ListUserKeysResponse, ModelInfo, ModelSelection, PatchModelRequest, ProviderInfo,
    PutUserKeyRequest, ResolveModelRequest, SetModelOverlayRequest, StreamChatChunk,
    StreamChatRequest, UpsertModelRequest, UpsertProviderRequest, UsageScope,
};
use tonic::{Request, Response, Status};

use crate::catalog::{PLATFORM, Scope, Snapshot, scope_name};
use crate::keys::Secret;
use crate::relay::{Relay, provider_key_aad};

#[derive(Clone)]
pub struct Services {
    pub relay: Relay,
    pub embedder: crate::embedder::OfflineEmbedder,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<StreamChatChunk, Status>> + Send>>;

/// A tenant administrator or a platform administrator (every admin endpoint needs one of them;
/// what each may touch is decided by [`admin_scope`]).
fn require_admin(identity: &Identity) -> Result<(), Status> {
    Ok(pa_kit::identity::require_any_admin(identity)?)
}

/// The caller's own tenant as a write scope (never the platform's).
fn tenant_scope(identity: &Identity) -> Result<Scope<'_>, Status> {
    if identity.tenant_id.is_empty() || identity.tenant_id == PLATFORM {
        return Err(PaError::bad_request("the caller has no tenant").into());
    }
    Ok(Scope::Tenant(&identity.tenant_id))
}

fn forbidden_platform() -> Status {
    PaError::new(
        ErrorCode::Forbidden,
        "the platform catalog (providers, models, platform keys, default policies) is changed \
         by platform administrators only; tenant administrators manage their organisation's own \
         providers and models (scope \"tenant\") and switch platform models off for it with \
         PUT /v1/admin/model-overlays/{label}",
    )
    .into()
}

/// Where an admin write goes (ADR 0130): `requested` is "platform", "tenant" or "" (the
/// platform for a platform administrator, else the caller's tenant). The platform scope needs
/// the platform role; anything else stays inside the caller's tenant.
fn admin_scope<'a>(identity: &'a Identity, requested: &str) -> Result<Scope<'a>, Status> {
    require_admin(identity)?;
    let platform = pa_kit::identity::is_platform_admin(identity);
    match requested {
        "platform" if platform => Ok(Scope::Platform),
        "platform" => Err(forbidden_platform()),
        "" if platform => Ok(Scope::Platform),
        "" | "tenant" => tenant_scope(identity),
        other => Err(PaError::bad_request(format!(
            "scope {other:?} is neither \"platform\" nor \"tenant\""
        ))
        .into()),
    }
}

/// A KeyRef with whether its binding still matches the provider's base URL.
fn key_ref_now(mut key: KeyRef, snapshot: &Snapshot) -> KeyRef {
    if let Some(p) = snapshot.provider(&key.provider) {
        key.current_base_url = p.base_url.clone();
        key.needs_confirmation = !key.bound_base_url.is_empty() && key.bound_base_url != p.base_url;
    }
    key
}

impl Services {
    /// The catalog as the caller's tenant sees it (the platform's rows and the tenant's own).
    async fn catalog_of(&self, identity: &Identity) -> Result<std::sync::Arc<Snapshot>, Status> {
        Ok(self
            .relay
            .catalog
            .snapshot(&identity.tenant_id)
            .await
            .map_err(PaError::from)?)
    }
}

#[tonic::async_trait]
impl ModelService for Services {
    /// The models the caller may pick: enabled, callable (a key exists), and allowed for at
    /// least one data classification.
    async fn list_models(
        &self,
        request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let identity = request.identity()?;
        let snapshot = self.catalog_of(&identity).await?;
        let callable = self.relay.callable(&identity, &snapshot).await?;
        let models = snapshot
            .usable_models()
            .filter(|m| callable.allows(m))
            .filter(|m| !Relay::allowed_classifications(&snapshot, &identity, m).is_empty())
            .map(|m| m.info.clone())
            .collect();
        Ok(Response::new(ListModelsResponse { models }))
    }

    async fn resolve(
        &self,
        request: Request<ResolveModelRequest>,
    ) -> Result<Response<ModelSelection>, Status> {
        let identity = request.identity()?;
        Ok(Response::new(
            crate::resolver::resolve(&self.relay, &identity, request.get_ref()).await?,
        ))
    }

    type StreamChatStream = ChunkStream;

    async fn stream_chat(
        &self,
        request: Request<StreamChatRequest>,
    ) -> Result<Response<Self::StreamChatStream>, Status> {
        let identity = request.identity()?;
        let rx = self.relay.stream(identity, request.into_inner());
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        if req.inputs.is_empty() || req.inputs.len() > 256 {
            return Err(PaError::bad_request("inputs must hold 1-256 texts").into());
        }
        let label = if req.label.is_empty() {
            "offline:echo".to_string()
        } else {
            req.label
        };
        let snapshot = self.catalog_of(&identity).await?;
        let model = snapshot.usable_model(&label).map_err(PaError::from)?;
        let provider = snapshot
            .provider(&model.info.provider)
            .cloned()
            .ok_or_else(|| PaError::not_found(format!("provider of {label} is missing")))?;
        let (model_id, vectors) = if provider.kind == "offline" {
            let lane = if req.purpose == pa_proto::v1::EmbedPurpose::Document as i32 {
                crate::embedder::Lane::Background
            } else {
                crate::embedder::Lane::Interactive
            };
            let (id, vectors) = self
                .embedder
                .embed(req.inputs, lane)
                .await
                .map_err(PaError::internal)?;
            (id.to_string(), vectors)
        } else {
            let key = self.relay.key_for(&identity, &provider).await?;
            let secret = match &key {
                crate::relay::KeyChoice::User(s) | crate::relay::KeyChoice::Platform(s) => Some(s),
                crate::relay::KeyChoice::None => None,
            };
            let vectors = crate::provider::embed(
                &self.relay.http,
                &provider.base_url,
                secret,
                &model.info.model,
                &req.inputs,
                self.relay.timeouts.first_byte,
            )
            .await
            .map_err(|e| {
                let code = <ErrorCode as pa_kit::error::ErrorCodeExt>::from_slug(e.code);
                PaError::new(code.unwrap_or(ErrorCode::Unavailable), e.message)
            })?;
            (label.clone(), vectors)
        };
        Ok(Response::new(EmbedResponse {
            embeddings: vectors
                .into_iter()
                .map(|values| Embedding { values })
                .collect(),
            served_label: label,
            model_id,
        }))
    }
}

#[tonic::async_trait]
impl ModelAdminService for Services {
    async fn list_providers(
        &self,
        request: Request<ListProvidersRequest>,
    ) -> Result<Response<ListProvidersResponse>, Status> {
        let identity = request.identity()?;
        require_admin(&identity)?;
        // The platform's providers and the caller's tenant's own, never another tenant's.
        let snapshot = self.catalog_of(&identity).await?;
        Ok(Response::new(ListProvidersResponse {
            providers: snapshot.providers.iter().map(|p| p.info()).collect(),
        }))
    }

    async fn upsert_provider(
        &self,
        request: Request<UpsertProviderRequest>,
    ) -> Result<Response<ProviderInfo>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        let info = req
            .provider
            .ok_or_else(|| PaError::bad_request("provider is required"))?;
        let scope = admin_scope(&identity, &info.scope)?;
        if info.kind == "openai_compatible" {
            self.relay.check_base_url(&info.base_url).await?;
        }
        let sealed = if req.platform_api_key.is_empty() {
            None
        } else {
            Some(
                self.relay
                    .enc
                    .seal(
                        &Secret::new(req.platform_api_key),
                        &provider_key_aad(scope.tenant(), &info.id),
                    )
                    .map_err(PaError::from)?,
            )
        };
        let provider = self
            .relay
            .catalog
            .upsert_provider(scope, &info, sealed.as_ref())
            .await
            .map_err(PaError::from)?;
        tracing::info!(actor = %identity.user_id, tenant = %identity.tenant_id,
            scope = scope.name(), provider = %provider.id, base_url = %provider.base_url,
            key_replaced = sealed.is_some(), "provider upserted");
        Ok(Response::new(provider.info()))
    }

    async fn list_all_models(
        &self,
        request: Request<ListAllModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let identity = request.identity()?;
        require_admin(&identity)?;
        let snapshot = self.catalog_of(&identity).await?;
        Ok(Response::new(ListModelsResponse {
            models: snapshot.models.iter().map(|m| m.info.clone()).collect(),
        }))
    }

    async fn upsert_model(
        &self,
        request: Request<UpsertModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        let identity = request.identity()?;
        let info = request
            .into_inner()
            .model
            .ok_or_else(|| PaError::bad_request("model is required"))?;
        let scope = admin_scope(&identity, &info.scope)?;
        let model = self
            .relay
            .catalog
            .upsert_model(scope, &info)
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(model.info))
    }

    async fn patch_model(
        &self,
        request: Request<PatchModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        let identity = request.identity()?;
        require_admin(&identity)?;
        // The row decides the scope: a platform model needs the platform role.
        let snapshot = self.catalog_of(&identity).await?;
        let row_scope = snapshot
            .model(&request.get_ref().label)
            .map(|m| m.info.scope.clone())
            .ok_or_else(|| {
                PaError::not_found(format!(
                    "model {} is not in the catalog",
                    request.get_ref().label
                ))
            })?;
        let scope = admin_scope(&identity, &row_scope)?;
        let model = self
            .relay
            .catalog
            .patch_model(scope, request.get_ref())
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(model.info))
    }

    async fn list_policies(
        &self,
        request: Request<ListPoliciesRequest>,
    ) -> Result<Response<ListPoliciesResponse>, Status> {
        let identity = request.identity()?;
        require_admin(&identity)?;
        let snapshot = self.catalog_of(&identity).await?;
        use pa_proto::v1::DataClassification as C;
        let policies = [C::Public, C::Internal, C::Confidential, C::Restricted]
            .into_iter()
            .filter_map(|c| snapshot.policy(&identity.tenant_id, c))
            .map(|p| ClassificationPolicy {
                classification: p.classification as i32,
                required_tags: p.required_tags.clone(),
                forbidden_tags: p.forbidden_tags.clone(),
                scope: scope_name(&p.tenant_id).into(),
            })
            .collect();
        Ok(Response::new(ListPoliciesResponse { policies }))
    }

    /// Sets the caller's tenant policy for one classification (overrides the platform's).
    async fn set_policy(
        &self,
        request: Request<ClassificationPolicy>,
    ) -> Result<Response<ClassificationPolicy>, Status> {
        let identity = request.identity()?;
        let mut policy = request.into_inner();
        // A policy without a scope is the tenant's override, for either kind of admin.
        let requested = if policy.scope.is_empty() {
            "tenant"
        } else {
            policy.scope.as_str()
        };
        let scope = admin_scope(&identity, requested)?;
        self.relay
            .catalog
            .set_policy(scope, &policy)
            .await
            .map_err(PaError::from)?;
        policy.scope = scope.name().into();
        Ok(Response::new(policy))
    }

    /// Switches a platform model on or off for the caller's tenant.
    async fn set_model_overlay(
        &self,
        request: Request<SetModelOverlayRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        let identity = request.identity()?;
        require_admin(&identity)?;
        let scope = tenant_scope(&identity)?;
        let req = request.into_inner();
        let model = self
            .relay
            .catalog
            .set_overlay(scope.tenant(), &identity.user_id, &req.label, req.enabled)
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(model.info))
    }
}

#[tonic::async_trait]
impl KeyService for Services {
    async fn put_user_key(
        &self,
        request: Request<PutUserKeyRequest>,
    ) -> Result<Response<KeyRef>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        let snapshot = self.catalog_of(&identity).await?;
        let base_url = match snapshot.provider(&req.provider) {
            Some(p) if p.kind == "openai_compatible" => p.base_url.clone(),
            Some(_) => {
                return Err(PaError::bad_request(format!(
                    "provider {} takes no key",
                    req.provider
                ))
                .into());
            }
            None => {
                return Err(PaError::not_found(format!(
                    "provider {} is not in the catalog",
                    req.provider
                ))
                .into());
            }
        };
        let key = self
            .relay
            .keys
            .put(&identity, &req.provider, &base_url, &req.api_key)
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(key_ref_now(key, &snapshot)))
    }

    async fn confirm_user_key(
        &self,
        request: Request<ConfirmUserKeyRequest>,
    ) -> Result<Response<KeyRef>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        let snapshot = self.catalog_of(&identity).await?;
        let provider = snapshot.provider(&req.provider).ok_or_else(|| {
            PaError::not_found(format!("provider {} is not in the catalog", req.provider))
        })?;
        // The user names the URL they agree to: a URL changed again since they looked is not
        // confirmed by an old answer.
        if req.base_url.trim() != provider.base_url {
            return Err(PaError::new(
                ErrorCode::FailedPrecondition,
                format!(
                    "provider {} now points at {}; confirm with that base_url",
                    provider.id, provider.base_url
                ),
            )
            .into());
        }
        let key = self
            .relay
            .keys
            .confirm(&identity, &req.provider, &provider.base_url)
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(key_ref_now(key, &snapshot)))
    }

    async fn list_user_keys(
        &self,
        request: Request<ListUserKeysRequest>,
    ) -> Result<Response<ListUserKeysResponse>, Status> {
        let identity = request.identity()?;
        let snapshot = self.catalog_of(&identity).await?;
        Ok(Response::new(ListUserKeysResponse {
            keys: self
                .relay
                .keys
                .list(&identity)
                .await
                .map_err(PaError::from)?
                .into_iter()
                .map(|k| key_ref_now(k, &snapshot))
                .collect(),
        }))
    }

    async fn delete_user_key(
        &self,
        request: Request<DeleteUserKeyRequest>,
    ) -> Result<Response<DeleteUserKeyResponse>, Status> {
        let identity = request.identity()?;
        self.relay
            .keys
            .delete(&identity, &request.get_ref().provider)
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(DeleteUserKeyResponse {}))
    }
}

fn day(text: &str, default: chrono::NaiveDate) -> Result<chrono::NaiveDate, PaError> {
    if text.is_empty() {
        return Ok(default);
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| PaError::bad_request(format!("{text:?} is not a YYYY-MM-DD day")))
}

#[tonic::async_trait]
impl UsageService for Services {
    async fn get_usage(
        &self,
        request: Request<GetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        let today = chrono::Utc::now().date_naive();
        let to = day(&req.to_day, today)?;
        let from = day(&req.from_day, to - chrono::Days::new(30))?;
        if from > to || (to - from).num_days() > 366 {
            return Err(
                PaError::bad_request("from must be before to, at most 366 days apart").into(),
            );
        }
        let user = match UsageScope::try_from(req.scope).unwrap_or(UsageScope::Unspecified) {
            UsageScope::Tenant => {
                require_admin(&identity)?;
                None
            }
            _ => Some(identity.user_id.as_str()),
        };
        let days = self
            .relay
            .usage
            .daily(&identity.tenant_id, user, from, to)
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(GetUsageResponse { days }))
    }
}

#[tonic::async_trait]
impl pa_proto::v1::maintenance_service_server::MaintenanceService for crate::usage::UsageRollup {
    async fn run_maintenance(
        &self,
        request: Request<pa_proto::v1::RunMaintenanceRequest>,
    ) -> Result<Response<pa_proto::v1::RunMaintenanceResponse>, Status> {
        // A batch is days here: at most a year of them per call.
        pa_kit::maintenance::answer("svc-models", "rollup_usage", 366, request, |days| {
            self.rollup(days)
        })
        .await
    }
}
