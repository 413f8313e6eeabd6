//! Back-off of failing peers: a peer that is down, slow, refuses or serves bad bytes is skipped
//! for a while, doubling with each consecutive failure, so readers stop paying its timeout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First back-off after a failure.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, Default)]
struct State {
    failures: u32,
    skip_until: Option<Instant>,
}

/// Failure history per peer (by authority).
#[derive(Debug, Default)]
pub struct PeerHealth {
    states: Mutex<HashMap<String, State>>,
}

impl PeerHealth {
    /// True unless `peer` is backing off.
    pub fn available(&self, peer: &str) -> bool {
        self.available_at(peer, Instant::now())
    }

    /// Records a failure of `peer`. Returns the back-off when this failure starts one, `None`
    /// when the peer was already backing off (requests under way when it began do not extend it).
    pub fn failed(&self, peer: &str) -> Option<Duration> {
        self.failed_at(peer, Instant::now())
    }

    /// Records a success: the peer's failure history is forgotten.
    pub fn succeeded(&self, peer: &str) {
        let mut states = self.states.lock().expect("peer health lock");
        if states.contains_key(peer) {
            states.remove(peer);
            tracing::info!(peer, "peer is answering again");
        }
    }

    /// Seconds `peer` is still skipped for (0 when available).
    pub fn backoff_left(&self, peer: &str) -> Duration {
        let states = self.states.lock().expect("peer health lock");
        states
            .get(peer)
            .and_then(|s| s.skip_until)
            .map(|until| until.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    fn available_at(&self, peer: &str, now: Instant) -> bool {
        let states = self.states.lock().expect("peer health lock");
        states
            .get(peer)
            .and_then(|s| s.skip_until)
            .is_none_or(|until| now >= until)
    }

    fn failed_at(&self, peer: &str, now: Instant) -> Option<Duration> {
        let mut states = self.states.lock().expect("peer health lock");
        let state = states.entry(peer.to_string()).or_default();
        if state.skip_until.is_some_and(|until| now < until) {
            return None;
        }
        state.failures = state.failures.saturating_add(1);
        let backoff = BACKOFF_START
            .saturating_mul(1u32 << state.failures.saturating_sub(1).min(16))
            .min(BACKOFF_MAX);
        state.skip_until = Some(now + backoff);
        Some(backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling_and_success_resets_it() {
        let health = PeerHealth::default();
        let t0 = Instant::now();
        assert!(health.available_at("a", t0));
        assert_eq!(health.failed_at("a", t0), Some(BACKOFF_START));
        assert!(!health.available_at("a", t0 + BACKOFF_START / 2));
        assert!(health.available_at("b", t0), "other peers unaffected");
        // A failure during the back-off does not extend it.
        assert_eq!(health.failed_at("a", t0 + BACKOFF_START / 2), None);
        let t1 = t0 + BACKOFF_START;
        assert!(health.available_at("a", t1));
        assert_eq!(health.failed_at("a", t1), Some(BACKOFF_START * 2));
        let mut t = t1;
        for _ in 0..10 {
            t += BACKOFF_MAX;
            health.failed_at("a", t);
        }
        assert_eq!(health.failed_at("a", t + BACKOFF_MAX), Some(BACKOFF_MAX));
        health.succeeded("a");
        assert!(health.available_at("a", t));
        assert_eq!(health.failed_at("a", t), Some(BACKOFF_START));
    }
}
