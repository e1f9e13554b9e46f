//! What members push to each other directly (the `sync` protocol, request-response):
//! reconciliation, wants and catch-up, recent envelopes for a member who subscribes,
//! delivery confirmations, and telling a former member of its departure.

use super::*;

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

/// One thing to push: an operation or an envelope.
enum Item {
    Op(Box<confer_room::log::SignedOp>),
    Envelope(Vec<u8>),
}

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
    queue: VecDeque<Vec<u8>>,
    bytes: usize,
    in_flight: usize,
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
    /// member the whole log, and when (see [`EventLoop::reconcile_round`]).
    log_sent: HashMap<(RoomId, PeerId), (usize, Instant)>,
}

impl Default for Transfers {
    fn default() -> Self {
        Transfers {
            outgoing: HashMap::new(),
            wanted: sync::Wants::new(WANTED_LIMIT, WANT_TIMEOUT, WANT_BACKOFF_MAX),
            held: HashMap::new(),
            log_sent: HashMap::new(),
        }
    }
}

impl Transfers {
    /// Forgets what was sent for a room this profile no longer has.
    pub(super) fn forget_room(&mut self, id: &RoomId) {
        self.held.remove(id);
        self.log_sent.retain(|(room, _), _| room != id);
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
    /// reconcile with it (our log, our message summary, the addresses we know), and, if
    /// it is the current topic, hand it the envelopes accepted in the last
    /// [`NetConfig::recent_window`] that it was entitled to (gossip does not route to a
    /// peer until its subscription has been seen).
    pub(super) fn push_recent(&mut self, id: RoomId, peer: PeerId, topic: &str) {
        let Some(room) = self.rooms.get(&id) else {
            return;
        };
        let peer_bytes = peer.to_bytes();
        if !room.members().iter().any(|m| m.peer == peer_bytes) {
            return;
        }
        let envelopes = if room.topic().as_deref() == Some(topic) {
            self.recent
                .get(&id)
                .map(|recent| {
                    recent
                        .iter()
                        .filter(|r| r.at.elapsed() <= self.recent_window)
                        .filter(|r| r.audience.contains(&peer_bytes))
                        .map(|r| r.envelope.clone())
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        self.reconcile(id, peer, envelopes);
    }

    /// Starts reconciliation with a member: our whole log, our message summary and the
    /// member addresses we know, plus any `envelopes` to hand over.
    pub(super) fn reconcile(&mut self, id: RoomId, peer: PeerId, envelopes: Vec<Vec<u8>>) {
        self.reconcile_with(id, peer, envelopes, true, true);
    }

    /// Reconciliation in a sync round: as [`Self::reconcile`], but the whole log only if
    /// it has grown since this member was last handed it, or that was
    /// [`FULL_LOG_EVERY`] ago. The member got the whole log when it connected or
    /// subscribed, and operations travel by gossip too; handing a long-lived room's
    /// whole log (every admission and rotation, with their sealed secrets) to every
    /// member every round was most of an idle room's traffic.
    pub(super) fn reconcile_round(&mut self, id: RoomId, peer: PeerId, envelopes: Vec<Vec<u8>>) {
        self.reconcile_with(id, peer, envelopes, false, false);
    }

    /// Starts reconciliation with a member as [`Self::reconcile`] does, and with the
    /// log only if a round would hand it over: the member's digest differed from ours
    /// ([`SyncReply::differs`]).
    fn reconcile_summary(&mut self, id: RoomId, peer: PeerId) {
        self.reconcile_with(id, peer, Vec::new(), false, true);
    }

    /// Pushes our summary (`whole`) or its digest under a fresh salt, with `envelopes`,
    /// the addresses we know, and our whole log if `full` or if a round is due to hand
    /// it over.
    fn reconcile_with(
        &mut self,
        id: RoomId,
        peer: PeerId,
        envelopes: Vec<Vec<u8>>,
        full: bool,
        whole: bool,
    ) {
        let Some(room) = self.rooms.get(&id) else {
            return;
        };
        let len = room.log().len();
        let due = full
            || self
                .transfers
                .log_sent
                .get(&(id, peer))
                .is_none_or(|(sent, at)| *sent != len || at.elapsed() >= FULL_LOG_EVERY);
        let ops = if due {
            self.transfers
                .log_sent
                .insert((id, peer), (len, Instant::now()));
            room.log().ops()
        } else {
            Vec::new()
        };
        let addresses = self.member_addresses(&id);
        let mut salt = sync::Salt::default();
        rand::rand_core::Rng::fill_bytes(&mut rng(), &mut salt);
        let summary = self.durable_summary(&id, &salt);
        let (summary, digest) = if whole {
            (Some(summary), None)
        } else {
            (None, Some(sync::summary_digest(&summary)))
        };
        self.push(
            id,
            &[peer],
            SyncPush {
                ops,
                envelopes,
                summary,
                salt,
                addresses,
                digest,
                ..SyncPush::default()
            },
        );
    }

    /// The summary of the messages of room `id` held on disk, under `salt`: the other
    /// side takes a day it agrees on as a confirmation of everything it holds on that day
    /// (see [`Self::receive_push`]), so messages stored but not yet flushed are left out.
    pub(super) fn durable_summary(&self, id: &RoomId, salt: &sync::Salt) -> Vec<sync::Bucket> {
        let empty = BTreeMap::new();
        let index = self.index.get(id).unwrap_or(&empty);
        let not_durable = &self.commit.not_durable;
        sync::summary_of(index, salt, |m| !not_durable.contains(m))
    }

    /// Known addresses of the room's members, to share with other members.
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

    /// Sends a push to `peers`, split into requests that fit the protocol's limit
    /// (operations and envelopes spread over as many as needed; the summary, wants and
    /// addresses ride on the first).
    pub(super) fn push(&mut self, id: RoomId, peers: &[PeerId], template: SyncPush) {
        let Some(room) = self.rooms.get(&id) else {
            return;
        };
        let tag = room.sync_tag();
        let budget = net::MAX_REQUEST - 4096;
        let SyncPush {
            ops,
            envelopes,
            summary,
            salt,
            want,
            addresses,
            digest,
            ..
        } = template;
        // A long want list is split over several requests (ids are 32 bytes, plus framing).
        let mut wants = want.chunks((budget / 40).max(1)).map(<[Id]>::to_vec);
        let first_want = wants.next().unwrap_or_default();
        let fixed = confer_room::wire::encode(&(&summary, &salt, &first_want, &addresses, &digest))
            .map(|b| b.len())
            .unwrap_or(budget);
        let mut batches = vec![SyncPush {
            room: tag,
            summary,
            salt,
            want: first_want,
            addresses,
            digest,
            ..SyncPush::default()
        }];
        batches.extend(wants.map(|want| SyncPush {
            room: tag,
            want,
            ..SyncPush::default()
        }));
        let mut size = fixed;
        let items = ops
            .into_iter()
            .map(|op| Item::Op(Box::new(op)))
            .chain(envelopes.into_iter().map(Item::Envelope));
        for item in items {
            let len = match &item {
                Item::Op(op) => confer_room::wire::encode(&**op)
                    .map(|b| b.len())
                    .unwrap_or(budget),
                Item::Envelope(e) => e.len(),
            } + 16;
            if size + len > budget {
                batches.push(SyncPush {
                    room: tag,
                    ..SyncPush::default()
                });
                size = 0;
            }
            size += len;
            if let Some(last) = batches.last_mut() {
                match item {
                    Item::Op(op) => last.ops.push(*op),
                    Item::Envelope(e) => last.envelopes.push(e),
                }
            }
        }
        for batch in batches {
            let empty = batch.ops.is_empty()
                && batch.envelopes.is_empty()
                && !batch.reconciles()
                && batch.want.is_empty()
                && batch.addresses.is_empty();
            if empty {
                continue;
            }
            if let Ok(bytes) = confer_room::wire::encode(&batch) {
                for peer in peers {
                    self.enqueue(*peer, bytes.clone());
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
                            .stored
                            .iter()
                            .chain(&reply.ids)
                            .any(|m| not_durable.contains(m));
                    if waits {
                        self.commit.next.responses.push((channel, reply));
                    } else {
                        self.respond(channel, &reply);
                    }
                }
                request_response::Message::Response { response, .. } => {
                    self.request_done(peer);
                    self.receive_reply(peer, &response);
                }
            },
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!("a sync push failed: {error}");
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
    pub(super) fn enqueue(&mut self, peer: PeerId, bytes: Vec<u8>) {
        let out = self.transfers.outgoing.entry(peer).or_default();
        if out.bytes + bytes.len() > OUTGOING_LIMIT {
            tracing::debug!("sync queue full; a push is left to the next reconciliation");
            return;
        }
        out.bytes += bytes.len();
        out.queue.push_back(bytes);
    }

    /// Sends queued sync requests to `peer` while fewer than [`PUSH_WINDOW`] are in flight.
    pub(super) fn pump(&mut self, peer: PeerId) {
        let Some(out) = self.transfers.outgoing.get_mut(&peer) else {
            return;
        };
        while out.in_flight < PUSH_WINDOW {
            let Some(bytes) = out.queue.pop_front() else {
                break;
            };
            out.bytes = out.bytes.saturating_sub(bytes.len());
            out.in_flight += 1;
            self.swarm.behaviour_mut().sync.send_request(&peer, bytes);
        }
        if out.in_flight == 0 && out.queue.is_empty() {
            self.transfers.outgoing.remove(&peer);
        }
    }

    /// A sync request to `peer` was answered or failed: send the next.
    pub(super) fn request_done(&mut self, peer: PeerId) {
        if let Some(out) = self.transfers.outgoing.get_mut(&peer) {
            out.in_flight = out.in_flight.saturating_sub(1);
        }
        self.pump(peer);
    }

    /// The other side's answer to our push: confirmations, and where our histories differ.
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
    pub(super) fn receive_reply(&mut self, from: PeerId, bytes: &[u8]) {
        let Some(reply) = SyncReply::from_bytes(bytes) else {
            self.dropped += 1;
            return;
        };
        if reply.ids.len() > sync::MAX_REPLY_IDS {
            self.dropped += 1;
            return;
        }
        let from_bytes = from.to_bytes();
        if let Some(tag) = reply.differs {
            // Our digest was not the member's: now the summary itself.
            let room = self.rooms.values().find(|r| {
                r.sync_tag() == tag
                    && r.is_member()
                    && r.members().iter().any(|m| m.peer == from_bytes)
            });
            if let Some(id) = room.map(Room::id) {
                self.reconcile_summary(id, from);
            }
        }
        // Which room: the one whose members include the peer and which holds these ids.
        let candidates: Vec<RoomId> = self
            .rooms
            .values()
            .filter(|r| r.is_member() && r.members().iter().any(|m| m.peer == from_bytes))
            .map(Room::id)
            .collect();
        let empty = BTreeMap::new();
        let theirs: BTreeSet<Id> = reply.ids.iter().copied().collect();
        let now = Instant::now();
        for id in candidates {
            let index = self.index.get(&id).unwrap_or(&empty);
            // Everything they say they hold, of ours, is confirmed delivered.
            let held: Vec<Id> = reply
                .stored
                .iter()
                .chain(&theirs)
                .filter(|m| index.contains_key(*m))
                .copied()
                .collect();
            let wanted = &self.transfers.wanted;
            let i_lack: Vec<Id> = theirs
                .iter()
                .filter(|m| !index.contains_key(*m))
                .filter(|m| wanted.due(m, now))
                .copied()
                .collect();
            self.confirm(&id, held);
            if i_lack.is_empty() {
                continue;
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

    /// Takes in a push from another node and answers it: operations from anyone who is
    /// or was a member (they are self-authenticating; a member who just left pushes its
    /// own departure), envelopes, wants and summaries only from current members. A
    /// former member is answered with its departure; a node no longer in the room answers
    /// a member with its own, and takes nothing.
    pub(super) fn receive_push(&mut self, from: PeerId, bytes: &[u8]) -> Option<SyncReply> {
        let Some(push) = SyncPush::from_bytes(bytes) else {
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
        let (known, current) = match self.rooms.get(&id) {
            Some(r) => (
                r.knows_peer(&from_bytes),
                r.members().iter().any(|m| m.peer == from_bytes),
            ),
            None => (false, false),
        };
        if !known {
            self.dropped += 1;
            return None;
        }
        let reconciles = push.reconciles();
        if !push.ops.is_empty() {
            let taken = self
                .rooms
                .get_mut(&id)
                .map(|r| r.merge_ops(push.ops, now_ms()))
                .unwrap_or_default();
            self.dropped += taken.refused as u64;
            if taken.new > 0 {
                self.after_log_change(id);
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
        for (peer, addrs) in push.addresses.into_iter().take(8) {
            let Ok(peer) = PeerId::from_bytes(&peer) else {
                continue;
            };
            let is_member = self.rooms[&id]
                .members()
                .iter()
                .any(|m| m.peer == peer.to_bytes());
            if is_member && peer != *self.swarm.local_peer_id() {
                let addrs: Vec<Multiaddr> = addrs
                    .iter()
                    .take(8)
                    .filter_map(|a| a.parse().ok())
                    .collect();
                self.learn_addresses(peer, addrs);
            }
        }
        // Envelopes: store each; the reply confirming what we hold waits for the flush
        // (see `handle_sync`).
        let mut stored = Vec::new();
        let taken = self.take_in_parallel(id, &push.envelopes);
        for (envelope, taken) in push.envelopes.into_iter().zip(taken) {
            let held = match taken {
                Some((record, stored)) => self.after_insert(id, record, envelope, stored).1,
                None => self.receive_one(id, envelope).1,
            };
            if let Some(held) = held {
                stored.push(held);
            }
        }
        // Wants: send back what we have of them.
        if !push.want.is_empty() {
            let want: Vec<Id> = push.want.into_iter().take(sync::MAX_REPLY_IDS).collect();
            let envelopes = self.envelopes_of(&id, &want);
            self.push(
                id,
                &[from],
                SyncPush {
                    envelopes,
                    ..SyncPush::default()
                },
            );
        }
        let mut reply = SyncReply {
            stored,
            ..SyncReply::default()
        };
        if let Some(theirs) = &push.summary {
            let empty = BTreeMap::new();
            let index = self.index.get(&id).unwrap_or(&empty);
            let days = sync::differing_days(&sync::summary(index, &push.salt), theirs);
            // On a day both summaries agree on, the member holds on disk (its summary
            // counts nothing else) every message held here, ours among them. Without
            // this, one of ours that it took but never confirmed (the confirmation was
            // lost, and then the key changed, so ours is no longer pushed; or we were
            // removed and invited back) would stay unconfirmed for ever.
            let agreed: Vec<Id> = self
                .unconfirmed
                .get(&id)
                .into_iter()
                .flatten()
                .filter(|m| {
                    index
                        .get(*m)
                        .is_some_and(|at| !days.contains(&sync::day(*at)))
                })
                .copied()
                .collect();
            let mut ids = sync::ids_on(index, &days);
            ids.truncate(sync::MAX_REPLY_IDS);
            reply.ids = ids;
            self.confirm(&id, agreed);
        } else if let Some(theirs) = push.digest {
            let empty = BTreeMap::new();
            let index = self.index.get(&id).unwrap_or(&empty);
            if sync::summary_digest(&sync::summary(index, &push.salt)) == theirs {
                // The member holds on disk every message held here (as on a day both
                // summaries agree on, above).
                let agreed: Vec<Id> = self
                    .unconfirmed
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .filter(|m| index.contains_key(*m))
                    .copied()
                    .collect();
                self.confirm(&id, agreed);
            } else {
                reply.differs = Some(push.room);
            }
        }
        Some(reply)
    }
}
