//! The Curator's queue (ADR 0242): a chat's finished turns wait here, one row per chat, until
//! svc-worker's Curator claims the chat (its turns have paused for the debounce), curates it and
//! says how it went. A turn is queued in the transaction that records its run's end, so no
//! finished turn is ever lost to a process that dies after recording it; a claim is a lease, so a
//! curation whose worker died is claimed again once the lease runs out.
//!
//! Claims span every tenant, like maintenance: they run on the schema owner's pool, which
//! row-level security does not restrict, and only internal callers reach them.

use std::time::Duration;

use pa_proto::v1::{Identity, RunSpec};
use prost::Message;
use sqlx::{PgPool, Postgres, Row, Transaction};

/// A chat's turns are dropped after this many failed curations (the chat's next turn queues
/// them again): a model that is down for good does not hold a row for ever.
pub const MAX_ATTEMPTS: i32 = 5;

/// The longest back-off after a failed curation.
const MAX_BACKOFF_SECS: f64 = 300.0;

/// Queues a finished turn of `spec.chat_id`: a new row, or one more turn on the chat's row (its
/// `pending_since` stays, so a chat that keeps talking is still curated once per debounce).
pub async fn queue_turn(
    tx: &mut Transaction<'_, Postgres>,
    tenant_id: &str,
    spec: &RunSpec,
) -> Result<(), sqlx::Error> {
    let identity = spec.identity.clone().unwrap_or_default().encode_to_vec();
    sqlx::query(
        "INSERT INTO curations (tenant_id, chat_id, run_id, label, identity) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id, chat_id) DO UPDATE SET run_id = EXCLUDED.run_id, \
           label = EXCLUDED.label, identity = EXCLUDED.identity, \
           turns = curations.turns + 1, version = curations.version + 1",
    )
    .bind(tenant_id)
    .bind(&spec.chat_id)
    .bind(&spec.run_id)
    .bind(spec.resolved_label())
    .bind(identity)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One chat claimed for curation.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    pub identity: Identity,
    pub chat_id: String,
    pub run_id: String,
    pub label: String,
    pub turns: u32,
    pub version: i64,
    pub attempt: u32,
}

/// How a claimed curation went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Curated,
    Failed,
    /// Handed back unfinished by a worker that is stopping: due again at once, the attempt not
    /// counted.
    Released,
}

#[derive(Clone)]
pub struct CurationQueue {
    pub owner: PgPool,
}

impl CurationQueue {
    /// Leases up to `limit` chats whose turns paused for `quiet` and that nobody holds, oldest
    /// first. Concurrent claimers get disjoint chats (`SKIP LOCKED`).
    pub async fn claim(
        &self,
        quiet: Duration,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Claimed>, sqlx::Error> {
        let rows = sqlx::query(
            "WITH due AS ( \
               SELECT q.tenant_id, q.chat_id FROM curations q \
               WHERE q.pending_since <= now() - make_interval(secs => $1) \
                 AND (q.not_before IS NULL OR q.not_before <= now()) \
                 AND NOT EXISTS (SELECT 1 FROM chats c WHERE c.tenant_id = q.tenant_id \
                                   AND c.id = q.chat_id AND c.deleted_at IS NOT NULL) \
               ORDER BY q.pending_since LIMIT $2 FOR UPDATE OF q SKIP LOCKED) \
             UPDATE curations q SET not_before = now() + make_interval(secs => $3), \
               attempts = q.attempts + 1 \
             FROM due WHERE q.tenant_id = due.tenant_id AND q.chat_id = due.chat_id \
             RETURNING q.chat_id, q.run_id, q.label, q.identity, q.turns, q.version, q.attempts",
        )
        .bind(quiet.as_secs_f64())
        .bind(i64::from(limit))
        .bind(lease.as_secs_f64())
        .fetch_all(&self.owner)
        .await?;
        rows.iter()
            .map(|row| {
                let identity: Vec<u8> = row.try_get("identity")?;
                Ok(Claimed {
                    identity: Identity::decode(identity.as_slice())
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    chat_id: row.try_get("chat_id")?,
                    run_id: row.try_get("run_id")?,
                    label: row.try_get("label")?,
                    turns: row.try_get::<i32, _>("turns")?.max(0) as u32,
                    version: row.try_get("version")?,
                    attempt: row.try_get::<i32, _>("attempts")?.max(0) as u32,
                })
            })
            .collect()
    }

    /// Settles a claim. Returns true when the chat's row went (curated, or failed for the last
    /// time); false when it stays: a turn finished during the curation (the row's version moved:
    /// due again after the quiet time, counted from now), or a failure backs off.
    pub async fn finish(
        &self,
        tenant_id: &str,
        chat_id: &str,
        version: i64,
        outcome: Outcome,
    ) -> Result<bool, sqlx::Error> {
        if outcome == Outcome::Released {
            // Whatever the version (a turn that finished meanwhile keeps its own quiet time,
            // `pending_since`): a release comes at once, well inside the claim's lease, so the
            // claim is still this worker's.
            sqlx::query(
                "UPDATE curations SET not_before = NULL, attempts = GREATEST(attempts - 1, 0) \
                 WHERE tenant_id = $1 AND chat_id = $2",
            )
            .bind(tenant_id)
            .bind(chat_id)
            .execute(&self.owner)
            .await?;
            return Ok(false);
        }
        let removed = sqlx::query(
            "DELETE FROM curations WHERE tenant_id = $1 AND chat_id = $2 AND version = $3 \
               AND ($4 OR attempts >= $5)",
        )
        .bind(tenant_id)
        .bind(chat_id)
        .bind(version)
        .bind(outcome == Outcome::Curated)
        .bind(MAX_ATTEMPTS)
        .execute(&self.owner)
        .await?
        .rows_affected();
        if removed > 0 {
            if outcome == Outcome::Failed {
                tracing::warn!(
                    tenant_id,
                    chat_id,
                    "a chat's turns were dropped after {MAX_ATTEMPTS} failed curations"
                );
            }
            return Ok(true);
        }
        let settle = match outcome {
            // Newer turns than the curation saw: curate them after their own pause.
            Outcome::Curated => sqlx::query(
                "UPDATE curations SET not_before = NULL, attempts = 0, pending_since = now() \
                 WHERE tenant_id = $1 AND chat_id = $2 AND version <> $3",
            )
            .bind(tenant_id)
            .bind(chat_id)
            .bind(version),
            // (A release was settled above.)
            Outcome::Failed | Outcome::Released => sqlx::query(
                "UPDATE curations SET not_before = now() + \
                   make_interval(secs => LEAST($3::float8, power(2::float8, attempts::float8))) \
                 WHERE tenant_id = $1 AND chat_id = $2",
            )
            .bind(tenant_id)
            .bind(chat_id)
            .bind(MAX_BACKOFF_SECS),
        };
        settle.execute(&self.owner).await?;
        Ok(false)
    }
}
