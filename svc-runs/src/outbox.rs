//! The run-end outbox (docs/src/adr/0151-2026-12-03-run-end-outbox.md). An inline run's end is recorded in
//! Postgres (row, reply, usage, attempts) before its terminal event is published. When Postgres
//! cannot take it, the record goes to the Redis hash `pa:runs:outbox` in the same MULTI/EXEC as
//! the terminal event, so the client sees the end at once and the record is never lost with this
//! process: every replica drains the hash (with backoff per entry) until the row lands. Landing is
//! idempotent (`finish_run` only ends an unfinished run), and only the landing that ends the row
//! settles the run's share of the daily budget.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use deadpool_redis::redis::AsyncCommands;
use pa_bus::run_events::SideWrite;
use pa_kit::PaError;
use pa_proto::v1::{AgUiEvent, ModelAttempt, RunSpec};
use pa_turn_io::RunEnding;
use prost::Message;
use tokio::time::Instant;

use crate::error::RunsError;
use crate::inline::InlineDriver;

/// How long one attempt to record a run's end may take before the outbox takes it.
const STORE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Entry {
    /// The run's spec, protobuf in base64.
    spec: String,
    ending: RunEnding,
    #[serde(default)]
    attempts: Vec<ModelAttempt>,
}

fn encode(
    spec: &RunSpec,
    ending: &RunEnding,
    attempts: &[ModelAttempt],
) -> Result<String, PaError> {
    serde_json::to_string(&Entry {
        spec: STANDARD.encode(spec.encode_to_vec()),
        ending: ending.clone(),
        attempts: attempts.to_vec(),
    })
    .map_err(PaError::internal)
}

fn decode(json: &str) -> Result<(RunSpec, RunEnding, Vec<ModelAttempt>), RunsError> {
    let entry: Entry = serde_json::from_str(json).map_err(|e| RunsError::Corrupt(e.to_string()))?;
    let bytes = STANDARD
        .decode(entry.spec)
        .map_err(|e| RunsError::Corrupt(e.to_string()))?;
    let spec = RunSpec::decode(bytes.as_slice()).map_err(|e| RunsError::Corrupt(e.to_string()))?;
    Ok((spec, entry.ending, entry.attempts))
}

/// When each entry may be tried again (per replica).
#[derive(Debug, Default)]
pub struct Backoff {
    failed: HashMap<String, (u32, Instant)>,
}

impl Backoff {
    pub fn due(&self, run_id: &str, now: Instant) -> bool {
        self.failed.get(run_id).is_none_or(|(_, next)| now >= *next)
    }

    /// 0.5 s, 1 s, 2 s, … up to 30 s between tries.
    pub fn failed(&mut self, run_id: &str, now: Instant) -> Duration {
        let failures = self.failed.get(run_id).map_or(0, |(n, _)| *n) + 1;
        let delay = Duration::from_millis(500)
            .saturating_mul(1 << failures.min(7).saturating_sub(1))
            .min(Duration::from_secs(30));
        self.failed
            .insert(run_id.to_string(), (failures, now + delay));
        delay
    }

    pub fn forget(&mut self, run_id: &str) {
        self.failed.remove(run_id);
    }
}

impl InlineDriver {
    /// Records how a run ended and then publishes `events` (its terminal event last). When
    /// Postgres cannot take the record, the record goes to the outbox together with the events;
    /// when neither store takes anything, this retries with backoff (the run stays this
    /// instance's, so its lease holds meanwhile).
    pub(crate) async fn end_run(
        &self,
        spec: &RunSpec,
        ending: RunEnding,
        attempts: Vec<ModelAttempt>,
        events: Vec<AgUiEvent>,
    ) {
        let run_id = &spec.run_id;
        let mut wait = Duration::from_millis(200);
        loop {
            match tokio::time::timeout(STORE_WAIT, self.store.finish_run(spec, &ending, &attempts))
                .await
            {
                Ok(Ok(recorded)) => {
                    if recorded {
                        self.settle(spec, &ending).await;
                        self.publish(run_id, &events).await;
                    }
                    return;
                }
                Ok(Err(err)) => tracing::warn!(run_id, %err, "cannot record a run's end now"),
                Err(_) => tracing::warn!(run_id, "recording a run's end timed out"),
            }
            match self.to_outbox(spec, &ending, &attempts, &events).await {
                Ok(()) => {
                    tracing::warn!(run_id, "the run's end waits in the outbox");
                    return;
                }
                Err(err) => tracing::error!(
                    run_id, %err, "neither Postgres nor Redis takes the run's end; retrying"
                ),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }

    async fn to_outbox(
        &self,
        spec: &RunSpec,
        ending: &RunEnding,
        attempts: &[ModelAttempt],
        events: &[AgUiEvent],
    ) -> Result<(), PaError> {
        let entry = encode(spec, ending, attempts)?;
        self.sink
            .emit_all_with(
                &spec.run_id,
                events,
                SideWrite::HSet {
                    key: &self.leases.outbox_key,
                    field: &spec.run_id,
                    value: &entry,
                },
            )
            .await
            .map(|_| ())
    }

    /// What whoever recorded a run's end does once: settles its share of the daily budget (the
    /// Curator's turn was queued with the end itself, ADR 0242).
    async fn settle(&self, spec: &RunSpec, ending: &RunEnding) {
        crate::ledger::count_tokens(&self.redis, spec, ending.usage.total_tokens).await;
    }

    /// Publishes a recorded run's last events (a Redis hiccup is retried a few times).
    async fn publish(&self, run_id: &str, events: &[AgUiEvent]) {
        let mut wait = Duration::from_millis(100);
        for _ in 0..8 {
            match self.sink.emit_all(run_id, events).await {
                Ok(_) => return,
                Err(err) => tracing::warn!(run_id, %err, "cannot publish a run's end; retrying"),
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        tracing::error!(
            run_id,
            "a recorded run's last events could not be published"
        );
    }

    /// Lands one outbox entry; true when it is done with (landed, or already ended).
    async fn land(&self, run_id: &str, json: &str) -> Result<(), RunsError> {
        let (spec, ending, attempts) = match decode(json) {
            Ok(entry) => entry,
            Err(err) => {
                tracing::error!(run_id, %err, "dropping an unreadable outbox entry");
                self.remove(run_id).await?;
                return Ok(());
            }
        };
        let recorded =
            tokio::time::timeout(STORE_WAIT, self.store.finish_run(&spec, &ending, &attempts))
                .await
                .map_err(|_| PaError::unavailable("recording a run's end timed out"))??;
        if recorded {
            tracing::info!(run_id, "a run's end landed from the outbox");
            self.settle(&spec, &ending).await;
        }
        self.remove(run_id).await
    }

    async fn remove(&self, run_id: &str) -> Result<(), RunsError> {
        let (key, field) = (self.leases.outbox_key.clone(), run_id.to_string());
        let _: i64 = pa_kit::redis::bounded(&self.redis, move |c| {
            Box::pin(async move { c.hdel(key, field).await })
        })
        .await
        .map_err(redis_unavailable)?;
        Ok(())
    }
}

/// The outbox entry of `run_id`, landed when there is one: Ok(true) when the run had one (it is
/// landed now, or stays for the drain).
pub(crate) async fn take_one(driver: &InlineDriver, run_id: &str) -> Result<bool, PaError> {
    let (key, field) = (driver.leases.outbox_key.clone(), run_id.to_string());
    let json: Option<String> = pa_kit::redis::bounded(&driver.redis, move |c| {
        Box::pin(async move { c.hget(key, field).await })
    })
    .await
    .map_err(redis_unavailable)?;
    let Some(json) = json else {
        return Ok(false);
    };
    if let Err(err) = driver.land(run_id, &json).await {
        tracing::warn!(run_id, %err, "an outbox entry could not land yet");
    }
    Ok(true)
}

/// Tries every due entry of the outbox once.
pub(crate) async fn drain(driver: &InlineDriver, backoff: &mut Backoff) {
    let key = driver.leases.outbox_key.clone();
    let read = pa_kit::redis::bounded(&driver.redis, move |c| {
        Box::pin(async move { c.hgetall(key).await })
    })
    .await;
    let entries: Vec<(String, String)> = match read {
        Ok(entries) => entries,
        Err(err) => {
            tracing::warn!(%err, "cannot read the run-end outbox");
            return;
        }
    };
    let now = Instant::now();
    for (run_id, json) in entries {
        if !backoff.due(&run_id, now) {
            continue;
        }
        match driver.land(&run_id, &json).await {
            Ok(()) => backoff.forget(&run_id),
            Err(err) => {
                let delay = backoff.failed(&run_id, now);
                tracing::warn!(run_id, %err, ?delay, "an outbox entry could not land yet");
            }
        }
    }
}

fn redis_unavailable(err: impl std::fmt::Display) -> PaError {
    PaError::unavailable(format!("redis: {err}")).with_retry_after_ms(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pa_proto::v1::RunStatus;

    #[test]
    fn an_entry_survives_its_round_trip() {
        let spec = RunSpec {
            run_id: "r1".into(),
            chat_id: "c1".into(),
            ..Default::default()
        };
        let ending = RunEnding {
            status: RunStatus::Succeeded,
            usage: Default::default(),
            error_code: None,
            error_message: None,
            assistant_text: "hello".into(),
            tainted: true,
        };
        let json = encode(&spec, &ending, &[]).unwrap();
        let (spec2, ending2, attempts) = decode(&json).unwrap();
        assert_eq!(spec2, spec);
        assert_eq!(ending2, ending);
        assert!(attempts.is_empty());
        assert!(matches!(decode("{}"), Err(RunsError::Corrupt(_))));
    }

    #[test]
    fn retries_back_off_up_to_thirty_seconds_per_entry() {
        let mut backoff = Backoff::default();
        let t0 = Instant::now();
        assert!(backoff.due("a", t0));
        assert_eq!(backoff.failed("a", t0), Duration::from_millis(500));
        assert!(!backoff.due("a", t0));
        assert!(
            backoff.due("b", t0),
            "one entry's failures do not hold back another"
        );
        assert!(backoff.due("a", t0 + Duration::from_millis(500)));
        assert_eq!(backoff.failed("a", t0), Duration::from_secs(1));
        for _ in 0..10 {
            backoff.failed("a", t0);
        }
        assert_eq!(backoff.failed("a", t0), Duration::from_secs(30));
        backoff.forget("a");
        assert!(backoff.due("a", t0));
    }
}
