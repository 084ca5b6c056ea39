//! One Redis reader for every run stream a process follows (ADR 0213).
//!
//! A follower first reads what its run's stream already holds on a pooled connection, without
//! blocking; then it joins the hub. The hub keeps one connection in a single `XREAD BLOCK` over
//! the streams of all its followers, parses each event once, and hands every follower the
//! events after its own cursor. A follower that joins while the hub is blocked wakes it through
//! the hub's own wake stream (a plain XADD, so no extra Redis permission is needed).
//!
//! Nothing is lost on the way: a follower that falls behind (its queue is full), or that the
//! hub lets go when Redis fails, goes back to reading on its own from its cursor, then joins
//! again. So 2,000 open streams take one Redis connection and one XREAD per batch of events,
//! not 2,000 connections and one XREAD per event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_redis::redis;
use futures::Stream;
use pa_kit::PaError;
use pa_kit::redis::Pool;
use tokio::sync::mpsc;

use crate::run_events::{StoredEvent, XReadReply, parse_entries, read_after, stream_key};

/// How long the hub's XREAD blocks when nothing happens (a joining follower wakes it).
const HUB_BLOCK: Duration = Duration::from_secs(10);
/// How long a follower waits for its next events before asking whether the run is still live.
const IDLE_CHECK: Duration = Duration::from_secs(10);
/// Events queued for one follower before it is considered behind (and reads on its own).
const FOLLOWER_QUEUE: usize = 256;
/// How long a reader waits for an unreachable Redis before it gives the client an error.
const OUTAGE_PATIENCE: Duration = Duration::from_secs(120);

/// A stream id's two numbers, for ordering (`"0"` and `""` are the start).
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

struct Join {
    key: String,
    after: String,
    events: mpsc::Sender<Vec<StoredEvent>>,
}

struct Follower {
    key: String,
    after: (u64, u64),
    after_id: String,
    events: mpsc::Sender<Vec<StoredEvent>>,
}

/// The process's hub. Cheap to clone; its task starts with the first follower and ends when
/// the last clone is dropped.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    queue: usize,
    block: Duration,
    following: Arc<AtomicUsize>,
    joins: OnceLock<mpsc::UnboundedSender<Join>>,
}

impl EventHub {
    pub fn new(pool: Pool) -> Self {
        Self::with_settings(pool, FOLLOWER_QUEUE, HUB_BLOCK)
    }

    fn with_settings(pool: Pool, queue: usize, block: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                queue,
                block,
                following: Arc::new(AtomicUsize::new(0)),
                joins: OnceLock::new(),
            }),
        }
    }

    fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The hub task's inbox (the task is started on first use, on the caller's runtime).
    fn joins(&self) -> &mpsc::UnboundedSender<Join> {
        self.inner.joins.get_or_init(|| {
            let (joins, inbox) = mpsc::unbounded_channel();
            let wake_key = crate::keys::event_hub_wake(&uuid::Uuid::now_v7().to_string());
            tokio::spawn(run_hub(
                self.inner.pool.clone(),
                inbox,
                self.inner.following.clone(),
                wake_key,
                self.inner.block,
            ));
            joins
        })
    }

    /// How many followers the hub reads for now.
    pub fn following(&self) -> usize {
        self.inner.following.load(Ordering::Relaxed)
    }

    /// Follows a run's events after `after` ("" = from the start) until RUN_FINISHED/RUN_ERROR.
    /// `still_live` is asked whenever no event came for a while: when it says the run is over
    /// (so nothing more will be written), the stream ends instead of waiting forever.
    pub fn follow<F, Fut>(
        &self,
        run_id: String,
        after: String,
        still_live: F,
    ) -> impl Stream<Item = Result<StoredEvent, PaError>> + Send + 'static + use<F, Fut>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        enum Phase {
            /// Reading on its own (at the start, and after the hub let go).
            OnItsOwn,
            /// In the hub; its events come through here.
            Joined(mpsc::Receiver<Vec<StoredEvent>>),
        }
        struct State<F> {
            hub: EventHub,
            run_id: String,
            after: String,
            buffer: std::collections::VecDeque<StoredEvent>,
            done: bool,
            still_live: F,
            phase: Phase,
            /// Since when reads fail because Redis is unreachable.
            outage: Option<tokio::time::Instant>,
        }
        let state = State {
            hub: self.clone(),
            run_id,
            after,
            buffer: Default::default(),
            done: false,
            still_live,
            phase: Phase::OnItsOwn,
            outage: None,
        };
        futures::stream::unfold(state, |mut s| async move {
            loop {
                if let Some(stored) = s.buffer.pop_front() {
                    s.after = stored.stream_id.clone();
                    if stored.event.is_terminal() {
                        s.done = true;
                        s.buffer.clear();
                    }
                    return Some((Ok(stored), s));
                }
                if s.done {
                    return None;
                }
                match &mut s.phase {
                    Phase::OnItsOwn => {
                        match read_after(s.hub.pool(), &s.run_id, &s.after, None).await {
                            Ok(events) if !events.is_empty() => {
                                s.outage = None;
                                s.buffer.extend(events);
                            }
                            Ok(_) => {
                                s.outage = None;
                                // Caught up: the hub reads from here on.
                                let (events, inbox) = mpsc::channel(s.hub.inner.queue);
                                let join = Join {
                                    key: stream_key(&s.run_id),
                                    after: s.after.clone(),
                                    events,
                                };
                                if s.hub.joins().send(join).is_err() {
                                    s.done = true;
                                    return Some((
                                        Err(PaError::unavailable("the event hub has stopped")),
                                        s,
                                    ));
                                }
                                s.phase = Phase::Joined(inbox);
                            }
                            // Redis is down or restarting: the run goes on (its driver retries its
                            // writes), so the reader waits for Redis rather than ending the
                            // client's stream with an error it would have to resume from anyway.
                            // The SSE keep-alives continue.
                            Err(err)
                                if err.code == pa_kit::ErrorCode::Unavailable
                                    && s.outage
                                        .is_none_or(|since| since.elapsed() < OUTAGE_PATIENCE) =>
                            {
                                let since = *s.outage.get_or_insert_with(tokio::time::Instant::now);
                                let backoff = (since.elapsed() / 4)
                                    .clamp(Duration::from_millis(100), Duration::from_secs(2));
                                tracing::debug!(run_id = %s.run_id, %err, "event stream store unavailable; waiting");
                                tokio::time::sleep(backoff).await;
                            }
                            Err(err) => {
                                s.done = true;
                                return Some((Err(err), s));
                            }
                        }
                    }
                    Phase::Joined(inbox) => {
                        match tokio::time::timeout(IDLE_CHECK, inbox.recv()).await {
                            Ok(Some(events)) => {
                                let after = id_key(&s.after);
                                s.buffer.extend(
                                    events.into_iter().filter(|e| id_key(&e.stream_id) > after),
                                );
                            }
                            // Let go by the hub (behind, or Redis failed): read on its own.
                            Ok(None) => s.phase = Phase::OnItsOwn,
                            Err(_) => {
                                if !(s.still_live)().await {
                                    // One last read closes the race with a final write.
                                    match read_after(s.hub.pool(), &s.run_id, &s.after, None).await
                                    {
                                        Ok(events) if !events.is_empty() => s.buffer.extend(events),
                                        _ => return None,
                                    }
                                }
                            }
                        }
                    }
                }
            }
        })
    }
}

/// The hub's task: one XREAD over every follower's stream, events handed out after each
/// follower's cursor.
async fn run_hub(
    pool: Pool,
    mut inbox: mpsc::UnboundedReceiver<Join>,
    following: Arc<AtomicUsize>,
    wake_key: String,
    block: Duration,
) {
    let mut followers: Vec<Follower> = Vec::new();
    let mut conn: Option<pa_kit::redis::Connection> = None;
    let mut failures = 0u32;
    // The wake stream is this hub's own (a fresh key): everything in it is news.
    let mut woken_at = String::from("0");
    loop {
        // Joins that came in meanwhile; followers whose reader went away leave.
        while let Ok(join) = inbox.try_recv() {
            followers.push(follower(join));
        }
        followers.retain(|f| !f.events.is_closed());
        following.store(followers.len(), Ordering::Relaxed);
        if followers.is_empty() {
            match inbox.recv().await {
                Some(join) => {
                    followers.push(follower(join));
                    continue;
                }
                None => return,
            }
        }
        let mut connection = match conn.take() {
            Some(c) => c,
            None => match tokio::time::timeout(pa_kit::redis::CALL_TIMEOUT, pool.get()).await {
                Ok(Ok(c)) => c,
                failed => {
                    let err = failed.map_or_else(
                        |_| "timed out".to_string(),
                        |r| r.err().map(|e| e.to_string()).unwrap_or_default(),
                    );
                    tracing::debug!(%err, "event hub: no Redis connection");
                    let_go(&mut followers);
                    failures += 1;
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            },
        };
        let cmd = hub_read(&followers, &wake_key, &woken_at, block);
        let reply = {
            let read = tokio::time::timeout(
                block + pa_kit::redis::CALL_TIMEOUT,
                cmd.query_async::<XReadReply>(&mut connection),
            );
            tokio::pin!(read);
            let mut woken = false;
            loop {
                tokio::select! {
                    reply = &mut read => break reply,
                    join = inbox.recv(), if !woken => match join {
                        // Read from the next XREAD on.
                        Some(join) => {
                            followers.push(follower(join));
                            woken = true;
                            tokio::spawn(wake(pool.clone(), wake_key.clone()));
                        }
                        None => return,
                    },
                }
            }
        };
        match reply {
            Ok(Ok(reply)) => {
                failures = 0;
                conn = Some(connection);
                // Read again at once: events that arrive while one batch is handed out wait
                // for the next XREAD anyway, so the hub batches by itself under load (ADR 0234).
                hand_out(&mut followers, &wake_key, &mut woken_at, reply);
            }
            Ok(Err(err)) => {
                tracing::debug!(%err, "event hub: XREAD failed");
                drop(pa_kit::redis::Connection::take(connection));
                let_go(&mut followers);
                failures += 1;
                tokio::time::sleep(backoff(failures)).await;
            }
            Err(_) => {
                tracing::debug!("event hub: XREAD did not answer in time");
                drop(pa_kit::redis::Connection::take(connection));
                let_go(&mut followers);
            }
        }
    }
}

/// The hub's XREAD: its wake stream, then every followed stream from the earliest cursor of its
/// followers.
fn hub_read(followers: &[Follower], wake_key: &str, woken_at: &str, block: Duration) -> redis::Cmd {
    let mut cursors: HashMap<&str, (&str, (u64, u64))> = HashMap::new();
    for f in followers {
        let entry = cursors
            .entry(f.key.as_str())
            .or_insert((f.after_id.as_str(), f.after));
        if f.after < entry.1 {
            *entry = (f.after_id.as_str(), f.after);
        }
    }
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(512)
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS")
        .arg(wake_key);
    let keys: Vec<&str> = cursors.keys().copied().collect();
    for key in &keys {
        cmd.arg(*key);
    }
    cmd.arg(woken_at);
    for key in &keys {
        cmd.arg(cursors[key].0);
    }
    cmd
}

fn follower(join: Join) -> Follower {
    Follower {
        after: id_key(&join.after),
        after_id: if join.after.is_empty() {
            "0".into()
        } else {
            join.after
        },
        key: join.key,
        events: join.events,
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100 * u64::from(failures.min(20))).min(Duration::from_secs(2))
}

/// Lets every follower go: each reads on its own again (and meets Redis's state itself).
fn let_go(followers: &mut Vec<Follower>) {
    followers.clear();
}

/// Appends to the hub's wake stream, so its blocked XREAD returns and takes a new follower in.
async fn wake(pool: Pool, wake_key: String) {
    let mut pipe = redis::pipe();
    pipe.cmd("XADD")
        .arg(&wake_key)
        .arg("MAXLEN")
        .arg(16)
        .arg("*")
        .arg("w")
        .arg(1)
        .ignore()
        .cmd("EXPIRE")
        .arg(&wake_key)
        .arg(300)
        .ignore();
    let _ = pa_kit::redis::bounded(&pool, move |c| {
        Box::pin(async move { pipe.query_async::<()>(c).await })
    })
    .await;
}

/// Gives each follower the events of its stream after its cursor. A follower whose queue is
/// full is let go (it catches up on its own, from its cursor); one that got its run's end
/// leaves.
fn hand_out(
    followers: &mut Vec<Follower>,
    wake_key: &str,
    woken_at: &mut String,
    reply: XReadReply,
) {
    let mut by_key: HashMap<String, Vec<StoredEvent>> = HashMap::new();
    for (key, entries) in reply.unwrap_or_default() {
        if key == wake_key {
            if let Some((id, _)) = entries.last() {
                *woken_at = id.clone();
            }
            continue;
        }
        by_key.insert(key, parse_entries(entries));
    }
    if by_key.is_empty() {
        return;
    }
    // A stream's last follower takes its events rather than a copy (most streams have one).
    let mut followers_left: HashMap<String, usize> = HashMap::new();
    for f in followers.iter().filter(|f| by_key.contains_key(&f.key)) {
        *followers_left.entry(f.key.clone()).or_default() += 1;
    }
    followers.retain_mut(|f| {
        let Some(left) = followers_left.get_mut(&f.key) else {
            return true;
        };
        *left -= 1;
        let fresh: Vec<StoredEvent> = if *left == 0 {
            let mut events = by_key.remove(&f.key).unwrap_or_default();
            events.retain(|e| id_key(&e.stream_id) > f.after);
            events
        } else {
            by_key
                .get(&f.key)
                .map(|events| {
                    events
                        .iter()
                        .filter(|e| id_key(&e.stream_id) > f.after)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        };
        let Some(last) = fresh.last() else {
            return true;
        };
        let ended = fresh.iter().any(|e| e.event.is_terminal());
        f.after = id_key(&last.stream_id);
        f.after_id = last.stream_id.clone();
        f.events.try_send(fresh).is_ok() && !ended
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use pa_kit::redis::real_redis;
    use pa_proto::v1::{AgUiEvent, RunFinished, TextMessageContent, ag_ui_event::Event};

    use crate::run_events::EventSink;

    fn token(i: usize) -> AgUiEvent {
        AgUiEvent::new(Event::TextMessageContent(TextMessageContent {
            message_id: "m".into(),
            delta: format!("{i}"),
            timestamp: None,
        }))
    }

    fn end() -> AgUiEvent {
        AgUiEvent::new(Event::RunFinished(RunFinished {
            thread_id: "t".into(),
            run_id: "r".into(),
            result_json: None,
            timestamp: None,
        }))
    }

    fn deltas(events: &[StoredEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match &e.event.event {
                Some(Event::TextMessageContent(c)) => Some(c.delta.clone()),
                _ => None,
            })
            .collect()
    }

    fn run_id(name: &str) -> String {
        format!("hub-{name}-{}", uuid::Uuid::now_v7())
    }

    async fn collect(hub: &EventHub, run: &str, after: &str) -> Result<Vec<StoredEvent>, PaError> {
        hub.follow(run.to_string(), after.to_string(), || async { true })
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// Many followers of many runs, written while they follow: each gets its own run's events,
    /// all of them, in order, and ends at its run's end; the hub then follows nobody.
    #[tokio::test]
    async fn every_follower_gets_its_runs_events_in_order_and_nothing_else() {
        let pool = real_redis(8);
        let hub = EventHub::new(pool.clone());
        let sink = EventSink::new(pool.clone());
        let runs: Vec<String> = (0..20).map(|i| run_id(&format!("many{i}"))).collect();
        for run in &runs {
            sink.emit_all(run, &[token(0)]).await.unwrap();
        }
        let followers: Vec<_> = runs
            .iter()
            .map(|run| {
                let hub = hub.clone();
                let run = run.clone();
                tokio::spawn(async move { collect(&hub, &run, "").await })
            })
            .collect();
        for i in 1..50 {
            let batches: Vec<(&str, Vec<AgUiEvent>)> = runs
                .iter()
                .enumerate()
                .map(|(n, run)| (run.as_str(), vec![token(i * 100 + n)]))
                .collect();
            sink.emit_to_runs(&batches).await.unwrap();
        }
        let ends: Vec<(&str, Vec<AgUiEvent>)> =
            runs.iter().map(|run| (run.as_str(), vec![end()])).collect();
        sink.emit_to_runs(&ends).await.unwrap();
        for (n, follower) in followers.into_iter().enumerate() {
            let events = follower.await.unwrap().unwrap();
            let mut expected = vec!["0".to_string()];
            expected.extend((1..50).map(|i| format!("{}", i * 100 + n)));
            assert_eq!(deltas(&events), expected, "run {n}");
            assert!(events.last().unwrap().event.is_terminal());
        }
        // Followers leave the hub once their run ended.
        wait_until(&hub, |n| n == 0).await;
    }

    /// Two followers of one run from different points each get exactly what follows their
    /// own cursor.
    #[tokio::test]
    async fn followers_of_one_run_each_start_from_their_own_cursor() {
        let pool = real_redis(4);
        let hub = EventHub::new(pool.clone());
        let sink = EventSink::new(pool.clone());
        let run = run_id("cursors");
        let ids = sink
            .emit_all(&run, &[token(1), token(2), token(3)])
            .await
            .unwrap();
        let from_start = tokio::spawn({
            let (hub, run) = (hub.clone(), run.clone());
            async move { collect(&hub, &run, "").await }
        });
        let from_second = tokio::spawn({
            let (hub, run, after) = (hub.clone(), run.clone(), ids[1].clone());
            async move { collect(&hub, &run, &after).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        sink.emit_all(&run, &[token(4), end()]).await.unwrap();
        let all = from_start.await.unwrap().unwrap();
        let later = from_second.await.unwrap().unwrap();
        assert_eq!(deltas(&all), ["1", "2", "3", "4"]);
        assert_eq!(deltas(&later), ["3", "4"]);
    }

    /// A follower that does not keep up (its queue holds one batch) loses nothing: the hub lets
    /// it go and it reads the rest on its own.
    #[tokio::test]
    async fn a_follower_that_falls_behind_loses_nothing() {
        let pool = real_redis(4);
        let hub = EventHub::with_settings(pool.clone(), 1, HUB_BLOCK);
        let sink = EventSink::new(pool.clone());
        let run = run_id("behind");
        let follower = tokio::spawn({
            let (hub, run) = (hub.clone(), run.clone());
            async move {
                let mut stream = hub.follow(run, String::new(), || async { true }).boxed();
                let first = stream.next().await.unwrap().unwrap();
                // Not reading while the rest is written.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let mut all = vec![first];
                while let Some(event) = stream.next().await {
                    all.push(event.unwrap());
                }
                all
            }
        });
        wait_until(&hub, |n| n == 1).await;
        sink.emit(&run, &token(0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 1..=200 {
            sink.emit(&run, &token(i)).await.unwrap();
        }
        sink.emit(&run, &end()).await.unwrap();
        // Its queue overflowed: the hub let it go.
        wait_until(&hub, |n| n == 0).await;
        let all = follower.await.unwrap();
        let expected: Vec<String> = (0..=200).map(|i| i.to_string()).collect();
        assert_eq!(deltas(&all), expected);
        assert!(all.last().unwrap().event.is_terminal());
    }

    async fn wait_until(hub: &EventHub, wanted: impl Fn(usize) -> bool) {
        tokio::time::timeout(Duration::from_secs(15), async {
            while !wanted(hub.following()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the hub's followers did not change as expected");
    }

    /// A follower joining while the hub is blocked on other streams is taken in at once (the
    /// wake stream), not when the hub's block runs out.
    #[tokio::test]
    async fn a_new_follower_wakes_a_blocked_hub() {
        let pool = real_redis(4);
        let hub = EventHub::with_settings(pool.clone(), FOLLOWER_QUEUE, Duration::from_secs(300));
        let sink = EventSink::new(pool.clone());
        // The hub blocks on an idle run.
        let idle = run_id("idle");
        let mut idle = hub.follow(idle, String::new(), || async { true }).boxed();
        let waiting = tokio::spawn(async move { idle.next().await.is_some() });
        wait_until(&hub, |n| n == 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let run = run_id("late");
        let follower = tokio::spawn({
            let (hub, run) = (hub.clone(), run.clone());
            async move { collect(&hub, &run, "").await }
        });
        wait_until(&hub, |n| n == 2).await;
        sink.emit_all(&run, &[token(7), end()]).await.unwrap();
        let events = tokio::time::timeout(Duration::from_secs(20), follower)
            .await
            .expect("a blocked hub took the new follower in")
            .unwrap()
            .unwrap();
        assert_eq!(deltas(&events), ["7"]);
        waiting.abort();
    }

    /// A follower whose reader went away leaves the hub.
    #[tokio::test]
    async fn a_dropped_follower_leaves_the_hub() {
        let pool = real_redis(4);
        let hub = EventHub::new(pool.clone());
        let sink = EventSink::new(pool.clone());
        let run = run_id("dropped");
        let mut stream = hub
            .follow(run.clone(), String::new(), || async { true })
            .boxed();
        sink.emit(&run, &token(1)).await.unwrap();
        assert!(stream.next().await.is_some());
        // Asked for more, it joins the hub.
        let next = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
        assert!(next.is_err(), "nothing more was written");
        wait_until(&hub, |n| n == 1).await;
        drop(stream);
        // The next write wakes the hub, which sees the reader gone.
        sink.emit(&run, &token(2)).await.unwrap();
        wait_until(&hub, |n| n == 0).await;
    }
}
