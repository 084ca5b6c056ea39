//! `pa-device`: the device agent. It enrolls with a one-time code, then keeps one outbound
//! WebSocket to the gateway and serves the user's agent a jailed filesystem ([`jail`]) and
//! pseudo-terminals ([`pty`]) as tools ([`tools`]).

pub mod client;
pub mod config;
pub mod jail;
pub mod protocol;
pub mod pty;
pub mod tools;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

use std::path::Path;

/// The device of a configuration: its jail (with the default limits) and its PTY.
pub fn device_from(config: &config::DeviceConfig) -> std::io::Result<tools::Device> {
    device_at(&config.root, config.read_only, config.pty)
}

pub fn device_at(root: &Path, read_only: bool, pty: bool) -> std::io::Result<tools::Device> {
    let jail = jail::Jail::open(root, read_only, jail::Limits::default())?;
    Ok(tools::Device {
        pty: pty.then(|| pty::PtyManager::new(root.to_path_buf(), pty::PtyLimits::default())),
        jail,
    })
}
