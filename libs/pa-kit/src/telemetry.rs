//! Logging with `tracing`: human-readable by default, JSON lines with `PA_LOG_FORMAT=json`,
//! filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

pub fn init(service: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("PA_LOG_FORMAT").is_ok_and(|f| f == "json");
    // Colours only on a terminal: `make up` writes logs to files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    // try_init: tests start several services in one process.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
}
