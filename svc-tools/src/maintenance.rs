//! Maintenance over every tenant's toolset snapshots, for the worker's schedules
//! (MaintenanceService): a run's snapshot is written at its start and read by its tool calls,
//! so one row per run ever started would otherwise pile up for good. Like a migration it is no
//! tenant's request, so it runs on the schema owner's pool (ADR 0201); only internal callers
//! reach it.

use std::time::Duration;

use sqlx::PgPool;

#[derive(Clone)]
pub struct Maintenance {
    pub owner: PgPool,
    /// How long a snapshot is kept (`PA_TOOLSET_SNAPSHOT_RETENTION_DAYS`); zero keeps them all.
    pub retention: Duration,
}

impl Maintenance {
    /// Removes up to `limit` snapshots written before the retention, oldest first. Returns how
    /// many went and whether more are due.
    ///
    /// The contents they point to (`toolset_contents`, one row per distinct toolset of a user,
    /// ADR 0217) stay: a run's start reuses a content row without locking it, so deleting one
    /// that looks unused could race a start that is about to point at it (ADR 0233).
    pub async fn purge_toolset_snapshots(&self, limit: u32) -> Result<(u64, bool), sqlx::Error> {
        if self.retention.is_zero() {
            return Ok((0, false));
        }
        pa_kit::maintenance::purge_batch(
            &self.owner,
            "toolset_snapshots",
            "created_at",
            self.retention,
            limit,
        )
        .await
    }
}
