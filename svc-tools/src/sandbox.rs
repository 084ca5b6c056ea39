//! The sandbox of stdio MCP servers: a process a user can start runs with only the environment
//! the operator allows and cannot see this service (docs/src/adr/0110-2026-12-03-stdio-mcp-sandbox.md).
//!
//! - **Environment.** The child's environment is built here and nothing else: a baseline svc-tools
//!   sets itself ([`baseline_env`]), the variables of this service's own environment that the
//!   operator names (`PA_MCP_ENV_ALLOW`), then the integration's own variables (`config.env` and
//!   `env:<NAME>` secrets). A user may never set a variable that changes how a program is loaded
//!   or interpreted (`PATH`, `LD_*`, `NODE_OPTIONS`, `PYTHON*`, … see [`check_user_env_name`]):
//!   refused when the integration is saved and dropped again when the child is started.
//! - **Sandbox.** Debian's bubblewrap: a read-only view of `/`, a fresh `/dev`, a fresh `/tmp`,
//!   its own PID namespace with its own `/proc` (this service's `/proc/<pid>/environ` does not
//!   exist there), no network unless the operator allows it and the integration asks, no
//!   capabilities, a new session, killed with its parent; the operator's hidden paths
//!   (`PA_MCP_SANDBOX_HIDE`) are covered by empty mounts. When svc-tools runs as root the
//!   sandbox runs as an unprivileged user (`PA_MCP_SANDBOX_USER`, default `nobody`), so files
//!   only root may read stay unreadable.
//! - **Availability.** [`Sandbox::start`] tries the sandbox once at start; where it does not work,
//!   svc-tools logs why and refuses stdio MCP servers with that reason. `PA_MCP_SANDBOX=off` is
//!   the operator's explicit opt-out (the environment rules still apply).
//!
//! Secret values are handed to bubblewrap in its environment (readable only by this service's
//! user), never on its command line (which every local user can read).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// PATH of a stdio server, set by svc-tools.
pub const SAFE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// The longest variable name a user may set.
const MAX_ENV_NAME: usize = 128;
/// How long the start-up check may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Variables a user may never set: svc-tools sets them, or they change how programs are loaded,
/// interpreted or started (compared upper-cased).
const RESERVED_NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "TERM",
    "LANG",
    "LANGUAGE",
    "SHELL",
    "USER",
    "LOGNAME",
    "PWD",
    "OLDPWD",
    "IFS",
    "CDPATH",
    "ENV",
    "BASH_ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "CLASSPATH",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RES_OPTIONS",
    "LOCALDOMAIN",
    "TZDIR",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "BROWSER",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Prefixes of variables a user may never set (compared upper-cased): the dynamic loader
/// (`LD_*`, `DYLD_*`), interpreters and their package managers (`NODE_*`, `NPM_CONFIG_*`,
/// `PYTHON*`, `PERL*`, `RUBY*`, `JAVA_*`, …), exported shell functions, git's hooks and this
/// platform's own settings (`PA_*`).
const RESERVED_PREFIXES: &[&str] = &[
    "LD_",
    "DYLD_",
    "NODE_",
    "NPM_",
    "YARN_",
    "PNPM_",
    "COREPACK_",
    "PYTHON",
    "PIP_",
    "UV_",
    "VIRTUAL_ENV",
    "CONDA",
    "PERL",
    "RUBY",
    "GEM_",
    "BUNDLE",
    "JAVA_",
    "_JAVA_",
    "JDK_",
    "LUA_",
    "DENO_",
    "BUN_",
    "BASH_",
    "GIT_",
    "LC_",
    "MALLOC_",
    "XDG_",
    "PA_",
];

/// Whether a user may set the variable `name` for a stdio MCP server; the reason if not.
pub fn check_user_env_name(name: &str) -> Result<(), String> {
    let well_formed = !name.is_empty()
        && name.len() <= MAX_ENV_NAME
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !well_formed {
        return Err(format!(
            "environment variable name {name:?} must be 1-{MAX_ENV_NAME} characters of \
             A-Z a-z 0-9 _, not starting with a digit"
        ));
    }
    let upper = name.to_ascii_uppercase();
    if RESERVED_NAMES.contains(&upper.as_str())
        || RESERVED_PREFIXES.iter().any(|p| upper.starts_with(p))
    {
        return Err(format!(
            "environment variable {name} cannot be set for a stdio MCP server: it is set by \
             the service or changes how programs are loaded (PATH, LD_*, NODE_OPTIONS, \
             PYTHON*, … are refused)"
        ));
    }
    Ok(())
}

/// What svc-tools sets in every stdio server's environment.
pub fn baseline_env() -> BTreeMap<String, String> {
    [
        ("PATH", SAFE_PATH),
        ("HOME", "/tmp"),
        ("TMPDIR", "/tmp"),
        ("LANG", "C.UTF-8"),
        ("TERM", "dumb"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxMode {
    /// bubblewrap (the default).
    Bwrap,
    /// The operator's explicit opt-out: the server runs unsandboxed on this host.
    Off,
}

/// The operator's settings for stdio MCP servers.
#[derive(Clone, Debug)]
pub struct SandboxSettings {
    /// `PA_MCP_SANDBOX`: `bwrap` (default) or `off`.
    pub mode: SandboxMode,
    /// `PA_MCP_BWRAP`: the bubblewrap binary (default `bwrap`, looked up in PATH).
    pub bwrap: PathBuf,
    /// `PA_MCP_ENV_ALLOW`: names of this service's own environment variables passed on to the
    /// servers (default `TZ`); never a `PA_*` name.
    pub env_allow: Vec<String>,
    /// `PA_MCP_SANDBOX_HIDE`: paths covered by an empty mount inside the sandbox (a directory
    /// by an empty tmpfs, a file by /dev/null); a relative path is from the working directory.
    /// Default: `.dev` (the dev stack's data, logs and sockets), `/run/secrets`,
    /// `/var/run/secrets` (mounted credentials), the Postgres, Redis and Docker sockets.
    pub hide: Vec<PathBuf>,
    /// `PA_MCP_SANDBOX_EXPOSE`: paths under `/tmp` shown read-only inside the sandbox although
    /// its `/tmp` is a fresh, empty one (a server installed in a temporary checkout, as in
    /// tests); default none. Hidden paths stay hidden within them.
    pub expose: Vec<PathBuf>,
    /// `PA_MCP_SANDBOX_USER`: `uid[:gid]` the sandbox runs as when svc-tools runs as root
    /// (default `65534:65534`, nobody); `keep` keeps root (without capabilities).
    pub run_as: Option<(u32, u32)>,
    /// `PA_MCP_NETWORK_ALLOWED` (default false): whether an integration may ask for the network
    /// (`config.network: true`). A server with the network shares this host's network
    /// namespace, loopback included.
    pub network_allowed: bool,
}

pub const DEFAULT_HIDE: &[&str] = &[
    ".dev",
    "/run/secrets",
    "/var/run/secrets",
    "/run/postgresql",
    "/var/run/postgresql",
    "/run/redis",
    "/var/run/redis",
    "/run/docker.sock",
    "/var/run/docker.sock",
];

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            mode: SandboxMode::Bwrap,
            bwrap: PathBuf::from("bwrap"),
            env_allow: vec!["TZ".into()],
            hide: DEFAULT_HIDE.iter().map(PathBuf::from).collect(),
            expose: Vec::new(),
            run_as: Some((65534, 65534)),
            network_allowed: false,
        }
    }
}

impl SandboxSettings {
    /// Parses the `PA_MCP_*` values (each `None` = unset, the default).
    pub fn parse(
        mode: Option<&str>,
        bwrap: Option<&str>,
        env_allow: Option<&str>,
        hide: Option<&str>,
        run_as: Option<&str>,
        network_allowed: bool,
    ) -> Result<Self, (&'static str, String)> {
        let mut settings = Self {
            network_allowed,
            ..Self::default()
        };
        if let Some(mode) = mode.map(str::trim).filter(|m| !m.is_empty()) {
            settings.mode = match mode.to_ascii_lowercase().as_str() {
                "bwrap" | "bubblewrap" | "on" => SandboxMode::Bwrap,
                "off" => SandboxMode::Off,
                _ => return Err(("PA_MCP_SANDBOX", "expected bwrap or off".into())),
            };
        }
        if let Some(path) = bwrap.map(str::trim).filter(|p| !p.is_empty()) {
            settings.bwrap = PathBuf::from(path);
        }
        if let Some(list) = env_allow {
            settings.env_allow = Vec::new();
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let ok = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if !ok {
                    return Err((
                        "PA_MCP_ENV_ALLOW",
                        format!("{name:?} is not a variable name"),
                    ));
                }
                if name.to_ascii_uppercase().starts_with("PA_") {
                    return Err((
                        "PA_MCP_ENV_ALLOW",
                        format!("{name} is one of this service's own settings"),
                    ));
                }
                settings.env_allow.push(name.to_string());
            }
        }
        if let Some(list) = hide {
            settings.hide = list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect();
        }
        if let Some(user) = run_as.map(str::trim).filter(|u| !u.is_empty()) {
            settings.run_as = if user == "keep" {
                None
            } else {
                let (uid, gid) = user.split_once(':').unwrap_or((user, user));
                match (uid.parse::<u32>(), gid.parse::<u32>()) {
                    (Ok(uid), Ok(gid)) => Some((uid, gid)),
                    _ => return Err(("PA_MCP_SANDBOX_USER", "expected uid[:gid] or keep".into())),
                }
            };
        }
        Ok(settings)
    }
}

/// The environment of a stdio server: the baseline, the operator's pass-through variables, then
/// the integration's own (`user`), of which a reserved name is dropped with a warning (it was
/// refused when saved; this catches rows saved before the rule).
pub fn child_env(
    settings: &SandboxSettings,
    user: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = baseline_env();
    for name in &settings.env_allow {
        if let Ok(value) = std::env::var(name) {
            env.insert(name.clone(), value);
        }
    }
    for (name, value) in user {
        match check_user_env_name(name) {
            Ok(()) if !value.contains('\0') => {
                env.insert(name.clone(), value.clone());
            }
            _ => {
                tracing::warn!(variable = %name, "refused environment variable of a stdio MCP server dropped")
            }
        }
    }
    env
}

fn find_in_path(program: &Path) -> PathBuf {
    if program.components().count() > 1 {
        return program.to_path_buf();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::env::split_paths(SAFE_PATH))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| program.to_path_buf())
}

/// The hidden paths that exist, resolved (a symlinked `/var/run` becomes `/run`), without
/// duplicates: (path, is a directory).
fn existing_hidden(hide: &[PathBuf]) -> Vec<(PathBuf, bool)> {
    let mut out: Vec<(PathBuf, bool)> = Vec::new();
    for path in hide {
        let Ok(resolved) = std::fs::canonicalize(path) else {
            continue;
        };
        if resolved == Path::new("/") || out.iter().any(|(p, _)| *p == resolved) {
            continue;
        }
        let is_dir = resolved.is_dir();
        out.push((resolved, is_dir));
    }
    out
}

/// The exposed paths that exist, resolved, without duplicates.
fn existing_exposed(expose: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for path in expose {
        if let Ok(resolved) = std::fs::canonicalize(path)
            && resolved != Path::new("/")
            && !out.contains(&resolved)
        {
            out.push(resolved);
        }
    }
    out
}

/// bubblewrap's arguments for `program args`: `exposed` paths come back read-only over the
/// fresh `/tmp`, then `hidden` ones are covered (so a hidden path stays hidden inside one).
pub fn bwrap_args(
    exposed: &[PathBuf],
    hidden: &[(PathBuf, bool)],
    network: bool,
    program: &str,
    args: &[String],
) -> Vec<OsString> {
    let mut out: Vec<OsString> = [
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    if !network {
        out.push("--unshare-net".into());
    }
    for path in exposed {
        out.push("--ro-bind".into());
        out.push(path.clone().into_os_string());
        out.push(path.clone().into_os_string());
    }
    for (path, is_dir) in hidden {
        if *is_dir {
            out.push("--tmpfs".into());
        } else {
            out.push("--ro-bind".into());
            out.push("/dev/null".into());
        }
        out.push(path.clone().into_os_string());
    }
    out.extend(["--chdir", "/tmp", "--"].map(OsString::from));
    out.push(program.into());
    out.extend(args.iter().map(OsString::from));
    out
}

/// The sandbox as started: its settings and whether it works here.
#[derive(Clone, Debug)]
pub struct Sandbox {
    settings: Arc<SandboxSettings>,
    bwrap: PathBuf,
    /// Why stdio servers cannot run here (None = they can).
    unavailable: Option<Arc<str>>,
}

impl Sandbox {
    /// Checks the sandbox once (bubblewrap starts `true` inside it) and logs the outcome.
    pub async fn start(settings: SandboxSettings) -> Self {
        let bwrap = find_in_path(&settings.bwrap);
        let mut sandbox = Self {
            settings: Arc::new(settings),
            bwrap,
            unavailable: None,
        };
        match sandbox.settings.mode {
            SandboxMode::Off => tracing::warn!(
                "PA_MCP_SANDBOX=off: stdio MCP servers run unsandboxed on this host (they can \
                 read what this service's user can read); only the environment rules apply"
            ),
            SandboxMode::Bwrap => match sandbox.probe().await {
                Ok(()) => {
                    tracing::info!(bwrap = %sandbox.bwrap.display(), "stdio MCP sandbox (bubblewrap) works")
                }
                Err(reason) => {
                    tracing::error!(
                        "stdio MCP servers are refused: {reason} (install Debian's bubblewrap, \
                         set PA_MCP_BWRAP, or opt out with PA_MCP_SANDBOX=off)"
                    );
                    sandbox.unavailable = Some(reason.into());
                }
            },
        }
        sandbox
    }

    pub fn settings(&self) -> &SandboxSettings {
        &self.settings
    }

    /// Why stdio MCP servers cannot run here, if they cannot.
    pub fn unavailable(&self) -> Option<String> {
        self.unavailable.as_ref().map(|reason| {
            format!(
                "stdio MCP servers are unavailable on this server: {reason} (the operator must \
                 install bubblewrap or set PA_MCP_SANDBOX=off)"
            )
        })
    }

    async fn probe(&self) -> Result<(), String> {
        let mut cmd = self.command_for("true", &[], &baseline_env(), false);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            format!(
                "the sandbox {} cannot be started: {e}",
                self.bwrap.display()
            )
        })?;
        match tokio::time::timeout(PROBE_TIMEOUT, child.wait_with_output()).await {
            Err(_) => Err("the sandbox did not start within 10 s".into()),
            Ok(Err(e)) => Err(format!("the sandbox failed: {e}")),
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => Err(format!(
                "the sandbox {} does not work here ({}): {}",
                self.bwrap.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }

    fn command_for(
        &self,
        program: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
        network: bool,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bwrap);
        let hidden = existing_hidden(&self.settings.hide);
        let exposed = existing_exposed(&self.settings.expose);
        cmd.args(bwrap_args(&exposed, &hidden, network, program, args))
            .env_clear()
            .envs(env);
        if rustix::process::geteuid().is_root()
            && let Some((uid, gid)) = self.settings.run_as
        {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// The command that starts a stdio server (`network`: the integration asked for it), or
    /// why it may not start.
    pub fn command(
        &self,
        program: &str,
        args: &[String],
        user_env: &BTreeMap<String, String>,
        network: bool,
    ) -> Result<tokio::process::Command, String> {
        if let Some(reason) = self.unavailable() {
            return Err(reason);
        }
        let env = child_env(&self.settings, user_env);
        let network = network && self.settings.network_allowed;
        Ok(match self.settings.mode {
            SandboxMode::Bwrap => self.command_for(program, args, &env, network),
            SandboxMode::Off => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(args).env_clear().envs(&env);
                cmd
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_and_interpreter_variables_are_refused() {
        for name in [
            "PATH",
            "path",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "ld_audit",
            "DYLD_INSERT_LIBRARIES",
            "NODE_OPTIONS",
            "NODE_PATH",
            "npm_config_prefix",
            "PYTHONPATH",
            "PYTHONSTARTUP",
            "PERL5OPT",
            "PERL5LIB",
            "RUBYOPT",
            "BASH_ENV",
            "ENV",
            "BASH_FUNC_ls%%",
            "GIT_SSH_COMMAND",
            "GLIBC_TUNABLES",
            "JAVA_TOOL_OPTIONS",
            "HOME",
            "PA_KEK",
            "PA_INTERNAL_SECRET",
            "",
            "1X",
            "A-B",
            "A=B",
            &"X".repeat(MAX_ENV_NAME + 1),
        ] {
            assert!(check_user_env_name(name).is_err(), "{name}");
        }
        for name in ["API_KEY", "GITHUB_TOKEN", "MY_SERVER_URL", "_X", "DEBUG"] {
            assert!(check_user_env_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn the_child_gets_the_baseline_the_allowed_and_its_own() {
        let settings = SandboxSettings {
            env_allow: vec!["Pa_test_never_set".into()],
            ..SandboxSettings::default()
        };
        let user: BTreeMap<String, String> = [
            ("API_KEY", "k"),
            ("PATH", "/evil"),
            ("LD_PRELOAD", "/tmp/x.so"),
            ("NUL", "a\0b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let env = child_env(&settings, &user);
        assert_eq!(env.get("PATH").map(String::as_str), Some(SAFE_PATH));
        assert_eq!(env.get("API_KEY").map(String::as_str), Some("k"));
        let mut names: Vec<&str> = env.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["API_KEY", "HOME", "LANG", "PATH", "TERM", "TMPDIR"]);
    }

    #[test]
    fn settings_parse_and_refuse_service_variables() {
        let s = SandboxSettings::parse(
            Some("off"),
            None,
            Some("TZ, LANGUAGE"),
            Some(""),
            Some("keep"),
            true,
        )
        .expect("parses");
        assert_eq!(s.mode, SandboxMode::Off);
        assert_eq!(s.env_allow, ["TZ", "LANGUAGE"]);
        assert!(s.hide.is_empty());
        assert_eq!(s.run_as, None);
        assert!(s.network_allowed);
        let s =
            SandboxSettings::parse(None, None, None, None, Some("1000"), false).expect("parses");
        assert_eq!(s.mode, SandboxMode::Bwrap);
        assert_eq!(s.run_as, Some((1000, 1000)));
        assert!(SandboxSettings::parse(Some("maybe"), None, None, None, None, false).is_err());
        assert!(SandboxSettings::parse(None, None, Some("PA_KEK"), None, None, false).is_err());
        assert!(SandboxSettings::parse(None, None, None, None, Some("x:y"), false).is_err());
    }

    #[test]
    fn bwrap_isolates_pid_net_and_tmp() {
        let args = bwrap_args(
            &[PathBuf::from("/tmp/checkout/tests/mcp")],
            &[
                (PathBuf::from("/srv/secrets"), true),
                (PathBuf::from("/etc/pa.key"), false),
            ],
            false,
            "node",
            &["server.js".into()],
        );
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        for part in [
            "--unshare-pid",
            "--unshare-net",
            "--die-with-parent",
            "--cap-drop ALL",
            "--ro-bind / /",
            "--proc /proc",
            "--tmpfs /tmp",
            "--tmpfs /srv/secrets",
            "--ro-bind /dev/null /etc/pa.key",
            "--tmpfs /tmp --unshare-net --ro-bind /tmp/checkout/tests/mcp /tmp/checkout/tests/mcp",
        ] {
            assert!(joined.contains(part), "{part} missing from {joined}");
        }
        // Exposed paths come back before hidden ones are covered.
        let exposed_at = joined.find("/tmp/checkout").unwrap_or(usize::MAX);
        let hidden_at = joined.find("/srv/secrets").unwrap_or(0);
        assert!(exposed_at < hidden_at, "{joined}");
        assert!(joined.ends_with("-- node server.js"), "{joined}");
        let with_net = bwrap_args(&[], &[], true, "node", &[]);
        assert!(!with_net.iter().any(|a| a == "--unshare-net"));
    }
}
