//! The activities this worker is running. Each holds one of the worker's activity slots until
//! its body returns (Temporal's cancellation is cooperative: an attempt the server timed out
//! keeps its slot while it runs on), and a worker whose slots are all taken neither polls its
//! task queue nor accepts activities eagerly. So the count is a metric
//! (`pa_worker_activities_running`), and an activity that runs far longer than expected is
//! named in the log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the watch looks, and from what age an activity is named in the log.
const WATCH_EVERY: Duration = Duration::from_secs(30);
const OVERDUE_AFTER: Duration = Duration::from_secs(120);

#[derive(Clone, Default)]
pub struct RunningActivities {
    running: Arc<Mutex<HashMap<u64, Running>>>,
    next: Arc<AtomicU64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Running {
    pub activity: &'static str,
    pub run_id: String,
    pub attempt: u32,
    pub since: Instant,
}

/// One running activity; dropping it (the body returned, or was dropped) ends it.
pub struct Entered {
    running: RunningActivities,
    id: u64,
    activity: &'static str,
}

impl RunningActivities {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        // Single inserts and removes: a panic elsewhere cannot leave the map inconsistent.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn enter(&self, activity: &'static str, run_id: &str, attempt: u32) -> Entered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Running {
                activity,
                run_id: run_id.to_string(),
                attempt,
                since: Instant::now(),
            },
        );
        pa_kit::metrics::WORKER_ACTIVITIES_RUNNING
            .with_label_values(&[activity])
            .inc();
        Entered {
            running: self.clone(),
            id,
            activity,
        }
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Activities running for longer than `age`, oldest first.
    pub fn older_than(&self, age: Duration) -> Vec<Running> {
        let mut old: Vec<Running> = self
            .lock()
            .values()
            .filter(|r| r.since.elapsed() > age)
            .cloned()
            .collect();
        old.sort_by_key(|r| r.since);
        old
    }

    /// Names overdue activities in the log every [`WATCH_EVERY`] until `shutdown`.
    pub fn watch(&self, shutdown: pa_kit::Shutdown) {
        let running = self.clone();
        let token = shutdown.token();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(WATCH_EVERY);
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let old = running.older_than(OVERDUE_AFTER);
                if let Some(oldest) = old.first() {
                    tracing::warn!(
                        running = running.count(),
                        overdue = old.len(),
                        oldest_activity = oldest.activity,
                        oldest_run_id = %oldest.run_id,
                        oldest_attempt = oldest.attempt,
                        oldest_secs = oldest.since.elapsed().as_secs(),
                        "activities have been running for over {OVERDUE_AFTER:?}; each holds an activity slot"
                    );
                }
            }
        });
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.running.lock().remove(&self.id);
        pa_kit::metrics::WORKER_ACTIVITIES_RUNNING
            .with_label_values(&[self.activity])
            .dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_activity_counts_while_it_runs_and_not_after() {
        let running = RunningActivities::default();
        let first = running.enter("model_turn", "run-1", 1);
        let second = running.enter("finish_run", "run-2", 3);
        assert_eq!(running.count(), 2);
        assert_eq!(
            running
                .older_than(Duration::ZERO)
                .iter()
                .map(|r| (r.activity, r.run_id.as_str(), r.attempt))
                .collect::<Vec<_>>(),
            vec![("model_turn", "run-1", 1), ("finish_run", "run-2", 3)]
        );
        assert!(running.older_than(Duration::from_secs(3600)).is_empty());
        drop(first);
        assert_eq!(running.count(), 1);
        drop(second);
        assert_eq!(running.count(), 0);
    }
}
