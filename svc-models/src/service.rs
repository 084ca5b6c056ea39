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
    ClassificationPolicy, DeleteUserKeyRequest, DeleteUserKeyResponse, EmbedRequest, EmbedResponse,
    Embedding, GetUsageRequest, GetUsageResponse, Identity, KeyRef, ListAllModelsRequest,
    ListModelsRequest, ListModelsResponse, ListPoliciesRequest, ListPoliciesResponse,
    ListProvidersRequest, ListProvidersResponse, ListUserKeysRequest, ListUserKeysResponse,
    ModelInfo, ModelSelection, PatchModelRequest, ProviderInfo, PutUserKeyRequest,
    ResolveModelRequest, StreamChatChunk, StreamChatRequest, UpsertModelRequest,
    UpsertProviderRequest, UsageScope,
};
use tonic::{Request, Response, Status};

use crate::catalog::PLATFORM;
use crate::keys::Secret;
use crate::relay::{Relay, platform_key_aad};

#[derive(Clone)]
pub struct Services {
    pub relay: Relay,
    pub embedder: crate::embedder::OfflineEmbedder,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<StreamChatChunk, Status>> + Send>>;

fn require_admin(identity: &Identity) -> Result<(), Status> {
    Ok(pa_kit::identity::require_role(identity, "admin")?)
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
        let snapshot = self
            .relay
            .catalog
            .snapshot(&identity.tenant_id)
            .await
            .map_err(PaError::from)?;
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
        let snapshot = self
            .relay
            .catalog
            .snapshot(&identity.tenant_id)
            .await
            .map_err(PaError::from)?;
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
        require_admin(&request.identity()?)?;
        let snapshot = self
            .relay
            .catalog
            .snapshot(PLATFORM)
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(ListProvidersResponse {
            providers: snapshot.providers.iter().map(|p| p.info()).collect(),
        }))
    }

    async fn upsert_provider(
        &self,
        request: Request<UpsertProviderRequest>,
    ) -> Result<Response<ProviderInfo>, Status> {
        require_admin(&request.identity()?)?;
        let req = request.into_inner();
        let info = req
            .provider
            .ok_or_else(|| PaError::bad_request("provider is required"))?;
        let sealed = if req.platform_api_key.is_empty() {
            None
        } else {
            Some(
                self.relay
                    .enc
                    .seal(
                        &Secret::new(req.platform_api_key),
                        &platform_key_aad(&info.id),
                    )
                    .map_err(PaError::from)?,
            )
        };
        let provider = self
            .relay
            .catalog
            .upsert_provider(&info, sealed.as_ref())
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(provider.info()))
    }

    async fn list_all_models(
        &self,
        request: Request<ListAllModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        require_admin(&request.identity()?)?;
        let snapshot = self
            .relay
            .catalog
            .snapshot(PLATFORM)
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(ListModelsResponse {
            models: snapshot.models.iter().map(|m| m.info.clone()).collect(),
        }))
    }

    async fn upsert_model(
        &self,
        request: Request<UpsertModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        require_admin(&request.identity()?)?;
        let info = request
            .into_inner()
            .model
            .ok_or_else(|| PaError::bad_request("model is required"))?;
        let model = self
            .relay
            .catalog
            .upsert_model(&info)
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(model.info))
    }

    async fn patch_model(
        &self,
        request: Request<PatchModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        require_admin(&request.identity()?)?;
        let model = self
            .relay
            .catalog
            .patch_model(request.get_ref())
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
        let snapshot = self
            .relay
            .catalog
            .snapshot(&identity.tenant_id)
            .await
            .map_err(PaError::from)?;
        use pa_proto::v1::DataClassification as C;
        let policies = [C::Public, C::Internal, C::Confidential, C::Restricted]
            .into_iter()
            .filter_map(|c| snapshot.policy(&identity.tenant_id, c))
            .map(|p| ClassificationPolicy {
                classification: p.classification as i32,
                required_tags: p.required_tags.clone(),
                forbidden_tags: p.forbidden_tags.clone(),
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
        require_admin(&identity)?;
        let policy = request.into_inner();
        let tenant = if identity.tenant_id.is_empty() {
            PLATFORM
        } else {
            identity.tenant_id.as_str()
        };
        self.relay
            .catalog
            .set_policy(tenant, &policy)
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(policy))
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
        let snapshot = self
            .relay
            .catalog
            .snapshot(&identity.tenant_id)
            .await
            .map_err(PaError::from)?;
        match snapshot.provider(&req.provider) {
            Some(p) if p.kind == "openai_compatible" => {}
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
        }
        Ok(Response::new(
            self.relay
                .keys
                .put(&identity, &req.provider, &req.api_key)
                .await
                .map_err(PaError::from)?,
        ))
    }

    async fn list_user_keys(
        &self,
        request: Request<ListUserKeysRequest>,
    ) -> Result<Response<ListUserKeysResponse>, Status> {
        let identity = request.identity()?;
        Ok(Response::new(ListUserKeysResponse {
            keys: self
                .relay
                .keys
                .list(&identity)
                .await
                .map_err(PaError::from)?,
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
