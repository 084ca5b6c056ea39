//! The user's devices (device agents) over REST, and the device socket.
//!
//! - `POST /v1/me/devices/enrollments` → a one-time code (valid 10 minutes) for
//!   `pa-device enroll CODE --gateway URL`;
//! - `POST /v1/devices/enroll` (no user login: the code is the credential) → the device's id and
//!   token, shown once;
//! - `GET /v1/me/devices`, `DELETE /v1/me/devices/{id}`;
//! - `GET /v1/devices/connect`: the device's WebSocket, `Authorization: Bearer <device token>`.
//!
//! The socket (its frames are defined once, in [`pa_device_wire`]; ADR 0205): the device says
//! `hello` (its tools) first; the gateway records it with svc-tools, subscribes to the
//! connection's call channel in Redis and sets the device's online key (see
//! [`pa_bus::device_bus`]). Calls published by svc-tools (on any replica) are forwarded as
//! `{"type":"call","id","tool","arguments","run_id"}`; the device's `{"type":"result","id",
//! "content","is_error"}` is pushed back to the caller's result list. Heartbeats refresh the
//! online key and svc-tools' last-seen (a deleted device is disconnected there). When the socket
//! ends, the online key goes, and every call still in flight is failed at once with a tool error.

use std::collections::HashSet;
use std::time::Duration;

use axum::Json;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use deadpool_redis::redis::{self, AsyncCommands};
use futures::{SinkExt, StreamExt};
use pa_bus::device_bus::{self, BusCall, BusResult};
use pa_device_wire::{
    DEAD_AFTER, DEVICE_PROTOCOL, DeviceFrame, EnrollRequest, EnrollResponse, GatewayFrame,
    MAX_FRAME_BYTES, TOKEN_PROTOCOL_PREFIX,
};
use pa_kit::PaError;
use pa_proto::v1::{
    AuthenticateDeviceRequest, CreateDeviceEnrollmentRequest, DeleteDeviceRequest,
    DeleteDeviceResponse, Device, DeviceEnrollment, DeviceTool, EnrollDeviceRequest,
    EnrollDeviceResponse, ListDevicesRequest, ListDevicesResponse, SetDeviceOfflineRequest,
    SetDeviceOnlineRequest,
};
use serde::{Deserialize, Serialize};

use crate::operations::forward_operation;

use crate::api::ApiJson;
use crate::auth::Caller;
use crate::problem::ApiError;
use crate::state::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// The device must say hello this soon after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const GATEWAY: &str = "svc-gateway";

/// An enrolled device (a device agent, a browser sandbox or a browser extension).
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeviceJson {
    id: String,
    name: String,
    /// device_agent, browser_sandbox or browser_extension.
    kind: String,
    /// Connected to a gateway now.
    online: bool,
    /// What the device said it runs on (e.g. `linux`).
    platform: String,
    /// The device offers no tool that changes anything.
    read_only: bool,
    /// The names of the tools it offers.
    tools: Vec<String>,
    /// Milliseconds since the Unix epoch.
    created_at_ms: i64,
    /// Milliseconds since the Unix epoch.
    last_seen_at_ms: i64,
}

impl From<Device> for DeviceJson {
    fn from(d: Device) -> Self {
        Self {
            tools: d.tools.into_iter().map(|t| t.name).collect(),
            id: d.id,
            name: d.name,
            kind: d.kind,
            online: d.online,
            platform: d.platform,
            read_only: d.read_only,
            created_at_ms: d.created_at_ms,
            last_seen_at_ms: d.last_seen_at_ms,
        }
    }
}

/// The user's devices.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeviceListJson {
    devices: Vec<DeviceJson>,
}

/// A one-time enrollment code.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EnrollmentJson {
    /// For `pa-device enroll CODE --gateway URL`.
    code: String,
    /// When the code expires, in milliseconds since the Unix epoch.
    expires_at_ms: i64,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentBody {
    /// The device's name unless the device gives one.
    #[serde(default)]
    name: String,
    /// What the code enrolls: device_agent (default) | browser_sandbox | browser_extension. The
    /// device gets this kind; one claiming another kind is refused.
    #[serde(default)]
    #[schema(example = "device_agent")]
    kind: String,
}

#[utoipa::path(post, path = "/v1/me/devices/enrollments", tag = "devices", request_body = EnrollmentBody,
    responses((status = 201, description = "`{code, expires_at_ms}`: a one-time code for `pa-device enroll CODE --gateway URL`, valid 10 minutes", body = EnrollmentJson)))]
pub async fn create_enrollment(
    State(state): State<AppState>,
    Caller(identity): Caller,
    ApiJson(body): ApiJson<EnrollmentBody>,
) -> ApiResult<(StatusCode, Json<EnrollmentJson>)> {
    let EnrollmentBody { name, kind } = body;
    let enrollment = create_device_enrollment(
        &state,
        &identity,
        CreateDeviceEnrollmentRequest { name, kind },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentJson {
            code: enrollment.code,
            expires_at_ms: enrollment.expires_at_ms,
        }),
    ))
}

/// The one endpoint without a user login: the enrollment code is the credential.
#[utoipa::path(post, path = "/v1/devices/enroll", tag = "devices", request_body = EnrollRequest, security(()),
    responses((status = 200, description = "`{device_id, device_token, name}`; the token is shown once", body = EnrollResponse)))]
pub async fn enroll(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> ApiResult<Json<EnrollResponse>> {
    let enrolled = enroll_device(
        &state,
        EnrollDeviceRequest {
            code: body.code,
            name: body.name,
            kind: body.kind,
            platform: body.platform,
        },
    )
    .await?;
    Ok(Json(EnrollResponse {
        device_id: enrolled.device_id,
        device_token: enrolled.device_token,
        name: enrolled.name,
    }))
}

#[utoipa::path(get, path = "/v1/me/devices", tag = "devices",
    responses((status = 200, description = "`{devices: [{id, name, kind, online, platform, read_only, tools, created_at_ms, last_seen_at_ms}]}`", body = DeviceListJson)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(identity): Caller,
) -> ApiResult<Json<DeviceListJson>> {
    let devices = list_devices(&state, &identity, ListDevicesRequest {})
        .await?
        .devices;
    Ok(Json(DeviceListJson {
        devices: devices.into_iter().map(DeviceJson::from).collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/me/devices/{id}", tag = "devices", params(("id" = String, Path, description = "The device id")),
    responses((status = 204, description = "Deleted: its token stops working and a connected device is disconnected")))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    delete_device(&state, &identity, DeleteDeviceRequest { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

// The WebSocket subprotocol a device speaks is DEVICE_PROTOCOL. A browser cannot set
// `Authorization` on a WebSocket, so it offers its token as a second subprotocol,
// `pa-device-token.<token>`; the gateway answers with DEVICE_PROTOCOL only, so the token is
// never echoed back.

/// The device token: `Authorization: Bearer <token>`, else the token subprotocol.
fn device_token(headers: &axum::http::HeaderMap) -> Option<String> {
    let from_authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string());
    let from_protocol = || {
        headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|p| p.trim().strip_prefix(TOKEN_PROTOCOL_PREFIX))
            .map(str::to_string)
    };
    from_authorization
        .or_else(from_protocol)
        .filter(|t| !t.is_empty())
}

#[utoipa::path(get, path = "/v1/devices/connect", tag = "devices",
    params(("Authorization" = String, Header, description = "`Bearer <device token>`; a browser, which cannot set it, offers the subprotocols `pa-device, pa-device-token.<device token>` instead (the answer selects `pa-device`)")),
    responses((status = 101, description = "WebSocket: the device's hello, then calls → results (JSON text frames)")))]
pub async fn connect(State(state): State<AppState>, req: Request) -> Response {
    let (mut parts, _body) = req.into_parts();
    let Some(token) = device_token(&parts.headers) else {
        return ApiError::from(PaError::unauthenticated(
            "missing Authorization: Bearer <device token> (or the subprotocol pa-device-token.<token>)",
        ))
        .into_response();
    };
    let internal = pa_kit::identity::internal_identity(GATEWAY);
    let authenticated = state
        .tools
        .clone()
        .authenticate_device(state.auth.request(
            &internal,
            AuthenticateDeviceRequest {
                device_token: token,
            },
        ))
        .await;
    let device = match authenticated {
        Ok(answer) => match answer.into_inner().device {
            Some(device) => device,
            None => return ApiError::from(PaError::internal("no device")).into_response(),
        },
        Err(status) => return ApiError::from(status).into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    upgrade
        .protocols([DEVICE_PROTOCOL])
        .max_message_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            let id = device.id.clone();
            if let Err(err) = session(state, device, socket).await {
                tracing::info!(device = %id, %err, "device socket ended with an error");
            }
        })
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn text(frame: &GatewayFrame) -> Result<Message, BoxError> {
    Ok(Message::Text(Utf8Bytes::from(serde_json::to_string(
        frame,
    )?)))
}

/// What the device is sent for a call or a cancel from the bus.
fn frame_of(call: BusCall) -> GatewayFrame {
    match call {
        BusCall::Call {
            id,
            tool,
            arguments,
            run_id,
        } => GatewayFrame::Call {
            id,
            tool,
            arguments,
            run_id,
        },
        BusCall::Cancel { id } => GatewayFrame::Cancel { id },
    }
}

/// Pushes a call's result where its caller waits.
async fn deliver(state: &AppState, call_id: &str, result: &BusResult) -> Result<(), BoxError> {
    let mut conn = state.redis.get().await?;
    let key = device_bus::result_key(call_id);
    redis::pipe()
        .rpush(&key, serde_json::to_string(result)?)
        .pexpire(&key, device_bus::RESULT_TTL.as_millis() as i64)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

/// Sets the online key to this connection.
async fn mark_online(state: &AppState, device_id: &str, connection: &str) -> Result<(), BoxError> {
    let mut conn = state.redis.get().await?;
    let ttl = device_bus::ONLINE_TTL.as_millis() as u64;
    let _: () = conn
        .pset_ex(device_bus::online_key(device_id), connection, ttl)
        .await?;
    Ok(())
}

/// Removes the online key if it is still this connection's (a newer connection of the same
/// device keeps its own).
async fn mark_offline(state: &AppState, device_id: &str, connection: &str) -> Result<(), BoxError> {
    let mut conn = state.redis.get().await?;
    let _: i64 = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
    .key(device_bus::online_key(device_id))
    .arg(connection)
    .invoke_async(&mut conn)
    .await?;
    Ok(())
}

async fn session(state: AppState, device: Device, socket: WebSocket) -> Result<(), BoxError> {
    let (mut tx, mut rx) = socket.split();
    // The device announces itself first.
    let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
        loop {
            match rx.next().await {
                Some(Ok(Message::Text(body))) => return Some(body),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .ok()
    .flatten()
    .ok_or("no hello from the device")?;
    let (platform, read_only, tools) = match DeviceFrame::parse(hello.as_str()) {
        Ok(DeviceFrame::Hello {
            platform,
            read_only,
            tools,
            ..
        }) => (platform, read_only, tools),
        other => {
            let why = match other {
                Ok(frame) => format!("it was a {}", frame.tag()),
                Err(err) => err.to_string(),
            };
            let message = format!("the first frame must be hello ({why})");
            let _ = tx.send(text(&GatewayFrame::Error { message })?).await;
            return Err(format!("the first frame was not a hello: {why}").into());
        }
    };
    let connection = uuid::Uuid::new_v4().simple().to_string();
    let tools: Vec<DeviceTool> = tools
        .into_iter()
        .map(|t| DeviceTool {
            name: t.name,
            description: t.description,
            parameters_json_schema: t.parameters.to_string(),
            privilege_class: t.privilege_class,
        })
        .collect();
    let internal = pa_kit::identity::internal_identity(GATEWAY);
    let online = SetDeviceOnlineRequest {
        device_id: device.id.clone(),
        connection_id: connection.clone(),
        heartbeat: false,
        platform,
        read_only,
        tools,
    };
    if let Err(status) = state
        .tools
        .clone()
        .set_device_online(state.auth.request(&internal, online))
        .await
    {
        let _ = tx
            .send(text(&GatewayFrame::Error {
                message: status.message().to_string(),
            })?)
            .await;
        return Err(format!("device refused: {}", status.message()).into());
    }
    // Subscribe before announcing the device online, so no call is published into the void.
    let client = redis::Client::open(state.redis_url.as_str())?;
    let mut pubsub = client.get_async_pubsub().await?;
    let channel = device_bus::calls_channel(&connection);
    pubsub.subscribe(&channel).await?;
    let (mut subscription, mut calls) = pubsub.split();
    mark_online(&state, &device.id, &connection).await?;
    tracing::info!(device = %device.id, name = %device.name, %connection, "device online");
    tx.send(text(&GatewayFrame::Welcome {
        device_id: device.id.clone(),
        name: device.name.clone(),
    })?)
    .await?;

    let mut in_flight: HashSet<String> = HashSet::new();
    let mut heartbeat = tokio::time::interval(device_bus::HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let result: Result<(), BoxError> = async {
        loop {
            tokio::select! {
                frame = rx.next() => {
                    last_heard = tokio::time::Instant::now();
                    let body = match frame {
                        Some(Ok(Message::Text(body))) => body,
                        Some(Ok(Message::Close(_))) | None => return Ok(()),
                        Some(Ok(_)) => continue, // pings are answered by the library
                        Some(Err(err)) => return Err(err.into()),
                    };
                    match DeviceFrame::parse(body.as_str()) {
                        Ok(DeviceFrame::Result { id, content, is_error }) => {
                            if in_flight.remove(&id) {
                                deliver(&state, &id, &BusResult { content, is_error }).await?;
                            }
                        }
                        Ok(DeviceFrame::Hello { .. } | DeviceFrame::Ping {}) => {}
                        Err(err) => tracing::debug!(%err, "unreadable frame from a device"),
                    }
                }
                message = calls.next() => {
                    let Some(message) = message else {
                        return Err("the call subscription ended".into());
                    };
                    let Ok(payload) = message.get_payload::<String>() else { continue };
                    match serde_json::from_str::<BusCall>(&payload) {
                        Ok(call) => {
                            match &call {
                                BusCall::Call { id, .. } => in_flight.insert(id.clone()),
                                BusCall::Cancel { id } => in_flight.remove(id),
                            };
                            tx.send(text(&frame_of(call))?).await?;
                        }
                        Err(err) => tracing::warn!(%err, "unreadable device call"),
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > DEAD_AFTER {
                        return Err("the device went silent".into());
                    }
                    mark_online(&state, &device.id, &connection).await?;
                    let beat = SetDeviceOnlineRequest {
                        device_id: device.id.clone(),
                        connection_id: connection.clone(),
                        heartbeat: true,
                        ..Default::default()
                    };
                    if let Err(status) = state.tools.clone().set_device_online(state.auth.request(&internal, beat)).await {
                        if status.code() == tonic::Code::NotFound {
                            let _ = tx.send(Message::Close(None)).await;
                            return Err("the device was deleted".into());
                        }
                        tracing::warn!(device = %device.id, error = %status.message(), "device heartbeat not recorded");
                    }
                    tx.send(Message::Ping(Default::default())).await?;
                }
                _ = state.shutdown.triggered() => {
                    let _ = tx.send(Message::Close(None)).await;
                    return Ok(());
                }
            }
        }
    }
    .await;

    // Gone: no new calls reach this connection (a publish now finds no subscriber and fails
    // at once), and the ones in flight fail now — with those published just before the
    // unsubscribe, still queued on the subscription.
    if let Err(err) = mark_offline(&state, &device.id, &connection).await {
        tracing::warn!(device = %device.id, %err, "cannot clear the online key (it expires)");
    }
    match subscription.unsubscribe(&channel).await {
        Ok(()) => {
            while let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_millis(100), calls.next()).await
            {
                if let Ok(BusCall::Call { id, .. }) = message
                    .get_payload::<String>()
                    .map_err(|_| ())
                    .and_then(|p| serde_json::from_str::<BusCall>(&p).map_err(|_| ()))
                {
                    in_flight.insert(id);
                }
            }
        }
        Err(err) => {
            tracing::warn!(device = %device.id, %err, "cannot unsubscribe a device's calls")
        }
    }
    drop((subscription, calls));
    let failure = BusResult {
        content: format!(
            "the device {:?} disconnected during the call; it did not finish",
            device.name
        ),
        is_error: true,
    };
    for id in in_flight {
        if let Err(err) = deliver(&state, &id, &failure).await {
            tracing::warn!(call = %id, %err, "cannot fail an in-flight device call");
        }
    }
    let offline = SetDeviceOfflineRequest {
        device_id: device.id.clone(),
        connection_id: connection.clone(),
    };
    if let Err(status) = state
        .tools
        .clone()
        .set_device_offline(state.auth.request(&internal, offline))
        .await
    {
        tracing::warn!(device = %device.id, error = %status.message(), "cannot record the device offline");
    }
    tracing::info!(device = %device.id, %connection, "device offline");
    result
}

// The operation layer of devices (ADR 0211): the REST handlers above and the public gRPC
// ToolService call these.

forward_operation!(
    /// `ToolService/CreateDeviceEnrollment`: a one-time code for a new device of the caller's.
    create_device_enrollment(tools.create_device_enrollment, CreateDeviceEnrollmentRequest) -> DeviceEnrollment
);

/// `ToolService/EnrollDevice`: no user login, the one-time code is the credential.
pub(crate) async fn enroll_device(
    state: &AppState,
    request: EnrollDeviceRequest,
) -> Result<EnrollDeviceResponse, PaError> {
    let internal = pa_kit::identity::internal_identity(GATEWAY);
    Ok(state
        .tools
        .clone()
        .enroll_device(state.auth.request(&internal, request))
        .await?
        .into_inner())
}

forward_operation!(
    /// `ToolService/ListDevices`.
    list_devices(tools.list_devices, ListDevicesRequest) -> ListDevicesResponse
);

forward_operation!(
    /// `ToolService/DeleteDevice`: its token stops working, a connected device is disconnected.
    delete_device(tools.delete_device, DeleteDeviceRequest) -> DeleteDeviceResponse
);

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn the_device_token_comes_from_authorization_or_the_token_subprotocol() {
        let mut headers = HeaderMap::new();
        assert_eq!(device_token(&headers), None);
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("pa-device, pa-device-token.pad_abc_def"),
        );
        assert_eq!(device_token(&headers).as_deref(), Some("pad_abc_def"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer pad_x_y"),
        );
        assert_eq!(device_token(&headers).as_deref(), Some("pad_x_y"));

        let mut empty = HeaderMap::new();
        empty.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("pa-device, pa-device-token."),
        );
        assert_eq!(device_token(&empty), None);
    }

    #[test]
    fn a_browser_ping_is_a_frame() {
        assert!(matches!(
            DeviceFrame::parse(r#"{"type":"ping"}"#),
            Ok(DeviceFrame::Ping {})
        ));
    }

    #[test]
    fn a_call_from_the_bus_reaches_the_device_as_the_bus_wrote_it() {
        let calls = [
            BusCall::Call {
                id: "c1".into(),
                tool: "fs_read".into(),
                arguments: serde_json::json!({"path": "a"}),
                run_id: "r1".into(),
            },
            BusCall::Call {
                id: "c2".into(),
                tool: "fs_list".into(),
                arguments: serde_json::Value::Null,
                run_id: String::new(),
            },
            BusCall::Cancel { id: "c1".into() },
        ];
        for call in calls {
            let bus = serde_json::to_value(&call).unwrap();
            let wire = serde_json::to_value(frame_of(call)).unwrap();
            assert_eq!(wire, bus);
        }
    }
}
