//! The enrolled device's configuration: one JSON file in the OS config dir, readable by its
//! owner only (it holds the device token).
//!
//! Where: `$PA_DEVICE_CONFIG`, else `<config dir>/personal-agent/device.json` where the config
//! dir is `$XDG_CONFIG_HOME` or `~/.config` on Linux, `~/Library/Application Support` on macOS
//! and `%APPDATA%` on Windows (there the file inherits the user profile's ACL).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeviceConfig {
    pub gateway_url: String,
    pub device_id: String,
    pub device_token: String,
    pub name: String,
    /// The jail's root folder (absolute).
    pub root: PathBuf,
    #[serde(default)]
    pub read_only: bool,
    /// Offer the PTY tools.
    #[serde(default = "yes")]
    pub pty: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no config directory: set PA_DEVICE_CONFIG or HOME")]
    NoConfigDir,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a device configuration: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

pub fn default_path() -> Result<PathBuf, ConfigError> {
    if let Some(p) = std::env::var_os("PA_DEVICE_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(p.into());
    }
    dirs::config_dir()
        .map(|d| d.join("personal-agent").join("device.json"))
        .ok_or(ConfigError::NoConfigDir)
}

pub fn load(path: &Path) -> Result<DeviceConfig, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        path: path.into(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ConfigError::Parse {
        path: path.into(),
        source,
    })
}

/// Writes the file with mode 0600 from its creation on (never briefly readable by others).
pub fn save(path: &Path, config: &DeviceConfig) -> Result<(), ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let body = serde_json::to_vec_pretty(config).map_err(|e| io(e.into()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    #[cfg(unix)]
    {
        // An existing file keeps its old mode on open: tighten it.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    std::io::Write::write_all(&mut file, &body).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_config_is_private_and_round_trips() {
        let dir = std::env::temp_dir().join(format!("pa-device-cfg-{}", std::process::id()));
        let path = dir.join("sub").join("device.json");
        let config = DeviceConfig {
            gateway_url: "http://127.0.0.1:1".into(),
            device_id: "dev-1".into(),
            device_token: "secret".into(),
            name: "laptop".into(),
            root: "/tmp".into(),
            read_only: true,
            pty: false,
        };
        save(&path, &config).unwrap();
        assert_eq!(load(&path).unwrap(), config);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
