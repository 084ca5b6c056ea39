//! The shape of the tree, read from each crate's Cargo.toml (ADR 0190): services meet only
//! through `proto/`, so no service crate depends on another service crate, no library depends
//! on a service, and svc-worker is Temporal's only client.

use std::collections::BTreeMap;

use tests_static::workspace_root;

use tests_static::workspace_members as members;

/// A crate's name and every crate it names in a dependency section (normal, dev, build or
/// target-specific), by section.
fn dependencies(member: &str) -> (String, BTreeMap<String, Vec<String>>) {
    let path = workspace_root().join(member).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut name = String::new();
    let mut section = String::new();
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = header.trim_matches(['[', ']']).to_string();
            // `[dependencies.foo]` names foo as a table of its own.
            for kind in ["dependencies.", "dev-dependencies.", "build-dependencies."] {
                if let Some(at) = section.find(kind) {
                    let dep = section[at + kind.len()..].to_string();
                    let base = section[..at + kind.len() - 1].to_string();
                    deps.entry(base).or_default().push(dep);
                }
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if section == "package" && key == "name" {
            name = value.trim().trim_matches('"').to_string();
        }
        if section.ends_with("dependencies") {
            let dep = key.split('.').next().unwrap_or(key).trim_matches('"');
            deps.entry(section.clone())
                .or_default()
                .push(dep.to_string());
        }
    }
    assert!(!name.is_empty(), "{member}/Cargo.toml has no package name");
    (name, deps)
}

fn is_service(name: &str) -> bool {
    name.starts_with("svc-")
}

#[test]
fn the_parser_sees_what_a_manifest_names() {
    let (name, deps) = dependencies("svc-worker");
    assert_eq!(name, "svc-worker");
    let normal = &deps["dependencies"];
    assert!(normal.iter().any(|d| d == "pa-kit"), "{deps:?}");
    assert!(normal.iter().any(|d| d == "temporalio-client"), "{deps:?}");
    let (_, e2e) = dependencies("tests-e2e");
    assert!(
        e2e["dependencies"].iter().any(|d| d == "svc-runs"),
        "{e2e:?}"
    );
}

#[test]
fn no_service_crate_depends_on_another_service_or_a_library_on_a_service() {
    let mut edges = Vec::new();
    let all = members();
    assert!(all.iter().filter(|m| is_service(m)).count() >= 6, "{all:?}");
    for member in &all {
        let (name, deps) = dependencies(member);
        let is_library = member.starts_with("libs/") || member == "proto";
        if !is_service(&name) && !is_library {
            // Test harnesses, benchmarks and clients may start or embed services.
            continue;
        }
        for (section, names) in &deps {
            for dep in names.iter().filter(|d| is_service(d) && **d != name) {
                edges.push(format!("{name} -> {dep} ({section})"));
            }
        }
    }
    assert!(
        edges.is_empty(),
        "services meet only through proto/ (ADR 0190); these crate edges break that: {edges:?}"
    );
}

/// Every service binary, the bench that runs the mesh in one process and the test binaries that
/// run services as processes of their own (the chaos suite's) allocate with the platform's
/// allocator (ADR 0232): a binary that loses the line falls back to glibc's malloc and about a
/// tenth of its CPU per run, with nothing else telling.
#[test]
fn every_service_binary_and_the_bench_use_the_platforms_allocator() {
    let root = workspace_root();
    let mut mains: Vec<String> = members()
        .into_iter()
        .filter(|m| is_service(m))
        .map(|m| format!("{m}/src/main.rs"))
        .collect();
    assert!(mains.len() >= 6, "{mains:?}");
    mains.push("pa-bench/src/main.rs".into());
    mains.push("tests-e2e/src/bin/pa-e2e-service.rs".into());
    mains.push("tests-e2e/src/bin/pa-e2e-worker.rs".into());
    let declaration =
        "#[global_allocator]\nstatic ALLOCATOR: pa_kit::Allocator = pa_kit::ALLOCATOR;";
    let missing: Vec<&String> = mains
        .iter()
        .filter(|main| {
            !std::fs::read_to_string(root.join(main))
                .unwrap_or_default()
                .contains(declaration)
        })
        .collect();
    assert!(missing.is_empty(), "no platform allocator in: {missing:?}");
}

#[test]
fn svc_worker_is_temporals_only_client() {
    let mut clients = Vec::new();
    for member in members() {
        if member.starts_with("tests-") || member == "pa-bench" {
            // Test harnesses and benchmarks read workflow histories to check what a run did;
            // they are not part of the product.
            continue;
        }
        let (name, deps) = dependencies(&member);
        let uses_temporal = deps
            .values()
            .flatten()
            .any(|d| d.starts_with("temporalio-") || d == "svc-worker");
        if uses_temporal && name != "svc-worker" {
            clients.push(name);
        }
    }
    assert!(
        clients.is_empty(),
        "only svc-worker may reach Temporal (ADR 0190): {clients:?}"
    );
}

/// Every `.rs` file of a workspace member, with its text.
fn rust_sources() -> Vec<(std::path::PathBuf, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if name != "target" && name != "node_modules" {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs")
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                out.push((path, text));
            }
        }
    }
    let root = workspace_root();
    let mut out = Vec::new();
    for member in members() {
        walk(&root.join(member), &mut out);
    }
    out
}

/// The Redis keys a line spells out itself: a string literal starting with `pa:`.
fn redis_key_literals(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .filter(|line| line.contains("\"pa:"))
        .map(|line| line.trim().to_string())
        .collect()
}

#[test]
fn the_key_check_sees_a_key_spelled_out() {
    assert_eq!(
        redis_key_literals("let k = format!(\"pa:run:{id}:events\");\n// \"pa:x\" in a comment"),
        vec!["let k = format!(\"pa:run:{id}:events\");".to_string()]
    );
}

/// Redis keys and payloads have one home, `libs/pa-bus` (ADR 0200): a service that spelled a
/// key itself could drift from the one the other side reads.
#[test]
fn redis_keys_are_named_only_in_pa_bus() {
    let bus = workspace_root().join("libs/pa-bus");
    // This file spells keys in the check's own test.
    let this_check = workspace_root().join("tests-static/tests/structure.rs");
    let mut found = Vec::new();
    for (path, text) in rust_sources() {
        if path.starts_with(&bus) || path == this_check {
            continue;
        }
        for line in redis_key_literals(&text) {
            found.push(format!("{}: {line}", path.display()));
        }
    }
    assert!(
        found.is_empty(),
        "name Redis keys through pa_bus::keys (ADR 0200):\n{}",
        found.join("\n")
    );
}
