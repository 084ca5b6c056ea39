//! Applies every service's migrations (`DATABASE_URL`, the schema owner) and exits. With
//! `PA_DB_ADMIN_USER` (and `PA_DB_ADMIN_PASSWORD`) it first does, as the server's administrator,
//! what an ordinary owner cannot: the `vector` extension and the application role.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pa_kit::service_main("pa-migrate", |_shutdown| async move {
        let url = pa_kit::config::env_or("DATABASE_URL", pa_kit::config::DEFAULT_DATABASE_URL);
        if let Some(provisioning) = pa_ops::Provisioning::from_env() {
            pa_ops::provision(&url, &provisioning).await?;
            tracing::info!(app_role = %provisioning.app_user, "provisioned as the administrator");
        }
        pa_ops::migrate_all(&url).await?;
        Ok(())
    })
    .await
}
