//! Applies every service's migrations (`DATABASE_URL`, the schema owner) and exits. With
//! `PA_DB_ADMIN_USER` (and `PA_DB_ADMIN_PASSWORD`) it first does, as the server's administrator,
//! what an ordinary owner cannot: the `vector` extension and the application role.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pa_ops::migrate_main_from_env().await
}
