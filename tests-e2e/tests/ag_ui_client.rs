//! The unmodified npm `@ag-ui/client` HttpAgent chats with POST /v1/ag-ui (tests/agui/).

use std::path::PathBuf;

use tests_e2e::Mesh;

#[tokio::test]
async fn the_real_ag_ui_client_chats_with_the_gateway()
-> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/agui");
    assert!(
        dir.join("node_modules/@ag-ui/client").exists(),
        "tests/agui has no node_modules: run `make test` (it installs them) or `npm ci` there"
    );
    let mesh = Mesh::builder().start().await?;
    let output = tokio::process::Command::new("node")
        .arg("--test")
        .current_dir(&dir)
        .env("PA_GATEWAY_URL", &mesh.gateway_url)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node --test failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("# pass 3"),
        "all three AG-UI client tests ran:\n{stdout}"
    );
    mesh.stop().await
}
