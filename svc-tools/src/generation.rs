//! Changes to what a user's toolsets are made of renew the user's toolset generation
//! (`pa_bus::toolset_generation`, ADR 0251), so that a toolset reused by svc-runs never outlives
//! the integrations, selection or devices it was assembled from.

use std::sync::Arc;

use pa_kit::redis::Pool;
use sqlx::{Postgres, Transaction};

use crate::error::ToolsError;

/// The users' toolset generations of this deployment (named by its database).
#[derive(Clone)]
pub struct Generations {
    redis: Pool,
    database: Arc<str>,
}

impl Generations {
    pub fn new(redis: Pool, database: &str) -> Self {
        Self {
            redis,
            database: database.into(),
        }
    }

    pub fn redis(&self) -> &Pool {
        &self.redis
    }

    /// The user's generation, for an assembly that reads what its toolset is made of next;
    /// `None` when Redis does not answer (the toolset is then not reusable).
    pub async fn current(&self, tenant: &str, user: &str) -> Option<String> {
        pa_bus::toolset_generation::current(&self.redis, &self.database, tenant, user)
            .await
            .ok()
    }

    /// Commits `tx`, a change to what `user`'s toolsets are made of, between two renewals of the
    /// user's generation. The first, before the commit, is required: without it the change is
    /// not made (a toolset assembled before could be reused after the change). The second, after
    /// the commit, ends the reuse of a toolset assembled between the first and the commit from
    /// the state before; should Redis fail just then, such a toolset is reused for at most
    /// svc-runs' reuse window (`TOOLSET_REUSE_WINDOW`).
    pub async fn commit_change(
        &self,
        tx: Transaction<'static, Postgres>,
        tenant: &str,
        user: &str,
    ) -> Result<(), ToolsError> {
        pa_bus::toolset_generation::renew(&self.redis, &self.database, tenant, user)
            .await
            .map_err(|e| ToolsError::Redis(e.to_string()))?;
        tx.commit().await?;
        if let Err(err) =
            pa_bus::toolset_generation::renew(&self.redis, &self.database, tenant, user).await
        {
            tracing::warn!(%err, tenant, user, "the toolset generation was not renewed after a change");
        }
        Ok(())
    }
}
