//! Postgres: each service owns one schema. It connects with `search_path` set to that schema
//! (then `public`, where extensions such as pgvector usually live, for their types and operators), so
//! its tables and its sqlx migration history (`_sqlx_migrations`) live there and nowhere else.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid DATABASE_URL: {0}")]
    Url(sqlx::Error),
    /// Postgres could not be reached, or it refused (a wrong password or role, a missing
    /// privilege): the message says which, so an operator knows what to fix.
    #[error("{what}: {0}", what = connect_failure(.0))]
    Connect(sqlx::Error),
    #[error("migrations of schema {schema}: {source}")]
    Migrate {
        schema: String,
        source: sqlx::migrate::MigrateError,
    },
}

fn connect_failure(err: &sqlx::Error) -> &'static str {
    match err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("28P01") => {
            "Postgres refused the password (check DATABASE_URL, PA_DB_APP_USER and PA_DB_APP_PASSWORD)"
        }
        sqlx::Error::Database(db) if db.code().as_deref().is_some_and(|c| c.starts_with("28")) => {
            "Postgres refused the login (role or pg_hba.conf)"
        }
        sqlx::Error::Database(_) => "Postgres refused",
        _ => "cannot reach Postgres",
    }
}

/// How long a pooled connection may sit idle before it is pinged when acquired.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The options of every pool: connections that cannot be trusted are replaced when acquired
/// (docs/src/adr/0170-2026-12-03-store-outages.md).
///
/// - A connection opened before the last connection-class error this process saw (a restart
///   of Postgres breaks every one of them at once) is dropped, not tried.
/// - One idle for more than [`IDLE_CHECK`] is pinged first. sqlx pings every connection when
///   it is released, so one used within the last second is known good, and a busy pool pays
///   no extra round trip.
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if opened_before_last_connection_error(meta.age) {
                    return Ok(false);
                }
                if meta.idle_for > IDLE_CHECK
                    && let Err(err) = conn.ping().await
                {
                    tracing::info!(%err, "dropping a broken pooled Postgres connection");
                    note_connection_error();
                    return Ok(false);
                }
                Ok(true)
            })
        })
        .acquire_timeout(Duration::from_secs(5))
}

/// The process' clock for [`note_connection_error`]: milliseconds since the first call, +1.
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1
}

/// When (see [`now_ms`]) this process last saw a connection-class Postgres error; 0 = never.
static LAST_CONNECTION_ERROR_MS: AtomicU64 = AtomicU64::new(0);

/// Records that a Postgres connection broke (or could not be made): every pooled connection
/// opened before now is dropped when next acquired instead of failing a request.
pub fn note_connection_error() {
    LAST_CONNECTION_ERROR_MS.fetch_max(now_ms(), Ordering::Relaxed);
}

fn opened_before_last_connection_error(age: Duration) -> bool {
    let last = LAST_CONNECTION_ERROR_MS.load(Ordering::Relaxed);
    last != 0 && now_ms().saturating_sub(age.as_millis() as u64) <= last
}

/// Whether `err` says the connection to Postgres failed (or Postgres is not accepting
/// connections), rather than anything about the statement: I/O and TLS errors, the pool's
/// time-out or closing, SQLSTATE class 08 (connection exception), 57P01–57P03 (the server is
/// shutting down, crashed, or starting up) and 53300 (too many connections). Such an error
/// maps to `unavailable`, and a statement that failed with one before it could run is retried
/// once on a fresh connection.
pub fn is_connection_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// A connection-class error after which one more attempt may succeed at once: not the pool's
/// time-out (it already waited) nor its closing (the service is stopping).
pub fn worth_retrying(err: &sqlx::Error) -> bool {
    is_connection_error(err) && !matches!(err, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
}

/// Runs `op` and, when it fails with a connection-class error, once more (on a fresh
/// connection: the error makes the pools drop every older one). Only for operations that are
/// safe to run twice — a read, or a single statement whose effect is idempotent — since the
/// first attempt may have reached Postgres before the connection broke.
pub async fn retry_once<T, F, Fut>(mut op: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    match op().await {
        Err(err) if worth_retrying(&err) => {
            tracing::info!(%err, "Postgres connection failed; retrying once on a fresh one");
            note_connection_error();
            op().await
        }
        other => other,
    }
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
    // sqlx picks its rustls provider, but a failed verification still reaches rustls' process
    // default (two providers are compiled in; see `tls::install_crypto_provider`).
    crate::tls::install_crypto_provider();
    let base = PgConnectOptions::from_str(database_url).map_err(DbError::Url)?;
    {
        let mut conn = sqlx::PgConnection::connect_with(&base)
            .await
            .map_err(DbError::Connect)?;
        // The schema name is a compile-time constant of the service, never user input.
        start_up_ddl(
            &mut conn,
            format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""),
        )
        .await?;
        let _ = conn.close().await;
    }
    // The owner's sessions work across tenants (migrations, maintenance, rotation, lease
    // watching): its `owner_maintenance` policies admit every row when this is on (ADR 0201).
    let options = base.options([
        ("search_path", search_path(schema)),
        (MAINTENANCE_SETTING, "on".to_string()),
    ]);
    let pool = pool_options(max_connections)
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

/// The session setting that opens the owner's `owner_maintenance` policies (ADR 0201).
pub const MAINTENANCE_SETTING: &str = "pa.maintenance";

/// Gives the owner (the role running this, which owns the tables) a policy on every table of
/// `schema` under row-level security that admits every row while `pa.maintenance` is on: work
/// across tenants (maintenance, key rotation, the lease watcher) then needs neither a superuser
/// nor BYPASSRLS, as on a managed Postgres. The application role gets no such policy, so setting
/// `pa.maintenance` itself changes nothing for it. Idempotent, and safe when replicas race.
fn owner_maintenance_policies(schema: &str) -> String {
    format!(
        "DO $$ DECLARE t record; BEGIN \
           FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = '{schema}' AND c.relkind IN ('r', 'p') AND c.relrowsecurity \
               AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
               AND NOT EXISTS (SELECT 1 FROM pg_policy p \
                               WHERE p.polrelid = c.oid AND p.polname = 'owner_maintenance') \
           LOOP BEGIN \
             EXECUTE format('CREATE POLICY owner_maintenance ON %I.%I TO CURRENT_USER \
               USING (current_setting(''{MAINTENANCE_SETTING}'', true) = ''on'') \
               WITH CHECK (current_setting(''{MAINTENANCE_SETTING}'', true) = ''on'')', \
               '{schema}', t.relname); \
           EXCEPTION WHEN duplicate_object THEN NULL; END; END LOOP; END $$"
    )
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
pub fn app_role() -> (String, Option<String>) {
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

/// Whether `err` is a replica starting at the same moment winning a race for the same catalog
/// row: "tuple concurrently updated" (GRANT, CREATE POLICY …), or a unique violation of a
/// catalog index (two `CREATE SCHEMA IF NOT EXISTS` at once). Both want the same end state, so
/// running the statement again succeeds.
fn is_start_up_race(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.message().contains("tuple concurrently updated")
                || (db.code().as_deref() == Some("23505")
                    && db.constraint().is_some_and(|c| c.starts_with("pg_")))
        }
        _ => false,
    }
}

/// Runs start-up DDL (schema, role, grants, policies), again when a replica starting at the
/// same moment won a race for the same catalog row ([`is_start_up_race`]).
async fn start_up_ddl(conn: &mut sqlx::PgConnection, sql: String) -> Result<(), DbError> {
    let mut attempt = 0u64;
    loop {
        match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => return Ok(()),
            Err(err) if attempt < 5 && is_start_up_race(&err) => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
            }
            Err(err) => return Err(DbError::Connect(err)),
        }
    }
}

/// The deployment's database: what names its keys in a Redis that several deployments may
/// share (the run outbox, the users' toolset generations; ADR 0251).
pub async fn database_name(pool: &PgPool) -> Result<String, DbError> {
    sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(pool)
        .await
        .map_err(DbError::Connect)
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
    let mut ddl = owner.acquire().await.map_err(DbError::Connect)?;
    start_up_ddl(&mut ddl, create).await?;
    let grants = format!(
        "GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\"; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{schema}\" TO \"{role}\"; \
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA \"{schema}\" TO \"{role}\""
    );
    start_up_ddl(&mut ddl, grants).await?;
    start_up_ddl(&mut ddl, owner_maintenance_policies(schema)).await?;
    drop(ddl);
    let mut options = PgConnectOptions::from_str(database_url)
        .map_err(DbError::Url)?
        .username(&role);
    if let Some(password) = &password {
        options = options.password(password);
    }
    let app = pool_options(max_connections)
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

/// A read-only [`tenant_tx`]: a write in it fails. Its reader drops it instead of committing:
/// the ROLLBACK then waits in the connection's buffer and goes out with the check the pool makes
/// of every connection given back (sqlx pings it), so reading costs one round trip less on the
/// reader's path and in all (ADR 0230). The setting ends with the transaction, as in
/// [`tenant_tx`].
pub async fn tenant_read(
    pool: &PgPool,
    tenant_id: &str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    begin_scoped(pool, "BEGIN READ ONLY", &[("pa.tenant_id", tenant_id)]).await
}

/// A transaction with the given `pa.*` settings made local to it (see [`tenant_tx`]).
pub async fn scoped_tx(
    pool: &PgPool,
    settings: &[(&str, &str)],
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    begin_scoped(pool, "BEGIN", settings).await
}

/// `begin` (`BEGIN …`) and the settings, in one simple-query message.
async fn begin_scoped(
    pool: &PgPool,
    begin: &str,
    settings: &[(&str, &str)],
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut statement = String::from(begin);
    for (name, value) in settings {
        statement.push_str(&format!(
            "; SELECT set_config({}, {}, true)",
            sql_literal(name)?,
            sql_literal(value)?
        ));
    }
    // BEGIN is the first statement on the acquired connection: when it fails because the
    // connection is broken, nothing ran, so it is retried on a fresh one.
    retry_once(|| pool.begin_with(sqlx::AssertSqlSafe(statement.clone()))).await
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
