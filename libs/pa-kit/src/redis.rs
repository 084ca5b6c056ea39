//! The Redis pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid REDIS_URL: {0}")]
    Url(redis::RedisError),
    #[error("REDIS_URL: {0}")]
    Build(String),
    #[error(transparent)]
    TlsFile(#[from] crate::tls::PemFileError),
    #[error(
        "PA_REDIS_CA_FILE or PA_REDIS_CLIENT_CERT_FILE is set but REDIS_URL is not rediss://: \
         TLS settings for a plain connection would be ignored"
    )]
    TlsWithoutRediss,
}

/// Trust and identity for `rediss://` beyond the OS roots: `PA_REDIS_CA_FILE` (PEM of the CA
/// that signed the server's certificate; when set, only it is trusted) and
/// `PA_REDIS_CLIENT_CERT_FILE` + `PA_REDIS_CLIENT_KEY_FILE` (mutual TLS).
#[derive(Clone, Debug, Default)]
pub struct RedisTls {
    pub ca_pem: Option<Vec<u8>>,
    pub client: Option<crate::tls::ClientIdentity>,
}

impl RedisTls {
    pub fn from_env() -> Result<Self, crate::tls::PemFileError> {
        Ok(Self {
            ca_pem: crate::tls::pem_from_env("PA_REDIS_CA_FILE")?,
            client: crate::tls::identity_from_env(
                "PA_REDIS_CLIENT_CERT_FILE",
                "PA_REDIS_CLIENT_KEY_FILE",
            )?,
        })
    }

    fn is_set(&self) -> bool {
        self.ca_pem.is_some() || self.client.is_some()
    }
}

/// The pool of Redis connections every service uses: [`pool`] builds it.
pub type Pool = deadpool::managed::Pool<Manager, Connection>;

/// How long after its last checkout a pooled connection is handed out again without a PING.
pub const TRUSTED_FOR: Duration = Duration::from_secs(1);

/// Counts `err` among its pool's `failures` when the connection failed.
fn note_failure(failures: &AtomicU64, err: &redis::RedisError) {
    if is_connection_error(err) {
        failures.fetch_add(1, Ordering::AcqRel);
    }
}

/// Opens and recycles the pool's connections (ADR 0231). deadpool-redis PINGs every connection
/// before handing it out: a round trip on every checkout, about six per run. Here a connection
/// is handed out without one when it was checked out within the last [`TRUSTED_FOR`] and no
/// connection of its pool has failed since it was opened; otherwise it is PINGed (and replaced
/// when that fails) as before. A Redis restart breaks every connection at once, so the first
/// failure seen retires all the older ones of the pool; a connection idle for a second is
/// checked. Failures count per pool: another pool may talk to another Redis.
#[derive(Debug)]
pub struct Manager {
    client: redis::Client,
    /// Connection-class failures seen on this pool's connections.
    failures: Arc<AtomicU64>,
}

/// A pooled connection and its pool's failure count when it was opened.
pub struct PooledConnection {
    conn: MultiplexedConnection,
    failures_at_open: u64,
    failures: Arc<AtomicU64>,
}

impl deadpool::managed::Manager for Manager {
    type Type = PooledConnection;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<PooledConnection, redis::RedisError> {
        let failures_at_open = self.failures.load(Ordering::Acquire);
        let conn = self.client.get_multiplexed_async_connection().await?;
        Ok(PooledConnection {
            conn,
            failures_at_open,
            failures: self.failures.clone(),
        })
    }

    async fn recycle(
        &self,
        pooled: &mut PooledConnection,
        metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<redis::RedisError> {
        if pooled.failures_at_open != self.failures.load(Ordering::Acquire) {
            return Err(deadpool::managed::RecycleError::message(
                "opened before a Redis connection failed",
            ));
        }
        if metrics.last_used() < TRUSTED_FOR {
            return Ok(());
        }
        // As deadpool-redis does: UNWATCH in the same round trip, in case a WATCH was left.
        let (pong,) = redis::pipe()
            .cmd("UNWATCH")
            .ignore()
            .cmd("PING")
            .query_async::<(String,)>(&mut pooled.conn)
            .await
            .inspect_err(|e| note_failure(&self.failures, e))?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(deadpool::managed::RecycleError::message(
                "Redis answered a PING with something else",
            ))
        }
    }
}

/// A connection checked out of a [`Pool`]; a connection-class failure of a command sent
/// through it retires every connection opened before (see [`Manager`]). It deliberately does
/// not dereference to the multiplexed connection: a command sent past the wrapper would not
/// report its failure, and a broken connection could then be handed out again and again.
pub struct Connection {
    conn: deadpool::managed::Object<Manager>,
}

impl Connection {
    /// Takes the connection out of its pool for good (it is closed when dropped).
    #[must_use]
    pub fn take(this: Self) -> MultiplexedConnection {
        deadpool::managed::Object::take(this.conn).conn
    }
}

impl From<deadpool::managed::Object<Manager>> for Connection {
    fn from(conn: deadpool::managed::Object<Manager>) -> Self {
        Self { conn }
    }
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        let PooledConnection { conn, failures, .. } = &mut *self.conn;
        Box::pin(async move {
            conn.req_packed_command(cmd)
                .await
                .inspect_err(|e| note_failure(failures, e))
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        let PooledConnection { conn, failures, .. } = &mut *self.conn;
        Box::pin(async move {
            conn.req_packed_commands(cmd, offset, count)
                .await
                .inspect_err(|e| note_failure(failures, e))
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.conn.get_db()
    }
}

/// A pool sized for blocking readers: each following SSE stream holds one connection while it
/// waits in XREAD BLOCK. TLS as `REDIS_URL` (`rediss://user:password@host:port`) and
/// [`RedisTls::from_env`] say.
///
/// A connection broken by a Redis restart is replaced, not reused (see [`Manager`]). Opening
/// and recycling are bounded in time, so an unreachable Redis fails a request (`unavailable`)
/// instead of holding it; waiting for a free connection is not (a full pool of followers is not
/// an outage).
pub fn pool(url: &str, max_size: usize) -> Result<Pool, RedisError> {
    pool_with_tls(url, max_size, &RedisTls::from_env()?)
}

/// [`pool`] with the TLS settings given rather than read from the environment.
pub fn pool_with_tls(url: &str, max_size: usize, tls: &RedisTls) -> Result<Pool, RedisError> {
    let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(RedisError::Url)?;
    let info = match &info.addr {
        redis::ConnectionAddr::TcpTls { insecure, .. } => {
            if *insecure {
                tracing::warn!(
                    "REDIS_URL ends in #insecure: the Redis server's certificate is not checked"
                );
            }
            crate::tls::install_crypto_provider();
            if tls.is_set() {
                let certificates = redis::TlsCertificates {
                    client_tls: tls.client.as_ref().map(|id| redis::ClientTlsConfig {
                        client_cert: id.cert.clone(),
                        client_key: id.key.clone(),
                    }),
                    root_cert: tls.ca_pem.clone(),
                };
                redis::Client::build_with_tls(info, certificates)
                    .map_err(|e| RedisError::Build(e.to_string()))?
                    .get_connection_info()
                    .clone()
            } else {
                info
            }
        }
        _ if tls.is_set() => return Err(RedisError::TlsWithoutRediss),
        _ => info,
    };
    let client = redis::Client::open(info).map_err(|e| RedisError::Build(e.to_string()))?;
    let mut config = deadpool::managed::PoolConfig::new(max_size);
    config.timeouts.create = Some(Duration::from_secs(3));
    config.timeouts.recycle = Some(Duration::from_secs(2));
    Pool::builder(Manager {
        client,
        failures: Arc::default(),
    })
    .config(config)
    .runtime(deadpool::Runtime::Tokio1)
    .build()
    .map_err(|e| RedisError::Build(e.to_string()))
}

/// Whether `err` says the connection to Redis failed (refused, dropped, timed out, or Redis
/// still loading its data after a restart), rather than anything about the command.
pub fn is_connection_error(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.is_timeout()
        || err.is_unrecoverable_error()
        || matches!(
            err.kind(),
            redis::ErrorKind::BusyLoadingError | redis::ErrorKind::TryAgain
        )
}

/// A failure to get a pooled Redis connection or to run an idempotent command on it.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("Redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl From<CommandError> for crate::PaError {
    fn from(err: CommandError) -> Self {
        match err {
            CommandError::Pool(e) => e.into(),
            CommandError::Redis(e) => e.into(),
        }
    }
}

/// How long one Redis command (not a blocking read) may take, checking out its connection
/// included, before it fails as `unavailable`. Nothing waits on Redis forever: a command that
/// hangs (a connection cut without a reset, a pool whose connections are all stuck) fails its
/// caller, who retries (a durable activity is retried by Temporal, an inline run ends).
pub const CALL_TIMEOUT: Duration = Duration::from_millis(2500);

/// Why a connection could not be checked out.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("Redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("no Redis connection within {0:?}")]
    TimedOut(Duration),
}

/// A pooled connection checked out for a command. It goes back to the pool only through
/// [`Checkout::release`], once the answer is in; dropped before that (the command timed out,
/// or a reader went away mid-BLOCK), it is closed instead: a connection with a command still in
/// flight would make every command queued behind it on that multiplexed connection wait.
pub struct Checkout(Option<Connection>);

impl Checkout {
    /// A connection from `pool`, within [`CALL_TIMEOUT`].
    pub async fn get(pool: &Pool) -> Result<Checkout, CheckoutError> {
        match tokio::time::timeout(CALL_TIMEOUT, pool.get()).await {
            Ok(conn) => Ok(Checkout(Some(conn?))),
            Err(_) => Err(CheckoutError::TimedOut(CALL_TIMEOUT)),
        }
    }

    /// The connection (for one command).
    pub fn conn(&mut self) -> &mut Connection {
        self.0
            .as_mut()
            .expect("a checkout holds its connection until it is released or dropped")
    }

    /// The answer came back: the connection is free for the pool again.
    pub fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(Connection::take(conn));
        }
    }
}

/// Runs one command future on a checked-out connection within `limit`; the connection goes back
/// to the pool only when the answer came in time.
pub async fn within<T>(
    limit: Duration,
    mut checkout: Checkout,
    call: impl for<'c> FnOnce(
        &'c mut Connection,
    ) -> futures::future::BoxFuture<'c, redis::RedisResult<T>>,
) -> Result<T, CallError> {
    let answer = tokio::time::timeout(limit, call(checkout.conn())).await;
    match answer {
        Ok(Ok(value)) => {
            checkout.release();
            Ok(value)
        }
        Ok(Err(err)) => {
            if !is_connection_error(&err) {
                checkout.release();
            }
            Err(CallError::Redis(err))
        }
        Err(_) => Err(CallError::TimedOut(limit)),
    }
}

/// Why a bounded command failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    #[error("Redis: {0}")]
    Redis(redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    TimedOut(Duration),
}

/// Checks out a connection from `pool` and runs `call` on it, all within [`CALL_TIMEOUT`] each.
pub async fn bounded<T>(
    pool: &Pool,
    call: impl for<'c> FnOnce(
        &'c mut Connection,
    ) -> futures::future::BoxFuture<'c, redis::RedisResult<T>>,
) -> Result<T, CallError> {
    let checkout = Checkout::get(pool).await?;
    within(CALL_TIMEOUT, checkout, call).await
}

/// Runs an idempotent command (a read, or a write whose repetition changes nothing) on a pooled
/// connection and, when the connection fails under it, once more on another one.
pub async fn retry_idempotent<T, F>(pool: &Pool, mut command: F) -> Result<T, CommandError>
where
    F: for<'c> FnMut(&'c mut Connection) -> futures::future::BoxFuture<'c, redis::RedisResult<T>>,
{
    let mut conn = pool.get().await?;
    match command(&mut conn).await {
        Err(err) if is_connection_error(&err) => {
            tracing::info!(%err, "Redis connection failed; retrying once on another one");
            // The broken connection must not go back to the pool.
            drop(Connection::take(conn));
            let mut conn = pool.get().await?;
            Ok(command(&mut conn).await?)
        }
        other => Ok(other?),
    }
}

/// A pool of `size` on the real Redis (REDIS_URL, default 127.0.0.1:6379), for tests of code
/// that talks to Redis (here and in pa-bus); it panics on a bad URL.
#[doc(hidden)]
pub fn real_redis(size: usize) -> Pool {
    let url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| crate::config::DEFAULT_REDIS_URL.to_string());
    let Ok(pool) = pool(&url, size) else {
        panic!("REDIS_URL is not valid");
    };
    pool
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "Redis" that accepts connections and never answers: nothing may wait on it forever.
    async fn silent_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        format!("redis://{addr}")
    }

    #[tokio::test]
    async fn a_redis_that_never_answers_fails_a_bounded_call_instead_of_holding_it() {
        let pool = pool(&silent_server().await, 2).unwrap();
        let started = tokio::time::Instant::now();
        let answer = bounded(&pool, |c| {
            Box::pin(async move { redis::cmd("PING").query_async::<String>(c).await })
        })
        .await;
        assert!(answer.is_err(), "{answer:?}");
        // Checking out (connect bounded at 3 s) plus the call: never unbounded.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_call_that_times_out_does_not_return_its_connection_to_the_pool() {
        let pool = real_redis(1);
        // A blocking read that outlives its limit: the connection is closed, not pooled.
        let checkout = Checkout::get(&pool).await.unwrap();
        let key = format!("test:pa-kit:never:{}", uuid::Uuid::new_v4());
        let timed_out = within(Duration::from_millis(200), checkout, move |c| {
            Box::pin(async move {
                redis::cmd("BLPOP")
                    .arg(&key)
                    .arg(5)
                    .query_async::<Option<(String, String)>>(c)
                    .await
            })
        })
        .await;
        assert!(
            matches!(timed_out, Err(CallError::TimedOut(_))),
            "{timed_out:?}"
        );
        // The pool (size 1) hands out a fresh connection at once, not the one still blocked.
        let started = tokio::time::Instant::now();
        let pong = bounded(&pool, |c| {
            Box::pin(async move { redis::cmd("PING").query_async::<String>(c).await })
        })
        .await
        .unwrap();
        assert_eq!(pong, "PONG");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    fn redis_url() -> String {
        std::env::var("REDIS_URL").unwrap_or_else(|_| crate::config::DEFAULT_REDIS_URL.to_string())
    }

    /// A connection of its own, outside any pool, to look at and kill the pool's connections.
    async fn admin() -> MultiplexedConnection {
        redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn client_id(conn: &mut Connection) -> redis::RedisResult<i64> {
        redis::cmd("CLIENT").arg("ID").query_async(conn).await
    }

    /// The last command Redis ran on the connection `id` (`CLIENT LIST ID`'s `cmd=`).
    async fn last_command(admin: &mut MultiplexedConnection, id: i64) -> String {
        let listed: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("ID")
            .arg(id)
            .query_async(admin)
            .await
            .unwrap();
        listed
            .split_whitespace()
            .find_map(|field| field.strip_prefix("cmd="))
            .unwrap_or_default()
            .to_string()
    }

    async fn kill(admin: &mut MultiplexedConnection, id: i64) {
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(admin)
            .await
            .unwrap();
        assert_eq!(killed, 1);
        // The connection's reader sees the close.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn a_connection_checked_out_within_the_last_second_gets_no_ping_an_idle_one_does() {
        let pool = real_redis(1);
        let mut admin = admin().await;
        let mut conn = pool.get().await.unwrap();
        let id = client_id(&mut conn).await.unwrap();
        let _: String = redis::cmd("ECHO")
            .arg("marker")
            .query_async(&mut conn)
            .await
            .unwrap();
        drop(conn);
        // Checked out again at once: handed out as it was, without a round trip.
        let mut conn = pool.get().await.unwrap();
        assert_eq!(last_command(&mut admin, id).await, "echo");
        assert_eq!(client_id(&mut conn).await.unwrap(), id);
        drop(conn);
        // Idle for longer than TRUSTED_FOR: checked with a PING first.
        tokio::time::sleep(TRUSTED_FOR + Duration::from_millis(100)).await;
        let mut conn = pool.get().await.unwrap();
        assert_eq!(last_command(&mut admin, id).await, "ping");
        assert_eq!(client_id(&mut conn).await.unwrap(), id);
    }

    #[tokio::test]
    async fn an_idle_connection_the_server_dropped_is_replaced_without_a_failure() {
        let pool = real_redis(1);
        let mut admin = admin().await;
        let mut conn = pool.get().await.unwrap();
        let id = client_id(&mut conn).await.unwrap();
        drop(conn);
        kill(&mut admin, id).await;
        tokio::time::sleep(TRUSTED_FOR).await;
        let mut conn = pool.get().await.unwrap();
        let fresh = client_id(&mut conn).await.unwrap();
        assert_ne!(fresh, id);
    }

    /// A restart breaks every connection at once: the first command that fails on one retires
    /// all the connections opened before it, so one command fails, not one per connection.
    #[tokio::test]
    async fn a_failed_connection_retires_every_connection_opened_before_it() {
        let pool = real_redis(3);
        let mut admin = admin().await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(pool.get().await.unwrap());
        }
        let mut old = Vec::new();
        for conn in &mut held {
            old.push(client_id(conn).await.unwrap());
        }
        drop(held);
        kill(&mut admin, old[0]).await;
        let mut outcomes = Vec::new();
        for _ in 0..5 {
            let mut conn = pool.get().await.unwrap();
            outcomes.push(client_id(&mut conn).await);
        }
        let failed = outcomes
            .iter()
            .position(|o| o.as_ref().is_err_and(is_connection_error))
            .unwrap_or_else(|| panic!("no command met the killed connection: {outcomes:?}"));
        assert_eq!(
            outcomes.iter().filter(|o| o.is_err()).count(),
            1,
            "{outcomes:?}"
        );
        let after: Vec<i64> = outcomes[failed + 1..]
            .iter()
            .map(|o| *o.as_ref().unwrap())
            .collect();
        assert!(!after.is_empty());
        assert!(
            after.iter().all(|id| !old.contains(id)),
            "{old:?} {after:?}"
        );
    }

    /// Failures count per pool: a connection that fails on one pool (which may talk to
    /// another Redis) retires nothing of another's.
    #[tokio::test]
    async fn a_failure_on_one_pool_leaves_another_pools_connections_alone() {
        let (failing, other) = (real_redis(1), real_redis(1));
        let mut admin = admin().await;
        let doomed = client_id(&mut failing.get().await.unwrap()).await.unwrap();
        let kept = client_id(&mut other.get().await.unwrap()).await.unwrap();
        kill(&mut admin, doomed).await;
        let failed = client_id(&mut failing.get().await.unwrap()).await;
        assert!(
            failed.as_ref().is_err_and(is_connection_error),
            "{failed:?}"
        );
        assert_eq!(
            client_id(&mut other.get().await.unwrap()).await.unwrap(),
            kept,
            "the other pool's connection was handed out again"
        );
        let replaced = client_id(&mut failing.get().await.unwrap()).await.unwrap();
        assert_ne!(replaced, doomed);
    }
}
