//! Row-level security backs the application's tenant checks (svc-memory and svc-tools so far): the
//! application role sees only the rows of the tenant set for its transaction, none without one,
//! and cannot write rows of another tenant.

use pa_proto::v1::memory_service_client::MemoryServiceClient;
use pa_proto::v1::{MemoryItem, MemoryScope, SearchMemoryRequest, UpsertMemoryRequest};
use sqlx::Connection;
use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test]
async fn the_app_role_sees_only_the_tenant_it_sets_and_nothing_without_one() -> R {
    let mesh = Mesh::builder().start().await?;
    let mut memory = store_world_memories(
        &mesh,
        &[
            ("acme", "acme likes tea"),
            ("acme", "acme likes jazz"),
            ("globex", "globex likes coffee"),
        ],
    )
    .await?;
    // Through the service: each tenant finds only its own.
    let found = memory
        .search(mesh.auth.request(
            &Mesh::identity("globex", "u1"),
            SearchMemoryRequest {
                query: "likes".into(),
                limit: 10,
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    assert_eq!(found.results.len(), 1);

    // Straight SQL as the application role.
    let app_url = mesh
        .database_url
        .replacen("postgres://pa@", "postgres://pa_app@", 1);
    assert_ne!(
        app_url, mesh.database_url,
        "the test expects the dev stack's URL"
    );
    let mut app = sqlx::PgConnection::connect(&app_url).await?;
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    assert_eq!(
        count("SELECT count(*) FROM memory.items")
            .fetch_one(&mut app)
            .await?,
        0,
        "no tenant set: no rows"
    );
    let mut tx = app.begin().await?;
    sqlx::query("SELECT set_config('pa.tenant_id', 'acme', true)")
        .execute(&mut *tx)
        .await?;
    assert_eq!(
        count("SELECT count(*) FROM memory.items")
            .fetch_one(&mut *tx)
            .await?,
        2
    );
    let foreign = sqlx::query(
        "INSERT INTO memory.items (tenant_id, id, user_id, scope, content) VALUES ('globex', 'x', 'u1', 1, 'planted')",
    )
    .execute(&mut *tx)
    .await;
    assert!(
        foreign.is_err(),
        "WITH CHECK refuses rows of another tenant"
    );
    tx.rollback().await?;
    // The owner (migrations) still sees everything: RLS is what limits the app role.
    let mut owner = sqlx::PgConnection::connect(&mesh.database_url).await?;
    assert_eq!(
        count("SELECT count(*) FROM memory.items")
            .fetch_one(&mut owner)
            .await?,
        3
    );

    // svc-tools too: a run's toolset snapshot is invisible without the tenant.
    let chat = mesh.create_chat("rls").await?;
    let run = mesh.start_run(&chat, "hi").await?;
    mesh.read_events(&run, None, None).await?;
    let snapshots = "SELECT count(*) FROM tools.toolset_snapshots";
    // The tools themselves are stored apart (ADR 0217), under the same rule.
    let contents = "SELECT count(*) FROM tools.toolset_contents";
    assert_eq!(count(snapshots).fetch_one(&mut owner).await?, 1);
    assert_eq!(count(contents).fetch_one(&mut owner).await?, 1);
    assert_eq!(count(snapshots).fetch_one(&mut app).await?, 0);
    assert_eq!(count(contents).fetch_one(&mut app).await?, 0);
    let mut tx = app.begin().await?;
    sqlx::query("SELECT set_config('pa.tenant_id', 'other', true)")
        .execute(&mut *tx)
        .await?;
    assert_eq!(count(contents).fetch_one(&mut *tx).await?, 0);
    tx.rollback().await?;
    let mut tx = app.begin().await?;
    sqlx::query("SELECT set_config('pa.tenant_id', 'dev', true)")
        .execute(&mut *tx)
        .await?;
    assert_eq!(count(snapshots).fetch_one(&mut *tx).await?, 1);
    assert_eq!(count(contents).fetch_one(&mut *tx).await?, 1);
    tx.rollback().await?;
    mesh.stop().await
}

/// A read-only tenant transaction (`pa_kit::db::tenant_read`, ADR 0230) sees its tenant's rows,
/// cannot write, and is dropped rather than committed: the next transaction on the same
/// pooled connection finds neither its tenant nor it still open.
#[tokio::test]
async fn a_tenant_read_sees_its_tenant_cannot_write_and_ends_when_dropped() -> R {
    let mesh = Mesh::builder().start().await?;
    store_world_memories(
        &mesh,
        &[
            ("acme", "acme likes tea"),
            ("globex", "globex likes coffee"),
        ],
    )
    .await?;
    let app_url = mesh
        .database_url
        .replacen("postgres://pa@", "postgres://pa_app@", 1);
    // One connection, so every transaction below runs on the one the previous one left.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&app_url)
        .await?;
    let tenant_rows = "SELECT count(*) FROM memory.items";
    for (tenant, rows) in [("acme", 1), ("globex", 1), ("nobody", 0)] {
        let mut tx = pa_kit::db::tenant_read(&pool, tenant).await?;
        let seen: i64 = sqlx::query_scalar(tenant_rows).fetch_one(&mut *tx).await?;
        assert_eq!(seen, rows, "{tenant}");
        let planted = sqlx::query(
            "INSERT INTO memory.items (tenant_id, id, user_id, scope, content) \
             VALUES ($1, 'planted', 'u1', 1, 'planted')",
        )
        .bind(tenant)
        .execute(&mut *tx)
        .await;
        let refused = planted
            .expect_err("a write in a read-only transaction")
            .to_string();
        assert!(refused.contains("read-only"), "{refused}");
        drop(tx);
        // The same connection: no transaction open, no tenant set, nothing visible.
        let mut conn = pool.acquire().await?;
        let open: String = sqlx::query_scalar("SELECT current_setting('transaction_read_only')")
            .fetch_one(&mut *conn)
            .await?;
        assert_eq!(open, "off", "the read-only transaction ended");
        let setting: Option<String> =
            sqlx::query_scalar("SELECT NULLIF(current_setting('pa.tenant_id', true), '')")
                .fetch_one(&mut *conn)
                .await?;
        assert_eq!(setting, None, "the tenant did not outlive its transaction");
        let seen: i64 = sqlx::query_scalar(tenant_rows)
            .fetch_one(&mut *conn)
            .await?;
        assert_eq!(seen, 0);
    }
    // Nothing was planted.
    let mut owner = sqlx::PgConnection::connect(&mesh.database_url).await?;
    let planted: i64 = sqlx::query_scalar("SELECT count(*) FROM memory.items WHERE id = 'planted'")
        .fetch_one(&mut owner)
        .await?;
    assert_eq!(planted, 0);
    mesh.stop().await
}

/// Stores world memories of user `u1` of each tenant through svc-memory; returns its client.
async fn store_world_memories(
    mesh: &Mesh,
    memories: &[(&str, &str)],
) -> Result<MemoryServiceClient<tonic::transport::Channel>, Box<dyn std::error::Error + Send + Sync>>
{
    let mut memory = MemoryServiceClient::connect(mesh.memory_url.clone()).await?;
    for (tenant, text) in memories {
        let item = MemoryItem {
            scope: MemoryScope::World as i32,
            content: text.to_string(),
            ..Default::default()
        };
        memory
            .upsert(mesh.auth.request(
                &Mesh::identity(tenant, "u1"),
                UpsertMemoryRequest {
                    item: Some(item),
                    ..Default::default()
                },
            ))
            .await?;
    }
    Ok(memory)
}
