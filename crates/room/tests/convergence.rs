//! Property test: random interleavings and deliveries of membership operations and
//! messages across 2 to 8 (and, through admissions, up to 10) simulated members, with
//! reordering, duplication, delay and members offline for a while.
//!
//! Checked at every step and at the end:
//! - the cap: no member's view of the room ever has more than 8 members;
//! - convergence: once everyone has received everything, all current members agree on
//!   the members, their roles, the epoch and the epoch key (each one's message opens for
//!   every other);
//! - forward secrecy of departures: no member who had left or been removed, in the
//!   sender's view at the time of sealing, can open that message — ever, with every key it
//!   has held.
//!
//! Among the honest actions, members who lie: any member, current or former (a removed
//! member, a former facilitator), signs operations on back-dated parents (any operation of
//! its log) and pushes them to any node: removals, handovers, admissions, leaves and
//! rotations. Every current member must still converge, and nobody departed may read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use confer_room::log::{Role, SignedOp};
use confer_room::room::ForgedKind;
use confer_room::test_utils::{NOW, join, room_of};
use confer_room::{Incoming, MAX_MEMBERS, MemberId, OpenError, Room};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

#[derive(Debug, Clone)]
enum Action {
    Send(u8),
    Leave(u8),
    Remove(u8),
    Rotate(u8),
    Handover(u8),
    Admit,
    Deliver {
        to: u8,
        picks: Vec<u16>,
        duplicate: bool,
    },
    ToggleOffline(u8),
    /// A member sends its whole log to another it considers a current member (what nodes
    /// do over the sync protocol when a member subscribes, and after authoring a keying
    /// operation).
    SyncLog {
        from: u8,
        to: u8,
    },
    /// Member `who` (whatever it is now) signs an operation of kind `kind` on the parent
    /// `back` of its log (back-dated), about member `target`, and pushes it to `to`.
    Forge {
        who: u8,
        back: u16,
        kind: u8,
        target: u8,
        to: u8,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => any::<u8>().prop_map(Action::Send),
        1 => any::<u8>().prop_map(Action::Leave),
        1 => any::<u8>().prop_map(Action::Remove),
        1 => any::<u8>().prop_map(Action::Rotate),
        1 => any::<u8>().prop_map(Action::Handover),
        1 => Just(Action::Admit),
        5 => (any::<u8>(), proptest::collection::vec(any::<u16>(), 1..6), any::<bool>())
            .prop_map(|(to, picks, duplicate)| Action::Deliver { to, picks, duplicate }),
        1 => any::<u8>().prop_map(Action::ToggleOffline),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(from, to)| Action::SyncLog { from, to }),
        2 => (any::<u8>(), any::<u16>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(who, back, kind, target, to)| Action::Forge { who, back, kind, target, to }),
    ]
}

struct Sealed {
    envelope: Vec<u8>,
    /// For messages: members departed in the sender's view when it was sealed.
    excluded: Option<BTreeSet<MemberId>>,
}

struct Sim {
    rooms: Vec<Room>,
    delivered: Vec<BTreeSet<usize>>,
    offline: Vec<bool>,
    network: Vec<Sealed>,
    rng: StdRng,
    now: u64,
    admitted: usize,
    /// Operations forged by lying members; they push them to every node in the end.
    forged: Vec<SignedOp>,
}

impl Sim {
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let rooms = room_of(n, &mut rng);
        Sim {
            delivered: vec![BTreeSet::new(); n],
            offline: vec![false; n],
            rooms,
            network: Vec::new(),
            rng,
            now: NOW,
            admitted: n,
            forged: Vec::new(),
        }
    }

    fn pick(&self, i: u8) -> usize {
        i as usize % self.rooms.len()
    }

    fn publish_op(&mut self, envelope: Vec<u8>) {
        self.network.push(Sealed {
            envelope,
            excluded: None,
        });
    }

    fn departed_in_view(room: &Room, all: &[MemberId]) -> BTreeSet<MemberId> {
        all.iter()
            .filter(|id| room.log().state().former_member(id).is_some())
            .copied()
            .collect()
    }

    fn ids(&self) -> Vec<MemberId> {
        self.rooms.iter().map(Room::me).collect()
    }

    /// What a node does after taking something in: a new facilitator takes the role; the
    /// facilitator rotates when the log asks for it.
    fn react(&mut self, m: usize) {
        let room = &mut self.rooms[m];
        if room.role_to_take().is_some() {
            let env = room
                .take_role(self.now, &mut self.rng)
                .expect("a new facilitator takes the role");
            self.publish_op(env);
        }
        let room = &mut self.rooms[m];
        if room.is_member() && room.is_facilitator() && room.needs_rotation() {
            let env = room
                .rotate(self.now, &mut self.rng)
                .expect("facilitator can rotate");
            self.publish_op(env);
        }
    }

    fn deliver(&mut self, m: usize, k: usize, duplicate: bool) {
        if k >= self.network.len() || (self.delivered[m].contains(&k) && !duplicate) {
            return;
        }
        match self.rooms[m].open(&self.network[k].envelope, self.now) {
            Ok(_) => {
                self.delivered[m].insert(k);
                self.react(m);
            }
            // Not openable yet (a key or an operation still to come): try again later.
            Err(OpenError::Crypto | OpenError::Pending) => {}
            // Refused for good (e.g. an author who has since departed).
            Err(_) => {
                self.delivered[m].insert(k);
            }
        }
    }

    fn step(&mut self, action: &Action) {
        self.now += 1000;
        let now = self.now;
        match action {
            Action::Send(i) => {
                let m = self.pick(*i);
                // Like the node: rotate first if the log asks for a new key.
                if self.rooms[m].is_member() && self.rooms[m].needs_rotation() {
                    let env = self.rooms[m]
                        .rotate(now, &mut self.rng)
                        .expect("member can rotate");
                    self.publish_op(env);
                }
                let all = self.ids();
                let excluded = Self::departed_in_view(&self.rooms[m], &all);
                if let Ok((envelope, _)) =
                    self.rooms[m].seal_message("a message", now, &mut self.rng)
                {
                    self.network.push(Sealed {
                        envelope,
                        excluded: Some(excluded),
                    });
                }
            }
            Action::Leave(i) => {
                let m = self.pick(*i);
                if let Ok(env) = self.rooms[m].leave(now, &mut self.rng) {
                    self.publish_op(env);
                }
            }
            Action::Remove(i) => {
                let target = self.rooms[self.pick(*i)].me().to_hex();
                if let Some(f) = self.rooms.iter().position(|r| r.is_facilitator())
                    && let Ok(env) = self.rooms[f].remove(&target, now, &mut self.rng)
                {
                    self.publish_op(env);
                }
            }
            Action::Rotate(i) => {
                let m = self.pick(*i);
                if let Ok(env) = self.rooms[m].rotate(now, &mut self.rng) {
                    self.publish_op(env);
                }
            }
            Action::Handover(i) => {
                let to = self.rooms[self.pick(*i)].me().to_hex();
                if let Some(f) = self.rooms.iter().position(|r| r.is_facilitator())
                    && let Ok(env) = self.rooms[f].handover(&to, now, &mut self.rng)
                {
                    self.publish_op(env);
                }
            }
            Action::Admit => {
                let f = self.rooms.iter().position(|r| r.is_facilitator());
                if let Some(f) = f
                    && self.admitted < 10
                    && self.rooms[f].members().len() < MAX_MEMBERS
                {
                    let name = format!("M{}", self.admitted);
                    let (room, announcement) = join(&mut self.rooms[f], &name, now, &mut self.rng);
                    self.admitted += 1;
                    self.publish_op(announcement);
                    self.rooms.push(room);
                    self.delivered.push(BTreeSet::new());
                    self.offline.push(false);
                }
            }
            Action::Deliver {
                to,
                picks,
                duplicate,
            } => {
                let m = self.pick(*to);
                if !self.offline[m] && !self.network.is_empty() {
                    for p in picks {
                        let k = *p as usize % self.network.len();
                        self.deliver(m, k, *duplicate);
                    }
                }
            }
            Action::ToggleOffline(i) => {
                let m = self.pick(*i);
                self.offline[m] = !self.offline[m];
            }
            Action::SyncLog { from, to } => {
                let (a, b) = (self.pick(*from), self.pick(*to));
                if !self.offline[b] {
                    self.sync_log(a, b);
                }
            }
            Action::Forge {
                who,
                back,
                kind,
                target,
                to,
            } => {
                let (w, t, b) = (self.pick(*who), self.pick(*target), self.pick(*to));
                let ops = self.rooms[w].log().ops();
                let parent = ops[*back as usize % ops.len()].hash();
                let target = self.rooms[t].me();
                let kind = match kind % 5 {
                    0 => ForgedKind::Leave,
                    1 => ForgedKind::Rotate,
                    2 => ForgedKind::Remove(target),
                    3 => ForgedKind::Handover(target),
                    _ => ForgedKind::Admit,
                };
                let op = self.rooms[w].forge_op_for_tests(vec![parent], kind, now, &mut self.rng);
                self.forged.push(op.clone());
                if !self.offline[b] {
                    self.rooms[b].merge_ops(vec![op], now);
                    self.react(b);
                }
            }
        }
        for room in &self.rooms {
            assert!(
                room.members().len() <= MAX_MEMBERS,
                "cap exceeded: {}",
                room.members().len()
            );
        }
    }

    /// `a` sends its log to `b` if `a` considers `b` a current member. Returns whether `b`
    /// learned anything.
    fn sync_log(&mut self, a: usize, b: usize) -> bool {
        if a == b {
            return false;
        }
        let to = self.rooms[b].me();
        if self.rooms[a].log().state().member(&to).is_none() {
            return false;
        }
        let ops = self.rooms[a].log().ops();
        let changed = self.rooms[b].merge_ops(ops, self.now).new > 0;
        if changed {
            self.react(b);
        }
        changed
    }

    /// Everyone comes online and receives everything, repeatedly, until nothing changes.
    /// The liars push what they forged to every node first.
    fn settle(&mut self) {
        self.offline.iter_mut().for_each(|o| *o = false);
        for m in 0..self.rooms.len() {
            self.rooms[m].merge_ops(self.forged.clone(), self.now);
            self.react(m);
        }
        for _round in 0..30 {
            let before = self.network.len();
            let mut progressed = false;
            for m in 0..self.rooms.len() {
                progressed |= self.rooms[m].merge_ops(self.forged.clone(), self.now).new > 0;
            }
            for a in 0..self.rooms.len() {
                for b in 0..self.rooms.len() {
                    progressed |= self.sync_log(a, b);
                }
            }
            for m in 0..self.rooms.len() {
                for k in 0..self.network.len() {
                    if !self.delivered[m].contains(&k) {
                        self.deliver(m, k, false);
                        progressed |= self.delivered[m].contains(&k);
                    }
                }
            }
            // Any member rotates if the log still asks for it (the grace period passed).
            if !progressed && self.network.len() == before {
                let waiting = self
                    .rooms
                    .iter()
                    .position(|r| r.is_member() && r.needs_rotation());
                match waiting {
                    Some(m) => {
                        let env = self.rooms[m]
                            .rotate(self.now, &mut self.rng)
                            .expect("member can rotate");
                        self.publish_op(env);
                    }
                    None => return,
                }
            }
        }
        panic!("the simulation did not settle");
    }

    fn check(&mut self) {
        // The consensus: the state of the union of every operation anyone holds. A member
        // removed while it was behind may never hear of its removal (nobody sends a removed
        // member anything), so "current" is judged by the consensus, not by each one's view.
        let mut all_ops = Vec::new();
        for room in &self.rooms {
            all_ops.extend(room.log().ops());
        }
        let consensus =
            confer_room::log::Membership::replay(all_ops).expect("union of logs replays");
        let current: Vec<usize> = (0..self.rooms.len())
            .filter(|m| consensus.state().member(&self.rooms[*m].me()).is_some())
            .collect();
        if current.is_empty() {
            // Everyone left (a facilitator can hand over to someone leaving at that moment,
            // then leave itself): nothing more to agree on.
            return;
        }
        let reference = &self.rooms[current[0]];
        assert_eq!(
            reference.log().state().frontier(),
            consensus.state().frontier(),
            "current members hold every operation"
        );
        let view = |r: &Room| -> Vec<(MemberId, Role)> {
            r.members().iter().map(|m| (m.public.id, m.role)).collect()
        };
        let expected = view(reference);
        let topic = reference.topic();
        assert!(
            topic.is_some(),
            "the reference member holds the current key"
        );
        for m in &current {
            let room = &self.rooms[*m];
            assert_eq!(view(room), expected, "member {m} disagrees on the members");
            assert_eq!(
                room.log().state().frontier(),
                reference.log().state().frontier()
            );
            assert_eq!(room.epoch_number(), reference.epoch_number());
            assert_eq!(room.topic(), topic, "member {m} has another epoch key");
        }
        // Each current member's new message opens for every other current member.
        for a in &current {
            let (env, record) = self.rooms[*a]
                .seal_message("final", self.now, &mut self.rng)
                .expect("seal");
            for b in &current {
                if a != b {
                    assert_eq!(
                        self.rooms[*b].open(&env, self.now),
                        Ok(Incoming::Message(record.clone()))
                    );
                }
            }
            // And for nobody who has departed.
            for (r, room) in self.rooms.iter_mut().enumerate() {
                if !current.contains(&r) {
                    assert!(
                        room.open(&env, self.now).is_err(),
                        "departed member {r} read a new message"
                    );
                }
            }
        }
        // No departed member can open a message sealed after it departed (in the sender's view).
        let ids = self.ids();
        for sealed in &self.network {
            let Some(excluded) = &sealed.excluded else {
                continue;
            };
            for (r, id) in ids.iter().enumerate() {
                if excluded.contains(id) {
                    let result = self.rooms[r].open(&sealed.envelope, self.now);
                    assert!(
                        !matches!(result, Ok(Incoming::Message(_))),
                        "member {r} read a message sealed after it departed"
                    );
                }
            }
        }
    }
}

proptest! {
    // 96 cases by default; PROPTEST_CASES runs more (a longer search, by hand).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]

    #[test]
    fn members_converge_and_departed_members_read_nothing_new(
        n in 2usize..=8,
        seed in any::<u64>(),
        actions in proptest::collection::vec(action(), 1..40),
    ) {
        let mut sim = Sim::new(n, seed);
        for a in &actions {
            sim.step(a);
        }
        sim.settle();
        sim.check();
    }
}

/// Cases the property test found, kept as regressions.
#[test]
fn regressions() {
    use Action::*;
    let cases: Vec<(usize, Vec<Action>, u64)> = vec![
        // A member leaves right after a handover it has not yet told anyone about, while the
        // new facilitator rotates concurrently: epochs of concurrent histories must be
        // derivable by whoever holds their secrets, and the leaver's log must reach others.
        (
            2,
            vec![
                Handover(31),
                Rotate(104),
                Send(0),
                Send(0),
                Leave(152),
                Rotate(7),
            ],
            0,
        ),
        // A new facilitator (after a handover) admits: the welcome is bound to the current
        // facilitator, not to the room's creator.
        (
            2,
            vec![Handover(125), SyncLog { from: 72, to: 49 }, Admit],
            0,
        ),
        // A removal concurrent with another member's leave and with a rotation that missed
        // an admission.
        (
            3,
            vec![
                Admit,
                Send(0),
                Rotate(218),
                Admit,
                Admit,
                Send(0),
                Send(0),
                Leave(152),
                Remove(3),
            ],
            0,
        ),
        // A back-dated rotation forged by a member, pushed after removals and handovers.
        (
            5,
            vec![
                Send(0),
                Deliver {
                    to: 0,
                    picks: vec![0],
                    duplicate: false,
                },
                Admit,
                Deliver {
                    to: 28,
                    picks: vec![0],
                    duplicate: false,
                },
                Rotate(114),
                Rotate(41),
                Deliver {
                    to: 1,
                    picks: vec![258],
                    duplicate: false,
                },
                Remove(5),
                Rotate(123),
                Deliver {
                    to: 84,
                    picks: vec![941],
                    duplicate: false,
                },
                Admit,
                SyncLog { from: 8, to: 252 },
                Handover(116),
                Handover(53),
                ToggleOffline(124),
                Leave(95),
                Send(5),
                Deliver {
                    to: 200,
                    picks: vec![64720, 41808, 1203, 48713],
                    duplicate: true,
                },
                Remove(165),
                Rotate(189),
                SyncLog { from: 150, to: 197 },
                Remove(138),
                Send(206),
                Deliver {
                    to: 2,
                    picks: vec![6205, 53440, 42570],
                    duplicate: false,
                },
                Forge {
                    who: 42,
                    back: 36761,
                    kind: 216,
                    target: 190,
                    to: 156,
                },
            ],
            856389131844490240,
        ),
        // A facilitator forges a back-dated handover, then hands the role to a member who
        // leaves at that moment.
        (
            5,
            vec![
                Send(0),
                Deliver {
                    to: 0,
                    picks: vec![0],
                    duplicate: false,
                },
                Admit,
                Deliver {
                    to: 28,
                    picks: vec![0],
                    duplicate: false,
                },
                Rotate(114),
                Rotate(41),
                Deliver {
                    to: 1,
                    picks: vec![258],
                    duplicate: false,
                },
                Remove(5),
                Rotate(123),
                Deliver {
                    to: 84,
                    picks: vec![941],
                    duplicate: false,
                },
                Deliver {
                    to: 158,
                    picks: vec![16625],
                    duplicate: false,
                },
                Forge {
                    who: 16,
                    back: 4420,
                    kind: 224,
                    target: 0,
                    to: 0,
                },
                Handover(58),
                Handover(53),
                ToggleOffline(124),
                Leave(95),
                Send(5),
                Deliver {
                    to: 200,
                    picks: vec![64720, 41808, 1203, 48713],
                    duplicate: true,
                },
                Remove(165),
                Rotate(189),
                SyncLog { from: 150, to: 197 },
                Remove(138),
                Send(206),
                Deliver {
                    to: 2,
                    picks: vec![6205, 53440, 42570],
                    duplicate: false,
                },
                Forge {
                    who: 42,
                    back: 36761,
                    kind: 216,
                    target: 190,
                    to: 156,
                },
            ],
            856389131844490240,
        ),
        // A member leaves while the facilitator hands it the role, and the others rotate
        // concurrently without having heard of it.
        (
            2,
            vec![
                Admit,
                Send(0),
                Deliver {
                    to: 0,
                    picks: vec![0],
                    duplicate: false,
                },
                Rotate(0),
                Handover(11),
                Leave(8),
                Rotate(70),
            ],
            0,
        ),
        // Found by a long search: forged leaves and handovers among removals.
        (
            5,
            vec![
                Send(0),
                Deliver {
                    to: 0,
                    picks: vec![0],
                    duplicate: false,
                },
                Handover(41),
                Send(0),
                Leave(237),
                SyncLog { from: 0, to: 72 },
                Remove(0),
                Deliver {
                    to: 134,
                    picks: vec![13781],
                    duplicate: false,
                },
                Handover(0),
                Handover(0),
                Send(28),
                Forge {
                    who: 2,
                    back: 0,
                    kind: 0,
                    target: 0,
                    to: 0,
                },
                Handover(0),
                Forge {
                    who: 54,
                    back: 3773,
                    kind: 70,
                    target: 0,
                    to: 21,
                },
                Forge {
                    who: 0,
                    back: 7591,
                    kind: 16,
                    target: 0,
                    to: 1,
                },
                Remove(0),
                Send(8),
                Deliver {
                    to: 239,
                    picks: vec![15717],
                    duplicate: false,
                },
                Remove(0),
                Handover(0),
                Forge {
                    who: 130,
                    back: 51706,
                    kind: 97,
                    target: 166,
                    to: 0,
                },
                Send(0),
                SyncLog { from: 17, to: 40 },
                Handover(0),
                Send(1),
                Send(6),
                Leave(0),
                Remove(0),
                Remove(0),
                Send(0),
                Send(0),
                Send(0),
                Send(0),
                Leave(156),
            ],
            1236695683189648044,
        ),
        // A former facilitator forges a second handover after its first was taken.
        (
            7,
            vec![
                Deliver {
                    to: 0,
                    picks: vec![0],
                    duplicate: false,
                },
                Deliver {
                    to: 0,
                    picks: vec![0],
                    duplicate: false,
                },
                Deliver {
                    to: 0,
                    picks: vec![0],
                    duplicate: false,
                },
                Deliver {
                    to: 0,
                    picks: vec![0],
                    duplicate: false,
                },
                Leave(73),
                Deliver {
                    to: 32,
                    picks: vec![0],
                    duplicate: false,
                },
                Send(0),
                Deliver {
                    to: 0,
                    picks: vec![3277],
                    duplicate: false,
                },
                Deliver {
                    to: 0,
                    picks: vec![13717],
                    duplicate: false,
                },
                Rotate(1),
                Send(12),
                SyncLog { from: 0, to: 0 },
                Send(92),
                ToggleOffline(144),
                ToggleOffline(9),
                SyncLog { from: 130, to: 125 },
                Deliver {
                    to: 129,
                    picks: vec![41681, 18877, 28466],
                    duplicate: false,
                },
                Send(57),
                Send(195),
                ToggleOffline(205),
                Handover(211),
                SyncLog { from: 196, to: 22 },
                Rotate(70),
                Remove(136),
                Deliver {
                    to: 169,
                    picks: vec![34868, 58182, 10406, 33930, 43846],
                    duplicate: false,
                },
                ToggleOffline(33),
                Forge {
                    who: 7,
                    back: 64166,
                    kind: 63,
                    target: 96,
                    to: 87,
                },
            ],
            3923828851871717873,
        ),
        // Found by the property test.
        (
            5,
            vec![
                Handover(41),
                Forge {
                    who: 105,
                    back: 20332,
                    kind: 218,
                    target: 153,
                    to: 118,
                },
                Send(0),
                Send(0),
                Remove(64),
                Forge {
                    who: 88,
                    back: 32075,
                    kind: 135,
                    target: 0,
                    to: 0,
                },
            ],
            0,
        ),
        // Found by the property test: a rotation held by one node only.
        (
            3,
            vec![
                ToggleOffline(15),
                Deliver {
                    to: 0,
                    picks: vec![0],
                    duplicate: false,
                },
                Deliver {
                    to: 0,
                    picks: vec![0],
                    duplicate: false,
                },
                Deliver {
                    to: 0,
                    picks: vec![0],
                    duplicate: false,
                },
                Deliver {
                    to: 0,
                    picks: vec![0],
                    duplicate: false,
                },
                Deliver {
                    to: 0,
                    picks: vec![0],
                    duplicate: false,
                },
                Handover(1),
                ToggleOffline(32),
                Forge {
                    who: 42,
                    back: 9019,
                    kind: 5,
                    target: 0,
                    to: 0,
                },
                Send(0),
                Rotate(96),
                Send(0),
                Send(0),
                Send(0),
                Send(0),
                Send(0),
                Leave(120),
                Send(0),
            ],
            5418189351676484276,
        ),
        // Found by the property test: members disagree.
        (
            4,
            vec![
                Rotate(17),
                Forge {
                    who: 88,
                    back: 21981,
                    kind: 213,
                    target: 245,
                    to: 1,
                },
                Deliver {
                    to: 0,
                    picks: vec![2926],
                    duplicate: false,
                },
                Handover(2),
            ],
            6067454400287131,
        ),
    ];
    for (n, actions, seed) in cases {
        let mut sim = Sim::new(n, seed);
        for a in &actions {
            sim.step(a);
        }
        sim.settle();
        sim.check();
    }
}
