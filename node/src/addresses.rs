//! Where peers can be reached: the addresses a node learns (from identify, from its own
//! dials, from invites, from members' reports) and keeps for redialling room members.
//!
//! Anyone can connect and identify with any number of keys, so what is kept for peers
//! that are not members (of a room here, or the facilitator of a join in progress) is
//! bounded: at most [`OTHERS`] such peers at once, and a non-member's entry is dropped
//! when its last connection closes. Members' entries stay (their number is bounded by
//! admissions) and are what the node redials and tells other members about.

use std::collections::HashMap;

use libp2p::{Multiaddr, PeerId};

/// Most addresses kept per peer.
pub const PER_PEER: usize = 16;
/// Most non-member peers whose addresses are kept at once.
pub const OTHERS: usize = 64;

#[derive(Debug, Default)]
struct Entry {
    addrs: Vec<Multiaddr>,
    member: bool,
}

/// The addresses a node knows, per peer.
#[derive(Debug, Default)]
pub struct AddressBook {
    peers: HashMap<PeerId, Entry>,
    /// Entries with `member == false`.
    others: usize,
}

impl AddressBook {
    /// Adds `addrs` for `peer`, who is a member (of a room here, or the facilitator of a
    /// join in progress) or not. Returns whether anything was added. A peer once added
    /// as a member stays one here.
    pub fn learn(
        &mut self,
        peer: PeerId,
        member: bool,
        addrs: impl IntoIterator<Item = Multiaddr>,
    ) -> bool {
        if !member && !self.peers.contains_key(&peer) && self.others >= OTHERS {
            return false;
        }
        let entry = self.peers.entry(peer).or_insert_with(|| {
            if !member {
                self.others += 1;
            }
            Entry {
                addrs: Vec::new(),
                member,
            }
        });
        if member && !entry.member {
            entry.member = true;
            self.others -= 1;
        }
        let mut added = false;
        for a in addrs {
            if entry.addrs.len() >= PER_PEER {
                break;
            }
            if !entry.addrs.contains(&a) {
                entry.addrs.push(a);
                added = true;
            }
        }
        added
    }

    /// The addresses known for `peer`.
    pub fn get(&self, peer: &PeerId) -> Option<&[Multiaddr]> {
        self.peers.get(peer).map(|e| e.addrs.as_slice())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/192.0.2.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn strangers_are_bounded_and_members_are_not() {
        let mut book = AddressBook::default();
        for i in 0..1000 {
            book.learn(PeerId::random(), false, [addr(i)]);
        }
        assert_eq!(book.len(), OTHERS);
        // Members are always kept, however many strangers came first.
        let member = PeerId::random();
        assert!(book.learn(member, true, [addr(1)]));
        assert_eq!(book.get(&member), Some(&[addr(1)][..]));
    }

    #[test]
    fn a_stranger_is_forgotten_when_it_leaves_and_frees_its_place() {
        let mut book = AddressBook::default();
        let strangers: Vec<PeerId> = (0..OTHERS).map(|_| PeerId::random()).collect();
        for (i, p) in strangers.iter().enumerate() {
            assert!(book.learn(*p, false, [addr(i as u16)]));
        }
        let late = PeerId::random();
        assert!(!book.learn(late, false, [addr(9000)]), "the book is full");
        book.disconnected(&strangers[0], false);
        assert_eq!(book.get(&strangers[0]), None);
        assert!(book.learn(late, false, [addr(9000)]));
    }

    #[test]
    fn a_peer_who_becomes_a_member_stays() {
        let mut book = AddressBook::default();
        let joiner = PeerId::random();
        book.learn(joiner, false, [addr(1)]);
        book.learn(joiner, true, [addr(2)]);
        book.disconnected(&joiner, false);
        assert_eq!(book.get(&joiner), Some(&[addr(1), addr(2)][..]));
        // Admitted while connected, without new addresses: kept when it leaves.
        let admitted = PeerId::random();
        book.learn(admitted, false, [addr(4)]);
        book.disconnected(&admitted, true);
        assert_eq!(book.get(&admitted), Some(&[addr(4)][..]));
        // Their places among non-members are free again.
        for _ in 0..OTHERS {
            assert!(book.learn(PeerId::random(), false, [addr(3)]));
        }
    }

    #[test]
    fn addresses_per_peer_are_bounded_and_not_repeated() {
        let mut book = AddressBook::default();
        let peer = PeerId::random();
        assert!(book.learn(peer, true, [addr(1), addr(1)]));
        assert!(!book.learn(peer, true, [addr(1)]));
        book.learn(peer, true, (0..100).map(addr));
        assert_eq!(book.get(&peer).unwrap().len(), PER_PEER);
    }
}
