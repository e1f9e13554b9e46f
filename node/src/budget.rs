//! How much work members may make a node do: decisions only, with time an argument.
//!
//! Strangers are kept out before any of this (connection limits, `limits`): here every
//! sender is a member (or a former member, whose pushes may carry operations). A member
//! can still ask a node for far more than it costs the member to ask: one 64 KiB push
//! names 2,000 messages to read, decrypt and send back; a summary or digest under a fresh
//! salt makes the node hash every message id it holds; a subscription is answered with
//! the whole log and the recent messages. So each member has budgets ([`Budgets`]), token
//! buckets keyed by the member's identity in the room (its member id, which only an
//! admission signed by the facilitator creates), not by anything a peer can make up;
//! messages a member asks for are read a few at a time as its pushes drain ([`Asked`]),
//! each sent at most once per [`ASK_AGAIN`] however often it asks; and the room's log and
//! recent messages go to a member at most once a sync round unless something changed
//! ([`whole_log_due`], [`reconcile_due`]).
//!
//! The buckets are sized for what an honest member's node does at its busiest (catching
//! up on a long absence, reconnecting), so they never slow it down; beyond them a
//! member's requests are dropped and counted (`confer status`, `dropped`), and what it
//! missed it asks for again, as after any lost push.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use confer_room::{MemberId, RoomId};

use crate::sync::Id;

/// What a budget is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Sync pushes taken in.
    Push,
    /// Message ids asked for (each a store read, a decryption and an envelope to send).
    Want,
    /// Membership operations pushed (each decoded, hashed and, if new, verified).
    Op,
    /// Pushes whose operations changed the log (each a room record written and flushed).
    LogChange,
    /// Message ids hashed for a summary under a salt not seen before, or scanned to list
    /// the ids of differing days.
    Summary,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Push,
        Kind::Want,
        Kind::Op,
        Kind::LogChange,
        Kind::Summary,
    ];

    /// (burst, per second).
    fn rate(self) -> (f64, f64) {
        match self {
            // A catch-up of a full reply's worth (30,000 messages) is about 700 pushes
            // of envelopes; 256 a second is 16 MiB/s of them.
            Kind::Push => (1024.0, 256.0),
            // A member catching up asks for up to a full reply's ids at once.
            Kind::Want => (crate::sync::MAX_REPLY_IDS as f64, 1000.0),
            // Two whole logs at the log's cap, then one a minute.
            Kind::Op => (
                2.0 * confer_room::log::MAX_OPS as f64,
                confer_room::log::MAX_OPS as f64 / 60.0,
            ),
            // Changes come a handful a week; a node far behind takes them in one push.
            Kind::LogChange => (16.0, 0.5),
            // Ten summaries of a 20,000-message room at once, then one every second.
            Kind::Summary => (200_000.0, 20_000.0),
        }
    }

    fn index(self) -> usize {
        match self {
            Kind::Push => 0,
            Kind::Want => 1,
            Kind::Op => 2,
            Kind::LogChange => 3,
            Kind::Summary => 4,
        }
    }
}

/// Whose budget: a member (or former member) of a room, by its member id there.
pub type Member = (RoomId, MemberId);

/// Most members tracked at once; past it the one least recently seen is forgotten (and
/// starts again with full buckets).
const MAX_MEMBERS: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per member and [`Kind`].
#[derive(Debug, Default)]
pub struct Budgets {
    members: HashMap<Member, ([Bucket; 5], Instant)>,
}

impl Budgets {
    /// Takes `cost` from `who`'s budget of `kind` at `now`, all or nothing; whether it
    /// could.
    pub fn take(&mut self, who: Member, kind: Kind, cost: u64, now: Instant) -> bool {
        let bucket = self.bucket(who, kind, now);
        let cost = cost as f64;
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Takes as much of `cost` as `who`'s budget of `kind` holds at `now`; how much.
    pub fn take_up_to(&mut self, who: Member, kind: Kind, cost: u64, now: Instant) -> u64 {
        let bucket = self.bucket(who, kind, now);
        let granted = (bucket.tokens.max(0.0).floor() as u64).min(cost);
        bucket.tokens -= granted as f64;
        granted
    }

    /// Whether `who`'s budget of `kind` holds `cost` at `now` (nothing taken).
    pub fn has(&mut self, who: Member, kind: Kind, cost: u64, now: Instant) -> bool {
        self.bucket(who, kind, now).tokens >= cost as f64
    }

    /// The bucket, refilled to `now`.
    fn bucket(&mut self, who: Member, kind: Kind, now: Instant) -> &mut Bucket {
        if self.members.len() >= MAX_MEMBERS
            && !self.members.contains_key(&who)
            && let Some(oldest) = self
                .members
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(k, _)| *k)
        {
            self.members.remove(&oldest);
        }
        let (buckets, seen) = self.members.entry(who).or_insert_with(|| {
            (
                Kind::ALL.map(|k| Bucket {
                    tokens: k.rate().0,
                    at: now,
                }),
                now,
            )
        });
        *seen = now;
        let (burst, per_sec) = kind.rate();
        let bucket = &mut buckets[kind.index()];
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(burst);
        bucket.at = now;
        bucket
    }
}

/// How long a message sent to a member in answer to its asking is not sent to it again,
/// however often it asks: 5 s, half the 10 s a member's node waits before asking again
/// (`sync::Wants`), so a node asking again because an answer was lost is served, and only
/// one that asks on purpose is turned down.
pub const ASK_AGAIN: Duration = Duration::from_secs(5);

/// Most ids waiting to be sent to one member (a full reply's worth).
const ASKED_LIMIT: usize = crate::sync::MAX_REPLY_IDS;

/// The messages one member asked for and has not been sent yet, in the order asked, and
/// those sent to it lately. The node reads them from its store a few at a time, as its
/// pushes to the member are answered, so one push asking for thousands costs nothing at
/// once.
#[derive(Debug, Default)]
pub struct Asked {
    queue: VecDeque<Id>,
    queued: HashSet<Id>,
    sent: HashMap<Id, Instant>,
}

impl Asked {
    /// Takes `ids` asked for at `now`, except those waiting already, sent within
    /// [`ASK_AGAIN`], or beyond the queue's bound. Returns how many were taken.
    pub fn ask(&mut self, ids: impl IntoIterator<Item = Id>, now: Instant) -> usize {
        let mut taken = 0;
        for id in ids {
            if self.queue.len() >= ASKED_LIMIT {
                break;
            }
            let recent = self
                .sent
                .get(&id)
                .is_some_and(|at| now.saturating_duration_since(*at) < ASK_AGAIN);
            if recent || !self.queued.insert(id) {
                continue;
            }
            self.queue.push_back(id);
            taken += 1;
        }
        taken
    }

    /// The next id to send, recorded as sent at `now`.
    pub fn next(&mut self, now: Instant) -> Option<Id> {
        let id = self.queue.pop_front()?;
        self.queued.remove(&id);
        self.sent.insert(id, now);
        Some(id)
    }

    /// Puts back an id [`Self::next`] gave that did not fit: it goes first.
    pub fn put_back(&mut self, id: Id) {
        if self.queued.insert(id) {
            self.queue.push_front(id);
        }
    }

    /// Whether ids wait to be sent.
    pub fn waiting(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Forgets what was sent longer than [`ASK_AGAIN`] ago; whether anything is left to
    /// remember.
    pub fn prune(&mut self, now: Instant) -> bool {
        self.sent
            .retain(|_, at| now.saturating_duration_since(*at) < ASK_AGAIN);
        !self.queue.is_empty() || !self.sent.is_empty()
    }
}

/// Whether to hand a member the whole log now: never handed (or the last handover
/// failed: `last` is `None`), the log has a length other than when it was last handed
/// (`last`: that length and when), the last was `every` ago (in case it was lost), or the
/// member connected or subscribed (`asked`) and the last was a sync `round` ago. A member
/// toggling its subscription gets the log at most once a round.
pub fn whole_log_due(
    last: Option<(usize, Instant)>,
    len: usize,
    asked: bool,
    now: Instant,
    round: Duration,
    every: Duration,
) -> bool {
    let Some((sent, at)) = last else {
        return true;
    };
    let since = now.saturating_duration_since(at);
    sent != len || since >= every || (asked && since >= round)
}

/// Whether a member whose subscription the node has just seen is reconciled with (sent
/// the node's summary) now: not if that was done less than a sync `round` ago (`last`);
/// the next round does it.
pub fn reconcile_due(last: Option<Instant>, now: Instant, round: Duration) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= round)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(b: u8) -> Member {
        (RoomId([1; 32]), MemberId([b; 32]))
    }

    #[test]
    fn a_budget_is_taken_then_refilled() {
        let mut budgets = Budgets::default();
        let t0 = Instant::now();
        let sam = member(1);
        // A full reply's worth of wants at once, then 1,000 a second.
        assert!(budgets.take(sam, Kind::Want, 30_000, t0));
        assert!(!budgets.take(sam, Kind::Want, 1, t0));
        assert!(!budgets.take(sam, Kind::Want, 2_000, t0 + Duration::from_secs(1)));
        assert!(budgets.take(sam, Kind::Want, 2_000, t0 + Duration::from_secs(2)));
        // Each member and each kind has its own.
        assert!(budgets.take(member(2), Kind::Want, 30_000, t0));
        assert!(budgets.take(sam, Kind::Push, 1, t0));
    }

    #[test]
    fn part_of_a_budget_can_be_granted() {
        let mut budgets = Budgets::default();
        let t0 = Instant::now();
        let sam = member(1);
        let mut granted = 0;
        for _ in 0..100 {
            granted += budgets.take_up_to(sam, Kind::Want, 2_000, t0);
        }
        assert_eq!(granted, 30_000);
        assert_eq!(
            budgets.take_up_to(sam, Kind::Want, 2_000, t0 + Duration::from_millis(500)),
            500
        );
        assert!(!budgets.has(sam, Kind::Want, 1, t0 + Duration::from_millis(500)));
    }

    /// Operations pushed by a member that change the log (each one a flushed write) are
    /// limited to a few at once, then one every two seconds.
    #[test]
    fn log_changes_are_few() {
        let mut budgets = Budgets::default();
        let t0 = Instant::now();
        let sam = member(1);
        let changes = (0..100)
            .filter(|_| budgets.take(sam, Kind::LogChange, 1, t0))
            .count();
        assert_eq!(changes, 16);
        assert!(budgets.has(sam, Kind::LogChange, 1, t0 + Duration::from_secs(2)));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut budgets = Budgets::default();
        let t0 = Instant::now();
        for i in 0..(MAX_MEMBERS + 10) {
            let who = (
                RoomId([(i / 251) as u8; 32]),
                MemberId([(i % 251) as u8; 32]),
            );
            budgets.take(who, Kind::Push, 1, t0 + Duration::from_millis(i as u64));
        }
        assert!(budgets.members.len() <= MAX_MEMBERS);
    }

    /// 100 pushes of 2,000 ids drawn from 50 messages: each of the 50 is sent once, and
    /// again only when asked after [`ASK_AGAIN`].
    #[test]
    fn an_id_asked_for_again_and_again_is_sent_once() {
        let mut asked = Asked::default();
        let t0 = Instant::now();
        let ids: Vec<Id> = (0..50u8).map(|b| [b; 32]).collect();
        let mut sent = Vec::new();
        for _ in 0..100 {
            asked.ask(ids.iter().cycle().take(2000).copied(), t0);
            while let Some(id) = asked.next(t0) {
                sent.push(id);
            }
        }
        assert_eq!(sent.len(), 50);
        let later = t0 + ASK_AGAIN;
        assert_eq!(asked.ask(ids.iter().copied(), later), 50);
        assert!(asked.prune(later));
    }

    #[test]
    fn what_is_asked_is_bounded_and_put_back_goes_first() {
        let mut asked = Asked::default();
        let t0 = Instant::now();
        let many = (0..ASKED_LIMIT as u32 + 10).map(|i| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            id
        });
        assert_eq!(asked.ask(many, t0), ASKED_LIMIT);
        let first = asked.next(t0).unwrap();
        asked.put_back(first);
        assert_eq!(asked.next(t0), Some(first));
        while asked.next(t0).is_some() {}
        assert!(!asked.waiting());
        assert!(!asked.prune(t0 + ASK_AGAIN), "nothing left to remember");
    }

    #[test]
    fn the_whole_log_goes_at_most_once_a_round_unless_it_changed() {
        let (round, every) = (Duration::from_secs(15), Duration::from_secs(300));
        let t0 = Instant::now();
        let due = |last, len, asked, at| whole_log_due(last, len, asked, at, round, every);
        assert!(due(None, 5, false, t0));
        let last = Some((5, t0));
        // A subscription a moment later: not again; a round later: again.
        assert!(!due(last, 5, true, t0 + Duration::from_secs(1)));
        assert!(due(last, 5, true, t0 + round));
        // A routine round: only when it grew, or every five minutes.
        assert!(!due(last, 5, false, t0 + round));
        assert!(due(last, 6, false, t0 + Duration::from_secs(1)));
        assert!(due(last, 5, false, t0 + every));
    }

    #[test]
    fn a_subscription_is_reconciled_at_most_once_a_round() {
        let round = Duration::from_secs(15);
        let t0 = Instant::now();
        assert!(reconcile_due(None, t0, round));
        assert!(!reconcile_due(Some(t0), t0 + Duration::from_secs(3), round));
        assert!(reconcile_due(Some(t0), t0 + round, round));
    }
}
