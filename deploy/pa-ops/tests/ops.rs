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
