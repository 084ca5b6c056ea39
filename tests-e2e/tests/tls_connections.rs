//! Production connections (issue 20 item 3, ADR 0208): Postgres with `sslmode=verify-full`,
//! Redis over TLS with an ACL user (`rediss://`), Temporal with mutual TLS and a namespace, and
//! OTLP over TLS — each configured as a deployment configures it, against servers this test
//! starts with a CA it generates. Next to each working connection: the impostor (a certificate
//! from another CA), the wrong name, the missing client certificate, the plain connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use pa_kit::redis::{RedisError, RedisTls};
use pa_kit::tls::ClientIdentity;
use pa_kit::trace::OtlpTls;
use svc_worker::temporal::{TemporalAuth, TemporalConfig};
use tests_e2e::{SslPostgres, TerminatorOptions, TestCa, TlsRedis, TlsTerminator};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("tests/probe_migrations");

fn path(p: std::path::PathBuf) -> String {
    p.display().to_string()
}

fn client_identity(ca: &TestCa) -> ClientIdentity {
    ClientIdentity {
        cert: TestCa::read(&ca.client_cert()),
        key: TestCa::read(&ca.client_key()),
    }
}

async fn count_notes(pool: &sqlx::PgPool, tenant: &str) -> Result<i64, sqlx::Error> {
    let mut tx = pa_kit::db::tenant_tx(pool, tenant).await?;
    let n = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}

#[tokio::test]
async fn postgres_verify_full_serves_both_roles_over_tls_and_refuses_impostor_wrong_name_and_plain()
-> R {
    let ca = TestCa::generate("pa test CA")?;
    let impostor = TestCa::generate("impostor CA")?;
    let pg = SslPostgres::start(&ca).await?;
    let verified = |host: &str, mode: &str, root: &TestCa| {
        pg.url(
            host,
            &format!("sslmode={mode}&sslrootcert={}", path(root.ca_pem())),
        )
    };

    // As a service connects: the owner migrates, the application role serves.
    let pools = pa_kit::db::connect_schema_rls(
        &verified("localhost", "verify-full", &ca),
        "tls_probe",
        &MIGRATOR,
        2,
    )
    .await
    .map_err(|e| format!("{e}; postgres log: {}", pg.log()))?;
    for (who, pool) in [("owner", &pools.owner), ("app", &pools.app)] {
        let (ssl, user): (bool, String) = sqlx::query_as(
            "SELECT ssl, current_user::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .fetch_one(pool)
        .await?;
        assert!(ssl, "the {who} pool's connection is not TLS");
        assert_eq!(user, if who == "app" { "pa_app" } else { "pa" });
    }
    // Row-level security holds over TLS as over a plain connection.
    let mut tx = pa_kit::db::tenant_tx(&pools.app, "tenant-a").await?;
    sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ('tenant-a', 'over tls')")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    assert_eq!(count_notes(&pools.app, "tenant-a").await?, 1);
    assert_eq!(count_notes(&pools.app, "tenant-b").await?, 0);

    // A server whose certificate another CA signed: refused before any password is sent.
    let forged = pa_kit::db::connect_schema(
        &verified("localhost", "verify-full", &impostor),
        "tls_probe",
        &MIGRATOR,
        1,
    )
    .await;
    assert!(forged.is_err(), "a certificate of another CA was trusted");
    // The certificate names `localhost`, not 127.0.0.1: verify-full checks the name …
    let wrong_name = pa_kit::db::connect_schema(
        &verified("127.0.0.1", "verify-full", &ca),
        "tls_probe",
        &MIGRATOR,
        1,
    )
    .await;
    assert!(
        wrong_name.is_err(),
        "verify-full accepted a certificate for another name"
    );
    // … verify-ca does not (so the refusal above was the name, not the CA).
    pa_kit::db::connect_schema(
        &verified("127.0.0.1", "verify-ca", &ca),
        "tls_probe",
        &MIGRATOR,
        1,
    )
    .await?;
    // Without TLS the server refuses the connection.
    let plain = pa_kit::db::connect_schema(
        &pg.url("localhost", "sslmode=disable"),
        "tls_probe",
        &MIGRATOR,
        1,
    )
    .await;
    let err = plain.expect_err("a plain connection was served");
    assert!(
        err.to_string()
            .starts_with("Postgres refused the login (role or pg_hba.conf)"),
        "{err}"
    );
    assert!(err.to_string().contains("no encryption"), "{err}");
    Ok(())
}

async fn set_and_get(
    pool: &pa_kit::redis::Pool,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let mut conn = pool.get().await?;
    let key = format!("test:tls:{}", uuid::Uuid::new_v4().simple());
    redis::cmd("SET")
        .arg(&key)
        .arg("over tls")
        .query_async::<()>(&mut conn)
        .await?;
    Ok(redis::cmd("GET").arg(&key).query_async(&mut conn).await?)
}

#[tokio::test]
async fn redis_over_tls_with_an_acl_user_and_refusals_for_wrong_password_impostor_and_plain() -> R {
    let ca = TestCa::generate("pa test CA")?;
    let impostor = TestCa::generate("impostor CA")?;
    let redis = TlsRedis::start(&ca, "pa", "redis-secret", false).await?;
    let trust = RedisTls {
        ca_pem: Some(TestCa::read(&ca.ca_pem())),
        client: None,
    };
    let pool = pa_kit::redis::pool_with_tls(&redis.url("pa", "redis-secret"), 2, &trust)?;
    assert_eq!(
        set_and_get(&pool)
            .await
            .map_err(|e| format!("{e}; {}", redis.log()))?,
        "over tls"
    );

    let refused = |url: String, tls: RedisTls| async move {
        let pool = pa_kit::redis::pool_with_tls(&url, 1, &tls)?;
        set_and_get(&pool).await
    };
    let wrong_password = refused(redis.url("pa", "guessed"), trust.clone()).await;
    assert!(wrong_password.is_err(), "a wrong password was accepted");
    // The default user is off: no anonymous access either.
    let anonymous = refused(
        format!("rediss://localhost:{}", redis.port()),
        trust.clone(),
    )
    .await;
    assert!(anonymous.is_err(), "the default user was served");
    let forged = refused(
        redis.url("pa", "redis-secret"),
        RedisTls {
            ca_pem: Some(TestCa::read(&impostor.ca_pem())),
            client: None,
        },
    )
    .await;
    assert!(forged.is_err(), "a certificate of another CA was trusted");
    let plain = refused(
        format!("redis://pa:redis-secret@localhost:{}", redis.port()),
        RedisTls::default(),
    )
    .await;
    assert!(
        plain.is_err(),
        "a plain connection was served by the TLS port"
    );
    // Certificates with a plain URL would be ignored: refused when the pool is made.
    assert!(matches!(
        pa_kit::redis::pool_with_tls(&format!("redis://localhost:{}", redis.port()), 1, &trust),
        Err(RedisError::TlsWithoutRediss)
    ));
    Ok(())
}

#[tokio::test]
async fn redis_with_mutual_tls_needs_the_client_certificate() -> R {
    let ca = TestCa::generate("pa test CA")?;
    let redis = TlsRedis::start(&ca, "pa", "redis-secret", true).await?;
    let url = redis.url("pa", "redis-secret");
    let with_identity = RedisTls {
        ca_pem: Some(TestCa::read(&ca.ca_pem())),
        client: Some(client_identity(&ca)),
    };
    let pool = pa_kit::redis::pool_with_tls(&url, 1, &with_identity)?;
    assert_eq!(set_and_get(&pool).await?, "over tls");
    let without = RedisTls {
        client: None,
        ..with_identity
    };
    let pool = pa_kit::redis::pool_with_tls(&url, 1, &without)?;
    assert!(
        set_and_get(&pool).await.is_err(),
        "served without a client certificate"
    );
    Ok(())
}

/// Fault: Redis (mutual TLS) killed with -9 and started again on its port. The same pool
/// serves again over TLS, with its certificates, without being made anew; no call hangs while
/// the server is gone.
#[tokio::test]
async fn a_pool_over_mutual_tls_serves_again_after_redis_is_killed_and_restarted() -> R {
    let ca = TestCa::generate("pa test CA")?;
    let mut redis = TlsRedis::start(&ca, "pa", "redis-secret", true).await?;
    let tls = RedisTls {
        ca_pem: Some(TestCa::read(&ca.ca_pem())),
        client: Some(client_identity(&ca)),
    };
    let pool = pa_kit::redis::pool_with_tls(&redis.url("pa", "redis-secret"), 2, &tls)?;
    assert_eq!(set_and_get(&pool).await?, "over tls");

    redis.kill_and_restart().await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut failures = 0;
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(5), set_and_get(&pool))
            .await
            .map_err(|_| "a call hung after the restart")?;
        match attempt {
            Ok(value) => {
                assert_eq!(value, "over tls");
                break;
            }
            Err(err) if std::time::Instant::now() < deadline => {
                failures += 1;
                tracing::debug!("after the restart: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => {
                return Err(format!(
                    "no call served 15 s after the restart ({failures} failed): {err}; {}",
                    redis.log()
                )
                .into());
            }
        }
    }
    // Every pooled connection came back, not just one.
    for _ in 0..4 {
        assert_eq!(set_and_get(&pool).await?, "over tls");
    }
    Ok(())
}

fn temporal_upstream() -> String {
    std::env::var("TEMPORAL_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7233".into())
}

fn temporal_config(address: String, auth: TemporalAuth) -> TemporalConfig {
    TemporalConfig {
        address,
        namespace: "default".into(),
        task_queue: "tls-probe".into(),
        auth,
    }
}

#[tokio::test]
async fn temporal_with_mutual_tls_connects_and_refuses_without_certificate_or_with_impostor() -> R {
    let ca = TestCa::generate("pa test CA")?;
    let impostor = TestCa::generate("impostor CA")?;
    // Temporal Cloud's frontend: TLS with a client certificate required, HTTP/2.
    let frontend = TlsTerminator::start(
        &ca,
        &temporal_upstream(),
        TerminatorOptions {
            require_client_cert: true,
            h2: true,
            ..Default::default()
        },
    )
    .await?;
    let auth = TemporalAuth {
        ca_file: Some(path(ca.ca_pem())),
        client_cert_file: Some(path(ca.client_cert())),
        client_key_file: Some(path(ca.client_key())),
        ..Default::default()
    };
    let config = temporal_config(frontend.address(), auth.clone());
    assert!(config.uses_tls());
    let client = svc_worker::temporal::connect(&config).await?;
    client
        .count_workflows("", Default::default())
        .await
        .map_err(|e| format!("a call over mutual TLS failed: {e}"))?;
    assert!(frontend.accepted() >= 1);

    let refused_before = frontend.refused();
    let no_certificate = TemporalAuth {
        client_cert_file: None,
        client_key_file: None,
        ..auth.clone()
    };
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        svc_worker::temporal::connect(&temporal_config(frontend.address(), no_certificate)),
    )
    .await?;
    assert!(answer.is_err(), "connected without a client certificate");
    assert!(frontend.refused() > refused_before);

    let forged = TemporalAuth {
        ca_file: Some(path(impostor.ca_pem())),
        ..auth.clone()
    };
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        svc_worker::temporal::connect(&temporal_config(frontend.address(), forged)),
    )
    .await?;
    assert!(
        answer.is_err(),
        "trusted a frontend certificate of another CA"
    );

    // Half a client identity, or TLS settings with an http:// address: refused up front.
    let half = TemporalAuth {
        client_key_file: None,
        ..auth.clone()
    };
    let answer = svc_worker::temporal::connect(&temporal_config(frontend.address(), half)).await;
    assert!(
        matches!(&answer, Err(svc_worker::temporal::TemporalError::Tls(_))),
        "{:?}",
        answer.err()
    );
    let http = temporal_config(format!("http://{}", frontend.address()), auth);
    assert!(matches!(
        svc_worker::temporal::connect(&http).await,
        Err(svc_worker::temporal::TemporalError::Tls(_))
    ));
    Ok(())
}

#[derive(Clone, Default)]
struct SpanNames(Arc<Mutex<Vec<String>>>);

#[tonic::async_trait]
impl TraceService for SpanNames {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut names = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                names.extend(scope.spans.into_iter().map(|s| s.name));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Exports one span named `name` through a provider made with `tls`, and flushes it.
fn export_one(endpoint: &str, tls: &OtlpTls, name: &'static str) -> Result<(), String> {
    use opentelemetry::trace::{Tracer, TracerProvider};
    let provider = pa_kit::trace::otlp_provider_with_tls("tls-probe", endpoint, tls)?;
    provider.tracer("tls-probe").in_span(name, |_| {});
    let flushed = provider.force_flush().map_err(|e| e.to_string());
    let _ = provider.shutdown();
    flushed
}

#[tokio::test]
async fn otlp_export_over_mutual_tls_reaches_the_collector_and_an_impostor_collector_gets_nothing()
-> R {
    let ca = TestCa::generate("pa test CA")?;
    let impostor = TestCa::generate("impostor CA")?;
    let received = SpanNames::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let plain = listener.local_addr()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let collector = TlsTerminator::start(
        &ca,
        &plain.to_string(),
        TerminatorOptions {
            require_client_cert: true,
            h2: true,
            ..Default::default()
        },
    )
    .await?;
    let endpoint = format!("https://{}", collector.address());
    let tls = OtlpTls {
        ca_pem: Some(TestCa::read(&ca.ca_pem())),
        client: Some(client_identity(&ca)),
    };
    let (e, t) = (endpoint.clone(), tls.clone());
    tokio::task::spawn_blocking(move || export_one(&e, &t, "over-mutual-tls")).await??;
    let names = received.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(names.iter().any(|n| n == "over-mutual-tls"), "{names:?}");

    // Trusting another CA: the export fails and the collector receives nothing more.
    let forged = OtlpTls {
        ca_pem: Some(TestCa::read(&impostor.ca_pem())),
        ..tls.clone()
    };
    let e = endpoint.clone();
    let _ = tokio::task::spawn_blocking(move || export_one(&e, &forged, "to-an-impostor")).await?;
    // Without the client certificate: refused in the handshake.
    let anonymous = OtlpTls {
        client: None,
        ..tls.clone()
    };
    let e = endpoint.clone();
    let _ = tokio::task::spawn_blocking(move || export_one(&e, &anonymous, "anonymous")).await?;
    let names = received.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        !names
            .iter()
            .any(|n| n == "to-an-impostor" || n == "anonymous"),
        "{names:?}"
    );
    assert!(collector.refused() >= 1);
    // A certificate setting with a plain endpoint is refused, not ignored.
    assert!(
        pa_kit::trace::otlp_provider_with_tls("tls-probe", &format!("http://{plain}"), &tls)
            .is_err()
    );
    server.abort();
    Ok(())
}
