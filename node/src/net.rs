//! The libp2p network layer: it moves opaque bytes between peers and knows nothing about
//! rooms, members or cryptography.
//!
//! # What is on the wire
//!
//! * **Transport**: TCP, secured with noise (XX, ed25519 identities) and multiplexed with
//!   yamux. These are libp2p's standard protocols, so independent implementations (for
//!   example js-libp2p) can talk to a Confer node.
//! * **gossipsub** carries room traffic, between members only (see "Strangers" below).
//!   Topic names are announced to every member's node, so the caller must use opaque
//!   topic names (never a room name).
//! * **request-response** on [`JOIN_PROTOCOL`] carries the join handshake: one opaque request,
//!   one opaque response ([`FrameCodec`]); [`SYNC_PROTOCOL`], framed the same way, carries
//!   what members exchange directly: operations, reconciliation summaries and wants, and
//!   the envelopes asked for (see `crate::sync`).
//! * **identify** and **ping** (every [`PING_INTERVAL`]; the node closes a connection after
//!   two failed pings). Identify tells every peer the same generic protocol version and
//!   agent ([`IDENTIFY_PROTOCOL_VERSION`], [`IDENTIFY_AGENT`]) and no listening address (only
//!   addresses confirmed as external, such as a relayed one): members learn a node's
//!   Confer version ([`CONFER_VERSION`]) and addresses over the sync protocol instead.
//!
//! # Strangers
//!
//! A peer is a stranger unless the node recognises it ([`Peers`], kept by the node: the
//! members of its rooms and the facilitators it is joining through; and, for the sync
//! protocol, anyone its rooms' logs name). Which behaviours run on a connection is decided
//! when it is established ([`Gated`]): on a stranger's, gossipsub and sync do not run at
//! all, so gossipsub neither announces the node's topics to it nor hears anything from it,
//! and it cannot open a sync stream; it can redeem an invite ([`JOIN_PROTOCOL`], requests
//! of at most [`MAX_JOIN_REQUEST`] bytes, [`MAX_JOIN_STREAMS`] at a time), and identify and
//! ping it. AutoNAT (whose probe carries every address the node listens on) runs only with
//! members and the node's relays, DCUtR only with members. A peer recognised later is
//! connected to again (the node dials it and closes the old connection once the new one is
//! up; or closes it, and the peer dials); one no longer recognised is blacklisted in
//! gossipsub and disconnected, and the node takes up a new topic only once it has gone
//! ([`RoomGossip::subscribe`]). Connections are admitted by `crate::strangers`: caps per
//! peer, host and network, and slots kept for members.
//!
//! # Reaching peers behind NAT
//!
//! * **Circuit relay v2 client.** A node can reserve a slot on a relay (listen on
//!   `<relay>/p2p-circuit`) and so be reachable at a *relayed address*
//!   `<relay>/p2p/<relay id>/p2p-circuit/p2p/<node id>` even behind NAT; it can dial peers at
//!   their relayed addresses. The relay carries noise-encrypted streams end to end between
//!   the two peers: it sees their IP addresses and how much they send, never the content.
//!   [`crate::relay`] is the server side (`confer relay run`).
//! * **DCUtR** (direct connection upgrade through relay): once two peers are connected
//!   through a relay, they try to punch holes in their NATs and connect directly.
//! * **AutoNAT** (v1, client and server): peers dial each other back to tell a node whether
//!   its addresses are reachable from outside (its "NAT status"); a confirmed public address
//!   becomes an external address, which invites carry.
//! * **Relay-only mode** ([`DialPolicy::relay_only`]), a member's privacy setting: the TCP
//!   transport refuses to dial anything but the relays ([`GatedTransport`]), the node
//!   listens only through relays, and DCUtR and AutoNAT are off (both would reveal its
//!   address). Other members then never learn its IP address.
//!
//! # gossipsub choices
//!
//! * **Anonymous messages.** [`gossipsub::MessageAuthenticity::Anonymous`] puts neither an
//!   author, a sequence number nor a signature on the wire, so the network cannot learn who
//!   wrote a message; authenticity is the room layer's job, inside the encrypted payload.
//!   [`gossipsub::ValidationMode::Anonymous`] makes every node *reject* an incoming message
//!   that carries any of those fields, so no peer can add authorship by mistake.
//! * **Content-addressed ids.** Without author and sequence number the default message id
//!   would be the same for every message, so [`message_id`] (SHA-256 of the payload) is the
//!   `message_id_fn`. Consequence: publishing the *same bytes* twice within the duplicate
//!   cache time (60 s) fails with [`gossipsub::PublishError::Duplicate`], and the network
//!   delivers them once. Encrypted payloads with fresh nonces never collide.
//! * **Application validation.** `validate_messages()` is on: gossipsub neither forwards nor
//!   forgets a received message until the owning event loop calls
//!   [`gossipsub::Behaviour::report_message_validation_result`] with the `message_id` and
//!   `propagation_source` of the [`gossipsub::Event::Message`]. **The caller MUST report
//!   every message** (`Accept` to forward it, `Reject` to penalise the sender, `Ignore` to
//!   drop it quietly); an unreported message is never forwarded to the rest of the room.
//! * **Size.** [`MAX_GOSSIP`] is gossipsub's `max_transmit_size`. It bounds the *whole*
//!   protobuf frame on receive (payload plus topic and framing, a few dozen bytes), while
//!   `publish` only checks the payload; keep payloads at least 1 KiB below [`MAX_GOSSIP`] or
//!   the receivers drop them.
//! * **Mesh sized for rooms.** A room has at most 8 members, so a node has at most 7 room
//!   peers on a topic, and every one of them should be in the mesh: the brief records that a
//!   shrunken mesh (`mesh_n_low` 1, `mesh_outbound_min` 0) silently lost a third of the
//!   deliveries for good. So `mesh_n` = [`MESH_N`] = 7 (graft every room peer), `mesh_n_low`
//!   = [`MESH_N_LOW`] = 7 too (a mesh missing any room peer is refilled at the next heartbeat,
//!   and a newly subscribed peer is grafted at once; with a lower value two peers can stay
//!   out of each other's mesh indefinitely), `mesh_n_high` = [`MESH_N_HIGH`] = 12 (never
//!   prune within a room, with head room for transient duplicates), and `mesh_outbound_min`
//!   = [`MESH_OUTBOUND_MIN`] = 2 (the gossipsub default; it must be at most `mesh_n / 2`).
//!   gossipsub 0.50's `ConfigBuilder::build` only validates mesh parameters of topics given a
//!   per-topic transmit size, so these constants are checked at compile time here instead.
//!   Flood publishing is on: a node's own messages go directly to every subscribed peer, not
//!   just to its mesh. Gossip alone is still not delivery; the room layer must sync.
//! * **Heartbeat** from [`NetConfig::heartbeat`], also used as the initial heartbeat delay
//!   (the default 5 s delay would leave the mesh empty for 5 s after start).
//!
//! # Connections
//!
//! Room members keep their connections open: the idle timeout is
//! [`NetConfig::idle_timeout`] (one hour by default instead of libp2p's 10 s). gossipsub
//! only keeps a connection alive while the peer is in a mesh, so without this a peer that
//! is connected but not (yet) meshed, or only used for the join handshake, would be
//! dropped after 10 s of silence. The node closes strangers' connections much sooner
//! (`crate::strangers::STRANGER_IDLE`).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io,
    ops::{Deref, DerefMut},
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use either::Either;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, Transport, autonat,
    core::{
        Endpoint,
        multiaddr::Protocol,
        transport::{DialOpts, ListenerId, PortUse, TransportError, TransportEvent},
        upgrade,
    },
    dcutr, gossipsub, identify, identity, noise, ping, relay, request_response,
    swarm::{
        CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour,
        NotifyHandler, SwarmEvent, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
        behaviour::{ConnectionClosed, ConnectionEstablished, toggle::Toggle},
        dummy,
    },
    tcp, yamux,
};
use sha2::{Digest, Sha256};

use crate::strangers::{self, Admission, Peers};

/// How long [`listen_all`] waits for more addresses once every listener has one.
const LISTEN_SETTLE: Duration = Duration::from_millis(50);

/// Why [`listen_all`] failed: the address(es) concerned and the reason.
#[derive(Debug)]
pub(crate) struct ListenFailure {
    pub(crate) addr: String,
    pub(crate) reason: String,
}

/// The TCP port of a direct address (`/ip4|ip6/ADDR/tcp/PORT`, nothing after), if it is one.
pub fn tcp_port(addr: &Multiaddr) -> Option<u16> {
    let mut parts = addr.iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Protocol::Ip4(_) | Protocol::Ip6(_)), Some(Protocol::Tcp(port)), None) => Some(port),
        _ => None,
    }
}

/// For `/ip4|ip6/ADDR/tcp/PORT` with a fixed port: whether a plain bind (without
/// `SO_REUSEPORT`) succeeds, i.e. nothing else listens there.
fn port_is_free(addr: &Multiaddr) -> Result<(), ListenFailure> {
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    let (Some(Protocol::Tcp(port)), None) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    if port == 0 {
        return Ok(());
    }
    match std::net::TcpListener::bind((ip, port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(ListenFailure {
            addr: addr.to_string(),
            reason: "the port is already in use (is another node or relay running on it?)".into(),
        }),
        // Anything else (no such address here, ...) is for libp2p to report.
        Err(_) => Ok(()),
    }
}

/// Listens on every address and returns the addresses the swarm then listens on: the first
/// of each listener, and any more reported within [`LISTEN_SETTLE`] after (an unspecified
/// address such as `0.0.0.0` yields one address per interface, reported one by one). Other
/// swarm events meanwhile are dropped; call it before anything else uses the swarm.
///
/// A fixed TCP port another process already listens on is refused first: libp2p's TCP
/// listeners set `SO_REUSEPORT` (for hole punching), so a second node or relay on the same
/// port would otherwise start, and the kernel would share incoming connections between
/// the two.
pub(crate) async fn listen_all<B: NetworkBehaviour>(
    swarm: &mut Swarm<B>,
    addrs: &[Multiaddr],
) -> Result<Vec<Multiaddr>, ListenFailure> {
    for addr in addrs {
        port_is_free(addr)?;
    }
    let mut waiting = Vec::new();
    for addr in addrs {
        let id = swarm.listen_on(addr.clone()).map_err(|e| ListenFailure {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        waiting.push(id);
    }
    let mut found = Vec::new();
    loop {
        let event = if waiting.is_empty() {
            match tokio::time::timeout(LISTEN_SETTLE, swarm.select_next_some()).await {
                Ok(event) => event,
                Err(_) => return Ok(found),
            }
        } else {
            swarm.select_next_some().await
        };
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                waiting.retain(|l| *l != listener_id);
                found.push(address);
            }
            SwarmEvent::ListenerError { error, .. }
            | SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            } => {
                return Err(ListenFailure {
                    addr: addrs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    reason: error.to_string(),
                });
            }
            _ => {}
        }
    }
}

/// The join handshake's request-response protocol.
pub const JOIN_PROTOCOL: StreamProtocol = StreamProtocol::new("/confer/join/1");

/// The protocol on which members exchange operations, reconciliation summaries, wants and
/// envelopes directly (a `SyncPush` request, a `SyncReply` response; see `crate::sync`),
/// framed by [`FrameCodec`] like [`JOIN_PROTOCOL`].
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/confer/sync/4");

/// The Confer version: which Confer nodes understand each other. It changes whenever
/// nodes start sending what older ones cannot read (0.2.0: messages padded, which nodes
/// of 0.1.0 refuse; 0.3.0: [`SYNC_PROTOCOL`] 4, which nodes of 0.2.0 do not speak, so
/// catch-up and delivery confirmations stop between the two). Members' nodes tell each
/// other theirs over the sync protocol (see `crate::sync::SyncPush::addresses`), and a
/// node tells its person which members' nodes run another (`MemberInfo::other_version`).
/// Nodes before 0.3.0 announced it through identify, where a node still reads it.
pub const CONFER_VERSION: &str = "/confer/0.3.0";

/// The protocol version identify announces to every peer: the value go-libp2p and
/// js-libp2p announce by default, so that it does not tell a Confer node from others.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "ipfs/0.1.0";

/// The agent identify announces to every peer: the library's name, no version.
pub const IDENTIFY_AGENT: &str = "libp2p";

/// Largest sync request, in bytes (excluding the 4-byte length prefix).
pub const MAX_REQUEST: usize = 64 * 1024;

/// Largest join request, in bytes (excluding the 4-byte length prefix): a join request
/// holds keys, a short name and a signature, and every stranger can send one.
pub const MAX_JOIN_REQUEST: usize = confer_room::invite::MAX_JOIN_REQUEST;

/// Most join streams open at once on one connection: a joiner asks once and waits, so
/// this is for retries crossing answers; a stranger holds at most this many join
/// requests ([`MAX_JOIN_REQUEST`] bytes each) on a connection.
pub const MAX_JOIN_STREAMS: usize = 8;

/// Largest sync response, in bytes (excluding the 4-byte length prefix).
pub const MAX_RESPONSE: usize = 1024 * 1024;

/// gossipsub's `max_transmit_size`: the largest gossipsub frame accepted, in bytes. The
/// payload must be somewhat smaller (see the module documentation).
pub const MAX_GOSSIP: usize = 256 * 1024;

/// gossipsub `mesh_n`: the target mesh size, every room peer (at most 7).
pub const MESH_N: usize = 7;
/// gossipsub `mesh_n_low`: below this the mesh is refilled up to [`MESH_N`].
pub const MESH_N_LOW: usize = 7;
/// gossipsub `mesh_n_high`: above this the mesh is pruned down to [`MESH_N`].
pub const MESH_N_HIGH: usize = 12;
/// gossipsub `mesh_outbound_min`: outbound peers kept in the mesh.
pub const MESH_OUTBOUND_MIN: usize = 2;

// The constraints gossipsub documents but does not check for the default mesh parameters.
const _: () = assert!(
    MESH_OUTBOUND_MIN <= MESH_N_LOW
        && MESH_N_LOW <= MESH_N
        && MESH_N <= MESH_N_HIGH
        && MESH_OUTBOUND_MIN * 2 <= MESH_N
);

/// How often a connection is pinged. A peer whose network silently drops (a cable pulled,
/// a laptop lid closed) keeps its TCP connection "open" for many minutes; the node closes a
/// connection after two failed pings (ping reports the second consecutive failure), so a
/// dead member is noticed within about `2 × (PING_INTERVAL + PING_TIMEOUT)`, its relay slot
/// is freed and it is redialled (and caught up) when it returns.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may take before it counts as failed.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The ping behaviour, as the node and the relay use it.
pub fn ping_behaviour() -> ping::Behaviour {
    ping::Behaviour::new(
        ping::Config::new()
            .with_interval(PING_INTERVAL)
            .with_timeout(PING_TIMEOUT),
    )
}

/// Tunable network parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// gossipsub heartbeat interval (mesh maintenance and gossip).
    pub heartbeat: Duration,
    /// How long a connection with no active stream is kept open.
    pub idle_timeout: Duration,
    /// AutoNAT: how long after start the first reachability probe is made.
    pub autonat_delay: Duration,
    /// AutoNAT: only ask peers at global IP addresses, and only answer them (off in tests,
    /// where everything is on private or loopback addresses).
    pub autonat_global_only: bool,
    /// How often a node reconciles with every connected member of each room (its log,
    /// its message summary, and its messages no other member has confirmed yet), besides
    /// when a member connects or subscribes. Tests shorten it to watch several rounds.
    pub sync_interval: Duration,
    /// How recently accepted a room envelope must be to be handed to a member whose
    /// subscription the node has just seen: gossip did not route it to that member, which
    /// may have subscribed a moment after it was published. Anything older it gets by
    /// reconciliation, asking only for what it lacks, rather than every member sending a
    /// reconnecting member the room's latest envelopes whether it holds them or not.
    pub recent_window: Duration,
    /// The Confer version this node tells members' nodes: [`CONFER_VERSION`]. Only tests
    /// change it, to play a node of another version.
    pub protocol_version: &'static str,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60 * 60),
            autonat_delay: Duration::from_secs(15),
            autonat_global_only: true,
            sync_interval: Duration::from_secs(15),
            recent_window: Duration::from_secs(10),
            protocol_version: CONFER_VERSION,
        }
    }
}

impl NetConfig {
    /// A configuration for tests: a 100 ms heartbeat so meshes form quickly, and AutoNAT
    /// probing soon after start and across private addresses.
    pub fn for_tests() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            autonat_delay: Duration::from_secs(1),
            autonat_global_only: false,
            ..Self::default()
        }
    }
}

/// Which direct (non-relayed) connections the node's TCP transport may dial. Cloning
/// shares the policy: the node adds relays it learns about at run time.
#[derive(Debug, Clone, Default)]
pub struct DialPolicy(Arc<RwLock<PolicyState>>);

#[derive(Debug, Default)]
struct PolicyState {
    relay_only: bool,
    relays: Vec<Multiaddr>,
}

/// The part of an address that names a host and port: everything before the first
/// `/p2p/…` or `/p2p-circuit`.
pub fn transport_part(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .take_while(|p| !matches!(p, Protocol::P2p(_) | Protocol::P2pCircuit))
        .collect()
}

/// The relay part of a relayed address (`<relay>/p2p/<relay id>` before `/p2p-circuit`),
/// if `addr` is a relayed address naming its relay's peer id.
pub fn relay_of(addr: &Multiaddr) -> Option<Multiaddr> {
    let mut relay = Multiaddr::empty();
    let mut named = false;
    for p in addr.iter() {
        match p {
            Protocol::P2pCircuit => return named.then_some(relay),
            Protocol::P2p(_) => {
                named = true;
                relay.push(p);
            }
            p => relay.push(p),
        }
    }
    None
}

impl DialPolicy {
    /// Any address may be dialled.
    pub fn open() -> Self {
        Self::default()
    }

    /// Only the given relays may be dialled directly; everything else must go through them.
    pub fn relay_only(relays: impl IntoIterator<Item = Multiaddr>) -> Self {
        let policy = Self(Arc::new(RwLock::new(PolicyState {
            relay_only: true,
            relays: Vec::new(),
        })));
        for relay in relays {
            policy.allow_relay(&relay);
        }
        policy
    }

    /// Whether the node is in relay-only mode.
    pub fn is_relay_only(&self) -> bool {
        self.0.read().map(|s| s.relay_only).unwrap_or(true)
    }

    /// Allows direct dials to this relay (its host and port).
    pub fn allow_relay(&self, relay: &Multiaddr) {
        let part = transport_part(relay);
        if let Ok(mut state) = self.0.write()
            && !part.is_empty()
            && !state.relays.contains(&part)
        {
            state.relays.push(part);
        }
    }

    /// Forbids direct dials to this relay again (one learned for a join that failed).
    pub fn forbid_relay(&self, relay: &Multiaddr) {
        let part = transport_part(relay);
        if let Ok(mut state) = self.0.write() {
            state.relays.retain(|r| *r != part);
        }
    }

    /// Whether the TCP transport may dial `addr` directly. Relayed addresses are never
    /// dialled by the TCP transport itself (the relay transport handles them). A poisoned
    /// lock refuses everything: failing closed keeps a relay-only node's address private.
    pub fn allows(&self, addr: &Multiaddr) -> bool {
        let Ok(state) = self.0.read() else {
            return false;
        };
        !state.relay_only || state.relays.contains(&transport_part(addr))
    }
}

/// A transport that dials only what its [`DialPolicy`] allows (listening is unaffected).
/// Wrapping the TCP transport itself, below every behaviour, makes relay-only mode hold
/// whatever asks for a dial: identify's address cache, request-response, gossipsub, a
/// redial, or a peer that hands us its addresses.
#[derive(Debug)]
pub struct GatedTransport<T> {
    inner: T,
    policy: DialPolicy,
}

impl<T> GatedTransport<T> {
    /// Wraps `inner` under `policy`.
    pub fn new(inner: T, policy: DialPolicy) -> Self {
        Self { inner, policy }
    }
}

impl<T: Transport + Unpin> Transport for GatedTransport<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        if !self.policy.allows(&addr) {
            tracing::debug!("relay-only mode: refusing a direct dial");
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        self.inner.dial(addr, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

/// Why a swarm could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The noise handshake configuration could not be created from the keypair.
    #[error("noise configuration: {0}")]
    Noise(#[from] noise::Error),
    /// The gossipsub configuration was rejected.
    #[error("gossipsub configuration: {0}")]
    GossipsubConfig(#[from] gossipsub::ConfigBuilderError),
    /// The gossipsub behaviour could not be created.
    #[error("gossipsub: {0}")]
    Gossipsub(&'static str),
    /// Peer scoring could not be enabled.
    #[error("gossipsub peer scoring: {0}")]
    PeerScore(String),
}

/// Which peers may take part in which gossip topics: for each of the node's room topics,
/// the peers of that room's members. Cloning shares it; the node updates it whenever a
/// room's membership or topics change.
#[derive(Debug, Clone, Default)]
pub struct TopicGate(Arc<Mutex<GateState>>);

#[derive(Debug, Default)]
struct GateState {
    /// The peer whose gossip is being handled right now (see [`RoomGossip`]).
    current: Option<PeerId>,
    /// Room topics and the peers allowed on each.
    members: HashMap<gossipsub::TopicHash, HashSet<PeerId>>,
    /// Subscriptions refused, for when their peer is admitted later.
    refused: HashSet<(PeerId, gossipsub::TopicHash)>,
}

/// Most refused subscriptions remembered (a peer is only re-admitted through them).
const MAX_REFUSED: usize = 4096;

impl TopicGate {
    /// Sets the peers allowed on a room topic.
    pub fn set_topic(&self, topic: gossipsub::TopicHash, peers: HashSet<PeerId>) {
        if let Ok(mut state) = self.0.lock() {
            state.members.insert(topic, peers);
        }
    }

    /// Forgets a topic the node left.
    pub fn remove_topic(&self, topic: &gossipsub::TopicHash) {
        if let Ok(mut state) = self.0.lock() {
            state.members.remove(topic);
            state.refused.retain(|(_, t)| t != topic);
        }
    }

    /// Whether `peer` may take part in `topic`: topics that are not the node's own are
    /// not gated (nothing of the node's is ever sent on them).
    pub fn allows(&self, peer: &PeerId, topic: &gossipsub::TopicHash) -> bool {
        self.0.lock().is_ok_and(|s| {
            s.members
                .get(topic)
                .is_none_or(|peers| peers.contains(peer))
        })
    }

    /// Forgets the subscriptions of `peer` that were refused, so that it is not
    /// reconnected for them when it is admitted (see [`TopicGate::take_admitted`]).
    pub fn forget_refused(&self, peer: &PeerId) {
        if let Ok(mut state) = self.0.lock() {
            state.refused.retain(|(p, _)| p != peer);
        }
    }

    /// Peers whose subscription was refused on a topic that now allows them: their
    /// subscription must be heard again (gossipsub hears a peer's subscriptions only when
    /// they change and on each new connection).
    pub fn take_admitted(&self) -> Vec<PeerId> {
        let Ok(mut state) = self.0.lock() else {
            return Vec::new();
        };
        let GateState {
            members, refused, ..
        } = &mut *state;
        let mut admitted = Vec::new();
        refused.retain(|(peer, topic)| {
            let now_allowed = members.get(topic).is_some_and(|p| p.contains(peer));
            if now_allowed && !admitted.contains(peer) {
                admitted.push(*peer);
            }
            !now_allowed
        });
        admitted
    }

    fn set_current(&self, peer: Option<PeerId>) {
        if let Ok(mut state) = self.0.lock() {
            state.current = peer;
        }
    }
}

/// gossipsub's subscription filter, consulted for every subscription a peer announces
/// and for the node's own (`current` is `None` then: always allowed).
#[derive(Debug)]
pub struct GateFilter(TopicGate);

impl gossipsub::TopicSubscriptionFilter for GateFilter {
    fn can_subscribe(&mut self, topic: &gossipsub::TopicHash) -> bool {
        let Ok(mut state) = self.0.0.lock() else {
            return false;
        };
        let Some(peer) = state.current else {
            return true;
        };
        let allowed = state
            .members
            .get(topic)
            .is_none_or(|peers| peers.contains(&peer));
        if !allowed && state.refused.len() < MAX_REFUSED {
            state.refused.insert((peer, topic.clone()));
        }
        allowed
    }
}

/// The gossipsub behaviour used by the node.
type Gossip = gossipsub::Behaviour<gossipsub::IdentityTransform, GateFilter>;

/// Which peers a [`Gated`] behaviour runs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admits {
    /// Members of the node's rooms and facilitators it is joining through
    /// ([`Peers::is_member`]).
    Members,
    /// Those, and every peer the rooms' logs name ([`Peers::is_acquainted`]).
    Acquainted,
    /// Members, and the relays the node keeps a slot on ([`Peers::is_member_or_relay`]).
    MembersAndRelays,
}

/// A behaviour that runs only on connections to peers the node recognises when the
/// connection is established (see [`Admits`]); on every other connection its place is
/// taken by a handler that does nothing and offers no protocol, so the peer can neither
/// open the behaviour's streams nor receive anything from it, and the behaviour never
/// learns of the connection. It dereferences to the behaviour.
pub struct Gated<B: NetworkBehaviour> {
    inner: B,
    peers: Peers,
    admits: Admits,
    /// The connections the behaviour runs on, by peer.
    handled: HashMap<PeerId, Vec<ConnectionId>>,
}

impl<B: NetworkBehaviour> std::fmt::Debug for Gated<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gated")
            .field("admits", &self.admits)
            .finish_non_exhaustive()
    }
}

impl<B: NetworkBehaviour> Gated<B> {
    /// `inner`, run for the peers `peers` says `admits`.
    pub fn new(inner: B, peers: Peers, admits: Admits) -> Self {
        Self {
            inner,
            peers,
            admits,
            handled: HashMap::new(),
        }
    }

    fn admits(&self, peer: &PeerId) -> bool {
        match self.admits {
            Admits::Members => self.peers.is_member(peer),
            Admits::Acquainted => self.peers.is_acquainted(peer),
            Admits::MembersAndRelays => self.peers.is_member_or_relay(peer),
        }
    }

    /// Whether the behaviour runs on this connection.
    pub fn handles(&self, peer: &PeerId, connection: &ConnectionId) -> bool {
        self.handled
            .get(peer)
            .is_some_and(|conns| conns.contains(connection))
    }

    /// The peers the behaviour runs for that the node no longer recognises.
    pub fn unrecognised(&self) -> Vec<PeerId> {
        self.handled
            .keys()
            .filter(|peer| !self.admits(peer))
            .copied()
            .collect()
    }

    fn handle(&mut self, peer: PeerId, connection: ConnectionId) {
        self.handled.entry(peer).or_default().push(connection);
    }

    /// Forgets a connection; returns how many of the peer's remain handled, or `None` if
    /// this one was not.
    fn unhandle(&mut self, peer: &PeerId, connection: &ConnectionId) -> Option<usize> {
        let conns = self.handled.get_mut(peer)?;
        let at = conns.iter().position(|c| c == connection)?;
        conns.remove(at);
        let left = conns.len();
        if left == 0 {
            self.handled.remove(peer);
        }
        Some(left)
    }

    /// Forgets a connection that never became established (refused by a behaviour after
    /// this one).
    fn forget(&mut self, connection: &ConnectionId) {
        let peer = self
            .handled
            .iter()
            .find(|(_, conns)| conns.contains(connection))
            .map(|(peer, _)| *peer);
        if let Some(peer) = peer {
            self.unhandle(&peer, connection);
        }
    }
}

impl<B: NetworkBehaviour> Deref for Gated<B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.inner
    }
}

impl<B: NetworkBehaviour> DerefMut for Gated<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Gated<B> {
    type ConnectionHandler = Either<THandler<B>, dummy::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.admits(&peer) {
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        let handler = self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )?;
        self.handle(peer, connection_id);
        Ok(Either::Left(handler))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.admits(&peer) {
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        let handler = self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )?;
        self.handle(peer, connection_id);
        Ok(Either::Left(handler))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        // The behaviour is told only of its own connections, counted among themselves.
        match event {
            FromSwarm::ConnectionEstablished(established) => {
                let Some(conns) = self.handled.get(&established.peer_id) else {
                    return;
                };
                if !conns.contains(&established.connection_id) {
                    return;
                }
                let other_established = conns.len().saturating_sub(1);
                self.inner.on_swarm_event(FromSwarm::ConnectionEstablished(
                    ConnectionEstablished {
                        other_established,
                        ..established
                    },
                ));
            }
            FromSwarm::ConnectionClosed(closed) => {
                let Some(remaining_established) =
                    self.unhandle(&closed.peer_id, &closed.connection_id)
                else {
                    return;
                };
                self.inner
                    .on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                        remaining_established,
                        ..closed
                    }));
            }
            FromSwarm::AddressChange(change) => {
                if self.handles(&change.peer_id, &change.connection_id) {
                    self.inner.on_swarm_event(event);
                }
            }
            FromSwarm::ListenFailure(failure) => {
                self.forget(&failure.connection_id);
                self.inner.on_swarm_event(event);
            }
            FromSwarm::DialFailure(failure) => {
                self.forget(&failure.connection_id);
                self.inner.on_swarm_event(event);
            }
            other => self.inner.on_swarm_event(other),
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(event) => {
                self.inner
                    .on_connection_handler_event(peer_id, connection_id, event)
            }
            Either::Right(never) => match never {},
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            let event = match self.inner.poll(cx) {
                Poll::Ready(event) => event,
                Poll::Pending => return Poll::Pending,
            };
            let event = match event {
                // A handler of the behaviour's own, never the stand-in on a stranger's
                // connection.
                ToSwarm::NotifyHandler {
                    peer_id,
                    handler: NotifyHandler::Any,
                    event,
                } => {
                    let Some(&connection) = self.handled.get(&peer_id).and_then(|c| c.first())
                    else {
                        continue;
                    };
                    ToSwarm::NotifyHandler {
                        peer_id,
                        handler: NotifyHandler::One(connection),
                        event: Either::Left(event),
                    }
                }
                other => other.map_in(Either::Left),
            };
            return Poll::Ready(event);
        }
    }
}

/// Most connections [`RoomGossip`] has decided to close but not yet handed to the swarm.
const MAX_GOSSIP_CLOSING: usize = strangers::MAX_ESTABLISHED;

/// gossipsub, between members only and gated per room.
///
/// It runs only on connections to members ([`Gated`], [`Admits::Members`]): gossipsub
/// announces the node's topics only to the peers it knows, so a stranger never learns one.
/// And a peer's subscription to a room's topic is only recorded if the peer is a member of
/// that room ([`TopicGate`]). gossipsub sends a topic's messages (flood publishing, mesh
/// forwarding, gossip) only to peers it has recorded as subscribed, and accepts a GRAFT
/// only from them, so a peer that is not a member of the room (a member of another room
/// that learned the opaque topic name) receives none of its traffic.
///
/// A member that is no longer one ([`Self::refresh`]) is blacklisted (gossipsub drops its
/// messages), and the node closes its connections once its last pushes to it are answered
/// ([`Self::disconnect`]). gossipsub's `subscribe` announces a topic to every peer it
/// knows, blacklisted or not, so while such a peer is still connected a new topic is held
/// back, and taken up once it has gone.
///
/// gossipsub's subscription filter does not say whose subscription it is looking at, so
/// this wrapper tells the filter (through the shared gate) which peer's event is being
/// handled, around the one synchronous call that handles it. Everything else is passed
/// through unchanged; it dereferences to the gossipsub behaviour.
pub struct RoomGossip {
    inner: Gated<Gossip>,
    gate: TopicGate,
    /// Topics subscribed to while a peer no longer recognised was still connected.
    held_back: Vec<gossipsub::IdentTopic>,
    /// Peers this wrapper blacklisted.
    blacklisted: HashSet<PeerId>,
    /// Connections to close (peers no longer recognised).
    closing: VecDeque<(PeerId, ConnectionId)>,
}

impl std::fmt::Debug for RoomGossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomGossip").finish_non_exhaustive()
    }
}

impl RoomGossip {
    /// The gate (shared with the node).
    pub fn gate(&self) -> &TopicGate {
        &self.gate
    }

    /// Whether gossip runs on this connection.
    pub fn handles(&self, peer: &PeerId, connection: &ConnectionId) -> bool {
        self.inner.handles(peer, connection)
    }

    /// Subscribes to `topic`, or, while a peer the node no longer recognises is still
    /// connected to gossip (it would be told the topic), as soon as it has gone.
    pub fn subscribe(
        &mut self,
        topic: &gossipsub::IdentTopic,
    ) -> Result<bool, gossipsub::SubscriptionError> {
        let unrecognised = self.inner.unrecognised();
        if unrecognised.is_empty() {
            return self.inner.subscribe(topic);
        }
        if self.held_back.iter().any(|t| t.hash() == topic.hash()) {
            return Ok(false);
        }
        tracing::debug!(
            ?unrecognised,
            "a new topic waits until former peers have gone"
        );
        self.held_back.push(topic.clone());
        Ok(true)
    }

    /// Unsubscribes from `topic` (or forgets it, if held back).
    pub fn unsubscribe(&mut self, topic: &gossipsub::IdentTopic) -> bool {
        let before = self.held_back.len();
        self.held_back.retain(|t| t.hash() != topic.hash());
        before != self.held_back.len() || self.inner.unsubscribe(topic)
    }

    /// Follows a change in the peers the node recognises: a peer gossip runs for that is
    /// no longer a member is blacklisted (gossipsub drops what it sends); one recognised
    /// again is taken off the blacklist. The node disconnects the former
    /// ([`Self::former_members`], [`Self::disconnect`]).
    pub fn refresh(&mut self) {
        let gone = self.inner.unrecognised();
        let back: Vec<PeerId> = self
            .blacklisted
            .iter()
            .filter(|p| !gone.contains(p))
            .copied()
            .collect();
        for peer in back {
            self.blacklisted.remove(&peer);
            self.inner.remove_blacklisted_peer(&peer);
        }
        for peer in gone {
            if self.blacklisted.insert(peer) {
                self.inner.blacklist_peer(&peer);
            }
        }
    }

    /// The peers gossip runs for that the node no longer recognises: new topics wait
    /// until they have gone ([`Self::subscribe`]).
    pub fn former_members(&self) -> Vec<PeerId> {
        self.inner.unrecognised()
    }

    /// Closes every connection of `peer` that gossip runs on.
    pub fn disconnect(&mut self, peer: &PeerId) {
        let conns = self.inner.handled.get(peer).cloned().unwrap_or_default();
        for connection in conns {
            if self.closing.len() < MAX_GOSSIP_CLOSING
                && !self.closing.contains(&(*peer, connection))
            {
                self.closing.push_back((*peer, connection));
            }
        }
    }

    /// After a connection closed: forgets a peer gone for good, and takes up the topics
    /// held back once no peer the node no longer recognises is connected.
    fn after_close(&mut self, peer: &PeerId) {
        if !self.inner.handled.contains_key(peer) && self.blacklisted.remove(peer) {
            self.inner.remove_blacklisted_peer(peer);
        }
        if self.held_back.is_empty() || !self.inner.unrecognised().is_empty() {
            return;
        }
        tracing::debug!("taking up the topics held back");
        for topic in std::mem::take(&mut self.held_back) {
            if let Err(e) = self.inner.subscribe(&topic) {
                tracing::warn!("could not subscribe to a room topic: {e}");
            }
        }
    }
}

impl Deref for RoomGossip {
    type Target = Gossip;
    fn deref(&self) -> &Gossip {
        &self.inner.inner
    }
}

impl DerefMut for RoomGossip {
    fn deref_mut(&mut self) -> &mut Gossip {
        &mut self.inner.inner
    }
}

impl NetworkBehaviour for RoomGossip {
    type ConnectionHandler = <Gated<Gossip> as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = <Gossip as NetworkBehaviour>::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        let closed = match &event {
            FromSwarm::ConnectionClosed(closed) => Some(closed.peer_id),
            _ => None,
        };
        self.inner.on_swarm_event(event);
        if let Some(peer) = closed {
            self.after_close(&peer);
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.gate.set_current(Some(peer_id));
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
        self.gate.set_current(None);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some((peer_id, connection)) = self.closing.pop_front() {
            return Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(connection),
            });
        }
        self.inner.poll(cx)
    }
}

/// The sync protocol's behaviour: request-response, run only for acquainted peers.
pub type Sync = Gated<request_response::Behaviour<FrameCodec>>;

/// The node's libp2p behaviour. Its events are [`BehaviourEvent`]s, one variant per field
/// (`Admission`, `Gossipsub`, `Join`, `Sync`, `Identify`, `Ping`, `RelayClient`, `Dcutr`,
/// `Autonat`).
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Connection admission (it emits no events). First: libp2p asks the behaviours about
    /// a new connection in field order, and the ones before a denial have already taken the
    /// connection into their books (request-response then routes requests to a connection
    /// that never runs).
    pub admission: Admission,
    /// Room traffic, between members and gated per room (see the module documentation;
    /// every received message MUST be reported).
    pub gossipsub: RoomGossip,
    /// The join handshake on [`JOIN_PROTOCOL`].
    pub join: request_response::Behaviour<FrameCodec>,
    /// What members push to each other on [`SYNC_PROTOCOL`].
    pub sync: Sync,
    /// Exchange of protocol lists and observed addresses.
    pub identify: identify::Behaviour,
    /// Liveness checks.
    pub ping: ping::Behaviour,
    /// Reservations on relays and connections through them.
    pub relay_client: relay::client::Behaviour,
    /// Hole punching over relayed connections to members (off in relay-only mode).
    pub dcutr: Toggle<Gated<dcutr::Behaviour>>,
    /// Reachability probes, as client and server, with members and the node's relays (off
    /// in relay-only mode).
    pub autonat: Toggle<Gated<autonat::Behaviour>>,
}

impl Behaviour {
    /// The peers the node recognises (shared with the node, which keeps it up to date).
    pub fn peers(&self) -> &Peers {
        self.admission.peers()
    }
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour").finish_non_exhaustive()
    }
}

/// The gossipsub message id: the SHA-256 hash of the payload.
pub fn message_id(data: &[u8]) -> gossipsub::MessageId {
    gossipsub::MessageId::new(Sha256::digest(data).as_slice())
}

fn gossipsub_config(config: &NetConfig) -> Result<gossipsub::Config, NetError> {
    let built = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .message_id_fn(|message: &gossipsub::Message| message_id(&message.data))
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP)
        .heartbeat_interval(config.heartbeat)
        .heartbeat_initial_delay(config.heartbeat)
        .mesh_n(MESH_N)
        .mesh_n_low(MESH_N_LOW)
        .mesh_n_high(MESH_N_HIGH)
        .mesh_outbound_min(MESH_OUTBOUND_MIN)
        .flood_publish(true)
        .build()?;
    Ok(built)
}

/// Concurrent sync streams allowed per connection.
pub const MAX_SYNC_STREAMS: usize = 200;

/// How long a sync push may take, sent and answered. A node has up to 32 pushes of up to
/// [`MAX_REQUEST`] (2 MiB together) in flight to a member, sharing the link: over a slow
/// one (a busy relay, a poor mobile connection) the last is answered long after it was
/// sent. With libp2p's default of 10 s, a catch-up over a link slower than about 200 KB/s
/// had its answers dropped and was sent again and again. At 120 s, about 17 KB/s carries
/// a full window in time; a connection that dies ends its pushes at once regardless.
pub const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The score an application gives a peer that is not a member of any of its rooms: far
/// below gossipsub's graylist threshold (-80), so the node ignores everything the peer
/// sends on gossip and neither publishes nor forwards anything to it. Gossip runs only
/// for members ([`RoomGossip`]); this covers a member that has just ceased to be one,
/// until its connection has closed.
pub const STRANGER_SCORE: f64 = -1000.0;

/// Peer scoring is used only as a gate: the application score (weight 1) says whether a
/// peer is a member of some room here (0) or a stranger ([`STRANGER_SCORE`]). IP
/// colocation is not penalised: members may share an organisation's NAT, and tests share
/// 127.0.0.1.
fn peer_score_params() -> gossipsub::PeerScoreParams {
    gossipsub::PeerScoreParams {
        app_specific_weight: 1.0,
        ip_colocation_factor_weight: 0.0,
        ..gossipsub::PeerScoreParams::default()
    }
}

/// Builds a swarm listening nowhere yet (call [`Swarm::listen_on`]) with the node's
/// [`Behaviour`] over TCP + noise + yamux (dialling only what `policy` allows) and over
/// relay circuits.
pub fn build_swarm(
    keypair: identity::Keypair,
    config: &NetConfig,
    policy: DialPolicy,
) -> Result<Swarm<Behaviour>, NetError> {
    let local = keypair.public().to_peer_id();
    let relay_only = policy.is_relay_only();
    let gate = TopicGate::default();
    let peers = Peers::default();
    let mut gossipsub = Gossip::new_with_subscription_filter(
        gossipsub::MessageAuthenticity::Anonymous,
        gossipsub_config(config)?,
        GateFilter(gate.clone()),
    )
    .map_err(NetError::Gossipsub)?;
    gossipsub
        .with_peer_score(
            peer_score_params(),
            gossipsub::PeerScoreThresholds::default(),
        )
        .map_err(NetError::PeerScore)?;
    let join = request_response::Behaviour::with_codec(
        FrameCodec::join(),
        [(JOIN_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default().with_max_concurrent_streams(MAX_JOIN_STREAMS),
    );
    // Catching up on a long absence takes many pushes at once (each at most MAX_REQUEST);
    // the default of 100 concurrent streams per connection dropped the excess. Kept below
    // yamux's own stream limit (256); pacing the pushes is the real fix.
    let sync = request_response::Behaviour::with_codec(
        FrameCodec::sync(),
        [(SYNC_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_max_concurrent_streams(MAX_SYNC_STREAMS)
            .with_request_timeout(SYNC_TIMEOUT),
    );
    // Every peer, stranger or member, is told the same generic version and agent and no
    // listening address (every interface's: LAN, VPN, containers).
    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_owned(), keypair.public())
            .with_agent_version(IDENTIFY_AGENT.to_owned())
            .with_hide_listen_addrs(true),
    );
    // AutoNAT asks a peer to dial the node back at every address it listens on: only
    // members and the node's relays are asked, or answered. DCUtR tells a peer where to
    // punch through: members only.
    let autonat = (!relay_only).then(|| {
        let autonat = autonat::Behaviour::new(
            local,
            autonat::Config {
                boot_delay: config.autonat_delay,
                only_global_ips: config.autonat_global_only,
                ..autonat::Config::default()
            },
        );
        Gated::new(autonat, peers.clone(), Admits::MembersAndRelays)
    });
    let dcutr = (!relay_only)
        .then(|| Gated::new(dcutr::Behaviour::new(local), peers.clone(), Admits::Members));
    let idle_timeout = config.idle_timeout;
    let noise = noise::Config::new(&keypair)?;
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|_| {
            GatedTransport::new(tcp::tokio::Transport::new(tcp::Config::default()), policy)
                .upgrade(upgrade::Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux::Config::default())
        })
        .unwrap_or_else(|never| match never {})
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        .with_behaviour(|_, relay_client| Behaviour {
            admission: Admission::new(peers.clone()),
            gossipsub: RoomGossip {
                inner: Gated::new(gossipsub, peers.clone(), Admits::Members),
                gate,
                held_back: Vec::new(),
                blacklisted: HashSet::new(),
                closing: VecDeque::new(),
            },
            join,
            sync: Gated::new(sync, peers, Admits::Acquainted),
            identify,
            ping: ping_behaviour(),
            relay_client,
            dcutr: dcutr.into(),
            autonat: autonat.into(),
        })
        .unwrap_or_else(|never| match never {})
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
        .build();
    Ok(swarm)
}

/// The codec of the join and sync protocols: each request and each response is opaque
/// bytes, framed as a `u32` big-endian length followed by that many bytes.
///
/// Reading rejects a length above the protocol's largest request ([`FrameCodec::join`]:
/// [`MAX_JOIN_REQUEST`]; [`FrameCodec::sync`]: [`MAX_REQUEST`]) or [`MAX_RESPONSE`] with
/// [`io::ErrorKind::InvalidData`] before allocating anything for the body, and the body
/// buffer grows only as bytes actually arrive; a stream that ends early yields
/// [`io::ErrorKind::UnexpectedEof`]. Writing refuses (with [`io::ErrorKind::InvalidInput`])
/// a message the peer would reject. Bytes after the frame are ignored.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_request: usize,
    max_response: usize,
}

impl FrameCodec {
    /// The join protocol's: requests of at most [`MAX_JOIN_REQUEST`] bytes, answers (a
    /// welcome holds the whole room) of at most
    /// [`confer_room::invite::MAX_JOIN_RESPONSE`].
    pub const fn join() -> FrameCodec {
        FrameCodec {
            max_request: MAX_JOIN_REQUEST,
            max_response: confer_room::invite::MAX_JOIN_RESPONSE,
        }
    }

    /// The sync protocol's: requests of at most [`MAX_REQUEST`] bytes, answers of at most
    /// [`MAX_RESPONSE`].
    pub const fn sync() -> FrameCodec {
        FrameCodec {
            max_request: MAX_REQUEST,
            max_response: MAX_RESPONSE,
        }
    }
}

async fn read_frame<T>(io: &mut T, max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut header = [0u8; 4];
    io.read_exact(&mut header).await?;
    let len = u32::from_be_bytes(header);
    let len = usize::try_from(len)
        .ok()
        .filter(|len| *len <= max)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes exceeds the limit of {max}"),
            )
        })?;
    let mut body = Vec::new();
    // `len <= max <= u32::MAX`, so the conversion is lossless.
    io.take(len as u64).read_to_end(&mut body).await?;
    if body.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame truncated: {} of {len} bytes", body.len()),
        ));
    }
    Ok(body)
}

async fn write_frame<T>(io: &mut T, data: &[u8], max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    let len = u32::try_from(data.len())
        .ok()
        .filter(|_| data.len() <= max)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("frame of {} bytes exceeds the limit of {max}", data.len()),
            )
        })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_request).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_response).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request, self.max_request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response, self.max_response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("valid multiaddr")
    }

    const RELAY_ID: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    const PEER_ID: &str = "12D3KooWGy3gBPXGHyP8kALn7YgjMXKaAGMVpA12dcagtZeyCzWW";

    #[test]
    fn the_relay_of_a_relayed_address_is_its_part_before_the_circuit() {
        let relayed = addr(&format!(
            "/ip4/203.0.113.5/tcp/4001/p2p/{RELAY_ID}/p2p-circuit/p2p/{PEER_ID}"
        ));
        assert_eq!(
            relay_of(&relayed),
            Some(addr(&format!("/ip4/203.0.113.5/tcp/4001/p2p/{RELAY_ID}")))
        );
        assert_eq!(transport_part(&relayed), addr("/ip4/203.0.113.5/tcp/4001"));
        // Not relayed, or a circuit without a named relay.
        assert_eq!(relay_of(&addr("/ip4/203.0.113.5/tcp/4001")), None);
        assert_eq!(
            relay_of(&addr(&format!(
                "/ip4/203.0.113.5/tcp/4001/p2p-circuit/p2p/{PEER_ID}"
            ))),
            None
        );
    }

    #[tokio::test]
    async fn listening_on_every_interface_reports_every_interface() {
        let mut swarm = build_swarm(
            identity::Keypair::generate_ed25519(),
            &NetConfig::for_tests(),
            DialPolicy::open(),
        )
        .expect("swarm builds");
        let found = listen_all(&mut swarm, &[addr("/ip4/0.0.0.0/tcp/0")])
            .await
            .expect("listens");
        // Loopback is always there; with only the first address (as before) a machine whose
        // first reported interface is another one would lose it.
        assert!(
            found
                .iter()
                .any(|a| a.to_string().starts_with("/ip4/127.0.0.1/")),
            "{found:?}"
        );
        let ports: HashSet<Option<u16>> = found
            .iter()
            .map(|a| {
                a.iter().find_map(|p| match p {
                    Protocol::Tcp(port) => Some(port),
                    _ => None,
                })
            })
            .collect();
        assert_eq!(ports.len(), 1, "one listener, one port: {found:?}");
        let error = listen_all(&mut swarm, &[addr("/ip4/127.0.0.1/tcp/1/ws")]).await;
        assert!(error.is_err(), "an address no transport serves is refused");
    }

    #[tokio::test]
    async fn a_port_another_swarm_listens_on_is_refused() {
        let swarm = || {
            build_swarm(
                identity::Keypair::generate_ed25519(),
                &NetConfig::for_tests(),
                DialPolicy::open(),
            )
            .expect("swarm builds")
        };
        let mut first = swarm();
        let found = listen_all(&mut first, &[addr("/ip4/127.0.0.1/tcp/0")])
            .await
            .expect("listens");
        // Without the check this succeeds: both listeners set SO_REUSEPORT.
        let mut second = swarm();
        let error = listen_all(&mut second, &found)
            .await
            .expect_err("the port is taken");
        assert!(error.reason.contains("already in use"), "{error:?}");
        assert_eq!(error.addr, found[0].to_string());
    }

    #[test]
    fn the_gate_refuses_non_members_on_room_topics_and_remembers_them_for_admission() {
        use gossipsub::TopicSubscriptionFilter;
        let gate = TopicGate::default();
        let mut filter = GateFilter(gate.clone());
        let topic = gossipsub::IdentTopic::new("confer-room").hash();
        let other = gossipsub::IdentTopic::new("someone-elses").hash();
        let (member, outsider) = (PeerId::random(), PeerId::random());
        gate.set_topic(topic.clone(), [member].into_iter().collect());

        // Our own subscriptions (no current peer) are always allowed.
        assert!(filter.can_subscribe(&topic));
        gate.set_current(Some(member));
        assert!(filter.can_subscribe(&topic));
        gate.set_current(Some(outsider));
        assert!(!filter.can_subscribe(&topic));
        // Topics that are not ours are not gated.
        assert!(filter.can_subscribe(&other));
        gate.set_current(None);
        assert!(gate.take_admitted().is_empty());

        // Once the outsider is admitted, it is reported once, to be heard again.
        gate.set_topic(topic.clone(), [member, outsider].into_iter().collect());
        assert_eq!(gate.take_admitted(), vec![outsider]);
        assert!(gate.take_admitted().is_empty());
        assert!(gate.allows(&outsider, &topic));

        // A refusal forgotten (the joiner whose welcome is on its way) is not reported.
        let joiner = PeerId::random();
        gate.set_current(Some(joiner));
        assert!(!filter.can_subscribe(&topic));
        gate.set_current(None);
        gate.forget_refused(&joiner);
        gate.set_topic(
            topic.clone(),
            [member, outsider, joiner].into_iter().collect(),
        );
        assert!(gate.take_admitted().is_empty());

        gate.remove_topic(&topic);
        assert!(gate.allows(&PeerId::random(), &topic));
    }

    #[test]
    fn an_open_policy_allows_everything_and_relay_only_only_its_relays() {
        let member = addr(&format!("/ip4/198.51.100.7/tcp/5000/p2p/{PEER_ID}"));
        assert!(DialPolicy::open().allows(&member));
        let policy =
            DialPolicy::relay_only([addr(&format!("/ip4/203.0.113.5/tcp/4001/p2p/{RELAY_ID}"))]);
        assert!(policy.is_relay_only());
        assert!(!policy.allows(&member));
        assert!(policy.allows(&addr("/ip4/203.0.113.5/tcp/4001")));
        assert!(!policy.allows(&addr("/ip4/203.0.113.5/tcp/4002")));
        // A relay learned later is allowed from then on, through every clone.
        let shared = policy.clone();
        shared.allow_relay(&addr("/ip4/198.51.100.7/tcp/5000"));
        assert!(policy.allows(&member));
    }
}
