//! A circuit breaker per provider: after `THRESHOLD` consecutive provider failures, calls to it
//! are skipped (the fallback chain moves on) for `COOL_DOWN`; then one call is let through to
//! probe, and a success closes the circuit again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const THRESHOLD: u32 = 3;
const COOL_DOWN: Duration = Duration::from_secs(30);

#[derive(Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
}

#[derive(Clone, Default)]
pub struct Breakers {
    states: Arc<Mutex<HashMap<String, State>>>,
}

impl Breakers {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, State>) -> T) -> T {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut states)
    }

    /// Whether a call to `provider` may go out now.
    pub fn allows(&self, provider: &str, now: Instant) -> bool {
        self.with(|states| match states.get_mut(provider) {
            Some(state) => match state.open_until {
                Some(until) if now < until => false,
                Some(_) => {
                    // Half-open: let this one probe; a failure re-opens at once.
                    state.open_until = None;
                    state.failures = THRESHOLD - 1;
                    true
                }
                None => true,
            },
            None => true,
        })
    }

    pub fn success(&self, provider: &str) {
        self.with(|states| {
            states.remove(provider);
        });
    }

    pub fn failure(&self, provider: &str, now: Instant) {
        self.with(|states| {
            let state = states.entry(provider.to_string()).or_default();
            state.failures += 1;
            if state.failures >= THRESHOLD {
                state.open_until = Some(now + COOL_DOWN);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_cool_down() {
        let b = Breakers::default();
        let t0 = Instant::now();
        for _ in 0..THRESHOLD {
            assert!(b.allows("p", t0));
            b.failure("p", t0);
        }
        assert!(!b.allows("p", t0 + Duration::from_secs(1)));
        assert!(b.allows("other", t0));
        let later = t0 + COOL_DOWN + Duration::from_millis(1);
        assert!(b.allows("p", later), "half-open probe");
        b.failure("p", later);
        assert!(!b.allows("p", later), "a failed probe re-opens");
        let much_later = later + COOL_DOWN + Duration::from_millis(1);
        assert!(b.allows("p", much_later));
        b.success("p");
        assert!(b.allows("p", much_later));
    }
}
