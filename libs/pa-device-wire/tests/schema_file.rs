//! The committed `device-frames.schema.json` is what the Rust types describe. After changing the
//! frames, `PA_BLESS=1 cargo nextest run --workspace -E 'binary(schema_file)'` rewrites it.

use std::path::PathBuf;

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("device-frames.schema.json")
}

#[test]
fn the_committed_schema_is_the_one_the_types_describe() {
    let generated = serde_json::to_string_pretty(&pa_device_wire::json_schema())
        .expect("a JSON value serializes")
        + "\n";
    let path = committed();
    if std::env::var_os("PA_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write the schema");
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{} differs from pa_device_wire::json_schema(): rewrite it with \
         PA_BLESS=1 cargo nextest run --workspace -E 'binary(schema_file)' and commit it",
        path.display()
    );
}
