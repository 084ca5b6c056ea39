//! pa-migrate against the real Postgres of the dev stack, pa-healthcheck against real servers.

use std::time::Duration;

use sqlx::Connection;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| pa_kit::config::DEFAULT_DATABASE_URL.into())
}

/// `admin_url` with another database name (no query string in the dev stack's URL).
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    if query.is_empty() {
        format!("{server}/{database}")
    } else {
        format!("{server}/{database}?{query}")
    }
}

#[tokio::test]
async fn pa_migrate_applies_every_services_migrations_once() -> R {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    // Named like the e2e databases so `make clean-test-dbs` drops it if the test dies.
    let database = format!("pa_e2e_{created}_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut admin)
        .await?;
    let url = with_database(&admin_url(), &database);

    let result: R = async {
        // Twice: the second run finds everything applied and changes nothing.
        pa_ops::migrate_all(&url).await?;
        pa_ops::migrate_all(&url).await?;
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        for schema in pa_ops::SCHEMAS {
            let dir = format!(
                "{}/../../{}/migrations",
                env!("CARGO_MANIFEST_DIR"),
                schema.service
            );
            let files = std::fs::read_dir(&dir)?
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".sql"))
                .count();
            let applied: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM \"{}\"._sqlx_migrations WHERE success",
                schema.schema
            )))
            .fetch_one(&mut conn)
            .await?;
            assert_eq!(applied, files as i64, "schema {}", schema.schema);
        }
        conn.close().await?;
        Ok(())
    }
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    result
}

/// A first install on a server whose schema owner is an ordinary role (no superuser,
/// BYPASSRLS, CREATEROLE or CREATEDB), as on a managed Postgres: pa-migrate, given the
/// administrator, creates the extension and the application role with its password, lets the
/// owner create its schemas, migrates as the owner and leaves the owner's maintenance policies
/// (ADR 0201).
#[tokio::test]
async fn pa_migrate_provisions_roles_as_the_administrator_then_migrates_as_the_owner() -> R {
    use std::str::FromStr;
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let database = format!("pa_e2e_{created}_{suffix}");
    let owner = format!("pa_ops_owner_{}", &suffix[..12]);
    let app = format!("pa_ops_app_{}", &suffix[..12]);
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await?;
    // One statement per call: CREATE DATABASE refuses the implicit transaction of a batch.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut admin)
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {owner} LOGIN PASSWORD 'owner-pw' NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB"
    )))
    .execute(&mut admin)
    .await?;
    let admin_options = sqlx::postgres::PgConnectOptions::from_str(&admin_url())?;
    let mut owner_url = as_user(&with_database(&admin_url(), &database), &owner, "owner-pw");

    let result: R = async {
        let run = || {
            std::process::Command::new(env!("CARGO_BIN_EXE_pa-migrate"))
                .env("DATABASE_URL", &owner_url)
                .env("PA_DB_ADMIN_USER", admin_options.get_username())
                .env("PA_DB_APP_USER", &app)
                .env("PA_DB_APP_PASSWORD", "app-pw")
                .output()
        };
        // Twice: the second run finds everything in place.
        for _ in 0..2 {
            let out = run()?;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut db = sqlx::PgConnection::connect(&with_database(&admin_url(), &database)).await?;
        let (login, superuser, bypass, password): (bool, bool, bool, bool) = sqlx::query_as(
            "SELECT rolcanlogin, rolsuper, rolbypassrls, rolpassword IS NOT NULL \
             FROM pg_authid WHERE rolname = $1",
        )
        .bind(&app)
        .fetch_one(&mut db)
        .await?;
        assert!(
            login && !superuser && !bypass && password,
            "the application role"
        );
        let tables_owner: String = sqlx::query_scalar(
            "SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname = 'runs'",
        )
        .fetch_one(&mut db)
        .await?;
        assert_eq!(tables_owner, owner, "the owner migrated");
        // Every table under row-level security has the owner's maintenance policy, and only
        // the owner's.
        let missing: Vec<String> = sqlx::query_scalar(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relrowsecurity AND NOT EXISTS (SELECT 1 FROM pg_policy p \
               WHERE p.polrelid = c.oid AND p.polname = 'owner_maintenance' \
                 AND p.polroles = ARRAY[(SELECT oid FROM pg_roles WHERE rolname = $1)])",
        )
        .bind(&owner)
        .fetch_all(&mut db)
        .await?;
        assert!(
            missing.is_empty(),
            "tables without the owner's policy: {missing:?}"
        );
        // The application role may set the maintenance switch: it still sees no tenant's rows.
        sqlx::query(
            "INSERT INTO runs.chats (id, tenant_id, user_id, title) VALUES ('c1', 't1', 'u1', 'x')",
        )
        .execute(&mut db)
        .await?;
        let mut as_app = sqlx::PgConnection::connect(&as_user(
            &with_database(&admin_url(), &database),
            &app,
            "app-pw",
        ))
        .await?;
        sqlx::query("SET pa.maintenance = 'on'")
            .execute(&mut as_app)
            .await?;
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM runs.chats")
            .fetch_one(&mut as_app)
            .await?;
        assert_eq!(
            seen, 0,
            "the application role saw rows through the maintenance switch"
        );
        let _ = as_app.close().await;
        // The owner, with the switch its pools set, sees every tenant's.
        owner_url.push_str("?options=-c%20pa.maintenance%3Don");
        let mut as_owner = sqlx::PgConnection::connect(&owner_url).await?;
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM runs.chats")
            .fetch_one(&mut as_owner)
            .await?;
        assert_eq!(seen, 1);
        let _ = as_owner.close().await;
        let _ = db.close().await;
        Ok(())
    }
    .await;
    for statement in [
        format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        format!("DROP ROLE IF EXISTS {owner}"),
        format!("DROP ROLE IF EXISTS {app}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await?;
    }
    result
}

/// `url` (no user, no query string, as in the dev stack) as `user` with `password`.
fn as_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{password}@{host}")
}

#[tokio::test]
async fn pa_migrate_reports_an_unreachable_database() {
    let err = pa_ops::migrate_all("postgres://pa@127.0.0.1:1/none").await;
    assert!(
        matches!(err, Err(pa_kit::db::DbError::Connect(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn pa_healthcheck_follows_grpc_health_and_http_status() -> R {
    // A real gRPC server with tonic-health: SERVING while it runs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc_addr = listener.local_addr()?.to_string();
    let shutdown = pa_kit::Shutdown::new();
    let server = pa_kit::grpc::GrpcServer::new(Duration::from_secs(5))?;
    let serving = tokio::spawn(server.serve(listener, shutdown.clone()));
    let grpc = pa_ops::Probe::parse(&["grpc".into(), grpc_addr.clone()])?;
    let mut healthy = false;
    // Up to 30 s for the server to start on a loaded machine.
    for _ in 0..600 {
        if grpc.check().await {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy, "gRPC server at {grpc_addr} not reported healthy");
    shutdown.trigger();
    serving.await??;
    assert!(!grpc.check().await, "a stopped server is healthy?");

    // A real HTTP server: 2xx is healthy, 503 is not.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http_addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down") }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let ok = pa_ops::Probe::parse(&["http".into(), format!("http://{http_addr}/healthz")])?;
    let down = pa_ops::Probe::parse(&["http".into(), format!("http://{http_addr}/readyz")])?;
    assert!(ok.check().await);
    assert!(!down.check().await);
    assert!(pa_ops::Probe::parse(&["tcp".into(), "x".into()]).is_err());
    assert!(pa_ops::Probe::parse(&["http".into(), "https://x/".into()]).is_err());
    Ok(())
}
