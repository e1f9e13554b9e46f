//! The membership log: who is in a room, in what role, and which key epoch is current.
//!
//! Every change to a room is an [`Op`], signed by its author's room key and naming the
//! operations its author had seen (`parents`, by hash), so the log is a DAG. The room's
//! state is a **deterministic function of the set of operations**
//! ([`Membership::state`]): every member holding the same operations computes the same
//! members, roles and epoch, whatever order the operations arrived in.
//!
//! ## The state function
//!
//! 1. Order the operations topologically, breaking ties by operation hash (smallest first).
//! 2. Fold over that order, applying the rules below to a running state; an operation that
//!    breaks a rule is *invalid* and has no effect.
//! 3. **Removal wins.** For every valid departure of a member X (`Remove(X)` or `Leave` by
//!    X), every operation by X that is not an ancestor of that departure (X's concurrent or
//!    later actions) is excluded, and the fold is repeated until nothing changes.
//!
//! Rules: the log starts with one `Create`, whose author is the facilitator; only the
//! facilitator admits, removes, hands over and revokes invites; a member may leave (the
//! facilitator must hand over first); a departed member never comes back under the same
//! key; a room never has more than [`MAX_MEMBERS`] members; a rotation may only be sealed
//! to current members.
//!
//! ## Epochs
//!
//! `Create`, `Rotate` and `Remove` are *keying* operations: each carries a fresh random
//! secret sealed to every current member ([`Rotation`]). The current epoch is defined by
//! the **frontier**: the valid keying operations that have no valid keying descendant.
//! Concurrent rotations are therefore combined, not raced: the epoch key is derived from
//! the secrets of every frontier operation, in hash order (see `room`). A removed member
//! never receives the removal's own secret, so it cannot compute any epoch key whose
//! frontier descends from its removal.
//!
//! A rotation is *needed* ([`State::needs_rotation`]) when a member left and no keying
//! operation descends from the departure, or when a current member holds no copy of some
//! frontier secret (it was admitted concurrently with a rotation). Any member may then
//! rotate; concurrent rotations combine.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::crypto::{Sealed, hash};
use crate::identity::{MemberId, MemberKeys, MemberPublic};
use crate::invite::InviteId;
use crate::room::RoomId;
use crate::wire;

/// The most members a room can have, facilitator included.
pub const MAX_MEMBERS: usize = 8;
/// The most operations a log accepts (a room's whole life; bounds memory and work).
pub const MAX_OPS: usize = 4096;
/// The most operations kept waiting for their parents.
pub const MAX_PENDING: usize = 256;

const OP_LABEL: &[u8] = b"confer/v1/op";

/// The hash that names an operation.
pub type OpHash = [u8; 32];

/// One member's copy of a keying operation's secret, sealed to their X25519 key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Share {
    /// The member it is sealed to.
    pub member: MemberId,
    /// The secret, sealed under the rotation's ephemeral key and this member's key (see
    /// [`crate::crypto::seal_to_many`]).
    pub sealed: Sealed,
}

/// A fresh epoch secret, one sealed copy per recipient.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Rotation {
    /// The ephemeral X25519 public key all copies were sealed with.
    pub ephemeral: [u8; 32],
    /// The sealed copies.
    pub shares: Vec<Share>,
}

impl Rotation {
    /// The members who can open this rotation's secret.
    pub fn recipients(&self) -> BTreeSet<MemberId> {
        self.shares.iter().map(|s| s.member).collect()
    }
}

/// What an operation does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum OpBody {
    /// The room begins; the author is its facilitator. Keying.
    Create {
        /// The facilitator's public keys.
        facilitator: MemberPublic,
        /// The facilitator's display name in this room.
        display_name: String,
        /// The facilitator node's libp2p peer id.
        peer: Vec<u8>,
        /// How long old epoch keys are kept after they are replaced, in seconds.
        retention_secs: u64,
        /// The first epoch secret, sealed to the facilitator.
        rotation: Rotation,
    },
    /// The facilitator admits a member who redeemed an invite.
    Admit {
        /// The new member's public keys.
        member: MemberPublic,
        /// The new member's display name in this room.
        display_name: String,
        /// The new member node's libp2p peer id.
        peer: Vec<u8>,
        /// The invite that was redeemed.
        invite_id: InviteId,
    },
    /// The author leaves the room.
    Leave,
    /// The facilitator removes a member, and rotates in the same step. Keying.
    Remove {
        /// Who is removed.
        member: MemberId,
        /// The next epoch secret, sealed to every remaining member.
        rotation: Rotation,
    },
    /// A member starts a new epoch. Keying.
    Rotate {
        /// The new epoch secret, sealed to every current member.
        rotation: Rotation,
    },
    /// The facilitator hands the role to another member.
    Handover {
        /// The new facilitator.
        to: MemberId,
    },
    /// The facilitator withdraws an invite before it is used.
    RevokeInvite {
        /// The invite.
        invite_id: InviteId,
    },
}

impl OpBody {
    /// The rotation of a keying operation.
    pub fn rotation(&self) -> Option<&Rotation> {
        match self {
            OpBody::Create { rotation, .. }
            | OpBody::Remove { rotation, .. }
            | OpBody::Rotate { rotation } => Some(rotation),
            _ => None,
        }
    }
}

/// One membership operation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Op {
    /// The room this operation belongs to.
    pub room_id: RoomId,
    /// Hashes of the operations the author had seen (the log's heads).
    pub parents: Vec<OpHash>,
    /// Who made the change.
    pub author: MemberId,
    /// Author's clock, Unix milliseconds; informational only.
    pub created_at: u64,
    /// The change.
    pub body: OpBody,
}

/// An operation with its author's signature.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignedOp {
    /// The operation.
    pub op: Op,
    signature: crate::identity::Sig,
}

impl SignedOp {
    /// Signs `op`; `keys` must belong to `op.author`.
    pub fn sign(op: Op, keys: &MemberKeys) -> Self {
        let encoded = wire::encode(&op).unwrap_or_default();
        Self {
            signature: keys.sign(OP_LABEL, &encoded),
            op,
        }
    }

    /// The operation's name: a hash of the operation and its signature.
    pub fn hash(&self) -> OpHash {
        let encoded = wire::encode(&self.op).unwrap_or_default();
        hash(OP_LABEL, &[&encoded, &self.signature.to_bytes()])
    }

    fn verify(&self) -> Result<(), LogError> {
        let encoded = wire::encode(&self.op).map_err(|_| LogError::BadSignature)?;
        self.op
            .author
            .verify(OP_LABEL, &encoded, &self.signature)
            .map_err(|_| LogError::BadSignature)
    }
}

/// Why an operation was not taken into the log. (Operations that are well-formed but break
/// a rule are kept, and are simply invalid in the state: see [`State::is_valid`].)
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum LogError {
    /// The signature does not match the author.
    #[error("operation signature does not verify")]
    BadSignature,
    /// The operation names another room.
    #[error("operation belongs to another room")]
    WrongRoom,
    /// Some parents are not known yet; the operation waits for them.
    #[error("operation refers to operations not yet received")]
    MissingParents,
    /// A second `Create`, or a log that does not start with one.
    #[error("operation is not a valid start of the room")]
    BadGenesis,
    /// The log is full.
    #[error("the room's log is full")]
    TooManyOps,
}

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Runs the room: issues invites, admits and removes.
    Facilitator,
    /// Takes part.
    Member,
}

impl Role {
    /// The role as the CLI shows it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Facilitator => "facilitator",
            Role::Member => "member",
        }
    }
}

/// A member as the log describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Public keys.
    pub public: MemberPublic,
    /// Display name in this room.
    pub display_name: String,
    /// The member node's libp2p peer id.
    pub peer: Vec<u8>,
    /// Role.
    pub role: Role,
    /// The operation that admitted them (the `Create` for the first facilitator).
    pub admitted_by: OpHash,
}

/// The room's state, computed from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    valid: BTreeSet<OpHash>,
    members: BTreeMap<MemberId, Member>,
    /// Admission order, for stable listings.
    order: Vec<MemberId>,
    former: BTreeMap<MemberId, Member>,
    facilitator: Option<MemberId>,
    frontier: Vec<OpHash>,
    epoch_number: u64,
    needs_rotation: bool,
    revoked: BTreeSet<InviteId>,
    used_invites: BTreeSet<InviteId>,
    retention_secs: u64,
    departures: Vec<OpHash>,
    keying_depth: BTreeMap<OpHash, u64>,
}

impl State {
    /// Whether an operation is valid (has effect) in this state.
    pub fn is_valid(&self, op: &OpHash) -> bool {
        self.valid.contains(op)
    }

    /// Current members, facilitator first, then in order of admission.
    pub fn members(&self) -> Vec<&Member> {
        let mut out: Vec<&Member> = self
            .order
            .iter()
            .filter_map(|id| self.members.get(id))
            .collect();
        out.sort_by_key(|m| m.role != Role::Facilitator);
        out
    }

    /// A current member.
    pub fn member(&self, id: &MemberId) -> Option<&Member> {
        self.members.get(id)
    }

    /// A member who has left or been removed.
    pub fn former_member(&self, id: &MemberId) -> Option<&Member> {
        self.former.get(id)
    }

    /// A current member, or else a former one.
    pub fn member_or_former(&self, id: &MemberId) -> Option<&Member> {
        self.member(id).or_else(|| self.former_member(id))
    }

    /// Every former member, in no particular order.
    pub fn former_members(&self) -> impl Iterator<Item = &Member> {
        self.former.values()
    }

    /// Whether `peer` (libp2p peer id bytes) belongs to a former member.
    pub fn had_peer(&self, peer: &[u8]) -> bool {
        self.former.values().any(|m| m.peer == peer)
    }

    /// Whether `peer` (libp2p peer id bytes) belongs to a current or former member.
    pub fn has_peer(&self, peer: &[u8]) -> bool {
        self.members
            .values()
            .chain(self.former.values())
            .any(|m| m.peer == peer)
    }

    /// The facilitator.
    pub fn facilitator(&self) -> Option<MemberId> {
        self.facilitator
    }

    /// The keying operations that define the current epoch, in hash order.
    pub fn frontier(&self) -> &[OpHash] {
        &self.frontier
    }

    /// The current epoch's number: the length of the longest chain of keying operations.
    pub fn epoch_number(&self) -> u64 {
        self.epoch_number
    }

    /// Whether some member should start a new epoch (see the module docs).
    pub fn needs_rotation(&self) -> bool {
        self.needs_rotation
    }

    /// Whether the invite was revoked.
    pub fn is_revoked(&self, invite: &InviteId) -> bool {
        self.revoked.contains(invite)
    }

    /// Whether an admission already used the invite.
    pub fn is_used(&self, invite: &InviteId) -> bool {
        self.used_invites.contains(invite)
    }

    /// How long old epoch keys are kept, in seconds.
    pub fn retention_secs(&self) -> u64 {
        self.retention_secs
    }

    /// The valid departures (`Leave` and `Remove` operations), in log order.
    pub fn departures(&self) -> &[OpHash] {
        &self.departures
    }
}

/// A room's log: every operation received, and the state they determine.
#[derive(Debug, Clone)]
pub struct Membership {
    room_id: RoomId,
    genesis: OpHash,
    ops: BTreeMap<OpHash, SignedOp>,
    /// Topological order (ties by hash) of `ops`.
    order: Vec<OpHash>,
    /// Ancestors of each op (by index into `order`), as bit sets.
    ancestors: BTreeMap<OpHash, Vec<u64>>,
    index: BTreeMap<OpHash, usize>,
    pending: BTreeMap<OpHash, SignedOp>,
    state: State,
}

fn bit_get(set: &[u64], i: usize) -> bool {
    set.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn bit_set(set: &mut Vec<u64>, i: usize) {
    if set.len() <= i / 64 {
        set.resize(i / 64 + 1, 0);
    }
    set[i / 64] |= 1 << (i % 64);
}

impl Membership {
    /// Starts a log from its `Create` operation.
    pub fn from_genesis(genesis: SignedOp) -> Result<Self, LogError> {
        genesis.verify()?;
        let OpBody::Create { facilitator, .. } = &genesis.op.body else {
            return Err(LogError::BadGenesis);
        };
        if !genesis.op.parents.is_empty() || facilitator.id != genesis.op.author {
            return Err(LogError::BadGenesis);
        }
        let hash = genesis.hash();
        let mut log = Self {
            room_id: genesis.op.room_id,
            genesis: hash,
            ops: BTreeMap::from([(hash, genesis)]),
            order: Vec::new(),
            ancestors: BTreeMap::new(),
            index: BTreeMap::new(),
            pending: BTreeMap::new(),
            state: State::default(),
        };
        log.recompute();
        Ok(log)
    }

    /// Rebuilds a log from its operations (any order); the genesis must be among them.
    pub fn replay(ops: Vec<SignedOp>) -> Result<Self, LogError> {
        let genesis = ops
            .iter()
            .find(|op| op.op.parents.is_empty())
            .cloned()
            .ok_or(LogError::BadGenesis)?;
        let mut log = Self::from_genesis(genesis)?;
        for op in ops {
            match log.insert(op) {
                Ok(_) | Err(LogError::MissingParents) => {}
                Err(e) => return Err(e),
            }
        }
        if !log.pending.is_empty() {
            return Err(LogError::MissingParents);
        }
        Ok(log)
    }

    /// Adds one operation and recomputes the state. Returns `Ok(false)` for an operation
    /// already known (a replay changes nothing). An operation whose parents are missing
    /// is kept aside (bounded) and taken in when they arrive.
    pub fn insert(&mut self, op: SignedOp) -> Result<bool, LogError> {
        let changed = self.insert_quiet(op, true)?;
        if changed {
            self.recompute();
        }
        Ok(changed)
    }

    /// Adds several operations, recomputing the state once.
    pub fn insert_all(&mut self, ops: impl IntoIterator<Item = SignedOp>) -> bool {
        let mut changed = false;
        for op in ops {
            changed |= self.insert_quiet(op, true).unwrap_or(false);
        }
        if changed {
            self.recompute();
        }
        changed
    }

    /// [`Self::insert`] for an operation this member has just signed itself: its signature
    /// is not checked again (it cannot be wrong, and checking costs a tenth of a rotation).
    pub(crate) fn insert_own(&mut self, op: SignedOp) -> Result<bool, LogError> {
        let changed = self.insert_quiet(op, false)?;
        if changed {
            self.recompute();
        }
        Ok(changed)
    }

    fn insert_quiet(&mut self, op: SignedOp, verify: bool) -> Result<bool, LogError> {
        let hash = op.hash();
        if self.ops.contains_key(&hash) {
            return Ok(false);
        }
        if op.op.room_id != self.room_id {
            return Err(LogError::WrongRoom);
        }
        if op.op.parents.is_empty() {
            return Err(LogError::BadGenesis);
        }
        if verify {
            op.verify()?;
        }
        if self.ops.len() >= MAX_OPS {
            return Err(LogError::TooManyOps);
        }
        if op.op.parents.iter().any(|p| !self.ops.contains_key(p)) {
            if self.pending.len() < MAX_PENDING {
                self.pending.insert(hash, op);
            }
            return Err(LogError::MissingParents);
        }
        self.ops.insert(hash, op);
        // Take in any waiting operations whose parents are now all known.
        loop {
            let ready: Vec<OpHash> = self
                .pending
                .iter()
                .filter(|(_, p)| p.op.parents.iter().all(|h| self.ops.contains_key(h)))
                .map(|(h, _)| *h)
                .collect();
            if ready.is_empty() {
                break;
            }
            for h in ready {
                if let Some(p) = self.pending.remove(&h)
                    && self.ops.len() < MAX_OPS
                {
                    self.ops.insert(h, p);
                }
            }
        }
        Ok(true)
    }

    fn recompute(&mut self) {
        // Topological order, ties broken by hash.
        let mut children: BTreeMap<OpHash, Vec<OpHash>> = BTreeMap::new();
        let mut indegree: BTreeMap<OpHash, usize> = BTreeMap::new();
        for (h, op) in &self.ops {
            let parents: BTreeSet<&OpHash> = op.op.parents.iter().collect();
            indegree.insert(*h, parents.len());
            for p in parents {
                children.entry(*p).or_default().push(*h);
            }
        }
        let mut ready: BTreeSet<OpHash> = indegree
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(h, _)| *h)
            .collect();
        let mut order = Vec::with_capacity(self.ops.len());
        while let Some(h) = ready.pop_first() {
            order.push(h);
            for c in children.get(&h).into_iter().flatten() {
                if let Some(d) = indegree.get_mut(c) {
                    *d -= 1;
                    if *d == 0 {
                        ready.insert(*c);
                    }
                }
            }
        }
        let index: BTreeMap<OpHash, usize> =
            order.iter().enumerate().map(|(i, h)| (*h, i)).collect();
        let mut ancestors: BTreeMap<OpHash, Vec<u64>> = BTreeMap::new();
        for h in &order {
            let mut set = Vec::new();
            for p in &self.ops[h].op.parents {
                if let (Some(pi), Some(pset)) = (index.get(p), ancestors.get(p)) {
                    if set.len() < pset.len() {
                        set.resize(pset.len(), 0);
                    }
                    for (w, pw) in set.iter_mut().zip(pset) {
                        *w |= pw;
                    }
                    bit_set(&mut set, *pi);
                }
            }
            ancestors.insert(*h, set);
        }
        self.order = order;
        self.index = index;
        self.ancestors = ancestors;

        let mut excluded = BTreeSet::new();
        let mut state = self.fold(&excluded);
        for _ in 0..self.ops.len() + 1 {
            let next = self.removal_wins(&state);
            if next == excluded {
                break;
            }
            excluded = next;
            state = self.fold(&excluded);
        }
        self.state = state;
    }

    /// Whether `a` is a (strict) ancestor of `b`.
    pub fn is_ancestor(&self, a: &OpHash, b: &OpHash) -> bool {
        match (self.index.get(a), self.ancestors.get(b)) {
            (Some(i), Some(set)) => bit_get(set, *i),
            _ => false,
        }
    }

    /// Operations by members who departed, that are not ancestors of their departure.
    fn removal_wins(&self, state: &State) -> BTreeSet<OpHash> {
        let mut excluded = BTreeSet::new();
        for d in &self.order {
            if !state.valid.contains(d) {
                continue;
            }
            let op = &self.ops[d].op;
            let departed = match &op.body {
                OpBody::Remove { member, .. } => *member,
                OpBody::Leave => op.author,
                _ => continue,
            };
            for (h, other) in &self.ops {
                if other.op.author == departed && h != d && !self.is_ancestor(h, d) {
                    excluded.insert(*h);
                }
            }
        }
        excluded
    }

    fn fold(&self, excluded: &BTreeSet<OpHash>) -> State {
        let mut s = State::default();
        let mut keying: Vec<OpHash> = Vec::new();
        let mut departures: Vec<OpHash> = Vec::new();
        let mut ever: BTreeSet<MemberId> = BTreeSet::new();
        let mut departed_by: BTreeMap<MemberId, OpHash> = BTreeMap::new();
        for h in &self.order {
            if excluded.contains(h) {
                continue;
            }
            let op = &self.ops[h].op;
            let author = op.author;
            let is_member = s.members.contains_key(&author);
            let is_facilitator = s.facilitator == Some(author);
            let ok = match &op.body {
                OpBody::Create {
                    facilitator,
                    display_name,
                    peer,
                    retention_secs,
                    rotation,
                } => {
                    if *h != self.genesis || rotation.recipients() != BTreeSet::from([author]) {
                        false
                    } else {
                        s.members.insert(
                            author,
                            Member {
                                public: *facilitator,
                                display_name: display_name.clone(),
                                peer: peer.clone(),
                                role: Role::Facilitator,
                                admitted_by: *h,
                            },
                        );
                        s.order.push(author);
                        ever.insert(author);
                        s.facilitator = Some(author);
                        s.retention_secs = *retention_secs;
                        keying.push(*h);
                        true
                    }
                }
                OpBody::Admit {
                    member,
                    display_name,
                    peer,
                    invite_id,
                } => {
                    let ok = is_facilitator
                        && !ever.contains(&member.id)
                        && s.members.len() < MAX_MEMBERS
                        && !s.revoked.contains(invite_id)
                        && !s.used_invites.contains(invite_id);
                    if ok {
                        s.members.insert(
                            member.id,
                            Member {
                                public: *member,
                                display_name: display_name.clone(),
                                peer: peer.clone(),
                                role: Role::Member,
                                admitted_by: *h,
                            },
                        );
                        s.order.push(member.id);
                        ever.insert(member.id);
                        s.used_invites.insert(*invite_id);
                    }
                    ok
                }
                OpBody::Leave => {
                    let ok = is_member && !is_facilitator;
                    if ok {
                        if let Some(m) = s.members.remove(&author) {
                            s.former.insert(author, m);
                        }
                        departed_by.insert(author, *h);
                        departures.push(*h);
                        s.departures.push(*h);
                    }
                    ok
                }
                OpBody::Remove { member, rotation } => {
                    let recipients = rotation.recipients();
                    let ok = is_facilitator
                        && *member != author
                        && s.members.contains_key(member)
                        && !recipients.contains(member)
                        && recipients.contains(&author)
                        && self.may_receive(h, &recipients, &s.members, &departed_by);
                    if ok {
                        if let Some(m) = s.members.remove(member) {
                            s.former.insert(*member, m);
                        }
                        departed_by.insert(*member, *h);
                        keying.push(*h);
                        s.departures.push(*h);
                    }
                    ok
                }
                OpBody::Rotate { rotation } => {
                    let recipients = rotation.recipients();
                    let ok = is_member
                        && recipients.contains(&author)
                        && self.may_receive(h, &recipients, &s.members, &departed_by);
                    if ok {
                        keying.push(*h);
                    }
                    ok
                }
                OpBody::Handover { to } => {
                    let ok = is_facilitator && *to != author && s.members.contains_key(to);
                    if ok {
                        if let Some(m) = s.members.get_mut(&author) {
                            m.role = Role::Member;
                        }
                        if let Some(m) = s.members.get_mut(to) {
                            m.role = Role::Facilitator;
                        }
                        s.facilitator = Some(*to);
                    }
                    ok
                }
                OpBody::RevokeInvite { invite_id } => {
                    if is_facilitator {
                        s.revoked.insert(*invite_id);
                    }
                    is_facilitator
                }
            };
            if ok {
                s.valid.insert(*h);
            }
        }
        s.order.retain(|id| s.members.contains_key(id));

        // The frontier: valid keying operations with no valid keying descendant.
        let mut frontier: Vec<OpHash> = keying
            .iter()
            .filter(|k| !keying.iter().any(|other| self.is_ancestor(k, other)))
            .copied()
            .collect();
        frontier.sort();
        // Epoch number: the longest chain of keying operations.
        let mut depth: BTreeMap<OpHash, u64> = BTreeMap::new();
        for k in &keying {
            let d = keying
                .iter()
                .filter(|a| self.is_ancestor(a, k))
                .filter_map(|a| depth.get(a))
                .max()
                .map_or(0, |d| d + 1);
            depth.insert(*k, d);
        }
        s.epoch_number = frontier
            .iter()
            .filter_map(|k| depth.get(k))
            .copied()
            .max()
            .unwrap_or(0);
        s.keying_depth = depth;

        // A rotation is needed if a departure has no keying descendant, or a current member
        // can open neither a share of, nor was welcomed after, some frontier operation.
        let uncovered_departure = departures
            .iter()
            .any(|d| !frontier.iter().any(|k| self.is_ancestor(d, k)));
        let missing_secret = frontier.iter().any(|k| {
            let recipients = self.ops[k]
                .op
                .body
                .rotation()
                .map(Rotation::recipients)
                .unwrap_or_default();
            s.members
                .values()
                .any(|m| !recipients.contains(&m.public.id) && !self.is_ancestor(k, &m.admitted_by))
        });
        s.needs_rotation = uncovered_departure || missing_secret;
        s.frontier = frontier;
        s
    }

    /// Whether a keying operation `op` may seal its secret to `recipients`: each must be a
    /// current member, or one whose departure `op`'s author could not have known of (the
    /// departure is not an ancestor of `op`). Sealing to someone whose departure the author
    /// had seen makes the operation invalid. A secret that reached a concurrently departed
    /// member is harmless: that departure still needs a keying descendant (see
    /// `needs_rotation`), whose secret the departed member never gets.
    fn may_receive(
        &self,
        op: &OpHash,
        recipients: &BTreeSet<MemberId>,
        members: &BTreeMap<MemberId, Member>,
        departed_by: &BTreeMap<MemberId, OpHash>,
    ) -> bool {
        recipients.iter().all(|r| {
            members.contains_key(r) || departed_by.get(r).is_some_and(|d| !self.is_ancestor(d, op))
        })
    }

    /// The epoch number a valid keying operation starts (its depth among keying operations).
    pub fn keying_depth(&self, op: &OpHash) -> Option<u64> {
        self.state.keying_depth.get(op).copied()
    }

    /// The room this log belongs to.
    pub fn room_id(&self) -> RoomId {
        self.room_id
    }

    /// The state the log determines.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The current heads (operations no other operation names as parent), to be named as
    /// parents by the next operation.
    pub fn heads(&self) -> Vec<OpHash> {
        let mut named: BTreeSet<&OpHash> = BTreeSet::new();
        for op in self.ops.values() {
            named.extend(op.op.parents.iter());
        }
        self.ops
            .keys()
            .filter(|h| !named.contains(h))
            .copied()
            .collect()
    }

    /// Whether the operation is in the log (valid or not).
    pub fn contains(&self, op: &OpHash) -> bool {
        self.ops.contains_key(op)
    }

    /// An operation by hash.
    pub fn op(&self, op: &OpHash) -> Option<&SignedOp> {
        self.ops.get(op)
    }

    /// Every operation with its hash, by reference (hash order).
    pub fn iter(&self) -> impl Iterator<Item = (&OpHash, &SignedOp)> {
        self.ops.iter()
    }

    /// Every operation with its hash, by reference, in an order in which they can be
    /// replayed.
    pub fn in_order(&self) -> impl Iterator<Item = (&OpHash, &SignedOp)> {
        self.order.iter().filter_map(|h| self.ops.get_key_value(h))
    }

    /// All operations, in an order in which they can be replayed.
    pub fn ops(&self) -> Vec<SignedOp> {
        self.order.iter().map(|h| self.ops[h].clone()).collect()
    }

    /// How many operations the log holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Always false: a log has at least its genesis.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
