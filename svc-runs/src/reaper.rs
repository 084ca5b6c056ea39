//! The reaper: each svc-runs instance beats for its inline runs, looks for runs whose owner's
//! beats stood still for a lease (ADR 0150) and ends them (`owner_lost`, partial reply kept),
//! drains the run-end outbox (ADR 0151), and ends a run whose owner is gone when its user
//! cancels it. The lease bookkeeping it reads is `lease`'s; the ending is the inline driver's.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use pa_bus::run_events::StoredEvent;
use pa_proto::v1::RunSpec;
use tokio::time::Instant;

use crate::error::RunsError;

/// The `RUN_ERROR` code of a run whose owner died (retryable: the same message may be sent again).
use crate::inline::InlineDriver;
use crate::lease::*;

impl InlineDriver {
    /// Ends a run this instance claimed (its owner is gone): the ending waiting in the outbox
    /// when there is one (the run's own), else the end its stream already holds, else the
    /// partial reply with RUN_ERROR `owner_lost` (or `cancelled`).
    pub(crate) async fn end_orphan(&self, spec: &RunSpec, why: OrphanEnd, from: Option<&str>) {
        let run_id = &spec.run_id;
        match crate::outbox::take_one(self, run_id).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(%err, run_id, "cannot read the outbox; the run is retried later");
                self.leases.release(run_id, from).await;
                return;
            }
        }
        let events = match pa_bus::run_events::read_all(&self.redis, run_id).await {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!(%err, run_id, "cannot read a run's stream; retried later");
                self.leases.release(run_id, from).await;
                return;
            }
        };
        if spec.mode == pa_proto::v1::RunMode::Durable as i32 {
            // A durable run whose owner died before it confirmed the workflow's start (ADR
            // 0243). A workflow writes the stream only once Temporal recorded it, so a stream
            // with events is one Temporal carries: only the confirmation was lost.
            if !events.is_empty() && why == OrphanEnd::OwnerLost {
                match self
                    .leases
                    .hand_to_workflow(std::slice::from_ref(run_id))
                    .await
                {
                    Ok(()) => tracing::info!(
                        run_id,
                        "a durable run whose owner died before confirming its start is its workflow's"
                    ),
                    Err(err) => {
                        tracing::warn!(%err, run_id, "cannot hand a durable run to its workflow; retried later");
                        self.leases.release(run_id, from).await;
                    }
                }
                return;
            }
            // No workflow wrote it: ended here. Should the start land after all, the cancel
            // flag stops its model turn at the next token, and its end finds the run ended.
            if let Err(err) = pa_bus::run_events::request_cancel(&self.redis, run_id).await {
                tracing::warn!(%err, run_id, "cannot flag a reaped durable run as cancelled");
            }
        }
        let state = stream_state(events.iter().map(|e: &StoredEvent| &e.event));
        let progress = self.leases.progress(run_id).await;
        let (ending, closing) = orphan_ending(&state, progress.usage, why);
        tracing::warn!(run_id, ?why, status = ?ending.status, "ending a run whose owner is gone");
        self.end_run(spec, ending, progress.attempts, closing).await;
    }
}

/// Beats, watches and reaps, and drains the outbox. Not tracked tasks: while shutdown drains
/// the runs, their owner keeps beating; once shutdown is triggered the instance takes no more
/// work (no reaping, no draining) and stops beating when its last run is done.
pub fn spawn(driver: InlineDriver) {
    let settings = driver.leases.settings;
    // Set by a failed beat of this instance, taken by its watcher: its own store trouble may be
    // everyone's, so what it saw meanwhile does not count.
    let troubled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done =
        |driver: &InlineDriver| driver.shutdown.is_triggered() && driver.active_runs().is_empty();
    // The two beats run on their own, so a store that hangs delays only its own beat.
    tokio::spawn({
        let (driver, troubled) = (driver.clone(), troubled.clone());
        async move {
            let mut tick = interval(settings.renew_every);
            while !done(&driver) {
                tick.tick().await;
                let local = driver.active_runs();
                match driver.leases.beat_pg(&local).await {
                    Ok(stop) => {
                        for run_id in stop {
                            tracing::info!(
                                run_id,
                                "a run was cancelled or taken elsewhere: stopping it"
                            );
                            driver.cancel(&run_id);
                        }
                    }
                    Err(err) => {
                        troubled.store(true, std::sync::atomic::Ordering::SeqCst);
                        tracing::warn!(%err, "cannot renew the inline run lease in Postgres");
                    }
                }
            }
        }
    });
    tokio::spawn({
        let (driver, troubled) = (driver.clone(), troubled.clone());
        async move {
            let mut tick = interval(settings.renew_every);
            while !done(&driver) {
                tick.tick().await;
                if let Err(err) = driver.leases.beat_redis().await {
                    troubled.store(true, std::sync::atomic::Ordering::SeqCst);
                    tracing::warn!(%err, "cannot renew the inline run lease in Redis");
                }
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = interval(settings.scan_every);
        let mut watch = Watch::default();
        let mut outbox = crate::outbox::Backoff::default();
        let mut scans: u64 = 0;
        while !driver.shutdown.is_triggered() {
            tick.tick().await;
            if troubled.swap(false, std::sync::atomic::Ordering::SeqCst) {
                watch.reset();
            }
            crate::outbox::drain(&driver, &mut outbox).await;
            reap(&driver, &mut watch).await;
            scans += 1;
            if scans % 600 == 1 {
                driver.leases.forget_old_owners().await;
            }
        }
    });
}

fn interval(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// One scan: watches the owners of unfinished inline runs and ends the runs of gone ones.
async fn reap(driver: &InlineDriver, watch: &mut Watch) {
    let leases = &driver.leases;
    let candidates = match leases.candidates().await {
        Ok(c) => c,
        Err(err) => {
            tracing::warn!(%err, "cannot look for runs of gone owners");
            watch.reset();
            return;
        }
    };
    let mut owners: Vec<String> = candidates
        .iter()
        .map(|c| c.owner.clone().unwrap_or_default())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    owners.sort();
    let redis_beats = match leases.redis_beats(&owners).await {
        Ok(b) => b,
        Err(err) => {
            tracing::warn!(%err, "cannot read the owners' beats in Redis");
            watch.reset();
            return;
        }
    };
    let seen: Vec<OwnerSeen> = owners
        .iter()
        .zip(redis_beats)
        .map(|(owner, redis_beat)| {
            let of_owner = candidates
                .iter()
                .find(|c| c.owner.as_deref().unwrap_or_default() == owner);
            OwnerSeen {
                owner: owner.clone(),
                pg_beat: of_owner.and_then(|c| c.pg_beat),
                redis_beat,
                stale_in_store: of_owner.is_some_and(|c| c.stale_in_store),
            }
        })
        .collect();
    let gone: HashSet<String> = watch
        .observe(Instant::now(), &seen, leases.settings.lease)
        .into_iter()
        .collect();
    if gone.is_empty() {
        return;
    }
    // Sub-runs first, so a parent's stream ends after its children's.
    let mut due: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| gone.contains(c.owner.as_deref().unwrap_or_default()))
        .collect();
    due.sort_by_key(|c| std::cmp::Reverse(c.depth));
    for candidate in due {
        let from = candidate.owner.as_deref();
        match leases.claim(&candidate.run_id, from).await {
            Ok(Some(spec)) => driver.end_orphan(&spec, OrphanEnd::OwnerLost, from).await,
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(%err, run_id = %candidate.run_id, "cannot claim a run of a gone owner");
            }
        }
    }
}

/// Cancel of an inline run this instance does not drive: asks its owner when that one is alive,
/// and ends the run itself when the owner is gone (or does not answer within a lease).
pub(crate) async fn cancel_elsewhere(
    driver: &InlineDriver,
    store: &crate::store::RunStore,
    spec: &RunSpec,
) -> Result<(), RunsError> {
    let leases = &driver.leases;
    let run_id = &spec.run_id;
    let tenant = spec
        .identity
        .as_ref()
        .map(|i| i.tenant_id.clone())
        .unwrap_or_default();
    let Some(state) = leases.owner_of(run_id).await? else {
        return Err(RunsError::RunNotFound(run_id.clone()));
    };
    if state.fresh && state.owner.as_deref() != Some(leases.instance()) {
        leases.request_cancel(run_id).await?;
        let deadline = Instant::now() + leases.settings.lease + leases.settings.renew_every;
        while Instant::now() < deadline {
            if matches!(store.run_status(&tenant, run_id).await, Ok(Some(s)) if crate::store::is_terminal(s))
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The owner is gone (or did not answer): whoever claims the run ends it.
    let state = leases.owner_of(run_id).await?;
    let from = state.and_then(|s| s.owner);
    if let Some(spec) = leases.claim(run_id, from.as_deref()).await? {
        driver
            .end_orphan(&spec, OrphanEnd::Cancelled, from.as_deref())
            .await;
    }
    Ok(())
}
