//! Regenerates helm/personal-agent/values.schema.json and docs/src/configuration.md from the
//! configuration catalogue (tests-static/src/lib.rs).

fn main() -> std::io::Result<()> {
    let root = tests_static::workspace_root();
    for (path, content) in tests_static::generated() {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, content)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
