//! Maintenance over every tenant's chats, for the worker's schedules (MaintenanceService):
//! purge the chats deleted longer ago than the retention. Like a migration it is no tenant's
//! request, so it runs on the schema owner's pool, which row-level security does not restrict;
//! only internal callers reach it.

use std::time::Duration;

use sqlx::PgPool;

#[derive(Clone)]
pub struct Maintenance {
    pub owner: PgPool,
    /// How long a deleted chat is kept before it is purged (`PA_DELETED_CHAT_RETENTION_HOURS`).
    pub retention: Duration,
}

impl Maintenance {
    /// Removes up to `limit` chats deleted before the retention, with their runs and messages
    /// (ON DELETE CASCADE). Returns how many went and whether more are due.
    pub async fn purge_deleted_chats(&self, limit: u32) -> Result<(u64, bool), sqlx::Error> {
        pa_kit::maintenance::purge_batch(&self.owner, "chats", "deleted_at", self.retention, limit)
            .await
    }
}
