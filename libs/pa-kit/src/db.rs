//! Postgres: each service owns one schema. It connects with `search_path` set to that schema, so
//! its tables and its sqlx migration history (`_sqlx_migrations`) live there and nowhere else.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid DATABASE_URL: {0}")]
    Url(sqlx::Error),
    #[error("cannot reach Postgres: {0}")]
    Connect(sqlx::Error),
    #[error("migrations of schema {schema}: {source}")]
    Migrate {
        schema: String,
        source: sqlx::migrate::MigrateError,
    },
}

/// Connects to the service's `schema`, creating it if needed, and applies its migrations.
pub async fn connect_schema(
    database_url: &str,
    schema: &str,
    migrator: &Migrator,
    max_connections: u32,
) -> Result<PgPool, DbError> {
    let base = PgConnectOptions::from_str(database_url).map_err(DbError::Url)?;
    {
        let mut conn = sqlx::PgConnection::connect_with(&base)
            .await
            .map_err(DbError::Connect)?;
        // The schema name is a compile-time constant of the service, never user input.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
        )))
        .execute(&mut conn)
        .await
        .map_err(DbError::Connect)?;
        let _ = conn.close().await;
    }
    let options = base.options([("search_path", schema)]);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(DbError::Connect)?;
    migrator
        .run(&pool)
        .await
        .map_err(|source| DbError::Migrate {
            schema: schema.to_string(),
            source,
        })?;
    Ok(pool)
}
