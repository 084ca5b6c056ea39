//! Ports for processes that must be told theirs before they start.

use crate::BoxError;

/// A free port below the kernel's ephemeral range, for a process that must be told its port
/// before it starts (the dev IdP, whose issuer URL the gateways are configured with). A port
/// reserved with `bind(":0")` and released comes from the ephemeral range, where a mesh started
/// in between can take it; ports below the range are only ever taken on purpose.
pub fn port_below_ephemeral_range() -> Result<u16, BoxError> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768u16);
    let (from, to) = (low.saturating_sub(12_000).max(1024), low);
    let span = u32::from(to - from).max(1);
    let seed = uuid::Uuid::new_v4().as_u128();
    for attempt in 0..200u32 {
        let offset = ((seed >> (attempt % 96)) as u32).wrapping_add(attempt * 7919) % span;
        let port = from + offset as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() && claim_port(port) {
            return Ok(port);
        }
    }
    Err(format!("no free port in {from}..{to}").into())
}

/// Claims `port` for this test process among all test processes of the machine: a file named
/// after it holds the claimant's pid, and a claim of a process that is gone lapses. Between
/// choosing a port and the child binding it (and while a killed child is down), another test
/// process choosing at random could otherwise take the same port.
fn claim_port(port: u16) -> bool {
    use std::io::Write;
    let dir = std::env::temp_dir().join("pa-test-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let path = dir.join(port.to_string());
    let me = std::process::id();
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => return write!(file, "{me}").is_ok(),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|p| p.trim().parse::<u32>().ok());
                match holder {
                    // Already handed out by this process (to a child that has not bound it
                    // yet, or that is down while killed): taken. Handing it out again gave
                    // two services of one chaos mesh the same port.
                    Some(pid) if pid == me => return false,
                    Some(pid) if std::path::Path::new(&format!("/proc/{pid}")).exists() => {
                        return false;
                    }
                    // Being written by its claimant: taken.
                    None => return false,
                    // Lapsed: its process is gone.
                    Some(_) => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            Err(_) => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports are chosen before their processes bind them, so one process must never be handed
    /// the same port twice (with 300 of about 12,000 ports, a repeat is all but certain when
    /// its own claims do not count).
    #[test]
    fn one_process_is_never_handed_the_same_port_twice() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            let port = port_below_ephemeral_range().unwrap();
            assert!(seen.insert(port), "port {port} handed out twice");
        }
    }
}
