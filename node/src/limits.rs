//! Per-peer limits on inbound requests, so a stranger cannot keep a node busy.
//!
//! A token bucket per (peer, kind): `burst` requests at once, refilled at `per_sec`. The
//! table is bounded: when full, the peer least recently seen is forgotten (it starts again
//! with a full bucket, which is the conservative direction for members and harmless for
//! strangers, who are limited by connection limits too).

use std::collections::HashMap;
use std::time::Instant;

use libp2p::PeerId;

/// Most peers tracked at once.
const MAX_PEERS: usize = 1024;

/// What kind of request a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Join requests (from people redeeming invites).
    Join,
    /// Answers saying a peer is over its [`Kind::Join`] limit.
    JoinRefusal,
    /// Sync pushes from peers that are not members of any room here.
    StrangerSync,
}

impl Kind {
    fn rate(self) -> (f64, f64) {
        match self {
            // Five attempts at once, then one every ten seconds.
            Kind::Join => (5.0, 0.1),
            // Past that, one answer saying so every ten seconds (a person who tried a few
            // times learns why), then silence.
            Kind::JoinRefusal => (1.0, 0.1),
            // A stranger's pushes are dropped anyway; allow a trickle, then nothing.
            Kind::StrangerSync => (3.0, 0.2),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per peer and kind.
#[derive(Debug, Default)]
pub struct RateLimits {
    buckets: HashMap<(PeerId, Kind), Bucket>,
}

impl RateLimits {
    /// Takes a token for a request of `kind` from `peer` at `now`; false if over the limit.
    pub fn allow(&mut self, peer: PeerId, kind: Kind, now: Instant) -> bool {
        let (burst, per_sec) = kind.rate();
        if self.buckets.len() >= MAX_PEERS
            && !self.buckets.contains_key(&(peer, kind))
            && let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| *k)
        {
            self.buckets.remove(&oldest);
        }
        let bucket = self.buckets.entry((peer, kind)).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let mut limits = RateLimits::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limits.allow(peer, Kind::Join, t0));
        }
        assert!(!limits.allow(peer, Kind::Join, t0));
        assert!(!limits.allow(peer, Kind::Join, t0 + Duration::from_secs(5)));
        assert!(limits.allow(peer, Kind::Join, t0 + Duration::from_secs(11)));
        // Another peer has its own bucket.
        assert!(limits.allow(PeerId::random(), Kind::Join, t0));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut limits = RateLimits::default();
        let t0 = Instant::now();
        for i in 0..(MAX_PEERS + 10) {
            limits.allow(
                PeerId::random(),
                Kind::StrangerSync,
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert!(limits.buckets.len() <= MAX_PEERS);
    }
}
