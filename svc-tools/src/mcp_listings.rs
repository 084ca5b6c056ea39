//! MCP tool listings kept for a short while (ADR 0214), so a run's toolset does not open a
//! session with every selected MCP server (for stdio: start a process) each time it is
//! assembled.
//!
//! A listing is keyed by the caller (tenant, user), the integration and a fingerprint of
//! everything that decides what the server is: command, arguments, environment and secrets, or
//! URL, headers and token. Editing an integration, or changing its secrets, so asks the server
//! again at once; a server that changes its own tools is seen within `PA_TOOLS_MCP_LIST_CACHE_MS`
//! (60 s by default; 0 = list at every assembly). Only successful listings are kept: a server
//! that failed is asked again next time.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pa_proto::v1::Identity;

use crate::mcp::{Listing, Target};

/// Listings kept at most (beyond it, expired ones go, then all).
const MAX_LISTINGS: usize = 10_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ListingKey {
    tenant_id: String,
    user_id: String,
    integration_id: String,
    target: u64,
}

impl ListingKey {
    pub fn new(identity: &Identity, integration_id: &str, target: &Target) -> Self {
        Self {
            tenant_id: identity.tenant_id.clone(),
            user_id: identity.user_id.clone(),
            integration_id: integration_id.to_string(),
            target: fingerprint(target),
        }
    }
}

/// What decides the server a target reaches (the sandbox's settings are the operator's and
/// the same for every listing).
fn fingerprint(target: &Target) -> u64 {
    let mut hasher = DefaultHasher::new();
    match target {
        Target::Stdio {
            command,
            args,
            env,
            network,
            sandbox: _,
        } => ("stdio", command, args, env, network).hash(&mut hasher),
        Target::Http {
            url,
            headers,
            bearer,
        } => ("http", url, headers, bearer).hash(&mut hasher),
    }
    hasher.finish()
}

/// The listings of this process (shared by its assemblies).
pub struct McpListings {
    keep_for: Duration,
    listings: Mutex<HashMap<ListingKey, (Instant, Arc<Listing>)>>,
}

impl McpListings {
    pub fn new(keep_for: Duration) -> Self {
        Self {
            keep_for,
            listings: Mutex::new(HashMap::new()),
        }
    }

    /// The listing kept under `key`, if it is recent enough.
    pub fn get(&self, key: &ListingKey) -> Option<Arc<Listing>> {
        let listings = self.listings.lock().unwrap_or_else(|e| e.into_inner());
        listings
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.keep_for)
            .map(|(_, listing)| listing.clone())
    }

    /// Keeps a successful listing (unless keeping is off).
    pub fn put(&self, key: ListingKey, listing: Arc<Listing>) {
        if self.keep_for.is_zero() {
            return;
        }
        let mut listings = self.listings.lock().unwrap_or_else(|e| e.into_inner());
        if listings.len() >= MAX_LISTINGS {
            let keep_for = self.keep_for;
            listings.retain(|_, (at, _)| at.elapsed() < keep_for);
            if listings.len() >= MAX_LISTINGS {
                listings.clear();
            }
        }
        listings.insert(key, (Instant::now(), listing));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn http(url: &str, bearer: Option<&str>) -> Target {
        Target::Http {
            url: url.into(),
            headers: BTreeMap::new(),
            bearer: bearer.map(String::from),
        }
    }

    fn identity(tenant: &str, user: &str) -> Identity {
        Identity {
            tenant_id: tenant.into(),
            user_id: user.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_listing_is_kept_only_for_its_owner_and_its_exact_target() {
        let listings = McpListings::new(Duration::from_secs(60));
        let alice = identity("t1", "alice");
        let target = http("https://mcp.example/a", Some("secret-1"));
        let key = ListingKey::new(&alice, "int-1", &target);
        listings.put(key.clone(), Arc::new(Listing::default()));
        assert!(listings.get(&key).is_some());
        // Another user, another tenant, another integration: not theirs.
        for other in [
            ListingKey::new(&identity("t1", "bob"), "int-1", &target),
            ListingKey::new(&identity("t2", "alice"), "int-1", &target),
            ListingKey::new(&alice, "int-2", &target),
        ] {
            assert!(listings.get(&other).is_none(), "{other:?}");
        }
        // The same integration pointed elsewhere, or with another secret: asked again.
        for changed in [
            http("https://mcp.example/b", Some("secret-1")),
            http("https://mcp.example/a", Some("secret-2")),
            http("https://mcp.example/a", None),
        ] {
            assert!(
                listings
                    .get(&ListingKey::new(&alice, "int-1", &changed))
                    .is_none()
            );
        }
    }

    #[test]
    fn a_listing_expires_and_keeping_can_be_off() {
        let listings = McpListings::new(Duration::from_millis(30));
        let key = ListingKey::new(&identity("t", "u"), "i", &http("https://x", None));
        listings.put(key.clone(), Arc::new(Listing::default()));
        assert!(listings.get(&key).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(listings.get(&key).is_none());

        let off = McpListings::new(Duration::ZERO);
        off.put(key.clone(), Arc::new(Listing::default()));
        assert!(off.get(&key).is_none());
    }
}
