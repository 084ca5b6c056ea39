//! Row-level security in svc-runs: chats, runs and messages are invisible to the application
//! role without `pa.tenant_id`, limited to that tenant with it; run ids stay global, so another
//! tenant's id is refused without revealing anything about its run.

use pa_proto::v1::run_service_client::RunServiceClient;
use pa_proto::v1::{CreateChatRequest, CreateRunRequest, GetRunRequest};
use sqlx::Connection;
use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test]
async fn runs_tables_fail_closed_and_run_ids_do_not_leak_across_tenants() -> R {
    let mesh = Mesh::builder().start().await?;
    let mut runs = RunServiceClient::connect(mesh.runs_url.clone()).await?;
    let acme = Mesh::identity("acme", "alice");
    let globex = Mesh::identity("globex", "gina");
    let mut chats = Vec::new();
    for identity in [&acme, &globex] {
        let chat = runs
            .create_chat(mesh.auth.request(identity, CreateChatRequest::default()))
            .await?
            .into_inner();
        chats.push(chat.id);
    }
    let run_id = "0193b4b2-rls-shared-id";
    let started = runs
        .create_run(mesh.auth.request(
            &acme,
            CreateRunRequest {
                chat_id: chats[0].clone(),
                message: "hello".into(),
                run_id: run_id.into(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    assert!(!started.existing);

    // The same id from another tenant: refused as a conflict, and nothing of acme's run shows.
    let clash = runs
        .create_run(mesh.auth.request(
            &globex,
            CreateRunRequest {
                chat_id: chats[1].clone(),
                message: "mine now".into(),
                run_id: run_id.into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a run id of another tenant is refused");
    assert_eq!(clash.code(), tonic::Code::AlreadyExists, "{clash:?}");
    assert!(!clash.message().contains("hello"));
    let hidden = runs
        .get_run(mesh.auth.request(
            &globex,
            GetRunRequest {
                run_id: run_id.into(),
            },
        ))
        .await
        .expect_err("acme's run is not globex's");
    assert_eq!(hidden.code(), tonic::Code::NotFound);
    // The retry by the owner is still idempotent.
    let again = runs
        .create_run(mesh.auth.request(
            &acme,
            CreateRunRequest {
                chat_id: chats[0].clone(),
                message: "hello".into(),
                run_id: run_id.into(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    assert!(again.existing);

    let app_url = mesh
        .database_url
        .replacen("postgres://pa@", "postgres://pa_app@", 1);
    assert_ne!(
        app_url, mesh.database_url,
        "the test expects the dev stack's URL"
    );
    let mut app = sqlx::PgConnection::connect(&app_url).await?;
    let mut owner = sqlx::PgConnection::connect(&mesh.database_url).await?;
    for table in ["runs.chats", "runs.runs", "runs.messages"] {
        let sql = format!("SELECT count(*) FROM {table}");
        let count = || sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.clone()));
        let all = count().fetch_one(&mut owner).await?;
        assert!(all >= 1, "{table} has rows");
        assert_eq!(
            count().fetch_one(&mut app).await?,
            0,
            "{table} without a tenant"
        );
        let mut tx = app.begin().await?;
        sqlx::query("SELECT set_config('pa.tenant_id', 'globex', true)")
            .execute(&mut *tx)
            .await?;
        let globex_rows = count().fetch_one(&mut *tx).await?;
        tx.rollback().await?;
        let mut tx = app.begin().await?;
        sqlx::query("SELECT set_config('pa.tenant_id', 'acme', true)")
            .execute(&mut *tx)
            .await?;
        let acme_rows = count().fetch_one(&mut *tx).await?;
        tx.rollback().await?;
        assert_eq!(
            acme_rows + globex_rows,
            all,
            "{table}: each row belongs to one tenant"
        );
        assert!(acme_rows >= 1, "{table}: acme sees its own");
    }
    // The gateway's API keys: invisible without a setting; the presented key's public id admits
    // that one row (how a key is verified before its tenant is known), and no other.
    for name in ["one", "two"] {
        let (status, _) = mesh
            .post_json("/v1/me/api-keys", &serde_json::json!({ "name": name }))
            .await?;
        assert_eq!(status, 201);
    }
    let keys = || sqlx::query_scalar::<_, i64>("SELECT count(*) FROM gateway.api_keys");
    assert_eq!(keys().fetch_one(&mut owner).await?, 2);
    assert_eq!(
        keys().fetch_one(&mut app).await?,
        0,
        "api_keys without a setting"
    );
    let some_id: String = sqlx::query_scalar("SELECT id FROM gateway.api_keys LIMIT 1")
        .fetch_one(&mut owner)
        .await?;
    let mut tx = app.begin().await?;
    sqlx::query("SELECT set_config('pa.api_key_id', $1, true)")
        .bind(&some_id)
        .execute(&mut *tx)
        .await?;
    assert_eq!(
        keys().fetch_one(&mut *tx).await?,
        1,
        "only the presented key"
    );
    tx.rollback().await?;

    // WITH CHECK: the app role cannot plant a chat in another tenant.
    let mut tx = app.begin().await?;
    sqlx::query("SELECT set_config('pa.tenant_id', 'acme', true)")
        .execute(&mut *tx)
        .await?;
    let planted = sqlx::query(
        "INSERT INTO runs.chats (tenant_id, id, user_id, title) VALUES ('globex', 'x', 'gina', 'planted')",
    )
    .execute(&mut *tx)
    .await;
    assert!(planted.is_err(), "WITH CHECK refuses another tenant's row");
    tx.rollback().await?;
    mesh.stop().await
}
