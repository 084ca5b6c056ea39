//! `GET /v1/control`: the WebSocket for run control and presence.
//!
//! Authentication: the same credential as the REST API. Browsers cannot set headers on a
//! WebSocket, so the token may come as a subprotocol: offer `["pa.control.v1", "bearer.<token>"]`;
//! the server answers with `pa.control.v1`. An `Authorization: Bearer` header works too.
//!
//! Messages are JSON text frames:
//! - client → server: `{"type":"hello","client_id","kind":"web|terminal|device|other","label"}`
//!   registers this connection as one of the user's online clients;
//!   `{"type":"cancel","id","run_id"}`, `{"type":"approve"|"deny","id","run_id","tool_call_id",
//!   "reason"?}` are forwarded to svc-runs (ControlService.SendControl) and answered with
//!   `{"type":"ack","id","run_id","accepted","detail"}` or `{"type":"error","id","code","message"}`;
//!   `{"type":"ping"}` → `{"type":"pong"}`.
//! - server → client: `{"type":"presence","clients":[{client_id,kind,label,since_ms,seen_at_ms}]}`
//!   at connect and whenever the user's set of online clients changes.
//!
//! Presence lives in Redis so every gateway replica sees every client: a sorted set per user
//! (member = client id, score = expiry in ms, refreshed every heartbeat, so a crashed replica's
//! clients vanish on their own) plus a hash of their descriptions; each change is published on
//! one channel, and every replica re-reads the set for its sockets of that user.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use deadpool_redis::redis::AsyncCommands;
use futures::{SinkExt, StreamExt};
use pa_kit::PaError;
use pa_kit::error::ErrorCodeExt;
use pa_proto::v1::control_command::{CancelRun, Command, ToolCallDecision};
use pa_proto::v1::{ControlCommand, Identity};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast;

use crate::auth::Caller;
use crate::presence::CHANGED_CHANNEL;
use crate::state::AppState;

pub const PROTOCOL: &str = "pa.control.v1";
const BEARER_PROTOCOL_PREFIX: &str = "bearer.";
const HEARTBEAT: Duration = Duration::from_secs(10);
/// A client not refreshed for this long is gone (its replica died without saying so).
const PRESENCE_TTL: Duration = Duration::from_secs(30);
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Hello {
        client_id: String,
        #[serde(default)]
        kind: String,
        #[serde(default)]
        label: String,
    },
    Cancel {
        #[serde(default)]
        id: String,
        run_id: String,
    },
    Approve {
        #[serde(default)]
        id: String,
        run_id: String,
        tool_call_id: String,
        #[serde(default)]
        reason: String,
    },
    Deny {
        #[serde(default)]
        id: String,
        run_id: String,
        tool_call_id: String,
        #[serde(default)]
        reason: String,
    },
    Ping,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct PresenceClient {
    pub client_id: String,
    pub kind: String,
    pub label: String,
    pub since_ms: i64,
    pub seen_at_ms: i64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The bearer token offered as a `bearer.<token>` subprotocol, if any.
fn protocol_token(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

#[utoipa::path(get, path = "/v1/control", tag = "control", params(("Sec-WebSocket-Protocol" = String, Header, description = "`pa.control.v1, bearer.<token>`")), responses((status = 101, description = "WebSocket: JSON frames hello, cancel, approve/deny -> ack/error; presence")))]
pub async fn control(State(state): State<AppState>, req: Request) -> Response {
    let (mut parts, _body) = req.into_parts();
    if !parts.headers.contains_key(header::AUTHORIZATION)
        && let Some(token) = protocol_token(&parts.headers)
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        parts.headers.insert(header::AUTHORIZATION, value);
    }
    let identity = match Caller::from_request_parts(&mut parts, &state).await {
        Ok(Caller(identity)) => identity,
        Err(err) => return err.into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    upgrade
        .protocols([PROTOCOL])
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            if let Err(err) = session(state, identity, socket).await {
                tracing::debug!(%err, "control socket ended with an error");
            }
        })
}

/// The Redis key of a user's online clients.
fn presence_key(identity: &Identity) -> String {
    pa_bus::keys::presence(&identity.tenant_id, &identity.user_id)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Adds or refreshes this connection's entry; `announce` publishes the change. Entries are per
/// connection (`member`), so a reloaded tab's old socket closing late never removes the new one.
async fn register(
    state: &AppState,
    key: &str,
    member: &str,
    client: &PresenceClient,
    announce: bool,
) -> Result<(), BoxError> {
    let mut conn = state.redis.get().await?;
    let info = serde_json::to_string(client)?;
    let expires = now_ms() + PRESENCE_TTL.as_millis() as i64;
    let keep = (PRESENCE_TTL * 2).as_millis() as i64;
    let mut pipe = deadpool_redis::redis::pipe();
    pipe.zadd(key, member, expires)
        .hset(format!("{key}:info"), member, info)
        .pexpire(key, keep)
        .pexpire(format!("{key}:info"), keep);
    if announce {
        pipe.publish(CHANGED_CHANNEL, key);
    }
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

async fn unregister(state: &AppState, key: &str, member: &str) -> Result<(), BoxError> {
    let mut conn = state.redis.get().await?;
    deadpool_redis::redis::pipe()
        .zrem(key, member)
        .hdel(format!("{key}:info"), member)
        .publish(CHANGED_CHANNEL, key)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

/// The user's clients that are online now (expired ones are pruned).
pub async fn online_clients(
    redis: &pa_kit::redis::Pool,
    key: &str,
) -> Result<Vec<PresenceClient>, BoxError> {
    let mut conn = redis.get().await?;
    let now = now_ms();
    let _: i64 = conn.zrembyscore(key, "-inf", now).await?;
    let live: Vec<(String, f64)> = conn.zrange_withscores(key, 0, -1).await?;
    if live.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = live.iter().map(|(id, _)| id.as_str()).collect();
    let infos: Vec<Option<String>> = deadpool_redis::redis::cmd("HMGET")
        .arg(format!("{key}:info"))
        .arg(&ids)
        .query_async(&mut conn)
        .await?;
    // One entry per client id (a reloaded tab may briefly have two connections): the newest.
    let mut by_client: HashMap<String, PresenceClient> = HashMap::new();
    for ((_, expires), info) in live.iter().zip(infos) {
        let Some(mut c) = info.and_then(|s| serde_json::from_str::<PresenceClient>(&s).ok()) else {
            continue;
        };
        c.seen_at_ms = *expires as i64 - PRESENCE_TTL.as_millis() as i64;
        match by_client.get(&c.client_id) {
            Some(old) if old.since_ms > c.since_ms => {}
            _ => {
                by_client.insert(c.client_id.clone(), c);
            }
        }
    }
    let mut clients: Vec<PresenceClient> = by_client.into_values().collect();
    clients.sort_by(|a, b| {
        a.since_ms
            .cmp(&b.since_ms)
            .then(a.client_id.cmp(&b.client_id))
    });
    Ok(clients)
}

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

fn error_frame(id: &str, err: &PaError) -> serde_json::Value {
    json!({ "type": "error", "id": id, "code": err.code.slug(), "message": err.message })
}

async fn forward(
    state: &AppState,
    identity: &Identity,
    id: &str,
    run_id: String,
    command: Command,
) -> serde_json::Value {
    if run_id.is_empty() {
        return error_frame(id, &PaError::bad_request("run_id is required"));
    }
    let request = state.auth.request(
        identity,
        ControlCommand {
            run_id,
            command: Some(command),
        },
    );
    match state.control.clone().send_control(request).await {
        Ok(ack) => {
            let ack = ack.into_inner();
            json!({ "type": "ack", "id": id, "run_id": ack.run_id, "accepted": ack.accepted, "detail": ack.detail })
        }
        Err(status) => error_frame(id, &PaError::from_status(&status)),
    }
}

async fn session(state: AppState, identity: Identity, socket: WebSocket) -> Result<(), BoxError> {
    let hub = state.presence.clone();
    hub.ensure_subscribed(state.shutdown.clone()).await;
    let mut changes = hub.changes.subscribe();
    let key = presence_key(&identity);
    let (mut tx, mut rx) = socket.split();
    let member_suffix = uuid::Uuid::new_v4().simple().to_string();
    let member_of = |c: &PresenceClient| format!("{}/{member_suffix}", c.client_id);
    let mut me: Option<PresenceClient> = None;
    let mut last_sent: Option<Vec<(String, String, String)>> = None;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Sends the presence list when the set of clients (not just their heartbeats) changed.
    macro_rules! send_presence {
        () => {{
            match online_clients(&state.redis, &key).await {
                Ok(clients) => {
                    let shape: Vec<_> = clients
                        .iter()
                        .map(|c| (c.client_id.clone(), c.kind.clone(), c.label.clone()))
                        .collect();
                    if last_sent.as_ref() != Some(&shape) {
                        last_sent = Some(shape);
                        let frame = json!({ "type": "presence", "clients": clients }).to_string();
                        tx.send(Message::Text(Utf8Bytes::from(frame))).await?;
                    }
                }
                Err(err) => tracing::warn!(%err, "cannot read presence"),
            }
        }};
    }

    send_presence!();
    let result: Result<(), BoxError> = async {
        loop {
            tokio::select! {
                msg = rx.next() => {
                    let text = match msg {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | None => break,
                        Some(Ok(_)) => continue, // pings are answered by the library
                        Some(Err(err)) => return Err(err.into()),
                    };
                    let reply = match serde_json::from_str::<ClientMessage>(text.as_str()) {
                        Err(err) => Some(error_frame("", &PaError::bad_request(format!("bad message: {err}")))),
                        Ok(ClientMessage::Ping) => Some(json!({ "type": "pong" })),
                        Ok(ClientMessage::Hello { client_id, kind, label }) => {
                            let kind = if kind.is_empty() { "other".to_string() } else { kind };
                            if !valid_name(&client_id, 64) || !valid_name(&kind, 32) || label.len() > 120 {
                                Some(error_frame("", &PaError::bad_request(
                                    "hello needs client_id (1-64 chars), kind (1-32) and label (≤120)")))
                            } else {
                                if let Some(old) = me.take() && old.client_id != client_id {
                                    unregister(&state, &key, &member_of(&old)).await?;
                                }
                                let now = now_ms();
                                let client = PresenceClient { client_id, kind, label, since_ms: now, seen_at_ms: now };
                                register(&state, &key, &member_of(&client), &client, true).await?;
                                me = Some(client);
                                send_presence!();
                                None
                            }
                        }
                        Ok(ClientMessage::Cancel { id, run_id }) => {
                            Some(forward(&state, &identity, &id, run_id, Command::Cancel(CancelRun {})).await)
                        }
                        Ok(ClientMessage::Approve { id, run_id, tool_call_id, reason }) => {
                            let d = ToolCallDecision { tool_call_id, approved: true, reason };
                            Some(forward(&state, &identity, &id, run_id, Command::ToolCallDecision(d)).await)
                        }
                        Ok(ClientMessage::Deny { id, run_id, tool_call_id, reason }) => {
                            let d = ToolCallDecision { tool_call_id, approved: false, reason };
                            Some(forward(&state, &identity, &id, run_id, Command::ToolCallDecision(d)).await)
                        }
                    };
                    if let Some(reply) = reply {
                        tx.send(Message::Text(Utf8Bytes::from(reply.to_string()))).await?;
                    }
                }
                changed = changes.recv() => {
                    match changed {
                        Ok(k) if k == key || k.is_empty() => send_presence!(),
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => send_presence!(),
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
                _ = heartbeat.tick() => {
                    if let Some(c) = &me {
                        register(&state, &key, &member_of(c), c, false).await?;
                    }
                    // Also notices clients of a dead replica expiring.
                    send_presence!();
                }
                _ = state.shutdown.triggered() => {
                    let _ = tx.send(Message::Close(None)).await;
                    break;
                }
            }
        }
        Ok(())
    }
    .await;
    if let Some(c) = me
        && let Err(err) = unregister(&state, &key, &member_of(&c)).await
    {
        tracing::warn!(%err, "cannot remove a presence entry (it expires on its own)");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_can_come_as_a_subprotocol() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("pa.control.v1, bearer.abc.def-ghi"),
        );
        assert_eq!(protocol_token(&h).as_deref(), Some("abc.def-ghi"));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("pa.control.v1"),
        );
        assert_eq!(protocol_token(&h), None);
    }

    #[test]
    fn presence_keys_of_different_users_differ() {
        let id = |t: &str, u: &str| Identity {
            tenant_id: t.into(),
            user_id: u.into(),
            ..Default::default()
        };
        assert_ne!(presence_key(&id("a:b", "c")), presence_key(&id("a", "b:c")));
    }
}
