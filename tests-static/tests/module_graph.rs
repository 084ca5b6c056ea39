//! Inside each crate, the files form a DAG (issue 22 item 3, ADR 0192): a module that another
//! module imports never imports it back, directly or around a circle, so shared state and
//! types live in leaf modules that handlers import, never the reverse.
//!
//! The graph is read from the source: a node is a top-level module (`src/x.rs` or `src/x/`),
//! an edge is a `crate::x` path in its code (comments, strings and `#[cfg(test)]` modules
//! left out). `lib.rs`/`main.rs` only declare and re-export, so they are not nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tests_static::workspace_root;

/// Circles that are allowed, as (crate directory, the circle's modules sorted), each with why.
/// Keep this empty; a new entry needs an ADR.
const ALLOWED: &[(&str, &[&str], &str)] = &[];

/// `text` with comments removed and the contents of string and char literals blanked (their
/// quotes kept), so paths and braces in them do not count.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\''
            && (next == Some('\\') && chars.get(i + 3) == Some(&'\'')
                || chars.get(i + 2) == Some(&'\''))
        {
            // A char literal ('{', '\n'); a lifetime ('a) has no closing quote.
            let end = if next == Some('\\') { i + 3 } else { i + 2 };
            out.push_str("' '");
            i = end + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `code` without its `#[cfg(test)]` modules (test code may reach anywhere).
fn without_test_modules(code: &str) -> String {
    let mut out = code.to_string();
    while let Some(at) = out.find("#[cfg(test)]") {
        let rest = &out[at + "#[cfg(test)]".len()..];
        let trimmed = rest.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub(crate) mod ");
        let Some(open) = rest.find(['{', ';']).filter(|_| is_mod) else {
            // An attribute on something else: drop just the attribute.
            out.replace_range(at..at + "#[cfg(test)]".len(), "");
            continue;
        };
        let open = at + "#[cfg(test)]".len() + open;
        if out.as_bytes()[open] == b';' {
            out.replace_range(at..=open, "");
            continue;
        }
        let mut depth = 0usize;
        let mut end = out.len();
        for (k, b) in out.as_bytes()[open..].iter().enumerate() {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.replace_range(at..end, "");
    }
    out
}

/// The top-level modules a file's code names through `crate::`.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find("crate::") {
        let at = from + pos;
        from = at + "crate::".len();
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::C, d::{E, F}}`: the first name of each top-level item.
            for item in split_top_level(group) {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "self" {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// The items of a brace group's body (up to its closing brace), split at top-level commas.
fn split_top_level(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (k, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..k]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A crate's module graph: top-level module → the modules it names.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        let mut parts = relative.components();
        let first = parts
            .next()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .unwrap_or_default();
        if first == "bin" || (relative.components().count() == 1 && first == "main.rs") {
            continue;
        }
        let node = first.trim_end_matches(".rs").to_string();
        if node == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let code = without_test_modules(&code_only(&text));
        let entry = graph.entry(node.clone()).or_default();
        for target in crate_references(&code) {
            if target != node {
                entry.insert(target);
            }
        }
    }
    // Names that are not modules (items of lib.rs re-exported at the root) are not nodes.
    let nodes: BTreeSet<String> = graph.keys().cloned().collect();
    for targets in graph.values_mut() {
        targets.retain(|t| nodes.contains(t));
    }
    graph
}

/// The graph's strongly connected components of more than one module, each sorted.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's algorithm, iterative enough for crates of a few dozen files.
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

/// The workspace's crate directories that have a `src/`.
fn crate_dirs() -> Vec<PathBuf> {
    let root = workspace_root();
    tests_static::workspace_members()
        .into_iter()
        .map(|m| root.join(m))
        .filter(|dir| dir.join("src").is_dir())
        .collect()
}

#[test]
fn each_crates_modules_form_a_dag() {
    let root = workspace_root();
    let mut problems = Vec::new();
    let mut crates = 0;
    for dir in crate_dirs() {
        crates += 1;
        let name = dir
            .strip_prefix(&root)
            .unwrap_or(&dir)
            .to_string_lossy()
            .to_string();
        for circle in circles(&module_graph(&dir.join("src"))) {
            let allowed = ALLOWED.iter().any(|(krate, modules, _)| {
                *krate == name && modules.iter().map(|m| m.to_string()).eq(circle.clone())
            });
            if !allowed {
                let graph = module_graph(&dir.join("src"));
                let edges: Vec<String> = circle
                    .iter()
                    .flat_map(|m| {
                        graph[m]
                            .iter()
                            .filter(|t| circle.contains(t))
                            .map(move |t| format!("{m} → {t}"))
                    })
                    .collect();
                problems.push(format!(
                    "{name}: an import circle through {}: {}",
                    circle.join(", "),
                    edges.join("; ")
                ));
            }
        }
    }
    assert!(crates > 10, "only {crates} crates found");
    assert!(
        problems.is_empty(),
        "move what both sides need into a module of its own (state, types) that both import:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_reader_finds_crate_paths_and_skips_comments_strings_and_tests() {
    let code = r##"
        use crate::{state::AppState, auth::{Claims, verify}, self};
        use crate::api::Json; // crate::commented::Out
        /* crate::blocked::Out */
        let s = "crate::quoted::Out";
        let r = r#"crate::raw::Out"#;
        let c = '{';
        fn f<'a>(x: &'a str) -> crate::errors::Error { todo!() }
        macro_rules! m { () => { $crate::macro_path::X } }
        #[cfg(test)]
        mod tests {
            use crate::test_only::Helper;
            fn g() { let _ = '}'; }
        }
    "##;
    let refs = crate_references(&without_test_modules(&code_only(code)));
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        vec!["api", "auth", "errors", "state"]
    );
}

#[test]
fn a_circle_between_two_files_is_found() {
    let dir = std::env::temp_dir().join(format!("pa-module-graph-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("handlers")).expect("dir");
    std::fs::write(
        src.join("lib.rs"),
        "pub mod state; pub mod handlers; pub mod leaf;",
    )
    .unwrap();
    std::fs::write(src.join("state.rs"), "use crate::handlers::Router;").unwrap();
    std::fs::write(
        src.join("handlers").join("mod.rs"),
        "pub mod chat; use crate::leaf::X;",
    )
    .unwrap();
    std::fs::write(
        src.join("handlers").join("chat.rs"),
        "use crate::state::AppState; use super::X;",
    )
    .unwrap();
    std::fs::write(src.join("leaf.rs"), "pub struct X;").unwrap();
    let found = circles(&module_graph(&src));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        found,
        vec![vec!["handlers".to_string(), "state".to_string()]]
    );
}
