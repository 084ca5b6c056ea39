//! Every Redis key and channel name of the platform. All start with `pa:`; the part after it
//! names the owner of the data (`run`, `runs`, `device`, `rl`, `quota`, `presence`). Values that
//! come from clients (tenant, user, device and call ids) are placed so that no two different
//! inputs give the same key (a fixed number of segments after a fixed prefix, or a length prefix
//! where a segment may contain `:`).

/// A run's AG-UI event stream (XADD/XREAD).
pub fn run_events(run_id: &str) -> String {
    format!("pa:run:{run_id}:events")
}

/// The wake stream of one process's event hub (`event_hub.rs`): an XADD here ends the hub's
/// blocked XREAD so it takes a new follower in. `instance` is a fresh UUID per hub.
pub fn event_hub_wake(instance: &str) -> String {
    format!("pa:hub:{instance}:wake")
}

/// A run's cancel flag (seen by a driver in another process).
pub fn run_cancel(run_id: &str) -> String {
    format!("pa:run:{run_id}:cancel")
}

/// What svc-runs hands over to a durable run after starting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handover {
    /// The memories recalled for the run's first turn.
    Recall,
}

impl Handover {
    fn segment(self) -> &'static str {
        match self {
            Handover::Recall => "recall",
        }
    }
}

/// Where a hand-over of a run is kept.
pub fn run_handover(run_id: &str, what: Handover) -> String {
    format!("pa:run:{run_id}:{}", what.segment())
}

/// A tool call's approval state.
pub fn run_approval(run_id: &str, tool_call_id: &str) -> String {
    format!("pa:run:{run_id}:approval:{tool_call_id}")
}

/// What an inline run's owner records whenever its usage or attempts change (for whoever ends
/// the run after the owner's death).
pub fn run_progress(run_id: &str) -> String {
    format!("pa:run:{run_id}:progress")
}

/// A claim-checked payload of a durable run (content-addressed by `digest`).
pub fn run_claim(run_id: &str, digest: &str) -> String {
    format!("pa:run:{run_id}:claim:{digest}")
}

/// The run-end outbox of the deployment whose database is `database`: deployments (and test
/// meshes) sharing one Redis never land, or drop, each other's entries.
pub fn runs_outbox(database: &str) -> String {
    format!("pa:runs:outbox:{database}")
}

/// The heartbeat of a svc-runs instance that owns inline runs.
pub fn runs_owner_beat(owner: &str) -> String {
    format!("pa:runs:owner:{owner}:beat")
}

/// The gateway connection holding a device's socket (with a TTL).
pub fn device_online(device_id: &str) -> String {
    format!("pa:device:{device_id}:online")
}

/// The pub/sub channel of one gateway connection to a device.
pub fn device_calls_channel(connection_id: &str) -> String {
    format!("pa:device:conn:{connection_id}:calls")
}

/// The list a device call's result is pushed onto.
pub fn device_result(call_id: &str) -> String {
    format!("pa:device:result:{call_id}")
}

/// One user's request count in a rate window.
pub fn rate_user(tenant: &str, user: &str, window: u64) -> String {
    format!("pa:rl:u:{}:{tenant}:{user}:{window}", tenant.len())
}

/// One tenant's request count in a rate window.
pub fn rate_tenant(tenant: &str, window: u64) -> String {
    format!("pa:rl:t:{tenant}:{window}")
}

/// One user's tokens spent on one day.
pub fn quota_tokens(tenant: &str, user: &str, day: u64) -> String {
    format!("pa:quota:tokens:{}:{tenant}:{user}:{day}", tenant.len())
}

/// A user's online clients (the control socket's presence set).
pub fn presence(tenant: &str, user: &str) -> String {
    format!("pa:presence:{}:{tenant}:{user}", tenant.len())
}

/// The generation of what a user's toolsets are made of (svc-tools' integrations, chat
/// selections, devices): a fresh random token whenever any of it changes, so a toolset assembled
/// under one token may be reused while the token stays (`toolset_generation.rs`). Per deployment
/// (its `database`), like the outbox.
pub fn toolset_generation(database: &str, tenant: &str, user: &str) -> String {
    format!(
        "pa:tools:gen:{}:{database}:{}:{tenant}:{user}",
        database.len(),
        tenant.len()
    )
}

/// The one channel presence changes are published on; the payload is the user's presence key.
pub const PRESENCE_CHANGED: &str = "pa:presence:changed";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_in_the_pa_namespace() {
        let all = [
            run_events("r"),
            run_cancel("r"),
            run_handover("r", Handover::Recall),
            run_approval("r", "t"),
            run_progress("r"),
            run_claim("r", "d"),
            runs_outbox("db"),
            runs_owner_beat("o"),
            device_online("d"),
            device_calls_channel("c"),
            device_result("c"),
            rate_user("t", "u", 1),
            rate_tenant("t", 1),
            quota_tokens("t", "u", 1),
            presence("t", "u"),
            toolset_generation("db", "t", "u"),
            PRESENCE_CHANGED.to_string(),
        ];
        for key in &all {
            assert!(key.starts_with("pa:"), "{key}");
        }
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "two kinds of data share a key");
    }

    #[test]
    fn tenant_and_user_segments_cannot_be_shifted_into_each_other() {
        // A tenant "a:b" with user "c" and a tenant "a" with user "b:c" are different people.
        assert_ne!(rate_user("a:b", "c", 1), rate_user("a", "b:c", 1));
        assert_ne!(quota_tokens("a:b", "c", 1), quota_tokens("a", "b:c", 1));
        assert_ne!(presence("a:b", "c"), presence("a", "b:c"));
        assert_ne!(
            toolset_generation("d", "a:b", "c"),
            toolset_generation("d", "a", "b:c")
        );
        assert_ne!(
            toolset_generation("d:a", "b", "c"),
            toolset_generation("d", "a:b", "c")
        );
    }
}
