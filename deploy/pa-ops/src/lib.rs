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
