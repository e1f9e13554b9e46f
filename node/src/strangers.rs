//! Strangers on the network: peers that are members of none of the node's rooms.
//!
//! Anyone with a libp2p client can connect to a node. This module decides what such a
//! peer gets, as pure functions of the node's connections, the peers it recognises and
//! the time, so each rule is tested without sockets:
//!
//! * [`Peers`] is what the node recognises: the *members* (of a room this node is in, or
//!   the facilitator of a join in progress), who take part in gossip, and the
//!   *acquainted* (those, and anyone a room's log names, such as a former member), who may
//!   use the sync protocol. Everyone else is a stranger. `crate::net` consults it when a
//!   connection is established: a stranger's connection gets neither gossip nor sync.
//! * [`Connections`] decides which connections are admitted ([`Admission`] is its
//!   libp2p shell): caps per peer, per host and per network, and a reserve for members
//!   (strangers hold at most [`MAX_STRANGERS`] of the [`MAX_ESTABLISHED`] connections;
//!   the oldest is closed to make room for a newer one).
//! * [`idle_strangers`] picks the connections to close because a stranger has held them
//!   for [`STRANGER_IDLE`] (the event loop asks once a second).
//! * [`reconnections`] picks the connections of peers recognised since they were
//!   established: they lack gossip or sync, so the peer is connected to again and they
//!   are closed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use libp2p::core::{Endpoint, multiaddr::Protocol, transport::PortUse};
use libp2p::swarm::{
    CloseConnection, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure,
    NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Most connections to one peer (two allows a simultaneous dial in both directions).
pub const MAX_CONNECTIONS_PER_PEER: usize = 2;
/// Most incoming connections still in their handshake.
pub const MAX_PENDING_INCOMING: usize = 32;
/// Most incoming connections from one host still in their handshake (before the handshake
/// nobody is known: a member behind the same address as a flood waits for a slot). Half
/// of [`MAX_PENDING_INCOMING`]: eight people behind one NAT redeeming invites at once dial
/// one or two addresses each.
pub const MAX_PENDING_PER_HOST: usize = 16;
/// Most established connections in total (a node may be in many rooms).
pub const MAX_ESTABLISHED: usize = 256;
/// Most connections strangers hold at once: the other 192 of [`MAX_ESTABLISHED`] are
/// kept for members. A stranger's connection beyond this closes the oldest one, so a
/// flood cannot keep out a person redeeming an invite for longer than it keeps dialling.
pub const MAX_STRANGERS: usize = 64;
/// Most connections strangers hold from one host (one IPv4 address, or one IPv6 /64).
/// Eight lets a handful of people behind one NAT redeem invites at the same time.
pub const MAX_STRANGERS_PER_HOST: usize = 8;
/// Most connections strangers hold from one network (an IPv4 /24, or an IPv6 /48), and
/// through relays altogether.
pub const MAX_STRANGERS_PER_NETWORK: usize = 16;
/// How long a stranger may stay connected: long enough to redeem an invite (one
/// request and its answer) or, for a former member, to be told of its departure.
pub const STRANGER_IDLE: Duration = Duration::from_secs(5);

/// How long a peer that has ceased to be a member (it left, or was removed) keeps its
/// connection while the node's last pushes to it (its departure) are on the way. The
/// node takes up the room's new topic only once it has gone.
pub const FORMER_MEMBER_GRACE: Duration = Duration::from_secs(3);

/// How long after answering a join request the node leaves the joiner's connection
/// alone. The joiner reconnects itself once it has read the answer: closing the
/// connection sooner could cut the answer off.
pub const JOINER_GRACE: Duration = Duration::from_secs(5);

/// The peers a node recognises. Cloning shares it: the event loop writes it whenever a
/// membership or a join changes, and the swarm's behaviours read it as connections are
/// established. A poisoned lock recognises nobody (a stranger gets nothing).
#[derive(Debug, Clone, Default)]
pub struct Peers(Arc<RwLock<Recognised>>);

#[derive(Debug, Default)]
struct Recognised {
    /// Members of the node's rooms and facilitators of joins in progress: gossip.
    members: HashSet<PeerId>,
    /// `members`, and every peer a room's log names: the sync protocol.
    acquainted: HashSet<PeerId>,
    /// The relays the node keeps a slot on.
    relays: HashSet<PeerId>,
}

impl Peers {
    /// Replaces the sets (`members` is added to `acquainted`).
    pub fn set(
        &self,
        members: HashSet<PeerId>,
        mut acquainted: HashSet<PeerId>,
        relays: HashSet<PeerId>,
    ) {
        acquainted.extend(members.iter().copied());
        if let Ok(mut state) = self.0.write() {
            *state = Recognised {
                members,
                acquainted,
                relays,
            };
        }
    }

    /// Recognises one more peer as a member (a stack other than the node's: tests).
    pub fn recognise(&self, peer: PeerId) {
        if let Ok(mut state) = self.0.write() {
            state.members.insert(peer);
            state.acquainted.insert(peer);
        }
    }

    /// Whether `peer` takes part in gossip.
    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.0.read().is_ok_and(|s| s.members.contains(peer))
    }

    /// Whether `peer` may use the sync protocol and is spared the caps on strangers.
    pub fn is_acquainted(&self, peer: &PeerId) -> bool {
        self.0.read().is_ok_and(|s| s.acquainted.contains(peer))
    }

    /// Whether `peer` is a member or a relay the node keeps a slot on: the peers asked,
    /// and answered, about the node's reachability (AutoNAT tells the peer it asks every
    /// address the node listens on).
    pub fn is_member_or_relay(&self, peer: &PeerId) -> bool {
        self.0
            .read()
            .is_ok_and(|s| s.members.contains(peer) || s.relays.contains(peer))
    }
}

/// The host a connection comes from, for the per-host cap: an IPv4 address, or an IPv6
/// /64 (the prefix of one network segment: a single host picks addresses in it at will,
/// so capping single IPv6 addresses would cap nothing). `None`: through a relay.
fn host_of(ip: Option<IpAddr>) -> Option<IpAddr> {
    ip.map(|ip| match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !(u128::MAX >> 64)).into()),
    })
}

/// The network a connection comes from, for the per-network cap: an IPv4 /24 (one
/// subnet, what a single machine or small office can easily use), or an IPv6 /48 (one
/// site's allocation: the next boundary a single customer controls). `None`: through a
/// relay.
fn network_of(ip: Option<IpAddr>) -> Option<IpAddr> {
    ip.map(|ip| match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & !(u32::MAX >> 24)).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !(u128::MAX >> 48)).into()),
    })
}

/// The IP address a connection's remote address starts with; `None` for a relayed
/// connection (its remote address names the relay and the circuit, or only the peer).
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => Some(ip.into()),
        Some(Protocol::Ip6(ip)) => Some(ip.into()),
        _ => None,
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Too many connections to this peer.
    #[error("too many connections to this peer")]
    PerPeer,
    /// Too many connections altogether.
    #[error("too many connections")]
    Total,
    /// Too many handshakes under way.
    #[error("too many incoming handshakes")]
    Pending,
    /// Too many handshakes under way from this host.
    #[error("too many incoming handshakes from this host")]
    PendingFromHost,
    /// Too many strangers' connections from this host.
    #[error("too many connections from this host")]
    StrangersFromHost,
    /// Too many strangers' connections from this network.
    #[error("too many connections from this network")]
    StrangersFromNetwork,
}

/// What to do with a newly established connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it.
    Accept,
    /// Keep it, and close this stranger's connection (the oldest) to make room.
    AcceptClosing(PeerId, ConnectionId),
    /// Refuse it.
    Deny(Refusal),
}

/// One established connection, as admission sees it.
#[derive(Debug, Clone, Copy)]
struct Established {
    peer: PeerId,
    ip: Option<IpAddr>,
    /// Inbound from a peer that was not acquainted when it was established. A stranger
    /// recognised since no longer counts as one (see [`Connections::strangers`]).
    stranger: bool,
    since: Instant,
}

/// The node's connections as admission sees them, and its decisions.
#[derive(Debug, Default)]
pub struct Connections {
    /// Incoming connections still in their handshake, by the IP they come from.
    pending: HashMap<ConnectionId, Option<IpAddr>>,
    established: HashMap<ConnectionId, Established>,
}

impl Connections {
    /// Whether another incoming handshake from `ip` may start.
    pub fn pending_inbound(&self, ip: Option<IpAddr>) -> Result<(), Refusal> {
        if self.pending.len() >= MAX_PENDING_INCOMING {
            return Err(Refusal::Pending);
        }
        let host = host_of(ip);
        if host.is_some()
            && self
                .pending
                .values()
                .filter(|i| host_of(**i) == host)
                .count()
                >= MAX_PENDING_PER_HOST
        {
            return Err(Refusal::PendingFromHost);
        }
        Ok(())
    }

    /// Records an incoming handshake that started.
    pub fn add_pending(&mut self, id: ConnectionId, ip: Option<IpAddr>) {
        self.pending.insert(id, ip);
    }

    /// Forgets an incoming handshake that ended (established or failed).
    pub fn end_pending(&mut self, id: ConnectionId) {
        self.pending.remove(&id);
    }

    /// Connections held by peers that are still strangers, oldest first.
    fn strangers<'a>(
        &'a self,
        acquainted: &'a impl Fn(&PeerId) -> bool,
    ) -> impl Iterator<Item = (&'a ConnectionId, &'a Established)> {
        self.established
            .iter()
            .filter(move |(_, c)| c.stranger && !acquainted(&c.peer))
    }

    /// Decides on a connection to `peer` that has just been established: `inbound` if the
    /// peer dialled, from `ip` (`None` through a relay). A connection this node dialled
    /// is never a stranger's: it chose the peer.
    pub fn decide(
        &self,
        peer: PeerId,
        ip: Option<IpAddr>,
        inbound: bool,
        acquainted: &impl Fn(&PeerId) -> bool,
    ) -> Verdict {
        let to_peer = self.established.values().filter(|c| c.peer == peer).count();
        if to_peer >= MAX_CONNECTIONS_PER_PEER {
            return Verdict::Deny(Refusal::PerPeer);
        }
        let oldest_stranger = self
            .strangers(acquainted)
            .min_by_key(|(id, c)| (c.since, **id))
            .map(|(id, c)| (c.peer, *id));
        let stranger = inbound && !acquainted(&peer);
        if self.established.len() >= MAX_ESTABLISHED {
            return match oldest_stranger {
                Some((p, id)) if !stranger => Verdict::AcceptClosing(p, id),
                _ => Verdict::Deny(Refusal::Total),
            };
        }
        if !stranger {
            return Verdict::Accept;
        }
        let (host, network) = (host_of(ip), network_of(ip));
        let (mut from_host, mut from_network, mut all) = (0, 0, 0);
        for (_, c) in self.strangers(acquainted) {
            all += 1;
            from_host += usize::from(host_of(c.ip) == host);
            from_network += usize::from(network_of(c.ip) == network);
        }
        // Through relays: one bucket, capped as a network.
        if host.is_some() && from_host >= MAX_STRANGERS_PER_HOST {
            return Verdict::Deny(Refusal::StrangersFromHost);
        }
        if from_network >= MAX_STRANGERS_PER_NETWORK {
            return Verdict::Deny(Refusal::StrangersFromNetwork);
        }
        match oldest_stranger {
            Some((p, id)) if all >= MAX_STRANGERS => Verdict::AcceptClosing(p, id),
            _ => Verdict::Accept,
        }
    }

    /// Records an established connection (see [`Self::decide`] for the arguments).
    pub fn add(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        ip: Option<IpAddr>,
        stranger: bool,
        now: Instant,
    ) {
        self.established.insert(
            id,
            Established {
                peer,
                ip,
                stranger,
                since: now,
            },
        );
    }

    /// Forgets a closed connection.
    pub fn remove(&mut self, id: ConnectionId) {
        self.established.remove(&id);
    }
}

/// The connections to close because a stranger has held them for [`STRANGER_IDLE`]:
/// each is `(connection, peer, established at)`; `welcome` says which peers are not
/// strangers now (members, a join in progress, a relay in use).
pub fn idle_strangers(
    connections: impl IntoIterator<Item = (ConnectionId, PeerId, Instant)>,
    welcome: impl Fn(&PeerId) -> bool,
    now: Instant,
) -> Vec<ConnectionId> {
    connections
        .into_iter()
        .filter(|(_, peer, since)| {
            now.saturating_duration_since(*since) >= STRANGER_IDLE && !welcome(peer)
        })
        .map(|(id, _, _)| id)
        .collect()
}

/// One connection, for [`reconnections`]: its peer, and whether gossip and sync run on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carries {
    /// The connection.
    pub id: ConnectionId,
    /// The peer.
    pub peer: PeerId,
    /// Gossip runs on it.
    pub gossip: bool,
    /// The sync protocol runs on it.
    pub sync: bool,
}

/// What to do about a peer recognised since its connection was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Close this connection: another to the same peer carries what it lacks.
    Close(ConnectionId),
    /// No connection to this peer carries gossip (a member) or sync (an acquainted peer):
    /// connect to it again, then close the old ones.
    Replace(PeerId),
}

/// The connections that lack gossip (to a member) or sync (to an acquainted peer)
/// because the peer was recognised after they were established, and what to do about
/// them. Peers that are `busy` (a joiner reading its answer on that connection) wait.
pub fn reconnections(
    connections: impl IntoIterator<Item = Carries>,
    peers: &Peers,
    busy: impl Fn(&PeerId) -> bool,
) -> Vec<Reconnect> {
    let mut by_peer: Vec<(PeerId, Vec<Carries>)> = Vec::new();
    for c in connections {
        match by_peer.iter_mut().find(|(p, _)| *p == c.peer) {
            Some((_, conns)) => conns.push(c),
            None => by_peer.push((c.peer, vec![c])),
        }
    }
    let mut actions = Vec::new();
    for (peer, conns) in by_peer {
        if busy(&peer) {
            continue;
        }
        let (gossip, sync) = (peers.is_member(&peer), peers.is_acquainted(&peer));
        let lacks = |c: &Carries| (gossip && !c.gossip) || (sync && !c.sync);
        let (lacking, complete): (Vec<&Carries>, Vec<&Carries>) =
            conns.iter().partition(|c| lacks(c));
        if lacking.is_empty() {
            continue;
        }
        if complete.is_empty() {
            actions.push(Reconnect::Replace(peer));
        } else {
            actions.extend(lacking.iter().map(|c| Reconnect::Close(c.id)));
        }
    }
    actions
}

/// Most connections [`Admission`] has decided to close but not yet handed to the swarm.
const MAX_CLOSING: usize = MAX_ESTABLISHED;

/// The libp2p behaviour that applies [`Connections`]' decisions. It must come first in
/// the node's behaviour: libp2p asks the behaviours about a new connection in field
/// order, and those asked before a denial have already taken the connection in.
#[derive(Debug)]
pub struct Admission {
    connections: Connections,
    peers: Peers,
    closing: VecDeque<(PeerId, ConnectionId)>,
    waker: Option<Waker>,
}

impl Admission {
    /// Admission for a node that recognises `peers`.
    pub fn new(peers: Peers) -> Self {
        Self {
            connections: Connections::default(),
            peers,
            closing: VecDeque::new(),
            waker: None,
        }
    }

    /// The peers the node recognises (shared).
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    fn apply(&mut self, verdict: Verdict) -> Result<(), ConnectionDenied> {
        match verdict {
            Verdict::Accept => Ok(()),
            Verdict::AcceptClosing(peer, id) => {
                tracing::debug!(%peer, "closing a stranger's connection to make room");
                if self.closing.len() < MAX_CLOSING {
                    self.closing.push_back((peer, id));
                }
                if let Some(waker) = self.waker.take() {
                    waker.wake();
                }
                Ok(())
            }
            Verdict::Deny(refusal) => {
                tracing::debug!("refused a connection: {refusal}");
                Err(ConnectionDenied::new(refusal))
            }
        }
    }
}

impl NetworkBehaviour for Admission {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let ip = ip_of(remote_addr);
        self.connections
            .pending_inbound(ip)
            .map_err(ConnectionDenied::new)?;
        self.connections.add_pending(connection_id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.connections.end_pending(connection_id);
        let peers = self.peers.clone();
        let acquainted = |p: &PeerId| peers.is_acquainted(p);
        let ip = ip_of(remote_addr);
        let verdict = self.connections.decide(peer, ip, true, &acquainted);
        self.apply(verdict)?;
        let stranger = !acquainted(&peer);
        self.connections
            .add(connection_id, peer, ip, stranger, Instant::now());
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let peers = self.peers.clone();
        let acquainted = |p: &PeerId| peers.is_acquainted(p);
        let ip = ip_of(addr);
        let verdict = self.connections.decide(peer, ip, false, &acquainted);
        self.apply(verdict)?;
        self.connections
            .add(connection_id, peer, ip, false, Instant::now());
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.connections.remove(connection_id);
            }
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                // A handshake that failed, or a connection a later behaviour refused.
                self.connections.end_pending(connection_id);
                self.connections.remove(connection_id);
            }
            FromSwarm::DialFailure(failure) => {
                self.connections.remove(failure.connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some((peer_id, id)) = self.closing.pop_front() {
            return Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(id),
            });
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("an IP address"))
    }

    fn nobody(_: &PeerId) -> bool {
        false
    }

    /// `n` strangers' connections from `from`, a second apart after `t0`.
    fn strangers(c: &mut Connections, n: usize, from: &str, t0: Instant) -> Vec<ConnectionId> {
        (0..n)
            .map(|i| {
                let id = ConnectionId::new_unchecked(c.established.len() + 1);
                c.add(
                    id,
                    PeerId::random(),
                    ip(from),
                    true,
                    t0 + Duration::from_secs(i as u64),
                );
                id
            })
            .collect()
    }

    #[test]
    fn strangers_are_capped_per_host_and_per_network() {
        let mut c = Connections::default();
        let t0 = Instant::now();
        strangers(&mut c, MAX_STRANGERS_PER_HOST, "198.51.100.7", t0);
        let next =
            |c: &Connections, from: &str| c.decide(PeerId::random(), ip(from), true, &nobody);
        assert_eq!(
            next(&c, "198.51.100.7"),
            Verdict::Deny(Refusal::StrangersFromHost)
        );
        // Another host of the same /24 still gets in, up to the network's cap.
        assert_eq!(next(&c, "198.51.100.8"), Verdict::Accept);
        strangers(
            &mut c,
            MAX_STRANGERS_PER_NETWORK - MAX_STRANGERS_PER_HOST,
            "198.51.100.8",
            t0,
        );
        assert_eq!(
            next(&c, "198.51.100.9"),
            Verdict::Deny(Refusal::StrangersFromNetwork)
        );
        assert_eq!(next(&c, "203.0.113.1"), Verdict::Accept);
        // IPv6: one /64 is one host, one /48 one network.
        let mut c = Connections::default();
        strangers(&mut c, MAX_STRANGERS_PER_HOST, "2001:db8:1:1::1", t0);
        assert_eq!(
            next(&c, "2001:db8:1:1::ffff"),
            Verdict::Deny(Refusal::StrangersFromHost)
        );
        assert_eq!(next(&c, "2001:db8:1:2::1"), Verdict::Accept);
    }

    #[test]
    fn members_and_our_own_dials_skip_the_caps_on_strangers() {
        let mut c = Connections::default();
        let t0 = Instant::now();
        strangers(&mut c, MAX_STRANGERS_PER_HOST, "127.0.0.1", t0);
        let member = PeerId::random();
        let is_member = |p: &PeerId| *p == member;
        assert_eq!(
            c.decide(member, ip("127.0.0.1"), true, &is_member),
            Verdict::Accept
        );
        // A connection this node dialled, to anyone.
        assert_eq!(
            c.decide(PeerId::random(), ip("127.0.0.1"), false, &nobody),
            Verdict::Accept
        );
        // A stranger recognised since no longer counts against its host.
        let recognised = c.established.values().next().map(|e| e.peer);
        let is_recognised = |p: &PeerId| Some(*p) == recognised;
        assert_eq!(
            c.decide(PeerId::random(), ip("127.0.0.1"), true, &is_recognised),
            Verdict::Accept
        );
    }

    #[test]
    fn a_full_house_of_strangers_makes_room_from_the_oldest() {
        let mut c = Connections::default();
        let t0 = Instant::now();
        let mut ids = Vec::new();
        // From many networks, so no per-host or per-network cap applies.
        for n in 0..MAX_STRANGERS {
            ids.extend(strangers(
                &mut c,
                1,
                &format!("10.{n}.0.1"),
                t0 + Duration::from_secs(n as u64),
            ));
        }
        let oldest = ids[0];
        let oldest_peer = c.established[&oldest].peer;
        assert_eq!(
            c.decide(PeerId::random(), ip("192.0.2.1"), true, &nobody),
            Verdict::AcceptClosing(oldest_peer, oldest)
        );
        // Members fill the rest; when everything is taken, a member still gets in, in
        // place of the oldest stranger, and a stranger does not.
        for n in 0..(MAX_ESTABLISHED - MAX_STRANGERS) {
            c.add(
                ConnectionId::new_unchecked(10_000 + n),
                PeerId::random(),
                ip("192.0.2.2"),
                false,
                t0,
            );
        }
        assert_eq!(
            c.decide(PeerId::random(), ip("192.0.2.3"), false, &nobody),
            Verdict::AcceptClosing(oldest_peer, oldest)
        );
        assert_eq!(
            c.decide(PeerId::random(), ip("192.0.2.4"), true, &nobody),
            Verdict::Deny(Refusal::Total)
        );
    }

    #[test]
    fn a_peer_has_at_most_two_connections_and_handshakes_are_capped_per_host() {
        let mut c = Connections::default();
        let peer = PeerId::random();
        let t0 = Instant::now();
        for n in 0..MAX_CONNECTIONS_PER_PEER {
            c.add(
                ConnectionId::new_unchecked(n),
                peer,
                ip("192.0.2.1"),
                false,
                t0,
            );
        }
        assert_eq!(
            c.decide(peer, ip("192.0.2.1"), false, &|_| true),
            Verdict::Deny(Refusal::PerPeer)
        );
        for n in 0..MAX_PENDING_PER_HOST {
            c.add_pending(ConnectionId::new_unchecked(100 + n), ip("192.0.2.1"));
        }
        assert_eq!(
            c.pending_inbound(ip("192.0.2.1")),
            Err(Refusal::PendingFromHost)
        );
        assert_eq!(c.pending_inbound(ip("192.0.2.2")), Ok(()));
        c.end_pending(ConnectionId::new_unchecked(100));
        assert_eq!(c.pending_inbound(ip("192.0.2.1")), Ok(()));
    }

    #[test]
    fn strangers_are_dropped_after_the_idle_time_and_nobody_else_is() {
        let t0 = Instant::now();
        let (stranger, member, joining) = (PeerId::random(), PeerId::random(), PeerId::random());
        let conns = [
            (ConnectionId::new_unchecked(1), stranger, t0),
            (ConnectionId::new_unchecked(2), member, t0),
            (ConnectionId::new_unchecked(3), joining, t0),
        ];
        let welcome = |p: &PeerId| *p == member || *p == joining;
        assert!(idle_strangers(conns, welcome, t0 + STRANGER_IDLE / 2).is_empty());
        assert_eq!(
            idle_strangers(conns, welcome, t0 + STRANGER_IDLE),
            vec![ConnectionId::new_unchecked(1)]
        );
    }

    #[test]
    fn peers_recognised_since_they_connected_are_reconnected_unless_busy() {
        let peers = Peers::default();
        let (member, former, stranger, joiner) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        peers.set(
            [member, joiner].into_iter().collect(),
            [former].into_iter().collect(),
            HashSet::new(),
        );
        let conn = |n: usize, peer, gossip, sync| Carries {
            id: ConnectionId::new_unchecked(n),
            peer,
            gossip,
            sync,
        };
        let busy = |p: &PeerId| *p == joiner;
        let conns = [
            conn(1, member, false, false),
            conn(2, former, false, false),
            conn(3, stranger, false, false),
            conn(4, joiner, false, false),
        ];
        assert_eq!(
            reconnections(conns, &peers, busy),
            vec![Reconnect::Replace(member), Reconnect::Replace(former)]
        );
        // A connection that lacks what another to the same peer carries is closed.
        let conns = [conn(1, member, false, false), conn(2, member, true, true)];
        assert_eq!(
            reconnections(conns, &peers, busy),
            vec![Reconnect::Close(ConnectionId::new_unchecked(1))]
        );
        // A former member needs sync, not gossip.
        assert!(reconnections([conn(2, former, false, true)], &peers, busy).is_empty());
        assert!(reconnections([conn(1, member, true, true)], &peers, busy).is_empty());
    }

    #[test]
    fn addresses_fall_into_hosts_and_networks() {
        assert_eq!(host_of(ip("2001:db8:1:1:2:3:4:5")), ip("2001:db8:1:1::"));
        assert_eq!(network_of(ip("2001:db8:1:1:2:3:4:5")), ip("2001:db8:1::"));
        assert_eq!(network_of(ip("198.51.100.7")), ip("198.51.100.0"));
        assert_eq!(host_of(ip("198.51.100.7")), ip("198.51.100.7"));
        let relayed: Multiaddr = "/ip4/203.0.113.5/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit"
            .parse()
            .expect("address");
        assert_eq!(ip_of(&relayed), None);
        let direct: Multiaddr = "/ip4/203.0.113.5/tcp/4001".parse().expect("address");
        assert_eq!(ip_of(&direct), ip("203.0.113.5"));
    }
}
