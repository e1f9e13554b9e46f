//! What members push to each other directly (the `sync` protocol, request-response):
//! reconciliation, wants and catch-up, recent envelopes for a member who subscribes,
//! delivery confirmations, and telling a former member of its departure.
//!
//! What a member may make this node do is decided in `crate::budget` (per-member
//! budgets, what it asked for, how often it gets the log); here those decisions are
//! applied to the pushes as they come and go.

use super::*;
use crate::budget::{self, Asked, Kind};
use crate::sync::{Level, Salt};

/// Recent envelopes kept per room for pushing to members who (re)subscribe.
const RECENT_LIMIT: usize = 256;

/// Most sync requests in flight to one peer; further ones wait in its [`Outgoing`] queue.
const PUSH_WINDOW: usize = 32;

/// Most bytes of sync requests queued for one peer. A push that does not fit is dropped:
/// what it carried is found missing again at the next reconciliation.
const OUTGOING_LIMIT: usize = 64 * 1024 * 1024;

/// How long a message id asked of one member is not asked of another (see
/// [`EventLoop::receive_reply`]); it doubles with every ask that brings nothing, up to
/// [`WANT_BACKOFF_MAX`] (see [`sync::Wants`]).
const WANT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest wait before asking again for an id that never arrived (in practice a
/// message sealed under an epoch this member has no key for).
const WANT_BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// Most threads that open a batch of pushed envelopes (see
/// [`EventLoop::open_in_parallel`]).
const OPEN_THREADS: usize = 4;

/// Batches with fewer new envelopes than this are opened on the event loop alone.
const PARALLEL_OPEN_MIN: usize = 8;

/// Most message ids remembered as asked for.
const WANTED_LIMIT: usize = 4 * sync::MAX_REPLY_IDS;

/// Most requests of envelopes a member asked for that one call of [`EventLoop::pump`]
/// reads from the store and queues: the window then grows by one with every answer, and
/// no single event reads more than two requests' worth.
const ANSWERS_PER_PUMP: usize = 2;

/// Most message ids looked up for one request of envelopes a member asked for (most of
/// them may be ids this node does not hold).
const IDS_PER_ANSWER: usize = 256;

/// A recent room envelope and the peers of the members who were in the room when it
/// was stored: only they may be sent it again.
pub(super) struct Recent {
    envelope: Vec<u8>,
    /// When it was accepted (see [`NetConfig::recent_window`]).
    at: Instant,
    /// The peers of the members when it was accepted; shared by consecutive envelopes
    /// while the members stay the same.
    audience: Arc<[Vec<u8>]>,
}

/// Sync requests to one peer: at most [`PUSH_WINDOW`] in flight, the next sent when one is
/// answered or fails. Sending a catch-up's hundreds of requests at once overran the
/// peer's limit of concurrent streams (the excess was dropped, and arrived only with a
/// later reconciliation) and queued everything else behind them.
#[derive(Default)]
struct Outgoing {
    queue: VecDeque<(Vec<u8>, Sent)>,
    bytes: usize,
    in_flight: usize,
}

/// What a sync request carried that its answer is read against.
#[derive(Debug, Clone, Copy)]
struct Sent {
    room: RoomId,
    /// The salt of its summary and of the proofs it asks for.
    salt: Salt,
    /// It carried a digest: an answer saying it differs is followed by our months.
    digest: bool,
    /// It carried months: the months an answer names are followed by their days.
    months: bool,
}

/// Catch-up bookkeeping: the per-peer push queues, what was asked of whom, and which
/// envelopes are already held.
pub(super) struct Transfers {
    /// Sync requests per peer.
    outgoing: HashMap<PeerId, Outgoing>,
    /// Message ids asked of a member and not yet received, with when they may be asked
    /// again. A returning member hears from every online member what it lacks; it asks
    /// only the first to answer, not all of them; what never arrives is asked for less
    /// and less often.
    pub(super) wanted: sync::Wants,
    /// Per room: the SHA-256 of every stored message's envelope, and the message's id.
    /// A message's id is a hash of its plaintext, so without this a copy could only be
    /// recognised after decrypting and verifying it (about 80 µs); with it, a duplicate
    /// (several members pushing the same envelope) costs one hash.
    pub(super) held: HashMap<RoomId, HashMap<[u8; 32], Id>>,
    /// Per room and member: how many operations our log held when we last handed that
    /// member the whole log, and when (see [`budget::whole_log_due`]).
    log_sent: HashMap<(RoomId, PeerId), (usize, Instant)>,
    /// Sync requests sent and not yet answered (at most [`PUSH_WINDOW`] per peer).
    in_flight: HashMap<OutboundRequestId, Sent>,
    /// Per member and room: the messages it asked for, read as its pushes drain.
    asked: HashMap<(PeerId, RoomId), Asked>,
    /// Per room: each stored message's [`sync::holding_key`], to prove holding it and to
    /// check others' proofs.
    pub(super) keys: HashMap<RoomId, HashMap<Id, Id>>,
    /// Per room: a number that changes whenever a message is stored (see
    /// [`sync::Summaries`]).
    pub(super) versions: HashMap<RoomId, u64>,
    /// Summaries recently made, by room and salt.
    summaries: sync::Summaries,
    /// Per room and member: when we last sent it our summary on its connecting or
    /// subscribing (see [`budget::reconcile_due`]).
    reconciled: HashMap<(RoomId, PeerId), Instant>,
    /// Per room and member: when we last handed it recent envelopes; it is handed only
    /// those accepted since.
    recent_handed: HashMap<(RoomId, PeerId), Instant>,
}

impl Default for Transfers {
    fn default() -> Self {
        Transfers {
            outgoing: HashMap::new(),
            wanted: sync::Wants::new(WANTED_LIMIT, WANT_TIMEOUT, WANT_BACKOFF_MAX),
            held: HashMap::new(),
            log_sent: HashMap::new(),
            in_flight: HashMap::new(),
            asked: HashMap::new(),
            keys: HashMap::new(),
            versions: HashMap::new(),
            summaries: sync::Summaries::default(),
            reconciled: HashMap::new(),
            recent_handed: HashMap::new(),
        }
    }
}

impl Transfers {
    /// Forgets what was sent for a room this profile no longer has.
    pub(super) fn forget_room(&mut self, id: &RoomId) {
        self.held.remove(id);
        self.keys.remove(id);
        self.versions.remove(id);
        self.summaries.forget(id);
        self.log_sent.retain(|(room, _), _| room != id);
        self.asked.retain(|(_, room), _| room != id);
        self.reconciled.retain(|(room, _), _| room != id);
        self.recent_handed.retain(|(room, _), _| room != id);
    }

    /// A message was stored in room `id`: summaries made before no longer hold.
    pub(super) fn stored(&mut self, id: RoomId, record: &MessageRecord) {
        self.keys
            .entry(id)
            .or_default()
            .insert(record.id, sync::holding_key(record));
        *self.versions.entry(id).or_default() += 1;
    }
}

/// How often a sync round hands a connected member the whole log even if the log has not
/// changed since it was last handed over: in case that push was lost.
const FULL_LOG_EVERY: Duration = Duration::from_secs(5 * 60);

/// How many threads [`EventLoop::take_in_parallel`] uses: one per core, at most
/// [`OPEN_THREADS`]. Asked once: the standard library reads the cgroup's files each time
/// (a measurable share of a catch-up when it was asked for every pushed batch).
fn open_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .min(OPEN_THREADS)
    })
}

/// Maps `f` over `items` on up to `threads` scoped threads, each taking one contiguous
/// share with its own state made by `init`. Returns the share size and each share's
/// results in order; a share whose thread panicked comes back empty.
fn in_threads<T: Sync, S: Send, R: Send>(
    items: &[T],
    threads: usize,
    init: impl Fn() -> S,
    f: impl Fn(&mut S, &T) -> R + Sync,
) -> (usize, Vec<Vec<R>>) {
    let share = items.len().div_ceil(threads.max(1)).max(1);
    let f = &f;
    let results = std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(share)
            .map(|part| {
                let mut state = init();
                scope.spawn(move || part.iter().map(|item| f(&mut state, item)).collect())
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    (share, results)
}

/// A message opened from a pushed envelope, and whether storing it was new.
pub(super) type Taken = (MessageRecord, Result<bool, confer_store::StoreError>);

impl EventLoop {
    /// This member's messages in room `id` no other member has confirmed (at most 256).
    pub(super) fn unconfirmed_ids(&self, id: &RoomId) -> Vec<Id> {
        self.unconfirmed
            .get(id)
            .map(|u| u.iter().take(256).copied().collect())
            .unwrap_or_default()
    }

    /// The envelopes of the stored messages `ids` of room `id` sealed under its current key.
    pub(super) fn current_envelopes(&self, id: &RoomId, ids: &[Id]) -> Vec<Vec<u8>> {
        let Some(room) = self.rooms.get(id) else {
            return Vec::new();
        };
        self.envelopes_of(id, ids)
            .into_iter()
            .filter(|e| room.sealed_in_current_epoch(e))
            .collect()
    }

    /// Pushes those of `sent` (this member's messages in room `id`) still unconfirmed to
    /// one connected member, a different one each tick: its answer names those it holds,
    /// which confirms them (see `confirm_soon`).
    pub(super) fn ask_one_to_confirm(&mut self, id: RoomId, sent: &BTreeSet<Id>) {
        let Some(unconfirmed) = self.unconfirmed.get(&id) else {
            return;
        };
        let pending: Vec<Id> = sent.intersection(unconfirmed).copied().collect();
        let peers = self.connected_members(&id);
        if let Some(peer) = peers.get(self.ticks as usize % peers.len().max(1)) {
            self.ask_to_confirm(id, &pending, &[*peer]);
        }
    }

    /// Pushes the messages `ids` of this member's in room `id` that are sealed under the
    /// current key to `peers`, whose answers name those they hold, which confirms them.
    pub(super) fn ask_to_confirm(&mut self, id: RoomId, ids: &[Id], peers: &[PeerId]) {
        let envelopes = self.current_envelopes(&id, ids);
        if peers.is_empty() || envelopes.is_empty() {
            return;
        }
        self.push(
            id,
            peers,
            SyncPush {
                envelopes,
                ..SyncPush::default()
            },
        );
    }

    /// Opens and stores the messages among a batch of pushed envelopes on several
    /// threads: opening (decrypting and verifying the author's signature, about 80 µs)
    /// and storing (sealing, sled) are most of the cost of taking in a catch-up, and the
    /// event loop is otherwise one thread.
    ///
    /// First each thread opens its share on its own clone of the room, so nothing here
    /// changes the room. Then the messages are stored, again in parallel (the store may
    /// be used from several threads), up to the first envelope that is not a message
    /// (an operation, a message that waits for an operation, invalid input): that one
    /// and all after it are left to the ordinary way ([`Self::receive_one`], on the room
    /// itself), so that a message following an operation in the batch is judged by the
    /// room after that operation, as it would be one by one. Envelopes already held are
    /// left to it too (it recognises them by their hash).
    ///
    /// Returns, per envelope, the message and the outcome of storing it (see
    /// [`Self::after_insert`]), or `None` for the ordinary way.
    pub(super) fn take_in_parallel(&self, id: RoomId, envelopes: &[Vec<u8>]) -> Vec<Option<Taken>> {
        let mut out: Vec<Option<Taken>> = envelopes.iter().map(|_| None).collect();
        let Some(records) = self.open_in_parallel(id, envelopes) else {
            return out;
        };
        let threads = records
            .len()
            .div_ceil(PARALLEL_OPEN_MIN)
            .clamp(1, open_threads());
        let store = &self.store;
        let (share, stored) = in_threads(
            &records,
            threads,
            || (),
            |(), (i, record)| {
                let stored = insert_opened(store, id, record, &envelopes[*i]);
                Some((record.clone(), stored))
            },
        );
        // A thread that panicked yields nothing: its share goes the ordinary way.
        for (part, results) in records.chunks(share).zip(stored) {
            for ((i, _), taken) in part.iter().zip(results) {
                out[*i] = taken;
            }
        }
        out
    }

    /// The first stage of [`Self::take_in_parallel`]: the messages opened, with their
    /// envelopes' positions, up to the first envelope that is not a new message; `None`
    /// if the batch is small enough for the event loop alone.
    pub(super) fn open_in_parallel(
        &self,
        id: RoomId,
        envelopes: &[Vec<u8>],
    ) -> Option<Vec<(usize, MessageRecord)>> {
        let held = self.transfers.held.get(&id);
        let fresh: Vec<usize> = envelopes
            .iter()
            .enumerate()
            .filter(|(_, e)| held.is_none_or(|h| !h.contains_key(&envelope_digest(e))))
            .map(|(i, _)| i)
            .collect();
        let threads = open_threads();
        let room = self.rooms.get(&id)?;
        if threads < 2 || fresh.len() < PARALLEL_OPEN_MIN {
            return None;
        }
        let now = now_ms();
        let mut out = Vec::with_capacity(fresh.len());
        // Each thread opens on its own clone of the room.
        let (share, opened) = in_threads(
            &fresh,
            threads,
            || room.clone(),
            |room, &i| match room.open(&envelopes[i], now) {
                Ok(Incoming::Message(record)) if !sync::too_far_ahead(record.sent_at, now) => {
                    Some(record)
                }
                _ => None,
            },
        );
        // A thread that panicked yields nothing: its share goes the ordinary way.
        'parts: for (part, results) in fresh.chunks(share).zip(opened) {
            if results.len() != part.len() {
                break;
            }
            for (&i, record) in part.iter().zip(results) {
                match record {
                    Some(record) => out.push((i, record)),
                    None => break 'parts,
                }
            }
        }
        Some(out)
    }

    /// Keeps an accepted envelope so it can be pushed to members who subscribe later.
    pub(super) fn remember(&mut self, id: RoomId, envelope: &[u8]) {
        let Some(room) = self.rooms.get(&id) else {
            return;
        };
        let members = room.members();
        let recent = self.recent.entry(id).or_default();
        let audience = match recent.back() {
            Some(last)
                if last.audience.len() == members.len()
                    && last
                        .audience
                        .iter()
                        .zip(&members)
                        .all(|(a, m)| *a == m.peer) =>
            {
                Arc::clone(&last.audience)
            }
            _ => members.iter().map(|m| m.peer.clone()).collect(),
        };
        if recent.len() >= RECENT_LIMIT {
            recent.pop_front();
        }
        recent.push_back(Recent {
            envelope: envelope.to_vec(),
            at: Instant::now(),
            audience,
        });
    }

    /// When a member subscribes to one of the room's topics, or is on one we take up:
    /// reconcile with it (our log, our message summary, where members' nodes are), and,
    /// if it is the current topic, hand it the envelopes accepted in the last
    /// [`NetConfig::recent_window`] that it was entitled to and has not been handed yet
    /// (gossip does not route to a peer until its subscription has been seen). A member
    /// whose subscription comes again within a sync round of the last reconciliation
    /// ([`budget::reconcile_due`]) gets only envelopes new since: leaving and joining a
    /// topic over and over costs this node nothing more.
    pub(super) fn push_recent(&mut self, id: RoomId, peer: PeerId, topic: &str) {
        let Some(room) = self.rooms.get(&id) else {
            return;
        };
        let peer_bytes = peer.to_bytes();
        if !room.members().iter().any(|m| m.peer == peer_bytes) {
            return;
        }
        let now = Instant::now();
        let handed = self.transfers.recent_handed.get(&(id, peer)).copied();
        let envelopes: Vec<Vec<u8>> = if room.topic().as_deref() == Some(topic) {
            self.recent
                .get(&id)
                .map(|recent| {
                    recent
                        .iter()
                        .filter(|r| r.at.elapsed() <= self.recent_window)
                        .filter(|r| handed.is_none_or(|at| r.at > at))
                        .filter(|r| r.audience.contains(&peer_bytes))
                        .map(|r| r.envelope.clone())
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        if !envelopes.is_empty() {
            self.transfers.recent_handed.insert((id, peer), now);
        }
        let last = self.transfers.reconciled.get(&(id, peer)).copied();
        if budget::reconcile_due(last, now, self.sync_interval) {
            self.reconcile(id, peer, envelopes);
        } else if !envelopes.is_empty() {
            self.push(
                id,
                &[peer],
                SyncPush {
                    envelopes,
                    ..SyncPush::default()
                },
            );
        }
    }

    /// Starts reconciliation with a member: our months, the signed records of where
    /// members' nodes are, our whole log unless it was handed over less than a sync round
    /// ago unchanged ([`budget::whole_log_due`]), plus any `envelopes` to hand over.
    pub(super) fn reconcile(&mut self, id: RoomId, peer: PeerId, envelopes: Vec<Vec<u8>>) {
        self.transfers.reconciled.insert((id, peer), Instant::now());
        self.reconcile_with(id, peer, envelopes, true, true);
    }

    /// Reconciliation in a sync round: as [`Self::reconcile`], but the digest of our
    /// months instead of the months, and the whole log only if it has grown since this
    /// member was last handed it, or that was [`FULL_LOG_EVERY`] ago. The member got the
    /// whole log when it connected or subscribed, and operations travel by gossip too;
    /// handing a long-lived room's whole log (every admission and rotation, with their
    /// sealed secrets) to every member every round was most of an idle room's traffic.
    pub(super) fn reconcile_round(&mut self, id: RoomId, peer: PeerId, envelopes: Vec<Vec<u8>>) {
        self.reconcile_with(id, peer, envelopes, false, false);
    }

    /// Pushes our months (`whole`) or their digest under a fresh salt, with `envelopes`,
    /// the signed peer records we hold, the ids of our messages still unconfirmed for the
    /// member to prove it holds, and our whole log if due (`asked`: the member connected
    /// or subscribed).
    fn reconcile_with(
        &mut self,
        id: RoomId,
        peer: PeerId,
        envelopes: Vec<Vec<u8>>,
        asked: bool,
        whole: bool,
    ) {
        let Some(room) = self.rooms.get(&id) else {
            return;
        };
        let len = room.log().len();
        let now = Instant::now();
        let last = self.transfers.log_sent.get(&(id, peer)).copied();
        let due = budget::whole_log_due(last, len, asked, now, self.sync_interval, FULL_LOG_EVERY);
        let ops = if due {
            self.transfers.log_sent.insert((id, peer), (len, now));
            room.log().ops()
        } else {
            Vec::new()
        };
        // Our own entry only: the version, and where we can be reached.
        let addresses = vec![self.own_entry()];
        let mut salt = sync::Salt::default();
        rand::rand_core::Rng::fill_bytes(&mut rng(), &mut salt);
        let months = sync::months(&self.our_days(id, salt));
        let (summary, digest) = if whole {
            (sync::parts(Level::Months, &months), None)
        } else {
            (Vec::new(), Some(sync::summary_digest(&months)))
        };
        let records = self.records_for(&id);
        let prove = self.to_prove(&id);
        self.push(
            id,
            &[peer],
            SyncPush {
                ops,
                envelopes,
                summary,
                salt,
                digest,
                records,
                prove,
                addresses,
                ..SyncPush::default()
            },
        );
    }

    /// The member's digest differed from ours (the answer to a request that carried
    /// one): our months, under the same salt.
    fn send_months(&mut self, id: RoomId, peer: PeerId, salt: Salt) {
        let months = sync::months(&self.our_days(id, salt));
        self.push(
            id,
            &[peer],
            SyncPush {
                summary: sync::parts(Level::Months, &months),
                salt,
                ..SyncPush::default()
            },
        );
    }

    /// This node's own entry among the addresses it pushes (see
    /// [`SyncPush::addresses`]): its Confer version, then where it can be reached (what an
    /// invite of it would list: in relay-only mode relayed addresses only).
    pub(super) fn own_entry(&self) -> (Vec<u8>, Vec<String>) {
        let mut entry = vec![self.protocol_version.to_owned()];
        entry.extend(
            self.invite_addresses()
                .into_iter()
                .take(sync::MAX_ADDRESSES_PER_PEER - 1),
        );
        (self.swarm.local_peer_id().to_bytes(), entry)
    }

    /// The member named the months where ours differ from its own (the answer to a
    /// request that carried months): their days, under the same salt.
    fn send_days(&mut self, id: RoomId, peer: PeerId, salt: Salt, months: &[u64]) {
        let days = self.our_days(id, salt);
        self.push(
            id,
            &[peer],
            SyncPush {
                summary: sync::day_parts(&days, months),
                salt,
                ..SyncPush::default()
            },
        );
    }

    /// Our summary by day of room `id` under `salt`, made once while our messages stay as
    /// they are.
    fn our_days(&mut self, id: RoomId, salt: Salt) -> Arc<Vec<sync::Bucket>> {
        let version = self
            .transfers
            .versions
            .get(&id)
            .copied()
            .unwrap_or_default();
        if let Some(days) = self.transfers.summaries.get(&id, &salt, version) {
            return days;
        }
        let empty = BTreeMap::new();
        let index = self.index.get(&id).unwrap_or(&empty);
        let days = Arc::new(sync::days(index, &salt));
        self.transfers
            .summaries
            .put(id, salt, version, Arc::clone(&days));
        days
    }

    /// Our summary by day under a salt a member sent: made at most once while our
    /// messages stay as they are, and then only within the member's budget
    /// ([`Kind::Summary`]); `None` beyond it.
    fn days_for(
        &mut self,
        id: RoomId,
        salt: Salt,
        who: budget::Member,
        now: Instant,
    ) -> Option<Arc<Vec<sync::Bucket>>> {
        let version = self
            .transfers
            .versions
            .get(&id)
            .copied()
            .unwrap_or_default();
        if let Some(days) = self.transfers.summaries.get(&id, &salt, version) {
            return Some(days);
        }
        let cost = self.index.get(&id).map_or(0, BTreeMap::len) as u64;
        if !self.budgets.take(who, Kind::Summary, cost, now) {
            return None;
        }
        Some(self.our_days(id, salt))
    }

    /// Up to [`sync::MAX_PROVE`] of our messages in room `id` no other member has
    /// confirmed, for a member to prove it holds; a different share each tick when there
    /// are more.
    fn to_prove(&self, id: &RoomId) -> Vec<Id> {
        let Some(unconfirmed) = self.unconfirmed.get(id) else {
            return Vec::new();
        };
        let skip = if unconfirmed.len() > sync::MAX_PROVE {
            (self.ticks as usize * sync::MAX_PROVE) % unconfirmed.len()
        } else {
            0
        };
        unconfirmed
            .iter()
            .cycle()
            .skip(skip)
            .take(sync::MAX_PROVE.min(unconfirmed.len()))
            .copied()
            .collect()
    }

    /// Known addresses of the room's members (kept in the store for redialling).
    pub(super) fn member_addresses(&self, id: &RoomId) -> Vec<(Vec<u8>, Vec<String>)> {
        self.member_peers(id)
            .into_iter()
            .filter_map(|p| {
                let addrs = self.addresses.get(&p)?;
                Some((
                    p.to_bytes(),
                    addrs.iter().take(8).map(|a| a.to_string()).collect(),
                ))
            })
            .collect()
    }

    /// The signed peer records to hand a member of room `id`: this node's own and those
    /// of the room's other members, each as its node signed it.
    pub(super) fn records_for(&mut self, id: &RoomId) -> Vec<Vec<u8>> {
        let mut records: Vec<Vec<u8>> = self.own_record().into_iter().collect();
        for peer in self.member_peers(id) {
            if let Some(record) = self.addresses.record(&peer) {
                records.push(record.to_vec());
            }
        }
        records.truncate(sync::MAX_RECORDS);
        records
    }

    /// This node's signed peer record of the addresses an invite of it would list (in
    /// relay-only mode relayed ones only), made again when they change.
    fn own_record(&mut self) -> Option<Vec<u8>> {
        let addrs: Vec<Multiaddr> = self
            .invite_addresses()
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        if addrs.is_empty() {
            return None;
        }
        if let Some((made_for, record)) = &self.own_record
            && *made_for == addrs
        {
            return Some(record.clone());
        }
        let record = crate::addresses::own_record(&self.keypair, addrs.clone())?;
        self.own_record = Some((addrs, record.clone()));
        Some(record)
    }

    /// Takes what a member's push says of where members' nodes are: the sender's own
    /// entry, and signed peer records of current members' nodes (see
    /// [`crate::addresses`]). Entries the sender gives for other nodes are not taken.
    fn take_addresses(
        &mut self,
        id: RoomId,
        from: PeerId,
        addresses: &[(Vec<u8>, Vec<String>)],
        records: &[Vec<u8>],
    ) {
        let from_bytes = from.to_bytes();
        for (peer, addrs) in addresses.iter().take(confer_room::MAX_MEMBERS) {
            if *peer == from_bytes {
                let addrs: Vec<Multiaddr> = addrs
                    .iter()
                    .take(crate::addresses::PER_PEER)
                    .filter_map(|a| a.parse().ok())
                    .collect();
                self.learn_addresses(from, addrs);
            }
        }
        let members: HashSet<PeerId> = self.member_peers(&id).into_iter().collect();
        let now = Instant::now();
        for record in records.iter().take(sync::MAX_RECORDS) {
            let taken = self
                .addresses
                .take_record(record, |p| members.contains(p), now);
            if taken.is_some() {
                self.addresses_dirty = true;
            }
        }
    }

    /// Sends a push to `peers`, split into requests that fit the protocol's limit
    /// ([`SyncPush::split`]), all under its salt (a fresh one if it has none).
    pub(super) fn push(&mut self, id: RoomId, peers: &[PeerId], mut template: SyncPush) {
        let Some(room) = self.rooms.get(&id) else {
            return;
        };
        template.room = room.sync_tag();
        if template.salt == Salt::default() {
            rand::rand_core::Rng::fill_bytes(&mut rng(), &mut template.salt);
        }
        let salt = template.salt;
        for batch in template.split(net::MAX_REQUEST) {
            let sent = Sent {
                room: id,
                salt,
                digest: batch.digest.is_some(),
                months: batch.summary.iter().any(|p| p.level == Level::Months),
            };
            if let Ok(bytes) = confer_room::wire::encode(&batch) {
                for peer in peers {
                    self.enqueue(*peer, bytes.clone(), sent);
                }
            }
        }
        for peer in peers {
            self.pump(*peer);
        }
    }

    /// Envelopes of stored messages, by id.
    pub(super) fn envelopes_of(&self, id: &RoomId, ids: &[Id]) -> Vec<Vec<u8>> {
        ids.iter()
            .filter_map(|m| self.store.message(&id.0, m).ok().flatten())
            .filter_map(|bytes| StoredMessage::from_bytes(&bytes))
            .map(|s| s.envelope)
            .collect()
    }

    /// Marks this member's messages as held by another member.
    pub(super) fn confirm(&mut self, id: &RoomId, ids: impl IntoIterator<Item = Id>) {
        let Some(unconfirmed) = self.unconfirmed.get_mut(id) else {
            return;
        };
        let confirmed: Vec<Id> = ids.into_iter().filter(|m| unconfirmed.remove(m)).collect();
        if confirmed.is_empty() {
            return;
        }
        let cleared = self.store.remove_from_outbox(&id.0, &confirmed);
        if let Err(e) = cleared.and_then(|()| self.store.flush()) {
            tracing::error!("could not record a delivery confirmation: {e}");
        }
        if let Some(shown) = self.shown_pending.get_mut(id) {
            let told: Vec<Id> = confirmed.into_iter().filter(|m| shown.remove(m)).collect();
            for m in told {
                self.tell_followers(id, &FollowUpdate::Delivered(hex::encode(m)));
            }
        }
        if !self.leaves_waiting.is_empty() {
            self.settle_waiting_leaves();
        }
    }

    pub(super) fn handle_sync(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let peer_bytes = peer.to_bytes();
                    let known = self.rooms.values().any(|r| r.knows_peer(&peer_bytes));
                    if !known
                        && !self.limits.allow(
                            peer,
                            limits::Kind::StrangerSync,
                            std::time::Instant::now(),
                        )
                    {
                        self.dropped += 1;
                        return;
                    }
                    let reply = self.receive_push(peer, &request).unwrap_or_default();
                    // A reply naming a message as held waits until it is on disk.
                    let not_durable = &self.commit.not_durable;
                    let waits = !not_durable.is_empty()
                        && reply
                            .held
                            .iter()
                            .map(|(m, _)| m)
                            .chain(&reply.ids)
                            .any(|m| not_durable.contains(m));
                    if waits {
                        self.commit.next.responses.push((channel, reply));
                    } else {
                        self.respond(channel, &reply);
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    let sent = self.transfers.in_flight.remove(&request_id);
                    self.request_done(peer);
                    self.receive_reply(peer, sent, &response);
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!("a sync push failed: {error}");
                self.transfers.in_flight.remove(&request_id);
                // It may have carried the log: the next round hands it over again.
                self.transfers.log_sent.retain(|(_, to), _| *to != peer);
                self.request_done(peer);
            }
            request_response::Event::InboundFailure { .. } => self.dropped += 1,
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Whether sync requests to `peer` are queued or unanswered.
    pub(super) fn pushing_to(&self, peer: &PeerId) -> bool {
        self.transfers.outgoing.contains_key(peer)
    }

    /// Queues a sync request for `peer` (see [`Outgoing`]).
    fn enqueue(&mut self, peer: PeerId, bytes: Vec<u8>, sent: Sent) {
        let out = self.transfers.outgoing.entry(peer).or_default();
        if out.bytes + bytes.len() > OUTGOING_LIMIT {
            tracing::debug!("sync queue full; a push is left to the next reconciliation");
            return;
        }
        out.bytes += bytes.len();
        out.queue.push_back((bytes, sent));
    }

    /// Sends queued sync requests to `peer` while fewer than [`PUSH_WINDOW`] are in
    /// flight; with none queued, reads up to [`ANSWERS_PER_PUMP`] requests' worth of the
    /// messages the member asked for ([`Self::answer_asked`]).
    pub(super) fn pump(&mut self, peer: PeerId) {
        let mut answered = 0;
        loop {
            let out = self.transfers.outgoing.entry(peer).or_default();
            if out.in_flight >= PUSH_WINDOW {
                break;
            }
            if let Some((bytes, sent)) = out.queue.pop_front() {
                out.bytes = out.bytes.saturating_sub(bytes.len());
                out.in_flight += 1;
                let request = self.swarm.behaviour_mut().sync.send_request(&peer, bytes);
                self.transfers.in_flight.insert(request, sent);
                continue;
            }
            if answered >= ANSWERS_PER_PUMP || !self.answer_asked(peer) {
                break;
            }
            answered += 1;
        }
        let idle = self
            .transfers
            .outgoing
            .get(&peer)
            .is_some_and(|out| out.in_flight == 0 && out.queue.is_empty());
        if idle {
            self.transfers.outgoing.remove(&peer);
        }
    }

    /// Reads from the store the next of the messages `peer` asked for, as many as fit one
    /// request (looking up at most [`IDS_PER_ANSWER`] ids, some of which this node may not
    /// hold), and queues them. Returns whether it queued a request.
    fn answer_asked(&mut self, peer: PeerId) -> bool {
        let now = Instant::now();
        let peer_bytes = peer.to_bytes();
        let mut looked_up = 0;
        while looked_up < IDS_PER_ANSWER {
            let Some(&(_, id)) = self
                .transfers
                .asked
                .iter()
                .find(|((p, _), asked)| *p == peer && asked.waiting())
                .map(|(key, _)| key)
            else {
                return false;
            };
            let tag = self
                .rooms
                .get(&id)
                .filter(|r| r.is_member() && r.members().iter().any(|m| m.peer == peer_bytes))
                .map(Room::sync_tag);
            let Some(tag) = tag else {
                self.transfers.asked.remove(&(peer, id));
                continue;
            };
            let mut push = SyncPush {
                room: tag,
                ..SyncPush::default()
            };
            rand::rand_core::Rng::fill_bytes(&mut rng(), &mut push.salt);
            let mut size = confer_room::wire::encode(&push).map_or(0, |b| b.len()) + 64;
            while looked_up < IDS_PER_ANSWER {
                let Some(m) = self
                    .transfers
                    .asked
                    .get_mut(&(peer, id))
                    .and_then(|asked| asked.next(now))
                else {
                    break;
                };
                looked_up += 1;
                let Some(envelope) = self.envelopes_of(&id, &[m]).pop() else {
                    continue;
                };
                let len = envelope.len() + 9;
                if size + len > net::MAX_REQUEST {
                    if !push.envelopes.is_empty()
                        && let Some(asked) = self.transfers.asked.get_mut(&(peer, id))
                    {
                        asked.put_back(m);
                    }
                    break;
                }
                size += len;
                push.envelopes.push(envelope);
            }
            if push.envelopes.is_empty() {
                continue;
            }
            let sent = Sent {
                room: id,
                salt: push.salt,
                digest: false,
                months: false,
            };
            let Ok(bytes) = confer_room::wire::encode(&push) else {
                return false;
            };
            self.enqueue(peer, bytes, sent);
            return true;
        }
        false
    }

    /// A sync request to `peer` was answered or failed: send the next.
    pub(super) fn request_done(&mut self, peer: PeerId) {
        if let Some(out) = self.transfers.outgoing.get_mut(&peer) {
            out.in_flight = out.in_flight.saturating_sub(1);
        }
        self.pump(peer);
        if self.former.contains_key(&peer) && !self.pushing_to(&peer) {
            self.release_former_members(Instant::now());
        }
    }

    /// Once a second: forgets what members asked for long ago or asked for and left, and
    /// goes on answering what they asked for where no answer of ours is in flight to
    /// bring [`Self::pump`] round again.
    pub(super) fn prune_transfers(&mut self, now: Instant) {
        self.transfers.wanted.prune(now);
        let swarm = &self.swarm;
        self.transfers
            .asked
            .retain(|(peer, _), asked| swarm.is_connected(peer) && asked.prune(now));
        let waiting: BTreeSet<PeerId> = self
            .transfers
            .asked
            .iter()
            .filter(|((peer, _), asked)| asked.waiting() && !self.pushing_to(peer))
            .map(|((peer, _), _)| *peer)
            .collect();
        for peer in waiting {
            self.pump(peer);
        }
    }

    /// The other side's answer to our push (`sent`: what the push carried): proofs that
    /// it holds our messages, and where our histories differ.
    ///
    /// Each side asks for what it lacks (`want`) and sends nothing unasked: both sides of
    /// a connection start a reconciliation (on connecting, on seeing a subscription or
    /// taking up a topic members are already on, every sync round,
    /// [`NetConfig::sync_interval`]), so each learns what it lacks from its own. A
    /// member returning to a room hears from every online member what it lacks at about
    /// the same moment; if each pushed the whole gap it would receive it once per member.
    /// So it asks the first member that answers, and asks nobody else for those ids for
    /// [`WANT_TIMEOUT`] (then whoever answers next is asked again, for what is still
    /// missing).
    ///
    /// Only a proof confirms delivery ([`SyncReply::held`]): an id the member lists, or a
    /// summary that agrees with ours, it could make from ids alone.
    fn receive_reply(&mut self, from: PeerId, sent: Option<Sent>, bytes: &[u8]) {
        let Some(reply) = SyncReply::from_bytes(bytes) else {
            self.dropped += 1;
            return;
        };
        if reply.ids.len() > sync::MAX_REPLY_IDS || reply.months.len() > sync::MAX_REPLY_MONTHS {
            self.dropped += 1;
            return;
        }
        // An answer to nothing we remember sending (sent before a restart) says nothing.
        let Some(sent) = sent else {
            return;
        };
        let id = sent.room;
        let from_bytes = from.to_bytes();
        let member = self
            .rooms
            .get(&id)
            .is_some_and(|r| r.is_member() && r.members().iter().any(|m| m.peer == from_bytes));
        if !member {
            return;
        }
        let proven: Vec<Id> = match (self.unconfirmed.get(&id), self.transfers.keys.get(&id)) {
            (Some(unconfirmed), Some(keys)) => reply
                .held
                .iter()
                .filter(|(m, proof)| {
                    unconfirmed.contains(m)
                        && keys
                            .get(m)
                            .is_some_and(|key| sync::proof(&sent.salt, key) == *proof)
                })
                .map(|(m, _)| *m)
                .collect(),
            _ => Vec::new(),
        };
        self.confirm(&id, proven);
        if sent.digest && reply.differs.is_some() {
            // Our digest was not the member's: now the months.
            self.send_months(id, from, sent.salt);
        }
        if sent.months && !reply.months.is_empty() {
            self.send_days(id, from, sent.salt, &reply.months);
        }
        let empty = BTreeMap::new();
        let index = self.index.get(&id).unwrap_or(&empty);
        let now = Instant::now();
        let wanted = &self.transfers.wanted;
        let i_lack: Vec<Id> = reply
            .ids
            .iter()
            .filter(|m| !index.contains_key(*m))
            .filter(|m| wanted.due(m, now))
            .copied()
            .collect::<BTreeSet<Id>>()
            .into_iter()
            .collect();
        if i_lack.is_empty() {
            return;
        }
        for m in &i_lack {
            self.transfers.wanted.asked(*m, now);
        }
        self.push(
            id,
            &[from],
            SyncPush {
                want: i_lack,
                ..SyncPush::default()
            },
        );
    }

    /// Pushes to `to` the departure of the member whose node is `whose` (peer id bytes)
    /// and the operations before it ([`Room::departure_for`]), at most once a sync
    /// interval per peer and departure, so that nobody can make this node send its log
    /// over and over. A second departure (a member removed, invited back and removed
    /// again) is told at once. Returns whether it pushed.
    pub(super) fn tell_departure(&mut self, id: RoomId, to: PeerId, whose: &[u8]) -> bool {
        let Some(room) = self.rooms.get(&id) else {
            return false;
        };
        let Some(departure) = room.departure_of(whose) else {
            return false;
        };
        let key = (to, departure);
        let due = self
            .told_departed
            .get(&key)
            .is_none_or(|at| at.elapsed() >= self.sync_interval);
        if !due {
            return false;
        }
        let Some(ops) = room.departure_for(whose) else {
            return false;
        };
        self.told_departed.insert(key, Instant::now());
        self.push(
            id,
            &[to],
            SyncPush {
                ops,
                ..SyncPush::default()
            },
        );
        true
    }

    /// The budget key of the member (or former member) of room `id` whose node is
    /// `peer`: its member id there.
    fn member_key(&self, id: RoomId, peer: &[u8]) -> Option<budget::Member> {
        let state = self.rooms.get(&id)?.log().state();
        let current = state.members().into_iter().find(|m| m.peer == peer);
        // A node removed twice has two former memberships: the lowest id, always the same.
        let member = current.map(|m| m.public.id).or_else(|| {
            state
                .former_members()
                .filter(|m| m.peer == peer)
                .map(|m| m.public.id)
                .min()
        })?;
        Some((id, member))
    }

    /// Takes in a push from another node and answers it: operations from anyone who is
    /// or was a member (they are self-authenticating; a member who just left pushes its
    /// own departure), envelopes, wants and summaries only from current members, each
    /// within the member's budgets ([`crate::budget`]). A former member is answered with
    /// its departure; a node no longer in the room answers a member with its own, and
    /// takes nothing.
    pub(super) fn receive_push(&mut self, from: PeerId, bytes: &[u8]) -> Option<SyncReply> {
        let Some(mut push) = SyncPush::from_bytes(bytes) else {
            self.dropped += 1;
            return None;
        };
        let Some(id) = self
            .rooms
            .values()
            .find(|r| r.sync_tag() == push.room)
            .map(Room::id)
        else {
            self.dropped += 1;
            return None;
        };
        let from_bytes = from.to_bytes();
        let current = self
            .rooms
            .get(&id)
            .is_some_and(|r| r.members().iter().any(|m| m.peer == from_bytes));
        let Some(who) = self.member_key(id, &from_bytes) else {
            self.dropped += 1;
            return None;
        };
        let now = Instant::now();
        if !self.budgets.take(who, Kind::Push, 1, now) {
            self.dropped += 1;
            return Some(SyncReply::default());
        }
        let reconciles = push.reconciles();
        if !push.ops.is_empty() {
            // Each operation is decoded and hashed, a new one verified; a push that
            // changes the log costs a flushed write.
            let may = self.budgets.has(who, Kind::LogChange, 1, now)
                && self.budgets.take(who, Kind::Op, push.ops.len() as u64, now);
            if may {
                let taken = self
                    .rooms
                    .get_mut(&id)
                    .map(|r| r.merge_ops(std::mem::take(&mut push.ops), now_ms()))
                    .unwrap_or_default();
                self.dropped += taken.refused as u64;
                if taken.new > 0 {
                    self.budgets.take(who, Kind::LogChange, 1, now);
                    self.after_log_change(id);
                }
            } else {
                self.dropped += 1;
            }
        }
        if !current {
            if !push.envelopes.is_empty() || !push.want.is_empty() {
                self.dropped += 1;
            }
            // A former member reconciling as if it were still in: it was away when it was
            // removed. Tell it (its departure and what led to it, nothing later), or it
            // would go on writing into a room nobody hears it in.
            if reconciles {
                self.tell_departure(id, from, &from_bytes);
            }
            return Some(SyncReply::default());
        }
        if !self.rooms[&id].is_member() {
            // This profile left (or was removed), and a member reconciles with it as if
            // it were still in: nobody was online to hear it leave. Tell it, or the room
            // would count it as a member for ever and never change its key; take nothing.
            if reconciles {
                let me = self.swarm.local_peer_id().to_bytes();
                if self.tell_departure(id, from, &me) {
                    self.leave_heard(id);
                }
            }
            return Some(SyncReply::default());
        }
        let version = push
            .addresses
            .iter()
            .find(|(peer, _)| *peer == from_bytes)
            .and_then(|(_, entry)| entry.iter().find(|a| a.starts_with(sync::VERSION_PREFIX)));
        if let Some(version) = version {
            let version = version.clone();
            self.heard_version(from, &version);
        }
        self.take_addresses(id, from, &push.addresses, &push.records);
        // Envelopes: store each; the reply proving what we hold waits for the flush
        // (see `handle_sync`).
        let mut held = Vec::new();
        let taken = self.take_in_parallel(id, &push.envelopes);
        for (envelope, taken) in std::mem::take(&mut push.envelopes).into_iter().zip(taken) {
            let stored = match taken {
                Some((record, stored)) => self.after_insert(id, record, envelope, stored).1,
                None => self.receive_one(id, envelope).1,
            };
            held.extend(stored);
        }
        // Wants: queued within the member's budget, read as our pushes to it drain.
        if !push.want.is_empty() {
            let asked = push.want.len() as u64;
            let granted = self.budgets.take_up_to(who, Kind::Want, asked, now);
            if granted < asked {
                self.dropped += 1;
            }
            let granted = usize::try_from(granted).unwrap_or(usize::MAX);
            self.transfers
                .asked
                .entry((from, id))
                .or_default()
                .ask(push.want.iter().take(granted).copied(), now);
            self.pump(from);
        }
        // Proofs of holding, for what the push carried and what it asks about.
        held.extend(push.prove.iter().take(sync::MAX_PROVE).copied());
        let keys = self.transfers.keys.get(&id);
        let mut proven = BTreeSet::new();
        let held: Vec<(Id, Id)> = held
            .into_iter()
            .filter(|m| proven.insert(*m))
            .filter_map(|m| Some((m, sync::proof(&push.salt, keys?.get(&m)?))))
            .collect();
        let mut reply = SyncReply {
            held,
            ..SyncReply::default()
        };
        if reconciles {
            match self.days_for(id, push.salt, who, now) {
                Some(days) => self.compare(id, &push, &days, who, now, &mut reply),
                None => self.dropped += 1,
            }
        }
        Some(reply)
    }

    /// Compares a member's summary (its digest, or parts of its months or days) with
    /// ours by day under its salt (`days`), and says in `reply` where they differ: that
    /// the digest does, the months that do, our ids on the days that do.
    fn compare(
        &mut self,
        id: RoomId,
        push: &SyncPush,
        days: &[sync::Bucket],
        who: budget::Member,
        now: Instant,
        reply: &mut SyncReply,
    ) {
        if let Some(theirs) = push.digest
            && sync::summary_digest(&sync::months(days)) != theirs
        {
            reply.differs = Some(push.room);
        }
        let mut months = BTreeSet::new();
        let mut days_apart = BTreeSet::new();
        for part in &push.summary {
            match (sync::differing(part, days), part.level) {
                (Some(apart), Level::Months) => months.extend(apart),
                (Some(apart), Level::Days) => days_apart.extend(apart),
                (None, _) => self.dropped += 1,
            }
        }
        reply.months = months.into_iter().take(sync::MAX_REPLY_MONTHS).collect();
        if days_apart.is_empty() {
            return;
        }
        // Listing the ids of those days reads the whole index.
        let cost = self.index.get(&id).map_or(0, BTreeMap::len) as u64;
        if !self.budgets.take(who, Kind::Summary, cost, now) {
            self.dropped += 1;
            return;
        }
        let empty = BTreeMap::new();
        let index = self.index.get(&id).unwrap_or(&empty);
        let days_apart: Vec<u64> = days_apart.into_iter().collect();
        let mut ids = sync::ids_on(index, &days_apart);
        ids.truncate(sync::MAX_REPLY_IDS);
        reply.ids = ids;
    }
}
