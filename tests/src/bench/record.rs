//! What the benchmark records: when each message was handed to a sender and when each
//! receiver had it, keyed by a phase letter and a sequence number carried in the text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most nodes a phase can name (8 members, a joiner, head room).
pub const MAX_NODES: usize = 16;

/// A message of `size` bytes whose text starts with the phase letter and the sequence
/// number, so any receiver can tell which message it is.
pub fn text(phase: u8, seq: u32, size: usize) -> String {
    let mut s = format!("{}{seq:09}|", phase as char);
    const FILL: &str = "supervision notes, kept in confidence; ";
    while s.len() < size {
        let room = size - s.len();
        s.push_str(&FILL[..room.min(FILL.len())]);
    }
    s
}

/// The (phase, sequence number) of a benchmark message, if `text` is one.
pub fn parse(text: &[u8]) -> Option<(u8, u32)> {
    let phase = *text.first()?;
    if !phase.is_ascii_uppercase() || text.get(10) != Some(&b'|') {
        return None;
    }
    let digits = std::str::from_utf8(text.get(1..10)?).ok()?;
    Some((phase, digits.parse().ok()?))
}

#[derive(Debug, Default)]
struct Inner {
    /// (phase, seq) → (sending node, instant just before the send).
    sent: HashMap<(u8, u32), (usize, Instant)>,
    /// (phase, seq) → first instant each node had it.
    got: HashMap<(u8, u32), [Option<Instant>; MAX_NODES]>,
    /// (phase, node) → messages from *other* nodes that node has.
    count: HashMap<(u8, usize), usize>,
    /// Nodes whose follow stream closed unexpectedly (it lagged, or the node stopped).
    lost: [bool; MAX_NODES],
    /// The current follower of each node; an older one closing is not a loss.
    generation: [u64; MAX_NODES],
    /// How many times each node's follower was lost.
    losses: [u32; MAX_NODES],
}

/// Shared, cheap-to-clone record of sends and receipts.
#[derive(Debug, Clone, Default)]
pub struct Record(Arc<Mutex<Inner>>);

/// Per-receiver latencies of one phase.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    /// Latency of every (message, receiver) pair that arrived.
    pub samples: Vec<Duration>,
    /// (message, receiver) pairs expected.
    pub expected: usize,
}

impl Latencies {
    /// Fraction of expected pairs that arrived.
    pub fn delivered(&self) -> f64 {
        if self.expected == 0 {
            return 1.0;
        }
        self.samples.len() as f64 / self.expected as f64
    }

    /// The `q` quantile (nearest rank), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.samples, q)
    }
}

/// The `q` quantile (nearest rank) of `samples`, in milliseconds; NaN if empty.
pub fn quantile_ms(samples: &[Duration], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

impl Record {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes that `node` is about to send message (phase, seq).
    pub fn sent(&self, phase: u8, seq: u32, node: usize) {
        let now = Instant::now();
        self.lock().sent.insert((phase, seq), (node, now));
    }

    /// Notes that `node` has the message whose text is `text`, at `at`.
    pub fn got(&self, text: &[u8], node: usize, at: Instant) {
        let Some(key) = parse(text) else {
            return;
        };
        if node >= MAX_NODES {
            return;
        }
        let mut inner = self.lock();
        let sender = inner.sent.get(&key).map(|(s, _)| *s);
        let slot = &mut inner.got.entry(key).or_insert([None; MAX_NODES])[node];
        if slot.is_none() {
            *slot = Some(at);
            if sender != Some(node) {
                *inner.count.entry((key.0, node)).or_default() += 1;
            }
        }
    }

    /// How many messages of `phase` from other nodes `node` has.
    pub fn count(&self, phase: u8, node: usize) -> usize {
        self.lock().count.get(&(phase, node)).copied().unwrap_or(0)
    }

    /// When `node` first had message (phase, seq).
    pub fn receipt(&self, phase: u8, seq: u32, node: usize) -> Option<Instant> {
        self.lock()
            .got
            .get(&(phase, seq))
            .and_then(|at| at.get(node).copied().flatten())
    }

    /// Starts a new follower generation for `node` (the old one's end is no loss) and
    /// returns it.
    pub fn next_generation(&self, node: usize) -> u64 {
        let mut inner = self.lock();
        let Some(g) = inner.generation.get_mut(node) else {
            return 0;
        };
        *g += 1;
        let g = *g;
        inner.lost[node] = false;
        g
    }

    /// Marks `node`'s follow stream of `generation` as closed, if it is still the
    /// current one.
    pub fn lose(&self, node: usize, generation: u64) {
        let mut inner = self.lock();
        if inner.generation.get(node) == Some(&generation) {
            inner.lost[node] = true;
            inner.losses[node] += 1;
        }
    }

    /// How many times `node`'s follower was lost.
    pub fn losses(&self, node: usize) -> u32 {
        self.lock().losses.get(node).copied().unwrap_or(0)
    }

    /// Whether `node`'s current follow stream closed unexpectedly.
    pub fn lost(&self, node: usize) -> bool {
        node < MAX_NODES && self.lock().lost[node]
    }

    /// Per message of `phase`, the latencies at `receivers` (other than its sender) that
    /// arrived, fastest first: element k of each list is that message's (k+1)-th receiver.
    pub fn by_rank(&self, phase: u8, receivers: &[usize]) -> Vec<Vec<Duration>> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (key, (sender, t0)) in inner.sent.iter().filter(|(k, _)| k.0 == phase) {
            let Some(at) = inner.got.get(key) else {
                continue;
            };
            let mut l: Vec<Duration> = receivers
                .iter()
                .filter(|r| **r != *sender)
                .filter_map(|&r| at.get(r).copied().flatten())
                .map(|at| at.saturating_duration_since(*t0))
                .collect();
            l.sort_unstable();
            out.push(l);
        }
        out
    }

    /// Every receipt at `node` of a message of `phase`, earliest first.
    pub fn arrivals(&self, phase: u8, node: usize) -> Vec<Instant> {
        let inner = self.lock();
        let mut out: Vec<Instant> = inner
            .got
            .iter()
            .filter(|((p, _), _)| *p == phase)
            .filter_map(|(_, at)| at.get(node).copied().flatten())
            .collect();
        out.sort_unstable();
        out
    }

    /// Latency from send to receipt for every message of `phase` sent, at every node in
    /// `receivers` other than its sender.
    pub fn latencies(&self, phase: u8, receivers: &[usize]) -> Latencies {
        let inner = self.lock();
        let mut out = Latencies::default();
        for (key, (sender, t0)) in inner.sent.iter().filter(|(k, _)| k.0 == phase) {
            for &r in receivers.iter().filter(|r| **r != *sender) {
                out.expected += 1;
                let at = inner.got.get(key).and_then(|a| a.get(r).copied().flatten());
                if let Some(at) = at {
                    out.samples.push(at.saturating_duration_since(*t0));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_has_the_size() {
        let t = text(b'L', 42, 1024);
        assert_eq!(t.len(), 1024);
        assert_eq!(parse(t.as_bytes()), Some((b'L', 42)));
        assert_eq!(parse(b"hello"), None);
    }

    #[test]
    fn quantiles_use_nearest_rank() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&s, 0.5), 50.0);
        assert_eq!(quantile_ms(&s, 0.99), 99.0);
    }
}
