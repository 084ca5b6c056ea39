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

#[cfg(test)]
mod tests {
    use super::*;

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
