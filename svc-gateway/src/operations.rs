//! The operations of the public API, each defined once (ADR 0211). An operation is a gRPC
//! method of a public service with the scope an API key needs for it; a REST route names the
//! operation it is the HTTP binding of (`lib.rs`' table), and the public gRPC server serves the
//! same operation (`public_grpc.rs`). Both front ends call the same function of the operation
//! layer (in the area's module, e.g. `memories::create_memory`) with the same proto request,
//! so the checks and the forwarding cannot differ between them; only the HTTP binding (paths,
//! JSON shapes, status codes) is REST's own.

use crate::auth::Scope;

/// One operation of the public API.
#[derive(Debug, PartialEq, Eq)]
pub struct Operation {
    /// Its gRPC method: `/personal_agent.v1.<Service>/<Method>`.
    pub grpc: &'static str,
    /// What an API key needs to call it.
    pub scope: Scope,
}

impl Operation {
    /// `<Service>/<Method>`, as the docs name it.
    pub fn name(&self) -> &'static str {
        self.grpc
            .strip_prefix("/personal_agent.v1.")
            .unwrap_or(self.grpc)
    }
}

/// An operation that checks the caller and the request (`check`, optional), then forwards the
/// request to the service that owns it with the caller's signed identity.
macro_rules! forward_operation {
    ($(#[$doc:meta])* $name:ident($client:ident.$method:ident, $request:ty) -> $response:ty $(, check: $check:expr)?) => {
        $(#[$doc])*
        pub(crate) async fn $name(
            state: &crate::state::AppState,
            identity: &pa_proto::v1::Identity,
            request: $request,
        ) -> Result<$response, pa_kit::PaError> {
            $(
                let check: fn(&pa_proto::v1::Identity, &$request) -> Result<(), pa_kit::PaError> = $check;
                check(identity, &request)?;
            )?
            Ok(state
                .$client
                .clone()
                .$method(state.auth.request(identity, request))
                .await?
                .into_inner())
        }
    };
}
pub(crate) use forward_operation;

macro_rules! operations {
    ($($name:ident = $service:literal / $method:literal : $scope:ident;)*) => {
        $(pub const $name: Operation = Operation {
            grpc: concat!("/personal_agent.v1.", $service, "/", $method),
            scope: Scope::$scope,
        };)*
        /// Every operation of the public API.
        pub const ALL: &[&Operation] = &[$(&$name),*];
    };
}

operations! {
    CREATE_CHAT = "RunService" / "CreateChat": Chats;
    LIST_CHATS = "RunService" / "ListChats": Chats;
    GET_CHAT = "RunService" / "GetChat": Chats;
    RENAME_CHAT = "RunService" / "RenameChat": Chats;
    DELETE_CHAT = "RunService" / "DeleteChat": Chats;
    LIST_MESSAGES = "RunService" / "ListMessages": Chats;
    CREATE_RUN = "RunService" / "CreateRun": Runs;
    GET_RUN = "RunService" / "GetRun": Runs;
    CANCEL_RUN = "RunService" / "CancelRun": Runs;
    STREAM_RUN_EVENTS = "RunService" / "StreamRunEvents": Runs;
    SEND_CONTROL = "ControlService" / "SendControl": Runs;
    LIST_MODELS = "ModelService" / "ListModels": Models;
    RESOLVE_MODEL = "ModelService" / "Resolve": Models;
    MY_USAGE = "UsageService" / "GetUsage": Models;
    // The same method with `scope: USAGE_SCOPE_TENANT`: the public server picks the operation
    // from the request, so a key without the admin scope never reads the tenant's usage.
    TENANT_USAGE = "UsageService" / "GetUsage": Admin;
    CREATE_API_KEY = "ApiKeyService" / "CreateApiKey": SessionOnly;
    LIST_API_KEYS = "ApiKeyService" / "ListApiKeys": SessionOnly;
    REVOKE_API_KEY = "ApiKeyService" / "RevokeApiKey": SessionOnly;
    LIST_USER_KEYS = "KeyService" / "ListUserKeys": SessionOnly;
    PUT_USER_KEY = "KeyService" / "PutUserKey": SessionOnly;
    DELETE_USER_KEY = "KeyService" / "DeleteUserKey": SessionOnly;
    CONFIRM_USER_KEY = "KeyService" / "ConfirmUserKey": SessionOnly;
    LIST_PROVIDERS = "ModelAdminService" / "ListProviders": Admin;
    UPSERT_PROVIDER = "ModelAdminService" / "UpsertProvider": Admin;
    LIST_ALL_MODELS = "ModelAdminService" / "ListAllModels": Admin;
    UPSERT_MODEL = "ModelAdminService" / "UpsertModel": Admin;
    PATCH_MODEL = "ModelAdminService" / "PatchModel": Admin;
    SET_MODEL_OVERLAY = "ModelAdminService" / "SetModelOverlay": Admin;
    LIST_POLICIES = "ModelAdminService" / "ListPolicies": Admin;
    SET_POLICY = "ModelAdminService" / "SetPolicy": Admin;
    LIST_SCHEDULES = "ScheduleService" / "ListSchedules": Admin;
    TRIGGER_SCHEDULE = "ScheduleService" / "TriggerSchedule": Admin;
    LIST_USERS = "UserAdminService" / "ListUsers": Admin;
    SET_USER_DISABLED = "UserAdminService" / "SetUserDisabled": Admin;
    LIST_INTEGRATIONS = "ToolService" / "ListIntegrations": Integrations;
    CREATE_INTEGRATION = "ToolService" / "CreateIntegration": Integrations;
    GET_INTEGRATION = "ToolService" / "GetIntegration": Integrations;
    UPDATE_INTEGRATION = "ToolService" / "UpdateIntegration": Integrations;
    DELETE_INTEGRATION = "ToolService" / "DeleteIntegration": Integrations;
    GET_TOOL_SELECTION = "ToolService" / "GetChatToolSelection": Integrations;
    SET_TOOL_SELECTION = "ToolService" / "SetChatToolSelection": Integrations;
    CREATE_DEVICE_ENROLLMENT = "ToolService" / "CreateDeviceEnrollment": Devices;
    LIST_DEVICES = "ToolService" / "ListDevices": Devices;
    DELETE_DEVICE = "ToolService" / "DeleteDevice": Devices;
    // A device's own credential (the one-time code) authenticates it.
    ENROLL_DEVICE = "ToolService" / "EnrollDevice": Public;
    LIST_MEMORIES = "MemoryService" / "List": Memory;
    SEARCH_MEMORIES = "MemoryService" / "Search": Memory;
    CREATE_MEMORY = "MemoryService" / "Upsert": Memory;
    UPDATE_MEMORY = "MemoryService" / "Update": Memory;
    FORGET_MEMORY = "MemoryService" / "Forget": Memory;
    // A file belongs to a chat: uploading is part of chatting.
    INGEST_DOCUMENT = "MemoryService" / "IngestDocument": Chats;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation is a method the contracts define (an integrator's stubs have it).
    #[test]
    fn every_operation_is_a_method_of_the_contracts() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(pa_proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let mut methods = std::collections::HashSet::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.insert(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        for op in ALL {
            assert!(methods.contains(op.grpc), "{} is no method", op.grpc);
        }
    }

    /// What is HTTP by nature, with why: everything else of the REST API is an operation.
    pub const HTTP_ONLY: &[(&str, &str)] = &[
        ("/", "the web app"),
        ("/v1", "the REST API's index"),
        ("/v1/openapi.json", "the REST API's own description"),
        ("/healthz", "liveness (gRPC: grpc.health.v1)"),
        ("/readyz", "readiness (gRPC: grpc.health.v1)"),
        ("/v1/auth/config", "how a browser signs in"),
        (
            "/v1/ag-ui",
            "the AG-UI protocol (HTTP + SSE); over gRPC: RunService CreateRun + StreamRunEvents",
        ),
        ("/v1/devices/connect", "a device's WebSocket"),
    ];

    /// Every REST route is the binding of an operation (its gRPC twin) or HTTP by nature, and
    /// takes its API-key scope from the operation; every operation is reachable over REST too,
    /// but for the few the REST API folds into another route.
    #[test]
    fn every_rest_operation_has_its_grpc_twin() {
        let mut twinned = std::collections::HashSet::new();
        for (method, path, twin) in crate::route_twins() {
            match twin {
                Some(op) => {
                    twinned.insert(op.grpc);
                }
                None => assert!(
                    HTTP_ONLY.iter().any(|(p, _)| *p == path),
                    "{method} {path} has no gRPC twin"
                ),
            }
        }
        for (method, path, scope) in crate::route_scopes() {
            let twin = crate::route_twins()
                .into_iter()
                .find(|(m, p, _)| *m == method && *p == path)
                .and_then(|(_, _, twin)| twin);
            if let Some(op) = twin {
                assert_eq!(scope, op.scope, "{method} {path}");
            }
        }
        // gRPC only: Resolve (REST resolves inside a run) and Search (REST: GET
        // /v1/me/memories?q=).
        let folded = [RESOLVE_MODEL.grpc, SEARCH_MEMORIES.grpc];
        for op in ALL {
            assert!(
                twinned.contains(op.grpc) || folded.contains(&op.grpc),
                "{} has no REST route",
                op.grpc
            );
        }
    }
}
