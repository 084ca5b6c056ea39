//! The runs this gateway replica just started, and for whom. The SSE read a client opens right
//! after its POST needs no GetRun round trip to svc-runs to be authorised (issue 23): the
//! replica that created the run already knows it is the caller's. Bounded and short-lived;
//! a read on another replica, or after [`TTL`], asks svc-runs as before.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pa_proto::v1::Identity;

/// How long a started run is remembered: long enough for the client's first read.
pub const TTL: Duration = Duration::from_secs(30);
/// At most this many runs are remembered (each entry is a few hundred bytes).
pub const CAPACITY: usize = 20_000;

struct Owner {
    chat_id: String,
    tenant_id: String,
    user_id: String,
    at: Instant,
}

#[derive(Default)]
pub struct RecentRuns {
    runs: Mutex<HashMap<String, Owner>>,
}

impl RecentRuns {
    /// `identity` just started `run_id` in `chat_id` here.
    pub fn remember(&self, run_id: &str, chat_id: &str, identity: &Identity) {
        let now = Instant::now();
        let Ok(mut runs) = self.runs.lock() else {
            return;
        };
        if runs.len() >= CAPACITY {
            runs.retain(|_, owner| now.duration_since(owner.at) < TTL);
            if runs.len() >= CAPACITY {
                // A burst beyond the capacity: forgetting only costs the GetRun it saves.
                runs.clear();
            }
        }
        runs.insert(
            run_id.to_string(),
            Owner {
                chat_id: chat_id.to_string(),
                tenant_id: identity.tenant_id.clone(),
                user_id: identity.user_id.clone(),
                at: now,
            },
        );
    }

    /// `chat_id` was deleted: its runs are vouched for no more (svc-runs answers 404).
    pub fn forget_chat(&self, chat_id: &str) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.retain(|_, owner| owner.chat_id != chat_id);
        }
    }

    /// Whether this replica started `run_id` for `identity` less than [`TTL`] ago. `false`
    /// means "ask svc-runs", never "refuse".
    pub fn started_for(&self, run_id: &str, identity: &Identity) -> bool {
        let Ok(runs) = self.runs.lock() else {
            return false;
        };
        runs.get(run_id).is_some_and(|owner| {
            owner.at.elapsed() < TTL
                && owner.tenant_id == identity.tenant_id
                && owner.user_id == identity.user_id
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(tenant: &str, user: &str) -> Identity {
        Identity {
            tenant_id: tenant.into(),
            user_id: user.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_creator_is_vouched_for() {
        let recent = RecentRuns::default();
        recent.remember("r1", "c1", &who("t1", "alice"));
        assert!(recent.started_for("r1", &who("t1", "alice")));
        assert!(!recent.started_for("r1", &who("t1", "bob")));
        assert!(!recent.started_for("r1", &who("t2", "alice")));
        assert!(!recent.started_for("r2", &who("t1", "alice")));
        recent.forget_chat("c1");
        assert!(!recent.started_for("r1", &who("t1", "alice")));
    }

    #[test]
    fn it_stays_bounded() {
        let recent = RecentRuns::default();
        for i in 0..CAPACITY + 10 {
            recent.remember(&format!("r{i}"), "c", &who("t", "u"));
        }
        let len = recent.runs.lock().map(|r| r.len()).unwrap_or(usize::MAX);
        assert!(len <= CAPACITY, "{len}");
        assert!(recent.started_for(&format!("r{}", CAPACITY + 9), &who("t", "u")));
    }
}
