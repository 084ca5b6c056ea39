//! The public gRPC API (default port 50050) for third-party integrators: every operation of the
//! REST API (`operations::ALL`, ADR 0211), authenticated exactly like HTTP (`authorization:
//! Bearer <JWT or API key>` metadata; the dev identity in dev mode), rate-limited the same,
//! with the operation's API-key scope. Each method calls the same operation function as its
//! REST route; methods of the same services that only the mesh may call answer UNIMPLEMENTED.

use std::pin::Pin;

use futures::Stream;
use pa_kit::PaError;
use pa_proto::v1::api_key_service_server::ApiKeyService;
use pa_proto::v1::control_service_server::ControlService;
use pa_proto::v1::key_service_server::KeyService;
use pa_proto::v1::memory_service_server::MemoryService;
use pa_proto::v1::model_admin_service_server::ModelAdminService;
use pa_proto::v1::model_service_server::ModelService;
use pa_proto::v1::run_service_server::RunService;
use pa_proto::v1::schedule_service_server::ScheduleService;
use pa_proto::v1::tool_service_server::ToolService;
use pa_proto::v1::usage_service_server::UsageService;
use pa_proto::v1::user_admin_service_server::UserAdminService;
use pa_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::operations::{self as op, Operation};
use crate::state::AppState;
use crate::{admin, api, api_keys, devices, integrations, memories, users};

#[derive(Clone)]
pub struct PublicApi {
    pub state: AppState,
}

impl PublicApi {
    /// Validates the message (no NUL in any string, bounded ids: `InvalidArgument` otherwise,
    /// before anything is forwarded), then authenticates the call the way the HTTP API does
    /// (same extractor, same limits, the operation's API-key scope).
    async fn caller<T: serde::Serialize>(
        &self,
        request: &Request<T>,
        operation: &'static Operation,
    ) -> Result<Identity, Status> {
        pa_kit::validate::message(request.get_ref()).map_err(Status::from)?;
        if operation.scope == crate::auth::Scope::Public {
            // Its own credential is in the message (a device's one-time code).
            return Ok(Identity::default());
        }
        let mut builder = http::Request::builder().uri(operation.grpc);
        if let Some(headers) = builder.headers_mut() {
            *headers = request.metadata().clone().into_headers();
        }
        let (mut parts, ()) = builder
            .body(())
            .map_err(|_| Status::from(PaError::bad_request("bad request metadata")))?
            .into_parts();
        parts.extensions.insert(operation.scope);
        let caller = <Caller as axum::extract::FromRequestParts<AppState>>::from_request_parts(
            &mut parts,
            &self.state,
        )
        .await
        .map_err(|e| Status::from(e.0))?;
        Ok(caller.0)
    }
}

/// Implements a public service: each listed method authenticates the caller for its operation
/// and calls the operation function its REST route calls; each `internal` method (the mesh's
/// own) answers UNIMPLEMENTED.
macro_rules! public_service {
    (
        $service:ident {
            $( $method:ident($request:ty) -> $response:ty = $operation:expr => $call:path; )*
        }
        $( internal { $( $internal:ident($irequest:ty) -> $iresponse:ty; )* } )?
        $( own { $($own:tt)* } )?
    ) => {
        #[tonic::async_trait]
        impl $service for PublicApi {
            $(
                async fn $method(
                    &self,
                    request: Request<$request>,
                ) -> Result<Response<$response>, Status> {
                    let identity = self.caller(&request, &$operation).await?;
                    Ok(Response::new($call(&self.state, &identity, request.into_inner()).await?))
                }
            )*
            $($(
                async fn $internal(
                    &self,
                    _request: Request<$irequest>,
                ) -> Result<Response<$iresponse>, Status> {
                    Err(PaError::unimplemented(concat!(
                        stringify!($service), ".", stringify!($internal),
                        " is internal to the mesh"
                    ))
                    .into())
                }
            )*)?
            $($($own)*)?
        }
    };
}

type EventStream = Pin<Box<dyn Stream<Item = Result<RunEvent, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<StreamChatChunk, Status>> + Send>>;

public_service! {
    RunService {
        create_chat(CreateChatRequest) -> Chat = op::CREATE_CHAT => api::op::create_chat;
        get_chat(GetChatRequest) -> Chat = op::GET_CHAT => api::op::get_chat;
        list_chats(ListChatsRequest) -> ListChatsResponse = op::LIST_CHATS => api::op::list_chats;
        delete_chat(DeleteChatRequest) -> DeleteChatResponse = op::DELETE_CHAT => api::op::delete_chat;
        rename_chat(RenameChatRequest) -> Chat = op::RENAME_CHAT => api::op::rename_chat;
        list_messages(ListMessagesRequest) -> ListMessagesResponse = op::LIST_MESSAGES => api::op::list_messages;
        create_run(CreateRunRequest) -> CreateRunResponse = op::CREATE_RUN => api::op::create_run;
        get_run(GetRunRequest) -> Run = op::GET_RUN => api::op::get_run;
        cancel_run(CancelRunRequest) -> Run = op::CANCEL_RUN => api::op::cancel_run;
    }
    own {
        type StreamRunEventsStream = EventStream;

        async fn stream_run_events(
            &self,
            request: Request<StreamRunEventsRequest>,
        ) -> Result<Response<Self::StreamRunEventsStream>, Status> {
            let id = self.caller(&request, &op::STREAM_RUN_EVENTS).await?;
            let stream = self
                .state
                .runs
                .clone()
                .stream_run_events(self.state.auth.request(&id, request.into_inner()))
                .await?;
            Ok(Response::new(Box::pin(stream.into_inner())))
        }
    }
}

public_service! {
    ModelService {
        list_models(ListModelsRequest) -> ListModelsResponse = op::LIST_MODELS => api::op::list_models;
        resolve(ResolveModelRequest) -> ModelSelection = op::RESOLVE_MODEL => api::op::resolve;
    }
    internal {
        embed(EmbedRequest) -> EmbedResponse;
    }
    own {
        type StreamChatStream = ChunkStream;

        /// Not public: model calls belong to runs (governance, usage, fallback are applied
        /// there).
        async fn stream_chat(
            &self,
            _request: Request<StreamChatRequest>,
        ) -> Result<Response<Self::StreamChatStream>, Status> {
            Err(PaError::unimplemented(
                "StreamChat is internal; start a run with RunService.CreateRun",
            )
            .into())
        }
    }
}

#[tonic::async_trait]
impl UsageService for PublicApi {
    /// One method, two operations: the organisation's usage needs the admin scope.
    async fn get_usage(
        &self,
        request: Request<GetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        let operation = if request.get_ref().scope == UsageScope::Tenant as i32 {
            &op::TENANT_USAGE
        } else {
            &op::MY_USAGE
        };
        let id = self.caller(&request, operation).await?;
        Ok(Response::new(
            admin::op::get_usage(&self.state, &id, request.into_inner()).await?,
        ))
    }
}

public_service! {
    ControlService {
        send_control(ControlCommand) -> ControlAck = op::SEND_CONTROL => api::op::send_control;
    }
}

public_service! {
    KeyService {
        put_user_key(PutUserKeyRequest) -> KeyRef = op::PUT_USER_KEY => admin::op::put_user_key;
        list_user_keys(ListUserKeysRequest) -> ListUserKeysResponse = op::LIST_USER_KEYS => admin::op::list_user_keys;
        delete_user_key(DeleteUserKeyRequest) -> DeleteUserKeyResponse = op::DELETE_USER_KEY => admin::op::delete_user_key;
        confirm_user_key(ConfirmUserKeyRequest) -> KeyRef = op::CONFIRM_USER_KEY => admin::op::confirm_user_key;
    }
}

public_service! {
    ModelAdminService {
        list_providers(ListProvidersRequest) -> ListProvidersResponse = op::LIST_PROVIDERS => admin::op::list_providers;
        upsert_provider(UpsertProviderRequest) -> ProviderInfo = op::UPSERT_PROVIDER => admin::op::upsert_provider;
        list_all_models(ListAllModelsRequest) -> ListModelsResponse = op::LIST_ALL_MODELS => admin::op::list_all_models;
        upsert_model(UpsertModelRequest) -> ModelInfo = op::UPSERT_MODEL => admin::op::upsert_model;
        patch_model(PatchModelRequest) -> ModelInfo = op::PATCH_MODEL => admin::op::patch_model;
        list_policies(ListPoliciesRequest) -> ListPoliciesResponse = op::LIST_POLICIES => admin::op::list_policies;
        set_policy(ClassificationPolicy) -> ClassificationPolicy = op::SET_POLICY => admin::op::set_policy;
        set_model_overlay(SetModelOverlayRequest) -> ModelInfo = op::SET_MODEL_OVERLAY => admin::op::set_model_overlay;
    }
}

public_service! {
    ScheduleService {
        list_schedules(ListSchedulesRequest) -> ListSchedulesResponse = op::LIST_SCHEDULES => admin::op::list_schedules;
        trigger_schedule(TriggerScheduleRequest) -> TriggerScheduleResponse = op::TRIGGER_SCHEDULE => admin::op::trigger_schedule;
    }
}

public_service! {
    ApiKeyService {
        create_api_key(CreateApiKeyRequest) -> CreatedApiKey = op::CREATE_API_KEY => api_keys::create_api_key;
        list_api_keys(ListApiKeysRequest) -> ListApiKeysResponse = op::LIST_API_KEYS => api_keys::list_api_keys;
        revoke_api_key(RevokeApiKeyRequest) -> RevokeApiKeyResponse = op::REVOKE_API_KEY => api_keys::revoke_api_key;
    }
}

public_service! {
    UserAdminService {
        list_users(ListUsersRequest) -> ListUsersResponse = op::LIST_USERS => users::list_users;
        set_user_disabled(SetUserDisabledRequest) -> DirectoryUser = op::SET_USER_DISABLED => users::set_user_disabled;
    }
}

public_service! {
    MemoryService {
        list(ListMemoriesRequest) -> ListMemoriesResponse = op::LIST_MEMORIES => memories::list_memories;
        search(SearchMemoryRequest) -> SearchMemoryResponse = op::SEARCH_MEMORIES => memories::search_memories;
        upsert(UpsertMemoryRequest) -> MemoryItem = op::CREATE_MEMORY => memories::create_memory;
        update(UpdateMemoryRequest) -> MemoryItem = op::UPDATE_MEMORY => memories::update_memory;
        forget(ForgetMemoryRequest) -> ForgetMemoryResponse = op::FORGET_MEMORY => memories::forget_memory;
        ingest_document(IngestDocumentRequest) -> IngestDocumentResponse = op::INGEST_DOCUMENT => memories::ingest_document;
    }
    internal {
        curate(CurateRequest) -> CurateResponse;
    }
}

/// The device's enrollment code is its credential: no caller to authenticate.
async fn enroll_device(
    state: &AppState,
    _identity: &Identity,
    request: EnrollDeviceRequest,
) -> Result<EnrollDeviceResponse, PaError> {
    devices::enroll_device(state, request).await
}

public_service! {
    ToolService {
        list_integrations(ListIntegrationsRequest) -> ListIntegrationsResponse = op::LIST_INTEGRATIONS => integrations::list_integrations;
        create_integration(CreateIntegrationRequest) -> Integration = op::CREATE_INTEGRATION => integrations::create_integration;
        get_integration(GetIntegrationRequest) -> Integration = op::GET_INTEGRATION => integrations::get_integration;
        update_integration(UpdateIntegrationRequest) -> Integration = op::UPDATE_INTEGRATION => integrations::update_integration;
        delete_integration(DeleteIntegrationRequest) -> DeleteIntegrationResponse = op::DELETE_INTEGRATION => integrations::delete_integration;
        get_chat_tool_selection(GetChatToolSelectionRequest) -> ChatToolSelection = op::GET_TOOL_SELECTION => integrations::get_chat_tool_selection;
        set_chat_tool_selection(ChatToolSelection) -> ChatToolSelection = op::SET_TOOL_SELECTION => integrations::set_chat_tool_selection;
        create_device_enrollment(CreateDeviceEnrollmentRequest) -> DeviceEnrollment = op::CREATE_DEVICE_ENROLLMENT => devices::create_device_enrollment;
        list_devices(ListDevicesRequest) -> ListDevicesResponse = op::LIST_DEVICES => devices::list_devices;
        delete_device(DeleteDeviceRequest) -> DeleteDeviceResponse = op::DELETE_DEVICE => devices::delete_device;
        enroll_device(EnrollDeviceRequest) -> EnrollDeviceResponse = op::ENROLL_DEVICE => enroll_device;
    }
    internal {
        assemble_toolset(AssembleToolsetRequest) -> Toolset;
        execute_tool(ExecuteToolRequest) -> ExecuteToolResponse;
        get_toolset(GetToolsetRequest) -> Toolset;
        authenticate_device(AuthenticateDeviceRequest) -> AuthenticateDeviceResponse;
        set_device_online(SetDeviceOnlineRequest) -> SetDeviceOnlineResponse;
        set_device_offline(SetDeviceOfflineRequest) -> SetDeviceOfflineResponse;
    }
}
