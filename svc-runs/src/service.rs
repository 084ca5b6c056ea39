//! RunService and ControlService over gRPC: convert, check identity, delegate.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use pa_bus::event_hub::EventHub;
use pa_kit::redis::Pool;
use pa_kit::{PaError, RequestIdentity};
use pa_proto::v1::control_service_server::ControlService;
use pa_proto::v1::run_service_server::RunService;
use pa_proto::v1::{
    CancelRunRequest, Chat, ControlAck, ControlCommand, CreateChatRequest, CreateRunRequest,
    CreateRunResponse, DataClassification, DeleteChatRequest, DeleteChatResponse, GetChatRequest,
    GetRunRequest, Identity, ListChatsRequest, ListChatsResponse, ListMessagesRequest,
    ListMessagesResponse, RenameChatRequest, Run, RunEvent, StreamRunEventsRequest,
    control_command,
};
use tonic::{Request, Response, Status};

use crate::error::RunsError;
use crate::launch::{Launcher, new_id, validate_client_id};
use crate::store::{MAX_TITLE_CHARS, is_terminal};

#[derive(Clone)]
pub struct RunServiceImpl {
    launcher: Launcher,
    /// Every StreamRunEvents call of this process reads through it.
    events: EventHub,
}

impl RunServiceImpl {
    pub fn new(launcher: Launcher, redis: Pool) -> Self {
        Self {
            launcher,
            events: EventHub::new(redis),
        }
    }

    /// Stops a run: through its driver when this process runs it, otherwise (its driver is gone)
    /// by recording the cancellation directly. Waits briefly so the answer shows the end state.
    async fn cancel(&self, identity: &Identity, run_id: &str) -> Result<Run, RunsError> {
        let store = &self.launcher.store;
        let run = store.get_run(identity, run_id).await?;
        if is_terminal(run.status) {
            return Ok(run);
        }
        // Its sub-agent runs stop with it.
        for child in store.running_sub_runs(identity, run_id).await? {
            if let Err(err) = Box::pin(self.cancel(identity, &child)).await {
                tracing::warn!(%err, run_id = %child, "cannot cancel a sub-agent run");
            }
        }
        let driver = &self.launcher.driver;
        if run.mode == pa_proto::v1::RunMode::Durable as i32 {
            self.launcher.durable.cancel(identity, run_id).await?;
            // The workflow records the end; wait briefly so the answer shows it.
            for _ in 0..150 {
                let run = store.get_run(identity, run_id).await?;
                if is_terminal(run.status) {
                    return Ok(run);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else if driver.cancel(run_id) {
            for _ in 0..100 {
                if !driver.is_active(run_id) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else {
            // Another instance drives it (asked through the database), or its owner is gone
            // (claimed and ended here, partial reply kept).
            let spec = store.spec(&identity.tenant_id, run_id).await?;
            crate::reaper::cancel_elsewhere(driver, store, &spec).await?;
        }
        store.get_run(identity, run_id).await
    }
}

/// Creating and renaming a chat share one limit on the (trimmed) title.
fn check_title_length(title: &str) -> Result<(), RunsError> {
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(RunsError::Invalid(format!(
            "title is over {MAX_TITLE_CHARS} characters"
        )));
    }
    Ok(())
}

type EventStream = Pin<Box<dyn Stream<Item = Result<RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl RunService for RunServiceImpl {
    async fn create_chat(
        &self,
        request: Request<CreateChatRequest>,
    ) -> Result<Response<Chat>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        let title = req.title.trim();
        check_title_length(title)?;
        let title = if title.is_empty() { "New chat" } else { title };
        let classification = match DataClassification::try_from(req.classification) {
            Ok(DataClassification::Unspecified) => DataClassification::Internal,
            Ok(c) => c,
            Err(_) => return Err(RunsError::Invalid("unknown classification".into()).into()),
        };
        let id = if req.chat_id.is_empty() {
            new_id()
        } else {
            validate_client_id("chat id", &req.chat_id)?;
            req.chat_id
        };
        let chat = self
            .launcher
            .store
            .create_chat(&identity, &id, title, classification)
            .await?;
        Ok(Response::new(chat))
    }

    async fn get_chat(&self, request: Request<GetChatRequest>) -> Result<Response<Chat>, Status> {
        let identity = request.identity()?;
        Ok(Response::new(
            self.launcher
                .store
                .get_chat(&identity, &request.get_ref().chat_id)
                .await?,
        ))
    }

    async fn list_chats(
        &self,
        request: Request<ListChatsRequest>,
    ) -> Result<Response<ListChatsResponse>, Status> {
        let identity = request.identity()?;
        let req = request.get_ref();
        let (chats, next_page_token) = self
            .launcher
            .store
            .list_chats(&identity, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(ListChatsResponse {
            chats,
            next_page_token,
        }))
    }

    async fn delete_chat(
        &self,
        request: Request<DeleteChatRequest>,
    ) -> Result<Response<DeleteChatResponse>, Status> {
        let identity = request.identity()?;
        let chat_id = &request.get_ref().chat_id;
        // Its memories first: when they cannot be forgotten now, nothing is deleted and the
        // client can retry, rather than a deleted chat leaving memories behind.
        self.launcher
            .forget_chat_memories(&identity, chat_id)
            .await?;
        let runs = self.launcher.store.delete_chat(&identity, chat_id).await?;
        for run_id in &runs {
            self.launcher.driver.cancel(run_id);
        }
        // The chat is gone; so is what its runs streamed.
        self.launcher.sink.delete(&runs).await?;
        Ok(Response::new(DeleteChatResponse {}))
    }

    async fn rename_chat(
        &self,
        request: Request<RenameChatRequest>,
    ) -> Result<Response<Chat>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        let title = req.title.trim();
        if title.is_empty() {
            return Err(RunsError::Invalid("title must not be empty".into()).into());
        }
        check_title_length(title)?;
        let chat = self
            .launcher
            .store
            .rename_chat(&identity, &req.chat_id, title)
            .await?;
        Ok(Response::new(chat))
    }

    async fn list_messages(
        &self,
        request: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let identity = request.identity()?;
        let req = request.get_ref();
        let (messages, next_page_token) = self
            .launcher
            .store
            .list_messages(&identity, &req.chat_id, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(ListMessagesResponse {
            messages,
            next_page_token,
        }))
    }

    async fn create_run(
        &self,
        request: Request<CreateRunRequest>,
    ) -> Result<Response<CreateRunResponse>, Status> {
        let identity = request.identity()?;
        let launched = self
            .launcher
            .launch_run(&identity, request.into_inner())
            .await?;
        Ok(Response::new(CreateRunResponse {
            run: Some(launched.run),
            existing: launched.existing,
        }))
    }

    async fn get_run(&self, request: Request<GetRunRequest>) -> Result<Response<Run>, Status> {
        let identity = request.identity()?;
        let store = &self.launcher.store;
        let mut run = store.get_run(&identity, &request.get_ref().run_id).await?;
        run.usage_with_sub_runs = Some(store.tree_usage(&identity, &run.id).await?);
        Ok(Response::new(run))
    }

    async fn cancel_run(
        &self,
        request: Request<CancelRunRequest>,
    ) -> Result<Response<Run>, Status> {
        let identity = request.identity()?;
        Ok(Response::new(
            self.cancel(&identity, &request.get_ref().run_id).await?,
        ))
    }

    type StreamRunEventsStream = EventStream;

    async fn stream_run_events(
        &self,
        request: Request<StreamRunEventsRequest>,
    ) -> Result<Response<Self::StreamRunEventsStream>, Status> {
        let identity = request.identity()?;
        let req = request.into_inner();
        // Authorizes: only the run's owner may read its events.
        self.launcher.store.get_run(&identity, &req.run_id).await?;
        let store = self.launcher.store.clone();
        let run_id = req.run_id.clone();
        let tenant_id = identity.tenant_id.clone();
        let still_live = move || {
            let store = store.clone();
            let run_id = run_id.clone();
            let tenant_id = tenant_id.clone();
            async move {
                matches!(store.run_status(&tenant_id, &run_id).await, Ok(Some(s)) if !is_terminal(s))
            }
        };
        let events = self
            .events
            .follow(req.run_id, req.after, still_live)
            .map(|item| {
                item.map(|stored| RunEvent {
                    stream_id: stored.stream_id,
                    event: Some(stored.event),
                })
                .map_err(Status::from)
            });
        Ok(Response::new(Box::pin(events)))
    }
}

#[tonic::async_trait]
impl ControlService for RunServiceImpl {
    async fn send_control(
        &self,
        request: Request<ControlCommand>,
    ) -> Result<Response<ControlAck>, Status> {
        let identity = request.identity()?;
        let command = request.into_inner();
        match command.command {
            Some(control_command::Command::Cancel(_)) => {
                let run = self.cancel(&identity, &command.run_id).await?;
                let detail = format!("run status: {}", run.status().as_str_name());
                Ok(Response::new(ControlAck {
                    run_id: run.id,
                    accepted: true,
                    detail,
                }))
            }
            Some(control_command::Command::ToolCallDecision(decision)) => {
                let state = crate::approvals::decide(
                    &self.launcher,
                    &identity,
                    &command.run_id,
                    &decision.tool_call_id,
                    decision.approved,
                )
                .await?;
                Ok(Response::new(ControlAck {
                    run_id: command.run_id,
                    accepted: true,
                    detail: format!("tool call {} {}", decision.tool_call_id, state.as_str()),
                }))
            }
            None => Err(PaError::bad_request("command is required").into()),
        }
    }
}

#[tonic::async_trait]
impl pa_proto::v1::run_ledger_service_server::RunLedgerService for RunServiceImpl {
    async fn finish_run(
        &self,
        request: Request<pa_proto::v1::FinishRunRequest>,
    ) -> Result<Response<pa_proto::v1::FinishRunResponse>, Status> {
        let identity = request.identity()?;
        let recorded = crate::ledger::finish_durable(
            &self.launcher.store,
            &self.launcher.redis,
            &identity,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(pa_proto::v1::FinishRunResponse { recorded }))
    }

    async fn start_sub_run(
        &self,
        request: Request<pa_proto::v1::StartSubRunRequest>,
    ) -> Result<Response<pa_proto::v1::StartSubRunResponse>, Status> {
        let identity = request.identity()?;
        let launched = self
            .launcher
            .start_sub_run(&identity, request.into_inner())
            .await?;
        Ok(Response::new(pa_proto::v1::StartSubRunResponse {
            run_id: launched.run.id,
            existing: launched.existing,
        }))
    }
}

#[tonic::async_trait]
impl pa_proto::v1::maintenance_service_server::MaintenanceService
    for crate::maintenance::Maintenance
{
    async fn run_maintenance(
        &self,
        request: Request<pa_proto::v1::RunMaintenanceRequest>,
    ) -> Result<Response<pa_proto::v1::RunMaintenanceResponse>, Status> {
        pa_kit::maintenance::answer(
            "svc-runs",
            "purge_deleted_chats",
            pa_kit::maintenance::MAX_BATCH,
            request,
            |limit| self.purge_deleted_chats(limit),
        )
        .await
    }
}

/// The Curator's queue (ADR 0242), for svc-worker only: claims span every tenant.
#[tonic::async_trait]
impl pa_proto::v1::curation_service_server::CurationService for crate::curations::CurationQueue {
    async fn claim_curations(
        &self,
        request: Request<pa_proto::v1::ClaimCurationsRequest>,
    ) -> Result<Response<pa_proto::v1::ClaimCurationsResponse>, Status> {
        pa_kit::identity::require_internal(&request.identity()?)?;
        let request = request.into_inner();
        let limit = match request.limit {
            0 => 10,
            n => n.min(100),
        };
        let lease = match request.lease_ms {
            0 => Duration::from_secs(120),
            ms => {
                Duration::from_millis(ms).clamp(Duration::from_secs(1), Duration::from_secs(3600))
            }
        };
        let quiet = Duration::from_millis(request.quiet_ms.min(24 * 3600 * 1000));
        let claims = self
            .claim(quiet, limit, lease)
            .await
            .map_err(PaError::from)?
            .into_iter()
            .map(|c| pa_proto::v1::CurationClaim {
                identity: Some(c.identity),
                chat_id: c.chat_id,
                run_id: c.run_id,
                label: c.label,
                turns: c.turns,
                version: c.version,
                attempt: c.attempt,
            })
            .collect();
        Ok(Response::new(pa_proto::v1::ClaimCurationsResponse {
            claims,
        }))
    }

    async fn finish_curation(
        &self,
        request: Request<pa_proto::v1::FinishCurationRequest>,
    ) -> Result<Response<pa_proto::v1::FinishCurationResponse>, Status> {
        use crate::curations::Outcome;
        use pa_proto::v1::CurationOutcome;
        pa_kit::identity::require_internal(&request.identity()?)?;
        let request = request.into_inner();
        let outcome = match CurationOutcome::try_from(request.outcome) {
            Ok(CurationOutcome::Curated) => Outcome::Curated,
            Ok(CurationOutcome::Failed) => Outcome::Failed,
            Ok(CurationOutcome::Released) => Outcome::Released,
            _ => {
                return Err(
                    PaError::bad_request("outcome must be CURATED, FAILED or RELEASED").into(),
                );
            }
        };
        if request.tenant_id.is_empty() || request.chat_id.is_empty() {
            return Err(PaError::bad_request("tenant_id and chat_id are required").into());
        }
        let removed = self
            .finish(
                &request.tenant_id,
                &request.chat_id,
                request.version,
                outcome,
            )
            .await
            .map_err(PaError::from)?;
        Ok(Response::new(pa_proto::v1::FinishCurationResponse {
            removed,
        }))
    }
}
