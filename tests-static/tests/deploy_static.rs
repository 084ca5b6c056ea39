//! Static checks of what `helm` and `docker` would consume (neither runs here): the chart's
//! templates parse, every service has probes, resource limits, a PodDisruptionBudget and (where
//! it scales) an HPA, NetworkPolicies leave only the gateway reachable, the generated schema
//! validates the default values and refuses bad ones; the Dockerfiles are multi-stage and
//! non-root; Compose runs every service with a healthcheck; the docs' links resolve; and the
//! generated files and the configuration catalogue agree with the code.
//!
//! Templates are parsed after removing every `{{ … }}` action: the chart is written so that
//! what remains is valid YAML (templated scalars stand alone or inside quotes, control lines
//! stand on their own lines, and no key appears in two branches of an `if`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use serde_norway::Value as Yaml;
use tests_static::{COMMON, Helm, SERVICES, workspace_root};

fn root() -> PathBuf {
    workspace_root()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Removes every `{{ … }}` action of a Go template.
fn strip_template(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        match rest[start..].find("}}") {
            Some(end) => rest = &rest[start + end + 2..],
            None => panic!("unclosed template action in {rest:.80}"),
        }
    }
    out.push_str(rest);
    out
}

/// Every YAML document of a file (empty ones dropped).
fn documents(text: &str, what: &str) -> Vec<Yaml> {
    let mut docs = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = <Yaml as serde::Deserialize>::deserialize(document)
            .unwrap_or_else(|e| panic!("{what} does not parse as YAML: {e}"));
        if !value.is_null() {
            docs.push(value);
        }
    }
    docs
}

/// Every Kubernetes object of the chart's templates, with the file it comes from.
fn chart_objects() -> Vec<(String, Yaml)> {
    let dir = root().join("helm/personal-agent/templates");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut objects = Vec::new();
    for file in files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for doc in documents(&strip_template(&text), &name) {
            assert!(
                doc["kind"].is_string() && doc["apiVersion"].is_string(),
                "{name}: a document without kind/apiVersion"
            );
            objects.push((name.clone(), doc));
        }
    }
    objects
}

fn of_kind<'a>(objects: &'a [(String, Yaml)], kind: &str) -> Vec<&'a (String, Yaml)> {
    objects.iter().filter(|(_, o)| o["kind"] == kind).collect()
}

fn str_of(value: &Yaml) -> &str {
    value.as_str().unwrap_or_default()
}

fn to_json(value: &Yaml) -> Json {
    serde_json::to_value(value).unwrap_or(Json::Null)
}

#[test]
fn generated_files_are_up_to_date() {
    for (path, expected) in tests_static::generated() {
        let actual = std::fs::read_to_string(root().join(path)).unwrap_or_default();
        assert!(
            actual == expected,
            "{path} is stale: run `cargo run -p tests-static --bin gen-config`"
        );
    }
}

/// `"NAME"` literals that look like our environment variables.
fn env_literals(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                stack.push(entry.path());
            }
        } else if path.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for piece in text.split('"').skip(1).step_by(2) {
                let is_env = [
                    "PA_",
                    "DATABASE_",
                    "REDIS_",
                    "TEMPORAL_",
                    "OTEL_",
                    "RUST_",
                    "RAYON_",
                ]
                .iter()
                .any(|p| piece.starts_with(p))
                    && piece.len() > 4
                    && piece
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if is_env {
                    found.insert(piece.to_string());
                }
            }
        }
    }
    found
}

/// All the Rust source under `dir`, concatenated.
fn source_text(dir: &Path) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                stack.push(entry.path());
            }
        } else if path.extension().is_some_and(|x| x == "rs") {
            text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    text
}

#[test]
fn the_catalogue_lists_exactly_the_variables_the_code_reads() {
    let fix =
        "add it to tests-static/src/lib.rs and run `cargo run -p tests-static --bin gen-config`";
    let common: BTreeSet<&str> = COMMON.iter().map(|c| c.var.name).collect();
    let kit = env_literals(&root().join("libs/pa-kit/src"));
    for name in &kit {
        assert!(
            common.contains(name.as_str()),
            "pa-kit reads {name}, not in COMMON: {fix}"
        );
    }
    for c in COMMON.iter().filter(|c| !c.read_by_library) {
        assert!(
            kit.contains(c.var.name),
            "{} is listed in COMMON but pa-kit no longer reads it",
            c.var.name
        );
    }
    let mut dirs = BTreeSet::new();
    for service in SERVICES {
        dirs.insert(service.dir);
        let mut read = env_literals(&root().join(service.dir).join("src"));
        for file in service.also_reads {
            read.extend(env_literals(&root().join(file)));
        }
        let own: BTreeSet<&str> = service.vars.iter().map(|v| v.name).collect();
        for name in &read {
            assert!(
                own.contains(name.as_str()) || common.contains(name.as_str()),
                "{} reads {name}, not in its catalogue list: {fix}",
                service.dir
            );
        }
        for name in &own {
            assert!(
                read.contains(*name),
                "{name} is listed for {} but its source no longer reads it",
                service.dir
            );
        }
    }
    // Which services read pa-kit's variables follows from what they call.
    for service in SERVICES {
        let src = source_text(&root().join(service.dir).join("src"));
        let common = src.contains("CommonConfig") || src.contains("ServiceConfig");
        // CommonConfig reads DATABASE_URL everywhere, but only a service with tables uses it.
        let db = src.contains("connect_schema");
        let rls = src.contains("connect_schema_rls");
        let timeout = src.contains("ServiceConfig") || src.contains("\"PA_REQUEST_TIMEOUT_MS\"");
        for (names, expected) in [
            (&["DATABASE_URL"][..], common && db),
            (&["REDIS_URL", "PA_INTERNAL_SECRET"][..], common),
            (&["PA_DB_APP_USER", "PA_DB_APP_PASSWORD"][..], rls),
            (&["PA_REQUEST_TIMEOUT_MS"][..], timeout),
        ] {
            for name in names {
                let listed = COMMON
                    .iter()
                    .any(|c| c.var.name == *name && c.used_by.contains(&service.name));
                assert_eq!(
                    listed,
                    expected,
                    "COMMON {name}: used_by should {}include {}",
                    if expected { "" } else { "not " },
                    service.name
                );
            }
        }
    }
    // Every service crate of the workspace has a list.
    for entry in std::fs::read_dir(root()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("svc-") && entry.path().join("Cargo.toml").exists() {
            assert!(dirs.contains(name.as_str()), "{name} has no catalogue list");
        }
    }
}

#[test]
fn pa_migrate_knows_every_services_schema() {
    // (service, schema, rls) from each service's lib.rs: `connect_schema[_rls](&…, "schema"`.
    let mut found = BTreeSet::new();
    for service in SERVICES {
        let lib = std::fs::read_to_string(root().join(service.dir).join("src/lib.rs"))
            .unwrap_or_default();
        for (marker, rls) in [("connect_schema_rls(", true), ("connect_schema(", false)] {
            for after in lib.split(marker).skip(1) {
                let schema = after.split('"').nth(1).unwrap_or_default();
                found.insert((service.dir.to_string(), schema.to_string(), rls));
            }
        }
        let has_migrations = root().join(service.dir).join("migrations").is_dir();
        let listed = pa_ops::SCHEMAS.iter().any(|s| s.service == service.dir);
        assert_eq!(
            has_migrations, listed,
            "{}: migrations folder vs deploy/pa-ops SCHEMAS",
            service.dir
        );
    }
    let listed: BTreeSet<(String, String, bool)> = pa_ops::SCHEMAS
        .iter()
        .map(|s| (s.service.to_string(), s.schema.to_string(), s.rls))
        .collect();
    assert_eq!(
        found, listed,
        "deploy/pa-ops/src/lib.rs SCHEMAS differs from the services' connect_schema calls"
    );
}

#[test]
fn every_service_has_a_deployment_with_probes_limits_and_its_wiring() {
    let objects = chart_objects();
    let values = documents(&read("helm/personal-agent/values.yaml"), "values.yaml")
        .pop()
        .unwrap_or(Yaml::Null);
    let deployments = of_kind(&objects, "Deployment");
    assert_eq!(
        deployments.len(),
        SERVICES.len(),
        "one Deployment per service"
    );
    for service in SERVICES {
        let (file, deployment) = deployments
            .iter()
            .find(|(_, d)| str_of(&d["metadata"]["name"]).ends_with(&format!("-{}", service.name)))
            .copied()
            .unwrap_or_else(|| panic!("no Deployment for {}", service.name));
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(
            container["name"],
            format!("svc-{}", service.name).as_str(),
            "{file}"
        );
        for probe in ["livenessProbe", "readinessProbe"] {
            let p = &container[probe];
            assert!(
                p["grpc"]["port"].is_u64() || p["httpGet"]["path"].is_string(),
                "{file}: {probe} must ask the health endpoint"
            );
        }
        assert!(container.get("resources").is_some(), "{file}: no resources");
        let limits = &values["services"][service.name]["resources"]["limits"];
        assert!(
            limits["cpu"].as_str().is_some() && limits["memory"].as_str().is_some(),
            "values.yaml: services.{}.resources.limits needs cpu and memory",
            service.name
        );
        assert!(container.get("securityContext").is_some() && pod.get("securityContext").is_some());
        // Secrets by reference and the chart's wiring are spelled out in the template.
        let env: BTreeMap<&str, &Yaml> = container["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|e| (str_of(&e["name"]), e))
            .collect();
        for var in service.all_vars() {
            match var.helm {
                Helm::Value => {}
                Helm::Secret { optional } => {
                    let entry = env
                        .get(var.name)
                        .unwrap_or_else(|| panic!("{file}: secret {} not wired", var.name));
                    let reference = &entry["valueFrom"]["secretKeyRef"];
                    assert_eq!(reference["key"], var.name, "{file}");
                    assert_eq!(
                        reference["optional"].as_bool().unwrap_or(false),
                        optional,
                        "{file}: {}",
                        var.name
                    );
                }
                Helm::Chart(_) => assert!(
                    env.contains_key(var.name),
                    "{file}: the chart does not set {}",
                    var.name
                ),
                Helm::Image => assert!(
                    read("deploy/Dockerfile").contains(&format!("ENV {}=", var.name)),
                    "deploy/Dockerfile does not set {}",
                    var.name
                ),
                Helm::TestsOnly => assert!(
                    !env.contains_key(var.name),
                    "{file}: {} is for tests only",
                    var.name
                ),
            }
        }
        let text = read(&format!("helm/personal-agent/templates/{file}"));
        assert!(
            text.contains(&format!(".Values.services.{}.resources", service.name))
                && text.contains(&format!(
                    "\"pa.env\" (dict \"root\" $ \"component\" \"{}\")",
                    service.name
                )),
            "{file}: resources and values env come from services.{}",
            service.name
        );

        let services = of_kind(&objects, "Service");
        assert!(
            services.iter().any(|(f, _)| f == file),
            "{file}: no Service"
        );
        let pdbs = of_kind(&objects, "PodDisruptionBudget");
        assert!(
            pdbs.iter().any(|(f, _)| f == file),
            "{file}: no PodDisruptionBudget"
        );
        let scales = matches!(service.name, "gateway" | "runs" | "worker");
        let hpas = of_kind(&objects, "HorizontalPodAutoscaler");
        assert_eq!(hpas.iter().any(|(f, _)| f == file), scales, "{file}: HPA");
    }
}

#[test]
fn network_policies_leave_only_the_gateway_reachable_from_outside() {
    let objects = chart_objects();
    let policies = of_kind(&objects, "NetworkPolicy");
    // A default deny over every pod of the release.
    assert!(
        policies
            .iter()
            .any(|(_, p)| p["spec"]["podSelector"]["matchLabels"]
                .get("app.kubernetes.io/instance")
                .is_some()
                && p["spec"]["podSelector"]["matchLabels"]
                    .get("app.kubernetes.io/component")
                    .is_none()
                && p["spec"]["ingress"]
                    .as_sequence()
                    .is_some_and(Vec::is_empty)),
        "no default-deny NetworkPolicy"
    );
    let mut open_to_outside = BTreeSet::new();
    for (file, policy) in &policies {
        let spec = &policy["spec"];
        for rule in spec["ingress"].as_sequence().into_iter().flatten() {
            let peers = rule["from"].as_sequence();
            let from_outside = match peers {
                None => true,
                Some(peers) => peers
                    .iter()
                    .any(|peer| peer.get("ipBlock").is_some() || peer.get("podSelector").is_none()),
            };
            if from_outside {
                let component =
                    str_of(&spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"]);
                assert!(
                    str_of(&policy["metadata"]["name"]).ends_with("-gateway"),
                    "{file}: {} admits traffic from outside the mesh ({component})",
                    str_of(&policy["metadata"]["name"])
                );
                open_to_outside.insert("gateway");
            }
        }
    }
    assert_eq!(open_to_outside, BTreeSet::from(["gateway"]));
    // The mesh policy covers every other service's port.
    let mesh_ports: BTreeSet<u64> = policies
        .iter()
        .filter(|(_, p)| !str_of(&p["metadata"]["name"]).ends_with("-gateway"))
        .flat_map(|(_, p)| {
            p["spec"]["ingress"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|rule| rule["ports"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|port| port["port"].as_u64())
        .collect();
    assert_eq!(
        mesh_ports,
        BTreeSet::from([6379, 50051, 50052, 50053, 50054, 50055]),
        "the mesh's ports and the bundled Redis's, each open to the release alone"
    );
    // The bundled Redis has a password (from the Secret), and every service connects with it.
    let redis_policy = policies
        .iter()
        .find(|(_, p)| str_of(&p["metadata"]["name"]).ends_with("-redis"))
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("no NetworkPolicy for the bundled Redis"));
    assert_eq!(
        redis_policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "redis"
    );
    let values = documents(&read("helm/personal-agent/values.yaml"), "values.yaml")
        .pop()
        .unwrap_or(Yaml::Null);
    assert_eq!(values["redis"]["auth"]["enabled"].as_bool(), Some(true));
    assert_eq!(
        values["redis"]["auth"]["existingSecretPasswordKey"],
        "REDIS_PASSWORD"
    );
    for (file, deployment) in of_kind(&objects, "Deployment") {
        let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        let position = |name: &str| env.iter().position(|e| e["name"] == name);
        let (Some(password), Some(url)) = (position("REDIS_PASSWORD"), position("REDIS_URL"))
        else {
            panic!("{file}: REDIS_PASSWORD and REDIS_URL must both be set");
        };
        assert!(
            password < url,
            "{file}: $(REDIS_PASSWORD) expands only if defined before"
        );
        assert_eq!(
            env[password]["valueFrom"]["secretKeyRef"]["key"], "REDIS_PASSWORD",
            "{file}"
        );
    }
    assert!(
        read("helm/personal-agent/templates/_helpers.tpl").contains("redis://:$(REDIS_PASSWORD)@"),
        "the bundled Redis's URL carries the password"
    );
}

fn schema_validator() -> jsonschema::Validator {
    let schema: Json =
        serde_json::from_str(&read("helm/personal-agent/values.schema.json")).unwrap_or(Json::Null);
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("invalid schema: {e}"))
}

fn default_values() -> Json {
    let values = documents(&read("helm/personal-agent/values.yaml"), "values.yaml")
        .pop()
        .unwrap_or(Yaml::Null);
    to_json(&values)
}

#[test]
fn the_generated_schema_validates_the_default_values_and_refuses_bad_ones() {
    let validator = schema_validator();
    let values = default_values();
    let errors: Vec<String> = validator
        .iter_errors(&values)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "values.yaml: {errors:?}");

    let refused = |mutate: &dyn Fn(&mut Json), why: &str| {
        let mut bad = values.clone();
        mutate(&mut bad);
        assert!(!validator.is_valid(&bad), "accepted: {why}");
    };
    refused(
        &|v| v["services"]["runs"]["env"]["PA_RUN_MAX_TOOLCALLS"] = "3".into(),
        "a misspelt variable",
    );
    refused(
        &|v| v["services"]["runs"]["env"]["PA_RUN_MAX_TOOL_CALLS"] = "many".into(),
        "a non-numeric count",
    );
    refused(
        &|v| v["services"]["gateway"]["env"]["PA_AUTH_MODE"] = "none".into(),
        "an unknown auth mode",
    );
    refused(
        &|v| v["services"]["models"]["env"]["PA_KEK"] = "c2VjcmV0".into(),
        "a secret in values",
    );
    refused(
        &|v| v["services"]["tools"]["env"]["PA_TOOLS_DNS_OVERRIDES"] = "a=10.0.0.1".into(),
        "a variable for tests only",
    );
    refused(
        &|v| v["services"]["worker"]["env"]["PA_REQUEST_TIMEOUT_MS"] = 1000.into(),
        "a variable the worker does not read",
    );
    refused(
        &|v| {
            if let Some(r) = v["services"]["memory"]["resources"].as_object_mut() {
                r.remove("limits");
            }
        },
        "no resource limits",
    );
    refused(
        &|v| {
            if let Some(s) = v["services"].as_object_mut() {
                s.remove("worker");
            }
        },
        "a service left out",
    );
    // A per-service override of a common variable is accepted.
    let mut ok = values.clone();
    ok["services"]["runs"]["env"]["RUST_LOG"] = "debug".into();
    ok["services"]["memory"]["env"]["PA_REQUEST_TIMEOUT_MS"] = 1000.into();
    assert!(validator.is_valid(&ok));
}

#[test]
fn chart_dependencies_are_optional_and_the_realm_is_the_same_file() {
    let chart = documents(&read("helm/personal-agent/Chart.yaml"), "Chart.yaml")
        .pop()
        .unwrap_or(Yaml::Null);
    let values = default_values();
    let deps: BTreeMap<&str, &str> = chart["dependencies"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|d| (str_of(&d["name"]), str_of(&d["condition"])))
        .collect();
    for name in ["postgresql", "redis", "temporal", "keycloak"] {
        let condition = deps
            .get(name)
            .unwrap_or_else(|| panic!("no dependency {name}"));
        assert_eq!(*condition, format!("{name}.enabled"));
        assert!(
            values[name]["enabled"].is_boolean(),
            "values.yaml: {name}.enabled"
        );
    }
    assert_eq!(
        read("helm/personal-agent/files/realm-personal-agent.json"),
        read("helm/keycloak/realm-personal-agent.json"),
        "the chart's realm copy differs from helm/keycloak/realm-personal-agent.json"
    );
    let jobs = of_kind(&chart_objects(), "Job")
        .into_iter()
        .map(|(_, j)| j.clone())
        .collect::<Vec<_>>();
    assert_eq!(jobs.len(), 1, "one migration Job");
    let hook = str_of(&jobs[0]["metadata"]["annotations"]["helm.sh/hook"]);
    assert!(hook.contains("pre-upgrade"), "{hook}");
    assert_eq!(
        jobs[0]["spec"]["template"]["spec"]["containers"][0]["name"],
        "pa-migrate"
    );
}

/// The realm shipped for production holds no users and no known secret (issue 20 item 1); the
/// one with the dev IdP's users and the public secret is named demo and the chart never uses it.
#[test]
fn the_production_realm_ships_no_users_and_no_secrets() {
    let realm: serde_json::Value =
        serde_json::from_str(&read("helm/keycloak/realm-personal-agent.json")).expect("realm");
    let users = realm["users"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(users, 0, "the production realm has users");
    let clients = realm["clients"].as_array().expect("clients");
    assert!(!clients.is_empty());
    for client in clients {
        if let Some(secret) = client["secret"].as_str() {
            assert!(
                secret.starts_with("${") && secret.ends_with('}'),
                "client {} ships a secret: {secret}",
                client["clientId"]
            );
        }
    }
    let text = read("helm/keycloak/realm-personal-agent.json");
    for known in [
        "pa-cli-secret",
        "\"credentials\"",
        "\"alice\"",
        "\"password\"",
    ] {
        assert!(
            !text.contains(known),
            "the production realm contains {known}"
        );
    }
    // The demo realm is the one with users, and nothing deployable points at it.
    let demo: serde_json::Value =
        serde_json::from_str(&read("helm/keycloak/realm-personal-agent-demo.json")).expect("demo");
    assert!(demo["users"].as_array().is_some_and(|u| !u.is_empty()));
    for deployable in [
        "helm/personal-agent/values.yaml",
        "helm/personal-agent/templates/configmaps.yaml",
        "deploy/compose.yaml",
    ] {
        assert!(
            !read(deployable).contains("realm-personal-agent-demo"),
            "{deployable} uses the demo realm"
        );
    }
    // The secret the realm expects is one the chart gives Keycloak.
    assert!(read("helm/personal-agent/values.yaml").contains("PA_CLI_CLIENT_SECRET"));
}

/// (stage name, its lines) of a Dockerfile.
fn stages(text: &str) -> Vec<(String, Vec<String>)> {
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("FROM ") {
            let words: Vec<&str> = line.split_whitespace().collect();
            let name = match words.iter().position(|w| w.eq_ignore_ascii_case("AS")) {
                Some(i) => words.get(i + 1).copied().unwrap_or_default(),
                None => "",
            };
            stages.push((name.to_string(), Vec::new()));
        } else if let Some((_, lines)) = stages.last_mut() {
            lines.push(line.to_string());
        }
    }
    stages
}

#[test]
fn dockerfiles_are_multi_stage_and_run_as_a_non_root_user() {
    // (file, the stages images are built from)
    for (file, targets) in [
        ("deploy/Dockerfile", vec!["service", "gateway", "models"]),
        ("deploy/dev-idp.Dockerfile", vec!["runtime"]),
    ] {
        let stages = stages(&read(file));
        assert!(stages.len() >= 2, "{file} is not multi-stage");
        for target in targets {
            let (_, lines) = stages
                .iter()
                .find(|(name, _)| name == target)
                .unwrap_or_else(|| panic!("{file}: no stage {target}"));
            let user = lines
                .iter()
                .rev()
                .find(|l| l.to_ascii_uppercase().starts_with("USER "))
                .unwrap_or_else(|| panic!("{file}: stage {target} has no USER"));
            let who = user[5..].trim();
            assert!(
                !["root", "0", "0:0", "root:root"].contains(&who),
                "{file}: stage {target} runs as root"
            );
            assert!(
                lines.iter().any(|l| l.starts_with("COPY --from=")),
                "{file}: stage {target} does not copy from a build stage"
            );
        }
    }
    // The builder copies the binaries from where cargo puts them: .cargo/config.toml's
    // target-dir is CI's, so the image's build must set its own.
    let builder = stages(&read("deploy/Dockerfile"))
        .into_iter()
        .find(|(name, _)| name == "builder")
        .expect("a builder stage");
    let target_dir = builder
        .1
        .iter()
        .find_map(|l| l.strip_prefix("ENV CARGO_TARGET_DIR="))
        .expect("the builder sets CARGO_TARGET_DIR (.cargo/config.toml sets another target-dir)")
        .trim()
        .to_string();
    let copies: Vec<&String> = builder
        .1
        .iter()
        .filter(|l| l.contains("release/"))
        .collect();
    assert!(!copies.is_empty(), "the builder copies no release binary");
    for line in copies {
        let relative = target_dir.strip_prefix("/src/").unwrap_or(&target_dir);
        assert!(
            line.contains(&format!("{relative}/release/")) || line.contains(&target_dir),
            "the builder copies from outside CARGO_TARGET_DIR={target_dir}: {line}"
        );
    }
    // Every service binary and pa-migrate are built from deploy/Dockerfile by Compose.
    let compose = read("deploy/compose.yaml");
    for service in SERVICES {
        assert!(
            compose.contains(&format!("BIN: {}", service.dir)),
            "{}",
            service.dir
        );
    }
    assert!(compose.contains("BIN: pa-migrate"));
    assert!(read(".dockerignore").lines().any(|l| l.trim() == "target"));
}

#[test]
fn compose_runs_every_service_with_a_healthcheck() {
    let compose = documents(&read("deploy/compose.yaml"), "compose.yaml")
        .pop()
        .unwrap_or(Yaml::Null);
    let services = compose["services"]
        .as_mapping()
        .cloned()
        .unwrap_or_default();
    let names: BTreeSet<&str> = services.keys().map(str_of).collect();
    for required in ["postgres", "redis", "temporal", "dev-idp", "migrate"] {
        assert!(names.contains(required), "compose.yaml: no {required}");
    }
    let env_example: BTreeSet<String> = read("deploy/.env.example")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .collect();
    let mut published = BTreeSet::new();
    for (name, service) in &services {
        let name = str_of(name);
        if service.get("ports").is_some() {
            published.insert(name);
        }
        if name != "migrate" {
            assert!(
                service["healthcheck"]["test"].is_sequence(),
                "compose.yaml: {name} has no healthcheck"
            );
        }
        // Every ${VAR} the file interpolates is in .env.example.
        let text = serde_norway::to_string(service).unwrap_or_default();
        for piece in text.split("${").skip(1) {
            let var: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                env_example.contains(&var),
                "deploy/.env.example lacks {var}"
            );
        }
    }
    assert_eq!(published, BTreeSet::from(["gateway", "dev-idp"]));
    for service in SERVICES {
        let svc = services
            .get(service.name)
            .unwrap_or_else(|| panic!("compose.yaml: no {}", service.name));
        let known: BTreeSet<&str> = service.all_vars().iter().map(|v| v.name).collect();
        for var in svc["environment"]
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(k, _)| str_of(k))
        {
            assert!(
                known.contains(var),
                "compose.yaml: {} sets unknown {var}",
                service.name
            );
        }
        // The listen address must not be loopback inside a container.
        let addr = service
            .vars
            .iter()
            .find(|v| v.name.ends_with("_ADDR") && v.helm != Helm::Value)
            .map(|v| v.name)
            .unwrap_or_default();
        assert!(
            str_of(&svc["environment"][addr]).starts_with("0.0.0.0:"),
            "compose.yaml: {} {addr}",
            service.name
        );
        if service.name != "worker" {
            assert!(
                svc["depends_on"].get("migrate").is_some(),
                "compose.yaml: {} starts before the migrations",
                service.name
            );
        }
    }
}

#[test]
fn the_book_links_resolve() {
    let summary = read("docs/src/SUMMARY.md");
    let mut links = 0;
    for piece in summary.split("](").skip(1) {
        let target = piece.split(')').next().unwrap_or_default();
        if target.is_empty() || target.starts_with("http") {
            continue;
        }
        links += 1;
        let path = root().join("docs/src").join(target);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("SUMMARY.md links {target}: {e}"));
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        // A page may be an mdBook include of a file outside src/.
        if let Some(include) = text.trim().strip_prefix("{{#include ") {
            let included = include.trim_end_matches("}}").trim();
            assert!(
                base.join(included).exists(),
                "{target} includes {included}, which does not exist"
            );
            continue;
        }
        assert!(text.starts_with("# "), "{target} has no title");
        // Relative links inside the pages resolve too (anchors and URLs aside).
        for inner in text.split("](").skip(1) {
            let link = inner.split(')').next().unwrap_or_default();
            let file = link.split('#').next().unwrap_or_default();
            if file.is_empty() || file.contains("://") || file.starts_with("mailto:") {
                continue;
            }
            assert!(
                base.join(file).exists(),
                "{target} links {link}, which does not exist"
            );
        }
    }
    assert!(links >= 7, "SUMMARY.md lists {links} pages");
    assert!(read("docs/book.toml").contains("src = \"src\""));
    // The ADRs: one folder (docs/src/adr), each `NNNN-yyyy-mm-dd-title.md` with that date on
    // its Date line, and each in the book.
    let mut adrs = 0;
    for adr in std::fs::read_dir(root().join("docs/src/adr"))
        .into_iter()
        .flatten()
        .flatten()
    {
        adrs += 1;
        let name = adr.file_name().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.splitn(5, '-').collect();
        let dated = parts.len() == 5
            && parts[0].len() == 4
            && parts[0].chars().all(|c| c.is_ascii_digit())
            && parts[1].len() == 4
            && parts[2].len() == 2
            && parts[3].len() == 2
            && name.ends_with(".md");
        assert!(dated, "ADR {name} is not named NNNN-yyyy-mm-dd-title.md");
        let date = parts[1..4].join("-");
        let text = std::fs::read_to_string(adr.path()).expect("an ADR");
        assert!(
            text.lines()
                .take(5)
                .any(|l| l.starts_with("Date:") && l.contains(&date)),
            "ADR {name} does not say `Date: {date}` at its top"
        );
        assert!(
            summary.contains(&format!("](adr/{name})")),
            "ADR docs/src/adr/{name} is not in the book's SUMMARY.md"
        );
    }
    assert!(adrs >= 10, "only {adrs} ADRs found");
    let elsewhere = std::fs::read_dir(root().join("docs/adr"))
        .into_iter()
        .flatten()
        .count();
    assert_eq!(elsewhere, 0, "ADRs live in one folder, docs/src/adr");
}

/// The Temporal dynamic config compose mounts (deploy/temporal-dynamicconfig.yaml) is the one
/// the chart's bundled Temporal, `make stack`'s dev server and the e2e harness's own servers run
/// with (eager activities, ADR 0224's one partition): four places, one set of settings.
#[test]
fn every_temporal_server_gets_the_same_dynamic_config() {
    let compose = documents(
        &read("deploy/temporal-dynamicconfig.yaml"),
        "temporal-dynamicconfig.yaml",
    )
    .pop()
    .unwrap_or(Yaml::Null);
    let settings: Vec<(String, String)> = compose
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(key, entries)| {
            let value = serde_norway::to_string(&entries[0]["value"]).unwrap_or_default();
            (str_of(key).to_string(), value.trim().to_string())
        })
        .collect();
    assert!(
        settings.len() >= 3,
        "temporal-dynamicconfig.yaml: {settings:?}"
    );
    let values = documents(&read("helm/personal-agent/values.yaml"), "values.yaml")
        .pop()
        .unwrap_or(Yaml::Null);
    assert_eq!(
        to_json(&values["temporal"]["server"]["dynamicConfig"]),
        to_json(&compose),
        "values.yaml temporal.server.dynamicConfig differs from deploy/temporal-dynamicconfig.yaml"
    );
    for file in ["scripts/stack.sh", "tests-e2e/src/stores.rs"] {
        // Flags of `temporal server start-dev`, spelled out or as string arguments.
        let text = read(file).replace(['"', ',', ' ', '\n', '\\'], "");
        for (key, value) in &settings {
            assert!(
                text.contains(&format!("--dynamic-config-value{key}={value}")),
                "{file} does not start Temporal with {key}={value}"
            );
        }
    }
}
