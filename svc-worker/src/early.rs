//! Early first turns: when svc-worker starts a durable run, its first model turn begins while
//! Temporal records the workflow (ADR 0243), instead of after the workflow's first task has gone
//! back to Temporal and come back as an activity (round trips through the server's persistence,
//! on the path to the run's first token). It writes nothing until Temporal has recorded the
//! workflow as new ([`Begun::recorded`]), so what a client sees is always a run Temporal
//! carries; a start that makes no new workflow drops its [`Begun`] and the turn stops unseen.
//!
//! The turn is the one the workflow schedules (`chat::first_turn`, a pure function of the run's
//! input) and writes the same event ids. When the activity arrives at this worker (Temporal hands
//! it to the worker that completed the workflow task: eager activity execution), it adopts the
//! turn instead of running it: the turn's heartbeats go to the activity from then on and its
//! output is the activity's. A retried activity (this worker died) runs the turn itself, like any
//! retry: the event ids it writes are the ones already written.
//!
//! A turn that ends within a moment needs no activity at all: the workflow's first task, on the
//! worker that began it, takes its result through a local activity ([`EarlyTurns::ended_within`],
//! ADR 0238). A turn still running then goes on as described above.
//!
//! A turn whose activity went to another worker (the server does not dispatch activities eagerly,
//! or this worker had no free activity slot) would run twice; so one that is not adopted within
//! [`ADOPT_WITHIN`] is stopped and this worker stops beginning turns early for [`OFF_FOR`], and
//! says so in its log. A turn that already ended by then stays adoptable for [`KEEP_ENDED`]: its
//! activity, arriving late, returns what the client already saw instead of generating anew.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tokio::sync::{oneshot, watch};

use crate::payloads::ModelTurnOutput;

/// Where a model turn's heartbeats go: its activity's context, or, for a turn begun before its
/// activity ran (`early`), the activity that adopts it, once one has.
#[derive(Clone)]
pub enum Beat {
    Activity(Box<ActivityContext>),
    Early {
        adopter: Arc<std::sync::OnceLock<ActivityContext>>,
        /// True once Temporal has recorded the run's workflow as new: until then the turn
        /// writes nothing a client could see.
        recorded: watch::Receiver<bool>,
    },
}

impl Beat {
    /// The activity's attempt (1 for the first; an early turn is its activity's first).
    pub(crate) fn attempt(&self) -> u32 {
        match self {
            Beat::Activity(ctx) => ctx.info().attempt,
            Beat::Early { .. } => 1,
        }
    }

    /// Whether this is a turn begun at the run's start, before any activity (see `Begun`).
    pub(crate) fn is_early(&self) -> bool {
        matches!(self, Beat::Early { .. })
    }

    /// Waits until the turn may write its events: at once for an activity's; for an early
    /// turn, once its workflow is recorded (ADR 0243). An error: the start made no new
    /// workflow, and the turn stops before anyone saw it.
    pub(crate) async fn recorded(&self) -> Result<(), ActivityError> {
        match self {
            Beat::Activity(_) => Ok(()),
            Beat::Early { recorded, .. } => recorded
                .clone()
                .wait_for(|recorded| *recorded)
                .await
                .map(drop)
                .map_err(|_| ActivityError::cancelled()),
        }
    }

    pub(crate) async fn record(&self, seq: u64) -> Result<(), ActivityError> {
        let ctx = match self {
            Beat::Activity(ctx) => Some(ctx.as_ref()),
            Beat::Early { adopter, .. } => adopter.get(),
        };
        let Some(ctx) = ctx else {
            return Ok(());
        };
        ctx.record_heartbeat(seq)
            .await
            .map_err(|e| ActivityError::from(std::io::Error::other(e.to_string())))?;
        // Temporal cancels an attempt it no longer waits for (timed out while the server was
        // away, its workflow ended, the worker stops): a body that ran on would hold its
        // activity slot and write beside the attempt that replaced it.
        if ctx.is_cancelled() {
            return Err(ActivityError::cancelled());
        }
        Ok(())
    }
}

/// How long a begun turn waits for its activity.
pub const ADOPT_WITHIN: Duration = Duration::from_secs(10);
/// How long a worker that saw a turn go unadopted begins none early.
pub const OFF_FOR: Duration = Duration::from_secs(300);
/// How long a turn that ended before its activity came stays adoptable.
pub const KEEP_ENDED: Duration = Duration::from_secs(600);

type TurnResult = Result<ModelTurnOutput, String>;

/// What runs the turn, given where its heartbeats go (the caller's activities: this module does
/// not know them).
pub type TurnRunner =
    Box<dyn FnOnce(Beat) -> futures::future::BoxFuture<'static, TurnResult> + Send + 'static>;

/// The early first turns of this worker, by run id.
#[derive(Clone)]
pub struct EarlyTurns {
    turns: Arc<Mutex<HashMap<String, EarlyTurn>>>,
    /// Until when no turn begins early (a turn was not adopted in time: activities go
    /// elsewhere, or wait for a slot).
    off_until: Arc<Mutex<Option<Instant>>>,
    adopt_within: Duration,
    off_for: Duration,
}

impl Default for EarlyTurns {
    fn default() -> Self {
        Self::adopted_within(ADOPT_WITHIN)
    }
}

struct EarlyTurn {
    adopter: Arc<OnceLock<ActivityContext>>,
    done: oneshot::Receiver<TurnResult>,
    task: tokio::task::AbortHandle,
    /// True once the turn ran to its end (its result waits in `done`).
    ended: watch::Receiver<bool>,
}

/// A turn registered before its run's workflow is started (the activity can arrive with the
/// start call's reply, before the starter has seen it). Dropped without [`Reserved::begin`]
/// (the start failed, or found the workflow existing), the turn never begins; an activity that
/// claimed it meanwhile runs the turn itself.
pub struct Reserved {
    turns: EarlyTurns,
    run_id: String,
    begin: Option<oneshot::Sender<TurnRunner>>,
    /// Tells this turn's entry from another's under the same run id.
    adopter: Arc<OnceLock<ActivityContext>>,
    /// Lets the turn write (see [`Beat::recorded`]).
    record: Option<watch::Sender<bool>>,
}

/// A turn begun before its workflow's start returned: it computes (asks the model) but writes
/// nothing until [`Begun::recorded`]; dropped without it (the start failed, found the workflow
/// existing, or was abandoned), the turn is stopped and forgotten, unless an activity took it
/// meanwhile (then it is that activity's, and ends with an error it retries).
pub struct Begun {
    turns: EarlyTurns,
    run_id: String,
    adopter: Arc<OnceLock<ActivityContext>>,
    record: Option<watch::Sender<bool>>,
}

impl Begun {
    /// Temporal recorded the run's workflow as new: the turn writes from now on.
    pub fn recorded(mut self) {
        if let Some(record) = self.record.take() {
            record.send_replace(true);
        }
    }
}

impl Drop for Begun {
    fn drop(&mut self) {
        if self.record.is_none() {
            return;
        }
        let mut map = self.turns.lock();
        let ours = map
            .get(&self.run_id)
            .is_some_and(|turn| Arc::ptr_eq(&turn.adopter, &self.adopter));
        if ours && let Some(turn) = map.remove(&self.run_id) {
            turn.task.abort();
        }
    }
}

/// A turn claimed by its activity.
pub struct Claimed {
    turn: EarlyTurn,
}

impl EarlyTurns {
    /// Turns that stop unless adopted within `window` ([`ADOPT_WITHIN`] by default).
    pub fn adopted_within(window: Duration) -> Self {
        Self::with_windows(window, OFF_FOR)
    }

    /// As [`Self::adopted_within`], beginning none early for `off_for` after a turn was not.
    pub fn with_windows(adopt_within: Duration, off_for: Duration) -> Self {
        Self {
            turns: Arc::default(),
            off_until: Arc::default(),
            adopt_within,
            off_for,
        }
    }

    /// Whether turns do not begin early now.
    pub fn is_off(&self) -> bool {
        let off_until = self.off_until.lock().unwrap_or_else(|p| p.into_inner());
        off_until.is_some_and(|until| Instant::now() < until)
    }

    fn turn_off(&self) {
        *self.off_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + self.off_for);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, EarlyTurn>> {
        // A panic while holding the map cannot leave it inconsistent (single inserts/removes).
        self.turns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `run_id`'s first turn; None when this worker does not begin turns early, or
    /// has one for the run already (a repeated start: that one is its activity's).
    pub fn reserve(&self, run_id: &str) -> Option<Reserved> {
        if self.is_off() || self.lock().contains_key(run_id) {
            return None;
        }
        let (begin, started) = oneshot::channel::<TurnRunner>();
        let (finished, done) = oneshot::channel();
        let adopter = Arc::new(OnceLock::new());
        let (record, recorded) = watch::channel(false);
        let beat = Beat::Early {
            adopter: adopter.clone(),
            recorded,
        };
        let (ended_flag, ended) = watch::channel(false);
        let task = tokio::spawn(async move {
            // Dropped unsent (the start failed or found the workflow existing): nothing runs.
            let Ok(run) = started.await else {
                return;
            };
            let output = run(beat).await.map(|output| ModelTurnOutput {
                early: true,
                ..output
            });
            // The result first: whoever sees the flag finds it.
            let _ = finished.send(output);
            ended_flag.send_replace(true);
        });
        self.lock().insert(
            run_id.to_string(),
            EarlyTurn {
                adopter: adopter.clone(),
                done,
                task: task.abort_handle(),
                ended,
            },
        );
        Some(Reserved {
            turns: self.clone(),
            run_id: run_id.to_string(),
            begin: Some(begin),
            adopter,
            record: Some(record),
        })
    }

    /// `run_id`'s turn, when this worker began it and it ends within `wait` (its result, taken
    /// from here); None when there is none, or it runs on (left for its activity to adopt).
    pub async fn ended_within(&self, run_id: &str, wait: Duration) -> Option<TurnResult> {
        let mut ended = self.lock().get(run_id)?.ended.clone();
        let _ = tokio::time::timeout(wait, ended.wait_for(|ended| *ended)).await;
        if !*ended.borrow() {
            return None;
        }
        self.claim(run_id)?.turn.done.await.ok()
    }

    /// The activity's claim on its run's early turn, if there is one.
    pub fn claim(&self, run_id: &str) -> Option<Claimed> {
        self.lock().remove(run_id).map(|turn| Claimed { turn })
    }
}

impl Reserved {
    /// The turn begins (`run`), and stops if no activity adopts it in time.
    pub fn begin(mut self, run: TurnRunner) -> Begun {
        if let Some(begin) = self.begin.take() {
            let _ = begin.send(run);
        }
        let begun = Begun {
            turns: self.turns.clone(),
            run_id: self.run_id.clone(),
            adopter: self.adopter.clone(),
            record: self.record.take(),
        };
        let turns = self.turns.clone();
        let run_id = self.run_id.clone();
        let adopter = self.adopter.clone();
        tokio::spawn(async move {
            tokio::time::sleep(turns.adopt_within).await;
            let late = {
                let mut map = turns.lock();
                match map.get(&run_id) {
                    // Taken, stopped, or another turn under the same id since.
                    None => return,
                    Some(turn) if !Arc::ptr_eq(&turn.adopter, &adopter) => return,
                    // Ended: kept for its activity, which may still come.
                    Some(turn) if *turn.ended.borrow() => None,
                    Some(_) => map.remove(&run_id),
                }
            };
            turns.turn_off();
            tracing::warn!(
                run_id = %run_id,
                ended = late.is_none(),
                "a durable run's first turn, begun when its workflow started, was not taken by \
                 its activity within {:?}: Temporal dispatches activities to other workers \
                 (enable system.enableActivityEagerExecution) or this worker's activity slots \
                 are full; no first turns begin early for {:?}",
                turns.adopt_within,
                turns.off_for
            );
            match late {
                Some(turn) => turn.task.abort(),
                None => {
                    tokio::time::sleep(KEEP_ENDED).await;
                    turns.claim(&run_id);
                }
            }
        });
        begun
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if self.begin.is_some() {
            self.turns.claim(&self.run_id);
        }
    }
}

impl Claimed {
    /// Waits for the turn, its heartbeats going to `ctx` from now on. None: it never began (the
    /// activity runs the turn itself).
    pub async fn adopt(self, ctx: ActivityContext) -> Option<TurnResult> {
        let EarlyTurn {
            adopter,
            done,
            task,
            ..
        } = self.turn;
        let _ = adopter.set(ctx);
        // The activity dropped (cancelled, worker stopping): so is its turn.
        let _stop = AbortOnDrop(task);
        done.await.ok()
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activities::RunActivities;
    use crate::payloads::ChatRunInput;
    use pa_proto::v1::RunSpec;

    fn input(run_id: &str) -> ChatRunInput {
        ChatRunInput {
            spec: Some(RunSpec {
                run_id: run_id.into(),
                chat_id: "chat-1".into(),
                ..Default::default()
            }),
            history: vec![pa_agent::TurnMessage::new("user", "hi")],
            tools: vec![],
            notices: vec![],
            high_privilege_tools: vec![],
            approval_always_tools: vec![],
            approval_timeout_ms: 0,
            recall_wait_ms: 0,
            tainted: false,
            code_revision: crate::chat::CHAT_RUN_REVISION,
        }
    }

    /// Activities whose services are nowhere: a begun turn fails (or waits) without reaching
    /// anything.
    fn nowhere(early: EarlyTurns) -> Arc<RunActivities> {
        let dead = "http://127.0.0.1:9".to_string();
        let config = crate::Config {
            common: pa_kit::config::CommonConfig::from_env(),
            temporal: crate::TemporalConfig::from_env(),
            listen_addr: "127.0.0.1:0".into(),
            runs_url: dead.clone(),
            models_url: dead.clone(),
            tools_url: dead.clone(),
            memory_url: dead,
            schedules: false,
            sticky_timeout: Duration::from_secs(1),
            background_activities: 1,
            turn_retry: Default::default(),
            claim_threshold: crate::claims::DEFAULT_THRESHOLD,
            curator: None,
        };
        let redis = pa_kit::redis::pool("redis://127.0.0.1:9", 1).expect("pool");
        let auth = pa_kit::InternalAuth::new("test-secret");
        let activities = crate::run_activities(&config, redis, auth).expect("lazy clients");
        Arc::new(RunActivities {
            early,
            ..activities
        })
    }

    /// Waits (30 s at most) until a turn of `turns` was not adopted in time.
    async fn window_closed(turns: &EarlyTurns) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !turns.is_off() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the window never closed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_reservation_dropped_because_the_start_failed_leaves_nothing_behind() {
        let turns = EarlyTurns::default();
        drop(turns.reserve("run-1").expect("turns begin early"));
        assert!(turns.claim("run-1").is_none());
        // An activity that claimed the turn before the start failed learns it never began.
        let reserved = turns.reserve("run-2").expect("turns begin early");
        let claimed = turns.claim("run-2").expect("reserved");
        drop(reserved);
        assert!(claimed.turn.done.await.is_err(), "nothing ran");
    }

    /// A turn that runs until it is stopped, telling `stopped` when it is.
    fn endless(stopped: oneshot::Sender<()>) -> TurnRunner {
        Box::new(move |_beat| {
            Box::pin(async move {
                struct Tell(Option<oneshot::Sender<()>>);
                impl Drop for Tell {
                    fn drop(&mut self) {
                        if let Some(tx) = self.0.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                let _tell = Tell(Some(stopped));
                futures::future::pending::<TurnResult>().await
            })
        })
    }

    /// A turn that ends at once with `text` as its only input.
    fn ending_with(text: &str) -> TurnRunner {
        let text = text.to_string();
        Box::new(move |_beat| {
            Box::pin(async move {
                Ok(ModelTurnOutput {
                    inputs: vec![
                        pa_agent::Input::ModelFailed {
                            code: "test".into(),
                            message: text,
                        }
                        .into(),
                    ],
                    ..Default::default()
                })
            })
        })
    }

    #[tokio::test]
    async fn a_turn_begun_for_a_start_that_made_no_new_workflow_is_stopped_and_forgotten() {
        let turns = EarlyTurns::default();
        let (stopped_tx, stopped) = oneshot::channel();
        let begun = turns
            .reserve("run-1")
            .expect("turns begin early")
            .begin(endless(stopped_tx));
        // A second start of the same run begins no second turn beside it.
        assert!(turns.reserve("run-1").is_none(), "one turn per run");
        drop(begun);
        tokio::time::timeout(Duration::from_secs(30), stopped)
            .await
            .expect("the turn was stopped")
            .ok();
        assert!(turns.claim("run-1").is_none(), "forgotten");
        assert!(!turns.is_off(), "a stopped start is not a missed adoption");
        assert!(turns.reserve("run-1").is_some(), "the run id is free again");
    }

    /// A turn that tells `wrote` once it may write (as the model turn does before its first
    /// event), then runs until stopped.
    fn writing(wrote: oneshot::Sender<()>) -> TurnRunner {
        Box::new(move |beat| {
            Box::pin(async move {
                beat.recorded().await.map_err(|e| format!("{e:?}"))?;
                let _ = wrote.send(());
                futures::future::pending::<TurnResult>().await
            })
        })
    }

    #[tokio::test]
    async fn an_early_turn_writes_nothing_until_its_workflow_is_recorded() {
        let turns = EarlyTurns::default();
        let (wrote_tx, mut wrote) = oneshot::channel();
        let begun = turns
            .reserve("run-1")
            .expect("turns begin early")
            .begin(writing(wrote_tx));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(wrote.try_recv().is_err(), "wrote before the start returned");
        begun.recorded();
        tokio::time::timeout(Duration::from_secs(30), wrote)
            .await
            .expect("writes once recorded")
            .expect("the turn ran on");
        assert!(turns.claim("run-1").is_some(), "left for its activity");
    }

    #[tokio::test]
    async fn stopping_a_turn_its_activity_took_leaves_it_to_the_activity() {
        let turns = EarlyTurns::default();
        let begun = turns
            .reserve("run-1")
            .expect("turns begin early")
            .begin(ending_with("kept"));
        let claimed = turns.claim("run-1").expect("taken by its activity");
        drop(begun);
        let output = tokio::time::timeout(Duration::from_secs(30), claimed.turn.done)
            .await
            .expect("ended")
            .expect("not stopped")
            .expect("a turn output");
        assert!(output.early);
    }

    #[tokio::test]
    async fn a_running_turn_nobody_adopts_is_stopped_and_no_turns_begin_early_for_a_while() {
        let turns =
            EarlyTurns::with_windows(Duration::from_millis(100), Duration::from_millis(300));
        let reserved = turns.reserve("run-1").expect("turns begin early");
        let (stopped_tx, stopped) = oneshot::channel();
        reserved.begin(endless(stopped_tx)).recorded();
        // The signals, not a guess at how long the window takes under load.
        window_closed(&turns).await;
        tokio::time::timeout(Duration::from_secs(30), stopped)
            .await
            .expect("the turn was stopped")
            .ok();
        assert!(turns.claim("run-1").is_none(), "stopped and forgotten");
        assert!(
            turns.reserve("run-2").is_none(),
            "no turns begin early meanwhile"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while turns.is_off() {
            assert!(tokio::time::Instant::now() < deadline, "never back on");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(turns.reserve("run-3").is_some(), "back on after the pause");
    }

    #[tokio::test]
    async fn a_turn_that_ends_within_the_wait_is_taken_and_one_that_runs_on_is_left_for_its_activity()
     {
        let turns = EarlyTurns::default();
        let wait = Duration::from_millis(200);
        assert!(turns.ended_within("never-begun", wait).await.is_none());
        turns
            .reserve("quick")
            .expect("turns begin early")
            .begin(ending_with("at once"))
            .recorded();
        let taken = turns.ended_within("quick", Duration::from_secs(30)).await;
        assert!(
            matches!(taken, Some(Ok(ref output)) if output.early),
            "{taken:?}"
        );
        assert!(turns.claim("quick").is_none(), "taken from the registry");

        let (stopped_tx, _stopped) = oneshot::channel();
        turns
            .reserve("slow")
            .expect("turns begin early")
            .begin(endless(stopped_tx))
            .recorded();
        assert!(turns.ended_within("slow", wait).await.is_none());
        assert!(
            turns.claim("slow").is_some(),
            "left for its activity to adopt"
        );
    }

    #[tokio::test]
    async fn a_turn_that_ended_before_its_late_activity_came_is_what_the_activity_returns() {
        let turns = EarlyTurns::adopted_within(Duration::from_millis(100));
        let reserved = turns.reserve("run-1").expect("turns begin early");
        reserved
            .begin(ending_with("the text the client saw"))
            .recorded();
        window_closed(&turns).await;
        // The activity comes after the window: it gets the ended turn, not a second generation.
        let claimed = turns.claim("run-1").expect("kept for its activity");
        let output = claimed
            .turn
            .done
            .await
            .expect("ended")
            .expect("a turn output");
        assert!(output.early);
        assert!(
            matches!(&crate::payloads::inputs_of(output.inputs.clone()).unwrap()[..], [pa_agent::Input::ModelFailed { message, .. }] if message == "the text the client saw"),
            "{:?}",
            output.inputs
        );
    }

    #[tokio::test]
    async fn an_adopted_turn_stays_until_its_activity_takes_it() {
        let turns = EarlyTurns::adopted_within(Duration::from_millis(100));
        let reserved = turns.reserve("run-1").expect("turns begin early");
        let claimed = turns.claim("run-1").expect("reserved");
        reserved
            .begin(crate::activities::first_turn_runner(
                nowhere(turns.clone()),
                input("run-1"),
            ))
            .recorded();
        // A witness begun after it, with the same window, that nobody adopts: once it is
        // stopped, run-1's window has closed too.
        let witness = EarlyTurns::adopted_within(Duration::from_millis(100));
        let unadopted = witness.reserve("witness").expect("turns begin early");
        unadopted
            .begin(crate::activities::first_turn_runner(
                nowhere(witness.clone()),
                input("witness"),
            ))
            .recorded();
        window_closed(&witness).await;
        // Claimed before the window closed: not stopped (it ran to its end, here a failure to
        // reach the model), and not held against early turns.
        let ended = tokio::time::timeout(Duration::from_secs(60), claimed.turn.done).await;
        assert!(matches!(ended, Ok(Ok(Err(_)))), "{ended:?}");
        assert!(turns.reserve("run-2").is_some(), "still begins turns early");
    }
}
