//! Deployment parity, Compose (issue 20 item 2): `deploy/compose.yaml` started as processes with
//! exactly the environment the file gives each service (see `tests_e2e::compose`), then used as
//! its users would (`tests_e2e::deployment::walk_through`): through the dev IdP's tokens, a chat
//! turn, a durable run, an uploaded document recalled, and the maintenance schedules the worker
//! registers, one triggered.

use tests_e2e::compose::ComposeDeployment;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test]
async fn the_compose_file_runs_chat_durable_runs_documents_and_maintenance() -> R {
    let logs = std::env::temp_dir().join(format!(
        "pa-compose-parity-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let mut deployment = ComposeDeployment::start(&logs).await?;
    // Compose's choices reached the processes: OIDC from the IdP, the application role.
    let gateway_env = &deployment.environments["gateway"];
    assert_eq!(gateway_env["PA_AUTH_MODE"], "oidc");
    assert_eq!(gateway_env["PA_DB_APP_USER"], "pa_app");
    tests_e2e::deployment::walk_through(&deployment.gateway_url, &deployment.idp, &|name| {
        deployment.processes.log(name)
    })
    .await?;
    // Started with a soft limit of 1,024 open files (as a login shell or containerd would),
    // every service raised it to its hard limit: 2,000 SSE clients must not meet EMFILE.
    let limits = deployment.processes.open_files_limits()?;
    assert!(limits.len() >= 6, "the services run: {limits:?}");
    for (name, soft, hard) in &limits {
        assert_eq!(soft, hard, "{name}'s open files limit: {limits:?}");
    }
    drop(deployment);
    let _ = std::fs::remove_dir_all(&logs);
    Ok(())
}
