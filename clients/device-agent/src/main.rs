//! `pa-device enroll CODE --gateway URL [--name N] [--root DIR] [--read-only] [--no-pty]`
//! `pa-device run`
//!
//! The configuration file is `$PA_DEVICE_CONFIG`, else `<OS config dir>/personal-agent/device.json`
//! (or `--config PATH`). Logs go to stderr; `RUST_LOG` filters them (default `info`).

use std::path::PathBuf;
use std::process::ExitCode;

use pa_device::config::{self, DeviceConfig};
use pa_device::{client, device_from};

const USAGE: &str = "usage:
  pa-device enroll CODE --gateway URL [--name NAME] [--root DIR] [--read-only] [--no-pty] [--config PATH]
  pa-device run [--config PATH]

enroll  trades a one-time code (from the web app's Devices page, or POST /v1/me/devices/enrollments)
        for this device's id and token, and stores them with the gateway URL and the shared folder
        (default ~/PersonalAgent) in the config file (mode 0600).
run     keeps the device connected to the gateway and serves its tools until stopped.

The config file is --config PATH, else $PA_DEVICE_CONFIG, else <config dir>/personal-agent/device.json.";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    positional: Vec<String>,
    gateway: Option<String>,
    name: Option<String>,
    root: Option<PathBuf>,
    config: Option<PathBuf>,
    read_only: bool,
    no_pty: bool,
}

fn parse(mut raw: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        positional: Vec::new(),
        gateway: None,
        name: None,
        root: None,
        config: None,
        read_only: false,
        no_pty: false,
    };
    while let Some(arg) = raw.next() {
        let mut value = |flag: &str| raw.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--gateway" => args.gateway = Some(value("--gateway")?),
            "--name" => args.name = Some(value("--name")?),
            "--root" => args.root = Some(value("--root")?.into()),
            "--config" => args.config = Some(value("--config")?.into()),
            "--read-only" => args.read_only = true,
            "--no-pty" => args.no_pty = true,
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ => args.positional.push(arg),
        }
    }
    Ok(args)
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "device".into())
}

async fn enroll(args: Args) -> Result<(), BoxError> {
    let [_, code] = args.positional.as_slice() else {
        return Err(USAGE.into());
    };
    let gateway = args.gateway.ok_or("--gateway URL is required")?;
    let root = match args.root {
        Some(root) => root,
        None => dirs::home_dir()
            .ok_or("no home directory: give --root DIR")?
            .join("PersonalAgent"),
    };
    std::fs::create_dir_all(&root)?;
    let root = std::fs::canonicalize(&root)?;
    let name = args.name.unwrap_or_else(hostname);
    let enrolled = client::enroll(&gateway, code, &name).await?;
    let path = match args.config {
        Some(p) => p,
        None => config::default_path()?,
    };
    config::save(
        &path,
        &DeviceConfig {
            gateway_url: gateway.trim_end_matches('/').to_string(),
            device_id: enrolled.device_id.clone(),
            device_token: enrolled.device_token,
            name: if enrolled.name.is_empty() {
                name
            } else {
                enrolled.name
            },
            root: root.clone(),
            read_only: args.read_only,
            pty: !args.no_pty,
        },
    )?;
    println!(
        "enrolled as device {} (shared folder {}); configuration in {}\nnow run: pa-device run",
        enrolled.device_id,
        root.display(),
        path.display()
    );
    Ok(())
}

async fn run(args: Args) -> Result<(), BoxError> {
    let path = match args.config {
        Some(p) => p,
        None => config::default_path()?,
    };
    let config = config::load(&path)?;
    let device = device_from(&config)?;
    tracing::info!(
        device = %config.device_id,
        root = %config.root.display(),
        read_only = config.read_only,
        pty = config.pty,
        "pa-device {} starting",
        pa_device::VERSION
    );
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stopping");
    };
    client::run(&config, device, stop).await?;
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pa-device: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.positional.first().map(String::as_str) {
            Some("enroll") => enroll(args).await,
            Some("run") => run(args).await,
            Some("help") | None => {
                println!("{USAGE}");
                Ok(())
            }
            Some(other) => Err(format!("unknown command {other:?}\n\n{USAGE}").into()),
        }
    });
    // A PTY reader thread may still block on its terminal: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pa-device: {e}");
            ExitCode::FAILURE
        }
    }
}
