//! Where peers can be reached: the addresses a node learns and keeps for redialling room
//! members.
//!
//! A member's addresses come from that member's own node only: what it says of itself
//! (identify, its own entry in a push), where this node reached it, and its signed peer
//! record ([`AddressBook::take_record`]: libp2p's routing record, signed by the node's
//! own key), which other members pass on unchanged. What one member says about where
//! another is, unsigned, is never taken: it could fill the other's entry with addresses
//! where nothing listens, or make every node dial addresses of its choosing in the name
//! of a member it does not run.
//!
//! Each peer's addresses are kept most recently confirmed first, at most [`PER_PEER`]:
//! a new one replaces the one least recently confirmed, and one not confirmed for
//! [`MAX_AGE`] while another was is dropped ([`AddressBook::prune`]), so a member that
//! moves is found at its new address, and its last known address is kept however long it
//! stays away.
//!
//! Anyone can connect and identify with any number of keys, so what is kept for peers
//! that are not members (of a room here, or the facilitator of a join in progress) is
//! bounded: at most [`OTHERS`] such peers at once, and a non-member's entry is dropped
//! when its last connection closes. Members' entries stay (their number is bounded by
//! admissions) and are what the node redials and tells other members about.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::core::{PeerRecord, SignedEnvelope};
use libp2p::{Multiaddr, PeerId};

/// Most addresses kept per peer.
pub const PER_PEER: usize = 16;
/// Most non-member peers whose addresses are kept at once.
pub const OTHERS: usize = 64;
/// How long an address not confirmed while another of the same peer was is kept: a week.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug)]
struct Entry {
    /// Most recently confirmed first, with when.
    addrs: Vec<(Multiaddr, Instant)>,
    member: bool,
    /// The newest signed peer record the peer's node made, as it travelled: its sequence
    /// number and bytes.
    record: Option<(u64, Vec<u8>)>,
}

/// The addresses a node knows, per peer.
#[derive(Debug, Default)]
pub struct AddressBook {
    peers: HashMap<PeerId, Entry>,
    /// Entries with `member == false`.
    others: usize,
}

impl AddressBook {
    /// Confirms `addrs` for `peer` at `now` (first of them the most recent), who is a
    /// member (of a room here, or the facilitator of a join in progress) or not: each
    /// goes to the front of the peer's list, and past [`PER_PEER`] the least recently
    /// confirmed are dropped. Returns whether an address was new. A peer once added as a
    /// member stays one here.
    pub fn learn(
        &mut self,
        peer: PeerId,
        member: bool,
        addrs: impl IntoIterator<Item = Multiaddr>,
        now: Instant,
    ) -> bool {
        let Some(entry) = self.entry(peer, member) else {
            return false;
        };
        let addrs: Vec<Multiaddr> = addrs.into_iter().take(PER_PEER).collect();
        let mut added = false;
        for a in addrs.into_iter().rev() {
            match entry.addrs.iter().position(|(known, _)| *known == a) {
                Some(i) => {
                    entry.addrs.remove(i);
                }
                None => added = true,
            }
            entry.addrs.insert(0, (a, now));
        }
        entry.addrs.truncate(PER_PEER);
        added
    }

    /// The entry of `peer`, made if there is room (see [`Self::learn`]).
    fn entry(&mut self, peer: PeerId, member: bool) -> Option<&mut Entry> {
        if !member && !self.peers.contains_key(&peer) && self.others >= OTHERS {
            return None;
        }
        let entry = self.peers.entry(peer).or_insert_with(|| {
            if !member {
                self.others += 1;
            }
            Entry {
                addrs: Vec::new(),
                member,
                record: None,
            }
        });
        if member && !entry.member {
            entry.member = true;
            self.others -= 1;
        }
        Some(entry)
    }

    /// Takes a signed peer record (as it travelled, at most
    /// [`crate::sync::MAX_RECORD_BYTES`]) if its signature holds, the node that signed it
    /// is one `is_member` accepts, and it is not older than the one kept: its addresses
    /// are confirmed at `now` and it is kept to pass on. Returns the peer whose record it
    /// was, if taken. The record kept already (members pass it on every round) is passed
    /// over without checking its signature again.
    pub fn take_record(
        &mut self,
        bytes: &[u8],
        is_member: impl Fn(&PeerId) -> bool,
        now: Instant,
    ) -> Option<PeerId> {
        if bytes.len() > crate::sync::MAX_RECORD_BYTES {
            return None;
        }
        let kept = self
            .peers
            .values()
            .any(|e| e.record.as_ref().is_some_and(|(_, b)| b == bytes));
        if kept {
            return None;
        }
        let envelope = SignedEnvelope::from_protobuf_encoding(bytes).ok()?;
        let record = PeerRecord::from_signed_envelope(envelope).ok()?;
        let peer = record.peer_id();
        if !is_member(&peer) {
            return None;
        }
        let seq = record.seq();
        let entry = self.entry(peer, true)?;
        if entry.record.as_ref().is_some_and(|(kept, _)| *kept > seq) {
            return None;
        }
        entry.record = Some((seq, bytes.to_vec()));
        self.learn(peer, true, record.addresses().iter().cloned(), now);
        Some(peer)
    }

    /// The signed peer record kept for `peer`, as it travelled.
    pub fn record(&self, peer: &PeerId) -> Option<&[u8]> {
        self.peers
            .get(peer)?
            .record
            .as_ref()
            .map(|(_, bytes)| bytes.as_slice())
    }

    /// The addresses known for `peer`, most recently confirmed first.
    pub fn get(&self, peer: &PeerId) -> Option<Vec<Multiaddr>> {
        self.peers
            .get(peer)
            .map(|e| e.addrs.iter().map(|(a, _)| a.clone()).collect())
    }

    /// Drops every address of a peer not confirmed for [`MAX_AGE`] before that peer's
    /// most recently confirmed one (which stays, however old).
    pub fn prune(&mut self) {
        for entry in self.peers.values_mut() {
            let Some(newest) = entry.addrs.first().map(|(_, at)| *at) else {
                continue;
            };
            entry
                .addrs
                .retain(|(_, at)| newest.saturating_duration_since(*at) < MAX_AGE);
        }
    }

    /// `peer`'s last connection closed: forgotten unless it is a member, now
    /// (`member`) or when it was added.
    pub fn disconnected(&mut self, peer: &PeerId, member: bool) {
        let Some(entry) = self.peers.get_mut(peer) else {
            return;
        };
        if entry.member {
            return;
        }
        self.others -= 1;
        if member {
            entry.member = true;
        } else {
            self.peers.remove(peer);
        }
    }

    /// How many peers have an entry.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.peers.len()
    }
}

/// This node's own signed peer record for `addrs`, as it travels, or `None` if it cannot
/// be signed.
pub fn own_record(keypair: &libp2p::identity::Keypair, addrs: Vec<Multiaddr>) -> Option<Vec<u8>> {
    PeerRecord::new(keypair, addrs)
        .ok()
        .map(|r| r.into_signed_envelope().into_protobuf_encoding())
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/192.0.2.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn strangers_are_bounded_and_members_are_not() {
        let mut book = AddressBook::default();
        let now = Instant::now();
        for i in 0..1000 {
            book.learn(PeerId::random(), false, [addr(i)], now);
        }
        assert_eq!(book.len(), OTHERS);
        // Members are always kept, however many strangers came first.
        let member = PeerId::random();
        assert!(book.learn(member, true, [addr(1)], now));
        assert_eq!(book.get(&member), Some(vec![addr(1)]));
    }

    #[test]
    fn a_stranger_is_forgotten_when_it_leaves_and_frees_its_place() {
        let mut book = AddressBook::default();
        let now = Instant::now();
        let strangers: Vec<PeerId> = (0..OTHERS).map(|_| PeerId::random()).collect();
        for (i, p) in strangers.iter().enumerate() {
            assert!(book.learn(*p, false, [addr(i as u16)], now));
        }
        let late = PeerId::random();
        assert!(
            !book.learn(late, false, [addr(9000)], now),
            "the book is full"
        );
        book.disconnected(&strangers[0], false);
        assert_eq!(book.get(&strangers[0]), None);
        assert!(book.learn(late, false, [addr(9000)], now));
    }

    #[test]
    fn a_peer_who_becomes_a_member_stays() {
        let mut book = AddressBook::default();
        let now = Instant::now();
        let joiner = PeerId::random();
        book.learn(joiner, false, [addr(1)], now);
        book.learn(joiner, true, [addr(2)], now);
        book.disconnected(&joiner, false);
        assert_eq!(book.get(&joiner), Some(vec![addr(2), addr(1)]));
        // Admitted while connected, without new addresses: kept when it leaves.
        let admitted = PeerId::random();
        book.learn(admitted, false, [addr(4)], now);
        book.disconnected(&admitted, true);
        assert_eq!(book.get(&admitted), Some(vec![addr(4)]));
        // Their places among non-members are free again.
        for _ in 0..OTHERS {
            assert!(book.learn(PeerId::random(), false, [addr(3)], now));
        }
    }

    #[test]
    fn addresses_per_peer_are_bounded_and_not_repeated() {
        let mut book = AddressBook::default();
        let now = Instant::now();
        let peer = PeerId::random();
        assert!(book.learn(peer, true, [addr(1), addr(1)], now));
        assert!(!book.learn(peer, true, [addr(1)], now));
        book.learn(peer, true, (0..100).map(addr), now);
        assert_eq!(book.get(&peer).unwrap().len(), PER_PEER);
    }

    /// Sixteen addresses where nothing listens do not keep the book from taking the
    /// peer's new address: it replaces the one least recently confirmed, and comes first.
    #[test]
    fn a_new_address_replaces_the_least_recently_confirmed() {
        let mut book = AddressBook::default();
        let t0 = Instant::now();
        let peer = PeerId::random();
        book.learn(peer, true, [addr(1)], t0);
        book.learn(
            peer,
            true,
            (100..116).map(addr),
            t0 + Duration::from_secs(1),
        );
        assert_eq!(book.get(&peer).unwrap().len(), PER_PEER);
        assert!(!book.get(&peer).unwrap().contains(&addr(1)));
        // Confirmed again, an address moves to the front and stays.
        book.learn(peer, true, [addr(100)], t0 + Duration::from_secs(2));
        assert!(book.learn(peer, true, [addr(2)], t0 + Duration::from_secs(3)));
        let known = book.get(&peer).unwrap();
        assert_eq!(known[..2], [addr(2), addr(100)]);
        assert!(known.contains(&addr(100)));
        // Of a batch, the first counts as the most recent: the last went.
        assert!(
            !known.contains(&addr(115)),
            "the least recently confirmed went"
        );
        assert!(known.contains(&addr(114)));
    }

    #[test]
    fn addresses_not_confirmed_for_a_week_while_another_was_are_dropped() {
        let mut book = AddressBook::default();
        let t0 = Instant::now();
        let (moved, away) = (PeerId::random(), PeerId::random());
        book.learn(moved, true, [addr(1), addr(2)], t0);
        book.learn(away, true, [addr(3)], t0);
        book.learn(moved, true, [addr(4)], t0 + MAX_AGE);
        book.prune();
        assert_eq!(book.get(&moved), Some(vec![addr(4)]));
        // A member away for longer than that keeps its last known addresses.
        assert_eq!(book.get(&away), Some(vec![addr(3)]));
    }

    /// A record signed by a member's node is taken and kept to pass on; a stranger's, an
    /// altered one or garbage are not.
    #[test]
    fn only_a_members_own_signed_record_is_taken() {
        let mut book = AddressBook::default();
        let now = Instant::now();
        let carol = Keypair::generate_ed25519();
        let carol_peer = carol.public().to_peer_id();
        let stranger = Keypair::generate_ed25519();
        let is_carol = |p: &PeerId| *p == carol_peer;

        let record = own_record(&carol, vec![addr(7)]).unwrap();
        assert_eq!(book.take_record(&record, is_carol, now), Some(carol_peer));
        assert_eq!(book.get(&carol_peer), Some(vec![addr(7)]));
        assert_eq!(book.record(&carol_peer), Some(record.as_slice()));
        assert_eq!(
            book.take_record(&record, is_carol, now),
            None,
            "kept already"
        );

        let theirs = own_record(&stranger, vec![addr(8)]).unwrap();
        assert_eq!(book.take_record(&theirs, is_carol, now), None);
        // Altered: its signature no longer holds.
        let mut altered = record.clone();
        if let Some(last) = altered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(book.take_record(&altered, is_carol, now), None);
        assert_eq!(book.take_record(&[0xff; 40], is_carol, now), None);
        assert_eq!(book.take_record(&vec![0; 4096], is_carol, now), None);
        assert_eq!(book.get(&carol_peer), Some(vec![addr(7)]));
    }
}
