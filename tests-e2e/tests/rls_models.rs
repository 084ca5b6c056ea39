//! Row-level security in svc-models: users' keys and usage rows are invisible to the
//! application role without `pa.tenant_id` and limited to that tenant with it; catalog tables
//! show the platform rows to everyone but a tenant's policy overrides to that tenant alone, and
//! no tenant transaction can write a platform row or another tenant's.

use std::time::Duration;

use pa_proto::v1::key_service_client::KeyServiceClient;
use pa_proto::v1::model_admin_service_client::ModelAdminServiceClient;
use pa_proto::v1::run_service_client::RunServiceClient;
use pa_proto::v1::{
    ClassificationPolicy, CreateChatRequest, CreateRunRequest, DataClassification, Identity,
    ListPoliciesRequest, ListUserKeysRequest, ProviderInfo, PutUserKeyRequest,
    UpsertProviderRequest,
};
use sqlx::Connection;
use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn admin(tenant: &str, user: &str) -> Identity {
    let mut identity = Mesh::identity(tenant, user);
    identity.roles.push("admin".into());
    identity
}

/// The tags a tenant's policy requires for confidential data, as svc-models reports them.
async fn confidential_required(
    mesh: &Mesh,
    admin_client: &mut ModelAdminServiceClient<tonic::transport::Channel>,
    who: &Identity,
) -> Result<Vec<String>, tonic::Status> {
    let policies = admin_client
        .list_policies(mesh.auth.request(who, ListPoliciesRequest {}))
        .await?
        .into_inner()
        .policies;
    Ok(policies
        .into_iter()
        .find(|p| p.classification == DataClassification::Confidential as i32)
        .map(|p| p.required_tags)
        .unwrap_or_default())
}

#[tokio::test]
async fn models_tables_fail_closed_and_tenant_policies_stay_with_their_tenant() -> R {
    let mesh = Mesh::builder().start().await?;
    let mut admin_client = ModelAdminServiceClient::connect(mesh.models_url.clone()).await?;
    let mut keys = KeyServiceClient::connect(mesh.models_url.clone()).await?;
    let (acme_admin, globex_admin) = (admin("acme", "root"), admin("globex", "boss"));

    // A platform provider (written in the platform's transaction by a platform administrator),
    // usable by both tenants.
    let mut operator = Mesh::identity("operators", "pat");
    operator.roles.push("platform-admin".into());
    admin_client
        .upsert_provider(mesh.auth.request(
            &operator,
            UpsertProviderRequest {
                provider: Some(ProviderInfo {
                    id: "rlsai".into(),
                    kind: "openai_compatible".into(),
                    base_url: "http://127.0.0.1:9/v1".into(),
                    tags: vec!["eu-hosted".into()],
                    enabled: true,
                    display_name: "RLS AI".into(),
                    ..Default::default()
                }),
                platform_api_key: "sk-platform-0000000000".into(),
            },
        ))
        .await?;

    // Each tenant overrides the confidential policy its own way; a third sees the platform's.
    for (who, tag) in [(&acme_admin, "local"), (&globex_admin, "eu-hosted")] {
        admin_client
            .set_policy(mesh.auth.request(
                who,
                ClassificationPolicy {
                    classification: DataClassification::Confidential as i32,
                    required_tags: vec![tag.into()],
                    forbidden_tags: vec![],
                    ..Default::default()
                },
            ))
            .await?;
    }
    assert_eq!(
        confidential_required(&mesh, &mut admin_client, &acme_admin).await?,
        ["local"]
    );
    assert_eq!(
        confidential_required(&mesh, &mut admin_client, &globex_admin).await?,
        ["eu-hosted"]
    );
    assert_eq!(
        confidential_required(&mesh, &mut admin_client, &admin("initech", "peter")).await?,
        ["zero-retention"],
        "a tenant without an override sees the platform policy"
    );

    // Users' keys, one per tenant, each seen only by its owner.
    let (alice, gina) = (
        Mesh::identity("acme", "alice"),
        Mesh::identity("globex", "gina"),
    );
    for who in [&alice, &gina] {
        keys.put_user_key(mesh.auth.request(
            who,
            PutUserKeyRequest {
                provider: "rlsai".into(),
                api_key: format!("sk-{}-1234567890", who.user_id),
            },
        ))
        .await?;
        let listed = keys
            .list_user_keys(mesh.auth.request(who, ListUserKeysRequest {}))
            .await?
            .into_inner()
            .keys;
        assert_eq!(listed.len(), 1, "{} sees exactly its own key", who.user_id);
    }

    // A usage row for each tenant: a run on the offline model.
    let mut runs = RunServiceClient::connect(mesh.runs_url.clone()).await?;
    for who in [&alice, &gina] {
        let chat = runs
            .create_chat(mesh.auth.request(who, CreateChatRequest::default()))
            .await?
            .into_inner();
        runs.create_run(mesh.auth.request(
            who,
            CreateRunRequest {
                chat_id: chat.id,
                message: "count me".into(),
                ..Default::default()
            },
        ))
        .await?;
    }

    let app_url = mesh
        .database_url
        .replacen("postgres://pa@", "postgres://pa_app@", 1);
    assert_ne!(
        app_url, mesh.database_url,
        "the test expects the dev stack's URL"
    );
    let mut app = sqlx::PgConnection::connect(&app_url).await?;
    let mut owner = sqlx::PgConnection::connect(&mesh.database_url).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let tenants: i64 =
            sqlx::query_scalar("SELECT count(DISTINCT tenant_id) FROM models.usage_records")
                .fetch_one(&mut owner)
                .await?;
        if tenants == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "both runs record usage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    async fn count_as(
        app: &mut sqlx::PgConnection,
        tenant: Option<&str>,
        sql: &str,
    ) -> Result<i64, sqlx::Error> {
        let mut tx = app.begin().await?;
        if let Some(tenant) = tenant {
            sqlx::query("SELECT set_config('pa.tenant_id', $1, true)")
                .bind(tenant)
                .execute(&mut *tx)
                .await?;
        }
        let n = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&mut *tx)
            .await?;
        tx.rollback().await?;
        Ok(n)
    }

    // Tenant data: nothing without a tenant, each tenant its own, together all of it.
    for table in ["models.user_keys", "models.usage_records"] {
        let sql = format!("SELECT count(*) FROM {table}");
        let all: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_one(&mut owner)
            .await?;
        assert_eq!(
            count_as(&mut app, None, &sql).await?,
            0,
            "{table} without a tenant"
        );
        let acme = count_as(&mut app, Some("acme"), &sql).await?;
        let globex = count_as(&mut app, Some("globex"), &sql).await?;
        assert!(acme >= 1 && globex >= 1, "{table}: {acme} / {globex}");
        assert_eq!(
            acme + globex,
            all,
            "{table}: each row belongs to one tenant"
        );
    }

    // Catalog: platform rows for everyone, overrides for their tenant only.
    let policies = "SELECT count(*) FROM models.policies";
    let platform_policies = count_as(&mut app, None, policies).await?;
    assert_eq!(platform_policies, 4, "the four platform defaults");
    assert_eq!(
        count_as(&mut app, Some("acme"), policies).await?,
        5,
        "platform + acme's override, not globex's"
    );
    let providers = "SELECT count(*) FROM models.providers WHERE id = 'rlsai'";
    assert_eq!(count_as(&mut app, None, providers).await?, 1);
    assert_eq!(count_as(&mut app, Some("globex"), providers).await?, 1);

    // WITH CHECK and USING on writes: a tenant transaction writes neither another tenant's
    // rows nor the platform's.
    let mut tx = app.begin().await?;
    sqlx::query("SELECT set_config('pa.tenant_id', 'acme', true)")
        .execute(&mut *tx)
        .await?;
    let planted =
        sqlx::query("INSERT INTO models.policies (tenant_id, classification) VALUES ('globex', 1)")
            .execute(&mut *tx)
            .await;
    assert!(planted.is_err(), "WITH CHECK refuses another tenant's row");
    tx.rollback().await?;
    let mut tx = app.begin().await?;
    sqlx::query("SELECT set_config('pa.tenant_id', 'acme', true)")
        .execute(&mut *tx)
        .await?;
    let hijacked = sqlx::query(
        "UPDATE models.providers SET base_url = 'http://evil.example/v1' WHERE id = 'rlsai'",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    assert_eq!(hijacked, 0, "a tenant cannot touch a platform row");
    let deleted = sqlx::query("DELETE FROM models.policies WHERE tenant_id = '_platform'")
        .execute(&mut *tx)
        .await?
        .rows_affected();
    assert_eq!(deleted, 0, "nor delete the platform's policies");
    tx.rollback().await?;

    // The sweep: every table of every service carries tenant_id and forces row-level security.
    let tables: Vec<(String, bool, bool, bool)> = sqlx::query_as(
        "SELECT n.nspname || '.' || c.relname, c.relrowsecurity, c.relforcerowsecurity, \
           EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' \
                   AND NOT a.attisdropped) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND c.relname <> '_sqlx_migrations' \
           AND n.nspname IN ('gateway', 'runs', 'models', 'tools', 'memory') ORDER BY 1",
    )
    .fetch_all(&mut owner)
    .await?;
    assert!(tables.len() >= 15, "{tables:?}");
    for (table, enabled, forced, tenant_column) in &tables {
        assert!(
            *enabled && *forced && *tenant_column,
            "{table}: rls {enabled}, forced {forced}, tenant_id {tenant_column}"
        );
    }
    mesh.stop().await
}
