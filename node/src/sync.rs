//! Catch-up between members without a server: what members push to each other on
//! [`crate::net::SYNC_PROTOCOL`], and the set reconciliation that finds what each lacks.
//!
//! Every member stores every message it receives, with the original sealed envelope, so
//! it can hand the envelope on: the receiver verifies the author's signature inside, so a
//! message relayed by any member is as trustworthy as one from its author.
//!
//! # Reconciliation: months, then days
//!
//! Messages are grouped by the UTC day of their `sent_at` ([`day`]), and days into months
//! of [`MONTH_DAYS`] days ([`month`]). A bucket is a period's count of messages and a
//! digest of their ids ([`Bucket`]). A member asking to reconcile sends its months
//! ([`Level::Months`]); the other answers with the months whose buckets differ from its
//! own ([`SyncReply::months`]); the asker then sends the days of those months
//! ([`Level::Days`], [`day_parts`]); the other answers with its ids on the days that
//! differ ([`SyncReply::ids`]); the asker asks (`want`) for the envelopes it lacks.
//! Nothing is sent unasked: both sides of a connection start a reconciliation, so each
//! learns what it lacks from its own, and a member missing much asks one member for it
//! rather than receiving it from all (see `EventLoop::receive_reply` in
//! `node/exchange.rs`).
//!
//! A bucket costs at most [`BUCKET_BYTES`]. Authors date their messages, so a member can
//! spread its messages over as many days as it likes: one bucket for every day would
//! outgrow a sync request's limit after about 1,500 distinct days. Months cut that by
//! 32: every day from 1970 to now makes fewer than 650 months (about 27 KB), and to 2100
//! fewer than 1,500. A summary is sent in [`Part`]s, each a range of periods and the
//! buckets in it, of at most [`PART_BYTES`]; a request carries as many parts as fit
//! ([`SyncPush::split`]), so no summary, however long the history, makes a request
//! larger than the limit. A message dated more than [`AHEAD_MS`] after
//! the receiver's clock is refused ([`too_far_ahead`]), so nobody can spread messages
//! over the years to come; into the past, dates end at 1970.
//!
//! Routine rounds send only the digest of the months ([`summary_digest`], 32 bytes
//! however long the history); the months follow only if the other member's differs
//! ([`SyncReply::differs`]).
//!
//! # Salts
//!
//! A bucket's digest is the XOR of each id's SHA-256 under a salt the asker draws afresh
//! for each reconciliation ([`SyncPush::salt`]); the days and months of one
//! reconciliation share it, so the other member summarises its messages once for all of
//! them. A plain
//! XOR of ids would do against chance, but not against a member: message ids are hashes
//! of what their authors sign, and with a few hundred messages of its own, sent to some
//! members only, a member could search (Wagner's generalised birthday attack: on the order
//! of 2^40 hashes, fewer with more messages) for two sets whose XORs differ by exactly one
//! honest member's message, so that two members' summaries agree while one lacks it, and
//! catch-up never sends it. Under a salt nobody knows before the reconciliation, the
//! search cannot start; equal digests then mean equal sets except with negligible
//! probability.
//!
//! # Confirming delivery
//!
//! A member's own message stays in its outbox until another member confirms holding it.
//! Ids are no proof: any member learns the ids of everything a node holds from its
//! answers to a reconciliation, and could make a summary agree on them without the
//! messages. So a confirmation is a proof ([`SyncReply::held`]): for each message of a
//! push it holds, and for each id the pusher asks about ([`SyncPush::prove`]), the
//! receiver sends [`proof`]`(salt, key)`, where the key ([`holding_key`]) is a hash of the
//! message's id, time and text: only a member that opened the message (so held the key of
//! its epoch, and the message itself) can compute it, and under the pusher's fresh salt it
//! is good for that answer only.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use confer_room::RoomId;
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

/// Milliseconds in a reconciliation day (one UTC day).
const DAY_MS: u64 = 24 * 3600 * 1000;

/// Days in a summary's month: a power of two near a calendar month.
pub const MONTH_DAYS: u64 = 32;

/// The most bytes one bucket takes encoded: a period (9), a count (5), a digest (32).
pub const BUCKET_BYTES: usize = 9 + 5 + 32;

/// The most bytes of buckets in one [`Part`] (about 350 buckets).
pub const PART_BYTES: usize = 16 * 1024;

/// The most ids a reply lists (about 1 MiB).
pub const MAX_REPLY_IDS: usize = 30_000;

/// How a Confer version starts (`/confer/0.2.0`), told in [`SyncPush::addresses`].
pub const VERSION_PREFIX: &str = "/confer/";

/// The most entries of one node read from [`SyncPush::addresses`].
pub const MAX_ADDRESSES_PER_PEER: usize = 8;

/// The most months a reply lists (every month from 1970 to the year 2300).
pub const MAX_REPLY_MONTHS: usize = 4096;

/// The most ids a push asks the receiver to prove it holds ([`SyncPush::prove`]).
pub const MAX_PROVE: usize = 64;

/// The most signed peer records a push carries (one per member of a full room).
pub const MAX_RECORDS: usize = confer_room::MAX_MEMBERS;

/// The largest signed peer record read, in bytes (sixteen addresses fit in about 1 KiB).
pub const MAX_RECORD_BYTES: usize = 2048;

/// How far after the receiver's clock a message may be dated: one day. Later ones are
/// refused ([`too_far_ahead`]); a clock that is hours wrong (a wrong time zone) still gets
/// its messages through.
pub const AHEAD_MS: u64 = DAY_MS;

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

/// How a summary groups messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Level {
    /// By month ([`MONTH_DAYS`] days).
    Months,
    /// By UTC day.
    Days,
}

/// One period's summary: how many messages, and a digest of their ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// The day or month (days since the Unix epoch, or that divided by [`MONTH_DAYS`]).
    pub period: u64,
    /// Messages in it.
    pub count: u32,
    /// XOR of the salted SHA-256 of their ids.
    pub digest: Id,
}

/// Part of a summary: the periods `from..to` at `level`, and the buckets of those that
/// have messages (in increasing order). A period of the range without a bucket has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Months or days.
    pub level: Level,
    /// The first period covered.
    pub from: u64,
    /// The period after the last one covered.
    pub to: u64,
    /// The buckets of the periods with messages.
    pub buckets: Vec<Bucket>,
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
    /// Parts of the sender's summary, asking for reconciliation: its months, or the days
    /// of the months the receiver said differ (see the module docs).
    pub summary: Vec<Part>,
    /// The salt of the summary's digests, fresh for each reconciliation (the receiver
    /// summarises its own messages under it to compare), and of the proofs the receiver
    /// answers with ([`SyncReply::held`]).
    pub salt: Salt,
    /// Message ids the sender wants sent to it.
    pub want: Vec<Id>,
    /// What the sender says of its own node: (libp2p peer id bytes, multiaddresses), its
    /// Confer version first ([`VERSION_PREFIX`]…, which is no multiaddress, so a node that
    /// reads addresses only passes over it), then where it can be reached. Identify tells
    /// no peer either, so members learn them here. An entry for any other node is not
    /// taken (see [`SyncPush::records`]).
    pub addresses: Vec<(Vec<u8>, Vec<String>)>,
    /// In routine rounds, instead of `summary`: the digest of the sender's months under
    /// `salt` ([`summary_digest`]), 32 bytes however long the room's history. A receiver
    /// whose own differs says so ([`SyncReply::differs`]), and the sender then pushes its
    /// months.
    pub digest: Option<Id>,
    /// Where members' nodes can be reached, as each node said of itself: libp2p signed
    /// peer records (routing records, signed by the node's own key), the sender's own
    /// among them, passed on unchanged.
    #[serde(with = "byte_strings")]
    pub records: Vec<Vec<u8>>,
    /// The sender's messages it asks the receiver to prove it holds (at most
    /// [`MAX_PROVE`]; see [`SyncReply::held`]).
    pub prove: Vec<Id>,
}

impl SyncPush {
    /// Whether the sender asks to reconcile (a summary, or its digest).
    pub fn reconciles(&self) -> bool {
        !self.summary.is_empty() || self.digest.is_some()
    }

    /// Decodes a push from another node, at most [`crate::net::MAX_REQUEST`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        confer_room::wire::decode(bytes, crate::net::MAX_REQUEST).ok()
    }

    /// Splits a push into requests of at most `limit` bytes each, all under its room and
    /// salt. The first carries the digest, addresses, records and ids to prove (each
    /// bounded), and as much of the rest (summary parts, wants, operations, envelopes, in
    /// that order) as fits; the others carry the rest. A single operation or envelope
    /// larger than `limit` gets a request of its own (and the protocol refuses it).
    pub fn split(self, limit: usize) -> Vec<SyncPush> {
        let SyncPush {
            room,
            ops,
            envelopes,
            summary,
            salt,
            want,
            addresses,
            digest,
            records,
            prove,
        } = self;
        let empty = || SyncPush {
            room,
            salt,
            ..SyncPush::default()
        };
        let first = SyncPush {
            addresses,
            digest,
            records,
            prove,
            ..empty()
        };
        let base = encoded_len(&empty());
        let mut size = encoded_len(&first) + SPLIT_SLACK;
        let mut batches = vec![first];
        let items = summary
            .into_iter()
            .map(Item::Part)
            .chain(want.into_iter().map(Item::Want))
            .chain(ops.into_iter().map(|op| Item::Op(Box::new(op))))
            .chain(envelopes.into_iter().map(Item::Envelope));
        for item in items {
            let len = item.encoded_len();
            if size + len > limit {
                batches.push(empty());
                size = base + SPLIT_SLACK;
            }
            size += len;
            if let Some(last) = batches.last_mut() {
                item.add_to(last);
            }
        }
        batches.retain(|b| {
            !(b.ops.is_empty()
                && b.envelopes.is_empty()
                && !b.reconciles()
                && b.want.is_empty()
                && b.addresses.is_empty()
                && b.records.is_empty()
                && b.prove.is_empty())
        });
        batches
    }
}

/// Room in a request for the length prefixes of its lists, which grow with their lengths.
const SPLIT_SLACK: usize = 64;

/// The encoded length of a value.
fn encoded_len<T: Serialize>(value: &T) -> usize {
    confer_room::wire::encode(value).map_or(usize::MAX / 4, |b| b.len())
}

/// One thing a push carries beyond its first request's fixed fields.
enum Item {
    Part(Part),
    Want(Id),
    Op(Box<SignedOp>),
    Envelope(Vec<u8>),
}

impl Item {
    fn encoded_len(&self) -> usize {
        match self {
            Item::Part(part) => encoded_len(part),
            Item::Want(id) => id.len(),
            Item::Op(op) => encoded_len(&**op),
            Item::Envelope(e) => encoded_len(&serde_bytes::Bytes::new(e)),
        }
    }

    fn add_to(self, push: &mut SyncPush) {
        match self {
            Item::Part(part) => push.summary.push(part),
            Item::Want(id) => push.want.push(id),
            Item::Op(op) => push.ops.push(*op),
            Item::Envelope(e) => push.envelopes.push(e),
        }
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
    /// The receiver holds these messages, each with its [`proof`] under the push's salt:
    /// those of the push's envelopes it holds, and those of [`SyncPush::prove`]. The
    /// pusher takes a proof that checks as a confirmation of delivery.
    pub held: Vec<(Id, Id)>,
    /// The receiver's message ids on the days where the pushed days differ from its own.
    pub ids: Vec<Id>,
    /// The push carried a digest ([`SyncPush::digest`]) that differs from the
    /// receiver's: the room's sync tag, for the sender to push its months.
    pub differs: Option<[u8; 16]>,
    /// The months where the pushed months differ from the receiver's, for the sender to
    /// push their days.
    pub months: Vec<u64>,
}

impl SyncReply {
    /// Decodes an answer from another node, at most [`crate::net::MAX_RESPONSE`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        confer_room::wire::decode(bytes, crate::net::MAX_RESPONSE).ok()
    }
}

/// The day of a message sent at `sent_at` (Unix ms).
pub fn day(sent_at: u64) -> u64 {
    sent_at / DAY_MS
}

/// The month of a day.
pub fn month(day: u64) -> u64 {
    day / MONTH_DAYS
}

/// Whether a message dated `sent_at` is dated too far after `now` (the receiver's clock,
/// Unix ms) to be taken: more than [`AHEAD_MS`]. Refused now, it is taken once the
/// receiver's clock has come close enough (its author's node offers it again).
pub fn too_far_ahead(sent_at: u64, now: u64) -> bool {
    sent_at > now.saturating_add(AHEAD_MS)
}

/// Summarises an index of message id → sent_at by day, under `salt`.
pub fn days(index: &BTreeMap<Id, u64>, salt: &Salt) -> Vec<Bucket> {
    let mut block = [0u8; 64];
    block[..DIGEST_LABEL.len()].copy_from_slice(DIGEST_LABEL);
    block[64 - salt.len()..].copy_from_slice(salt);
    let salted = Sha256::new_with_prefix(block);
    let mut days: BTreeMap<u64, Bucket> = BTreeMap::new();
    for (id, sent_at) in index {
        let d = day(*sent_at);
        let b = days.entry(d).or_insert(Bucket {
            period: d,
            count: 0,
            digest: [0; 32],
        });
        b.count = b.count.saturating_add(1);
        let h = salted.clone().chain_update(id).finalize();
        xor(&mut b.digest, &h);
    }
    days.into_values().collect()
}

fn xor(into: &mut Id, with: &[u8]) {
    for (x, y) in into.iter_mut().zip(with) {
        *x ^= y;
    }
}

/// The months of a summary by day: each month's count and the XOR of its days' digests
/// (so the XOR of its ids' salted hashes).
pub fn months(days: &[Bucket]) -> Vec<Bucket> {
    let mut months: Vec<Bucket> = Vec::new();
    for d in days {
        let m = month(d.period);
        match months.last_mut() {
            Some(last) if last.period == m => {
                last.count = last.count.saturating_add(d.count);
                xor(&mut last.digest, &d.digest);
            }
            _ => months.push(Bucket { period: m, ..*d }),
        }
    }
    months
}

/// The label of a summary's digest.
const SUMMARY_LABEL: &[u8] = b"confer/v2/sync-summary";

/// The digest of a summary's months ([`SyncPush::digest`]): SHA-256 over its buckets in
/// order. Each bucket's digest is already under the reconciliation's salt, so equal
/// digests mean equal months, and so (see the module docs) the same messages.
pub fn summary_digest(months: &[Bucket]) -> Id {
    let mut hash = Sha256::new_with_prefix(SUMMARY_LABEL);
    for bucket in months {
        hash.update(bucket.period.to_le_bytes());
        hash.update(bucket.count.to_le_bytes());
        hash.update(bucket.digest);
    }
    hash.finalize().into()
}

/// Cuts the buckets of `level` (in increasing order of period) into parts of at most
/// [`PART_BYTES`] of buckets that together cover every period.
pub fn parts(level: Level, buckets: &[Bucket]) -> Vec<Part> {
    let per_part = (PART_BYTES / BUCKET_BYTES).max(1);
    let chunks: Vec<&[Bucket]> = buckets.chunks(per_part).collect();
    if chunks.is_empty() {
        return vec![Part {
            level,
            from: 0,
            to: u64::MAX,
            buckets: Vec::new(),
        }];
    }
    let mut out = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        let from = if i == 0 { 0 } else { chunk[0].period };
        let to = chunks.get(i + 1).map_or(u64::MAX, |next| next[0].period);
        out.push(Part {
            level,
            from,
            to,
            buckets: chunk.to_vec(),
        });
    }
    out
}

/// The days of `months` (at most [`MAX_REPLY_MONTHS`] of them) as parts, one for each
/// month: what an asker sends once the other member has said which months differ.
pub fn day_parts(days: &[Bucket], months: &[u64]) -> Vec<Part> {
    let wanted: BTreeSet<u64> = months.iter().take(MAX_REPLY_MONTHS).copied().collect();
    let mut by_month: BTreeMap<u64, Vec<Bucket>> =
        wanted.iter().map(|m| (*m, Vec::new())).collect();
    for d in days {
        if let Some(list) = by_month.get_mut(&month(d.period)) {
            list.push(*d);
        }
    }
    by_month
        .into_iter()
        .map(|(m, buckets)| Part {
            level: Level::Days,
            from: m.saturating_mul(MONTH_DAYS),
            to: m.saturating_add(1).saturating_mul(MONTH_DAYS),
            buckets,
        })
        .collect()
}

/// The periods of `part`'s level in its range on which it differs from our summary by
/// day (`days`, of our messages under the part's salt): present in one only, or with
/// other contents. `None` if the part is malformed (a bucket outside its range, or out of
/// order).
pub fn differing(part: &Part, days: &[Bucket]) -> Option<Vec<u64>> {
    let in_range = |p: u64| part.from <= p && p < part.to;
    let ordered = part.buckets.windows(2).all(|w| w[0].period < w[1].period);
    if !ordered || !part.buckets.iter().all(|b| in_range(b.period)) {
        return None;
    }
    let ours = match part.level {
        Level::Days => days.to_vec(),
        Level::Months => months(days),
    };
    let ours: BTreeMap<u64, &Bucket> = ours
        .iter()
        .filter(|b| in_range(b.period))
        .map(|b| (b.period, b))
        .collect();
    let theirs: BTreeMap<u64, &Bucket> = part.buckets.iter().map(|b| (b.period, b)).collect();
    let periods: BTreeSet<u64> = ours.keys().chain(theirs.keys()).copied().collect();
    Some(
        periods
            .into_iter()
            .filter(|p| ours.get(p) != theirs.get(p))
            .collect(),
    )
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

/// The label of a holding key.
const HOLDING_LABEL: &[u8] = b"confer/v1/sync-holding";

/// The label of a proof of holding.
const PROOF_LABEL: &[u8] = b"confer/v1/sync-held";

/// What only a member that opened a message knows of it beyond its id: a hash of its id,
/// author, time and text. Its id alone is no secret (reconciliation lists ids); its
/// time to the millisecond and its text are sealed.
pub fn holding_key(record: &MessageRecord) -> Id {
    let mut hash = Sha256::new_with_prefix(HOLDING_LABEL);
    hash.update(record.id);
    hash.update(record.author.0);
    hash.update(record.sent_at.to_le_bytes());
    hash.update((record.text.len() as u64).to_le_bytes());
    hash.update(record.text.as_bytes());
    hash.finalize().into()
}

/// The proof that one holds the message whose [`holding_key`] is `key`, under a push's
/// salt: good for the answer to that push only.
pub fn proof(salt: &Salt, key: &Id) -> Id {
    let mut hash = Sha256::new_with_prefix(PROOF_LABEL);
    hash.update(salt);
    hash.update(key);
    hash.finalize().into()
}

/// Summaries by day recently made, per room and salt, so that the parts of one
/// reconciliation (months, then days), a digest and the months after it, are summarised
/// once. An entry is good while its room's messages are as they were (`version`).
#[derive(Debug, Default)]
pub struct Summaries {
    entries: VecDeque<(RoomId, Salt, u64, Arc<Vec<Bucket>>)>,
}

impl Summaries {
    /// The most summaries kept.
    pub const LIMIT: usize = 16;

    /// The summary of room `room` under `salt`, made while its messages were at `version`.
    pub fn get(&self, room: &RoomId, salt: &Salt, version: u64) -> Option<Arc<Vec<Bucket>>> {
        self.entries
            .iter()
            .find(|(r, s, v, _)| r == room && s == salt && *v == version)
            .map(|(.., days)| Arc::clone(days))
    }

    /// Keeps a summary, forgetting the oldest beyond [`Self::LIMIT`].
    pub fn put(&mut self, room: RoomId, salt: Salt, version: u64, days: Arc<Vec<Bucket>>) {
        self.entries
            .retain(|(r, s, ..)| !(*r == room && *s == salt));
        if self.entries.len() >= Self::LIMIT {
            self.entries.pop_front();
        }
        self.entries.push_back((room, salt, version, days));
    }

    /// Forgets a room's summaries.
    pub fn forget(&mut self, room: &RoomId) {
        self.entries.retain(|(r, ..)| r != room);
    }
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

    /// Envelopes and records encoded as byte strings are the same bytes as plain
    /// `Vec<u8>`s, and read the same.
    #[test]
    fn byte_strings_are_the_bytes_vecs_were() {
        #[derive(Serialize, Deserialize)]
        struct PlainPush {
            room: [u8; 16],
            ops: Vec<SignedOp>,
            envelopes: Vec<Vec<u8>>,
            summary: Vec<Part>,
            salt: Salt,
            want: Vec<Id>,
            addresses: Vec<(Vec<u8>, Vec<String>)>,
            digest: Option<Id>,
            records: Vec<Vec<u8>>,
            prove: Vec<Id>,
        }
        let envelopes = vec![vec![1, 2, 3], Vec::new(), vec![200; 300]];
        let records = vec![vec![7; 40]];
        let plain = PlainPush {
            room: [4; 16],
            ops: Vec::new(),
            envelopes: envelopes.clone(),
            summary: Vec::new(),
            salt: [5; 16],
            want: vec![[6; 32]],
            addresses: Vec::new(),
            digest: None,
            records: records.clone(),
            prove: Vec::new(),
        };
        let push = SyncPush {
            room: [4; 16],
            envelopes: envelopes.clone(),
            salt: [5; 16],
            want: vec![[6; 32]],
            records: records.clone(),
            ..SyncPush::default()
        };
        let bytes = confer_room::wire::encode(&plain).unwrap();
        assert_eq!(confer_room::wire::encode(&push).unwrap(), bytes);
        let decoded = SyncPush::from_bytes(&bytes).unwrap();
        assert_eq!((decoded.envelopes, decoded.records), (envelopes, records));
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

    fn index(entries: &[(u8, u64)]) -> BTreeMap<Id, u64> {
        entries.iter().map(|(b, t)| ([*b; 32], *t)).collect()
    }

    const SALT: Salt = [5; 16];

    fn summary(index: &BTreeMap<Id, u64>) -> Vec<Bucket> {
        days(index, &SALT)
    }

    /// The days on which two indexes differ, as a receiver finds them from the other's
    /// days in one part.
    fn differing_days(mine: &BTreeMap<Id, u64>, theirs: &BTreeMap<Id, u64>) -> Vec<u64> {
        let part = Part {
            level: Level::Days,
            from: 0,
            to: u64::MAX,
            buckets: summary(theirs),
        };
        differing(&part, &summary(mine)).unwrap()
    }

    #[test]
    fn equal_sets_have_no_differences() {
        let a = index(&[(1, 0), (2, DAY_MS), (3, DAY_MS + 5)]);
        assert!(differing_days(&a, &a).is_empty());
    }

    /// Two sets of the same size whose ids XOR to the same value (easy to make: message
    /// ids are hashes of what their authors send) do not summarise alike, and a salt
    /// the maker did not know changes every digest.
    #[test]
    fn sets_whose_ids_xor_alike_are_still_told_apart() {
        let xor_all = |ids: &[Id]| {
            ids.iter().fold([0u8; 32], |mut acc, id| {
                xor(&mut acc, id);
                acc
            })
        };
        let (x1, x2, x3, y1, y2) = ([1; 32], [2; 32], [4; 32], [8; 32], [16; 32]);
        let y3 = xor_all(&[x1, x2, x3, y1, y2]);
        assert_eq!(xor_all(&[x1, x2, x3]), xor_all(&[y1, y2, y3]));
        let same_day = |ids: [Id; 3]| ids.into_iter().map(|id| (id, 0)).collect();
        let (a, b): (BTreeMap<Id, u64>, _) = (same_day([x1, x2, x3]), same_day([y1, y2, y3]));
        assert_eq!(differing_days(&a, &b), vec![0]);
        assert_ne!(summary(&a), days(&a, &[6; 16]));
    }

    /// A summary's digest is equal for equal histories and differs when any message or
    /// day differs, or under another salt.
    #[test]
    fn a_summary_digest_tells_histories_apart() {
        let a = index(&[(1, 0), (2, DAY_MS), (3, DAY_MS + 5)]);
        let digest = |i: &BTreeMap<Id, u64>| summary_digest(&months(&summary(i)));
        assert_eq!(digest(&a), digest(&a.clone()));
        // One message fewer, one more, one moved to another day of the same month.
        let fewer = index(&[(1, 0), (2, DAY_MS)]);
        let more = index(&[(1, 0), (2, DAY_MS), (3, DAY_MS + 5), (4, 9)]);
        let moved = index(&[(1, 0), (2, DAY_MS), (3, 2 * DAY_MS)]);
        for other in [&fewer, &more] {
            assert_ne!(digest(&a), digest(other));
        }
        // Moved within its month: the digest (of months) agrees, as the months do; the
        // days tell them apart once asked.
        assert_eq!(digest(&a), digest(&moved));
        assert_eq!(differing_days(&a, &moved), vec![1, 2]);
        assert_ne!(digest(&a), summary_digest(&months(&days(&a, &[6; 16]))));
        assert_ne!(summary_digest(&[]), digest(&a));
    }

    #[test]
    fn a_missing_message_marks_its_day_only() {
        let a = index(&[(1, 0), (2, DAY_MS), (3, DAY_MS + 5)]);
        let b = index(&[(1, 0), (2, DAY_MS)]);
        let days_apart = differing_days(&a, &b);
        assert_eq!(days_apart, vec![1]);
        assert_eq!(ids_on(&a, &days_apart), vec![[2; 32], [3; 32]]);
        assert_eq!(ids_on(&b, &days_apart), vec![[2; 32]]);
        // A day only one side has differs too.
        let c = index(&[(9, 7 * DAY_MS)]);
        assert_eq!(differing_days(&a, &c), vec![0, 1, 7]);
        assert_eq!(differing_days(&BTreeMap::new(), &c), vec![7]);
    }

    /// One message missing among messages on 2,000 distinct days: the months find its
    /// month, the days of that month its day, and every request of the exchange fits the
    /// protocol's limit (a bucket a day, the whole summary took 72 KB).
    #[test]
    fn months_then_days_find_one_missing_message_among_2000_days() {
        let now = 20_000 * DAY_MS;
        let all: BTreeMap<Id, u64> = (0..2000u64)
            .map(|d| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&d.to_le_bytes());
                (id, now - d * DAY_MS)
            })
            .collect();
        let mut lacking = all.clone();
        let (missing, at) = all.iter().nth(777).map(|(i, t)| (*i, *t)).unwrap();
        lacking.remove(&missing);

        // The asker (lacking it) sends its months in one request.
        let asker = days(&lacking, &SALT);
        let month_parts = parts(Level::Months, &months(&asker));
        let push = SyncPush {
            summary: month_parts.clone(),
            salt: SALT,
            ..SyncPush::default()
        };
        let requests = push.split(crate::net::MAX_REQUEST);
        assert_eq!(requests.len(), 1);
        assert!(confer_room::wire::encode(&requests[0]).unwrap().len() <= crate::net::MAX_REQUEST);

        // The other finds the month; the asker sends that month's days; the other lists
        // its ids on the day that differs.
        let other = days(&all, &SALT);
        let months_apart: Vec<u64> = month_parts
            .iter()
            .flat_map(|p| differing(p, &other).unwrap())
            .collect();
        assert_eq!(months_apart, vec![month(day(at))]);
        let day_apart: Vec<u64> = day_parts(&asker, &months_apart)
            .iter()
            .flat_map(|p| differing(p, &other).unwrap())
            .collect();
        assert_eq!(day_apart, vec![day(at)]);
        assert_eq!(ids_on(&all, &day_apart), vec![missing]);
    }

    /// However many periods a summary has (here a message on every day from 1970 to
    /// 2100, and 5,000 months spread far into the future), it is cut into parts and
    /// requests that each fit the protocol's limit, and nothing is lost on the way.
    #[test]
    fn a_summary_of_any_span_is_sent_in_requests_under_the_limit() {
        let mut index = BTreeMap::new();
        let last_day = 47_482u64;
        for d in 0..last_day {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&d.to_le_bytes());
            index.insert(id, d * DAY_MS);
        }
        for m in 0..5000u64 {
            let mut id = [1u8; 32];
            id[..8].copy_from_slice(&m.to_le_bytes());
            index.insert(id, (last_day + 1000 + m * 97 * MONTH_DAYS) * DAY_MS);
        }
        for level in [Level::Months, Level::Days] {
            let buckets = match level {
                Level::Months => months(&days(&index, &SALT)),
                Level::Days => days(&index, &SALT),
            };
            let all_parts = parts(level, &buckets);
            // Together the parts cover every period, in order, each bucket once.
            assert_eq!(all_parts[0].from, 0);
            assert_eq!(all_parts.last().unwrap().to, u64::MAX);
            for w in all_parts.windows(2) {
                assert_eq!(w[0].to, w[1].from);
            }
            let again: Vec<Bucket> = all_parts.iter().flat_map(|p| p.buckets.clone()).collect();
            assert_eq!(again, buckets);
            let push = SyncPush {
                summary: all_parts.clone(),
                salt: SALT,
                prove: vec![[3; 32]; MAX_PROVE],
                records: vec![vec![4; MAX_RECORD_BYTES]; MAX_RECORDS],
                addresses: vec![(vec![5; 38], vec!["/ip4/192.0.2.1/tcp/65535".into(); 8])],
                ..SyncPush::default()
            };
            let requests = push.split(crate::net::MAX_REQUEST);
            for r in &requests {
                let len = confer_room::wire::encode(r).unwrap().len();
                assert!(len <= crate::net::MAX_REQUEST, "{len} bytes");
                assert!(SyncPush::from_bytes(&confer_room::wire::encode(r).unwrap()).is_some());
            }
            let sent: Vec<Part> = requests.into_iter().flat_map(|r| r.summary).collect();
            assert_eq!(sent, all_parts);
        }
    }

    /// Wants, operations and envelopes of every size are spread over requests that each
    /// fit, in order, none lost, the first carrying the fixed fields.
    #[test]
    fn a_push_is_split_into_requests_that_fit() {
        let envelopes: Vec<Vec<u8>> = (0..300)
            .map(|i| vec![i as u8; 200 + (i * 997) % 40_000])
            .collect();
        let want: Vec<Id> = (0..MAX_REPLY_IDS as u32)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_le_bytes());
                id
            })
            .collect();
        let push = SyncPush {
            room: [9; 16],
            envelopes: envelopes.clone(),
            want: want.clone(),
            salt: [8; 16],
            digest: Some([7; 32]),
            prove: vec![[6; 32]; 3],
            ..SyncPush::default()
        };
        let requests = push.split(crate::net::MAX_REQUEST);
        assert!(requests.len() > 1);
        assert_eq!(requests[0].digest, Some([7; 32]));
        assert_eq!(requests[0].prove.len(), 3);
        for r in &requests {
            assert_eq!((r.room, r.salt), ([9; 16], [8; 16]));
            let len = confer_room::wire::encode(r).unwrap().len();
            assert!(len <= crate::net::MAX_REQUEST, "{len} bytes");
        }
        let sent_want: Vec<Id> = requests.iter().flat_map(|r| r.want.clone()).collect();
        let sent_envelopes: Vec<Vec<u8>> =
            requests.iter().flat_map(|r| r.envelopes.clone()).collect();
        assert_eq!((sent_want, sent_envelopes), (want, envelopes));
        // Nothing to send: no request.
        assert!(
            SyncPush::default()
                .split(crate::net::MAX_REQUEST)
                .is_empty()
        );
    }

    /// A part whose buckets lie outside its range or out of order is not answered.
    #[test]
    fn a_malformed_part_is_refused() {
        let ours = summary(&index(&[(1, 0), (2, 5 * DAY_MS)]));
        let bucket = |period| Bucket {
            period,
            count: 1,
            digest: [0; 32],
        };
        let part = |from, to, buckets| Part {
            level: Level::Days,
            from,
            to,
            buckets,
        };
        assert_eq!(differing(&part(10, 20, vec![bucket(3)]), &ours), None);
        assert_eq!(
            differing(&part(0, 20, vec![bucket(4), bucket(3)]), &ours),
            None
        );
        assert_eq!(
            differing(&part(0, 20, vec![bucket(3), bucket(3)]), &ours),
            None
        );
        // An empty range asks about nothing.
        assert_eq!(differing(&part(5, 5, vec![]), &ours), Some(vec![]));
        // A range that holds none of ours lists only theirs.
        assert_eq!(
            differing(&part(3, 5, vec![bucket(3)]), &ours),
            Some(vec![3])
        );
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

    /// A proof depends on the message's id, time and text, and on the salt: an id alone
    /// (which any member can learn) does not make one, nor does another push's proof.
    #[test]
    fn a_proof_needs_the_message_and_the_salt() {
        let record = MessageRecord {
            id: [1; 32],
            author: confer_room::MemberId([2; 32]),
            sent_at: 1_800_000_000_123,
            text: "Case 14: what helped was the pause".into(),
        };
        let key = holding_key(&record);
        let good = proof(&SALT, &key);
        assert_eq!(good, proof(&SALT, &holding_key(&record.clone())));
        assert_ne!(good, proof(&[6; 16], &key));
        let mut other_time = record.clone();
        other_time.sent_at += 1;
        let mut other_text = record.clone();
        other_text.text.push('.');
        for other in [other_time, other_text] {
            assert_ne!(good, proof(&SALT, &holding_key(&other)));
        }
        assert_ne!(good, proof(&SALT, &record.id));
    }

    /// Summaries are kept per room and salt while the room's messages stay as they were,
    /// and at most [`Summaries::LIMIT`] of them.
    #[test]
    fn summaries_are_kept_per_salt_and_version() {
        let mut kept = Summaries::default();
        let room = RoomId([1; 32]);
        let made = Arc::new(vec![]);
        kept.put(room, SALT, 3, Arc::clone(&made));
        assert!(kept.get(&room, &SALT, 3).is_some());
        assert!(kept.get(&room, &SALT, 4).is_none(), "the messages changed");
        assert!(kept.get(&room, &[6; 16], 3).is_none());
        for i in 0..Summaries::LIMIT as u8 {
            kept.put(RoomId([2; 32]), [i; 16], 0, Arc::clone(&made));
        }
        assert!(
            kept.get(&room, &SALT, 3).is_none(),
            "the oldest is forgotten"
        );
        assert_eq!(kept.entries.len(), Summaries::LIMIT);
        kept.forget(&RoomId([2; 32]));
        assert!(kept.entries.is_empty());
    }
}
