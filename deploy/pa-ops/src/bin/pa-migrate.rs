//! Applies every service's migrations (`DATABASE_URL`, the schema owner) and exits.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pa_kit::service_main("pa-migrate", |_shutdown| async move {
        let url = pa_kit::config::env_or("DATABASE_URL", pa_kit::config::DEFAULT_DATABASE_URL);
        pa_ops::migrate_all(&url).await?;
        Ok(())
    })
    .await
}
