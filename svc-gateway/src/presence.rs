//! Presence plumbing of one gateway replica: one Redis subscription to the channel presence
//! changes are published on, fanned out to every control socket of this replica
//! (`control_ws` has the protocol and the per-user sets).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{OnceCell, broadcast};

/// The one channel presence changes are published on; the payload is the user's key.
pub const CHANGED_CHANNEL: &str = pa_bus::keys::PRESENCE_CHANGED;
/// Per-replica plumbing: one Redis subscription shared by all sockets of this gateway.
pub struct PresenceHub {
    redis_url: String,
    pub(crate) changes: broadcast::Sender<String>,
    subscribed: OnceCell<()>,
}

impl PresenceHub {
    pub fn new(redis_url: &str) -> Arc<Self> {
        Arc::new(Self {
            redis_url: redis_url.to_string(),
            changes: broadcast::channel(1024).0,
            subscribed: OnceCell::new(),
        })
    }

    /// Starts the subscriber task once (at the first socket), resubscribing after Redis drops.
    pub(crate) async fn ensure_subscribed(self: &Arc<Self>, shutdown: pa_kit::Shutdown) {
        let hub = self.clone();
        self.subscribed
            .get_or_init(|| async move {
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                tokio::spawn(hub.subscribe_loop(shutdown, ready_tx));
                // Wait (briefly) for the first SUBSCRIBE, so this socket sees later changes.
                let _ = tokio::time::timeout(Duration::from_secs(5), ready_rx).await;
            })
            .await;
    }

    async fn subscribe_loop(
        self: Arc<Self>,
        shutdown: pa_kit::Shutdown,
        ready: tokio::sync::oneshot::Sender<()>,
    ) {
        let mut ready = Some(ready);
        loop {
            let result = async {
                let client = deadpool_redis::redis::Client::open(self.redis_url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(CHANGED_CHANNEL).await?;
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
                // A resubscribe may have missed changes: have every socket re-read.
                let _ = self.changes.send(String::new());
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    if let Ok(key) = msg.get_payload::<String>() {
                        let _ = self.changes.send(key);
                    }
                }
                Ok::<_, deadpool_redis::redis::RedisError>(())
            };
            tokio::select! {
                r = result => {
                    if let Err(err) = r {
                        tracing::warn!(%err, "presence subscription failed; retrying");
                    }
                }
                _ = shutdown.triggered() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.triggered() => return,
            }
        }
    }
}
