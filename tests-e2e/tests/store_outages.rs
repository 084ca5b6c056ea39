//! Store outages (docs/adr/0170-store-outages.md): while Postgres or Redis is down the mesh says
//! not ready and answers 503 `unavailable`; once it is back, not one request fails. Each test
//! owns the store it kills (tests_e2e::OwnPostgres / OwnRedis / OwnTemporal): the shared dev
//! stack is never touched.

use sqlx::Connection;
use tests_e2e::{OwnPostgres, OwnRedis, OwnTemporal};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The helpers themselves: data written before a kill -9 is there after the restart, on the
/// same port; the killed server does not answer in between.
#[tokio::test]
async fn own_stores_survive_kill_and_restart_with_their_data() -> R {
    let mut pg = OwnPostgres::start().await?;
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await?;
    sqlx::raw_sql("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")
        .execute(&mut conn)
        .await?;
    let port = pg.port();
    let pid = pg.pid().ok_or("no postmaster")?;
    pg.kill()?;
    assert!(pg.pid().is_none());
    assert!(!pg.is_up().await, "answers after kill -9");
    assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err());
    pg.restart().await?;
    assert_eq!(pg.port(), port);
    assert_ne!(pg.pid(), Some(pid));
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await?;
    let v: String = sqlx::query_scalar("SELECT v FROM t")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(v, "kept");
    // pgvector is there for the migrations (template1 has it).
    sqlx::query("CREATE DATABASE other")
        .execute(&mut conn)
        .await?;
    let other = pg.url().replace("/personal_agent", "/other");
    let mut other = sqlx::PgConnection::connect(&other).await?;
    sqlx::query("SELECT '[1,2]'::vector")
        .execute(&mut other)
        .await?;

    let mut redis = OwnRedis::start().await?;
    let client = deadpool_redis::redis::Client::open(redis.url())?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let _: () = deadpool_redis::redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut c)
        .await?;
    redis.kill()?;
    assert!(!redis.is_up().await);
    redis.restart().await?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let v: String = deadpool_redis::redis::cmd("GET")
        .arg("k")
        .query_async(&mut c)
        .await?;
    assert_eq!(v, "v");

    let mut temporal = OwnTemporal::start().await?;
    temporal.kill()?;
    assert!(!temporal.is_up().await);
    temporal.restart().await?;
    assert!(temporal.is_up().await);
    Ok(())
}
