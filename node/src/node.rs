//! The node: one event loop that owns the swarm, the store and the rooms.
//!
//! [`Node`] is a cheap `Clone` handle. It sends [`Command`]s over a bounded channel to the
//! [`EventLoop`], which is the only place that touches the swarm, the store and the
//! room state, and answers each command through a oneshot channel. The loop never
//! awaits anything slow: network work is started and its completion arrives later as a
//! swarm event (a pending join is parked until its response comes back).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use confer_room::invite::{InviteId, JoinBody, JoinRequest, JoinResponse};
use confer_room::room::MessageRecord;
use confer_room::{
    ChangeKind, Incoming, Invite, InviteError, MemberKeys, MembershipChange, OpenError, Room,
    RoomId,
};
use confer_store::{Profile, Store};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, TopicHash};
use libp2p::request_response::{
    self, InboundRequestId, OutboundFailure, OutboundRequestId, ResponseChannel,
};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identity};
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::addresses::AddressBook;
use crate::api::{
    ChangeInfo, EventInfo, InviteInfo, InviteSummary, MAX_EVENTS, MemberInfo, MessageInfo, Reply,
    Request, RoomInfo, RoomSummary, StatusInfo,
};
use crate::budget::Budgets;
use crate::limits;
use crate::net::{self, Behaviour, BehaviourEvent, NetConfig};
use crate::reach::{self, Reach};
use crate::settings::{self, Settings};
use crate::sync::{self, Id, StoredMessage, SyncPush, SyncReply};

mod commit;
mod exchange;
mod following;
mod joining;
mod leaving;
mod peers;

use commit::GroupCommit;
use commit::{flush_done, flush_due};
use exchange::{Recent, Transfers};
use joining::PendingJoin;
use leaving::WaitingLeave;

/// How many commands may wait for the event loop.
const COMMAND_QUEUE: usize = 64;
/// How many new messages a follower may lag behind before it is dropped, by default
/// ([`NodeConfig::follow_queue`]). Followers are told of messages as they are stored, a
/// thousand or more in quick succession during a catch-up (`exchange::PUSH_WINDOW` pushes of up
/// to 64 KiB, about 45 messages each, in flight), so this is well above that.
pub const FOLLOW_QUEUE: usize = 4096;
/// Envelopes waiting for a room peer to subscribe, per room.
const OUTBOX_LIMIT: usize = 1024;
/// Envelopes from authors not yet known (their admission may still be on its way).
const UNKNOWN_AUTHOR_LIMIT: usize = 256;
/// How often the event loop looks for due rotations and expired keys.
const TICK: Duration = Duration::from_secs(1);
/// How long a member other than the facilitator waits for someone else to rotate after a
/// departure before rotating itself (concurrent rotations combine, so racing is safe).
const ROTATION_GRACE: Duration = Duration::from_secs(3);
/// First wait before redialling a disconnected member; doubles up to [`REDIAL_MAX`].
const REDIAL_MIN: Duration = Duration::from_secs(2);
/// Longest wait between redials of a member.
const REDIAL_MAX: Duration = Duration::from_secs(300);
/// Expired epoch keys are deleted every this many ticks.
const PRUNE_EVERY_TICKS: u64 = 60;
/// The longest an invite may stay valid: 365 days.
const MAX_INVITE_SECS: u64 = 365 * 24 * 3600;
/// How long `Node::start` waits for the relays to accept reservations.
const RESERVATION_WAIT: Duration = Duration::from_secs(10);
/// [`crate::api::CLOCK_AHEAD`] in milliseconds (see [`insert_opened`]).
const CLOCK_AHEAD_MS: u64 = crate::api::CLOCK_AHEAD.as_millis() as u64;

/// The store record name under which nodes before the store's `outbox` tree kept a
/// room's outbox (every waiting id in one record, rewritten at each change); moved into
/// the tree when the room is loaded.
const OUTBOX: &str = "outbox";
/// The store record name of a room's known member addresses.
const PEERS: &str = "peers";
/// The store record name of the flag "this profile left the room while no other member's
/// node was connected, and has not told any of them yet" (one byte, 1 or 0).
const LEAVE_UNHEARD: &str = "leave-unheard";
/// The store record name of the keys of a join to the room whose every attempt failed
/// after the request may have reached the facilitator: (invite id, member keys), so that
/// the same code redeemed again, even after a restart, uses them and, if the facilitator
/// did admit them, gets the welcome instead of "already used". Emptied once joined.
const DOUBTFUL_JOIN: &str = "doubtful-join";

/// Stores a message opened and verified from `envelope`, with the envelope; whether it
/// was new. Runs on the event loop or on the threads of [`EventLoop::take_in_parallel`].
///
/// Histories are in the order of the times authors gave their messages, except that a
/// message dated more than [`CLOCK_AHEAD_MS`] after this node's clock when it arrives
/// takes its place as if sent at that moment: its author's clock is wrong, or set ahead
/// on purpose, and it would otherwise stay at the end of every history for good. (It
/// keeps the time its author gave it, which is signed.)
fn insert_opened(
    store: &Store,
    id: RoomId,
    record: &MessageRecord,
    envelope: &[u8],
) -> Result<bool, confer_store::StoreError> {
    let value = StoredMessage {
        record: record.clone(),
        envelope: envelope.to_vec(),
    }
    .to_bytes();
    let now = now_ms();
    let place = if record.sent_at > now.saturating_add(CLOCK_AHEAD_MS) {
        now
    } else {
        record.sent_at
    };
    store.insert_message(&id.0, &record.id, place, &value)
}

/// The SHA-256 of an envelope (also its gossipsub message id).
fn envelope_digest(envelope: &[u8]) -> [u8; 32] {
    Sha256::digest(envelope).into()
}

/// A membership change authored here: applied to the room at a time with randomness,
/// returning the sealed operation to publish.
trait RoomChange:
    FnOnce(&mut Room, u64, &mut UnwrapErr<SysRng>) -> Result<Vec<u8>, confer_room::RoomError>
{
}

impl<F> RoomChange for F where
    F: FnOnce(&mut Room, u64, &mut UnwrapErr<SysRng>) -> Result<Vec<u8>, confer_room::RoomError>
{
}

/// How a node is started.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Multiaddresses to listen on (an OS-chosen TCP port on all interfaces if empty,
    /// nothing directly in relay-only mode).
    pub listen: Vec<String>,
    /// Relays to reserve a slot on for this run, in addition to the profile's (addresses
    /// ending in `/p2p/<relay peer id>`).
    pub relays: Vec<String>,
    /// Network tuning.
    pub net: NetConfig,
    /// Serve the control socket in the profile directory.
    pub control_socket: bool,
    /// How many new messages a follower ([`Node::follow`]) may lag behind before its
    /// stream is ended ([`FOLLOW_QUEUE`] by default; tests use less).
    pub follow_queue: usize,
}

impl NodeConfig {
    /// Listens on `listen` (or the default, see [`NodeConfig::listen`]), reserves on
    /// `relays` too, serves the control socket, default network tuning.
    pub fn new(listen: Vec<String>, relays: Vec<String>) -> Self {
        Self {
            listen,
            relays,
            net: NetConfig::default(),
            control_socket: true,
            follow_queue: FOLLOW_QUEUE,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The store could not be opened.
    #[error("{0}")]
    Store(#[from] confer_store::StoreError),
    /// A listening address is not a valid multiaddress.
    #[error("`{0}` is not a valid listening address (expected e.g. /ip4/0.0.0.0/tcp/0)")]
    BadListen(String),
    /// A relay address is not usable.
    #[error("{0}")]
    BadRelay(#[from] settings::RelayAddressError),
    /// Relay-only mode was asked to listen directly.
    #[error(
        "this profile is in relay-only mode: the node listens only through relays, so give no listening address (see `confer config show`)"
    )]
    RelayOnlyListen,
    /// Listening failed.
    #[error("could not listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The network layer could not be built.
    #[error("could not start networking: {0}")]
    Net(#[from] net::NetError),
    /// A stored room does not decode.
    #[error("a stored room is damaged: {0}")]
    Room(#[from] confer_room::RoomError),
    /// The control socket could not be served.
    #[error("could not open the control socket {path}: {reason}")]
    Control {
        /// Socket path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// A room's history so far and a stream of its new messages.
///
/// The stream ends when the node stops, when this reader falls more than
/// [`NodeConfig::follow_queue`] messages behind, or when this profile's membership of the
/// room ends (it left or was removed; at once if it already had):
/// [`Node::is_member_of`] tells the last case from the others.
#[derive(Debug)]
pub struct Following {
    /// The room's id (hex).
    pub room_id: String,
    /// Every message held so far, oldest first.
    pub history: Vec<MessageInfo>,
    /// The membership changes while this profile was in the room, oldest first (not followed:
    /// `confer members` shows the room as it is now).
    pub events: Vec<EventInfo>,
    /// Each new message as it is stored, and each confirmation of this member's own
    /// messages.
    pub updates: mpsc::Receiver<FollowUpdate>,
}

/// What a follower of a room learns after the history ([`Following::updates`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUpdate {
    /// A new message, stored. One of this member's own messages comes with
    /// [`MessageInfo::pending`] set if no other member's node could take it when it was
    /// sent (none was connected), rather than when it was only not confirmed yet: a
    /// confirmation takes a round trip, so every message would be marked for a moment.
    Message(MessageInfo),
    /// A membership change (someone joined, left, was removed or became facilitator).
    Event(EventInfo),
    /// Another member has confirmed holding one of this member's messages (hex id) that
    /// followers were shown as pending (in the history, or as it was sent), so it is no
    /// longer pending.
    Delivered(String),
}

pub(crate) enum Command {
    Request(Request, oneshot::Sender<Reply>),
    Follow(String, oneshot::Sender<Result<Following, String>>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle to a running node. Cloning is cheap; all clones talk to the same node.
#[derive(Debug, Clone)]
pub struct Node {
    commands: mpsc::Sender<Command>,
    peer_id: String,
    listen: Vec<String>,
    home: std::path::PathBuf,
    follow_queue: usize,
    control: std::sync::Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    task: std::sync::Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Node {
    /// Opens the profile's store, starts listening, subscribes to the rooms' topics and
    /// returns once the listening addresses are known.
    pub async fn start(profile: Profile, config: NodeConfig) -> Result<Node, NodeError> {
        let store = Store::open(&profile)?;
        let mut rooms = HashMap::new();
        // A record that does not read (damaged, or written by a version of Confer whose
        // rooms this one cannot read) is left as it is and counted; the other rooms run.
        let mut unreadable = 0;
        for (_, bytes) in store.rooms()? {
            match Room::from_bytes(&bytes) {
                Ok(room) => {
                    rooms.insert(room.id(), room);
                }
                Err(e) => {
                    unreadable += 1;
                    tracing::error!("a stored room could not be read and is set aside: {e}");
                }
            }
        }
        let settings = Settings::read(&store)?;
        let mut relays = Vec::new();
        for relay in settings.relays.iter().chain(&config.relays) {
            let relay = settings::parse_relay(relay)?;
            if !relays.contains(&relay) {
                relays.push(relay);
            }
        }
        let mut reach = Reach::new(settings.relay_only, relays);
        // With no address given, the node listens on every interface, on the port it used
        // last time if it can: members store where they reached it and redial that, so a
        // port that changed with every start would lose two members who both restarted.
        let choose_port = !settings.relay_only && config.listen.is_empty();
        let remembered = choose_port
            .then(|| settings::remembered_port(&store))
            .flatten();
        let listen_on = match (settings.relay_only, config.listen.is_empty()) {
            (true, false) => return Err(NodeError::RelayOnlyListen),
            (true, true) => Vec::new(),
            (false, true) => vec![format!("/ip4/0.0.0.0/tcp/{}", remembered.unwrap_or(0))],
            (false, false) => config.listen.clone(),
        };
        let mut secret = *profile.device_secret();
        let keypair = identity::Keypair::ed25519_from_bytes(&mut secret)
            .map_err(|_| NodeError::BadListen("device key".into()))?;
        let peer_id = keypair.public().to_peer_id();
        let mut swarm = net::build_swarm(keypair.clone(), &config.net, reach.policy())?;
        // Who is recognised, before the first connection (the relays' come next).
        let (members, acquainted) = peers::recognised(rooms.values(), peer_id, []);
        swarm
            .behaviour()
            .peers()
            .set(members, acquainted, reach.relay_peers());

        let parsed = listen_on
            .iter()
            .map(|a| a.parse().map_err(|_| NodeError::BadListen(a.clone())))
            .collect::<Result<Vec<Multiaddr>, _>>()?;
        let listened = match net::listen_all(&mut swarm, &parsed).await {
            // The remembered port is taken (or gone): any port will do.
            Err(failure) if remembered.is_some() => {
                tracing::info!(
                    "could not listen on the port used last time ({}), choosing another",
                    failure.reason
                );
                let any = Multiaddr::empty()
                    .with(libp2p::multiaddr::Protocol::Ip4(
                        std::net::Ipv4Addr::UNSPECIFIED,
                    ))
                    .with(libp2p::multiaddr::Protocol::Tcp(0));
                net::listen_all(&mut swarm, &[any]).await
            }
            other => other,
        }
        .map_err(|f| NodeError::Listen {
            addr: f.addr,
            reason: f.reason,
        })?;
        if choose_port
            && let Some(port) = listened.iter().find_map(net::tcp_port)
            && remembered != Some(port)
            && let Err(e) = settings::remember_port(&store, port)
        {
            tracing::warn!("could not remember the listening port: {e}");
        }
        let mut listen: Vec<String> = listened.iter().map(ToString::to_string).collect();
        // Reserve on the relays before announcing the addresses, so that they include the
        // relayed ones; a relay that does not answer in time is retried in the background.
        reach.reserve_due(&mut swarm);
        let deadline = tokio::time::Instant::now() + RESERVATION_WAIT;
        while !reach.settled() {
            let Ok(event) = tokio::time::timeout_at(deadline, swarm.select_next_some()).await
            else {
                tracing::warn!("a relay did not accept a reservation in time; retrying later");
                break;
            };
            match event {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    reach.on_listen_addr(listener_id);
                    listen.push(address.to_string());
                }
                SwarmEvent::ListenerClosed { listener_id, .. }
                    if reach.on_listener_closed(listener_id) =>
                {
                    tracing::warn!("a relay refused or failed a reservation; retrying later");
                }
                SwarmEvent::OutgoingConnectionError { peer_id, .. } => {
                    reach.on_dial_failed(peer_id);
                }
                SwarmEvent::ConnectionEstablished {
                    connection_id,
                    peer_id,
                    endpoint,
                    ..
                } => reach.on_connection(&mut swarm, connection_id, peer_id, &endpoint),
                _ => {}
            }
        }

        let home = profile.home().to_path_buf();
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let mut event_loop = EventLoop {
            swarm,
            store,
            rooms,
            topics: HashMap::new(),
            profile_name: profile.name().to_owned(),
            listen: listen.clone(),
            pending_joins: HashMap::new(),
            joins_waiting: Vec::new(),
            answering: HashMap::new(),
            answered: HashMap::new(),
            replacing: HashMap::new(),
            former: HashMap::new(),
            leaves_waiting: Vec::new(),
            confirm_soon: HashMap::new(),
            followers: HashMap::new(),
            follow_queue: config.follow_queue.max(1),
            outbox: HashMap::new(),
            unknown_author: VecDeque::new(),
            recent: HashMap::new(),
            room_topics: HashMap::new(),
            index: HashMap::new(),
            unconfirmed: HashMap::new(),
            shown_pending: HashMap::new(),
            unheard_leaves: HashSet::new(),
            addresses: AddressBook::default(),
            redial: HashMap::new(),
            addresses_dirty: false,
            manifest_dirty: false,
            limits: limits::RateLimits::default(),
            rotation_due: HashMap::new(),
            ticks: 0,
            sync_interval: config.net.sync_interval,
            recent_window: config.net.recent_window,
            told_departed: HashMap::new(),
            joins_refused_for_rate: HashMap::new(),
            events_told: HashMap::new(),
            dropped: 0,
            unreadable_rooms: unreadable,
            caught_up: 0,
            leaves_heard: 0,
            other_copy: 0,
            protocol_version: config.net.protocol_version,
            versions: HashMap::new(),
            started_ms: now_ms(),
            reach,
            settings,
            commit: GroupCommit::default(),
            transfers: Transfers::default(),
            budgets: Budgets::default(),
            keypair,
            own_record: None,
        };
        event_loop.recognise_peers();
        let ids: Vec<RoomId> = event_loop.rooms.keys().copied().collect();
        for id in ids {
            event_loop.sync_topics(id);
            event_loop.load_index(id)?;
        }
        let task = tokio::spawn(event_loop.run(receiver));
        let node = Node {
            commands,
            peer_id: peer_id.to_string(),
            listen,
            home: home.clone(),
            follow_queue: config.follow_queue.max(1),
            control: Default::default(),
            task: std::sync::Arc::new(std::sync::Mutex::new(Some(task))),
        };
        if config.control_socket {
            let handle = crate::control::serve(&home, node.clone()).await?;
            if let Ok(mut slot) = node.control.lock() {
                *slot = Some(handle);
            }
        }
        Ok(node)
    }

    /// This node's libp2p peer id.
    pub fn peer_id(&self) -> String {
        self.peer_id.clone()
    }

    /// The addresses the node listens on.
    pub fn listen_addrs(&self) -> Vec<String> {
        self.listen.clone()
    }

    /// Asks the node to do something; the same semantics as the control socket.
    pub async fn request(&self, request: Request) -> Reply {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Request(request, tx))
            .await
            .is_err()
        {
            return stopped();
        }
        rx.await.unwrap_or_else(|_| stopped())
    }

    /// False once the node has stopped (or is stopping).
    pub fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }

    /// Whether this profile is (still) a member of the room with this id (hex); false if
    /// the node has stopped.
    pub async fn is_member_of(&self, room_id: &str) -> bool {
        match self.request(Request::ListRooms).await {
            Reply::Rooms { rooms } => rooms.iter().any(|r| r.room_id == room_id && r.member),
            _ => false,
        }
    }

    /// How many new messages a follower may lag behind ([`NodeConfig::follow_queue`]).
    pub fn follow_queue(&self) -> usize {
        self.follow_queue
    }

    /// A room's history and a stream of its new messages. The stream ends when the node
    /// stops, or if its receiver falls more than [`Node::follow_queue`] messages behind
    /// (the node never waits for a reader); [`Node::is_running`] tells the two apart.
    pub async fn follow(&self, room: String) -> Result<Following, String> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Follow(room, tx)).await.is_err() {
            return Err(STOPPED.into());
        }
        rx.await.unwrap_or_else(|_| Err(STOPPED.into()))
    }

    /// Stops the node: closes the control socket, flushes the store and stops the swarm.
    pub async fn shutdown(self) {
        let control = self.control.lock().ok().and_then(|mut c| c.take());
        if let Some(control) = control {
            control.abort();
            let _ = std::fs::remove_file(self.home.join(crate::api::SOCKET_NAME));
        }
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

const STOPPED: &str = "the node has stopped";

fn stopped() -> Reply {
    Reply::Error {
        message: STOPPED.into(),
    }
}

fn error(message: impl std::fmt::Display) -> Reply {
    Reply::Error {
        message: message.to_string(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn rng() -> UnwrapErr<SysRng> {
    UnwrapErr(SysRng)
}

/// Most messages per room and tick asked to be confirmed soon after they were sent (see
/// `EventLoop::confirm_soon`); any beyond wait for the next sync round.
const CONFIRM_SOON_LIMIT: usize = 256;

struct EventLoop {
    swarm: Swarm<Behaviour>,
    store: Store,
    rooms: HashMap<RoomId, Room>,
    topics: HashMap<TopicHash, RoomId>,
    profile_name: String,
    listen: Vec<String>,
    pending_joins: HashMap<OutboundRequestId, PendingJoin>,
    /// Joins waiting to try again to reach the facilitator's node: when, and whose.
    joins_waiting: Vec<(Instant, PeerId, PendingJoin)>,
    /// Join requests received and not yet answered, and from whom (a joiner is not
    /// disconnected while its answer is on the way).
    answering: HashMap<InboundRequestId, PeerId>,
    /// Joiners answered, and when: left alone for `strangers::JOINER_GRACE`.
    answered: HashMap<PeerId, Instant>,
    /// Peers gossip runs for that ceased to be members, and since when (see
    /// `release_former_members`).
    former: HashMap<PeerId, Instant>,
    /// Peers being connected to again: the connections to close once the new one is up,
    /// and since when (see `replace_connections`).
    replacing: HashMap<PeerId, (Vec<libp2p::swarm::ConnectionId>, Instant)>,
    leaves_waiting: Vec<WaitingLeave>,
    /// Per room, this member's messages sent since the last tick: at the next tick, those
    /// still unconfirmed are pushed to one connected member, whose answer confirms them.
    /// (Gossip carries no receipts; without this a message stayed marked as received by
    /// nobody until the next sync round, up to 15 s. One member is enough to confirm, and
    /// costs each message one extra delivery rather than one per member.)
    confirm_soon: HashMap<RoomId, BTreeSet<Id>>,
    followers: HashMap<RoomId, Vec<mpsc::Sender<FollowUpdate>>>,
    /// See [`NodeConfig::follow_queue`].
    follow_queue: usize,
    outbox: HashMap<RoomId, VecDeque<(String, Vec<u8>)>>,
    unknown_author: VecDeque<(RoomId, Vec<u8>)>,
    recent: HashMap<RoomId, VecDeque<Recent>>,
    room_topics: HashMap<RoomId, Vec<String>>,
    /// Per room: every stored message id and its sent_at, for reconciliation.
    index: HashMap<RoomId, BTreeMap<Id, u64>>,
    /// Per room: this member's messages no other member has confirmed holding yet.
    unconfirmed: HashMap<RoomId, BTreeSet<Id>>,
    /// Per room: those of `unconfirmed` that followers were shown as pending, whose
    /// confirmation they are told of ([`FollowUpdate::Delivered`]).
    shown_pending: HashMap<RoomId, HashSet<Id>>,
    /// Rooms this profile left while no other member's node was connected, until its node
    /// has told one of them: their members are redialled as if it were still in, so that
    /// the leave reaches them even if they can no longer reach this node (kept in the
    /// store under [`LEAVE_UNHEARD`]).
    unheard_leaves: HashSet<RoomId>,
    /// Addresses at which peers were reached or announced (identify, other members).
    addresses: AddressBook,
    /// When to dial a disconnected member next, and the current backoff.
    redial: HashMap<PeerId, (std::time::Instant, Duration)>,
    addresses_dirty: bool,
    /// Something was stored since the store's manifest was last written.
    manifest_dirty: bool,
    limits: limits::RateLimits,
    rotation_due: HashMap<RoomId, std::time::Instant>,
    ticks: u64,
    /// How often [`Self::on_sync_round`] runs.
    sync_interval: Duration,
    /// See [`NetConfig::recent_window`].
    recent_window: Duration,
    /// Former members told of their departure, by peer and departure (the hash of the
    /// operation that ended the membership), and when (see [`Self::receive_push`]); only peers of former
    /// members, so bounded by the rooms' logs.
    told_departed: HashMap<(PeerId, [u8; 32]), Instant>,
    /// Facilitators' nodes (peer id bytes) that said they had too many join requests
    /// from this one, and when (see `joining::JOIN_PAUSE`).
    joins_refused_for_rate: HashMap<Vec<u8>, Instant>,
    /// Per room: the membership changes (operation hashes) its followers have been shown.
    events_told: HashMap<RoomId, HashSet<[u8; 32]>>,
    dropped: u64,
    /// Stored rooms that could not be read at start, set aside untouched.
    unreadable_rooms: usize,
    /// Messages sent before this node started, first stored since (see [`StatusInfo`]).
    caught_up: u64,
    /// See `StatusInfo::leaves_heard`.
    leaves_heard: u64,
    /// See `StatusInfo::other_copy`.
    other_copy: u64,
    /// The Confer version this node tells members (`NetConfig::protocol_version`).
    protocol_version: &'static str,
    /// Connected peers whose nodes told another Confer version (see `heard_version`).
    versions: HashMap<PeerId, String>,
    /// When this node started (Unix milliseconds).
    started_ms: u64,
    /// Relays, relay-only mode, NAT status, open connections.
    reach: Reach,
    /// The profile's network settings as last written (relays learned are added).
    settings: Settings,
    commit: GroupCommit,
    transfers: Transfers,
    /// What each member may still make this node do (see [`crate::budget`]).
    budgets: Budgets,
    /// This node's key, to sign its peer records.
    keypair: identity::Keypair,
    /// This node's signed peer record, and the addresses it was made for.
    own_record: Option<(Vec<Multiaddr>, Vec<u8>)>,
}

impl EventLoop {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let every = self.sync_interval;
        let mut sync_round = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        sync_round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.on_tick(),
                _ = sync_round.tick() => self.on_sync_round(),
                command = commands.recv() => match command {
                    Some(Command::Request(request, reply)) => self.handle_request(request, reply),
                    Some(Command::Follow(room, reply)) => {
                        let _ = reply.send(self.follow(&room));
                    }
                    Some(Command::Shutdown(done)) => {
                        self.finish_flush().await;
                        self.close();
                        self.stop_following(&mut commands);
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.finish_flush().await;
                        self.close();
                        self.stop_following(&mut commands);
                        return;
                    }
                },
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                flushed = flush_done(&mut self.commit.task), if self.commit.task.is_some() => {
                    self.commit.task = None;
                    let batch = std::mem::take(&mut self.commit.flushing);
                    self.complete(batch, flushed);
                }
                () = flush_due(self.commit.due), if self.commit.due.is_some() && self.commit.task.is_none() => {}
            }
            self.start_flush();
        }
    }

    /// Answers a sync request.
    fn respond(&mut self, channel: ResponseChannel<Vec<u8>>, reply: &SyncReply) {
        let bytes = confer_room::wire::encode(reply).unwrap_or_default();
        let _ = self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, bytes);
    }

    fn close(&mut self) {
        let ids: Vec<RoomId> = self.rooms.keys().copied().collect();
        for id in ids {
            self.save_addresses(&id);
        }
        let flushed = self.store.flush().map_err(|e| e.to_string());
        if let Err(e) = &flushed {
            tracing::error!("flushing the store at shutdown failed: {e}");
        }
        // That flush covered everything stored so far, including what waits for the
        // flush in progress.
        let flushing = std::mem::take(&mut self.commit.flushing);
        let next = std::mem::take(&mut self.commit.next);
        self.complete(flushing, flushed.clone());
        self.complete(next, flushed);
        self.write_manifest();
    }

    /// Listens on the topic of the room's newest epoch key (the current epoch's, or while
    /// its key has not arrived, the last one held), and on no other: an older epoch's
    /// topic, announced beside the new one, would tell anyone who heard both that they
    /// are the same room. Envelopes sealed under an older key that arrive late come by
    /// the sync protocol's reconciliation. A room this profile is no longer in has none.
    ///
    /// It also keeps gossip gated to the room: its topic admits only the peers of its
    /// current members (see `net::RoomGossip`).
    fn sync_topics(&mut self, id: RoomId) {
        let wanted: Vec<String> = self
            .rooms
            .get(&id)
            .filter(|r| r.is_member())
            .and_then(Room::sending_topic)
            .into_iter()
            .collect();
        let held = self.room_topics.remove(&id).unwrap_or_default();
        let gate = self.swarm.behaviour().gossipsub.gate().clone();
        for old in held.iter().filter(|t| !wanted.contains(t)) {
            let topic = IdentTopic::new(old.clone());
            self.swarm.behaviour_mut().gossipsub.unsubscribe(&topic);
            self.topics.remove(&topic.hash());
            gate.remove_topic(&topic.hash());
        }
        let members: HashSet<PeerId> = if self.rooms.get(&id).is_some_and(Room::is_member) {
            self.member_peers(&id).into_iter().collect()
        } else {
            HashSet::new()
        };
        for topic in &wanted {
            gate.set_topic(IdentTopic::new(topic.clone()).hash(), members.clone());
        }
        let mut fresh = Vec::new();
        for new in wanted.iter().filter(|t| !held.contains(t)) {
            let topic = IdentTopic::new(new.clone());
            if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
                tracing::warn!("could not subscribe to a room topic: {e}");
            }
            self.topics.insert(topic.hash(), id);
            fresh.push(topic.hash());
        }
        self.room_topics.insert(id, wanted);

        // A peer that subscribed to a topic before we knew it (so before it was gated) and
        // is not a member of its room has no business there: it learned the opaque name
        // from someone else's announcement. Drop it.
        let intruders: Vec<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(peer, topics)| {
                topics
                    .iter()
                    .any(|t| fresh.contains(t) && !gate.allows(peer, t))
            })
            .map(|(peer, _)| *peer)
            .collect();
        // A member whose subscription was refused before we learned of its admission is
        // reconnected, so that gossipsub hears the subscription again.
        let admitted = gate.take_admitted();
        for peer in intruders.into_iter().chain(admitted) {
            tracing::debug!(%peer, "reconnecting to re-check its room subscriptions");
            let _ = self.swarm.disconnect_peer_id(peer);
            self.redial.remove(&peer);
        }

        // Members already on a topic just taken up: gossipsub told of their subscription
        // when the topic was not ours yet (a joiner hears the facilitator's on the
        // connection it asks to join on; after a rotation, whoever moved first) and will
        // not tell of it again. Reconcile with them now, as with a member that has just
        // subscribed: a joiner would otherwise wait a whole sync round for what was said
        // before it came.
        if !self.rooms.get(&id).is_some_and(Room::is_member) {
            return;
        }
        let already: Vec<(PeerId, gossipsub::TopicHash)> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .flat_map(|(peer, topics)| {
                topics
                    .into_iter()
                    .filter(|t| fresh.contains(t) && gate.allows(peer, t))
                    .map(|t| (*peer, t.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (peer, topic) in already {
            self.push_recent(id, peer, topic.as_str());
        }
    }

    /// Once a second: rotate where a departure is waiting for a new key (the facilitator
    /// at once, anyone else after a grace period), and delete expired epoch keys.
    fn on_tick(&mut self) {
        self.ticks += 1;
        if !self.joins_waiting.is_empty() {
            self.retry_waiting_joins();
        }
        if !self.leaves_waiting.is_empty() {
            self.settle_waiting_leaves();
        }
        for (id, sent) in std::mem::take(&mut self.confirm_soon) {
            self.ask_one_to_confirm(id, &sent);
        }
        self.reach.reserve_due(&mut self.swarm);
        let now = Instant::now();
        self.drop_idle_strangers(now);
        self.answered
            .retain(|_, at| now.saturating_duration_since(*at) < crate::strangers::JOINER_GRACE);
        self.expire_replacements(now);
        self.release_former_members(now);
        self.reconnect_recognised();
        let due: Vec<RoomId> = self
            .rotation_due
            .iter()
            .filter(|(_, since)| since.elapsed() >= ROTATION_GRACE)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.rotation_due.remove(&id);
            if self
                .rooms
                .get(&id)
                .is_some_and(|r| r.is_member() && r.needs_rotation())
            {
                let _ = self.change(id, |room, now, rng| room.rotate(now, rng));
            }
        }
        // A key older than a week is replaced, so that no key spans more than about a
        // week of a room's life.
        let aged: Vec<RoomId> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.epoch_too_old(now_ms()))
            .map(|(id, _)| *id)
            .collect();
        for id in aged {
            let _ = self.change(id, |room, now, rng| room.rotate(now, rng));
        }
        let now = Instant::now();
        self.prune_transfers(now);
        if std::mem::take(&mut self.manifest_dirty) {
            self.write_manifest();
        }
        if std::mem::take(&mut self.addresses_dirty) {
            let ids: Vec<RoomId> = self.rooms.keys().copied().collect();
            for id in ids {
                self.save_addresses(&id);
            }
        }
        self.redial_members();
        if self.ticks.is_multiple_of(PRUNE_EVERY_TICKS) {
            self.addresses.prune();
            let ids: Vec<RoomId> = self.rooms.keys().copied().collect();
            for id in ids {
                let pruned = self.rooms.get_mut(&id).is_some_and(|r| r.prune(now_ms()));
                if pruned {
                    if let Err(e) = self.save_room(&id) {
                        tracing::error!("could not store a room after deleting old keys: {e}");
                    }
                    self.sync_topics(id);
                }
            }
        }
    }

    /// A sync round ([`NetConfig::sync_interval`]): reconciles with every connected member
    /// of each room.
    fn on_sync_round(&mut self) {
        // Anti-entropy: hand each connected member our log when it has grown, and whole
        // now and then, so a member that missed an operation (and so perhaps a key)
        // catches up.
        let ids: Vec<RoomId> = self.rooms.keys().copied().collect();
        for id in ids {
            if !self.rooms[&id].is_member() {
                continue;
            }
            // Retry what no other member has confirmed yet, if sealed under the current
            // key: an older message could be read only by members of its epoch, who ask
            // for it themselves when they reconnect (members who joined later could
            // never open it, and it was pushed to them every round).
            // Not to a member still taking our last pushes: on a slow link a round's
            // retries could outlast the round, and pile up behind each other.
            let envelopes = self.current_envelopes(&id, &self.unconfirmed_ids(&id));
            for peer in self.connected_members(&id) {
                let retries = if self.pushing_to(&peer) {
                    Vec::new()
                } else {
                    envelopes.clone()
                };
                self.reconcile_round(id, peer, retries);
            }
            self.save_addresses(&id);
        }
    }

    /// If the room's log asks for a new epoch: the facilitator rotates now, any other
    /// member after [`ROTATION_GRACE`] if nobody has by then.
    fn maybe_rotate(&mut self, id: RoomId) {
        let Some(room) = self.rooms.get(&id) else {
            return;
        };
        if !room.is_member() || !room.needs_rotation() {
            self.rotation_due.remove(&id);
            return;
        }
        if room.is_facilitator() {
            self.rotation_due.remove(&id);
            let _ = self.change(id, |room, now, rng| room.rotate(now, rng));
        } else {
            self.rotation_due
                .entry(id)
                .or_insert_with(std::time::Instant::now);
        }
    }

    fn change_by(&mut self, query: &str, f: impl RoomChange) -> Reply {
        match self.resolve(query) {
            Ok(id) => self.change(id, f),
            Err(message) => error(message),
        }
    }

    /// Applies one membership change authored here: persists it, publishes it on the
    /// topic of the epoch it was sealed under, and follows the room to its new epoch.
    fn change(&mut self, id: RoomId, f: impl RoomChange) -> Reply {
        let Some(room) = self.rooms.get_mut(&id) else {
            return error("unknown room");
        };
        let Some(topic) = room.sending_topic() else {
            return error(confer_room::RoomError::NoKey);
        };
        let before = room.clone();
        let envelope = match f(room, now_ms(), &mut rng()) {
            Ok(envelope) => envelope,
            Err(e) => return error(e),
        };
        if let Err(e) = self.save_room(&id) {
            self.rooms.insert(id, before);
            return error(e);
        }
        self.remember(id, &envelope);
        self.publish(id, topic, envelope);
        // Also hand the operation straight to every member it concerns: a member whose
        // key is behind cannot open it from gossip.
        // The new operation descends from every other, so it is last in log order.
        let newest: Vec<_> = self
            .rooms
            .get(&id)
            .map(|r| r.log().ops().into_iter().rev().take(1).collect())
            .unwrap_or_default();
        // Everyone who was a member before the change: a removed member learns of its
        // removal (the operation carries no secret for it).
        let me = *self.swarm.local_peer_id();
        let peers: Vec<PeerId> = before
            .members()
            .iter()
            .filter_map(|m| PeerId::from_bytes(&m.peer).ok())
            .filter(|p| *p != me)
            .collect();
        self.push(
            id,
            &peers,
            SyncPush {
                ops: newest,
                ..SyncPush::default()
            },
        );
        self.tell_new_events(id);
        self.end_following_if_out(id);
        self.recognise_peers();
        self.sync_topics(id);
        self.maybe_rotate(id);
        let others = self.member_peers(&id);
        let reached = others.iter().filter(|p| self.swarm.is_connected(p)).count();
        if reached == 0 && !others.is_empty() && !self.rooms[&id].is_member() {
            self.set_leave_unheard(id, true);
        }
        let room = &self.rooms[&id];
        Reply::Changed(ChangeInfo {
            room_id: id.to_hex(),
            epoch: room.epoch_number(),
            members: room.members().len(),
            reached,
        })
    }

    /// Records how much the store holds, so a damaged store is noticed at the next start.
    fn write_manifest(&mut self) {
        if let Err(e) = self.store.write_manifest() {
            tracing::error!("could not write the store's manifest: {e}");
        }
    }

    /// Writes a room's record and flushes it. A room that cannot be encoded (too large
    /// to keep) is an error, and its last good record stays as it was.
    fn save_room(&mut self, id: &RoomId) -> Result<(), String> {
        self.manifest_dirty = true;
        if let Some(room) = self.rooms.get(id) {
            let record = room.to_bytes().map_err(|e| e.to_string())?;
            self.store
                .put_room(&id.0, &record)
                .map_err(|e| e.to_string())?;
            self.store.flush().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The room `query` names: its exact name; else its name typed in another case or
    /// with other spacing (as member names are matched), if only one room has such a name;
    /// else the start of its id (at least four hex digits).
    fn resolve(&self, query: &str) -> Result<RoomId, String> {
        let named = |matches: &dyn Fn(&str) -> bool| -> Vec<RoomId> {
            self.rooms
                .values()
                .filter(|r| matches(r.name()))
                .map(Room::id)
                .collect()
        };
        let mut by_name = named(&|name| name == query);
        if by_name.is_empty() {
            by_name = named(&|name| confer_room::invite::same_name(name, query));
        }
        if by_name.len() == 1 {
            return Ok(by_name[0]);
        }
        if by_name.len() > 1 {
            return Err(format!(
                "more than one room is called \"{query}\"; use the start of its id instead"
            ));
        }
        let q = query.to_ascii_lowercase();
        let by_id: Vec<RoomId> = if q.len() >= 4 && q.chars().all(|c| c.is_ascii_hexdigit()) {
            self.rooms
                .keys()
                .filter(|id| id.to_hex().starts_with(&q))
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        match by_id.len() {
            1 => Ok(by_id[0]),
            0 => Err(self.no_such_room(query)),
            _ => Err(format!(
                "\"{query}\" matches more than one room id; give more of the id"
            )),
        }
    }

    /// The refusal for a room name or id that matches nothing: names the rooms whose names
    /// contain what was typed (in any case and spacing), so "thursday" finds "Thursday
    /// group" for the user to type in full. It never picks one itself: a message sent to
    /// the wrong room cannot be taken back.
    fn no_such_room(&self, query: &str) -> String {
        let loose = confer_room::invite::loose_name;
        let typed = loose(query);
        let mut like: Vec<&str> = if typed.is_empty() {
            Vec::new()
        } else {
            self.rooms
                .values()
                .map(Room::name)
                .filter(|name| loose(name).contains(&typed))
                .collect()
        };
        like.sort_unstable();
        let list = |names: &[&str]| {
            names
                .iter()
                .map(|name| format!("\"{name}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match like.len() {
            0 => format!(
                "no room called or with an id starting \"{query}\"; `confer room list` shows your rooms"
            ),
            1 => format!(
                "no room is called \"{query}\"; did you mean {}? Give its whole name (in any case)",
                list(&like)
            ),
            _ => format!(
                "no room is called \"{query}\"; rooms whose names contain it: {}. Give one's whole name (in any case)",
                list(&like)
            ),
        }
    }

    fn summary(&self, room: &Room) -> RoomSummary {
        RoomSummary {
            room_id: room.id().to_hex(),
            name: room.name().to_owned(),
            members: room.members().len(),
            messages: self.index.get(&room.id()).map_or(0, BTreeMap::len),
            member: room.is_member(),
            pending: self.unconfirmed.get(&room.id()).map_or(0, BTreeSet::len),
            gone: self.gone_unconfirmed(room),
            leave_unheard: self.unheard_leaves.contains(&room.id()),
        }
    }

    /// How many of this profile's unconfirmed messages in `room` were sent under an
    /// identity that is no longer in it. Reads them only in a room joined again (`node
    /// run` asks for the status every second).
    fn gone_unconfirmed(&self, room: &Room) -> usize {
        let Some(unconfirmed) = self.unconfirmed.get(&room.id()) else {
            return 0;
        };
        if !room.is_member() {
            return unconfirmed.len();
        }
        if !room.rejoined() {
            return 0;
        }
        let me = room.me();
        unconfirmed
            .iter()
            .filter_map(|m| self.store.message(&room.id().0, m).ok().flatten())
            .filter_map(|bytes| StoredMessage::from_bytes(&bytes))
            .filter(|stored| stored.record.author != me)
            .count()
    }

    fn summaries(&self) -> Vec<RoomSummary> {
        let mut rooms: Vec<RoomSummary> = self.rooms.values().map(|r| self.summary(r)).collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name).then(a.room_id.cmp(&b.room_id)));
        rooms
    }

    /// Where the joiner can reach this node: relayed addresses first (they work from
    /// behind any NAT), then confirmed external ones, then the listening ones; in
    /// relay-only mode only relayed ones.
    fn invite_addresses(&self) -> Vec<String> {
        let candidates: Vec<Multiaddr> = self
            .swarm
            .external_addresses()
            .cloned()
            .chain(self.listen.iter().filter_map(|a| a.parse().ok()))
            .filter(|a| self.reach.usable(a))
            .collect();
        let (relayed, direct): (Vec<Multiaddr>, Vec<Multiaddr>) =
            candidates.into_iter().partition(reach::is_relayed);
        // One entry per address, whether or not it ends in this node's own id: a joiner
        // dials every entry at once.
        let me = *self.swarm.local_peer_id();
        let mut addrs: Vec<String> = Vec::new();
        for mut a in relayed.into_iter().chain(direct) {
            if a.iter().last() == Some(libp2p::multiaddr::Protocol::P2p(me)) {
                a.pop();
            }
            let a = a.to_string();
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        addrs.truncate(confer_room::invite::MAX_ADDRESSES);
        addrs
    }

    fn handle_request(&mut self, request: Request, reply: oneshot::Sender<Reply>) {
        let answer = match request {
            Request::Join {
                code,
                display_name,
                wait_secs,
            } => {
                let display_name = display_name.unwrap_or_else(|| self.profile_name.clone());
                let wait = Duration::from_secs(wait_secs);
                // Answered later, when the facilitator responds.
                if let Err(message) = self.start_join(&code, &display_name, wait, reply) {
                    tracing::debug!("join refused locally: {message}");
                }
                return;
            }
            Request::Status => Reply::Status(StatusInfo {
                peer_id: self.swarm.local_peer_id().to_string(),
                listen: self.listen.clone(),
                rooms: self.summaries(),
                dropped: self.dropped,
                relay_only: self.reach.relay_only(),
                nat: self.reach.nat(),
                relays: self.reach.relay_infos(),
                connections: self.reach.connection_infos(),
                caught_up: self.caught_up,
                leaves_heard: self.leaves_heard,
                other_copy: self.other_copy,
                other_versions: self
                    .versions
                    .keys()
                    .filter(|peer| self.known_peer(peer))
                    .count(),
                joining: self.pending_joins.len() + self.joins_waiting.len(),
                unreadable_rooms: self.unreadable_rooms,
            }),
            Request::ListRooms => Reply::Rooms {
                rooms: self.summaries(),
            },
            Request::Forget { room } => match self.resolve(&room) {
                Ok(id) => self.forget(id),
                Err(message) => error(message),
            },
            Request::CreateRoom { name, display_name } => self.create_room(&name, display_name),
            Request::Invite {
                room,
                expires_in_secs,
            } => self.invite(&room, expires_in_secs),
            Request::Send { room, text } => {
                // Answered once the message is on disk.
                self.send(&room, &text, reply);
                return;
            }
            // Following is the control socket's (`control::follow`); here a read is one
            // answer.
            Request::Read { room, last, .. } => {
                let last = last.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
                match self
                    .resolve(&room)
                    .and_then(|id| self.history(&id, last).map(|h| (id, h)))
                {
                    Ok((id, (messages, earlier))) => {
                        let mut events = self.events(&id);
                        if earlier > 0 {
                            crate::api::changes_from_first(&mut events, &messages);
                        }
                        Reply::History {
                            messages,
                            member: self.rooms.get(&id).is_some_and(Room::is_member),
                            events,
                            earlier: earlier as u64,
                        }
                    }
                    Err(message) => error(message),
                }
            }
            Request::Leave { room, anyway } => match self.resolve(&room) {
                Ok(id) if !anyway => {
                    // Answered when another member holds this member's last messages.
                    self.leave_when_delivered(id, reply);
                    return;
                }
                Ok(id) => self.leave_now(id),
                Err(message) => error(message),
            },
            Request::Remove { room, member } => {
                self.change_by(&room, |r, now, rng| r.remove(&member, now, rng))
            }
            Request::Rotate { room } => self.change_by(&room, |r, now, rng| r.rotate(now, rng)),
            Request::Handover { room, member } => {
                self.change_by(&room, |r, now, rng| r.handover(&member, now, rng))
            }
            Request::RevokeInvite { room, invite } => {
                self.change_by(&room, |r, now, rng| r.revoke_invite(&invite, now, rng))
            }
            Request::ListInvites { room } => match self.resolve(&room) {
                Ok(id) if !self.rooms[&id].is_facilitator() => {
                    error(confer_room::RoomError::NotFacilitator)
                }
                Ok(id) => {
                    let mut invites = self.rooms[&id].outstanding_invites(now_ms());
                    invites.sort_by_key(|i| i.expires_at);
                    Reply::Invites {
                        invites: invites
                            .into_iter()
                            .map(|i| InviteSummary {
                                invite_id: hex::encode(i.id),
                                expires_at: rfc3339_ms(i.expires_at * 1000),
                            })
                            .collect(),
                    }
                }
                Err(message) => error(message),
            },
            Request::Members { room } => match self.resolve(&room) {
                Ok(id) => {
                    let room = &self.rooms[&id];
                    Reply::Members {
                        epoch: room.epoch_number(),
                        members: room
                            .members()
                            .iter()
                            .map(|m| {
                                let you = m.public.id == room.me();
                                let peer = PeerId::from_bytes(&m.peer).ok();
                                MemberInfo {
                                    member_id: m.public.id.to_hex(),
                                    name: m.display_name.clone(),
                                    role: m.role.as_str().to_owned(),
                                    you,
                                    connected: you
                                        || peer.is_some_and(|p| self.swarm.is_connected(&p)),
                                    other_version: peer
                                        .filter(|_| !you)
                                        .and_then(|p| self.versions.get(&p).cloned()),
                                }
                            })
                            .collect(),
                    }
                }
                Err(message) => error(message),
            },
        };
        let _ = reply.send(answer);
    }

    /// Deletes a room this profile is no longer in: from the store (history, keys,
    /// records) and from every table of the node.
    fn forget(&mut self, id: RoomId) -> Reply {
        let Some(room) = self.rooms.get(&id) else {
            return error("no such room");
        };
        let name = room.name().to_owned();
        if room.is_member() {
            return error(format!(
                "you are still a member of \"{name}\"; leave it first (`confer leave`), then forget it"
            ));
        }
        if self.unheard_leaves.contains(&id) {
            return error(
                "no member's node has heard that you left yet, and yours must keep telling them; keep your node running until `confer node run` says a member has heard, then forget the room",
            );
        }
        let messages = match self
            .store
            .delete_room(&id.0, &[OUTBOX, PEERS, LEAVE_UNHEARD, DOUBTFUL_JOIN])
        {
            Ok(messages) => messages,
            Err(e) => return error(format!("could not delete the room from the store: {e}")),
        };
        self.rooms.remove(&id);
        self.recognise_peers();
        self.sync_topics(id);
        self.room_topics.remove(&id);
        self.confirm_soon.remove(&id);
        self.followers.remove(&id);
        self.outbox.remove(&id);
        self.unknown_author.retain(|(room, _)| *room != id);
        self.recent.remove(&id);
        self.index.remove(&id);
        self.unconfirmed.remove(&id);
        self.shown_pending.remove(&id);
        self.rotation_due.remove(&id);
        self.events_told.remove(&id);
        self.transfers.forget_room(&id);
        self.manifest_dirty = true;
        Reply::Forgotten {
            room_id: id.to_hex(),
            name,
            messages,
        }
    }

    fn create_room(&mut self, name: &str, display_name: Option<String>) -> Reply {
        // Rooms are named by their names in every command, typed in any case and
        // spacing: two of the same name could only be told apart by id.
        if let Some(same) = self
            .rooms
            .values()
            .find(|r| confer_room::invite::same_name(r.name(), name))
        {
            return error(format!(
                "you already have a room called \"{name}\" (id {}…); give the new one another name",
                &same.id().to_hex()[..8]
            ));
        }
        let display_name = display_name.unwrap_or_else(|| self.profile_name.clone());
        let peer = self.swarm.local_peer_id().to_bytes();
        let room = match Room::create(name, &display_name, peer, now_ms(), &mut rng()) {
            Ok(room) => room,
            Err(e) => return error(e),
        };
        let id = room.id();
        let info = RoomInfo {
            room_id: id.to_hex(),
            name: room.name().to_owned(),
        };
        self.rooms.insert(id, room);
        if let Err(e) = self.save_room(&id) {
            self.rooms.remove(&id);
            return error(e);
        }
        self.sync_topics(id);
        Reply::Room(info)
    }

    fn invite(&mut self, query: &str, expires_in_secs: u64) -> Reply {
        let id = match self.resolve(query) {
            Ok(id) => id,
            Err(message) => return error(message),
        };
        if expires_in_secs == 0 || expires_in_secs > MAX_INVITE_SECS {
            return error("an invite's expiry must be between 1 second and 365 days");
        }
        let expires_at = now_ms() / 1000 + expires_in_secs;
        let addresses = self.invite_addresses();
        if addresses.is_empty() {
            // Relay-only and no relay has accepted us: nobody could use the invite.
            return error(
                "no invite was made: this node has no address anyone could reach yet (in relay-only mode it is reached only through a relay, and none has accepted it so far; `confer status` shows when one does)",
            );
        }
        let peer = self.swarm.local_peer_id().to_bytes();
        let Some(room) = self.rooms.get_mut(&id) else {
            return error("unknown room");
        };
        let before = room.clone();
        let invite = match room.issue_invite(addresses, peer, expires_at, &mut rng()) {
            Ok(invite) => invite,
            Err(e) => return error(e),
        };
        if let Err(e) = self.save_room(&id) {
            self.rooms.insert(id, before);
            return error(e);
        }
        Reply::Invite(InviteInfo {
            code: invite.to_code(),
            expires_at: rfc3339_ms(expires_at * 1000),
        })
    }

    /// Seals, stores and publishes a message, and answers `reply` once the message is on
    /// disk (see [`GroupCommit`]): publishing does not wait for the flush, so the other
    /// members receive it while this node writes it, but `send` still returns only after
    /// the message is durably stored here.
    fn send(&mut self, query: &str, text: &str, reply: oneshot::Sender<Reply>) {
        match self.seal_and_store(query, text) {
            Ok(sent) => self.commit.next.sends.push((reply, sent)),
            Err(message) => {
                let _ = reply.send(error(message));
            }
        }
    }

    fn seal_and_store(&mut self, query: &str, text: &str) -> Result<Reply, String> {
        let id = self.resolve(query)?;
        // After a departure nothing new may go out under the old key: rotate first.
        if self
            .rooms
            .get(&id)
            .is_some_and(|r| r.is_member() && r.needs_rotation())
            && let Reply::Error { message } =
                self.change(id, |room, now, rng| room.rotate(now, rng))
        {
            return Err(message);
        }
        let Some(room) = self.rooms.get(&id) else {
            return Err("unknown room".into());
        };
        let (envelope, record) = room
            .seal_message(text, now_ms(), &mut rng())
            .map_err(|e| e.to_string())?;
        let Some(topic) = room.topic() else {
            return Err(confer_room::RoomError::NoKey.to_string());
        };
        let value = StoredMessage {
            record: record.clone(),
            envelope: envelope.clone(),
        }
        .to_bytes();
        self.manifest_dirty = true;
        self.unconfirmed.entry(id).or_default().insert(record.id);
        let stored = self
            .store
            .insert_message(&id.0, &record.id, record.sent_at, &value)
            .and_then(|_| self.store.add_to_outbox(&id.0, &record.id));
        if let Err(e) = stored {
            if let Some(u) = self.unconfirmed.get_mut(&id) {
                u.remove(&record.id);
            }
            return Err(e.to_string());
        }
        let message_id = hex::encode(record.id);
        self.stored_unflushed(id, &record, &envelope);
        self.remember(id, &envelope);
        let published = self.publish(id, topic, envelope);
        if published {
            let sent = self.confirm_soon.entry(id).or_default();
            if sent.len() < CONFIRM_SOON_LIMIT {
                sent.insert(record.id);
            }
        }
        self.notify(&id, &record, !published);
        Ok(Reply::Sent {
            message_id,
            waiting: !published,
        })
    }

    /// Publishes, or keeps the envelope for when a room peer subscribes. Returns whether
    /// it went out now (some other member of the room is connected).
    fn publish(&mut self, id: RoomId, topic: String, envelope: Vec<u8>) -> bool {
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(IdentTopic::new(topic.clone()), envelope.clone())
        {
            Ok(_) | Err(gossipsub::PublishError::Duplicate) => true,
            Err(e) => {
                tracing::debug!("publish deferred until a room peer is reachable: {e}");
                let queue = self.outbox.entry(id).or_default();
                if queue.len() >= OUTBOX_LIMIT {
                    queue.pop_front();
                }
                queue.push_back((topic, envelope));
                false
            }
        }
    }

    fn flush_outbox(&mut self, id: RoomId) {
        let Some(queue) = self.outbox.remove(&id) else {
            return;
        };
        for (topic, envelope) in queue {
            let _ = self.publish(id, topic, envelope);
        }
        // What waited is confirmed soon too.
        let waited = self.unconfirmed_ids(&id);
        let sent = self.confirm_soon.entry(id).or_default();
        for m in waited {
            if sent.len() >= CONFIRM_SOON_LIMIT {
                break;
            }
            sent.insert(m);
        }
    }

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.handle_gossip(event),
            SwarmEvent::Behaviour(BehaviourEvent::Join(event)) => self.handle_join(event),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.handle_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(
                libp2p::identify::Event::Received { peer_id, info, .. },
            )) => self.on_identify(peer_id, info),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                connection_id,
                ..
            } => {
                self.reach
                    .on_connection(&mut self.swarm, connection_id, peer_id, &endpoint);
                let replacing = self.replacing.contains_key(&peer_id);
                self.replaced(&peer_id, connection_id);
                self.score_peer(peer_id);
                if endpoint.is_dialer() {
                    self.learn_addresses(peer_id, [endpoint.get_remote_address().clone()]);
                }
                // A member we were not connected to, or only over connections that did not
                // carry sync: catch up with each other.
                if num_established.get() == 1 || replacing {
                    let peer_bytes = peer_id.to_bytes();
                    let shared: Vec<RoomId> = self
                        .rooms
                        .values()
                        .filter(|r| {
                            r.is_member() && r.members().iter().any(|m| m.peer == peer_bytes)
                        })
                        .map(Room::id)
                        .collect();
                    for id in shared {
                        self.reconcile(id, peer_id, Vec::new());
                    }
                    self.tell_unheard_leaves(peer_id);
                }
            }
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                self.reach.on_listen_addr(listener_id);
                let address = address.to_string();
                if !self.listen.contains(&address) {
                    self.listen.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let address = address.to_string();
                self.listen.retain(|a| *a != address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                ..
            } => {
                if self.reach.on_listener_closed(listener_id) {
                    tracing::info!("lost a relay reservation; asking again");
                }
                for address in addresses {
                    let address = address.to_string();
                    self.listen.retain(|a| *a != address);
                }
            }
            SwarmEvent::ConnectionClosed {
                connection_id,
                peer_id,
                num_established,
                ..
            } => {
                self.reach.on_connection_closed(connection_id);
                if num_established == 0 {
                    self.replacing.remove(&peer_id);
                    self.versions.remove(&peer_id);
                    let member = self.known_peer(&peer_id);
                    self.addresses.disconnected(&peer_id, member);
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } if !self.reach.usable(&address) => {
                // Relay-only: never announce an address that would reveal where we are.
                self.swarm.remove_external_address(&address);
            }
            SwarmEvent::OutgoingConnectionError { peer_id, .. } => {
                self.reach.on_dial_failed(peer_id);
                if let Some(peer) = peer_id {
                    self.replacement_failed(&peer);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(
                libp2p::autonat::Event::StatusChanged { new, .. },
            )) => {
                tracing::info!(status = ?new, "reachability (AutoNAT)");
                self.reach.on_nat(&new);
            }
            // A peer whose network dropped silently: close the connection so that the
            // member is redialled (and caught up) when it comes back, and a relay
            // reservation on it is asked for again.
            SwarmEvent::Behaviour(BehaviourEvent::Ping(libp2p::ping::Event {
                connection,
                result: Err(failure),
                ..
            })) if !matches!(failure, libp2p::ping::Failure::Unsupported) => {
                self.swarm.close_connection(connection);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(event)) => {
                tracing::debug!(peer = %event.remote_peer_id, ok = event.result.is_ok(), "hole punch (DCUtR)");
            }
            _ => {}
        }
    }

    fn handle_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                // Only from a member of the topic's room: a member of another room that
                // learned the topic is not heard, and nothing it sends is opened.
                let gate = self.swarm.behaviour().gossipsub.gate();
                let acceptance = match self.topics.get(&message.topic).copied() {
                    Some(id) if gate.allows(&propagation_source, &message.topic) => {
                        self.receive(id, message.data)
                    }
                    _ => {
                        self.dropped += 1;
                        MessageAcceptance::Ignore
                    }
                };
                tracing::debug!(?acceptance, "room traffic received");
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            gossipsub::Event::Subscribed { peer_id, topic, .. } => {
                if let Some(id) = self.topics.get(&topic).copied() {
                    self.flush_outbox(id);
                    self.push_recent(id, peer_id, topic.as_str());
                }
            }
            _ => {}
        }
    }

    /// Opens, verifies, stores and shows one envelope from a room's topic.
    fn receive(&mut self, id: RoomId, data: Vec<u8>) -> MessageAcceptance {
        self.receive_one(id, data).0
    }

    /// [`Self::receive`], also returning the id of the message held, if the envelope was
    /// one. The message is shown (and may be confirmed) once the store has flushed it
    /// (see [`GroupCommit`]). An envelope already held is recognised by its hash,
    /// without opening it.
    fn receive_one(&mut self, id: RoomId, data: Vec<u8>) -> (MessageAcceptance, Option<Id>) {
        // A profile out of the room takes nothing more from it, though it may still hold
        // the key: members who have not yet heard it leave go on sending under that key.
        let Some(room) = self.rooms.get_mut(&id).filter(|r| r.is_member()) else {
            return (MessageAcceptance::Ignore, None);
        };
        let digest = envelope_digest(&data);
        if let Some(held) = self.transfers.held.get(&id).and_then(|h| h.get(&digest)) {
            return (MessageAcceptance::Accept, Some(*held));
        }
        let now = now_ms();
        match room.open(&data, now) {
            // Dated more than a day ahead of this node's clock: refused for now (see
            // `sync::too_far_ahead`); its author's node offers it again.
            Ok(Incoming::Message(record)) if sync::too_far_ahead(record.sent_at, now) => {
                self.dropped += 1;
                (MessageAcceptance::Ignore, None)
            }
            Ok(Incoming::Message(record)) => self.store_opened(id, record, data),
            Ok(Incoming::Op { new }) => {
                if new {
                    self.remember(id, &data);
                    self.after_log_change(id);
                }
                (MessageAcceptance::Accept, None)
            }
            Err(OpenError::Pending) => {
                // The author's admission, or an operation the message names, may arrive
                // after the message itself.
                if self.unknown_author.len() >= UNKNOWN_AUTHOR_LIMIT {
                    self.unknown_author.pop_front();
                    self.dropped += 1;
                }
                self.unknown_author.push_back((id, data));
                (MessageAcceptance::Ignore, None)
            }
            Err(e) => {
                self.dropped += 1;
                tracing::debug!("dropped room traffic: {e}");
                (MessageAcceptance::Reject, None)
            }
        }
    }

    /// Stores a message opened and verified from `data` (see [`Self::receive_one`]).
    fn store_opened(
        &mut self,
        id: RoomId,
        record: MessageRecord,
        data: Vec<u8>,
    ) -> (MessageAcceptance, Option<Id>) {
        let stored = insert_opened(&self.store, id, &record, &data);
        self.after_insert(id, record, data, stored)
    }

    /// Follows [`insert_opened`]: shows a new message once flushed, keeps its envelope.
    fn after_insert(
        &mut self,
        id: RoomId,
        record: MessageRecord,
        data: Vec<u8>,
        stored: Result<bool, confer_store::StoreError>,
    ) -> (MessageAcceptance, Option<Id>) {
        let message_id = record.id;
        match stored {
            Ok(true) => {
                self.notice_other_copy(id, &record);
                self.stored_unflushed(id, &record, &data);
                self.notify(&id, &record, false);
                self.remember(id, &data);
            }
            Ok(false) => {
                // Held already, under another envelope's bytes.
                self.transfers.wanted.got(&message_id);
            }
            Err(e) => {
                tracing::error!("could not store a message: {e}");
                return (MessageAcceptance::Ignore, None);
            }
        }
        (MessageAcceptance::Accept, Some(message_id))
    }

    /// Counts a message new to this node, in this profile's name in the room, dated while
    /// this node has been running (and not ahead of its clock): this node did not send
    /// it (what it sends is stored before anything else can bring it), so another copy
    /// of the profile is running elsewhere. One from before this node started is what a
    /// profile moved from another computer, or started from a backup, catches up on.
    fn notice_other_copy(&mut self, id: RoomId, record: &MessageRecord) {
        let mine = self
            .rooms
            .get(&id)
            .is_some_and(|room| room.is_member() && record.author == room.me());
        let now = now_ms();
        if mine && record.sent_at >= self.started_ms && record.sent_at <= now + CLOCK_AHEAD_MS {
            if self.other_copy == 0 {
                tracing::warn!(
                    "a message in this profile's name that this node did not send arrived; the profile seems to be running on another computer too"
                );
            }
            self.other_copy += 1;
        }
    }

    fn retry_unknown_authors(&mut self, id: RoomId) {
        let waiting: Vec<(RoomId, Vec<u8>)> = std::mem::take(&mut self.unknown_author).into();
        for (room, data) in waiting {
            if room == id {
                let _ = self.receive(room, data);
            } else {
                self.unknown_author.push_back((room, data));
            }
        }
    }

    /// Loads a room's message index and outbox from the store.
    fn load_index(&mut self, id: RoomId) -> Result<(), NodeError> {
        let mut index = BTreeMap::new();
        let mut held = HashMap::new();
        let mut keys = HashMap::new();
        self.store.for_each_message(&id.0, |_, _, bytes| {
            if let Some(stored) = StoredMessage::from_bytes(bytes) {
                index.insert(stored.record.id, stored.record.sent_at);
                held.insert(envelope_digest(&stored.envelope), stored.record.id);
                keys.insert(stored.record.id, sync::holding_key(&stored.record));
            }
        })?;
        self.index.insert(id, index);
        self.transfers.held.insert(id, held);
        self.transfers.keys.insert(id, keys);
        *self.transfers.versions.entry(id).or_default() += 1;
        let mut unconfirmed: BTreeSet<Id> = self.store.outbox(&id.0)?.into_iter().collect();
        // An outbox kept the old way, in one record: moved into the tree, then dropped.
        if let Some(bytes) = self.store.room_state(&id.0, OUTBOX)? {
            let old: Vec<Id> =
                confer_room::wire::decode(&bytes, confer_room::wire::MAX_WIRE).unwrap_or_default();
            for m in old {
                self.store.add_to_outbox(&id.0, &m)?;
                unconfirmed.insert(m);
            }
            self.store.flush()?;
            self.store.remove_room_state(&id.0, OUTBOX)?;
        }
        self.unconfirmed.insert(id, unconfirmed);
        // Before the addresses: a room left unheard keeps its members' (`known_peer`).
        if self.store.room_state(&id.0, LEAVE_UNHEARD)?.as_deref() == Some(&[1]) {
            self.unheard_leaves.insert(id);
        }
        if let Some(bytes) = self.store.room_state(&id.0, PEERS)? {
            let known: Vec<(Vec<u8>, Vec<String>)> =
                confer_room::wire::decode(&bytes, confer_room::wire::MAX_WIRE).unwrap_or_default();
            for (peer, addrs) in known {
                if let Ok(peer) = PeerId::from_bytes(&peer) {
                    self.learn_addresses(peer, addrs.iter().filter_map(|a| a.parse().ok()));
                }
            }
        }
        Ok(())
    }

    /// Persists the addresses known for the room's members, so a restarted node can redial.
    fn save_addresses(&self, id: &RoomId) {
        let known = self.member_addresses(id);
        let result = confer_room::wire::encode(&known)
            .map_err(|_| ())
            .and_then(|bytes| {
                self.store
                    .put_room_state(&id.0, PEERS, &bytes)
                    .map_err(|_| ())
            });
        if result.is_err() {
            tracing::warn!("could not store member addresses");
        }
    }

    /// The peers of the other members of room `id` this node is connected to.
    fn connected_members(&self, id: &RoomId) -> Vec<PeerId> {
        let mut peers = self.member_peers(id);
        peers.retain(|p| self.swarm.is_connected(p));
        peers
    }

    /// Peers of the room's current members other than this node.
    fn member_peers(&self, id: &RoomId) -> Vec<PeerId> {
        let me = *self.swarm.local_peer_id();
        self.rooms
            .get(id)
            .map(|room| {
                room.members()
                    .iter()
                    .filter_map(|m| PeerId::from_bytes(&m.peer).ok())
                    .filter(|p| *p != me)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Dials members we are not connected to, with exponential backoff per peer.
    fn redial_members(&mut self) {
        let now = std::time::Instant::now();
        let mut peers: BTreeSet<PeerId> = BTreeSet::new();
        for id in self.rooms.keys() {
            if self.rooms[id].is_member() || self.unheard_leaves.contains(id) {
                peers.extend(self.member_peers(id));
            }
        }
        for peer in peers {
            if self.swarm.is_connected(&peer) {
                self.redial.remove(&peer);
                continue;
            }
            let Some(addrs) = self.addresses.get(&peer) else {
                continue;
            };
            // Relayed addresses wait until we are connected to their relay (`Reach`
            // dials it): a circuit dial racing another dial to the relay would fail.
            let addrs: Vec<Multiaddr> = addrs
                .iter()
                .filter(|a| self.reach.ready(&self.swarm, a))
                .cloned()
                .collect();
            if addrs.is_empty() {
                continue;
            }
            let (due, backoff) = self.redial.get(&peer).copied().unwrap_or((now, REDIAL_MIN));
            if now < due {
                continue;
            }
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(addrs)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!("redial of a member failed to start: {e}");
            }
            self.redial
                .insert(peer, (now + backoff, (backoff * 2).min(REDIAL_MAX)));
        }
    }

    /// Adds a relay learned from an invite, once that invite has let this profile in, to
    /// the profile's settings for the next start (relays given with `--relay` stay out of
    /// them).
    fn keep_relay(&mut self, relay: &Multiaddr) {
        match self.settings.add_relay(&relay.to_string()) {
            Ok(true) => {
                if let Err(e) = self.settings.write(&self.store) {
                    tracing::warn!("could not save a relay in the settings: {e}");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("not keeping a relay learned from an invite: {e}"),
        }
    }

    /// Remembers where a peer can be reached (bounded).
    /// Keeps `addrs` for `peer` (bounded for non-members: see [`AddressBook`]).
    fn learn_addresses(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>) {
        let member = self.known_peer(&peer);
        if self.addresses.learn(peer, member, addrs, Instant::now()) {
            self.addresses_dirty = true;
        }
    }

    /// What a peer's node says of itself through identify: the addresses it gives (a node
    /// of this version gives only external ones, such as a relayed address). Nodes before
    /// this version also announced their Confer version there, which is heard as if told
    /// over the sync protocol ([`Self::heard_version`]).
    fn on_identify(&mut self, peer: PeerId, info: libp2p::identify::Info) {
        let version = info.protocol_version;
        if version.starts_with("/confer/") {
            self.heard_version(peer, &version);
            if version != self.protocol_version {
                return;
            }
        }
        self.learn_addresses(peer, info.listen_addrs);
    }

    /// The Confer version a peer's node runs, as it told: one other than this node's is
    /// remembered while connected, so that `members` can say which members' nodes cannot
    /// read what this one sends, or it theirs.
    pub(super) fn heard_version(&mut self, peer: PeerId, version: &str) {
        if version == self.protocol_version {
            self.versions.remove(&peer);
            return;
        }
        let shown = version.starts_with("/confer/")
            && version.len() <= 32
            && version.bytes().all(|b| b.is_ascii_graphic());
        if !shown {
            return;
        }
        // A relay may run another version without harm: it reads nothing.
        if self.versions.get(&peer).map(String::as_str) != Some(version) && self.known_peer(&peer) {
            tracing::warn!(
                theirs = %version,
                ours = self.protocol_version,
                "a member's node runs another version of Confer: messages between the two may not get through"
            );
        }
        self.versions.insert(peer, version.to_owned());
    }

    /// Follows a change in a room's log: persist, listen on the right topics, retry
    /// waiting traffic, rotate if the log asks for it.
    fn after_log_change(&mut self, id: RoomId) {
        self.tell_new_events(id);
        self.end_following_if_out(id);
        self.recognise_peers();
        if let Err(e) = self.save_room(&id) {
            tracing::error!("could not store a membership change: {e}");
        }
        self.sync_topics(id);
        self.retry_unknown_authors(id);
        self.maybe_take_role(id);
        self.maybe_rotate(id);
    }

    /// If a handover made this profile the facilitator, says at once that it takes the
    /// role: that settles the role against any other handover its predecessor signs.
    fn maybe_take_role(&mut self, id: RoomId) {
        if self
            .rooms
            .get(&id)
            .is_some_and(|r| r.role_to_take().is_some())
        {
            let _ = self.change(id, |room, now, rng| room.take_role(now, rng));
        }
    }
}
