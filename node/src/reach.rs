//! How the node reaches and is reached by others: its relay reservations, relay-only
//! mode, its NAT status and its open connections. The event loop owns one [`Reach`] and
//! hands it the swarm and the events that concern it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm, autonat};

use crate::api::{ConnectionInfo, RelayInfo};
use crate::net::{Behaviour, DialPolicy, relay_of};

/// First wait before trying a relay again after a failed or lost reservation.
const RELAY_RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between attempts on one relay.
const RELAY_RETRY_MAX: Duration = Duration::from_secs(60);

/// Where a relay slot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing under way; try again at this time.
    Idle(Instant),
    /// Dialling the relay (since then).
    Dialing(Instant),
    /// Asked for a reservation on this listener.
    Reserving(ListenerId),
    /// The relay accepted the reservation made on this listener.
    Reserved(ListenerId),
}

/// One relay the node keeps a reservation on.
#[derive(Debug)]
struct Slot {
    /// The relay's peer id (from its address).
    peer: Option<PeerId>,
    state: State,
    /// The wait after the next failure.
    backoff: Duration,
}

impl Slot {
    fn failed(&mut self) {
        self.state = State::Idle(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(RELAY_RETRY_MAX);
    }
}

/// How long a dial to a relay may take before the slot tries again.
const RELAY_DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// The node's reachability state.
///
/// A reservation is only ever asked for over an established connection to the relay:
/// libp2p's relay client dials the relay itself when it is not connected, and two dials
/// to the same peer at once make one of them fail. So a slot first dials its relay (and
/// its dial comes second to any circuit dial already under way, see
/// [`Reach::add_relay`]), and reserves once connected.
#[derive(Debug)]
pub(crate) struct Reach {
    policy: DialPolicy,
    relays: BTreeMap<Multiaddr, Slot>,
    listeners: HashMap<ListenerId, Multiaddr>,
    nat: &'static str,
    connections: HashMap<ConnectionId, Connection>,
}

/// One open connection.
#[derive(Debug)]
struct Connection {
    peer: PeerId,
    /// The remote address (an inbound relayed one: our circuit address and the peer).
    address: Multiaddr,
    relayed: bool,
    since: Instant,
}

/// Whether an address goes through a relay.
pub(crate) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

impl Reach {
    /// Relay-only or not, with these relays (addresses ending in `/p2p/<relay id>`).
    pub(crate) fn new(relay_only: bool, relays: impl IntoIterator<Item = Multiaddr>) -> Reach {
        let relays: Vec<Multiaddr> = relays.into_iter().collect();
        let policy = if relay_only {
            DialPolicy::relay_only(relays.iter().cloned())
        } else {
            DialPolicy::open()
        };
        let mut reach = Reach {
            policy,
            relays: BTreeMap::new(),
            listeners: HashMap::new(),
            nat: "unknown",
            connections: HashMap::new(),
        };
        for relay in relays {
            reach.insert(relay, Instant::now());
        }
        reach
    }

    fn insert(&mut self, relay: Multiaddr, first_try: Instant) -> bool {
        if self.relays.contains_key(&relay) {
            return false;
        }
        self.policy.allow_relay(&relay);
        self.relays.insert(
            relay.clone(),
            Slot {
                peer: peer_of(&relay),
                state: State::Idle(first_try),
                backoff: RELAY_RETRY_MIN,
            },
        );
        true
    }

    /// The dial policy the swarm's transport was built with.
    pub(crate) fn policy(&self) -> DialPolicy {
        self.policy.clone()
    }

    /// Whether the node is in relay-only mode.
    pub(crate) fn relay_only(&self) -> bool {
        self.policy.is_relay_only()
    }

    /// Whether the node may use `addr` to reach a peer: in relay-only mode only relayed
    /// addresses are.
    pub(crate) fn usable(&self, addr: &Multiaddr) -> bool {
        !self.relay_only() || is_relayed(addr)
    }

    /// The relays of relayed addresses the node has not heard of (e.g. from an invite).
    pub(crate) fn new_relays<'a>(
        &self,
        addrs: impl IntoIterator<Item = &'a Multiaddr>,
    ) -> Vec<Multiaddr> {
        let mut found: Vec<Multiaddr> = Vec::new();
        for relay in addrs.into_iter().filter_map(relay_of) {
            if !self.relays.contains_key(&relay) && !found.contains(&relay) {
                found.push(relay);
            }
        }
        found
    }

    /// Starts using a relay learned at run time; true if it is new. The first attempt
    /// waits a moment, so that a circuit dial through the relay that is about to start
    /// (a join through the facilitator's relayed address) dials the relay first.
    pub(crate) fn add_relay(&mut self, relay: Multiaddr) -> bool {
        self.insert(relay, Instant::now() + RELAY_RETRY_MIN)
    }

    /// Moves every slot on whose time has come: dials relays not connected, reserves on
    /// connected ones, gives up on dials that take too long.
    pub(crate) fn reserve_due(&mut self, swarm: &mut Swarm<Behaviour>) {
        let now = Instant::now();
        let due: Vec<Multiaddr> = self
            .relays
            .iter()
            .filter(|(_, slot)| match slot.state {
                State::Idle(at) => at <= now,
                State::Dialing(since) => now.duration_since(since) > RELAY_DIAL_TIMEOUT,
                State::Reserving(_) | State::Reserved(_) => false,
            })
            .map(|(relay, _)| relay.clone())
            .collect();
        for relay in due {
            let Some(slot) = self.relays.get_mut(&relay) else {
                continue;
            };
            let Some(peer) = slot.peer else {
                continue;
            };
            if swarm.is_connected(&peer) {
                self.reserve(swarm, &relay);
                continue;
            }
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![relay.clone()])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match swarm.dial(opts) {
                Ok(()) => slot.state = State::Dialing(now),
                Err(e) => {
                    tracing::debug!("could not dial a relay: {e}");
                    slot.failed();
                }
            }
        }
    }

    /// Asks a connected relay for a reservation.
    fn reserve(&mut self, swarm: &mut Swarm<Behaviour>, relay: &Multiaddr) {
        let Some(slot) = self.relays.get_mut(relay) else {
            return;
        };
        match swarm.listen_on(relay.clone().with(Protocol::P2pCircuit)) {
            Ok(id) => {
                slot.state = State::Reserving(id);
                self.listeners.insert(id, relay.clone());
            }
            Err(e) => {
                tracing::debug!("could not ask a relay for a reservation: {e}");
                slot.failed();
            }
        }
    }

    /// Whether every relay has either accepted a reservation or failed for now.
    pub(crate) fn settled(&self) -> bool {
        self.relays
            .values()
            .all(|s| matches!(s.state, State::Idle(_) | State::Reserved(_)))
    }

    /// Whether the node can use `addr` now. A relayed address through one of our own
    /// relays waits until we are connected to it (our slot dials it; see the type's
    /// documentation); through another relay, the relay client dials that relay itself.
    /// In relay-only mode the other relay must first be allowed (it is learned from an
    /// invite or configured), or the dial gate refuses it.
    pub(crate) fn ready(&self, swarm: &Swarm<Behaviour>, addr: &Multiaddr) -> bool {
        if !is_relayed(addr) {
            return !self.relay_only();
        }
        let Some(relay) = relay_of(addr) else {
            return false;
        };
        match (self.relays.contains_key(&relay), peer_of(&relay)) {
            (true, Some(peer)) => swarm.is_connected(&peer),
            (true, None) => false,
            (false, _) => !self.relay_only(),
        }
    }

    /// A listener got an address: for a relay listener, the reservation is in place.
    pub(crate) fn on_listen_addr(&mut self, listener: ListenerId) {
        if let Some(slot) = self
            .listeners
            .get(&listener)
            .and_then(|relay| self.relays.get_mut(relay))
        {
            slot.state = State::Reserved(listener);
            slot.backoff = RELAY_RETRY_MIN;
        }
    }

    /// A listener closed; for a relay listener the reservation is gone and is asked for
    /// again after the slot's backoff. True if it was a relay listener.
    pub(crate) fn on_listener_closed(&mut self, listener: ListenerId) -> bool {
        let Some(relay) = self.listeners.remove(&listener) else {
            return false;
        };
        if let Some(slot) = self.relays.get_mut(&relay) {
            slot.failed();
        }
        true
    }

    /// A dial failed; if it was to a relay being dialled, try again later.
    pub(crate) fn on_dial_failed(&mut self, peer: Option<PeerId>) {
        for slot in self.relays.values_mut() {
            if matches!(slot.state, State::Dialing(_)) && slot.peer.is_some() && slot.peer == peer {
                slot.failed();
            }
        }
    }

    /// A connection opened; a relay we were dialling is asked for a reservation at once.
    pub(crate) fn on_connection(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        id: ConnectionId,
        peer: PeerId,
        endpoint: &ConnectedPoint,
    ) {
        // An inbound relayed connection's remote address is only `/p2p/<peer>`; show it as
        // the peer reached through our relay (our circuit address names the relay).
        let address = match endpoint {
            ConnectedPoint::Listener { local_addr, .. } if endpoint.is_relayed() => {
                local_addr.clone().with(Protocol::P2p(peer))
            }
            _ => endpoint.get_remote_address().clone(),
        };
        self.connections.insert(
            id,
            Connection {
                peer,
                address,
                relayed: endpoint.is_relayed(),
                since: Instant::now(),
            },
        );
        if endpoint.is_relayed() {
            return;
        }
        let waiting: Vec<Multiaddr> = self
            .relays
            .iter()
            .filter(|(_, s)| {
                s.peer == Some(peer) && matches!(s.state, State::Idle(_) | State::Dialing(_))
            })
            .map(|(relay, _)| relay.clone())
            .collect();
        for relay in waiting {
            self.reserve(swarm, &relay);
        }
    }

    /// A connection closed.
    pub(crate) fn on_connection_closed(&mut self, id: ConnectionId) {
        self.connections.remove(&id);
    }

    /// The open connections: each one's peer and since when it is open.
    pub(crate) fn connections(&self) -> impl Iterator<Item = (ConnectionId, PeerId, Instant)> {
        self.connections
            .iter()
            .map(|(id, c)| (*id, c.peer, c.since))
    }

    /// The addresses `peer`'s direct connections to this node come from.
    pub(crate) fn remote_addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.connections
            .values()
            .filter(|c| c.peer == *peer && !c.relayed)
            .map(|c| c.address.clone())
            .collect()
    }

    /// The relays the node keeps a slot on.
    pub(crate) fn relay_peers(&self) -> HashSet<PeerId> {
        self.relays.values().filter_map(|s| s.peer).collect()
    }

    /// The relays the node uses: those it keeps a slot on, and those a relayed connection
    /// of it goes through.
    pub(crate) fn relays_in_use(&self) -> HashSet<PeerId> {
        let mut relays = self.relay_peers();
        relays.extend(
            self.connections
                .values()
                .filter(|c| c.relayed)
                .filter_map(|c| relay_of(&c.address).as_ref().and_then(peer_of)),
        );
        relays
    }

    /// Stops using a relay learned at run time: no more reservations, and in relay-only
    /// mode no more direct dials to it. Its connection is closed, which ends a reservation
    /// (removing the listener instead, while a reservation is being answered, panics in
    /// libp2p's relay client), unless a relayed connection goes through it. False if it
    /// was not in use.
    pub(crate) fn drop_relay(&mut self, swarm: &mut Swarm<Behaviour>, relay: &Multiaddr) -> bool {
        let Some(slot) = self.relays.remove(relay) else {
            return false;
        };
        self.listeners.retain(|_, r| r != relay);
        self.policy.forbid_relay(relay);
        if let Some(peer) = slot.peer
            && !self.relays_in_use().contains(&peer)
        {
            let _ = swarm.disconnect_peer_id(peer);
        }
        true
    }

    /// AutoNAT changed its mind.
    pub(crate) fn on_nat(&mut self, status: &autonat::NatStatus) {
        self.nat = match status {
            autonat::NatStatus::Public(_) => "public",
            autonat::NatStatus::Private => "private",
            autonat::NatStatus::Unknown => "unknown",
        };
    }

    /// The NAT status, as `confer status` shows it.
    pub(crate) fn nat(&self) -> String {
        // Relay-only nodes do not probe (it would reveal their address): always unknown.
        if self.relay_only() {
            "unknown".to_owned()
        } else {
            self.nat.to_owned()
        }
    }

    /// The relays and whether each holds a reservation.
    pub(crate) fn relay_infos(&self) -> Vec<RelayInfo> {
        self.relays
            .iter()
            .map(|(address, slot)| RelayInfo {
                address: address.to_string(),
                reserved: matches!(slot.state, State::Reserved(_)),
            })
            .collect()
    }

    /// The open connections.
    pub(crate) fn connection_infos(&self) -> Vec<ConnectionInfo> {
        let mut infos: Vec<ConnectionInfo> = self
            .connections
            .values()
            .map(|c| ConnectionInfo {
                peer_id: c.peer.to_string(),
                address: c.address.to_string(),
                relayed: c.relayed,
            })
            .collect();
        infos.sort_by(|a, b| (&a.peer_id, &a.address).cmp(&(&b.peer_id, &b.address)));
        infos
    }
}
