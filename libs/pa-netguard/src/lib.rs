//! Outbound HTTP for tools and model providers, safe against server-side request forgery: only http/https, every
//! host name resolved here and private, loopback, link-local, CGNAT, unique-local and metadata
//! addresses refused (unless the operator's allow-list names them), the connection made to the
//! very address that was checked (a resolver that filters, so no second lookup can differ), and
//! redirects followed by hand, each hop checked again.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a request did not happen (or did not finish). Messages are for the model: short, and
/// without internals.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("invalid URL: {0}")]
    BadUrl(String),
    #[error("the request timed out")]
    Timeout,
    #[error("too many redirects (at most {0})")]
    TooManyRedirects(usize),
    #[error("request failed: {0}")]
    Failed(String),
}

/// Operator exceptions: CIDRs and host names that may be reached although private.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    nets: Vec<IpNet>,
    hosts: Vec<String>,
}

impl AllowList {
    /// `10.0.0.0/8, 127.0.0.1, intranet.example.com`: CIDRs, single addresses or host names.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut list = Self::default();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Ok(net) = IpNet::from_str(entry) {
                list.nets.push(net);
            } else if let Ok(ip) = IpAddr::from_str(entry) {
                list.nets.push(IpNet::from(ip));
            } else if entry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                list.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!("{entry:?} is neither a CIDR nor a host name"));
            }
        }
        Ok(list)
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

/// Why `ip` is not a public address, or `None` when it is.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u8, &str)] = &[
        ([169, 254, 169, 254], 32, "a cloud metadata address"),
        ([0, 0, 0, 0], 8, "a 'this network' address"),
        ([10, 0, 0, 0], 8, "a private address"),
        ([100, 64, 0, 0], 10, "a carrier-grade NAT address"),
        ([127, 0, 0, 0], 8, "a loopback address"),
        ([169, 254, 0, 0], 16, "a link-local address"),
        ([172, 16, 0, 0], 12, "a private address"),
        ([192, 0, 0, 0], 24, "an IETF protocol address"),
        ([192, 0, 2, 0], 24, "a documentation address"),
        ([192, 88, 99, 0], 24, "a relay address"),
        ([192, 168, 0, 0], 16, "a private address"),
        ([198, 18, 0, 0], 15, "a benchmarking address"),
        ([198, 51, 100, 0], 24, "a documentation address"),
        ([203, 0, 113, 0], 24, "a documentation address"),
        ([224, 0, 0, 0], 4, "a multicast address"),
        ([240, 0, 0, 0], 4, "a reserved address"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    // Addresses that carry an IPv4 address are judged by it (mapped, NAT64, 6to4).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = seg[6].to_be_bytes();
        let [c, d] = seg[7].to_be_bytes();
        return v4_reason(Ipv4Addr::new(a, b, c, d));
    }
    if seg[0] == 0x2002 {
        let [a, b] = seg[1].to_be_bytes();
        let [c, d] = seg[2].to_be_bytes();
        return v4_reason(Ipv4Addr::new(a, b, c, d));
    }
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254) {
        return Some("a cloud metadata address");
    }
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    match seg[0] {
        s if s & 0xfe00 == 0xfc00 => Some("a unique-local address"),
        s if s & 0xffc0 == 0xfe80 => Some("a link-local address"),
        s if s & 0xffc0 == 0xfec0 => Some("a site-local address"),
        s if s & 0xff00 == 0xff00 => Some("a multicast address"),
        0x2001 if seg[1] == 0x0db8 => Some("a documentation address"),
        0x0100 if seg[1..4] == [0, 0, 0] => Some("a discard address"),
        // IPv4-compatible (deprecated) ::a.b.c.d.
        0 if seg[1..6] == [0, 0, 0, 0, 0] => Some("an IPv4-compatible address"),
        _ => None,
    }
}

struct Policy {
    allow: AllowList,
    overrides: HashMap<String, IpAddr>,
}

impl Policy {
    fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), NetError> {
        match non_public_reason(ip) {
            Some(why) if !self.allow.allows_ip(ip) => Err(NetError::Refused(format!(
                "{host} is {why} ({ip}), which may not be reached from here"
            ))),
            _ => Ok(()),
        }
    }
}

/// Resolves names itself and hands reqwest only addresses that passed the policy, so the
/// connection goes to a checked address.
struct GuardedResolver(Arc<Policy>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match policy.overrides.get(&host) {
                Some(ip) => vec![SocketAddr::new(*ip, 0)],
                None => tokio::net::lookup_host((host.as_str(), 0))
                    .await
                    .map_err(|_| NetError::Failed(format!("cannot resolve {host}")))?
                    .collect(),
            };
            if policy.allow.allows_host(&host) {
                return Ok(Box::new(addrs.into_iter()) as Addrs);
            }
            // Every address must pass: a name with one public and one private address is
            // refused rather than half-trusted.
            for addr in &addrs {
                policy.check_ip(&host, addr.ip())?;
            }
            if addrs.is_empty() {
                return Err(NetError::Failed(format!("cannot resolve {host}")).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// What came back.
pub struct Fetched {
    pub url: Url,
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// The body was longer than the cap and was cut.
    pub truncated: bool,
}

/// A request to make through [`NetGuard::send`].
pub struct Request {
    pub url: Url,
    pub headers: Vec<(String, String)>,
    /// A JSON body makes it a POST.
    pub json: Option<serde_json::Value>,
}

impl Request {
    pub fn get(url: Url) -> Self {
        Self {
            url,
            headers: Vec::new(),
            json: None,
        }
    }
}

/// The guarded HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct NetGuard {
    policy: Arc<Policy>,
    client: reqwest::Client,
    max_bytes: usize,
    timeout: Duration,
}

pub const MAX_REDIRECTS: usize = 5;

impl NetGuard {
    pub fn new(
        allow: AllowList,
        overrides: &[(String, IpAddr)],
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(Policy {
            allow,
            overrides: overrides.iter().cloned().collect(),
        });
        let client = Self::client_builder_for(&policy).build()?;
        Ok(Self {
            policy,
            client,
            max_bytes,
            timeout,
        })
    }

    fn client_builder_for(policy: &Arc<Policy>) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .dns_resolver(GuardedResolver(policy.clone()))
            // Redirects are followed by hand, each one checked.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names itself, past the guard.
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("personal-agent/", env!("CARGO_PKG_VERSION")))
    }

    /// A reqwest client under the same policy (for libraries that want one, e.g. MCP over
    /// HTTP). It follows no redirects; check URLs with [`check_url`](Self::check_url) first.
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// Scheme, and IP-literal hosts (reqwest does not resolve those, so the resolver cannot
    /// check them).
    pub fn check_url(&self, url: &Url) -> Result<(), NetError> {
        check_url(&self.policy, url)
    }

    /// Sends `request`, following up to [`MAX_REDIRECTS`] redirects (each checked; a POST
    /// becomes a GET after 301/302/303), reading at most the configured bytes, within the
    /// configured time.
    pub async fn send(&self, request: Request) -> Result<Fetched, NetError> {
        match tokio::time::timeout(self.timeout, self.send_inner(request)).await {
            Ok(result) => result,
            Err(_) => Err(NetError::Timeout),
        }
    }

    async fn send_inner(&self, request: Request) -> Result<Fetched, NetError> {
        let Request {
            mut url,
            headers,
            mut json,
        } = request;
        for hop in 0..=MAX_REDIRECTS {
            self.check_url(&url)?;
            let mut builder = match &json {
                Some(body) => self.client.post(url.clone()).json(body),
                None => self.client.get(url.clone()),
            };
            for (name, value) in &headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            let response = builder.send().await.map_err(request_error)?;
            let status = response.status();
            if status.is_redirection()
                && let Some(location) = response.headers().get(reqwest::header::LOCATION)
            {
                if hop == MAX_REDIRECTS {
                    return Err(NetError::TooManyRedirects(MAX_REDIRECTS));
                }
                let location = location
                    .to_str()
                    .map_err(|_| NetError::BadUrl("unreadable redirect location".into()))?;
                url = url
                    .join(location)
                    .map_err(|e| NetError::BadUrl(format!("redirect location: {e}")))?;
                if matches!(status.as_u16(), 301..=303) {
                    json = None;
                }
                continue;
            }
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            let final_url = response.url().clone();
            let mut body = Vec::new();
            let mut truncated = false;
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(request_error)?;
                let room = self.max_bytes.saturating_sub(body.len());
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(Fetched {
                url: final_url,
                status: status.as_u16(),
                content_type,
                body,
                truncated,
            });
        }
        Err(NetError::TooManyRedirects(MAX_REDIRECTS))
    }
}

/// Finds our own refusal in reqwest's error chain (the resolver's), else a short message.
fn request_error(err: reqwest::Error) -> NetError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(ours) = e.downcast_ref::<NetError>() {
            return ours.clone();
        }
        source = e.source();
    }
    if err.is_timeout() {
        return NetError::Timeout;
    }
    if err.is_connect() {
        return NetError::Failed("could not connect".into());
    }
    NetError::Failed(err.without_url().to_string())
}

fn check_url(policy: &Policy, url: &Url) -> Result<(), NetError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(NetError::Refused(format!(
            "only http and https URLs can be fetched, not {}:",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(NetError::Refused(
            "URLs with credentials are not fetched".into(),
        ));
    }
    match url.host() {
        None => Err(NetError::BadUrl("no host".into())),
        Some(url::Host::Ipv4(ip)) => policy.check_ip(&ip.to_string(), IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => policy.check_ip(&ip.to_string(), IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => Ok(()),
    }
}

/// The guard's address policy for callers that build their own HTTP client (model providers'
/// base URLs): the same resolver that refuses non-public addresses, and the same URL checks.
#[derive(Clone)]
pub struct AddressGuard {
    policy: Arc<Policy>,
}

impl AddressGuard {
    pub fn new(allow: AllowList, overrides: &[(String, IpAddr)]) -> Self {
        Self {
            policy: Arc::new(Policy {
                allow,
                overrides: overrides.iter().cloned().collect(),
            }),
        }
    }

    /// A client builder whose every connection goes to an address that passed the policy; it
    /// follows no redirects and uses no proxy.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        NetGuard::client_builder_for(&self.policy)
    }

    /// Scheme, credentials and IP-literal hosts.
    pub fn check_url(&self, url: &Url) -> Result<(), NetError> {
        check_url(&self.policy, url)
    }

    /// [`check_url`](Self::check_url) and, for a host name, every address it resolves to now:
    /// for refusing a URL when it is configured, with a clear reason (calls are guarded again).
    pub async fn check_reachable(&self, url: &Url) -> Result<(), NetError> {
        self.check_url(url)?;
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(());
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.policy.allow.allows_host(&host) {
            return Ok(());
        }
        let addrs: Vec<IpAddr> = match self.policy.overrides.get(&host) {
            Some(ip) => vec![*ip],
            None => tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| NetError::Failed(format!("cannot resolve {host}")))?
                .map(|a| a.ip())
                .collect(),
        };
        if addrs.is_empty() {
            return Err(NetError::Failed(format!("cannot resolve {host}")));
        }
        for ip in addrs {
            self.policy.check_ip(&host, ip)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ip: &str) -> bool {
        non_public_reason(ip.parse().unwrap()).is_some()
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
        ] {
            assert!(refused(ip), "{ip} should be refused");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(!refused(ip), "{ip} is public");
        }
        assert_eq!(
            non_public_reason("169.254.169.254".parse().unwrap()),
            Some("a cloud metadata address")
        );
        assert_eq!(
            non_public_reason("fd00:ec2::254".parse().unwrap()),
            Some("a cloud metadata address")
        );
    }

    #[test]
    fn allow_list_parses_and_matches() {
        let list = AllowList::parse(" 10.0.0.0/8 ,127.0.0.1, Intranet.Example.com,").unwrap();
        assert!(list.allows_ip("10.9.9.9".parse().unwrap()));
        assert!(list.allows_ip("127.0.0.1".parse().unwrap()));
        assert!(!list.allows_ip("127.0.0.2".parse().unwrap()));
        assert!(list.allows_host("intranet.example.com."));
        assert!(!list.allows_host("example.com"));
        assert!(AllowList::parse("not a host!").is_err());
        assert!(AllowList::parse("").unwrap().nets.is_empty());
    }

    #[test]
    fn urls_are_checked_before_any_request() {
        let guard = NetGuard::new(AllowList::default(), &[], 1024, Duration::from_secs(1)).unwrap();
        for bad in [
            "file:///etc/passwd",
            "ftp://example.com/",
            "gopher://example.com/",
            "http://127.0.0.1/",
            "http://[::1]:8080/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://user:pw@example.com/",
        ] {
            let url = Url::parse(bad).unwrap();
            assert!(guard.check_url(&url).is_err(), "{bad} passed");
        }
        assert!(
            guard
                .check_url(&Url::parse("https://example.com/a").unwrap())
                .is_ok()
        );
    }

    #[tokio::test]
    async fn an_address_guard_refuses_what_the_fetcher_refuses() {
        let guard = AddressGuard::new(AllowList::default(), &[]);
        for url in [
            "http://127.0.0.1:8080/v1",
            "http://localhost:8080/v1",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:80/",
            "http://10.1.2.3/v1",
            "http://user:pw@api.example.com/v1",
            "file:///etc/passwd",
        ] {
            let url = Url::parse(url).unwrap();
            assert!(guard.check_reachable(&url).await.is_err(), "{url}");
        }
        let allowed = AddressGuard::new(AllowList::parse("127.0.0.1, localhost").unwrap(), &[]);
        for url in ["http://127.0.0.1:8080/v1", "http://localhost:9/v1"] {
            let url = Url::parse(url).unwrap();
            assert!(allowed.check_reachable(&url).await.is_ok(), "{url}");
        }
        // The allow-list is exact: it admits no other private address.
        let url = Url::parse("http://10.0.0.1/v1").unwrap();
        assert!(allowed.check_reachable(&url).await.is_err());
    }
}
