//! Runs a fake OpenAI-compatible provider for manual testing.
//!
//! Usage: `pa-fake-provider [PORT]` (default: a free port). Prints the base URL on stdout and
//! serves the default reply (a short streamed text) until Ctrl-C.

use std::net::SocketAddr;

use pa_testkit::FakeProvider;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = match std::env::args().nth(1) {
        Some(arg) => arg.parse::<u16>().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad port {arg:?}: {e}"),
            )
        })?,
        None => 0,
    };
    let provider = FakeProvider::start_on(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("{}", provider.base_url());
    tokio::signal::ctrl_c().await?;
    provider.stop();
    Ok(())
}
