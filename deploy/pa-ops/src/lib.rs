//! Operations helpers shipped in the container images.
//!
//! - `pa-migrate` applies every service's migrations to its own schema and exits: the Helm
//!   chart runs it as a pre-install/pre-upgrade Job, so new pods start on an up-to-date schema.
//!   The services still migrate at start (idempotent, under sqlx's advisory lock), so the Job is
//!   an ordering guarantee, not a second source of truth: the migration files stay in each
//!   service's `migrations/` folder and are embedded here at build time.
//! - `pa-healthcheck` asks a gRPC server for its tonic-health status, or an HTTP endpoint for a
//!   2xx, for `docker compose` healthchecks (the images have no shell or curl).

use std::time::Duration;

use sqlx::migrate::Migrator;

/// One service's schema and its migrations.
pub struct Schema {
    pub service: &'static str,
    pub schema: &'static str,
    /// The service connects through `connect_schema_rls` (an application role under row-level
    /// security): the Job also creates that role when it may and grants it the tables.
    pub rls: bool,
    pub migrator: &'static Migrator,
}

static GATEWAY: Migrator = sqlx::migrate!("../../svc-gateway/migrations");
static RUNS: Migrator = sqlx::migrate!("../../svc-runs/migrations");
static MODELS: Migrator = sqlx::migrate!("../../svc-models/migrations");
static TOOLS: Migrator = sqlx::migrate!("../../svc-tools/migrations");
static MEMORY: Migrator = sqlx::migrate!("../../svc-memory/migrations");

/// Every schema of the mesh. tests-static checks this list against each service's `lib.rs`
/// (schema name and whether it uses row-level security), so it cannot drift.
pub const SCHEMAS: &[Schema] = &[
    Schema {
        service: "svc-gateway",
        schema: "gateway",
        rls: true,
        migrator: &GATEWAY,
    },
    Schema {
        service: "svc-runs",
        schema: "runs",
        rls: true,
        migrator: &RUNS,
    },
    Schema {
        service: "svc-models",
        schema: "models",
        rls: true,
        migrator: &MODELS,
    },
    Schema {
        service: "svc-tools",
        schema: "tools",
        rls: true,
        migrator: &TOOLS,
    },
    Schema {
        service: "svc-memory",
        schema: "memory",
        rls: true,
        migrator: &MEMORY,
    },
];

/// The server administrator's part of a first install (`PA_DB_ADMIN_USER` /
/// `PA_DB_ADMIN_PASSWORD`, on `DATABASE_URL`'s server and database): what the schema owner
/// cannot do itself when it is an ordinary role, as on a managed Postgres or the chart's bundled
/// one (ADR 0201).
pub struct Provisioning {
    pub admin_user: String,
    pub admin_password: Option<String>,
    /// The application role and its password (`PA_DB_APP_USER` / `PA_DB_APP_PASSWORD`).
    pub app_user: String,
    pub app_password: Option<String>,
}

impl Provisioning {
    /// From the environment; `None` when `PA_DB_ADMIN_USER` is unset (the owner provisions
    /// what it may itself, as before).
    pub fn from_env() -> Option<Self> {
        let admin_user = std::env::var("PA_DB_ADMIN_USER")
            .ok()
            .filter(|u| !u.is_empty())?;
        let (app_user, app_password) = pa_kit::db::app_role();
        Some(Self {
            admin_user,
            admin_password: std::env::var("PA_DB_ADMIN_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty()),
            app_user,
            app_password,
        })
    }
}

/// As the administrator: the `vector` extension, the application role (`LOGIN NOSUPERUSER
/// NOBYPASSRLS`, its password set when one is given, so a rotated password lands on the next
/// run), and the owner's right to create its schemas in the database. Idempotent.
pub async fn provision(
    database_url: &str,
    provisioning: &Provisioning,
) -> Result<(), pa_kit::db::DbError> {
    use sqlx::Connection;
    use std::str::FromStr;
    let owner_options = sqlx::postgres::PgConnectOptions::from_str(database_url)
        .map_err(pa_kit::db::DbError::Url)?;
    let owner = owner_options.get_username().to_string();
    let mut admin_options = owner_options.username(&provisioning.admin_user);
    if let Some(password) = &provisioning.admin_password {
        admin_options = admin_options.password(password);
    }
    let mut admin = sqlx::PgConnection::connect_with(&admin_options)
        .await
        .map_err(pa_kit::db::DbError::Connect)?;
    let connect = pa_kit::db::DbError::Connect;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS vector")
        .execute(&mut admin)
        .await
        .map_err(connect)?;
    // Identifiers and the password are quoted by the server (format's %I and %L).
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&provisioning.app_user)
            .fetch_one(&mut admin)
            .await
            .map_err(connect)?;
    let mut statements = Vec::new();
    if !exists {
        statements.push((
            "SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS', $1::text)",
            vec![provisioning.app_user.clone()],
        ));
    }
    if let Some(password) = &provisioning.app_password {
        statements.push((
            "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)",
            vec![provisioning.app_user.clone(), password.clone()],
        ));
    }
    statements.push((
        "SELECT format('GRANT CONNECT, CREATE ON DATABASE %I TO %I', current_database(), $1::text)",
        vec![owner],
    ));
    for (template, binds) in statements {
        let mut query = sqlx::query_scalar::<_, String>(template);
        for bind in binds {
            query = query.bind(bind);
        }
        let statement = query.fetch_one(&mut admin).await.map_err(connect)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await
            .map_err(connect)?;
    }
    let _ = admin.close().await;
    Ok(())
}

/// Applies every schema's migrations, in order, and closes the pools.
pub async fn migrate_all(database_url: &str) -> Result<(), pa_kit::db::DbError> {
    for schema in SCHEMAS {
        if schema.rls {
            let pools =
                pa_kit::db::connect_schema_rls(database_url, schema.schema, schema.migrator, 1)
                    .await?;
            pools.owner.close().await;
            pools.app.close().await;
        } else {
            pa_kit::db::connect_schema(database_url, schema.schema, schema.migrator, 1)
                .await?
                .close()
                .await;
        }
        tracing::info!(
            service = schema.service,
            schema = schema.schema,
            migrations = schema.migrator.iter().count(),
            "migrated"
        );
    }
    Ok(())
}

/// `pa-migrate`: provisioning (when `PA_DB_ADMIN_USER` is set), then every migration. The
/// binary is this alone, so the tests that start a deployment's processes run the same code.
pub async fn migrate_main_from_env() -> std::process::ExitCode {
    pa_kit::service_main("pa-migrate", |_shutdown| async move {
        let url = pa_kit::config::env_or("DATABASE_URL", pa_kit::config::DEFAULT_DATABASE_URL);
        if let Some(provisioning) = Provisioning::from_env() {
            provision(&url, &provisioning).await?;
            tracing::info!(app_role = %provisioning.app_user, "provisioned as the administrator");
        }
        migrate_all(&url).await?;
        Ok(())
    })
    .await
}

/// What `pa-healthcheck` probes.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// tonic-health `Check("")` on `host:port` must answer SERVING.
    Grpc(String),
    /// `GET http://host:port/path` must answer 2xx.
    Http { authority: String, path: String },
}

impl Probe {
    /// `grpc host:port` or `http http://host:port/path`.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        match args {
            [kind, target] if kind == "grpc" => Ok(Self::Grpc(target.clone())),
            [kind, target] if kind == "http" => {
                let rest = target
                    .strip_prefix("http://")
                    .ok_or("only http:// URLs are probed")?;
                let (authority, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, "/"),
                };
                Ok(Self::Http {
                    authority: authority.to_string(),
                    path: path.to_string(),
                })
            }
            _ => Err(
                "usage: pa-healthcheck grpc <host:port> | http http://<host:port>/<path>".into(),
            ),
        }
    }

    /// Whether the target is healthy, within a few seconds.
    pub async fn check(&self) -> bool {
        match self {
            Self::Grpc(target) => match pa_kit::grpc::channel(&format!("http://{target}")) {
                Ok(channel) => pa_kit::grpc::is_serving(channel).await,
                Err(_) => false,
            },
            Self::Http { authority, path } => {
                tokio::time::timeout(Duration::from_secs(3), http_status(authority, path))
                    .await
                    .is_ok_and(|status| status.is_ok_and(|s| (200..300).contains(&s)))
            }
        }
    }
}

/// A minimal HTTP/1.0 GET: enough for /healthz, without an HTTP client in the image.
async fn http_status(authority: &str, path: &str) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    let mut head = [0u8; 32];
    let n = stream.read(&mut head).await?;
    // "HTTP/1.1 200 OK": the status is the second word of the first line.
    std::str::from_utf8(&head[..n])
        .ok()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}
