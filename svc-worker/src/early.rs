//! Early first turns: when svc-worker starts a durable run, its first model turn begins as soon
//! as Temporal has recorded the workflow, instead of after the workflow's first task has gone back
//! to Temporal and come back as an activity (a round trip through the server's persistence, on
//! the path to the run's first token).
//!
//! The turn is the one the workflow schedules (`chat::first_turn`, a pure function of the run's
//! input) and writes the same event ids. When the activity arrives at this worker (Temporal hands
//! it to the worker that completed the workflow task: eager activity execution), it adopts the
//! turn instead of running it: the turn's heartbeats go to the activity from then on and its
//! output is the activity's. A retried activity (this worker died) runs the turn itself, like any
//! retry: the event ids it writes are the ones already written.
//!
//! A turn whose activity went to another worker (the server does not dispatch activities eagerly)
//! would run twice; so one that is not adopted within [`ADOPT_WITHIN`] is stopped and this worker
//! stops beginning turns early, and says so in its log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use temporalio_sdk::activities::ActivityContext;
use tokio::sync::oneshot;

use crate::activities::{Beat, RunActivities};
use crate::chat::{ChatRunInput, ModelTurnOutput, first_turn};

/// How long a begun turn waits for its activity.
pub const ADOPT_WITHIN: Duration = Duration::from_secs(10);

type TurnResult = Result<ModelTurnOutput, String>;

/// The early first turns of this worker, by run id.
#[derive(Clone)]
pub struct EarlyTurns {
    turns: Arc<Mutex<HashMap<String, EarlyTurn>>>,
    /// Set once a turn was not adopted in time: activities go elsewhere.
    off: Arc<AtomicBool>,
    adopt_within: Duration,
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
}

/// A turn registered before its run's workflow is started (the activity can arrive with the
/// start call's reply, before the starter has seen it). Dropped without [`Reserved::begin`]
/// (the start failed, or found the workflow existing), the turn never begins; an activity that
/// claimed it meanwhile runs the turn itself.
pub struct Reserved {
    turns: EarlyTurns,
    run_id: String,
    begin: Option<oneshot::Sender<(Arc<RunActivities>, ChatRunInput)>>,
}

/// A turn claimed by its activity.
pub struct Claimed {
    turn: EarlyTurn,
}

impl EarlyTurns {
    /// Turns that stop unless adopted within `window` ([`ADOPT_WITHIN`] by default).
    pub fn adopted_within(window: Duration) -> Self {
        Self {
            turns: Arc::default(),
            off: Arc::default(),
            adopt_within: window,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, EarlyTurn>> {
        // A panic while holding the map cannot leave it inconsistent (single inserts/removes).
        self.turns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `run_id`'s first turn, to begin once the workflow is known to be new; None when
    /// this worker does not begin turns early.
    pub fn reserve(&self, run_id: &str) -> Option<Reserved> {
        if self.off.load(Ordering::Relaxed) {
            return None;
        }
        let (begin, started) = oneshot::channel::<(Arc<RunActivities>, ChatRunInput)>();
        let (finished, done) = oneshot::channel();
        let adopter = Arc::new(OnceLock::new());
        let beat = Beat::Early(adopter.clone());
        let task = tokio::spawn(async move {
            // Dropped unsent (the start failed or found the workflow existing): nothing runs.
            let Ok((activities, input)) = started.await else {
                return;
            };
            let output = activities
                .traced_model_turn(beat, first_turn(&input))
                .await
                .map(|output| ModelTurnOutput {
                    early: true,
                    ..output
                })
                .map_err(|e| format!("{e:?}"));
            let _ = finished.send(output);
        });
        self.lock().insert(
            run_id.to_string(),
            EarlyTurn {
                adopter,
                done,
                task: task.abort_handle(),
            },
        );
        Some(Reserved {
            turns: self.clone(),
            run_id: run_id.to_string(),
            begin: Some(begin),
        })
    }

    /// The activity's claim on its run's early turn, if there is one.
    pub fn claim(&self, run_id: &str) -> Option<Claimed> {
        self.lock().remove(run_id).map(|turn| Claimed { turn })
    }
}

impl Reserved {
    /// The workflow is new: the turn begins, and stops if no activity adopts it in time.
    pub fn begin(mut self, activities: Arc<RunActivities>, input: ChatRunInput) {
        if let Some(begin) = self.begin.take() {
            let _ = begin.send((activities, input));
        }
        let turns = self.turns.clone();
        let run_id = self.run_id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(turns.adopt_within).await;
            if let Some(Claimed { turn }) = turns.claim(&run_id) {
                turn.task.abort();
                turns.off.store(true, Ordering::Relaxed);
                tracing::warn!(
                    run_id = %run_id,
                    "a durable run's first turn, begun when its workflow started, was not taken \
                     by its activity within {:?}: Temporal dispatches activities to other workers \
                     (enable system.enableActivityEagerExecution); this worker no longer begins \
                     first turns early",
                    turns.adopt_within
                );
            }
        });
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
    use pa_proto::v1::RunSpec;

    fn input(run_id: &str) -> ChatRunInput {
        ChatRunInput {
            spec: RunSpec {
                run_id: run_id.into(),
                chat_id: "chat-1".into(),
                ..Default::default()
            },
            history: vec![pa_agent::TurnMessage::new("user", "hi")],
            tools: vec![],
            notices: vec![],
            high_privilege_tools: vec![],
            approval_always_tools: vec![],
            approval_timeout_ms: 0,
            recall_wait_ms: 0,
            tainted: false,
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
        while !turns.off.load(Ordering::Relaxed) {
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

    #[tokio::test]
    async fn a_turn_nobody_adopts_is_stopped_and_no_more_turns_begin_early() {
        let turns = EarlyTurns::adopted_within(Duration::from_millis(100));
        let reserved = turns.reserve("run-1").expect("turns begin early");
        reserved.begin(nowhere(turns.clone()), input("run-1"));
        // The signal, not a guess at how long the window takes under load.
        window_closed(&turns).await;
        assert!(turns.claim("run-1").is_none(), "stopped and forgotten");
        assert!(
            turns.reserve("run-2").is_none(),
            "no longer begins turns early"
        );
    }

    #[tokio::test]
    async fn an_adopted_turn_stays_until_its_activity_takes_it() {
        let turns = EarlyTurns::adopted_within(Duration::from_millis(100));
        let reserved = turns.reserve("run-1").expect("turns begin early");
        let claimed = turns.claim("run-1").expect("reserved");
        reserved.begin(nowhere(turns.clone()), input("run-1"));
        // A witness begun after it, with the same window, that nobody adopts: once it is
        // stopped, run-1's window has closed too.
        let witness = EarlyTurns::adopted_within(Duration::from_millis(100));
        let unadopted = witness.reserve("witness").expect("turns begin early");
        unadopted.begin(nowhere(witness.clone()), input("witness"));
        window_closed(&witness).await;
        // Claimed before the window closed: not stopped (it ran to its end, here a failure to
        // reach the model), and not held against early turns.
        let ended = tokio::time::timeout(Duration::from_secs(60), claimed.turn.done).await;
        assert!(matches!(ended, Ok(Ok(Err(_)))), "{ended:?}");
        assert!(turns.reserve("run-2").is_some(), "still begins turns early");
    }
}
