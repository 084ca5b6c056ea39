//! Replicas of a service under row-level security that start at the same moment all come up:
//! each runs the same start-up DDL (application role, grants, owner maintenance policies), and
//! Postgres answers a concurrent change of the same catalog row with "tuple concurrently
//! updated" — which pa-kit retries (a svc-models replica once died of it in CI's scale_out).

use sqlx::Connection;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("tests/probe_migrations");

#[tokio::test]
async fn eight_replicas_starting_together_all_connect_and_serve_rls() -> R {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| tests_e2e::DEFAULT_DATABASE_URL.to_string());
    let database = format!("pa_replica_start_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&base).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut admin)
        .await?;
    let (prefix, _) = base
        .rsplit_once('/')
        .ok_or("DATABASE_URL has no database")?;
    let url = format!("{prefix}/{database}");

    let outcome = async {
        for round in 0..3 {
            // A fresh schema each round: the DDL has something to change every time.
            let schema = format!("probe_{round}");
            let starts = (0..8).map(|_| {
                let (url, schema) = (url.clone(), schema.clone());
                tokio::spawn(async move {
                    pa_kit::db::connect_schema_rls(&url, &schema, &MIGRATOR, 1).await
                })
            });
            for start in futures::future::join_all(starts).await {
                let pools = start?.map_err(|e| format!("round {round}: a replica failed: {e}"))?;
                let mut tx = pa_kit::db::tenant_tx(&pools.app, "acme").await?;
                let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                assert_eq!(seen, 0);
            }
        }
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    // Closing every pool first is not needed: FORCE drops the database under them.
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
    outcome
}
