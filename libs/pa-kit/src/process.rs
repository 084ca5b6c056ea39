//! What a process must settle about itself before it does anything else.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

/// The `(name, value)` pairs of `defaults` whose name is not in `environment`: what
/// [`exec_with_env_defaults`] adds. A name that is set, even to something else or to nothing,
/// is the operator's choice and stays.
fn missing_env<'a>(
    defaults: &[(&'a str, &'a str)],
    environment: impl Fn(&str) -> Option<OsString>,
) -> Vec<(&'a str, &'a str)> {
    defaults
        .iter()
        .filter(|(name, _)| environment(name).is_none())
        .copied()
        .collect()
}

/// Makes sure each of `defaults` is in this process' environment, for settings that a library
/// reads from the environment only (candle reads `RAYON_NUM_THREADS` on every matrix product).
///
/// When one is missing, the process replaces itself (exec: the same pid, binary, arguments and
/// open files) with the missing ones added. Why not `std::env::set_var`: since Rust 2024 it is
/// unsafe once other threads may read the environment, and this workspace forbids unsafe code.
/// Call it first thing in `main`. It returns when nothing was missing, or when the exec failed;
/// then the process goes on as it is and says so on stderr (logging is not set up yet).
pub fn exec_with_env_defaults(defaults: &[(&str, &str)]) {
    let missing = missing_env(defaults, |name| std::env::var_os(name));
    if missing.is_empty() {
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            eprintln!("cannot find this binary to set {missing:?} in its environment: {err}");
            return;
        }
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(&exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    command.args(args);
    for (name, value) in &missing {
        command.env(name, value);
    }
    // exec returns only on failure.
    let err = command.exec();
    eprintln!(
        "cannot restart {} with {missing:?} in its environment ({err}); going on without",
        exe.display()
    );
}

/// Where a process's limit of open files stood before and after [`raise_open_files_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFilesLimit {
    pub before: u64,
    pub now: u64,
    /// The hard limit: as far as an unprivileged process may go.
    pub hard: u64,
}

/// The soft limit taken when the hard one is unlimited (Linux refuses an unlimited soft limit
/// of open files: it is bounded by `fs.nr_open`, 1,048,576 by default).
const OPEN_FILES_WHEN_UNLIMITED: u64 = 1 << 20;

/// Below this many open files a service warns at startup: every connection, pooled or served,
/// takes one, and a port alone accepts 10,000 (`PA_HTTP_MAX_CONNECTIONS`, the gRPC ports'
/// `ConnectionLimits`).
pub const OPEN_FILES_WANTED: u64 = 16_384;

/// Raises this process's soft limit of open files to its hard limit. Login shells and systemd
/// start processes with a soft limit of 1,024 (systemd's `LimitNOFILE` default) under a hard
/// one hundreds of times larger, kept low only for programs that still use `select(2)`; a
/// server on epoll that stays at 1,024 refuses its 1,000th client (EMFILE) while its
/// connection limits promise thousands. Go's runtime and nginx (`worker_rlimit_nofile`) do the
/// same. Returns where the limit stood and stands.
pub fn raise_open_files_limit() -> Result<OpenFilesLimit, String> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(OPEN_FILES_WHEN_UNLIMITED);
    if before >= hard {
        return Ok(OpenFilesLimit {
            before,
            now: before,
            hard,
        });
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        },
    )
    .map_err(|err| format!("cannot raise the open files limit from {before} to {hard}: {err}"))?;
    Ok(OpenFilesLimit {
        before,
        now: hard,
        hard,
    })
}

/// [`raise_open_files_limit`], said in the service's log: what changed at debug level, a
/// warning when the limit stays below [`OPEN_FILES_WANTED`] (the operator's to raise).
pub fn raise_open_files_limit_and_log(service: &'static str) {
    match raise_open_files_limit() {
        Ok(limit) if limit.now < OPEN_FILES_WANTED => tracing::warn!(
            service,
            open_files = limit.now,
            wanted = OPEN_FILES_WANTED,
            "the open files limit is low: connections past it are refused; raise the hard limit (ulimit -Hn, systemd LimitNOFILE, the container runtime's nofile)"
        ),
        Ok(limit) => tracing::debug!(
            service,
            before = limit.before,
            now = limit.now,
            "open files limit"
        ),
        Err(err) => tracing::warn!(service, %err, "open files limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Started with a soft limit far below its hard one (a login shell's 1,024), the process
    /// ends up at the hard limit; a second call changes nothing. nextest runs every test in a
    /// process of its own, so lowering the limit here touches no other test.
    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let start = getrlimit(Resource::Nofile);
        let hard = start.maximum.unwrap_or(OPEN_FILES_WHEN_UNLIMITED);
        if hard <= 64 {
            eprintln!("skipped: a hard limit of {hard} leaves nothing to raise");
            return;
        }
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(64),
                maximum: start.maximum,
            },
        )
        .expect("lower the soft limit");
        let raised = raise_open_files_limit().expect("raise");
        assert_eq!(
            raised,
            OpenFilesLimit {
                before: 64,
                now: hard,
                hard
            }
        );
        assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
        let again = raise_open_files_limit().expect("raise again");
        assert_eq!((again.before, again.now), (hard, hard));
    }

    #[test]
    fn only_names_the_environment_lacks_are_added() {
        // Lower-case names: the catalogue check reads upper-case literals as variables.
        let defaults = [("threads", "1"), ("other", "x"), ("empty", "y")];
        let environment = |name: &str| match name {
            "other" => Some(OsString::from("4")),
            "empty" => Some(OsString::new()),
            _ => None,
        };
        assert_eq!(missing_env(&defaults, environment), vec![("threads", "1")]);
        assert!(missing_env(&defaults, |_| Some(OsString::from("set"))).is_empty());
    }
}
