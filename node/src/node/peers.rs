//! Which peers the node recognises, and what becomes of the others (the rules are in
//! `crate::strangers`; this turns them into IO).

use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};

use super::*;
use crate::strangers::{self, Carries, Reconnect};

/// How long a replacement connection may take before the old ones are closed anyway.
const REPLACE_TIMEOUT: Duration = Duration::from_secs(30);

/// The peers gossip runs for (the other members of the rooms this profile is in, and the
/// facilitators it is joining through, named by peer id bytes), and those the sync
/// protocol runs for (also everyone else a room's log names: former members, the members
/// of a room this profile left).
pub(super) fn recognised<'a>(
    rooms: impl IntoIterator<Item = &'a Room>,
    me: PeerId,
    facilitators: impl IntoIterator<Item = &'a [u8]>,
) -> (HashSet<PeerId>, HashSet<PeerId>) {
    let peer = |bytes: &[u8]| PeerId::from_bytes(bytes).ok().filter(|p| *p != me);
    let mut members = HashSet::new();
    let mut acquainted = HashSet::new();
    for room in rooms {
        let state = room.log().state();
        let current = state.members().into_iter().filter_map(|m| peer(&m.peer));
        if room.is_member() {
            members.extend(current);
        } else {
            acquainted.extend(current);
        }
        acquainted.extend(state.former_members().filter_map(|m| peer(&m.peer)));
    }
    members.extend(facilitators.into_iter().filter_map(peer));
    (members, acquainted)
}

impl EventLoop {
    /// Whether `peer` is a member of one of our rooms (or of one we left whose members
    /// have not heard it yet), or the facilitator of a join in progress: not a stranger.
    pub(super) fn known_peer(&self, peer: &PeerId) -> bool {
        let bytes = peer.to_bytes();
        let member = self.rooms.values().any(|r| {
            (r.is_member() || self.unheard_leaves.contains(&r.id()))
                && r.members().iter().any(|m| m.peer == bytes)
        });
        member || self.joining_through(&bytes)
    }

    /// Whether a join in progress goes through the node `peer` (peer id bytes).
    fn joining_through(&self, peer: &[u8]) -> bool {
        self.pending_joins
            .values()
            .chain(self.joins_waiting.iter().map(|(_, _, p)| p))
            .any(|p| p.invite.body.facilitator_peer == peer)
    }

    /// [`recognised`] for this node's rooms and joins.
    fn recognised(&self) -> (HashSet<PeerId>, HashSet<PeerId>) {
        let facilitators = self
            .pending_joins
            .values()
            .chain(self.joins_waiting.iter().map(|(_, _, p)| p))
            .map(|p| p.invite.body.facilitator_peer.as_slice());
        recognised(
            self.rooms.values(),
            *self.swarm.local_peer_id(),
            facilitators,
        )
    }

    /// Follows a change in who the node recognises (a membership, a join): tells the
    /// swarm's behaviours, scores gossip peers, and reconnects peers recognised since they
    /// connected (see [`Self::reconnect_recognised`]).
    pub(super) fn recognise_peers(&mut self) {
        let (members, acquainted) = self.recognised();
        let relays = self.reach.relay_peers();
        self.swarm
            .behaviour()
            .peers()
            .set(members, acquainted, relays);
        self.swarm.behaviour_mut().gossipsub.refresh();
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            self.score_peer(peer);
        }
        self.release_former_members(Instant::now());
        self.reconnect_recognised();
    }

    /// Disconnects the peers gossip runs for that have ceased to be members, once the
    /// node's pushes to them (their departure) are answered, or after
    /// [`strangers::FORMER_MEMBER_GRACE`]: a new topic waits until they have gone
    /// (`net::RoomGossip::subscribe`).
    pub(super) fn release_former_members(&mut self, now: Instant) {
        let former = self.swarm.behaviour().gossipsub.former_members();
        self.former.retain(|peer, _| former.contains(peer));
        for peer in former {
            let since = *self.former.entry(peer).or_insert(now);
            let waited = now.saturating_duration_since(since) >= strangers::FORMER_MEMBER_GRACE;
            if waited || !self.pushing_to(&peer) {
                self.swarm.behaviour_mut().gossipsub.disconnect(&peer);
            }
        }
    }

    /// Scores a gossip peer: a member 0, anyone else far below gossipsub's graylist
    /// threshold (a member that has just ceased to be one, until its connection closes).
    pub(super) fn score_peer(&mut self, peer: PeerId) {
        let score = if self.swarm.behaviour().peers().is_member(&peer) {
            0.0
        } else {
            net::STRANGER_SCORE
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, score);
    }

    /// Deals with the connections of peers recognised since they were established:
    /// gossip or sync does not run on them (`net::Gated`). One that another connection
    /// to the same peer makes up for is closed; otherwise the peer is connected to again
    /// ([`Self::replace_connections`]). A joiner is left to reconnect itself once it has
    /// read its answer ([`strangers::JOINER_GRACE`]).
    pub(super) fn reconnect_recognised(&mut self) {
        let behaviour = self.swarm.behaviour();
        let carries: Vec<Carries> = self
            .reach
            .connections()
            .map(|(id, peer, _)| Carries {
                id,
                peer,
                gossip: behaviour.gossipsub.handles(&peer, &id),
                sync: behaviour.sync.handles(&peer, &id),
            })
            .collect();
        let (answering, answered, replacing) = (&self.answering, &self.answered, &self.replacing);
        let busy = |p: &PeerId| {
            answered.contains_key(p)
                || replacing.contains_key(p)
                || answering.values().any(|a| a == p)
        };
        for action in strangers::reconnections(carries, behaviour.peers(), busy) {
            match action {
                Reconnect::Close(connection) => {
                    self.swarm.close_connection(connection);
                }
                Reconnect::Replace(peer) => {
                    tracing::debug!(%peer, "reconnecting a peer recognised since it connected");
                    self.replace_connections(peer);
                }
            }
        }
    }

    /// Connects to `peer` again and closes the connections it has now once the new one
    /// is up, so that it is never unreachable in between; if no address of it is known,
    /// closes them at once (the peer dials again, or this node does when it learns where).
    pub(super) fn replace_connections(&mut self, peer: PeerId) {
        let old: Vec<ConnectionId> = self
            .reach
            .connections()
            .filter(|(_, p, _)| *p == peer)
            .map(|(id, _, _)| id)
            .collect();
        let addrs: Vec<Multiaddr> = self
            .addresses
            .get(&peer)
            .map(|addrs| {
                addrs
                    .iter()
                    .filter(|a| self.reach.ready(&self.swarm, a))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs.clone())
            .condition(PeerCondition::Always)
            .build();
        if !addrs.is_empty() && self.swarm.dial(opts).is_ok() {
            self.replacing.insert(peer, (old, Instant::now()));
            return;
        }
        let _ = self.swarm.disconnect_peer_id(peer);
        self.redial.remove(&peer);
    }

    /// A connection to `peer` was established: the ones it replaces are closed.
    pub(super) fn replaced(&mut self, peer: &PeerId, new: ConnectionId) {
        let Some((old, _)) = self.replacing.remove(peer) else {
            return;
        };
        for connection in old.into_iter().filter(|c| *c != new) {
            self.swarm.close_connection(connection);
        }
    }

    /// A replacement connection to `peer` failed, or took too long: the old ones are
    /// closed anyway, and the peer redialled as usual.
    pub(super) fn replacement_failed(&mut self, peer: &PeerId) {
        if self.replacing.remove(peer).is_some() {
            let _ = self.swarm.disconnect_peer_id(*peer);
            self.redial.remove(peer);
        }
    }

    /// Gives up on replacements under way for longer than [`REPLACE_TIMEOUT`].
    pub(super) fn expire_replacements(&mut self, now: Instant) {
        let late: Vec<PeerId> = self
            .replacing
            .iter()
            .filter(|(_, (_, since))| now.saturating_duration_since(*since) >= REPLACE_TIMEOUT)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in late {
            self.replacement_failed(&peer);
        }
    }

    /// Closes the connections of strangers that have had theirs for
    /// [`strangers::STRANGER_IDLE`]: peers that are members of none of our rooms, have no
    /// join in progress and are no relay this node uses.
    pub(super) fn drop_idle_strangers(&mut self, now: Instant) {
        let relays = self.reach.relays_in_use();
        let connections: Vec<_> = self.reach.connections().collect();
        let idle = strangers::idle_strangers(
            connections,
            |peer| {
                self.known_peer(peer)
                    || relays.contains(peer)
                    || self.answered.contains_key(peer)
                    || self.answering.values().any(|p| p == peer)
            },
            now,
        );
        for connection in idle {
            tracing::debug!("closing a stranger's connection");
            self.swarm.close_connection(connection);
        }
    }
}
