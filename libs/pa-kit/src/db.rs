//! Postgres: each service owns one schema. It connects with `search_path` set to that schema
//! (then `public`, where extensions such as pgvector usually live, for their types and operators), so
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

fn search_path(schema: &str) -> String {
    format!("{schema},public")
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
    let options = base.options([("search_path", search_path(schema))]);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        // A ping before every acquire costs a round trip on each request's hot path; a
        // connection broken meanwhile fails its query and is dropped by the pool instead.
        .test_before_acquire(false)
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

/// The two connections of a service with row-level security: the owner runs migrations and
/// grants; the application role (no superuser, no BYPASSRLS) serves requests, so the policies
/// apply to every query it makes.
#[derive(Clone, Debug)]
pub struct RlsPools {
    pub owner: PgPool,
    pub app: PgPool,
}

/// The application role (`PA_DB_APP_USER`, default `pa_app`; password `PA_DB_APP_PASSWORD`).
fn app_role() -> (String, Option<String>) {
    let user = std::env::var("PA_DB_APP_USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "pa_app".into());
    (
        user,
        std::env::var("PA_DB_APP_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty()),
    )
}

/// Like [`connect_schema`], then makes sure the application role exists (when the owner may
/// create roles; in production it is provisioned with its password), grants it the schema's
/// tables, and returns a pool that connects as it.
pub async fn connect_schema_rls(
    database_url: &str,
    schema: &str,
    migrator: &Migrator,
    max_connections: u32,
) -> Result<RlsPools, DbError> {
    let owner = connect_schema(database_url, schema, migrator, 2).await?;
    let (role, password) = app_role();
    if !role.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(DbError::Url(sqlx::Error::Configuration(
            "PA_DB_APP_USER must be [A-Za-z0-9_]".into(),
        )));
    }
    // Role names and the schema are our own identifiers (checked above), never user input.
    let create = format!(
        "DO $$ BEGIN CREATE ROLE \"{role}\" LOGIN NOSUPERUSER NOBYPASSRLS; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; \
         WHEN insufficient_privilege THEN RAISE NOTICE 'cannot create role {role}'; END $$"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&owner)
        .await
        .map_err(DbError::Connect)?;
    let grants = format!(
        "GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\"; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{schema}\" TO \"{role}\"; \
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA \"{schema}\" TO \"{role}\""
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(grants))
        .execute(&owner)
        .await
        .map_err(DbError::Connect)?;
    let mut options = PgConnectOptions::from_str(database_url)
        .map_err(DbError::Url)?
        .username(&role);
    if let Some(password) = &password {
        options = options.password(password);
    }
    let app = PgPoolOptions::new()
        .max_connections(max_connections)
        // A ping before every acquire costs a round trip on each request's hot path; a
        // connection broken meanwhile fails its query and is dropped by the pool instead.
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.options([("search_path", search_path(schema))]))
        .await
        .map_err(DbError::Connect)?;
    Ok(RlsPools { owner, app })
}

/// A transaction whose queries see only `tenant_id`'s rows: `pa.tenant_id` is set for this
/// transaction alone (`set_config(…, true)`, i.e. SET LOCAL). Without it the policies match no
/// row — fail closed.
///
/// BEGIN and the setting travel in one simple-query message, so a tenant transaction costs one
/// round trip more than a bare statement (the COMMIT), not two.
pub async fn tenant_tx(
    pool: &PgPool,
    tenant_id: &str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    scoped_tx(pool, &[("pa.tenant_id", tenant_id)]).await
}

/// A transaction with the given `pa.*` settings made local to it (see [`tenant_tx`]).
pub async fn scoped_tx(
    pool: &PgPool,
    settings: &[(&str, &str)],
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut statement = String::from("BEGIN");
    for (name, value) in settings {
        statement.push_str(&format!(
            "; SELECT set_config({}, {}, true)",
            sql_literal(name)?,
            sql_literal(value)?
        ));
    }
    pool.begin_with(sqlx::AssertSqlSafe(statement)).await
}

/// A string as an escape-string literal (`E'…'`): backslashes and quotes are doubled, which is
/// safe whatever `standard_conforming_strings` says. NUL cannot be sent at all.
fn sql_literal(value: &str) -> Result<String, sqlx::Error> {
    if value.contains('\0') {
        return Err(sqlx::Error::Protocol("NUL in a setting value".into()));
    }
    Ok(format!(
        "E'{}'",
        value.replace('\\', "\\\\").replace('\'', "''")
    ))
}

#[cfg(test)]
mod tests {
    use super::sql_literal;

    #[test]
    fn setting_values_are_quoted_so_they_cannot_end_the_literal() {
        assert_eq!(sql_literal("acme").unwrap(), "E'acme'");
        assert_eq!(sql_literal("a'b").unwrap(), "E'a''b'");
        assert_eq!(sql_literal("a\\'; DROP").unwrap(), "E'a\\\\''; DROP'");
        assert!(sql_literal("a\0b").is_err());
    }
}
