//! `deploy/compose.yaml` run without Docker (issue 20 item 2): every service of the file is
//! started as a process with exactly the environment the file gives it — interpolated from
//! `deploy/.env.example` with its empty secrets filled in, host names mapped to local ports,
//! plus the `ENV` its image sets in `deploy/Dockerfile` — in `depends_on` order, each waited for
//! with its own healthcheck command. The stores are real and the test's own: Postgres with
//! pgvector (passwords required, `deploy/postgres-init.sh` run as the image runs it), Redis,
//! a Temporal dev server and the dev OpenID Provider.
//!
//! What cannot be the same: the binaries are this checkout's debug builds of the same `main`s
//! (`pa-e2e-service <binary>`), not the images; container host names become `127.0.0.1:PORT`.
//! A value that names a compose host and port the file does not serve (a wrong port, a service
//! that does not exist) fails the start, as does a `${VAR:?}` with nothing to fill it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::deployment::{Processes, local_image_path};
use crate::{BoxError, DevIdp, OwnPostgres, OwnRedis, OwnTemporal};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `KEY=value` lines (comments and blanks skipped), as compose reads an env file.
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Compose's interpolation: `${NAME}`, `${NAME:-default}`, `${NAME:?message}` (an error when
/// NAME is unset or empty) and `$$`.
pub fn interpolate(value: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            return Err(format!(
                "{value:?}: only ${{NAME…}} is used in compose.yaml"
            ));
        };
        let end = body
            .find('}')
            .ok_or_else(|| format!("{value:?}: unclosed ${{"))?;
        let expr = &body[..end];
        let set = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
        let text = if let Some((name, message)) = expr.split_once(":?") {
            set(name).ok_or_else(|| format!("{name} is required: {message}"))?
        } else if let Some((name, default)) = expr.split_once(":-") {
            set(name).unwrap_or_else(|| default.to_string())
        } else {
            vars.get(expr).cloned().unwrap_or_default()
        };
        out.push_str(&text);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Rewrites every `host:port` of `hosts` in `value`; a compose service's name followed by a
/// port that is not in `hosts` is an error (a wrong port or an unknown service).
pub fn map_hosts(
    value: &str,
    hosts: &BTreeMap<String, String>,
    service_names: &[String],
) -> Result<String, String> {
    let mut out = value.to_string();
    // Longest first, so `runs:50051` is never cut by a shorter key.
    let mut keys: Vec<&String> = hosts.keys().collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
    for key in keys {
        out = out.replace(key.as_str(), &hosts[key]);
    }
    // What is left that names a service and a port was not served: `name:PORT` at the start,
    // after `//` or after `user:password@`.
    for name in service_names {
        let needle = format!("{name}:");
        for (i, _) in out.match_indices(&needle) {
            let before = out[..i].chars().last();
            let digits: String = out[i + needle.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if matches!(before, None | Some('/') | Some('@')) && !digits.is_empty() {
                return Err(format!(
                    "{value:?} names {name}:{digits}, where no service of compose.yaml listens"
                ));
            }
        }
    }
    Ok(out)
}

type Stage = (Option<String>, Vec<(String, String)>);

/// The `ENV` lines of `target` in a Dockerfile, following `FROM <stage> AS <target>` chains.
pub fn image_env(dockerfile: &str, target: &str) -> BTreeMap<String, String> {
    // stage → (the stage it is built FROM, when one of this file; its ENV lines)
    let mut stages: BTreeMap<String, Stage> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in dockerfile.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("FROM ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let [base, as_, name] = words.as_slice()
                && as_.eq_ignore_ascii_case("as")
            {
                let parent = stages.contains_key(*base).then(|| base.to_string());
                stages.insert(name.to_string(), (parent, Vec::new()));
                current = Some(name.to_string());
            } else {
                current = None;
            }
        } else if let (Some(stage), Some(rest)) = (&current, line.strip_prefix("ENV "))
            && let Some((k, v)) = rest.split_once('=')
            && let Some(entry) = stages.get_mut(stage)
        {
            entry.1.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut chain = Vec::new();
    let mut at = Some(target.to_string());
    while let Some(name) = at {
        let Some((parent, env)) = stages.get(&name) else {
            break;
        };
        chain.push(env.clone());
        at = parent.clone();
    }
    chain.into_iter().rev().flatten().collect()
}

fn env_list(service: &Yaml) -> Vec<(String, String)> {
    match &service["environment"] {
        Yaml::Mapping(map) => map
            .iter()
            .filter_map(|(k, v)| {
                let value = match v {
                    Yaml::String(s) => s.clone(),
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Bool(b) => b.to_string(),
                    _ => return None,
                };
                Some((k.as_str()?.to_string(), value))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The file's services that this checkout builds (`build.args.BIN`), with their binary and
/// image target.
pub(crate) fn built_services(compose: &Yaml) -> Vec<(String, String, String)> {
    let Yaml::Mapping(services) = &compose["services"] else {
        return Vec::new();
    };
    services
        .iter()
        .filter_map(|(name, svc)| {
            let bin = svc["build"]["args"]["BIN"].as_str()?;
            let target = svc["build"]["target"].as_str().unwrap_or("service");
            Some((
                name.as_str()?.to_string(),
                bin.to_string(),
                target.to_string(),
            ))
        })
        .collect()
}

/// Every compose service, started.
pub struct ComposeDeployment {
    pub postgres: OwnPostgres,
    pub redis: OwnRedis,
    pub temporal: OwnTemporal,
    pub idp: DevIdp,
    /// `http://127.0.0.1:PORT` of the gateway's published 8080.
    pub gateway_url: String,
    /// What each service's environment became, by compose service name.
    pub environments: BTreeMap<String, BTreeMap<String, String>>,
    /// The services, by compose service name.
    pub processes: Processes,
}

impl ComposeDeployment {
    pub async fn start(log_dir: &Path) -> Result<ComposeDeployment, BoxError> {
        let processes = Processes::new(log_dir)?;
        let compose: Yaml = serde_norway::from_str(&std::fs::read_to_string(
            repo().join("deploy/compose.yaml"),
        )?)?;
        let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile"))?;
        // deploy/.env as an operator writes it from the example: the empty secrets filled in.
        let mut vars = parse_env_file(&std::fs::read_to_string(
            repo().join("deploy/.env.example"),
        )?);
        let secret = || uuid::Uuid::new_v4().simple().to_string();
        for (key, value) in vars.iter_mut() {
            if value.is_empty() {
                *value = match key.as_str() {
                    "PA_KEK" => {
                        use base64::Engine;
                        let bytes = [
                            uuid::Uuid::new_v4().into_bytes(),
                            uuid::Uuid::new_v4().into_bytes(),
                        ]
                        .concat();
                        base64::engine::general_purpose::STANDARD.encode(bytes)
                    }
                    k if k.contains("PASSWORD") || k.contains("SECRET") => secret(),
                    _ => String::new(),
                };
            }
        }

        let (postgres, redis, temporal, idp) = tokio::try_join!(
            OwnPostgres::start(),
            OwnRedis::start(),
            OwnTemporal::start(),
            DevIdp::start(),
        )?;
        // The Postgres image: the owner from POSTGRES_USER/PASSWORD/DB, then its init script.
        let pg_env: BTreeMap<String, String> = env_list(&compose["services"]["postgres"])
            .into_iter()
            .map(|(k, v)| Ok((k, interpolate(&v, &vars)?)))
            .collect::<Result<_, String>>()?;
        if pg_env.get("POSTGRES_USER").map(String::as_str) != Some("pa")
            || pg_env.get("POSTGRES_DB").map(String::as_str) != Some("personal_agent")
        {
            return Err(format!("compose's postgres is not pa/personal_agent: {pg_env:?}").into());
        }
        let owner_password = pg_env.get("POSTGRES_PASSWORD").cloned().unwrap_or_default();
        let init = Command::new("sh")
            .arg(repo().join("deploy/postgres-init.sh"))
            .envs(&pg_env)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    postgres.bin_dir().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", postgres.port().to_string())
            .stdin(Stdio::null())
            .output()?;
        if !init.status.success() {
            return Err(format!(
                "postgres-init.sh failed: {}",
                String::from_utf8_lossy(&init.stderr)
            )
            .into());
        }
        postgres.require_passwords(&owner_password).await?;

        // Host names: the stores, then every listening port of every built service.
        let idp_addr = idp
            .issuer
            .strip_prefix("http://")
            .unwrap_or(&idp.issuer)
            .trim_end_matches('/')
            .to_string();
        let mut hosts: BTreeMap<String, String> = [
            ("postgres:5432", format!("127.0.0.1:{}", postgres.port())),
            ("redis:6379", format!("127.0.0.1:{}", redis.port())),
            ("temporal:7233", temporal.address()),
            ("dev-idp:8090", idp_addr),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let services = built_services(&compose);
        let names: Vec<String> = match &compose["services"] {
            Yaml::Mapping(m) => m
                .keys()
                .filter_map(|k| k.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        // Inside a container 0.0.0.0:N and 127.0.0.1:N are the service's own port N.
        let mut own_ports: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (name, _, _) in &services {
            for (_, value) in env_list(&compose["services"][name.as_str()]) {
                if let Some(port) = value.strip_prefix("0.0.0.0:") {
                    let local = format!("127.0.0.1:{}", crate::port_below_ephemeral_range()?);
                    hosts.insert(format!("{name}:{port}"), local.clone());
                    let own = own_ports.entry(name.clone()).or_default();
                    own.insert(format!("0.0.0.0:{port}"), local.clone());
                    own.insert(format!("127.0.0.1:{port}"), local);
                }
            }
        }
        let own = |name: &str| {
            let mut map = hosts.clone();
            map.extend(own_ports.get(name).cloned().unwrap_or_default());
            map
        };

        let mut environments = BTreeMap::new();
        for (name, _, target) in &services {
            let mut env = BTreeMap::new();
            for (k, v) in image_env(&dockerfile, target) {
                env.insert(k, local_image_path(&v)?);
            }
            for (k, v) in env_list(&compose["services"][name.as_str()]) {
                let v = interpolate(&v, &vars).map_err(|e| format!("{name}: {e}"))?;
                let v = map_hosts(&v, &own(name), &names).map_err(|e| format!("{name}: {e}"))?;
                env.insert(k, v);
            }
            environments.insert(name.clone(), env);
        }
        let gateway_url = format!(
            "http://{}",
            hosts
                .get("gateway:8080")
                .ok_or("compose's gateway does not listen on 8080")?
        );
        let mut deployment = ComposeDeployment {
            postgres,
            redis,
            temporal,
            idp,
            gateway_url,
            environments,
            processes,
        };
        let order = start_order(&compose, &services)?;
        for name in order {
            let (_, bin, _) = services
                .iter()
                .find(|(n, _, _)| *n == name)
                .ok_or("unknown service")?
                .clone();
            let env = &deployment.environments[&name];
            deployment.processes.spawn(&name, &bin, env)?;
            let svc = &compose["services"][name.as_str()];
            if svc["restart"].as_str() == Some("no") {
                deployment
                    .processes
                    .wait_exit_ok(&name, Duration::from_secs(120))
                    .await?;
            } else {
                let probe = healthcheck(svc, &own(&name), &names)?;
                deployment
                    .processes
                    .wait_healthy(&name, &probe, Duration::from_secs(120))
                    .await?;
            }
        }
        Ok(deployment)
    }
}

/// The service's healthcheck command as a probe (`pa-healthcheck grpc|http …`).
fn healthcheck(
    service: &Yaml,
    hosts: &BTreeMap<String, String>,
    names: &[String],
) -> Result<pa_ops::Probe, BoxError> {
    let test: Vec<String> = service["healthcheck"]["test"]
        .as_sequence()
        .ok_or("no healthcheck")?
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    match test.as_slice() {
        [cmd, bin, args @ ..] if cmd == "CMD" && bin.ends_with("/pa-healthcheck") => {
            let args = args
                .iter()
                .map(|a| map_hosts(a, hosts, names))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(pa_ops::Probe::parse(&args)?)
        }
        other => Err(format!("healthcheck {other:?} is not pa-healthcheck").into()),
    }
}

/// The built services in an order where each comes after those it `depends_on`.
fn start_order(
    compose: &Yaml,
    services: &[(String, String, String)],
) -> Result<Vec<String>, BoxError> {
    let built: Vec<&String> = services.iter().map(|(n, _, _)| n).collect();
    let mut order: Vec<String> = Vec::new();
    while order.len() < built.len() {
        let before = order.len();
        for name in &built {
            if order.contains(name) {
                continue;
            }
            let deps: Vec<String> = match &compose["services"][name.as_str()]["depends_on"] {
                Yaml::Mapping(m) => m
                    .keys()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect(),
                _ => Vec::new(),
            };
            if deps
                .iter()
                .all(|d| !built.contains(&d) || order.contains(d))
            {
                order.push((*name).clone());
            }
        }
        if order.len() == before {
            return Err("depends_on has a cycle".into());
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        parse_env_file("# c\nA=1\nEMPTY=\nB = two\n")
    }

    #[test]
    fn interpolation_follows_compose_and_a_missing_required_variable_is_an_error() {
        let v = vars();
        assert_eq!(interpolate("x${A}y", &v).unwrap(), "x1y");
        assert_eq!(interpolate("${EMPTY:-d}", &v).unwrap(), "d");
        assert_eq!(interpolate("${B:-d}", &v).unwrap(), "two");
        assert_eq!(interpolate("$${A}", &v).unwrap(), "${A}");
        let err = interpolate("${EMPTY:?set EMPTY}", &v).unwrap_err();
        assert!(err.contains("EMPTY is required: set EMPTY"), "{err}");
        assert!(interpolate("${NOPE:?x}", &v).is_err());
    }

    #[test]
    fn host_names_map_to_local_ports_and_a_wrong_port_or_host_is_refused() {
        let hosts: BTreeMap<String, String> = [("models:50052", "127.0.0.1:41000")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let names = vec!["models".to_string(), "runs".to_string()];
        assert_eq!(
            map_hosts("http://models:50052", &hosts, &names).unwrap(),
            "http://127.0.0.1:41000"
        );
        let err = map_hosts("http://models:50053", &hosts, &names).unwrap_err();
        assert!(err.contains("models:50053"), "{err}");
        assert!(map_hosts("http://runs:50051", &hosts, &names).is_err());
        assert!(map_hosts("postgres://pa:pw@models:5432/db", &hosts, &names).is_err());
        assert!(map_hosts("models:1", &hosts, &names).is_err());
        // Not a host: a value that merely contains the word.
        assert_eq!(map_hosts("pa-runs", &hosts, &names).unwrap(), "pa-runs");
    }

    #[test]
    fn image_env_follows_the_stage_chain() {
        let dockerfile = "FROM rust AS builder\nENV X=1\nFROM distroless AS service\nENV PA_LOG_FORMAT=json\nFROM service AS gateway\nENV PA_WEB_DIR=/app/web/dist\n";
        let env = image_env(dockerfile, "gateway");
        assert_eq!(env.get("PA_LOG_FORMAT").map(String::as_str), Some("json"));
        assert_eq!(
            env.get("PA_WEB_DIR").map(String::as_str),
            Some("/app/web/dist")
        );
        assert!(!env.contains_key("X"));
    }
}
