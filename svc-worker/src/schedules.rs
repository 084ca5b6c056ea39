//! Maintenance on Temporal schedules, created idempotently when the worker starts. Each schedule
//! starts a MaintenanceWorkflow that runs its task as one activity.
//!
//! Tasks:
//! - `trim_run_streams` (here, on Redis): every run's event stream gets an expiry (a stream left
//!   without one, e.g. by a writer that died between XADD and EXPIRE, would live forever) and is
//!   capped in length;
//! - `rollup_usage` (svc-models): finished days of usage rolled up per day, user and model;
//! - `purge_deleted_chats` (svc-runs): chats deleted longer ago than the retention go for good;
//! - `reembed_memories` (svc-memory): memories without a vector of the current embedding model
//!   get one.
//!
//! The last three belong to the service that owns the tables: the activity asks it through
//! MaintenanceService, batch after batch, as the platform (an internal identity).

use std::time::{Duration, SystemTime};

use deadpool_redis::redis::{self, AsyncCommands};
use pa_proto::v1::ScheduleInfo;
use serde::{Deserialize, Serialize};
use temporalio_client::Client;
use temporalio_client::schedules::{
    CreateScheduleOptions, ScheduleAction, ScheduleOverlapPolicy, ScheduleSpec,
};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowResult};

use pa_kit::identity::internal_identity;
use pa_kit::{InternalAuth, PaError};
use pa_proto::v1::RunMaintenanceRequest;
use pa_proto::v1::maintenance_service_client::MaintenanceServiceClient;
use tonic::transport::Channel;

use crate::activities::RunActivities;

/// A maintenance task and how often it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    pub name: &'static str,
    pub every: Duration,
}

pub const TASKS: &[Task] = &[
    Task {
        name: "trim_run_streams",
        every: Duration::from_secs(3600),
    },
    Task {
        name: "rollup_usage",
        every: Duration::from_secs(3600),
    },
    Task {
        name: "purge_deleted_chats",
        every: Duration::from_secs(6 * 3600),
    },
    Task {
        name: "reembed_memories",
        every: Duration::from_secs(6 * 3600),
    },
];

/// Batches one maintenance run asks for at most, so a run ends even if work keeps arriving.
const MAX_BATCHES: usize = 1000;

/// The services that run maintenance over their own tables.
#[derive(Clone)]
pub struct MaintenanceClients {
    pub runs: MaintenanceServiceClient<Channel>,
    pub models: MaintenanceServiceClient<Channel>,
    pub memory: MaintenanceServiceClient<Channel>,
    pub auth: InternalAuth,
}

impl MaintenanceClients {
    /// Runs `task` at the service that owns it until no work is left; returns the rows changed.
    pub async fn run(&self, task: &str) -> Result<u64, PaError> {
        let client = match task {
            "purge_deleted_chats" => &self.runs,
            "rollup_usage" => &self.models,
            "reembed_memories" => &self.memory,
            other => {
                return Err(PaError::bad_request(format!(
                    "unknown maintenance task {other}"
                )));
            }
        };
        let identity = internal_identity("svc-worker");
        let mut total = 0;
        for _ in 0..MAX_BATCHES {
            let request = RunMaintenanceRequest {
                task: task.to_string(),
                limit: 0,
            };
            let done = client
                .clone()
                .run_maintenance(self.auth.request(&identity, request))
                .await
                .map_err(|s| PaError::from_status(&s))?
                .into_inner();
            total += done.affected;
            if !done.more {
                break;
            }
        }
        Ok(total)
    }
}

/// Stream key pattern and limits (see pa_kit::run_events).
const STREAM_PATTERN: &str = "pa:run:*:events";
const STREAM_TTL_SECS: i64 = 24 * 3600;
const STREAM_MAX_LEN: usize = 50_000;

/// Schedule ids carry the task queue, so several deployments (or test meshes) sharing one
/// Temporal namespace keep apart.
pub fn schedule_id(task_queue: &str, task: &str) -> String {
    format!("{task_queue}-{task}")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MaintenanceInput {
    pub task: String,
}

#[workflow]
#[derive(Default)]
pub struct MaintenanceWorkflow;

#[workflow_methods]
impl MaintenanceWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: MaintenanceInput,
    ) -> WorkflowResult<u64> {
        let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(600))
            .retry_policy(crate::activities::retry_policy())
            .build();
        Ok(ctx
            .execute_activity(RunActivities::maintenance, input, options)
            .await?)
    }
}

/// Creates the schedules that do not exist yet (an existing one is left as the operator may
/// have paused or changed it).
pub async fn ensure(client: &Client, task_queue: &str) -> Result<(), String> {
    for task in TASKS {
        let id = schedule_id(task_queue, task.name);
        let options = CreateScheduleOptions::builder()
            .action(ScheduleAction::start_workflow(
                MaintenanceWorkflow::run,
                MaintenanceInput {
                    task: task.name.to_string(),
                },
                task_queue.to_string(),
                format!("{id}-run"),
            ))
            .spec(ScheduleSpec::from_interval(task.every))
            .build();
        match client.create_schedule(id.clone(), options).await {
            Ok(_) => tracing::info!(schedule = %id, "schedule created"),
            Err(err) if err.to_string().to_lowercase().contains("already") => {}
            Err(err) => return Err(format!("schedule {id}: {err}")),
        }
    }
    Ok(())
}

fn ms(at: Option<SystemTime>) -> i64 {
    at.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The schedules with their last and next run.
pub async fn list(client: &Client, task_queue: &str) -> Result<Vec<ScheduleInfo>, String> {
    let mut out = Vec::new();
    for task in TASKS {
        let id = schedule_id(task_queue, task.name);
        let described = client
            .get_schedule_handle(id.clone())
            .describe(Default::default())
            .await
            .map_err(|e| format!("schedule {id}: {e}"))?;
        let last = described
            .recent_actions()
            .into_iter()
            .filter_map(|a| a.actual_time)
            .max();
        out.push(ScheduleInfo {
            id,
            task: task.name.to_string(),
            every_secs: task.every.as_secs(),
            last_run_at_ms: ms(last),
            next_run_at_ms: ms(described.future_action_times().into_iter().min()),
            paused: described.paused(),
            runs: described.action_count().max(0) as u64,
        });
    }
    Ok(out)
}

/// Runs a schedule now (as well as on its interval).
pub async fn trigger(client: &Client, id: &str) -> Result<(), String> {
    client
        .get_schedule_handle(id.to_string())
        .trigger(ScheduleOverlapPolicy::Unspecified, Default::default())
        .await
        .map_err(|e| format!("schedule {id}: {e}"))
}

/// `trim_run_streams`: gives every run stream without an expiry one, and caps its length.
/// Returns how many streams it changed.
pub async fn trim_run_streams(redis: &deadpool_redis::Pool) -> Result<u64, String> {
    let mut conn = redis.get().await.map_err(|e| e.to_string())?;
    let mut cursor: u64 = 0;
    let mut changed = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(STREAM_PATTERN)
            .arg("COUNT")
            .arg(500)
            .query_async(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
        for key in keys {
            let ttl: i64 = conn.ttl(&key).await.map_err(|e| e.to_string())?;
            let trimmed: u64 = redis::cmd("XTRIM")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_MAX_LEN)
                .query_async(&mut *conn)
                .await
                .map_err(|e| e.to_string())?;
            if ttl == -1 {
                let _: bool = conn
                    .expire(&key, STREAM_TTL_SECS)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if ttl == -1 || trimmed > 0 {
                changed += 1;
            }
        }
        cursor = next;
        if cursor == 0 {
            return Ok(changed);
        }
    }
}
