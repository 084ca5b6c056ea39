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
//!   get one;
//! - `purge_toolset_snapshots` (svc-tools): runs' toolset snapshots older than the retention
//!   go.
//!
//! The last four belong to the service that owns the tables: the activity asks it through
//! MaintenanceService, batch after batch, as the platform (an internal identity).

use std::time::{Duration, SystemTime};

use pa_proto::v1::ScheduleInfo;
use temporalio_client::Client;
use temporalio_client::schedules::{
    CreateScheduleOptions, ScheduleAction, ScheduleOverlapPolicy, ScheduleSpec,
};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowResult};

use crate::activities::RunActivities;
pub use crate::payloads::MaintenanceInput;

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
    Task {
        name: "purge_toolset_snapshots",
        every: Duration::from_secs(6 * 3600),
    },
];

/// Schedule ids carry the task queue, so several deployments (or test meshes) sharing one
/// Temporal namespace keep apart.
pub fn schedule_id(task_queue: &str, task: &str) -> String {
    format!("{task_queue}-{task}")
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
        // The activity heartbeats: a worker killed mid-task is replaced within seconds.
        let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(600))
            .heartbeat_timeout(crate::activities::HEARTBEAT_TIMEOUT)
            .retry_policy(crate::activities::retry_policy())
            .build();
        Ok(ctx
            .execute_activity(RunActivities::maintenance, input, options)
            .await?)
    }
}

/// Creates the schedules that do not exist yet (an existing one is left as the operator may
/// have paused or changed it). They are named after the runs' `task_queue` and start their
/// workflows on `background_queue`.
pub async fn ensure(
    client: &Client,
    task_queue: &str,
    background_queue: &str,
) -> Result<(), String> {
    for task in TASKS {
        let id = schedule_id(task_queue, task.name);
        let options = CreateScheduleOptions::builder()
            .action(ScheduleAction::start_workflow(
                MaintenanceWorkflow::run,
                MaintenanceInput {
                    task: task.name.to_string(),
                },
                background_queue.to_string(),
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
