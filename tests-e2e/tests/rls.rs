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
    let mut memory = MemoryServiceClient::connect(mesh.memory_url.clone()).await?;
    for (tenant, text) in [
        ("acme", "acme likes tea"),
        ("acme", "acme likes jazz"),
        ("globex", "globex likes coffee"),
    ] {
        let identity = Mesh::identity(tenant, "u1");
        let item = MemoryItem {
            scope: MemoryScope::World as i32,
            content: text.into(),
            ..Default::default()
        };
        memory
            .upsert(mesh.auth.request(
                &identity,
                UpsertMemoryRequest {
                    item: Some(item),
                    ..Default::default()
                },
            ))
            .await?;
    }
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
