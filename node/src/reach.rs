//! How the node reaches and is reached by others: its relay reservations, relay-only
//! mode, its NAT status and its open connections. The event loop owns one [`Reach`] and
//! hands it the swarm and the events that concern it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, Swarm, autonat};

use crate::api::{ConnectionInfo, RelayInfo};
use crate::net::{Behaviour, DialPolicy, relay_of};

/// First wait before trying a relay again after a failed or lost reservation.
const RELAY_RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between attempts on one relay.
const RELAY_RETRY_MAX: Duration = Duration::from_secs(60);

/// One relay the node keeps a reservation on.
#[derive(Debug)]
struct Slot {
    /// The relay's peer id (from its address).
    peer: Option<PeerId>,
    /// The listener holding (or asking for) the reservation.
    listener: Option<ListenerId>,
    /// Whether the relay accepted the reservation.
    reserved: bool,
    /// When to try again if there is no listener, and the wait after that.
    retry_at: Instant,
    backoff: Duration,
}

/// The node's reachability state.
#[derive(Debug)]
pub(crate) struct Reach {
    policy: DialPolicy,
    relays: BTreeMap<Multiaddr, Slot>,
    listeners: HashMap<ListenerId, Multiaddr>,
    nat: &'static str,
    connections: HashMap<ConnectionId, (PeerId, Multiaddr, bool)>,
}

/// Whether an address goes through a relay.
pub(crate) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
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
            reach.insert(relay);
        }
        reach
    }

    fn insert(&mut self, relay: Multiaddr) -> bool {
        if self.relays.contains_key(&relay) {
            return false;
        }
        let peer = relay.iter().find_map(|p| match p {
            Protocol::P2p(peer) => Some(peer),
            _ => None,
        });
        self.policy.allow_relay(&relay);
        self.relays.insert(
            relay,
            Slot {
                peer,
                listener: None,
                reserved: false,
                retry_at: Instant::now(),
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

    /// Starts using a relay; true if it is new.
    pub(crate) fn add_relay(&mut self, swarm: &mut Swarm<Behaviour>, relay: Multiaddr) -> bool {
        let added = self.insert(relay);
        if added {
            self.reserve_due(swarm);
        }
        added
    }

    /// The relays in use, as strings (for the settings).
    pub(crate) fn relay_addresses(&self) -> Vec<String> {
        self.relays.keys().map(ToString::to_string).collect()
    }

    /// Asks for a reservation on every relay that has none and whose retry is due.
    pub(crate) fn reserve_due(&mut self, swarm: &mut Swarm<Behaviour>) {
        let now = Instant::now();
        for (relay, slot) in &mut self.relays {
            if slot.listener.is_some() || slot.retry_at > now {
                continue;
            }
            slot.retry_at = now + slot.backoff;
            slot.backoff = (slot.backoff * 2).min(RELAY_RETRY_MAX);
            match swarm.listen_on(relay.clone().with(Protocol::P2pCircuit)) {
                Ok(id) => {
                    slot.listener = Some(id);
                    self.listeners.insert(id, relay.clone());
                }
                Err(e) => tracing::debug!("could not ask a relay for a reservation: {e}"),
            }
        }
    }

    /// Listener ids still waiting for their relay's answer.
    pub(crate) fn pending(&self) -> Vec<ListenerId> {
        self.relays
            .values()
            .filter(|s| !s.reserved)
            .filter_map(|s| s.listener)
            .collect()
    }

    /// A listener got an address: for a relay listener, the reservation is in place.
    pub(crate) fn on_listen_addr(&mut self, listener: ListenerId) {
        if let Some(slot) = self
            .listeners
            .get(&listener)
            .and_then(|relay| self.relays.get_mut(relay))
        {
            slot.reserved = true;
            slot.backoff = RELAY_RETRY_MIN;
        }
    }

    /// The relay client reports an accepted reservation (also on renewals).
    pub(crate) fn on_reservation(&mut self, relay_peer: PeerId) {
        for slot in self.relays.values_mut() {
            if slot.peer == Some(relay_peer) && slot.listener.is_some() {
                slot.reserved = true;
                slot.backoff = RELAY_RETRY_MIN;
            }
        }
    }

    /// A listener closed; for a relay listener the reservation is gone and is asked for
    /// again after the slot's backoff. True if it was a relay listener.
    pub(crate) fn on_listener_closed(&mut self, listener: ListenerId) -> bool {
        let Some(relay) = self.listeners.remove(&listener) else {
            return false;
        };
        if let Some(slot) = self.relays.get_mut(&relay) {
            slot.listener = None;
            slot.reserved = false;
        }
        true
    }

    /// A connection opened.
    pub(crate) fn on_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        endpoint: &ConnectedPoint,
    ) {
        self.connections.insert(
            id,
            (
                peer,
                endpoint.get_remote_address().clone(),
                endpoint.is_relayed(),
            ),
        );
    }

    /// A connection closed.
    pub(crate) fn on_connection_closed(&mut self, id: ConnectionId) {
        self.connections.remove(&id);
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
        if self.relay_only() {
            "not probed (relay-only)".to_owned()
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
                reserved: slot.reserved,
            })
            .collect()
    }

    /// The open connections.
    pub(crate) fn connection_infos(&self) -> Vec<ConnectionInfo> {
        let mut infos: Vec<ConnectionInfo> = self
            .connections
            .values()
            .map(|(peer, address, relayed)| ConnectionInfo {
                peer_id: peer.to_string(),
                address: address.to_string(),
                relayed: *relayed,
            })
            .collect();
        infos.sort_by(|a, b| (&a.peer_id, &a.address).cmp(&(&b.peer_id, &b.address)));
        infos
    }
}
