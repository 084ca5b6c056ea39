//! Inline runs have an owner with a lease (docs/src/adr/0150-2026-12-03-inline-run-leases.md).
//!
//! The svc-runs instance that drives an inline run is its owner (`runs.owner_id`, a fresh id per
//! process). Every instance beats once per tick in two stores — `run_owners.beat` in Postgres and
//! `pa:runs:owner:{id}:beat` in Redis — however many runs it drives, and learns in the same round
//! trip which of its runs were cancelled elsewhere or taken from it. Every instance also watches
//! the owners of unfinished inline runs: an owner whose beats stood still in *both* stores for a
//! whole lease of the watcher's *own, uninterrupted* watching is gone. A store outage interrupts
//! the watching (every watch starts again once reads work), so owners that could not beat during
//! the outage get a full lease to beat again before anyone acts; an owner cut off from one store
//! still beats in the other. The runs of a gone owner are claimed (one UPDATE from that owner to
//! the claimer: one winner) and ended: the partial reply rebuilt from the stream is kept,
//! `RUN_ERROR owner_lost` (retryable) closes the stream, the row is FAILED with the usage the
//! owner last wrote, and the run's share of the daily budget is settled.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands};
use pa_kit::PaError;
use pa_proto::v1::{
    AgUiEvent, ModelAttempt, RunError, RunMode, RunSpec, RunStatus, Usage, ag_ui_event::Event,
};
use pa_turn_io::{OpenMessages, RunEnding};
use prost::Message;
use sqlx::{PgPool, Row};
use tokio::time::Instant;

use crate::error::RunsError;

/// The `RUN_ERROR` code of a run whose owner died (retryable: the same message may be sent again).
pub const OWNER_LOST: &str = "owner_lost";

pub(crate) const OWNER_LOST_MESSAGE: &str = "the svc-runs instance running this run stopped; the partial \
     reply is kept and the run can be retried";

/// `PA_RUN_LEASE_MS` (6000), `PA_RUN_LEASE_RENEW_MS` (2000), `PA_RUN_REAPER_SCAN_MS` (2000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// How long an owner's beats must stand still (as its watcher saw them) before its runs are
    /// ended.
    pub lease: Duration,
    /// How often an instance beats (and learns of cancels and claims of its runs).
    pub renew_every: Duration,
    /// How often an instance looks for runs of gone owners and drains the outbox.
    pub scan_every: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(6),
            renew_every: Duration::from_secs(2),
            scan_every: Duration::from_secs(2),
        }
    }
}

impl LeaseSettings {
    /// A lease shorter than two renewals would expire between beats of a healthy owner.
    pub fn check(self) -> Result<Self, String> {
        if self.renew_every.is_zero() || self.scan_every.is_zero() {
            return Err("PA_RUN_LEASE_RENEW_MS and PA_RUN_REAPER_SCAN_MS must be above 0".into());
        }
        if self.lease < self.renew_every * 2 {
            return Err("PA_RUN_LEASE_MS must be at least twice PA_RUN_LEASE_RENEW_MS".into());
        }
        Ok(self)
    }
}

/// What a run's stream says about how far the run got.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamState {
    /// The assistant's text so far: its TEXT_MESSAGE_CONTENT deltas (not a sub-run's relayed
    /// ones), messages joined by a newline as the loop joins its turns.
    pub text: String,
    /// The messages it began and which of them are still open.
    pub messages: OpenMessages,
    /// The run's RUN_FINISHED / RUN_ERROR, when the stream has one.
    pub terminal: Option<AgUiEvent>,
}

/// Reads a run's own events (relayed sub-run events carry `subagentRunId` and are skipped).
pub fn stream_state<'a>(events: impl IntoIterator<Item = &'a AgUiEvent>) -> StreamState {
    let mut state = StreamState::default();
    let mut last_message = String::new();
    for event in events {
        if event.subagent_run_id.is_some() {
            continue;
        }
        state.messages.saw(event);
        match &event.event {
            Some(Event::TextMessageContent(content)) => {
                if content.message_id != last_message {
                    if !state.text.is_empty() && !content.delta.is_empty() {
                        state.text.push('\n');
                    }
                    last_message = content.message_id.clone();
                }
                state.text.push_str(&content.delta);
            }
            Some(Event::RunFinished(_)) | Some(Event::RunError(_)) if state.terminal.is_none() => {
                state.terminal = Some(event.clone());
            }
            _ => {}
        }
    }
    state
}

/// The events that end a run whose driver is gone, after what its stream holds: what it left
/// open is closed first (AG-UI clients expect every START to be ended), then RUN_ERROR `code`.
pub fn closing_events(state: &StreamState, code: &str, message: &str) -> Vec<AgUiEvent> {
    let mut events = state.messages.closing_events();
    events.push(AgUiEvent::new(Event::RunError(RunError {
        message: message.to_string(),
        code: Some(code.to_string()),
        timestamp: None,
    })));
    events
}

/// One owner as a scan saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerSeen {
    pub owner: String,
    /// Its beat counter in Postgres (`None`: no row).
    pub pg_beat: Option<i64>,
    /// Its beat counter in Redis (`None`: no key).
    pub redis_beat: Option<i64>,
    /// Postgres' own clock also says its last beat is older than a lease.
    pub stale_in_store: bool,
}

/// The watcher's memory: each owner's beats as last seen, and since when (its own clock).
/// An owner's (Postgres, Redis) beats.
type Beats = (Option<i64>, Option<i64>);

#[derive(Debug, Default)]
pub struct Watch {
    seen: HashMap<String, (Beats, Instant)>,
}

impl Watch {
    /// Takes one successful scan at `now`; returns the owners whose beats stood still for at
    /// least `lease` of this watcher's uninterrupted watching (and are stale in the store too).
    pub fn observe(&mut self, now: Instant, owners: &[OwnerSeen], lease: Duration) -> Vec<String> {
        let mut gone = Vec::new();
        let mut kept = HashMap::with_capacity(owners.len());
        for seen in owners {
            let beats = (seen.pg_beat, seen.redis_beat);
            let since = match self.seen.get(&seen.owner) {
                Some((before, since)) if *before == beats => *since,
                _ => now,
            };
            if seen.stale_in_store && now.duration_since(since) >= lease {
                gone.push(seen.owner.clone());
            }
            kept.insert(seen.owner.clone(), (beats, since));
        }
        self.seen = kept;
        gone
    }

    /// A scan or a beat of this watcher failed: what it saw may be an outage, not a death. Every
    /// owner gets a whole lease again, counted from the next successful scan.
    pub fn reset(&mut self) {
        self.seen.clear();
    }
}

/// The run-end outbox of the deployment whose database is `database`: deployments (and test
/// meshes) sharing one Redis never land, or drop, each other's entries.
pub fn outbox_key(database: &str) -> String {
    pa_bus::keys::runs_outbox(database)
}

fn redis_beat_key(owner: &str) -> String {
    pa_bus::keys::runs_owner_beat(owner)
}

fn progress_key(run_id: &str) -> String {
    pa_bus::keys::run_progress(run_id)
}

/// What an owner writes with its events whenever a run's usage or attempts change, so that
/// whoever ends the run after the owner's death records them.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub usage: Usage,
    #[serde(default)]
    pub attempts: Vec<ModelAttempt>,
}

/// The side write that records `progress` of `run_id` (see `EventSink::emit_all_with`).
pub fn progress_write(run_id: &str, progress: &Progress) -> Result<(String, String), PaError> {
    Ok((
        progress_key(run_id),
        serde_json::to_string(progress).map_err(PaError::internal)?,
    ))
}

/// An unfinished inline run and its owner, as the scan reads them.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub(crate) run_id: String,
    pub(crate) owner: Option<String>,
    pub(crate) pg_beat: Option<i64>,
    pub(crate) stale_in_store: bool,
    pub(crate) depth: i32,
}

/// This instance's leases: its id, and the queries of owners and claims (on the schema owner's
/// pool: they span tenants, like maintenance).
pub struct Leases {
    instance: String,
    pub(crate) settings: LeaseSettings,
    owner_pool: PgPool,
    redis: pa_kit::redis::Pool,
    /// This deployment's run-end outbox (ADR 0151).
    pub(crate) outbox_key: String,
}

/// A run whose owner is not this instance, as cancel sees it.
pub struct OwnerState {
    pub owner: Option<String>,
    /// Its last beat is younger than a lease (Postgres' clock).
    pub fresh: bool,
}

impl Leases {
    /// `database`: the name of this deployment's database (it names the outbox).
    pub fn new(
        settings: LeaseSettings,
        owner_pool: PgPool,
        redis: pa_kit::redis::Pool,
        database: &str,
    ) -> Self {
        Self {
            instance: format!("runs-{}", uuid::Uuid::now_v7()),
            settings,
            owner_pool,
            redis,
            outbox_key: outbox_key(database),
        }
    }

    /// This process's owner id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Beats in Postgres and returns the runs of `local` this instance must stop driving: those
    /// cancelled through another instance, ended elsewhere, or claimed from it.
    pub async fn beat_pg(&self, local: &[String]) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query(
            "WITH beat AS ( \
               INSERT INTO run_owners (instance_id, beat, beat_at) VALUES ($1, 1, now()) \
               ON CONFLICT (instance_id) DO UPDATE \
                 SET beat = run_owners.beat + 1, beat_at = now() RETURNING beat) \
             SELECT r.id FROM runs r \
             WHERE r.id = ANY($2) AND (r.owner_id IS DISTINCT FROM $1 OR r.cancel_requested \
               OR r.finished_at IS NOT NULL)",
        )
        .bind(&self.instance)
        .bind(local)
        .fetch_all(&self.owner_pool)
        .await?;
        rows.iter().map(|r| r.try_get::<String, _>("id")).collect()
    }

    /// Beats in Redis.
    pub async fn beat_redis(&self) -> Result<(), PaError> {
        let key = redis_beat_key(&self.instance);
        let mut beat = redis::pipe();
        beat.incr(&key, 1).ignore().expire(&key, 24 * 3600).ignore();
        pa_kit::redis::bounded(&self.redis, move |c| {
            Box::pin(async move { beat.query_async::<()>(c).await })
        })
        .await
        .map_err(redis_unavailable)
    }

    /// Unfinished inline runs, and durable runs whose workflow's start is not confirmed yet
    /// (ADR 0243), of other owners (or of none: rows from before leases), with the owners'
    /// beats in Postgres.
    pub(crate) async fn candidates(&self) -> Result<Vec<Candidate>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT r.id, r.owner_id, o.beat, \
               (o.beat_at IS NULL OR o.beat_at < now() - make_interval(secs => $2)) AS stale, \
               (r.parent_run_id IS NOT NULL)::int4 AS depth \
             FROM runs r LEFT JOIN run_owners o ON o.instance_id = r.owner_id \
             WHERE r.finished_at IS NULL AND (r.mode <> $3 OR r.start_pending) \
               AND r.status IN ($4, $5) \
               AND r.owner_id IS DISTINCT FROM $1 \
             ORDER BY r.created_at LIMIT 1000",
        )
        .bind(&self.instance)
        .bind(self.settings.lease.as_secs_f64())
        .bind(RunMode::Durable as i16)
        .bind(RunStatus::Queued as i16)
        .bind(RunStatus::Running as i16)
        .fetch_all(&self.owner_pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Candidate {
                    run_id: r.try_get("id")?,
                    owner: r.try_get("owner_id")?,
                    pg_beat: r.try_get("beat")?,
                    stale_in_store: r.try_get("stale")?,
                    depth: r.try_get("depth")?,
                })
            })
            .collect()
    }

    /// The owners' beats in Redis.
    pub(crate) async fn redis_beats(&self, owners: &[String]) -> Result<Vec<Option<i64>>, PaError> {
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = owners.iter().map(|o| redis_beat_key(o)).collect();
        let mut mget = redis::cmd("MGET");
        mget.arg(keys);
        pa_kit::redis::bounded(&self.redis, move |c| {
            Box::pin(async move { mget.query_async::<Vec<Option<i64>>>(c).await })
        })
        .await
        .map_err(redis_unavailable)
    }

    /// Takes `run_id` over from `from` (its dead owner, or none); `None` when someone else did
    /// first or it has ended. One UPDATE: of racing claimers exactly one wins.
    pub async fn claim(
        &self,
        run_id: &str,
        from: Option<&str>,
    ) -> Result<Option<RunSpec>, RunsError> {
        let spec: Option<Vec<u8>> = sqlx::query_scalar(
            "UPDATE runs SET owner_id = $3 \
             WHERE id = $1 AND owner_id IS NOT DISTINCT FROM $2 AND finished_at IS NULL \
               AND status IN ($4, $5) RETURNING spec",
        )
        .bind(run_id)
        .bind(from)
        .bind(&self.instance)
        .bind(RunStatus::Queued as i16)
        .bind(RunStatus::Running as i16)
        .fetch_optional(&self.owner_pool)
        .await?;
        spec.map(|bytes| {
            RunSpec::decode(bytes.as_slice()).map_err(|e| RunsError::Corrupt(e.to_string()))
        })
        .transpose()
    }

    /// Records that durable runs are their workflows' (ADR 0243): svc-worker confirmed their
    /// starts, or a run's owner died after its start landed. No instance owns them any more (no
    /// lease, never reaped). One statement for all of them.
    pub(crate) async fn hand_to_workflow(&self, run_ids: &[String]) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE runs SET start_pending = false, owner_id = NULL \
             WHERE id = ANY($1) AND start_pending",
        )
        .bind(run_ids)
        .execute(&self.owner_pool)
        .await?;
        Ok(())
    }

    /// Gives a claimed run back to `to` (ending it failed half-way: the next scan tries again).
    pub(crate) async fn release(&self, run_id: &str, to: Option<&str>) {
        let released = sqlx::query(
            "UPDATE runs SET owner_id = $3 WHERE id = $1 AND owner_id = $2 AND finished_at IS NULL",
        )
        .bind(run_id)
        .bind(&self.instance)
        .bind(to)
        .execute(&self.owner_pool)
        .await;
        if let Err(err) = released {
            tracing::warn!(%err, run_id, "cannot release a claimed run");
        }
    }

    /// Who owns `run_id`, and whether its beat is fresh.
    pub async fn owner_of(&self, run_id: &str) -> Result<Option<OwnerState>, RunsError> {
        let row = sqlx::query(
            "SELECT r.owner_id, \
               (o.beat_at IS NOT NULL AND o.beat_at >= now() - make_interval(secs => $2)) AS fresh \
             FROM runs r LEFT JOIN run_owners o ON o.instance_id = r.owner_id WHERE r.id = $1",
        )
        .bind(run_id)
        .bind(self.settings.lease.as_secs_f64())
        .fetch_optional(&self.owner_pool)
        .await?;
        row.map(|r| {
            Ok(OwnerState {
                owner: r.try_get("owner_id")?,
                fresh: r.try_get("fresh")?,
            })
        })
        .transpose()
    }

    /// Asks the owner of `run_id` to stop it (it learns on its next beat).
    pub async fn request_cancel(&self, run_id: &str) -> Result<(), RunsError> {
        sqlx::query("UPDATE runs SET cancel_requested = true WHERE id = $1")
            .bind(run_id)
            .execute(&self.owner_pool)
            .await?;
        Ok(())
    }

    /// Forgets owners long gone that own no unfinished run.
    pub(crate) async fn forget_old_owners(&self) {
        let forgotten = sqlx::query(
            "DELETE FROM run_owners o WHERE o.beat_at < now() - interval '1 hour' \
             AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.owner_id = o.instance_id \
               AND r.finished_at IS NULL)",
        )
        .execute(&self.owner_pool)
        .await;
        if let Err(err) = forgotten {
            tracing::debug!(%err, "cannot forget old run owners");
        }
    }

    /// The progress an owner last wrote for `run_id`.
    pub async fn progress(&self, run_id: &str) -> Progress {
        let read = async {
            let key = progress_key(run_id);
            let json: Option<String> = pa_kit::redis::bounded(&self.redis, move |c| {
                Box::pin(async move { c.get(key).await })
            })
            .await
            .map_err(redis_unavailable)?;
            Ok::<_, PaError>(json)
        };
        match read.await {
            Ok(Some(json)) => serde_json::from_str(&json).unwrap_or_default(),
            Ok(None) => Progress::default(),
            Err(err) => {
                tracing::warn!(%err, run_id, "cannot read a run's progress");
                Progress::default()
            }
        }
    }
}

/// Why a run whose driver is gone is ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrphanEnd {
    OwnerLost,
    Cancelled,
}

/// How a run whose driver is gone ends, from what its stream holds, and the events still to
/// write.
pub fn orphan_ending(
    state: &StreamState,
    usage: Usage,
    why: OrphanEnd,
) -> (RunEnding, Vec<AgUiEvent>) {
    let some = |s: String| Some(s).filter(|s| !s.is_empty());
    match state.terminal.as_ref().and_then(|t| t.event.as_ref()) {
        // The stream ended already (the end was published, its record was lost): as it says.
        Some(Event::RunFinished(_)) => (
            RunEnding {
                status: RunStatus::Succeeded,
                usage,
                error_code: None,
                error_message: None,
                assistant_text: state.text.clone(),
                tainted: false,
            },
            Vec::new(),
        ),
        Some(Event::RunError(err)) => (
            RunEnding {
                status: if err.code.as_deref() == Some("cancelled") {
                    RunStatus::Cancelled
                } else {
                    RunStatus::Failed
                },
                usage,
                error_code: err.code.clone().and_then(some),
                error_message: some(err.message.clone()),
                assistant_text: state.text.clone(),
                tainted: false,
            },
            Vec::new(),
        ),
        _ => {
            let (status, code, message) = match why {
                OrphanEnd::OwnerLost => (RunStatus::Failed, OWNER_LOST, OWNER_LOST_MESSAGE),
                OrphanEnd::Cancelled => {
                    (RunStatus::Cancelled, "cancelled", "cancelled by the user")
                }
            };
            (
                RunEnding {
                    status,
                    usage,
                    error_code: Some(code.to_string()),
                    error_message: Some(message.to_string()),
                    assistant_text: state.text.clone(),
                    tainted: false,
                },
                closing_events(state, code, message),
            )
        }
    }
}

/// Cheap to clone handle the driver keeps.
pub type SharedLeases = Arc<Leases>;

fn redis_unavailable(err: impl std::fmt::Display) -> PaError {
    PaError::unavailable(format!("redis: {err}")).with_retry_after_ms(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pa_proto::v1::{TextMessageContent, TextMessageEnd, TextMessageStart};

    fn start(id: &str) -> AgUiEvent {
        AgUiEvent::new(Event::TextMessageStart(TextMessageStart {
            message_id: id.into(),
            role: "assistant".into(),
            timestamp: None,
        }))
    }

    fn delta(id: &str, text: &str) -> AgUiEvent {
        AgUiEvent::new(Event::TextMessageContent(TextMessageContent {
            message_id: id.into(),
            delta: text.into(),
            timestamp: None,
        }))
    }

    fn end(id: &str) -> AgUiEvent {
        AgUiEvent::new(Event::TextMessageEnd(TextMessageEnd {
            message_id: id.into(),
            timestamp: None,
        }))
    }

    #[test]
    fn the_partial_text_is_the_runs_own_deltas_turns_joined_by_a_newline() {
        let events = vec![
            start("m"),
            delta("m", "Hello "),
            delta("m", "there."),
            end("m"),
            // A sub-run's relayed text is not the run's reply.
            delta("child-m", "not mine").attributed_to("sub-1"),
            start("m-1"),
            delta("m-1", "Second "),
            delta("m-1", "turn"),
        ];
        let state = stream_state(&events);
        assert_eq!(state.text, "Hello there.\nSecond turn");
        assert_eq!(state.messages.open_text(), Some("m-1"));
        assert_eq!(state.terminal, None);
        let closing = closing_events(&state, OWNER_LOST, "gone");
        assert_eq!(closing.len(), 2);
        assert!(
            matches!(&closing[0].event, Some(Event::TextMessageEnd(e)) if e.message_id == "m-1")
        );
        assert!(
            matches!(&closing[1].event, Some(Event::RunError(e)) if e.code.as_deref() == Some(OWNER_LOST))
        );
    }

    #[test]
    fn an_orphan_keeps_its_partial_text_and_a_stream_that_ended_is_not_ended_again() {
        let mut events = vec![start("m"), delta("m", "half a rep")];
        let usage = Usage {
            model_requests: 1,
            total_tokens: 7,
            ..Default::default()
        };
        let (ending, closing) = orphan_ending(&stream_state(&events), usage, OrphanEnd::OwnerLost);
        assert_eq!(ending.status, RunStatus::Failed);
        assert_eq!(ending.error_code.as_deref(), Some(OWNER_LOST));
        assert_eq!(ending.assistant_text, "half a rep");
        assert_eq!(ending.usage.total_tokens, 7);
        assert_eq!(closing.len(), 2, "TEXT_MESSAGE_END, then RUN_ERROR");
        let (cancelled, _) = orphan_ending(&stream_state(&events), usage, OrphanEnd::Cancelled);
        assert_eq!(cancelled.status, RunStatus::Cancelled);
        assert_eq!(cancelled.assistant_text, "half a rep");
        // Closed message, then the run's own RUN_FINISHED: it succeeded; nothing more to write.
        events.push(end("m"));
        events.push(AgUiEvent::new(Event::RunFinished(Default::default())));
        let (ending, closing) = orphan_ending(&stream_state(&events), usage, OrphanEnd::OwnerLost);
        assert_eq!(ending.status, RunStatus::Succeeded);
        assert!(closing.is_empty());
    }

    fn seen(owner: &str, pg: i64, redis: i64, stale: bool) -> OwnerSeen {
        OwnerSeen {
            owner: owner.into(),
            pg_beat: Some(pg),
            redis_beat: Some(redis),
            stale_in_store: stale,
        }
    }

    #[test]
    fn an_owner_is_gone_only_after_a_whole_lease_of_uninterrupted_watching() {
        let lease = Duration::from_secs(6);
        let t0 = Instant::now();
        let mut watch = Watch::default();
        assert!(
            watch
                .observe(t0, &[seen("a", 5, 9, true)], lease)
                .is_empty()
        );
        let t = |s: u64| t0 + Duration::from_secs(s);
        assert!(
            watch
                .observe(t(5), &[seen("a", 5, 9, true)], lease)
                .is_empty()
        );
        assert_eq!(
            watch.observe(t(6), &[seen("a", 5, 9, true)], lease),
            vec!["a"]
        );
        // A failed scan (a store outage): the lease is counted again from the next scan.
        watch.reset();
        assert!(
            watch
                .observe(t(20), &[seen("a", 5, 9, true)], lease)
                .is_empty()
        );
        assert!(
            watch
                .observe(t(25), &[seen("a", 5, 9, true)], lease)
                .is_empty()
        );
        assert_eq!(
            watch.observe(t(26), &[seen("a", 5, 9, true)], lease),
            vec!["a"]
        );
    }

    #[test]
    fn an_owner_beating_in_either_store_or_fresh_in_the_database_is_alive() {
        let lease = Duration::from_secs(6);
        let t0 = Instant::now();
        let t = |s: u64| t0 + Duration::from_secs(s);
        let mut watch = Watch::default();
        // Cut off from Postgres, still beating in Redis.
        watch.observe(t0, &[seen("a", 5, 1, true)], lease);
        watch.observe(t(4), &[seen("a", 5, 3, true)], lease);
        assert!(
            watch
                .observe(t(8), &[seen("a", 5, 5, true)], lease)
                .is_empty()
        );
        // Beating in Postgres only.
        assert!(
            watch
                .observe(t(12), &[seen("a", 7, 5, true)], lease)
                .is_empty()
        );
        // Standing still, but Postgres' clock says the last beat is recent.
        assert!(
            watch
                .observe(t(30), &[seen("a", 7, 5, false)], lease)
                .is_empty()
        );
        assert_eq!(
            watch.observe(t(31), &[seen("a", 7, 5, true)], lease),
            vec!["a"]
        );
        // An owner no longer seen is forgotten.
        assert!(watch.observe(t(32), &[], lease).is_empty());
        assert!(
            watch
                .observe(t(40), &[seen("a", 7, 5, true)], lease)
                .is_empty()
        );
    }

    #[test]
    fn a_lease_must_outlast_two_renewals() {
        assert!(LeaseSettings::default().check().is_ok());
        let short = LeaseSettings {
            lease: Duration::from_secs(3),
            ..Default::default()
        };
        assert!(short.check().is_err());
    }
}
