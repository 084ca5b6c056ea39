// sqlx::migrate! embeds the services' migration files: rebuild when any of them changes.
fn main() {
    for service in [
        "svc-gateway",
        "svc-runs",
        "svc-models",
        "svc-tools",
        "svc-memory",
    ] {
        println!("cargo:rerun-if-changed=../../{service}/migrations");
    }
}
