//! StreamChat: resolves the key for each model of the chain, calls the provider, relays its
//! output as it arrives, and falls back to the next model on a provider error that happens
//! **before the first streamed output** — never after. Every attempt is reported; usage of the
//! call that answered is recorded. Governance is checked again for every model of the chain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pa_kit::{PaError, Shutdown};
use pa_proto::v1::{
    ChatFailure, ChatFinish, Identity, ModelAttempt, StreamChatChunk, StreamChatRequest, Usage,
    stream_chat_chunk::Chunk,
};
use tokio::sync::mpsc;

use crate::breaker::Breakers;
use crate::catalog::{Catalog, CatalogModel, Provider, Snapshot};
use crate::governance::{classification_of, enforce_classification};
use crate::keys::{KeyEncryption, KeyStore, Secret};
use crate::offline;
use crate::provider::{self, ProviderError, ProviderEvent};
use crate::usage::{UsageStore, cost_micros};

/// Timeouts of provider calls.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub first_byte: Duration,
    pub idle: Duration,
}

/// Everything StreamChat needs; cheap to clone.
#[derive(Clone)]
pub struct Relay {
    pub catalog: Catalog,
    pub keys: KeyStore,
    pub enc: Arc<KeyEncryption>,
    pub usage: UsageStore,
    pub http: reqwest::Client,
    /// The address policy `http` connects under; base URLs are checked with it when set.
    pub net_guard: pa_netguard::AddressGuard,
    pub breakers: Breakers,
    pub timeouts: Timeouts,
    pub offline_token_delay: Duration,
    pub shutdown: Shutdown,
}

/// The key a call to `provider` uses: the user's own (BYOK) first, else the platform key.
pub enum KeyChoice {
    None,
    User(Secret),
    Platform(Secret),
}

impl KeyChoice {
    pub fn source(&self) -> &'static str {
        match self {
            KeyChoice::None => "none",
            KeyChoice::User(_) => "user",
            KeyChoice::Platform(_) => "platform",
        }
    }
    fn secret(&self) -> Option<&Secret> {
        match self {
            KeyChoice::None => None,
            KeyChoice::User(s) | KeyChoice::Platform(s) => Some(s),
        }
    }
}

/// Which models a caller could call at all: the offline model, providers with a platform key,
/// and providers the caller holds a key for.
pub struct Callable {
    keyless: Vec<String>,
    own_keys: Vec<String>,
}

impl Callable {
    pub fn allows(&self, model: &CatalogModel) -> bool {
        self.keyless.contains(&model.info.provider) || self.own_keys.contains(&model.info.provider)
    }
}

/// The associated data a provider's own key (the platform's, or a tenant's for its own
/// provider) is sealed with: a key copied to another provider row does not open there.
pub fn provider_key_aad(tenant: &str, provider: &str) -> String {
    if tenant == crate::catalog::PLATFORM {
        format!("platform-key/{provider}")
    } else {
        format!("tenant-key/{tenant}/{provider}")
    }
}

impl Relay {
    pub async fn key_for(
        &self,
        identity: &Identity,
        provider: &Provider,
    ) -> Result<KeyChoice, PaError> {
        if provider.kind == "offline" {
            return Ok(KeyChoice::None);
        }
        if let Some((secret, bound)) = self.keys.get(identity, &provider.id).await? {
            // A key goes only where it was given for (ADR 0130): never silently to a base URL
            // that changed since, and never swapped for the platform key behind the user's back.
            if !bound.is_empty() && bound != provider.base_url {
                return Err(PaError::new(
                    pa_kit::ErrorCode::FailedPrecondition,
                    format!(
                        "the base URL of provider {p} changed since you stored your key (it was \
                         given for {bound}, the provider now points at {now}); your key is not \
                         sent there until you confirm with POST /v1/me/keys/{p}/confirm \
                         {{\"base_url\": \"{now}\"}} or store it again",
                        p = provider.id,
                        now = provider.base_url,
                    ),
                ));
            }
            return Ok(KeyChoice::User(secret));
        }
        if let Some(sealed) = &provider.platform_key {
            return Ok(KeyChoice::Platform(self.enc.open(
                sealed,
                &provider_key_aad(&provider.tenant_id, &provider.id),
            )?));
        }
        Err(PaError::new(
            pa_kit::ErrorCode::FailedPrecondition,
            format!(
                "no API key for provider {p}: add yours with PUT /v1/me/keys/{p}, or ask an admin for a platform key",
                p = provider.id
            ),
        ))
    }

    /// Refuses a provider base URL the network guard would not connect to, with the reason.
    pub async fn check_base_url(&self, base_url: &str) -> Result<(), PaError> {
        let url = reqwest::Url::parse(base_url.trim())
            .map_err(|e| PaError::bad_request(format!("base_url is not a URL: {e}")))?;
        self.net_guard.check_reachable(&url).await.map_err(|e| {
            PaError::bad_request(format!(
                "base_url {e}; an operator can allow it with PA_MODELS_NET_ALLOW"
            ))
        })
    }

    /// The caller's [`Callable`]; their own keys are looked up only when some usable model
    /// needs one (a catalog of keyless models costs no query).
    pub async fn callable(
        &self,
        identity: &Identity,
        snapshot: &Snapshot,
    ) -> Result<Callable, PaError> {
        let keyless: Vec<String> = snapshot
            .providers
            .iter()
            .filter(|p| p.kind == "offline" || p.platform_key.is_some())
            .map(|p| p.id.clone())
            .collect();
        let own_keys = if snapshot
            .usable_models()
            .any(|m| !keyless.contains(&m.info.provider))
        {
            self.keys
                .list(identity)
                .await?
                .into_iter()
                .map(|k| k.provider)
                .collect()
        } else {
            Vec::new()
        };
        Ok(Callable { keyless, own_keys })
    }

    /// Runs the call on a task; the returned channel carries its chunks.
    pub fn stream(
        &self,
        identity: Identity,
        request: StreamChatRequest,
    ) -> mpsc::Receiver<Result<StreamChatChunk, tonic::Status>> {
        let (tx, rx) = mpsc::channel(64);
        let relay = self.clone();
        tokio::spawn(async move {
            let chunk = relay.run(&identity, request, &tx).await;
            let _ = tx.send(Ok(StreamChatChunk { chunk: Some(chunk) })).await;
        });
        rx
    }

    /// Tries the chain; returns the closing chunk (finish or failure). Output is sent on `tx`.
    async fn run(
        &self,
        identity: &Identity,
        request: StreamChatRequest,
        tx: &mpsc::Sender<Result<StreamChatChunk, tonic::Status>>,
    ) -> Chunk {
        let mut attempts: Vec<ModelAttempt> = Vec::new();
        let failure = |code: &str, message: String, attempts: Vec<ModelAttempt>, after: bool| {
            Chunk::Failure(ChatFailure {
                code: code.into(),
                message,
                attempts,
                after_first_token: after,
            })
        };
        let snapshot = match self.catalog.snapshot(&identity.tenant_id).await {
            Ok(s) => s,
            Err(e) => {
                let e = PaError::from(e);
                return failure(
                    pa_kit::error::ErrorCodeExt::slug(e.code),
                    e.message,
                    attempts,
                    false,
                );
            }
        };
        let classification = match classification_of(request.classification) {
            Ok(c) => c,
            Err(e) => return failure("policy_denied", e.to_string(), attempts, false),
        };
        let mut chain = vec![request.label.clone()];
        for label in &request.fallback_labels {
            if !chain.contains(label) {
                chain.push(label.clone());
            }
        }
        let mut last_error = (
            String::from("unavailable"),
            String::from("no model could be tried"),
        );
        for (position, label) in chain.iter().enumerate() {
            let started = Instant::now();
            let mut attempt = ModelAttempt {
                label: label.clone(),
                ..Default::default()
            };
            let refuse = |attempt: &mut ModelAttempt, code: &str, message: String| {
                attempt.outcome = "error".into();
                attempt.error_code = code.into();
                attempt.error_message = message;
            };
            let model = match snapshot.usable_model(label) {
                Ok(m) => m.clone(),
                Err(e) => {
                    let e = PaError::from(e);
                    if position == 0 {
                        attempt.error_code = pa_kit::error::ErrorCodeExt::slug(e.code).into();
                        refuse(
                            &mut attempt,
                            pa_kit::error::ErrorCodeExt::slug(e.code),
                            e.message.clone(),
                        );
                        attempts.push(attempt);
                        return failure(
                            pa_kit::error::ErrorCodeExt::slug(e.code),
                            e.message,
                            attempts,
                            false,
                        );
                    }
                    refuse(&mut attempt, "not_found", e.message);
                    attempts.push(attempt);
                    continue;
                }
            };
            // The gate again, for every model of the chain: fail closed.
            if let Err(e) = enforce_classification(&snapshot, identity, classification, &model) {
                refuse(&mut attempt, "policy_denied", e.to_string());
                attempts.push(attempt);
                last_error = ("policy_denied".into(), e.to_string());
                continue;
            }
            let Some(provider) = snapshot.provider(&model.info.provider).cloned() else {
                refuse(
                    &mut attempt,
                    "not_found",
                    format!("provider {} is missing", model.info.provider),
                );
                attempts.push(attempt);
                continue;
            };
            if !self.breakers.allows(&provider.key(), Instant::now()) {
                refuse(
                    &mut attempt,
                    "unavailable",
                    format!(
                        "provider {} is failing; skipped for now (circuit open)",
                        provider.id
                    ),
                );
                attempts.push(attempt);
                last_error = ("unavailable".into(), attempt_message(&attempts));
                continue;
            }
            let key = match self.key_for(identity, &provider).await {
                Ok(k) => k,
                Err(e) => {
                    let code = pa_kit::error::ErrorCodeExt::slug(e.code);
                    refuse(&mut attempt, code, e.message.clone());
                    attempts.push(attempt);
                    last_error = (code.into(), e.message);
                    continue;
                }
            };
            attempt.key_source = key.source().into();
            let outcome = if provider.kind == "offline" {
                self.offline(&request, tx).await
            } else {
                self.call_provider(&provider, &model, &key, &request, tx)
                    .await
            };
            attempt.latency_ms = started.elapsed().as_millis() as u64;
            match outcome {
                Ok((finish_reason, mut usage)) => {
                    self.breakers.success(&provider.key());
                    usage.cost_micros = cost_micros(
                        &usage,
                        model.info.input_price_micros,
                        model.info.output_price_micros,
                    );
                    usage.model_requests = 1;
                    if let Err(e) = self
                        .usage
                        .record(identity, &request.run_id, label, key.source(), &usage)
                        .await
                    {
                        tracing::error!(%e, run_id = %request.run_id, "cannot record usage");
                    }
                    attempt.outcome = "ok".into();
                    for (kind, tokens) in [
                        ("input", usage.input_tokens),
                        ("output", usage.output_tokens),
                        ("cached_input", usage.cached_input_tokens),
                    ] {
                        pa_kit::metrics::MODEL_TOKENS
                            .with_label_values(&[label.as_str(), kind])
                            .inc_by(tokens);
                    }
                    pa_kit::metrics::MODEL_ATTEMPTS
                        .with_label_values(&[label.as_str(), "ok"])
                        .inc();
                    attempts.push(attempt);
                    return Chunk::Finish(ChatFinish {
                        finish_reason,
                        usage: Some(usage),
                        served_label: label.clone(),
                        attempts,
                    });
                }
                Err(CallError {
                    error,
                    after_first_output,
                }) => {
                    if error.retryable {
                        self.breakers.failure(&provider.key(), Instant::now());
                    }
                    refuse(&mut attempt, error.code, error.message.clone());
                    pa_kit::metrics::MODEL_ATTEMPTS
                        .with_label_values(&[label.as_str(), error.code])
                        .inc();
                    attempts.push(attempt);
                    if after_first_output || !error.retryable {
                        return failure(error.code, error.message, attempts, after_first_output);
                    }
                    last_error = (error.code.into(), attempt_message(&attempts));
                }
            }
        }
        failure(&last_error.0, last_error.1, attempts, false)
    }

    async fn offline(
        &self,
        request: &StreamChatRequest,
        tx: &mpsc::Sender<Result<StreamChatChunk, tonic::Status>>,
    ) -> Result<(String, Usage), CallError> {
        let tokens = offline::reply_tokens(&request.messages);
        let usage = offline::usage(&request.messages, tokens.len());
        let stop = self.shutdown.token();
        for (i, token) in tokens.into_iter().enumerate() {
            if i > 0 && !self.offline_token_delay.is_zero() {
                // On shutdown the rest of the reply goes out at once, so draining runs end fast.
                tokio::select! {
                    _ = tokio::time::sleep(self.offline_token_delay) => {}
                    _ = stop.cancelled() => {}
                }
            }
            if tx
                .send(Ok(StreamChatChunk {
                    chunk: Some(Chunk::TextDelta(token)),
                }))
                .await
                .is_err()
            {
                return Err(CallError::gone());
            }
        }
        Ok(("stop".into(), usage))
    }

    async fn call_provider(
        &self,
        provider: &Provider,
        model: &CatalogModel,
        key: &KeyChoice,
        request: &StreamChatRequest,
        tx: &mpsc::Sender<Result<StreamChatChunk, tonic::Status>>,
    ) -> Result<(String, Usage), CallError> {
        let body = provider::chat_request(
            &model.info.model,
            &request.messages,
            &request.tools,
            request.max_output_tokens,
        );
        // Opening the stream is idempotent (nothing was produced yet): one quick retry with
        // jitter for a failed connection or a 5xx; a 429 goes straight to the next model.
        let mut tries = 0;
        let mut events = loop {
            tries += 1;
            match provider::stream_chat(
                &self.http,
                &provider.base_url,
                key.secret(),
                body.clone(),
                self.timeouts.first_byte,
                self.timeouts.idle,
            )
            .await
            {
                Ok(events) => break events,
                Err(e) if e.retryable && e.code == "unavailable" && tries < 2 => {
                    tokio::time::sleep(jitter(tries)).await;
                }
                Err(error) => {
                    return Err(CallError {
                        error,
                        after_first_output: false,
                    });
                }
            }
        };
        let mut produced = false;
        let mut usage = None;
        let mut finish_reason = String::from("stop");
        while let Some(event) = events.next().await {
            let chunk = match event {
                Ok(ProviderEvent::Text(text)) => Chunk::TextDelta(text),
                Ok(ProviderEvent::Reasoning(text)) => Chunk::ReasoningDelta(text),
                Ok(ProviderEvent::ToolCall(call)) => Chunk::ToolCall(call),
                Ok(ProviderEvent::Finished {
                    finish_reason: reason,
                    usage: u,
                }) => {
                    finish_reason = reason;
                    usage = u;
                    break;
                }
                Err(error) => {
                    return Err(CallError {
                        error,
                        after_first_output: produced,
                    });
                }
            };
            produced = true;
            if tx
                .send(Ok(StreamChatChunk { chunk: Some(chunk) }))
                .await
                .is_err()
            {
                return Err(CallError::gone());
            }
        }
        let usage = usage.unwrap_or_else(|| Usage {
            model_requests: 1,
            ..Default::default()
        });
        Ok((finish_reason, usage))
    }

    /// Models a user may pick, with the classifications each is allowed for.
    pub fn allowed_classifications(
        snapshot: &Snapshot,
        identity: &Identity,
        model: &CatalogModel,
    ) -> Vec<pa_proto::v1::DataClassification> {
        use pa_proto::v1::DataClassification as C;
        [C::Public, C::Internal, C::Confidential, C::Restricted]
            .into_iter()
            .filter(|c| enforce_classification(snapshot, identity, *c, model).is_ok())
            .collect()
    }
}

struct CallError {
    error: ProviderError,
    after_first_output: bool,
}

impl CallError {
    /// The caller went away: nothing more to do.
    fn gone() -> Self {
        Self {
            error: ProviderError {
                code: "cancelled",
                message: "the caller went away".into(),
                retryable: false,
            },
            after_first_output: true,
        }
    }
}

fn jitter(try_number: u32) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    Duration::from_millis(50 * u64::from(try_number) + u64::from(byte[0]) % 100)
}

fn attempt_message(attempts: &[ModelAttempt]) -> String {
    let tried: Vec<String> = attempts
        .iter()
        .map(|a| format!("{} ({}: {})", a.label, a.error_code, a.error_message))
        .collect();
    format!("every model failed: {}", tried.join("; "))
}
