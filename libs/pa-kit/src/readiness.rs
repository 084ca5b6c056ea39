//! Readiness: whether the stores a service needs answer. A probe asks each of them every
//! [`PROBE_EVERY`] (Postgres: `SELECT 1` through the service's pool; Redis: a pooled PING) and
//! publishes what it found; [`crate::grpc::GrpcServer::readiness`] turns that into the
//! service's tonic-health status (SERVING / NOT_SERVING), which the gateway's `/readyz`
//! reads. See docs/src/adr/0170-2026-12-03-store-outages.md.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::shutdown::Shutdown;

/// How often the probe asks each store.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long one answer may take before the store counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the last probe found: `None` for a store the service does not use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreHealth {
    pub postgres: Option<bool>,
    pub redis: Option<bool>,
}

impl StoreHealth {
    /// Every store the service uses answers.
    pub fn ready(&self) -> bool {
        self.postgres != Some(false) && self.redis != Some(false)
    }

    /// `(store, "up" | "down")` for each store in use.
    pub fn detail(&self) -> Vec<(&'static str, &'static str)> {
        [("postgres", self.postgres), ("redis", self.redis)]
            .into_iter()
            .filter_map(|(name, up)| up.map(|up| (name, if up { "up" } else { "down" })))
            .collect()
    }
}

/// The live result of a service's store probe. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Readiness(watch::Receiver<StoreHealth>);

impl Readiness {
    /// Always ready (a service without stores; tests).
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(StoreHealth::default());
        // The receiver keeps the last value after the sender is gone.
        drop(tx);
        Readiness(rx)
    }

    pub fn current(&self) -> StoreHealth {
        *self.0.borrow()
    }

    /// Waits for the next change; `None` once the probe has stopped.
    pub async fn changed(&mut self) -> Option<StoreHealth> {
        self.0.changed().await.ok()?;
        Some(*self.0.borrow_and_update())
    }

    /// Probes `postgres` (each pool; their results are and-ed) and `redis` until `shutdown`.
    /// The stores count as up until the first probe says otherwise (the service has just
    /// connected to them).
    pub fn probe(
        postgres: Vec<PgPool>,
        redis: Option<crate::redis::Pool>,
        shutdown: Shutdown,
    ) -> Readiness {
        let initial = StoreHealth {
            postgres: (!postgres.is_empty()).then_some(true),
            redis: redis.as_ref().map(|_| true),
        };
        let (tx, rx) = watch::channel(initial);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Built outside a runtime (a test of a router alone): nothing to probe with.
            return Readiness(rx);
        };
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.triggered() => return,
                    _ = tick.tick() => {}
                }
                let pg = async {
                    if postgres.is_empty() {
                        return None;
                    }
                    let checks = futures::future::join_all(postgres.iter().map(postgres_up));
                    Some(checks.await.into_iter().all(|up| up))
                };
                let rd = async {
                    match &redis {
                        Some(pool) => Some(redis_up(pool).await),
                        None => None,
                    }
                };
                let (postgres, redis) = tokio::join!(pg, rd);
                let now = StoreHealth { postgres, redis };
                tx.send_if_modified(|last| {
                    if *last == now {
                        return false;
                    }
                    tracing::warn!(?now, was = ?*last, "store readiness changed");
                    *last = now;
                    true
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Readiness(rx)
    }
}

async fn postgres_up(pool: &PgPool) -> bool {
    let check = crate::db::retry_once(|| sqlx::query("SELECT 1").execute(pool));
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(_)) => true,
        Ok(Err(err)) => {
            if crate::db::is_connection_error(&err) {
                crate::db::note_connection_error();
            }
            tracing::debug!(%err, "Postgres probe failed");
            false
        }
        Err(_) => false,
    }
}

async fn redis_up(pool: &crate::redis::Pool) -> bool {
    let check = crate::redis::retry_idempotent(pool, |conn| {
        Box::pin(async move { redis::cmd("PING").query_async::<String>(conn).await })
    });
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(_)) => true,
        Ok(Err(err)) => {
            tracing::debug!(%err, "Redis probe failed");
            false
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::StoreHealth;

    #[test]
    fn ready_when_every_store_in_use_answers() {
        assert!(StoreHealth::default().ready());
        let up = StoreHealth {
            postgres: Some(true),
            redis: Some(true),
        };
        assert!(up.ready());
        assert_eq!(up.detail(), vec![("postgres", "up"), ("redis", "up")]);
        let pg_down = StoreHealth {
            postgres: Some(false),
            redis: None,
        };
        assert!(!pg_down.ready());
        assert_eq!(pg_down.detail(), vec![("postgres", "down")]);
    }
}
