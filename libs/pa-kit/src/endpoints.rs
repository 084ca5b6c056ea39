//! Client channels over several replicas of a service (ADR 0191). A `PA_*_URL` is one URL or a
//! comma-separated list; a host name in it (a Compose service, a Kubernetes headless Service) is
//! re-resolved every few seconds, each address it resolves to being a replica. Calls are spread
//! over the replicas that accept connections (tonic's power-of-two-choices balancer); a replica
//! that stops accepting them is taken out within a probe interval, so a retried call lands on a
//! live one, and put back when it answers again.
//!
//! One URL whose host is an IP address or `localhost` keeps the plain lazy channel of before: no
//! probe, no balancer in the path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

/// How often each replica is probed (a TCP connect) and taken out or put back.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How often host names are resolved again (every this many probes).
const RESOLVE_EVERY_PROBES: u32 = 10;
/// How long a probe's connect may take before the replica counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

/// One entry of a `PA_*_URL` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// As configured (`http://runs:50051`).
    pub url: String,
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Target {
    /// `http://host:port` (or `https://…`); the port defaults by scheme.
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let scheme = uri.scheme_str().unwrap_or("http").to_string();
        let host = uri
            .host()
            .ok_or_else(|| format!("{url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        Ok(Target {
            url: url.to_string(),
            scheme,
            host,
            port,
        })
    }

    /// An address that never needs resolving.
    fn fixed(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }

    fn is_local_name(&self) -> bool {
        self.host == "localhost"
    }

    /// The URL of one resolved replica: same scheme, the address instead of the name.
    fn replica_url(&self, addr: SocketAddr) -> String {
        format!("{}://{addr}", self.scheme)
    }
}

/// The entries of a comma-separated list (empty entries skipped).
pub fn parse_list(urls: &str) -> Result<Vec<Target>, String> {
    let targets = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(Target::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if targets.is_empty() {
        return Err(format!("{urls:?} names no endpoint"));
    }
    Ok(targets)
}

/// The HTTP/2 connection window of every internal client. Model streams are many tiny DATA
/// frames (one token each), and h2 closes a connection with ENHANCE_YOUR_CALM
/// (`too_many_data_frames`) once the small frames received but not yet read exceed half this
/// window: with hyper's 5 MiB default, one svc-runs replica lost every inline run on its
/// svc-models connection at once when ~500 streams outpaced it (`pa-bench sizing`). 64 MiB
/// leaves room for ~140k unread tokens per connection before that guard trips; flow control
/// still bounds the bytes.
pub const CONNECTION_WINDOW_BYTES: u32 = 64 << 20;

/// How every client endpoint is set up.
pub fn endpoint(url: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .initial_stream_window_size(2 << 20)
        .http2_keep_alive_interval(Duration::from_secs(30)))
}

/// The replicas a list names now: fixed addresses as they are, names resolved (a name that does
/// not resolve stays as its URL, so calls fail with the resolver's error rather than wait).
async fn replicas(targets: &[Target]) -> BTreeMap<String, SocketAddrOrName> {
    let mut out = BTreeMap::new();
    for target in targets {
        if let Some(addr) = target.fixed() {
            out.insert(target.replica_url(addr), SocketAddrOrName::Addr(addr));
            continue;
        }
        match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
            Ok(addrs) => {
                let addrs: BTreeSet<SocketAddr> = addrs.collect();
                if addrs.is_empty() {
                    out.insert(target.url.clone(), SocketAddrOrName::Name(target.clone()));
                }
                for addr in addrs {
                    out.insert(target.replica_url(addr), SocketAddrOrName::Addr(addr));
                }
            }
            Err(err) => {
                tracing::debug!(url = %target.url, %err, "cannot resolve a replica's name");
                out.insert(target.url.clone(), SocketAddrOrName::Name(target.clone()));
            }
        }
    }
    out
}

#[derive(Clone, Debug)]
enum SocketAddrOrName {
    Addr(SocketAddr),
    Name(Target),
}

async fn accepts(replica: &SocketAddrOrName) -> bool {
    let connect = match replica {
        SocketAddrOrName::Addr(addr) => {
            tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(*addr)).await
        }
        SocketAddrOrName::Name(target) => {
            tokio::time::timeout(
                PROBE_TIMEOUT,
                tokio::net::TcpStream::connect((target.host.as_str(), target.port)),
            )
            .await
        }
    };
    matches!(connect, Ok(Ok(_)))
}

/// A channel over `urls` (see the module doc).
pub fn channel(urls: &str) -> Result<Channel, tonic::transport::Error> {
    let targets = match parse_list(urls) {
        Ok(targets) => targets,
        // Let tonic word the error of a malformed URL.
        Err(_) => return Ok(endpoint(urls)?.connect_lazy()),
    };
    let plain = targets.len() == 1 && (targets[0].fixed().is_some() || targets[0].is_local_name());
    let runtime = tokio::runtime::Handle::try_current();
    if plain || runtime.is_err() {
        return Ok(endpoint(&targets[0].url)?.connect_lazy());
    }
    // Every endpoint is checked before the watcher starts, so a bad URL fails here, at start-up.
    for target in &targets {
        endpoint(&target.url)?;
    }
    let (channel, changes) = Channel::balance_channel::<String>(64);
    tokio::spawn(watch(targets, changes));
    Ok(channel)
}

/// Keeps the balancer's set equal to the replicas that accept connections (all of them when
/// none does, so calls fail fast instead of waiting for one).
async fn watch(targets: Vec<Target>, changes: tokio::sync::mpsc::Sender<Change<String, Endpoint>>) {
    let mut known = BTreeMap::new();
    let mut inserted: BTreeSet<String> = BTreeSet::new();
    let mut tick: u32 = 0;
    loop {
        if changes.is_closed() {
            return;
        }
        if tick.is_multiple_of(RESOLVE_EVERY_PROBES) {
            known = replicas(&targets).await;
        }
        tick = tick.wrapping_add(1);
        let mut up = BTreeSet::new();
        for (url, replica) in &known {
            if accepts(replica).await {
                up.insert(url.clone());
            }
        }
        let wanted: BTreeSet<String> = if up.is_empty() {
            known.keys().cloned().collect()
        } else {
            up
        };
        for url in inserted.difference(&wanted) {
            tracing::info!(replica = %url, "a replica stopped answering; calls go to the others");
            if changes.send(Change::Remove(url.clone())).await.is_err() {
                return;
            }
        }
        for url in wanted.difference(&inserted) {
            let Ok(endpoint) = endpoint(url) else {
                continue;
            };
            if changes
                .send(Change::Insert(url.clone(), endpoint))
                .await
                .is_err()
            {
                return;
            }
        }
        inserted = wanted;
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_with_default_ports_and_spaces() {
        let targets = parse_list(" http://a:1 ,https://b, http://[::1]:9,").unwrap();
        assert_eq!(targets.len(), 3);
        assert_eq!((targets[0].host.as_str(), targets[0].port), ("a", 1));
        assert_eq!((targets[1].host.as_str(), targets[1].port), ("b", 443));
        assert_eq!(targets[2].fixed(), Some("[::1]:9".parse().unwrap()));
        assert!(parse_list(" , ").is_err());
        assert!(parse_list("http://").is_err());
    }

    /// Serves a tiny HTTP/2-less listener that only accepts: enough for the probe.
    async fn acceptor() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn the_watcher_takes_a_dead_replica_out_and_puts_it_back() {
        let (live, live_task) = acceptor().await;
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let targets = parse_list(&format!("http://{live},http://{dead}")).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let watcher = tokio::spawn(watch(targets, tx));
        // Only the live replica goes in.
        match rx.recv().await.unwrap() {
            Change::Insert(url, _) => assert_eq!(url, format!("http://{live}")),
            Change::Remove(url) => panic!("removed {url} before inserting anything"),
        }
        // Now the dead one comes up and the live one goes away.
        let back = tokio::net::TcpListener::bind(dead).await.unwrap();
        let back_task = tokio::spawn(async move {
            while let Ok((socket, _)) = back.accept().await {
                drop(socket);
            }
        });
        live_task.abort();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(Change::Insert(url, _))) => seen.push(format!("+{url}")),
                Ok(Some(Change::Remove(url))) => seen.push(format!("-{url}")),
                other => panic!("no change: {:?}", other.map(|c| c.is_some())),
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![format!("+http://{dead}"), format!("-http://{live}")]
        );
        watcher.abort();
        back_task.abort();
    }

    #[tokio::test]
    async fn when_no_replica_answers_all_stay_in_so_calls_fail_fast() {
        let dead = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let targets = parse_list(&format!("http://{},http://{}", dead(), dead())).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let watcher = tokio::spawn(watch(targets, tx));
        let mut inserted = 0;
        while let Ok(Some(change)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            match change {
                Change::Insert(..) => inserted += 1,
                Change::Remove(url) => panic!("removed {url} though nothing answers"),
            }
        }
        assert!(inserted >= 2, "{inserted}");
        watcher.abort();
    }
}
