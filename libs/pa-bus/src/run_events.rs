//! The per-run AG-UI event stream in Redis (`pa:run:{run_id}:events`). Both run drivers write
//! through [`EventSink`]; the gateway's SSE and RunService.StreamRunEvents read through
//! [`crate::event_hub::EventHub::follow`], so there is one writer and one reader
//! implementation.

use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands};
use pa_kit::redis::Pool;
use pa_proto::v1::AgUiEvent;

use crate::keys::Handover;

use pa_kit::PaError;
use pa_kit::redis::{CALL_TIMEOUT, Checkout, bounded};

/// Events of one run are kept this long after the last write.
const STREAM_TTL_SECS: i64 = 24 * 3600;
/// An approximate cap on one run's stream length.
const STREAM_MAX_LEN: usize = 50_000;
const FIELD: &str = "e";

pub fn stream_key(run_id: &str) -> String {
    crate::keys::run_events(run_id)
}

fn redis_error(err: impl std::fmt::Display) -> PaError {
    tracing::warn!(%err, "redis");
    PaError::unavailable("Redis (run event streams) is unavailable; retry shortly")
        .with_retry_after_ms(1000)
}

/// One XADD per event (ids chosen by Redis, the stream capped) onto `pipe`.
fn push_xadds(pipe: &mut redis::Pipeline, key: &str, events: &[AgUiEvent]) -> Result<(), PaError> {
    for event in events {
        let json = event.to_json().map_err(PaError::internal)?;
        pipe.cmd("XADD")
            .arg(key)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAX_LEN)
            .arg("*")
            .arg(FIELD)
            .arg(json);
    }
    Ok(())
}

/// Appends a run's events. Cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    pool: Pool,
}

impl EventSink {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// XADDs one event and refreshes the stream's expiry in the same round trip; returns its id.
    pub async fn emit(&self, run_id: &str, event: &AgUiEvent) -> Result<String, PaError> {
        let mut ids = self.emit_all(run_id, std::slice::from_ref(event)).await?;
        ids.pop()
            .ok_or_else(|| PaError::internal("XADD returned no id"))
    }

    /// XADDs events in order, in one round trip (a pipeline), and refreshes the expiry.
    pub async fn emit_all(
        &self,
        run_id: &str,
        events: &[AgUiEvent],
    ) -> Result<Vec<String>, PaError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let key = stream_key(run_id);
        let mut pipe = redis::pipe();
        push_xadds(&mut pipe, &key, events)?;
        pipe.cmd("EXPIRE").arg(&key).arg(STREAM_TTL_SECS).ignore();
        bounded(&self.pool, move |c| {
            Box::pin(async move { pipe.query_async::<Vec<String>>(c).await })
        })
        .await
        .map_err(redis_error)
    }
}

impl EventSink {
    /// XADDs events to several runs' streams in one round trip (a pipeline; not atomic), each
    /// run's in order. Used where one writer feeds many streams at once (the streams
    /// benchmark); a run driver writes its own run through [`EventSink::emit_all`].
    pub async fn emit_to_runs(&self, batches: &[(&str, Vec<AgUiEvent>)]) -> Result<(), PaError> {
        let mut pipe = redis::pipe();
        for (run_id, events) in batches {
            let key = stream_key(run_id);
            push_xadds(&mut pipe, &key, events)?;
            pipe.cmd("EXPIRE").arg(&key).arg(STREAM_TTL_SECS).ignore();
        }
        bounded(&self.pool, move |c| {
            Box::pin(async move { pipe.query_async::<()>(c).await })
        })
        .await
        .map_err(redis_error)
    }
}

/// A write that goes with a batch of events, in the same MULTI/EXEC (see
/// [`EventSink::emit_all_with`]).
#[derive(Clone, Copy, Debug)]
pub enum SideWrite<'a> {
    /// SET `key` `value`, kept as long as a run's events.
    Set { key: &'a str, value: &'a str },
    /// HSET `key` `field` `value` (no expiry: the reader removes the field).
    HSet {
        key: &'a str,
        field: &'a str,
        value: &'a str,
    },
}

impl EventSink {
    /// XADDs events in order and makes `side` in one transaction (MULTI/EXEC, one round trip):
    /// both happen or neither. svc-runs writes a run's progress with its events this way, and
    /// the outbox entry of a run whose end the database could not take with its terminal event.
    pub async fn emit_all_with(
        &self,
        run_id: &str,
        events: &[AgUiEvent],
        side: SideWrite<'_>,
    ) -> Result<Vec<String>, PaError> {
        let key = stream_key(run_id);
        let mut pipe = redis::pipe();
        pipe.atomic();
        push_xadds(&mut pipe, &key, events)?;
        if !events.is_empty() {
            pipe.cmd("EXPIRE").arg(&key).arg(STREAM_TTL_SECS).ignore();
        }
        match side {
            SideWrite::Set { key, value } => {
                pipe.cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("EX")
                    .arg(STREAM_TTL_SECS)
                    .ignore();
            }
            SideWrite::HSet { key, field, value } => {
                pipe.cmd("HSET").arg(key).arg(field).arg(value).ignore();
            }
        }
        bounded(&self.pool, move |c| {
            Box::pin(async move { pipe.query_async::<Vec<String>>(c).await })
        })
        .await
        .map_err(redis_error)
    }
}

/// Every event of a run's stream so far, oldest first (no blocking).
pub async fn read_all(pool: &Pool, run_id: &str) -> Result<Vec<StoredEvent>, PaError> {
    let mut all: Vec<StoredEvent> = Vec::new();
    loop {
        let after = all.last().map_or("0", |e| e.stream_id.as_str()).to_string();
        let batch = read_after(pool, run_id, &after, None).await?;
        if batch.is_empty() {
            return Ok(all);
        }
        all.extend(batch);
    }
}

/// XADDs each (id, event) unless the stream is already past that id, and refreshes the expiry —
/// atomically, in one round trip. Redis refuses an id at or below the stream's last one, which is
/// exactly "written before": a retried writer re-sends the same ids and adds only what is new.
const EMIT_AT_SCRIPT: &str = r"
local added = 0
for i = 3, #ARGV, 2 do
  local ok = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[i], ARGV[2], ARGV[i + 1])
  if type(ok) == 'table' and ok.err then
    if not string.find(ok.err, 'equal or smaller', 1, true) then
      return redis.error_reply(ok.err)
    end
  else
    added = added + 1
  end
end
redis.call('EXPIRE', KEYS[1], 86400) -- STREAM_TTL_SECS
return added
";

impl EventSink {
    /// Writes events under ids the caller chose (`<step>-<seq>`, increasing), idempotently: events
    /// already in the stream are skipped. Returns how many were added. The durable driver writes
    /// this way so that a retried activity neither repeats nor loses an event.
    pub async fn emit_at(
        &self,
        run_id: &str,
        events: &[(String, AgUiEvent)],
    ) -> Result<u64, PaError> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut args = Vec::with_capacity(events.len() * 2);
        for (id, event) in events {
            args.push(id.clone());
            args.push(event.to_json().map_err(PaError::internal)?);
        }
        let key = stream_key(run_id);
        bounded(&self.pool, move |c| {
            Box::pin(async move {
                let script = redis::Script::new(EMIT_AT_SCRIPT);
                let mut invocation = script.key(key);
                invocation.arg(STREAM_MAX_LEN).arg(FIELD).arg(args);
                invocation.invoke_async::<u64>(c).await
            })
        })
        .await
        .map_err(redis_error)
    }

    /// Removes runs' streams: a stale stream under a reused id, or a deleted chat's runs.
    pub async fn delete(&self, run_ids: &[String]) -> Result<(), PaError> {
        if run_ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = run_ids.iter().map(|id| stream_key(id)).collect();
        bounded(&self.pool, move |c| {
            Box::pin(async move { c.del::<_, i64>(keys).await })
        })
        .await
        .map_err(redis_error)?;
        Ok(())
    }
}

fn cancel_key(run_id: &str) -> String {
    crate::keys::run_cancel(run_id)
}

/// Raises a run's cancel flag: a driver streaming a model turn in another process (a durable
/// run's activity) sees it within [`CANCEL_POLL`] and stops at the next token.
pub async fn request_cancel(pool: &Pool, run_id: &str) -> Result<(), PaError> {
    let key = cancel_key(run_id);
    bounded(pool, move |c| {
        Box::pin(async move { c.set_ex::<_, _, ()>(key, 1, STREAM_TTL_SECS as u64).await })
    })
    .await
    .map_err(redis_error)
}

pub const CANCEL_POLL: Duration = Duration::from_millis(200);

/// Resolves once the run's cancel flag is raised (never, if it is not). Redis errors only delay
/// it: a flag that cannot be read is treated as not raised yet.
pub async fn cancel_requested(pool: &Pool, run_id: &str) {
    let key = cancel_key(run_id);
    loop {
        let key = key.clone();
        let raised = bounded(pool, move |c| {
            Box::pin(async move { c.exists::<_, bool>(key).await })
        })
        .await;
        if raised.unwrap_or(false) {
            return;
        }
        tokio::time::sleep(CANCEL_POLL).await;
    }
}

/// One stored event with its stream id.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub stream_id: String,
    pub event: AgUiEvent,
    /// The event's AG-UI JSON as stored (what `event.to_json()` gives), so an SSE relay sends it
    /// without serialising it again.
    pub json: std::sync::Arc<str>,
}

// A hand-over: what svc-runs gives a durable run's workflow that was not ready when it was
// started (the recall): one value, written once, read without being consumed, so a retried
// activity reads it again.

/// Writes the hand-over `what` of a run (kept as long as its events).
pub async fn hand_over(
    pool: &Pool,
    run_id: &str,
    what: Handover,
    value: &str,
) -> Result<(), PaError> {
    let key = crate::keys::run_handover(run_id, what);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .del(&key)
        .ignore()
        .rpush(&key, value)
        .ignore()
        .expire(&key, STREAM_TTL_SECS)
        .ignore();
    bounded(pool, move |c| {
        Box::pin(async move { pipe.query_async::<()>(c).await })
    })
    .await
    .map_err(redis_error)
}

/// The hand-over `what` of a run, waiting up to `wait` for it; `None` if it did not come.
pub async fn await_handover(
    pool: &Pool,
    run_id: &str,
    what: Handover,
    wait: Duration,
) -> Result<Option<String>, PaError> {
    let key = crate::keys::run_handover(run_id, what);
    // BLMOVE from the list to itself: blocks until the value is there and leaves it in place.
    let mut cmd = redis::cmd("BLMOVE");
    cmd.arg(&key)
        .arg(&key)
        .arg("LEFT")
        .arg("LEFT")
        .arg(wait.as_secs_f64().max(0.001));
    blocking_query(pool, cmd, wait).await
}

/// Runs a blocking command (waiting up to `wait` in Redis) on a checked-out connection, which
/// goes back to the pool only once the answer is in (see [`Checkout`]); the answer must come
/// within `wait` plus [`CALL_TIMEOUT`].
async fn blocking_query<T: redis::FromRedisValue + Send + 'static>(
    pool: &Pool,
    cmd: redis::Cmd,
    wait: Duration,
) -> Result<T, PaError> {
    let checkout = Checkout::get(pool).await.map_err(redis_error)?;
    pa_kit::redis::within(wait + CALL_TIMEOUT, checkout, move |c| {
        Box::pin(async move { cmd.query_async::<T>(c).await })
    })
    .await
    .map_err(redis_error)
}

pub(crate) type XReadReply = Option<Vec<(String, Vec<(String, Vec<(String, String)>)>)>>;

/// Reads the events after `after` ("" or "0" = from the start), blocking up to `block` for new
/// ones when there are none.
pub async fn read_after(
    pool: &Pool,
    run_id: &str,
    after: &str,
    block: Option<Duration>,
) -> Result<Vec<StoredEvent>, PaError> {
    let after = if after.is_empty() { "0" } else { after };
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT").arg(512);
    if let Some(block) = block {
        cmd.arg("BLOCK").arg(block.as_millis() as u64);
    }
    cmd.arg("STREAMS").arg(stream_key(run_id)).arg(after);
    let reply: XReadReply = blocking_query(pool, cmd, block.unwrap_or_default()).await?;
    Ok(reply
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(_key, entries)| parse_entries(entries))
        .collect())
}

/// The events of one stream's XREAD entries (an unreadable one is skipped, and logged).
pub(crate) fn parse_entries(entries: Vec<(String, Vec<(String, String)>)>) -> Vec<StoredEvent> {
    let mut events = Vec::with_capacity(entries.len());
    for (stream_id, fields) in entries {
        for (name, json) in fields {
            if name != FIELD {
                continue;
            }
            observe_lag(&stream_id);
            match AgUiEvent::from_json(&json) {
                Ok(event) => events.push(StoredEvent {
                    stream_id: stream_id.clone(),
                    event,
                    json: json.into(),
                }),
                Err(err) => tracing::warn!(%err, stream_id, "skipping unreadable event"),
            }
        }
    }
    events
}

/// Records how long an event sat in Redis before this read. Only ids Redis generated (`*`, the
/// inline driver) hold a time; the durable driver's `<step>-<seq>` ids do not and are skipped.
fn observe_lag(stream_id: &str) {
    let Some(ms) = stream_id
        .split_once('-')
        .and_then(|(ms, _)| ms.parse::<u64>().ok())
    else {
        return;
    };
    // Before 2001 = not a time.
    if ms < 1_000_000_000_000 {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(ms);
    pa_kit::metrics::RUN_EVENT_LAG_SECONDS
        .with_label_values(&["run_events"])
        .observe(now.saturating_sub(ms) as f64 / 1000.0);
}

/// The `trim_run_streams` maintenance task: gives every run stream without an expiry one, and
/// caps its length. Returns how many streams it changed. (The key pattern lives here, with the
/// streams, and nowhere else.)
pub async fn trim_streams(redis: &Pool) -> Result<u64, String> {
    let mut conn = redis.get().await.map_err(|e| e.to_string())?;
    let pattern = stream_key("*");
    let mut cursor: u64 = 0;
    let mut changed = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        for key in keys {
            let ttl: i64 = conn.ttl(&key).await.map_err(|e| e.to_string())?;
            let trimmed: u64 = redis::cmd("XTRIM")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_MAX_LEN)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if ttl == -1 {
                let _: bool = conn
                    .expire(&key, STREAM_TTL_SECS)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if ttl == -1 || trimmed > 0 {
                changed += 1;
            }
        }
        cursor = next;
        if cursor == 0 {
            return Ok(changed);
        }
    }
}

/// Whether a run's stream exists at all (it expires some time after the run ends).
pub async fn exists(pool: &Pool, run_id: &str) -> Result<bool, PaError> {
    let key = stream_key(run_id);
    bounded(pool, move |c| {
        Box::pin(async move { c.exists::<_, bool>(key).await })
    })
    .await
    .map_err(redis_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    use pa_kit::redis::real_redis;

    /// A blocking read abandoned midway must not make the next read on the pool wait out its
    /// BLOCK.
    #[tokio::test]
    async fn an_abandoned_blocking_read_does_not_stall_the_next_one() {
        let pool = real_redis(1);
        let run_id = format!("abandoned-read-{}", uuid::Uuid::now_v7());
        let blocked = tokio::spawn({
            let pool = pool.clone();
            let run_id = run_id.clone();
            async move { read_after(&pool, &run_id, "0", Some(Duration::from_secs(120))).await }
        });
        // Time for the BLOCK to reach Redis; if it has not under load, the test proves less but
        // cannot fail wrongly. A stalled next read waits 120 s, far past the deadline below.
        tokio::time::sleep(Duration::from_millis(200)).await;
        blocked.abort();
        let _ = blocked.await;
        let started = std::time::Instant::now();
        let events = tokio::time::timeout(
            Duration::from_secs(60),
            read_after(&pool, &run_id, "0", None),
        )
        .await;
        assert!(
            matches!(events, Ok(Ok(ref e)) if e.is_empty()),
            "the next read stalled or failed: {events:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    /// Against the real Redis: a reader waiting for a hand-over gets it when it is written, a
    /// retried reader gets the same value again, and a reader of one never written gets none
    /// once its wait is over.
    #[tokio::test]
    async fn a_hand_over_reaches_a_waiting_reader_and_stays_for_a_retried_one() {
        let pool = real_redis(4);
        let run_id = format!("hand-over-{}", uuid::Uuid::now_v7());
        let waiting = tokio::spawn({
            let pool = pool.clone();
            let run_id = run_id.clone();
            async move {
                await_handover(&pool, &run_id, Handover::Recall, Duration::from_secs(60)).await
            }
        });
        // Safe under load: the reader waits 60 s, and one that only starts after the hand-over
        // finds the value at once.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the reader did not wait");
        hand_over(&pool, &run_id, Handover::Recall, "{\"ids\":[\"m1\"]}")
            .await
            .expect("hand-over written");
        let got = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the waiting reader was woken")
            .expect("reader task")
            .expect("read");
        assert_eq!(got.as_deref(), Some("{\"ids\":[\"m1\"]}"));
        let again = await_handover(&pool, &run_id, Handover::Recall, Duration::from_millis(100))
            .await
            .expect("read");
        assert_eq!(again, got, "a second reader gets the same value");
        let mut conn = pool.get().await.expect("redis");
        let ttl: i64 = redis::cmd("TTL")
            .arg(crate::keys::run_handover(&run_id, Handover::Recall))
            .query_async(&mut conn)
            .await
            .expect("ttl");
        assert!(ttl > 0 && ttl <= STREAM_TTL_SECS, "ttl {ttl}");
        let started = std::time::Instant::now();
        let other_run = format!("{run_id}-other");
        let none = await_handover(
            &pool,
            &other_run,
            Handover::Recall,
            Duration::from_millis(300),
        )
        .await
        .expect("read");
        assert_eq!(none, None);
        assert!(started.elapsed() >= Duration::from_millis(250));
    }
}
