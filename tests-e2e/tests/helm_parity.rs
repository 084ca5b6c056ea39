//! Deployment parity, Helm (issue 20 item 2, ADR 0210): `helm/personal-agent` rendered by the
//! real `helm template` and started as processes with exactly the environment each Deployment's
//! and the migration Job's container would receive (see `tests_e2e::helm`), with the bundled
//! PostgreSQL and Redis set up as their charts would; then used as its users would
//! (`tests_e2e::deployment::walk_through`).

use serde_norway::Value as Yaml;
use tests_e2e::helm::{HelmDeployment, objects};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// What an operator writes beyond the defaults: their IdP, and a model catalog (a ConfigMap
/// mounted into svc-models).
const OPERATOR_VALUES: &str = r#"
services:
  gateway:
    env:
      PA_OIDC_ISSUER: "{issuer}"
  models:
    catalog: |
      [[tags]]
      name = "on-prem"
      description = "runs in our own data centre"
"#;

fn logs(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("pa-{name}-{}", uuid::Uuid::new_v4().simple()))
}

#[tokio::test]
async fn the_chart_runs_chat_durable_runs_documents_and_maintenance() -> R {
    let dir = logs("helm-parity");
    let deployment = HelmDeployment::start(OPERATOR_VALUES, &dir).await?;

    // The values reached the processes: OIDC, the application role, the admin step of the Job.
    let env = &deployment.environments;
    assert_eq!(env["gateway"]["PA_AUTH_MODE"], "oidc");
    assert_eq!(env["gateway"]["PA_OIDC_ISSUER"], deployment.idp.issuer);
    for service in ["gateway", "runs", "models", "tools", "memory"] {
        assert_eq!(env[service]["PA_DB_APP_USER"], "pa_app", "{service}");
        assert!(env[service].contains_key("PA_DB_APP_PASSWORD"), "{service}");
    }
    assert_eq!(env["migrate"]["PA_DB_ADMIN_USER"], "postgres");
    // The catalog ConfigMap is where PA_MODELS_CONFIG says.
    let catalog = std::fs::read_to_string(&env["models"]["PA_MODELS_CONFIG"])?;
    assert!(catalog.contains("on-prem"), "{catalog}");

    // Every internal URL names a headless Service, so clients see every replica (ADR 0191).
    let services = objects(&deployment.manifests, "Service");
    for deployment_object in objects(&deployment.manifests, "Deployment") {
        let containers = &deployment_object["spec"]["template"]["spec"]["containers"];
        for entry in containers[0]["env"].as_sequence().into_iter().flatten() {
            let name = entry["name"].as_str().unwrap_or_default();
            if !(name.starts_with("PA_") && name.ends_with("_URL")) {
                continue;
            }
            let url = entry["value"].as_str().unwrap_or_default();
            let host = url
                .trim_start_matches("http://")
                .split(':')
                .next()
                .unwrap_or_default();
            let service = services
                .iter()
                .find(|s| s["metadata"]["name"] == host)
                .ok_or_else(|| format!("{name}={url}: no such Service"))?;
            assert_eq!(
                service["spec"]["clusterIP"],
                Yaml::from("None"),
                "{name}={url} is not headless"
            );
        }
    }

    tests_e2e::deployment::walk_through(&deployment.gateway_url, &deployment.idp, &|name| {
        deployment.processes.log(name)
    })
    .await?;
    drop(deployment);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A wrong port in the values (an `extraEnv` entry: the schema refuses internal URLs in `env`)
/// fails the start, naming the value, before any service runs.
#[tokio::test]
async fn a_value_naming_a_port_no_service_serves_fails_the_start() -> R {
    let values = format!(
        "{OPERATOR_VALUES}\n  runs:\n    extraEnv:\n      - name: PA_MODELS_URL\n        value: http://pa-personal-agent-models-headless:50099\n"
    );
    let dir = logs("helm-wrong-port");
    let err = match HelmDeployment::start(&values, &dir).await {
        Ok(_) => return Err("the release started with a wrong port".into()),
        Err(err) => err.to_string(),
    };
    assert!(
        err.contains("PA_MODELS_URL") && err.contains("50099"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Without the administrator's step of the migration Job (`migrations.admin.user: ""`) on the
/// bundled Postgres, nobody creates the application role: the services cannot log in, and the
/// start fails rather than hangs.
#[tokio::test]
async fn without_the_jobs_admin_step_the_application_role_is_missing_and_the_start_fails() -> R {
    let values = format!("{OPERATOR_VALUES}\nmigrations:\n  admin:\n    user: \"\"\n");
    let dir = logs("helm-no-admin");
    let err = match HelmDeployment::start(&values, &dir).await {
        Ok(_) => return Err("the release started without the application role".into()),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("pa_app"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
