//! The README says what exists (issue 22 item 5): every directory, file, environment variable
//! and port it names is one the repository has. A README that drifts from the code fails here.

use std::collections::BTreeSet;
use std::path::Path;

use tests_static::workspace_root;

/// The repository's source and deploy text (not the docs: they are what is checked).
fn code_text() -> String {
    fn walk(dir: &Path, out: &mut String) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(
                    name.as_str(),
                    "target" | "node_modules" | ".git" | ".dev" | "docs" | "dist"
                ) {
                    walk(&path, out);
                }
            } else if [
                ".rs", ".sh", ".toml", ".yaml", ".yml", ".js", ".mjs", ".ts", ".vue", ".json",
                ".tpl",
            ]
            .iter()
            .any(|ext| name.ends_with(ext))
                || name == "Makefile"
                || name == "Dockerfile"
            {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
                out.push('\n');
            }
        }
    }
    let mut text = String::new();
    walk(&workspace_root(), &mut text);
    text
}

/// The words of `text` that match `keep`, split at anything but `[A-Za-z0-9_./:-]`.
fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "_./:-*<>".contains(c)))
        .filter(|w| !w.is_empty())
        .collect()
}

fn readme() -> String {
    std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md")
}

#[test]
fn every_path_the_readme_names_exists() {
    let root = workspace_root();
    let readme = readme();
    let mut missing = BTreeSet::new();
    let mut checked = 0;
    for piece in readme.split('`').skip(1).step_by(2) {
        let path = piece.trim_end_matches(['.', ',', ':']);
        let relative = path.contains('/')
            && !path.contains(' ')
            && !path.contains("://")
            && !path.contains('*')
            && !path.contains('<')
            && !path.starts_with('/')
            && !path.starts_with(".dev")
            && !path.starts_with("dist/")
            && !path.starts_with("application/")
            && !path.starts_with("text/")
            && !path.starts_with("personal_agent/");
        if relative {
            checked += 1;
            if !root.join(path).exists() {
                missing.insert(path.to_string());
            }
        }
    }
    // Directories named outside backticks (svc-*, libs/*, clients/*).
    for word in words(&readme) {
        let word = word.trim_end_matches(['.', ',', ':', '/']);
        let named_dir = (word.starts_with("svc-") && word.len() > 4 && !word.contains('.'))
            || word.starts_with("libs/")
            || word.starts_with("clients/");
        if named_dir && !word.contains('*') {
            checked += 1;
            if !root.join(word).is_dir() {
                missing.insert(word.to_string());
            }
        }
    }
    assert!(checked > 20, "only {checked} paths found in the README");
    assert!(
        missing.is_empty(),
        "the README names paths the repository does not have: {missing:?}"
    );
}

#[test]
fn every_variable_and_port_the_readme_names_is_in_the_code() {
    let code = code_text();
    let readme = readme();
    let mut missing = BTreeSet::new();
    let mut variables = 0;
    let mut ports = 0;
    for word in words(&readme) {
        if let Some(at) = word.find("PA_") {
            let name: String = word[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let name = name.trim_end_matches('_');
            if name.len() > 3 && !name.ends_with("_*") {
                variables += 1;
                if !code.contains(name) {
                    missing.insert(name.to_string());
                }
            }
        }
        // `127.0.0.1:50051`, `:8080`, `localhost:8090`: a port the code must use somewhere.
        if let Some((_, port)) = word.rsplit_once(':') {
            let port = port.trim_end_matches(['/', '.', ',']);
            let digits = port.split('/').next().unwrap_or_default();
            if (4..=5).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) {
                ports += 1;
                if !code.contains(&format!(":{digits}")) && !code.contains(&format!("= {digits}")) {
                    missing.insert(format!(":{digits}"));
                }
            }
        }
    }
    assert!(variables > 30, "only {variables} variables found");
    assert!(ports > 5, "only {ports} ports found");
    assert!(
        missing.is_empty(),
        "the README names variables or ports no code uses: {missing:?}"
    );
}
