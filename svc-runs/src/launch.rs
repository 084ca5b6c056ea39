//! `launch_run`: the one chokepoint that turns a request into a run. It validates, resolves the
//! model through svc-models (governance lives there), snapshots the toolset through svc-tools,
//! builds the [`RunSpec`], writes the Run row and hands the run to a driver. Nothing else builds
//! a RunSpec.

use pa_bus::run_events::EventSink;
use pa_kit::{InternalAuth, Shutdown};
use pa_proto::v1::memory_service_client::MemoryServiceClient;
use pa_proto::v1::model_service_client::ModelServiceClient;
use pa_proto::v1::tool_service_client::ToolServiceClient;
use pa_proto::v1::{
    AssembleToolsetRequest, CreateRunRequest, DataClassification, ForgetMemoryRequest, Identity,
    ModelNeeds, ResolveModelRequest, Run, RunInput, RunMode, RunSpec, RunStatus, UsageLimits,
};
use tonic::transport::Channel;

use crate::durable::DurableDriver;
use crate::error::RunsError;
use crate::inline::InlineDriver;
use crate::memo::Memo;
use crate::mode::{ModeFacts, decide_mode, has_long_running_tools};
use crate::run_start::RunStart;
use crate::store::RunStore;

pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
pub const MAX_ID_CHARS: usize = 128;
/// Longer than any model label; a run's start remembers what a requested model resolved to.
pub const MAX_MODEL_CHARS: usize = 200;

/// Client-chosen ids (AG-UI threadId/runId) must be short and URL/stream-key safe.
pub fn validate_client_id(kind: &str, id: &str) -> Result<(), RunsError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(RunsError::Invalid(format!(
            "{kind} must be 1-{MAX_ID_CHARS} characters of A-Z a-z 0-9 - _ ."
        )))
    }
}

/// Whether a JSON tool list (AG-UI `tools`) offers any tool.
fn has_tools(tools_json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(tools_json)
        .ok()
        .and_then(|v| v.as_array().map(|a| !a.is_empty()))
        .unwrap_or(false)
}

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Everything launch_run needs; cheap to clone. Built by [`Launcher::new`].
#[derive(Clone)]
pub struct Launcher {
    pub(crate) store: RunStore,
    models: ModelServiceClient<Channel>,
    tools: ToolServiceClient<Channel>,
    /// svc-memory: a deleted chat's memories are forgotten.
    memory: MemoryServiceClient<Channel>,
    auth: InternalAuth,
    pub(crate) limits: UsageLimits,
    pub(crate) driver: InlineDriver,
    pub(crate) durable: DurableDriver,
    pub(crate) sink: EventSink,
    shutdown: Shutdown,
    pub(crate) redis: pa_kit::redis::Pool,
    daily_token_budget: u64,
    /// The deployment's database (its users' toolset generations are under it).
    database: std::sync::Arc<str>,
    /// The classifications of chats runs were started in (a chat's never changes), so a run in
    /// a known chat needs no chat read before it resolves its model: the run row's insert
    /// checks the chat is still the caller's (issue 23).
    chat_classes: std::sync::Arc<ChatClasses>,
    /// The provider tags model resolutions last gave, per caller and request (ADR 0229).
    provider_tags: std::sync::Arc<ProviderTagsSeen>,
    /// Toolsets a chat's next run may use again while the user's toolset generation stays
    /// (ADR 0251).
    toolsets: std::sync::Arc<ToolsetsSeen>,
    /// Records durable starts svc-worker confirmed (ADR 0243); begun at the first.
    confirmer: std::sync::Arc<std::sync::OnceLock<crate::confirm::StartConfirmer>>,
}

/// `(tenant, user, chat) → classification`.
#[derive(Default)]
struct ChatClasses(Memo<(String, String, String), i32>);

impl ChatClasses {
    fn key(identity: &Identity, chat_id: &str) -> (String, String, String) {
        (
            identity.tenant_id.clone(),
            identity.user_id.clone(),
            chat_id.to_string(),
        )
    }

    /// The chat as far as a run's start needs it (id and classification), when known.
    fn chat(&self, identity: &Identity, chat_id: &str) -> Option<pa_proto::v1::Chat> {
        let classification = self.0.get(&Self::key(identity, chat_id))?;
        Some(pa_proto::v1::Chat {
            id: chat_id.to_string(),
            classification,
            ..Default::default()
        })
    }

    fn remember(&self, identity: &Identity, chat: &pa_proto::v1::Chat) {
        self.0
            .remember(Self::key(identity, &chat.id), chat.classification);
    }
}

/// `(tenant, user, model resolution request) → the provider tags it last resolved to`: the
/// guess a toolset is assembled with while the model is resolved (ADR 0229).
type ProviderTagsSeen = Memo<(String, String, Vec<u8>), Vec<String>>;

/// How long a toolset may be used again after its assembly, however its generation stands: a
/// bound on what a lost renewal (Redis failing right after a change was committed) or a new
/// svc-tools release can leave stale (ADR 0251). Far below any snapshot retention.
pub const TOOLSET_REUSE_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// `(tenant, user, chat, provider tags)`: what a reusable toolset was assembled for.
type ToolsetKey = (String, String, String, Vec<String>);

/// A toolset svc-tools said may be used again while the user's generation is `token`.
#[derive(Clone)]
struct ReusableToolset {
    toolset: std::sync::Arc<pa_proto::v1::Toolset>,
    token: String,
    assembled: std::time::Instant,
}

/// The last reusable toolset of each chat (a few KB each, so fewer than the other memos).
type ToolsetsSeen = Memo<ToolsetKey, ReusableToolset, 2_000>;

fn toolset_key(identity: &Identity, chat_id: &str, tags: &[String]) -> ToolsetKey {
    (
        identity.tenant_id.clone(),
        identity.user_id.clone(),
        chat_id.to_string(),
        tags.to_vec(),
    )
}

fn provider_tags_key(
    identity: &Identity,
    request: &ResolveModelRequest,
) -> (String, String, Vec<u8>) {
    (
        identity.tenant_id.clone(),
        identity.user_id.clone(),
        prost::Message::encode_to_vec(request),
    )
}

/// How runs are admitted: svc-runs' limits (`PA_RUN_*`, `PA_DAILY_TOKEN_BUDGET`).
#[derive(Clone, Debug)]
pub struct LaunchOptions {
    pub limits: UsageLimits,
    pub daily_token_budget: u64,
    /// The deployment's database: names its users' toolset generations in Redis (ADR 0251).
    pub database: String,
}

/// What a launcher talks to: the run store, the services a run's start asks, the two drivers
/// and the event bus.
#[derive(Clone)]
pub struct LaunchDeps {
    pub store: RunStore,
    pub models: ModelServiceClient<Channel>,
    pub tools: ToolServiceClient<Channel>,
    pub memory: MemoryServiceClient<Channel>,
    pub auth: InternalAuth,
    pub driver: InlineDriver,
    pub durable: DurableDriver,
    pub sink: EventSink,
    pub shutdown: Shutdown,
    pub redis: pa_kit::redis::Pool,
}

impl Launcher {
    pub fn new(options: LaunchOptions, deps: LaunchDeps) -> Self {
        let LaunchDeps {
            store,
            models,
            tools,
            memory,
            auth,
            driver,
            durable,
            sink,
            shutdown,
            redis,
        } = deps;
        Self {
            store,
            models,
            tools,
            memory,
            auth,
            limits: options.limits,
            driver,
            durable,
            sink,
            shutdown,
            redis,
            daily_token_budget: options.daily_token_budget,
            database: options.database.into(),
            chat_classes: Default::default(),
            provider_tags: Default::default(),
            toolsets: Default::default(),
            confirmer: Default::default(),
        }
    }
}

impl Launcher {
    /// The toolset this chat's last run with `tags` was given, when svc-tools said it may be used
    /// again, it is younger than [`TOOLSET_REUSE_WINDOW`] and the user's toolset generation is
    /// still the one it was assembled under (ADR 0251). Any doubt (no generation, Redis not
    /// answering) assembles anew.
    async fn reusable_toolset(
        &self,
        identity: &Identity,
        chat_id: &str,
        tags: &[String],
    ) -> Option<std::sync::Arc<pa_proto::v1::Toolset>> {
        let known = self.toolsets.get(&toolset_key(identity, chat_id, tags))?;
        if known.assembled.elapsed() > TOOLSET_REUSE_WINDOW {
            return None;
        }
        let current = pa_bus::toolset_generation::peek(
            &self.redis,
            &self.database,
            &identity.tenant_id,
            &identity.user_id,
        )
        .await
        .ok()
        .flatten()?;
        (current == known.token).then_some(known.toolset)
    }

    /// Starts a durable run's workflow, after its row was written: the run is this instance's
    /// (held by its driver, so the instance beats for it; a replica ends it if this instance
    /// dies) until svc-worker confirms the start, then Temporal's (ADR 0243, `confirm`). A start
    /// that fails ends the run with the reason (RUN_ERROR) and gives its tokens back.
    async fn start_durable(
        &self,
        spec: &RunSpec,
        start: RunStart,
        context: crate::inline::ContextRead,
        mut held: HeldTokens,
        retry_for: std::time::Duration,
    ) -> Result<(), pa_kit::PaError> {
        let started = async {
            // Recalled here, not in the workflow: the workflow replays what it was given (a
            // recall still running is handed to its first model turn).
            let context = context
                .finish_or_hand_over(start, &self.redis, &spec.run_id, self.driver.recall.timeout)
                .await?;
            self.durable.start(spec.clone(), context, retry_for).await
        };
        if let Err(err) = started.await {
            self.driver.fail(spec, &err).await;
            self.driver.forget(&spec.run_id);
            return Err(err);
        }
        // The run settles its share when it ends.
        held.keep();
        self.confirmer
            .get_or_init(|| crate::confirm::StartConfirmer::spawn(self.driver.clone()))
            .confirm(spec.run_id.clone());
        Ok(())
    }
}

/// Tokens a user run holds when no per-run limit (`PA_RUN_MAX_TOTAL_TOKENS`) says otherwise
/// and a daily budget is set.
pub const DEFAULT_RUN_RESERVATION: u64 = 16_000;

/// A run's share of the daily budget, given back unless the run started (every early return of
/// launch_plan after the reservation drops it armed).
#[derive(Default)]
struct HeldTokens {
    redis: Option<pa_kit::redis::Pool>,
    tenant: String,
    user: String,
    reservation: Option<pa_bus::limits::TokenReservation>,
}

impl HeldTokens {
    /// The run owns its share now (it settles it when it ends).
    fn keep(&mut self) {
        self.reservation = None;
    }
}

impl Drop for HeldTokens {
    fn drop(&mut self) {
        if let (Some(redis), Some(reservation)) = (self.redis.take(), self.reservation.take()) {
            let (tenant, user) = (
                std::mem::take(&mut self.tenant),
                std::mem::take(&mut self.user),
            );
            tokio::spawn(async move {
                if let Err(err) =
                    pa_bus::limits::settle_tokens(&redis, &tenant, &user, Some(reservation), 0)
                        .await
                {
                    tracing::warn!(%err, "cannot give back the tokens of a run that did not start");
                }
            });
        }
    }
}

/// What launch_plan starts: a user's run, or a sub-agent's.
pub(crate) struct LaunchPlan {
    pub run_id: String,
    /// The id came from the client (a stale stream under it is removed).
    pub client_chose_id: bool,
    pub chat: pa_proto::v1::Chat,
    /// As requested ("" = auto).
    pub model: String,
    pub input: RunInput,
    pub requested_durable: bool,
    pub sub_run: Option<SubRunPlan>,
}

/// A sub-agent run's place under its parent.
pub(crate) struct SubRunPlan {
    pub parent_run_id: String,
    pub depth: u32,
    /// explore | delegate
    pub kind: String,
    /// What is left of the parent's budget.
    pub limits: UsageLimits,
    /// A step of a run_agents_script (durable).
    pub scripted: bool,
    /// The parent had ingested untrusted content when it wrote the task: the sub-run starts
    /// tainted.
    pub tainted: bool,
}

impl SubRunPlan {
    fn read_only(&self) -> bool {
        self.kind == pa_proto::subagents::EXPLORE
    }
}

/// The result of launch_run: the run, and whether it already existed (idempotent retry).
pub struct Launched {
    pub run: Run,
    pub existing: bool,
}

impl Launcher {
    /// Forgets the chat-scope memories (and documents) of one of the caller's chats.
    pub async fn forget_chat_memories(
        &self,
        identity: &Identity,
        chat_id: &str,
    ) -> Result<(), RunsError> {
        if chat_id.is_empty() {
            return Err(RunsError::ChatNotFound(String::new()));
        }
        let request = ForgetMemoryRequest {
            chat_id: chat_id.to_string(),
            ..Default::default()
        };
        let forgotten = self
            .memory
            .clone()
            .forget(self.auth.request(identity, request))
            .await
            .map_err(pa_kit::PaError::from)?
            .into_inner()
            .forgotten;
        tracing::info!(%chat_id, forgotten, "forgot the memories of a deleted chat");
        Ok(())
    }

    pub async fn launch_run(
        &self,
        identity: &Identity,
        request: CreateRunRequest,
    ) -> Result<Launched, RunsError> {
        if request.message.trim().is_empty() {
            return Err(RunsError::Invalid("message must not be empty".into()));
        }
        if request.message.len() > MAX_MESSAGE_BYTES {
            return Err(RunsError::Invalid(format!(
                "message is over {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        if request.model.chars().count() > MAX_MODEL_CHARS {
            return Err(RunsError::Invalid(format!(
                "model must be at most {MAX_MODEL_CHARS} characters"
            )));
        }
        validate_client_id("chat id", &request.chat_id)
            .map_err(|_| RunsError::ChatNotFound(request.chat_id.clone()))?;
        let requested_durable =
            RunMode::try_from(request.mode).unwrap_or(RunMode::Unspecified) == RunMode::Durable;
        if self.shutdown.is_triggered() {
            return Err(RunsError::ShuttingDown);
        }
        let run_id = if request.run_id.is_empty() {
            new_id()
        } else {
            validate_client_id("run id", &request.run_id)?;
            // An idempotent retry returns the run it created the first time.
            match self.store.get_run(identity, &request.run_id).await {
                Ok(run) => {
                    return Ok(Launched {
                        run,
                        existing: true,
                    });
                }
                Err(RunsError::RunNotFound(_)) => {}
                Err(other) => return Err(other),
            }
            request.run_id.clone()
        };
        let chat = match self.chat_classes.chat(identity, &request.chat_id) {
            Some(chat) => chat,
            None => {
                let chat = self.store.get_chat(identity, &request.chat_id).await?;
                self.chat_classes.remember(identity, &chat);
                chat
            }
        };
        let plan = LaunchPlan {
            run_id,
            client_chose_id: !request.run_id.is_empty(),
            chat,
            model: request.model,
            input: RunInput {
                message: request.message,
                client_tools_json: request.client_tools_json,
                state_json: request.state_json,
            },
            requested_durable,
            sub_run: None,
        };
        self.launch_plan(identity, plan).await
    }

    /// The common part of launch_run for user runs and sub-agent runs: quotas, model, toolset,
    /// RunSpec, the run row, the driver.
    pub(crate) async fn launch_plan(
        &self,
        identity: &Identity,
        plan: LaunchPlan,
    ) -> Result<Launched, RunsError> {
        let LaunchPlan {
            run_id,
            client_chose_id,
            chat,
            model,
            input,
            requested_durable,
            sub_run,
        } = plan;
        let classification = DataClassification::try_from(chat.classification)
            .unwrap_or(DataClassification::Internal);
        let requested = if model.trim().is_empty() {
            "auto"
        } else {
            model.trim()
        };
        let resolve = ResolveModelRequest {
            requested: requested.to_string(),
            classification: classification as i32,
            // A run that offers tools needs a model that can call them.
            needs: Some(ModelNeeds {
                tools: has_tools(&input.client_tools_json),
                ..Default::default()
            }),
        };
        // The snapshot id is ours to choose, so the toolset snapshot and the run row are written
        // at the same time rather than one after the other.
        let snapshot_id = format!("ts-{run_id}");
        let agents_script = sub_run.as_ref().is_some_and(|s| s.scripted);
        let mut spec = RunSpec {
            run_id: run_id.clone(),
            chat_id: chat.id.clone(),
            parent_run_id: sub_run.as_ref().map(|s| s.parent_run_id.clone()),
            identity: Some(identity.clone()),
            // What the request alone decides; the toolset may still make it durable (below).
            mode: decide_mode(ModeFacts {
                requested_durable,
                agents_script,
                ..Default::default()
            }) as i32,
            // Resolved below.
            model_selection: None,
            toolset_snapshot_id: snapshot_id.clone(),
            limits: Some(sub_run.as_ref().map_or(self.limits, |s| s.limits)),
            input: Some(input),
            classification: classification as i32,
            assistant_message_id: new_id(),
            depth: sub_run.as_ref().map_or(0, |s| s.depth),
            subagent_kind: sub_run.as_ref().map(|s| s.kind.clone()).unwrap_or_default(),
            trace_parent: pa_kit::trace::current_traceparent(),
            // Set below when a daily budget holds a share for the run.
            reserved_tokens: 0,
            budget_day: 0,
        };
        // Quotas before anything is spent: a run holds its share of the user's daily budget
        // from here, so runs started together cannot together pass it (ADR 0131). A sub-agent
        // spends within its parent's share.
        let mut held = HeldTokens::default();
        if sub_run.is_none() {
            let mut limits = spec.limits.unwrap_or_default();
            let want = if limits.max_total_tokens > 0 {
                limits.max_total_tokens
            } else {
                DEFAULT_RUN_RESERVATION
            };
            if let Some(reservation) = pa_bus::limits::reserve_tokens(
                &self.redis,
                &identity.tenant_id,
                &identity.user_id,
                self.daily_token_budget,
                want,
            )
            .await?
            {
                // The run may spend no more than it holds.
                limits.max_total_tokens = reservation.tokens;
                spec.limits = Some(limits);
                spec.reserved_tokens = reservation.tokens;
                spec.budget_day = reservation.day;
                held = HeldTokens {
                    redis: Some(self.redis.clone()),
                    tenant: identity.tenant_id.clone(),
                    user: identity.user_id.clone(),
                    reservation: Some(reservation),
                };
            }
        }
        // The recall needs neither the model nor the toolset: it is read while those are
        // settled; the chat's history is read in the run row's transaction (ADR 0218).
        let task_untrusted = sub_run.as_ref().is_some_and(|s| s.tainted);
        let context = self.driver.begin_context(&spec, task_untrusted);
        let history = if sub_run.is_some() {
            0
        } else {
            self.driver.history_messages.saturating_sub(1)
        };
        let read_only = sub_run.as_ref().is_some_and(SubRunPlan::read_only);
        let assemble = |provider_tags: Vec<String>, snapshot_id: String| {
            let request = self.auth.request(
                identity,
                AssembleToolsetRequest {
                    run_id: run_id.clone(),
                    chat_id: chat.id.clone(),
                    provider_tags,
                    selected_integrations: Vec::new(),
                    snapshot_id,
                    read_only,
                },
            );
            let mut tools = self.tools.clone();
            async move {
                tools
                    .assemble_toolset(request)
                    .await
                    .map(|answer| std::sync::Arc::new(answer.into_inner()))
                    .map_err(pa_kit::PaError::from)
            }
        };
        // The toolset is gated by the provider tags of the model resolved for the run. When this
        // caller's last resolution of the same request gave tags, the toolset is assembled with
        // them while the model is resolved, and used only if the resolution gives the same tags
        // again; otherwise it is assembled anew, under its own snapshot id (ADR 0229).
        let tags_key = provider_tags_key(identity, &resolve);
        let guessed = self.provider_tags.get(&tags_key);
        // The chat's last toolset for those tags is used again, without asking svc-tools, while
        // the user's toolset generation has not moved (ADR 0251); the check runs beside the
        // resolution, and the early assembly waits for it.
        let reused = {
            use futures::FutureExt;
            let tags = guessed.clone().filter(|_| sub_run.is_none());
            let chat_id = chat.id.clone();
            async move {
                match tags {
                    Some(tags) => self.reusable_toolset(identity, &chat_id, &tags).await,
                    None => None,
                }
            }
            .shared()
        };
        let early = async {
            let tags = guessed.as_ref()?;
            if let Some(toolset) = reused.clone().await {
                return Some((Ok(toolset), true));
            }
            Some((assemble(tags.clone(), snapshot_id.clone()).await, false))
        };
        // Inline runs start at once, so they are written as RUNNING.
        let user_message_id = new_id();
        let rest = async {
            // The run row's transaction begins (and the chat's history is read) while the model
            // is resolved: only the insert waits for the resolution.
            let resolved = async {
                self.models
                    .clone()
                    .resolve(self.auth.request(identity, resolve))
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(pa_kit::PaError::from)
            };
            let written = self
                .store
                .begin_run_write(identity, &chat.id, &run_id, history);
            let (selection, write, reused) = tokio::join!(resolved, written, reused.clone());
            let (selection, write) = (selection?, write?);
            let tags = selection.provider_tags.clone();
            self.provider_tags.remember(tags_key, tags.clone());
            let guessed_right = guessed.as_ref() == Some(&tags);
            if guessed.is_some() && !guessed_right {
                spec.toolset_snapshot_id = format!("{snapshot_id}.2");
            } else if let Some(toolset) = reused.filter(|_| guessed_right) {
                // The run records the snapshot it uses: the one assembled for an earlier run.
                spec.toolset_snapshot_id = toolset.snapshot_id.clone();
            }
            spec.model_selection = Some(selection);
            let inserted = write.insert(
                &spec,
                &user_message_id,
                RunStatus::Running,
                Some(self.driver.leases.instance()),
            );
            if guessed_right {
                Ok::<_, RunsError>((inserted.await, None))
            } else {
                let late = assemble(tags, spec.toolset_snapshot_id.clone());
                let (inserted, late) = tokio::join!(inserted, late);
                Ok((inserted, Some(late)))
            }
        };
        let (early, rest) = tokio::join!(early, rest);
        let (inserted, late) = rest?;
        let (assembled, reused) = match (late, early) {
            (Some(late), _) => (late, false),
            (None, Some(early)) => early,
            (None, None) => (
                Err(pa_kit::PaError::internal(
                    "the run's toolset was not assembled",
                )),
                false,
            ),
        };
        if assembled.is_ok() {
            pa_kit::metrics::RUN_TOOLSETS
                .with_label_values(&[if reused { "reused" } else { "assembled" }])
                .inc();
        }
        if let Ok(toolset) = &assembled
            && !reused
            && sub_run.is_none()
            && !toolset.reusable_under.is_empty()
            && let Some(selection) = &spec.model_selection
        {
            // Remembered under the tags it was assembled with (the resolved ones: a toolset
            // assembled ahead is used only when they are the same). A reused one keeps the time
            // of its assembly, so reuse ends within the window whatever happens.
            self.toolsets.remember(
                toolset_key(identity, &chat.id, &selection.provider_tags),
                ReusableToolset {
                    toolset: toolset.clone(),
                    token: toolset.reusable_under.clone(),
                    assembled: std::time::Instant::now(),
                },
            );
        }
        let Some((run, earlier)) = inserted? else {
            // No row: the id is taken, by a concurrent retry of this request (return that run)
            // or by someone else's run, which this tenant cannot see; or the chat is no longer
            // the caller's (deleted since it was remembered).
            return match self.store.get_run(identity, &run_id).await {
                Ok(run) => Ok(Launched {
                    run,
                    existing: true,
                }),
                Err(RunsError::RunNotFound(_)) => {
                    self.store.get_chat(identity, &chat.id).await?;
                    Err(RunsError::Conflict(format!(
                        "run id {run_id} is already used"
                    )))
                }
                Err(other) => Err(other),
            };
        };
        if client_chose_id {
            // The row is ours, so a stream under this client-chosen id is stale (a run of a
            // deleted chat) and goes before the driver writes the first event. Ids we generate
            // are fresh UUIDv7s and need no such check.
            self.sink.delete(std::slice::from_ref(&run_id)).await?;
        }
        let context = context.with_chat_history(&spec, earlier);
        let toolset = match assembled {
            Ok(toolset) => toolset,
            Err(err) => {
                // The run is recorded as failed, with the reason, rather than left half-made.
                self.driver.fail(&spec, &err).await;
                return Err(err.into());
            }
        };
        let mode = decide_mode(ModeFacts {
            requested_durable,
            long_running_tools: has_long_running_tools(&toolset.tools),
            agents_script,
            ..Default::default()
        });
        let mut run = run;
        if mode as i32 != spec.mode {
            spec.mode = mode as i32;
            self.store.set_mode(&spec).await?;
            run.mode = spec.mode;
        }
        let start = RunStart {
            tools: pa_turn_io::model_tools(&toolset.tools),
            notices: pa_turn_io::gate_notices(&toolset.blocked),
            high_privilege_tools: pa_turn_io::high_privilege_tools(&toolset.tools),
            approval_always_tools: pa_turn_io::approval_always_tools(&toolset.tools),
            // Set from the history and the recall once they are read.
            tainted: false,
        };
        pa_kit::metrics::RUNS_STARTED
            .with_label_values(&[crate::store::mode_name(mode)])
            .inc();
        if mode == RunMode::Durable {
            self.driver.hold(&spec.run_id);
        }
        match mode {
            RunMode::Durable if self.durable.answers_first() => {
                // The client has its answer now; the workflow starts behind it (ADR 0243).
                let this = self.clone();
                let span = tracing::info_span!(
                    "durable_start",
                    otel.name = "durable_start",
                    pa.service = "svc-runs",
                    run_id = %spec.run_id,
                );
                self.shutdown.spawn_tracked(tracing::Instrument::instrument(
                    async move {
                        let retry_for = crate::durable::START_RETRY_FOR;
                        let _ = this
                            .start_durable(&spec, start, context, held, retry_for)
                            .await;
                    },
                    span,
                ));
            }
            // No worker, or the last start could not reach it: started before the answer, so
            // an outage is refused (503) rather than accepted and failed.
            RunMode::Durable => {
                let retry_for = std::time::Duration::ZERO;
                self.start_durable(&spec, start, context, held, retry_for)
                    .await?
            }
            _ => {
                held.keep();
                self.driver.start(spec, start, context);
            }
        }
        Ok(Launched {
            run,
            existing: false,
        })
    }
}
