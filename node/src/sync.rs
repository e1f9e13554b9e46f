//! Catch-up between members without a server: what members push to each other on
//! [`crate::net::SYNC_PROTOCOL`], and the set reconciliation that finds what each lacks.
//!
//! Every member stores every message it receives, with the original sealed envelope, so
//! it can hand the envelope on: the receiver verifies the author's signature inside, so a
//! message relayed by any member is as trustworthy as one from its author.
//!
//! Reconciliation is by day buckets: a member sends, per UTC day of `sent_at`, the count of
//! messages it holds and a digest of their ids. The other answers with its ids on the
//! days that differ; the asker then asks (`want`) for the envelopes it lacks. Nothing is
//! sent unasked: both sides of a connection start a reconciliation, so each learns what
//! it lacks from its own, and a member missing much asks one member for it rather than
//! receiving it from all (see `EventLoop::receive_reply` in `node/exchange.rs`).
//!
//! A summary costs 44 bytes for each day that has messages: a room that has talked every
//! day for two years has one of 32 KB, and every member sends one to every other each
//! sync round. So only a reconciliation that has reason to expect a difference (on
//! connecting, on a subscription) sends the summary; routine rounds send its digest, 32
//! bytes ([`summary_digest`]), and the summary follows only if the other member's
//! differs ([`SyncReply::differs`]).
//!
//! The digest is the XOR of each id's SHA-256 under a salt the asker draws afresh for each
//! reconciliation ([`SyncPush::salt`]). A plain XOR of ids would do against chance, but
//! not against a member: message ids are hashes of what their authors sign, and with a
//! few hundred messages of its own, sent to some members only, a member could search
//! (Wagner's generalised birthday attack: on the order of 2^40 hashes, fewer with more
//! messages) for two sets whose XORs differ by exactly one honest member's message, so
//! that two members' summaries agree while one lacks it, and catch-up never sends it (a
//! day's agreement also confirms delivery). Under a salt nobody knows before the
//! reconciliation, the search cannot start; equal digests then mean equal sets except
//! with negligible probability.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use confer_room::log::SignedOp;
use confer_room::room::MessageRecord;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A message id.
pub type Id = [u8; 32];

/// A reconciliation's salt (see the module docs).
pub type Salt = [u8; 16];

/// The domain label of a bucket digest, padded so that label and salt fill exactly one
/// SHA-256 block: the block is compressed once per summary, and each id costs one more.
const DIGEST_LABEL: &[u8] = b"confer/v1/sync-bucket";

/// Milliseconds in a reconciliation bucket (one UTC day).
const BUCKET_MS: u64 = 24 * 3600 * 1000;
/// The most ids a reply lists (about 1 MiB).
pub const MAX_REPLY_IDS: usize = 30_000;

/// How far after the receiver's clock a message may be dated: one day. Later ones are
/// refused ([`too_far_ahead`]); a clock that is hours wrong (a wrong time zone) still gets
/// its messages through.
pub const AHEAD_MS: u64 = BUCKET_MS;

/// What the store keeps for each message: the verified record, and the envelope as it
/// travelled (sealed, signed inside), to hand on to members who missed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The verified message.
    pub record: MessageRecord,
    /// The sealed envelope.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
}

impl StoredMessage {
    /// Encodes for the store.
    pub fn to_bytes(&self) -> Vec<u8> {
        confer_room::wire::encode(self).unwrap_or_default()
    }

    /// Decodes from the store.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        confer_room::wire::decode(bytes, 4 * confer_room::room::MAX_ENVELOPE).ok()
    }
}

/// One day's summary: how many messages, and a digest of their ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Days since the Unix epoch.
    pub day: u64,
    /// Messages that day.
    pub count: u32,
    /// XOR of the salted SHA-256 of their ids.
    pub digest: Id,
}

/// What one member pushes to another (a request on the sync protocol).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SyncPush {
    /// The room's sync tag (valid across epochs).
    pub room: [u8; 16],
    /// Membership operations (self-authenticating).
    pub ops: Vec<SignedOp>,
    /// Room envelopes (messages or operations).
    #[serde(with = "byte_strings")]
    pub envelopes: Vec<Vec<u8>>,
    /// The sender's message summary, asking for reconciliation.
    pub summary: Option<Vec<Bucket>>,
    /// The salt of that summary's digests, fresh for each reconciliation; the receiver
    /// summarises its own messages under it to compare.
    pub salt: Salt,
    /// Message ids the sender wants sent to it.
    pub want: Vec<Id>,
    /// Addresses at which the sender has reached members of this room:
    /// (libp2p peer id bytes, multiaddresses).
    pub addresses: Vec<(Vec<u8>, Vec<String>)>,
    /// In routine rounds, instead of `summary`: the digest of the sender's summary under
    /// `salt` ([`summary_digest`]), 32 bytes however long the room's history. A receiver
    /// whose own differs says so ([`SyncReply::differs`]), and the sender then pushes
    /// the summary itself.
    pub digest: Option<Id>,
}

impl SyncPush {
    /// Whether the sender asks to reconcile (a summary, or its digest).
    pub fn reconciles(&self) -> bool {
        self.summary.is_some() || self.digest.is_some()
    }
}

impl SyncPush {
    /// Decodes a push from another node, at most [`crate::net::MAX_REQUEST`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        confer_room::wire::decode(bytes, crate::net::MAX_REQUEST).ok()
    }
}

/// `Vec<Vec<u8>>` encoded as a sequence of byte strings (see [`StoredMessage::envelope`]
/// and `confer_room::crypto::Sealed`): the same bytes on the wire, each decoded with one
/// copy instead of one call per byte.
mod byte_strings {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(items: &[Vec<u8>], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(items.iter().map(|item| Bytes::new(item)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Vec<u8>>, D::Error> {
        let items = Vec::<ByteBuf>::deserialize(deserializer)?;
        Ok(items.into_iter().map(ByteBuf::into_vec).collect())
    }
}

/// The answer to a [`SyncPush`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SyncReply {
    /// Ids of the pushed messages the receiver now holds (confirms delivery).
    pub stored: Vec<Id>,
    /// The receiver's message ids on the days where the two summaries differ.
    pub ids: Vec<Id>,
    /// The push carried a digest ([`SyncPush::digest`]) that differs from the
    /// receiver's: the room's sync tag, for the sender to push its whole summary.
    pub differs: Option<[u8; 16]>,
}

impl SyncReply {
    /// Decodes an answer from another node, at most [`crate::net::MAX_RESPONSE`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        confer_room::wire::decode(bytes, crate::net::MAX_RESPONSE).ok()
    }
}

/// The day bucket of a message sent at `sent_at` (Unix ms).
pub fn day(sent_at: u64) -> u64 {
    sent_at / BUCKET_MS
}

/// Whether a message dated `sent_at` is dated too far after `now` (the receiver's clock,
/// Unix ms) to be taken: more than [`AHEAD_MS`]. Refused now, it is taken once the
/// receiver's clock has come close enough (its author's node offers it again). Without
/// this a member could date its messages on thousands of days to come, one bucket each
/// in every summary.
pub fn too_far_ahead(sent_at: u64, now: u64) -> bool {
    sent_at > now.saturating_add(AHEAD_MS)
}

/// Summarises an index of message id → sent_at, under `salt`.
pub fn summary(index: &BTreeMap<Id, u64>, salt: &Salt) -> Vec<Bucket> {
    summary_of(index, salt, |_| true)
}

/// Summarises the messages of an index that `keep` keeps, under `salt`.
pub fn summary_of(
    index: &BTreeMap<Id, u64>,
    salt: &Salt,
    keep: impl Fn(&Id) -> bool,
) -> Vec<Bucket> {
    let mut block = [0u8; 64];
    block[..DIGEST_LABEL.len()].copy_from_slice(DIGEST_LABEL);
    block[64 - salt.len()..].copy_from_slice(salt);
    let salted = Sha256::new_with_prefix(block);
    let mut days: BTreeMap<u64, Bucket> = BTreeMap::new();
    for (id, sent_at) in index.iter().filter(|(id, _)| keep(id)) {
        let d = day(*sent_at);
        let b = days.entry(d).or_insert(Bucket {
            day: d,
            count: 0,
            digest: [0; 32],
        });
        b.count += 1;
        let h = salted.clone().chain_update(id).finalize();
        for (x, y) in b.digest.iter_mut().zip(h.iter()) {
            *x ^= y;
        }
    }
    days.into_values().collect()
}

/// The label of a summary's digest.
const SUMMARY_LABEL: &[u8] = b"confer/v1/sync-summary";

/// The digest of a whole summary ([`SyncPush::digest`]): SHA-256 over its buckets in
/// order. Each bucket's digest is already under the reconciliation's salt, so equal
/// digests mean equal summaries, and so (see the module docs) the same messages.
pub fn summary_digest(summary: &[Bucket]) -> Id {
    let mut hash = Sha256::new_with_prefix(SUMMARY_LABEL);
    for bucket in summary {
        hash.update(bucket.day.to_le_bytes());
        hash.update(bucket.count.to_le_bytes());
        hash.update(bucket.digest);
    }
    hash.finalize().into()
}

/// The days on which two summaries differ (present in one only, or with other contents).
pub fn differing_days(mine: &[Bucket], theirs: &[Bucket]) -> Vec<u64> {
    let mine: BTreeMap<u64, &Bucket> = mine.iter().map(|b| (b.day, b)).collect();
    let theirs: BTreeMap<u64, &Bucket> = theirs.iter().map(|b| (b.day, b)).collect();
    let days: BTreeSet<u64> = mine.keys().chain(theirs.keys()).copied().collect();
    days.into_iter()
        .filter(|d| mine.get(d) != theirs.get(d))
        .collect()
}

/// The ids in `index` sent on any of `days`.
pub fn ids_on(index: &BTreeMap<Id, u64>, days: &[u64]) -> Vec<Id> {
    let days: BTreeSet<u64> = days.iter().copied().collect();
    index
        .iter()
        .filter(|(_, t)| days.contains(&day(**t)))
        .map(|(id, _)| *id)
        .collect()
}

/// Message ids asked of a member and not received yet, and when each may be asked again.
///
/// The wait doubles with every ask that brought nothing, from `first` up to `max`. An id
/// asked for again and again without arriving is almost always a message this member can
/// never open (sealed under an epoch from before it joined, whose key it was never
/// given): without the backoff every sync round fetched all of them again. A message that
/// was merely slow or lost in transit still arrives at the next ask, soon after.
#[derive(Debug)]
pub struct Wants {
    asked: HashMap<Id, (Instant, u32)>,
    limit: usize,
    first: Duration,
    max: Duration,
}

impl Wants {
    /// At most `limit` ids are remembered (ids beyond it are simply asked again).
    pub fn new(limit: usize, first: Duration, max: Duration) -> Self {
        Wants {
            asked: HashMap::new(),
            limit,
            first,
            max,
        }
    }

    /// Whether `id` may be asked for now: never asked, or its wait is over.
    pub fn due(&self, id: &Id, now: Instant) -> bool {
        self.asked.get(id).is_none_or(|(again, _)| *again <= now)
    }

    /// Records that `id` was asked for now.
    pub fn asked(&mut self, id: Id, now: Instant) {
        if self.asked.len() >= self.limit && !self.asked.contains_key(&id) {
            return;
        }
        let entry = self.asked.entry(id).or_insert((now, 0));
        let wait = self
            .first
            .saturating_mul(1 << entry.1.min(16))
            .min(self.max);
        *entry = (now + wait, entry.1 + 1);
    }

    /// `id` arrived: forgotten.
    pub fn got(&mut self, id: &Id) {
        self.asked.remove(id);
    }

    /// Forgets ids not asked for again within `max` of their wait ending (their members
    /// no longer offer them).
    pub fn prune(&mut self, now: Instant) {
        let max = self.max;
        self.asked.retain(|_, (again, _)| *again + max > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// What other nodes send, and what the store gives back, never panics a decoder.
        #[test]
        fn bytes_from_outside_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = SyncPush::from_bytes(&bytes);
            let _ = SyncReply::from_bytes(&bytes);
            let _ = StoredMessage::from_bytes(&bytes);
        }
    }

    /// Envelopes encoded as byte strings are the same bytes as the plain `Vec<u8>`s
    /// nodes of earlier versions sent and stored, and read the same.
    #[test]
    fn byte_strings_are_the_bytes_vecs_were() {
        #[derive(Serialize, Deserialize)]
        struct PlainPush {
            room: [u8; 16],
            ops: Vec<SignedOp>,
            envelopes: Vec<Vec<u8>>,
            summary: Option<Vec<Bucket>>,
            salt: Salt,
            want: Vec<Id>,
            addresses: Vec<(Vec<u8>, Vec<String>)>,
            digest: Option<Id>,
        }
        let envelopes = vec![vec![1, 2, 3], Vec::new(), vec![200; 300]];
        let plain = PlainPush {
            room: [4; 16],
            ops: Vec::new(),
            envelopes: envelopes.clone(),
            summary: None,
            salt: [5; 16],
            want: vec![[6; 32]],
            addresses: Vec::new(),
            digest: None,
        };
        let push = SyncPush {
            room: [4; 16],
            envelopes: envelopes.clone(),
            salt: [5; 16],
            want: vec![[6; 32]],
            ..SyncPush::default()
        };
        let bytes = confer_room::wire::encode(&plain).unwrap();
        assert_eq!(confer_room::wire::encode(&push).unwrap(), bytes);
        assert_eq!(SyncPush::from_bytes(&bytes).unwrap().envelopes, envelopes);
    }

    /// A length that claims more than the limit is refused before anything is allocated
    /// for it, and a push over the request limit is refused whole.
    #[test]
    fn pushes_are_decoded_within_their_limit() {
        let mut claim = vec![0u8; 16]; // the room tag
        claim.push(253); // bincode varint: a u64 follows
        claim.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(SyncPush::from_bytes(&claim).is_none());
        let push = |size: usize| SyncPush {
            envelopes: vec![vec![1; size]],
            salt: [3; 16],
            ..SyncPush::default()
        };
        let fits = confer_room::wire::encode(&push(1000)).unwrap();
        let decoded = SyncPush::from_bytes(&fits).unwrap();
        assert_eq!(
            (decoded.envelopes, decoded.salt),
            (vec![vec![1; 1000]], [3; 16])
        );
        let over = confer_room::wire::encode(&push(crate::net::MAX_REQUEST)).unwrap();
        assert!(SyncPush::from_bytes(&over).is_none());
    }

    #[test]
    fn an_id_that_never_arrives_is_asked_for_less_and_less_often() {
        let (first, max) = (Duration::from_secs(10), Duration::from_secs(3600));
        let mut wants = Wants::new(10, first, max);
        let id = [7; 32];
        let start = Instant::now();
        let mut now = start;
        let mut asks = 0;
        // A sync round every 15 s for a day.
        while now < start + Duration::from_secs(24 * 3600) {
            if wants.due(&id, now) {
                wants.asked(id, now);
                asks += 1;
            }
            wants.prune(now);
            now += Duration::from_secs(15);
        }
        // Every 15 s would be 5,760 asks; with the backoff about 8 to reach the hour,
        // then one an hour.
        assert!((20..40).contains(&asks), "{asks} asks");
        // One that arrives is forgotten and may be asked for at once if lost again.
        wants.got(&id);
        assert!(wants.due(&id, now));
    }

    #[test]
    fn a_slow_id_is_asked_again_after_the_first_wait() {
        let mut wants = Wants::new(10, Duration::from_secs(10), Duration::from_secs(3600));
        let now = Instant::now();
        wants.asked([1; 32], now);
        assert!(!wants.due(&[1; 32], now + Duration::from_secs(9)));
        assert!(wants.due(&[1; 32], now + Duration::from_secs(10)));
    }

    #[test]
    fn wants_are_bounded() {
        let mut wants = Wants::new(3, Duration::from_secs(10), Duration::from_secs(60));
        let now = Instant::now();
        for b in 0..10u8 {
            wants.asked([b; 32], now);
        }
        assert_eq!(wants.asked.len(), 3);
        // Not remembered: asked again every time (as before the backoff).
        assert!(wants.due(&[9; 32], now));
        // Pruned once not asked again for `max` after the wait.
        wants.prune(now + Duration::from_secs(71));
        assert!(wants.asked.is_empty());
    }

    #[test]
    fn a_message_more_than_a_day_ahead_is_too_far_ahead() {
        let now = 1_800_000_000_000;
        assert!(!too_far_ahead(now, now));
        assert!(!too_far_ahead(now + 2 * 3600 * 1000, now));
        assert!(!too_far_ahead(now + AHEAD_MS, now));
        assert!(too_far_ahead(now + AHEAD_MS + 1, now));
        assert!(!too_far_ahead(u64::MAX, u64::MAX - 1));
        // Long ago is not refused: catch-up brings old messages.
        assert!(!too_far_ahead(0, now));
    }

    fn index(entries: &[(u8, u64)]) -> BTreeMap<Id, u64> {
        entries.iter().map(|(b, t)| ([*b; 32], *t)).collect()
    }

    const SALT: Salt = [5; 16];

    fn summary(index: &BTreeMap<Id, u64>) -> Vec<Bucket> {
        super::summary(index, &SALT)
    }

    #[test]
    fn equal_sets_have_no_differences() {
        let a = index(&[(1, 0), (2, BUCKET_MS), (3, BUCKET_MS + 5)]);
        assert!(differing_days(&summary(&a), &summary(&a)).is_empty());
    }

    /// Two sets of the same size whose ids XOR to the same value (easy to make: message
    /// ids are hashes of what their authors send) do not summarise alike, and a salt
    /// the maker did not know changes every digest.
    #[test]
    fn sets_whose_ids_xor_alike_are_still_told_apart() {
        let xor = |ids: &[Id]| {
            ids.iter().fold([0u8; 32], |mut acc, id| {
                acc.iter_mut().zip(id).for_each(|(a, b)| *a ^= b);
                acc
            })
        };
        let (x1, x2, x3, y1, y2) = ([1; 32], [2; 32], [4; 32], [8; 32], [16; 32]);
        let y3 = xor(&[x1, x2, x3, y1, y2]);
        assert_eq!(xor(&[x1, x2, x3]), xor(&[y1, y2, y3]));
        let same_day = |ids: [Id; 3]| ids.into_iter().map(|id| (id, 0)).collect();
        let (a, b): (BTreeMap<Id, u64>, _) = (same_day([x1, x2, x3]), same_day([y1, y2, y3]));
        assert_eq!(differing_days(&summary(&a), &summary(&b)), vec![0]);
        assert_ne!(summary(&a), super::summary(&a, &[6; 16]));
    }

    /// A summary's digest is equal for equal histories and differs when any message or
    /// day differs, or under another salt.
    #[test]
    fn a_summary_digest_tells_histories_apart() {
        let a = index(&[(1, 0), (2, BUCKET_MS), (3, BUCKET_MS + 5)]);
        let digest = |i: &BTreeMap<Id, u64>| summary_digest(&summary(i));
        assert_eq!(digest(&a), digest(&a.clone()));
        // One message fewer, one more, one moved to another day.
        let fewer = index(&[(1, 0), (2, BUCKET_MS)]);
        let more = index(&[(1, 0), (2, BUCKET_MS), (3, BUCKET_MS + 5), (4, 9)]);
        let moved = index(&[(1, 0), (2, BUCKET_MS), (3, 2 * BUCKET_MS)]);
        for other in [&fewer, &more, &moved] {
            assert_ne!(digest(&a), digest(other));
        }
        assert_ne!(digest(&a), summary_digest(&super::summary(&a, &[6; 16])));
        assert_ne!(summary_digest(&[]), digest(&a));
    }

    #[test]
    fn a_missing_message_marks_its_day_only() {
        let a = index(&[(1, 0), (2, BUCKET_MS), (3, BUCKET_MS + 5)]);
        let b = index(&[(1, 0), (2, BUCKET_MS)]);
        let days = differing_days(&summary(&a), &summary(&b));
        assert_eq!(days, vec![1]);
        assert_eq!(ids_on(&a, &days), vec![[2; 32], [3; 32]]);
        assert_eq!(ids_on(&b, &days), vec![[2; 32]]);
        // A day only one side has differs too.
        let c = index(&[(9, 7 * BUCKET_MS)]);
        assert_eq!(differing_days(&summary(&a), &summary(&c)), vec![0, 1, 7]);
        assert_eq!(differing_days(&[], &summary(&c)), vec![7]);
    }

    /// Leaving messages out (those not yet on disk) summarises as if they were absent,
    /// and a day left empty is not in the summary at all.
    #[test]
    fn a_summary_of_part_of_an_index_is_that_parts_summary() {
        let a = index(&[(1, 0), (2, BUCKET_MS), (3, BUCKET_MS + 5)]);
        let b = index(&[(2, BUCKET_MS)]);
        assert_eq!(summary_of(&a, &SALT, |id| id[0] == 2), summary(&b));
    }
}
