//! The membership log: who is in a room, in what role, and which key epoch is current.
//!
//! Every change to a room is an [`Op`], signed by its author's room key and naming the
//! operations its author had seen (`parents`, by hash), so the log is a DAG. The room's
//! state is a **deterministic function of the set of operations** ([`Membership::state`]):
//! every member holding the same operations computes the same members, roles and epoch,
//! whatever order the operations arrived in.
//!
//! ## Authority is causal
//!
//! Each operation is judged against the state of **its own causal past** (the operations it
//! descends from), never against a position in some total order. So whether an operation is
//! valid depends only on what its author had seen, and adding operations later never changes
//! it: an author cannot make an old operation invalid, or its own back-dated one valid, by
//! choosing parents or grinding a hash. An operation that is not valid in its own past is
//! refused and never stored ([`LogError::Invalid`]).
//!
//! Rules, each checked in the operation's past: the log starts with one `Create`, whose
//! author is the facilitator; only a member acts; only the facilitator admits, removes,
//! hands over and revokes invites; a member may leave (the facilitator must hand over
//! first); a departed member never comes back under the same key; a room never has more
//! than [`MAX_MEMBERS`] members; a keying operation's secret is sealed to exactly the
//! members of its past (less the removed member); a member other than the facilitator does
//! not rotate twice with nothing else done in the room in between ([`LogError::Invalid`]
//! names the rule).
//!
//! Concurrent operations (neither descends from the other) are then reconciled, again as
//! a function of the set:
//!
//! - **Handover wins.** An operation of the facilitator's role (admit, remove, revoke,
//!   hand over) is without effect if its author handed the role over concurrently. Of
//!   several concurrent handovers by one author, the one with the smallest hash counts.
//!   A room whose facilitator is gone (the role was handed to someone who was leaving at
//!   that moment) falls to its longest-standing member.
//!
//! An operation without effect never changes the state: what has effect is decided by
//! operations with effect only. So the next operation can name as parents the latest
//! operations with effect and pass over the others (which other nodes may not have taken).
//! - **Removal wins.** A member's leave or rotation concurrent with its removal (or with its
//!   own leave) is without effect.
//!
//! These two rules only ever take effect away from operations *concurrent* with a
//! handover or a departure: each is decided once, from operations that are themselves
//! decided by their own past, so there is no loop to converge and nothing depends on how
//! many operations there are.
//!
//! ## What a node takes in
//!
//! Besides refusing invalid operations, a node refuses valid ones of three kinds that could
//! only stuff its log ([`LogError::Refused`]): a new operation by a former member, a
//! facilitator's operation concurrent with that author's handover (or a handover beaten
//! by one that counts), and a rotation beaten by a concurrent one of the same author. It
//! refuses one only if taking it would change nothing at all (it would have no effect and
//! the state would be the same), so a node never lacks an operation that has effect: such
//! an operation is taken when it arrives again and something else has made it count (each
//! member hands its log over again and again), or when other operations of the same batch
//! descend from it and together they change something, or when another member's
//! operation names it as an ancestor. Every field of an operation is bounded
//! ([`Op::check_shape`]).
//!
//! ## Epochs
//!
//! `Create`, `Rotate` and `Remove` are *keying* operations: each carries a fresh random
//! secret sealed to every member ([`Rotation`]), with a commitment to it so that each
//! recipient can check the copy it opened. The current epoch is defined by the
//! **frontier**: the effective keying operations that have no effective keying descendant.
//! Concurrent rotations are combined, not raced: the epoch key is derived from the secrets
//! of every frontier operation, in hash order (see `room`). A removed member never
//! receives the removal's own secret, so it cannot compute any epoch key whose frontier
//! descends from its removal.
//!
//! A rotation is *needed* ([`State::needs_rotation`]) when a member left and no frontier
//! operation descends from its leave, when someone who is not a member can compute the
//! current key (a former member, or one whose admission has no effect but who may have
//! been welcomed), when a member holds no copy of some
//! frontier secret (admitted concurrently with a rotation), or when more than
//! [`WIDE_FRONTIER`] rotations were concurrent.
//!
//! ## Cost
//!
//! The state is kept up to date as operations arrive: each operation carries the set of its
//! ancestors (a bit set), the state of a past is computed from its *events* (every
//! operation but rotations: a handful in a room's life) and cached, and a rotation only
//! moves the frontier. Taking in one operation costs a few bit-set operations and a
//! signature check, whatever the length of the log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::crypto::{Sealed, SealedBox, hash};
use crate::identity::{MemberId, MemberKeys, MemberPublic};
use crate::invite::{InviteId, check_display_name, same_name};
use crate::room::RoomId;
use crate::wire;

/// The most members a room can have, facilitator included.
pub const MAX_MEMBERS: usize = 8;
/// The most operations a log holds: a room that changes its key every week reaches it after
/// about 150 years, and its record (rotations whose epochs are past keep no sealed shares,
/// about 450 bytes each in a room of eight) stays under the store's 4 MiB. A member who is
/// not the facilitator adds at most one rotation for each other operation in the room. The
/// last [`EVENT_RESERVE`] places are kept for operations other than rotations, so that a
/// facilitator can always still remove someone.
pub const MAX_OPS: usize = 8192;
/// Places at the end of the log kept for operations other than rotations.
pub const EVENT_RESERVE: usize = 256;
/// The most operations kept waiting for their parents.
pub const MAX_PENDING: usize = 256;
/// The most operations of one author kept waiting for their parents.
pub const MAX_PENDING_PER_AUTHOR: usize = 32;
/// The most parents an operation names. A log's heads are its authors' latest concurrent
/// operations: at most one or two per member of a room of eight.
pub const MAX_PARENTS: usize = 16;
/// The longest network peer id an operation carries, in bytes (an ed25519 libp2p peer id
/// is 38).
pub const MAX_PEER_LEN: usize = 64;
/// The most keying operations a frontier (an epoch) can name.
pub const MAX_FRONTIER: usize = 32;
/// A frontier wider than this asks for a rotation that combines it into one.
pub const WIDE_FRONTIER: usize = 4;
/// The shortest time a room keeps retired epoch keys, in seconds (one hour).
pub const MIN_RETENTION_SECS: u64 = 3600;
/// The longest time a room keeps retired epoch keys, in seconds (30 days).
pub const MAX_RETENTION_SECS: u64 = 30 * 24 * 3600;

const OP_LABEL: &[u8] = b"confer/v2/op";
const SHARES_LABEL: &[u8] = b"confer/v2/shares";
const COMMITMENT_LABEL: &[u8] = b"confer/v2/epoch-secret-commitment";
/// The length of one sealed share: a 32-byte secret and the 16-byte Poly1305 tag.
const SHARE_LEN: usize = 32 + 16;

/// The hash that names an operation.
pub type OpHash = [u8; 32];

/// The commitment a keying operation carries to its secret: SHA-256 under its own label,
/// over the room id and the secret. The secret is 32 random bytes, so the commitment
/// reveals nothing of it; each recipient checks that the secret it opened matches, so an
/// author cannot hand different members different secrets under one operation.
pub fn commitment(room: &RoomId, secret: &[u8; 32]) -> [u8; 32] {
    hash(COMMITMENT_LABEL, &[&room.0, secret])
}

/// A keying operation's sealed copies of its secret, one per recipient; or, once a node has
/// deleted them (the epoch is past), only their digest, which the signature covers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Shares {
    /// One sealed copy per recipient, in the order of [`Rotation::recipients`].
    Sealed(Vec<Sealed>),
    /// The digest of the sealed copies, which were deleted.
    Dropped([u8; 32]),
}

impl Shares {
    /// The digest the operation's signature covers.
    pub fn digest(&self) -> [u8; 32] {
        match self {
            Shares::Sealed(copies) => {
                let parts: Vec<&[u8]> = copies
                    .iter()
                    .flat_map(|s| [s.nonce.as_slice(), s.ciphertext.as_slice()])
                    .collect();
                hash(SHARES_LABEL, &parts)
            }
            Shares::Dropped(digest) => *digest,
        }
    }
}

/// A fresh epoch secret: a commitment to it and one sealed copy per recipient.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rotation {
    /// The ephemeral X25519 public key all copies were sealed with.
    pub ephemeral: [u8; 32],
    /// [`commitment`] to the secret.
    pub commitment: [u8; 32],
    /// Who the secret is sealed to, in increasing order.
    pub recipients: Vec<MemberId>,
    /// The sealed copies.
    pub shares: Shares,
}

impl Rotation {
    /// The members who can open this rotation's secret.
    pub fn recipients(&self) -> BTreeSet<MemberId> {
        self.recipients.iter().copied().collect()
    }

    /// The copy sealed to `member`, unless the copies were deleted.
    pub fn share_for(&self, member: &MemberId) -> Option<SealedBox> {
        let Shares::Sealed(copies) = &self.shares else {
            return None;
        };
        let i = self.recipients.iter().position(|r| r == member)?;
        copies.get(i).map(|sealed| SealedBox {
            ephemeral: self.ephemeral,
            sealed: sealed.clone(),
        })
    }

    fn check_shape(&self) -> bool {
        self.recipients.len() <= MAX_MEMBERS
            && self.recipients.windows(2).all(|w| w[0] < w[1])
            && match &self.shares {
                Shares::Sealed(copies) => {
                    copies.len() == self.recipients.len()
                        && copies.iter().all(|c| c.ciphertext.len() == SHARE_LEN)
                }
                Shares::Dropped(_) => true,
            }
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
    /// The member a handover named takes the role: its node says so as soon as it learns
    /// of the handover. Of a facilitator's concurrent handovers, one taken counts before
    /// any other, so a second handover signed later, back-dated to before the first,
    /// changes nothing once the first was taken.
    TakeRole {
        /// The handover taken.
        handover: OpHash,
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

    fn rotation_mut(&mut self) -> Option<&mut Rotation> {
        match self {
            OpBody::Create { rotation, .. }
            | OpBody::Remove { rotation, .. }
            | OpBody::Rotate { rotation } => Some(rotation),
            _ => None,
        }
    }

    /// Whether only the facilitator may do this.
    fn is_privileged(&self) -> bool {
        matches!(
            self,
            OpBody::Admit { .. }
                | OpBody::Remove { .. }
                | OpBody::Handover { .. }
                | OpBody::RevokeInvite { .. }
        )
    }

    /// Whether the operation changes who is in the room or in what role (everything but a
    /// rotation).
    fn is_event(&self) -> bool {
        !matches!(self, OpBody::Rotate { .. })
    }
}

/// One membership operation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Op {
    /// The room this operation belongs to.
    pub room_id: RoomId,
    /// Hashes of the operations the author had seen (the log's heads), in increasing order.
    pub parents: Vec<OpHash>,
    /// Who made the change.
    pub author: MemberId,
    /// Author's clock, Unix milliseconds; informational only.
    pub created_at: u64,
    /// The change.
    pub body: OpBody,
}

impl Op {
    /// The bytes the signature covers: the operation with its sealed shares replaced by
    /// their digest, so a copy whose shares were deleted still verifies and keeps its hash.
    fn signed_bytes(&self) -> Result<Vec<u8>, LogError> {
        let mut view = self.clone();
        if let Some(rotation) = view.body.rotation_mut() {
            rotation.shares = Shares::Dropped(rotation.shares.digest());
        }
        wire::encode(&view).map_err(|_| LogError::Malformed)
    }

    /// Checks every field against its bound: parents (at most [`MAX_PARENTS`], in
    /// increasing order, none for `Create` only), names (as for display names), peer ids
    /// (at most [`MAX_PEER_LEN`] bytes), rotations (at most [`MAX_MEMBERS`] recipients in
    /// increasing order, one share of the right length each) and retention (between
    /// [`MIN_RETENTION_SECS`] and [`MAX_RETENTION_SECS`]).
    pub fn check_shape(&self) -> Result<(), LogError> {
        let parents_ok = self.parents.len() <= MAX_PARENTS
            && self.parents.windows(2).all(|w| w[0] < w[1])
            && (self.parents.is_empty() == matches!(self.body, OpBody::Create { .. }));
        let body_ok = match &self.body {
            OpBody::Create {
                display_name,
                peer,
                retention_secs,
                ..
            } => {
                check_display_name(display_name).is_ok()
                    && peer.len() <= MAX_PEER_LEN
                    && (MIN_RETENTION_SECS..=MAX_RETENTION_SECS).contains(retention_secs)
            }
            OpBody::Admit {
                display_name, peer, ..
            } => check_display_name(display_name).is_ok() && peer.len() <= MAX_PEER_LEN,
            _ => true,
        };
        let rotation_ok = self.body.rotation().is_none_or(Rotation::check_shape);
        if parents_ok && body_ok && rotation_ok {
            Ok(())
        } else {
            Err(LogError::Malformed)
        }
    }
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
    pub fn sign(op: Op, keys: &MemberKeys) -> Result<Self, LogError> {
        let signed = op.signed_bytes()?;
        Ok(Self {
            signature: keys.sign(OP_LABEL, &signed),
            op,
        })
    }

    /// The operation's name: a hash of the operation (shares by digest) and its signature.
    pub fn hash(&self) -> OpHash {
        let encoded = self.op.signed_bytes().unwrap_or_default();
        hash(OP_LABEL, &[&encoded, &self.signature.to_bytes()])
    }

    fn verify(&self) -> Result<(), LogError> {
        let signed = self.op.signed_bytes()?;
        self.op
            .author
            .verify(OP_LABEL, &signed, &self.signature)
            .map_err(|_| LogError::BadSignature)
    }

    /// This operation with its sealed shares deleted (kept as their digest): what a node
    /// keeps of a keying operation once the epochs that need its secret are gone, and what
    /// a joiner is given (it is not among the recipients of anything before it came).
    pub fn without_shares(&self) -> SignedOp {
        let mut op = self.clone();
        if let Some(rotation) = op.op.body.rotation_mut() {
            rotation.shares = Shares::Dropped(rotation.shares.digest());
        }
        op
    }
}

/// Why an operation was not taken into the log.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum LogError {
    /// A field is out of bounds, or the operation does not encode.
    #[error("operation is malformed")]
    Malformed,
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
    /// The author was not entitled to it in the operation's own past.
    #[error("operation breaks a rule of the room: {0}")]
    Invalid(Rule),
    /// Valid, but it could only stuff the log (see the module docs).
    #[error("operation is not taken: {0}")]
    Refused(Refusal),
    /// The log is full.
    #[error("the room's log is full")]
    TooManyOps,
}

/// The rule an invalid operation breaks, judged in its own past.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The author is not a member.
    #[error("its author is not a member")]
    NotMember,
    /// Only the facilitator may do this.
    #[error("only the facilitator may do that")]
    NotFacilitator,
    /// The facilitator must hand the role over before leaving.
    #[error("the facilitator cannot leave")]
    FacilitatorLeaves,
    /// The subject is not a current member, or is the author.
    #[error("its subject is not another current member")]
    NoSuchMember,
    /// The key was a member once, or the room is full, or the invite is spent.
    #[error("the admission is not allowed")]
    BadAdmission,
    /// A keying operation's secret is not sealed to exactly the members.
    #[error("the new key is not sealed to exactly the members")]
    WrongRecipients,
    /// The author rotated last, and nothing else was done in the room since.
    #[error("its author made the last rotation and nothing else has happened since")]
    RotatesAgain,
    /// The invite was revoked already.
    #[error("the invite was revoked already")]
    AlreadyRevoked,
    /// The handover is not one to the author in its past, or it was taken already, or a
    /// concurrent handover of the same facilitator was taken.
    #[error("the role cannot be taken by this handover")]
    NotYourRole,
}

/// Why a valid operation was not taken (see the module docs).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its author is no longer a member.
    #[error("its author is no longer a member")]
    FormerMember,
    /// Its author handed the facilitator's role over concurrently.
    #[error("its author handed the role over concurrently")]
    HandedOver,
    /// Its author made a concurrent rotation with a smaller hash, which has the effect.
    #[error("its author made a concurrent rotation that counts instead")]
    ConcurrentRotation,
    /// Its author is unknown, and its parents have not arrived.
    #[error("its author is unknown")]
    UnknownAuthor,
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

/// A set of log positions (arrival indices), one bit each.
type Bits = Vec<u64>;

fn bit_get(set: &[u64], i: u32) -> bool {
    let i = i as usize;
    set.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn bit_set(set: &mut Bits, i: u32) {
    let i = i as usize;
    if set.len() <= i / 64 {
        set.resize(i / 64 + 1, 0);
    }
    set[i / 64] |= 1 << (i % 64);
}

fn bit_or(set: &mut Bits, other: &[u64]) {
    if set.len() < other.len() {
        set.resize(other.len(), 0);
    }
    for (w, o) in set.iter_mut().zip(other) {
        *w |= o;
    }
}

/// Who is in the room and in what role, as a set of events determines it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Roster {
    members: BTreeMap<MemberId, Member>,
    /// Admission order, for stable listings.
    order: Vec<MemberId>,
    former: BTreeMap<MemberId, Member>,
    facilitator: Option<MemberId>,
    /// Every key ever admitted (members and former members).
    ever: BTreeSet<MemberId>,
    revoked: BTreeSet<InviteId>,
    used_invites: BTreeSet<InviteId>,
    retention_secs: u64,
    /// Effective events (positions).
    effective: BTreeSet<u32>,
    /// Effective departures (positions), in the order applied.
    departures: Vec<u32>,
    /// Effective handovers (positions).
    handovers: Vec<u32>,
    /// Every event of the set, in its canonical order (topological, ties by hash).
    order_of_events: Vec<u32>,
    /// Handovers (positions) their target has taken.
    taken: BTreeSet<u32>,
}

/// The room's state, computed from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    roster: Arc<Roster>,
    /// Whether each operation has effect.
    effective: HashMap<OpHash, bool>,
    frontier: Vec<OpHash>,
    epoch_number: u64,
    needs_rotation: bool,
    departures: Vec<OpHash>,
    keying_depth: BTreeMap<OpHash, u64>,
}

impl State {
    /// Whether an operation has effect in this state (it is in the log, and no concurrent
    /// handover or departure took its effect away).
    pub fn is_valid(&self, op: &OpHash) -> bool {
        self.effective.get(op).copied().unwrap_or(false)
    }

    /// Current members, facilitator first, then in order of admission.
    pub fn members(&self) -> Vec<&Member> {
        let r = &self.roster;
        let mut out: Vec<&Member> = r.order.iter().filter_map(|id| r.members.get(id)).collect();
        out.sort_by_key(|m| m.role != Role::Facilitator);
        out
    }

    /// A current member.
    pub fn member(&self, id: &MemberId) -> Option<&Member> {
        self.roster.members.get(id)
    }

    /// A member who has left or been removed.
    pub fn former_member(&self, id: &MemberId) -> Option<&Member> {
        self.roster.former.get(id)
    }

    /// A current member, or else a former one.
    pub fn member_or_former(&self, id: &MemberId) -> Option<&Member> {
        self.member(id).or_else(|| self.former_member(id))
    }

    /// Every former member, in no particular order.
    pub fn former_members(&self) -> impl Iterator<Item = &Member> {
        self.roster.former.values()
    }

    /// Whether `peer` (libp2p peer id bytes) belongs to a former member.
    pub fn had_peer(&self, peer: &[u8]) -> bool {
        self.roster.former.values().any(|m| m.peer == peer)
    }

    /// Whether `peer` (libp2p peer id bytes) belongs to a current or former member.
    pub fn has_peer(&self, peer: &[u8]) -> bool {
        self.roster
            .members
            .values()
            .chain(self.roster.former.values())
            .any(|m| m.peer == peer)
    }

    /// The facilitator.
    pub fn facilitator(&self) -> Option<MemberId> {
        self.roster.facilitator
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
        self.roster.revoked.contains(invite)
    }

    /// Whether an admission already used the invite.
    pub fn is_used(&self, invite: &InviteId) -> bool {
        self.roster.used_invites.contains(invite)
    }

    /// How long old epoch keys are kept, in seconds.
    pub fn retention_secs(&self) -> u64 {
        self.roster.retention_secs
    }

    /// The effective departures (`Leave` and `Remove` operations), in log order.
    pub fn departures(&self) -> &[OpHash] {
        &self.departures
    }
}

/// One operation held, with what the log keeps about it.
#[derive(Debug, Clone)]
struct Entry {
    hash: OpHash,
    op: SignedOp,
    /// Its strict ancestors.
    ancestors: Bits,
}

/// A room's log: every operation taken in, and the state they determine.
#[derive(Debug, Clone)]
pub struct Membership {
    room_id: RoomId,
    /// Operations in the order they were taken in (parents before children).
    entries: Vec<Entry>,
    index: HashMap<OpHash, u32>,
    children: Vec<Vec<u32>>,
    /// Operations no other names as parent.
    heads: BTreeSet<u32>,
    /// Each author's operations.
    by_author: BTreeMap<MemberId, Bits>,
    /// Each author's rotations, in arrival order.
    rotations_by: BTreeMap<MemberId, Vec<u32>>,
    /// For each operation, the depth of the deepest effective keying operation among it
    /// and its ancestors.
    reach: Vec<Option<u64>>,
    /// Set while a stored log is taken in: the state is computed once at the end.
    deferred: bool,
    /// Rotations without effect because their author made a concurrent one with a
    /// smaller hash.
    forked: BTreeSet<u32>,
    /// Positions of events (all operations but rotations), in arrival order.
    events: Vec<u32>,
    /// Operations waiting for their parents, with the order they came in.
    pending: BTreeMap<OpHash, (u64, SignedOp)>,
    pending_seq: u64,
    /// Rosters of pasts already computed, by the set of events in them.
    rosters: HashMap<Bits, Arc<Roster>>,
    state: State,
}

/// The most rosters of pasts kept: one per distinct set of events seen recently.
const MAX_CACHED_ROSTERS: usize = 64;

/// What to check before taking an operation in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// From the network: verify the signature, refuse stuffing.
    Outside,
    /// From the network, but named as an ancestor by another member's operation in the
    /// same batch: verify the signature, take it even if it is of a kind that is refused.
    Needed,
    /// From the network, named as an ancestor by a later operation of its own author, a
    /// member, in the same batch: taken even if it is of a kind that is refused, unless its
    /// author has left (a node restored from an older copy of its profile forks its own
    /// history, then carries on from the fork).
    NeededByAuthor,
    /// Authored by this member now: taken as a member's node would from outside, but its
    /// signature is not checked again.
    Own,
    /// From this member's own sealed store: taken as it was.
    Stored,
}

impl Membership {
    /// Starts a log from its `Create` operation.
    pub fn from_genesis(genesis: SignedOp) -> Result<Self, LogError> {
        genesis.verify()?;
        Self::start(genesis)
    }

    fn start(genesis: SignedOp) -> Result<Self, LogError> {
        genesis.op.check_shape()?;
        let OpBody::Create {
            facilitator,
            rotation,
            ..
        } = &genesis.op.body
        else {
            return Err(LogError::BadGenesis);
        };
        if facilitator.id != genesis.op.author
            || rotation.recipients != [genesis.op.author]
            || !crate::crypto::is_usable_agreement_key(&facilitator.agreement)
        {
            return Err(LogError::BadGenesis);
        }
        let mut log = Self {
            room_id: genesis.op.room_id,
            entries: Vec::new(),
            index: HashMap::new(),
            children: Vec::new(),
            heads: BTreeSet::new(),
            by_author: BTreeMap::new(),
            rotations_by: BTreeMap::new(),
            reach: Vec::new(),
            deferred: false,
            forked: BTreeSet::new(),
            events: Vec::new(),
            pending: BTreeMap::new(),
            pending_seq: 0,
            rosters: HashMap::new(),
            state: State::default(),
        };
        log.push(genesis.hash(), genesis, Bits::new());
        log.recompute();
        Ok(log)
    }

    /// Rebuilds a log received from someone else (a welcome): every operation is checked
    /// as if it arrived from the network, in any order; the genesis must be among them.
    pub fn replay(ops: Vec<SignedOp>) -> Result<Self, LogError> {
        let genesis = ops
            .iter()
            .find(|op| op.op.parents.is_empty())
            .cloned()
            .ok_or(LogError::BadGenesis)?;
        let mut log = Self::from_genesis(genesis)?;
        log.take_batch(ops, false)?;
        Ok(log)
    }

    /// Rebuilds a log from this member's own store, where only operations it had taken in
    /// were written: signatures are not checked again (the store is sealed under the
    /// profile's key), every rule is.
    pub fn restore(ops: Vec<SignedOp>) -> Result<Self, LogError> {
        let genesis = ops
            .iter()
            .find(|op| op.op.parents.is_empty())
            .cloned()
            .ok_or(LogError::BadGenesis)?;
        let mut log = Self::start(genesis)?;
        log.take_batch(ops, true)?;
        Ok(log)
    }

    /// Takes in a whole log (in any order), every operation or fail.
    fn take_batch(&mut self, ops: Vec<SignedOp>, stored: bool) -> Result<(), LogError> {
        if ops.len() > MAX_OPS {
            return Err(LogError::TooManyOps);
        }
        let trust = if stored { Trust::Stored } else { Trust::Needed };
        self.deferred = true;
        let mut failed = None;
        for (op, _) in self.batch_order(ops, false) {
            match self.take(op, trust) {
                Ok(_) | Err(LogError::MissingParents) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.deferred = false;
        self.recompute();
        if let Some(e) = failed {
            return Err(e);
        }
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(LogError::MissingParents)
        }
    }

    /// Adds one operation received from outside. Returns `Ok(false)` for an operation
    /// already known (a replay changes nothing). An operation whose parents are missing
    /// is kept aside (bounded) and taken in when they arrive.
    pub fn insert(&mut self, op: SignedOp) -> Result<bool, LogError> {
        self.take(op, Trust::Outside)
    }

    /// Adds several operations received together (a member's log): each is checked, and
    /// one of a refused kind is still taken when another member's operation in the batch
    /// names it as an ancestor. Returns how many were new, and how many were refused.
    pub fn insert_all(&mut self, ops: impl IntoIterator<Item = SignedOp>) -> Inserted {
        let mut result = Inserted::default();
        let mut refused: BTreeMap<OpHash, SignedOp> = BTreeMap::new();
        // With whether it was refused (its author unknown) rather than kept waiting.
        let mut waiting: Vec<(SignedOp, bool)> = Vec::new();
        for (op, trust) in self.batch_order(ops.into_iter().collect(), true) {
            match self.take(op.clone(), trust) {
                Ok(true) => result.new += 1,
                Ok(false) => {}
                Err(LogError::MissingParents) => waiting.push((op, false)),
                Err(LogError::Refused(Refusal::UnknownAuthor)) => waiting.push((op, true)),
                Err(LogError::Refused(_)) => {
                    refused.insert(op.hash(), op);
                }
                Err(_) => result.refused += 1,
            }
        }
        // An operation waiting for parents this batch did not take (each changed nothing
        // alone) is taken together with them if, together, they change something: a
        // node never lacks what has effect.
        for (op, unknown_author) in waiting {
            if self.index.contains_key(&op.hash()) {
                continue;
            }
            let Some(group) = self.group_of(op, &refused) else {
                result.refused += usize::from(unknown_author);
                continue;
            };
            let hashes: Vec<OpHash> = group.iter().map(SignedOp::hash).collect();
            if self.take_group(group) {
                result.new += hashes.len();
                for h in &hashes {
                    refused.remove(h);
                }
            } else {
                result.refused += 1;
            }
        }
        result.refused += refused.len();
        result
    }

    /// `op` and the operations of `refused` it descends from, parents first; `None` if
    /// some other parent is missing.
    fn group_of(
        &self,
        op: SignedOp,
        refused: &BTreeMap<OpHash, SignedOp>,
    ) -> Option<Vec<SignedOp>> {
        let mut group: Vec<SignedOp> = Vec::new();
        let mut placed: BTreeSet<OpHash> = BTreeSet::new();
        // Depth first, each operation after its parents.
        let mut stack: Vec<(SignedOp, bool)> = vec![(op, false)];
        while let Some((op, expanded)) = stack.pop() {
            let h = op.hash();
            if placed.contains(&h) {
                continue;
            }
            if expanded {
                placed.insert(h);
                group.push(op);
                continue;
            }
            let parents = op.op.parents.clone();
            stack.push((op, true));
            for p in parents {
                if self.index.contains_key(&p) || placed.contains(&p) {
                    continue;
                }
                stack.push((refused.get(&p)?.clone(), false));
            }
        }
        Some(group)
    }

    /// Takes in `group` (parents first) as one: kept if together the operations change
    /// the state, else all put back out. Returns whether they were kept.
    fn take_group(&mut self, group: Vec<SignedOp>) -> bool {
        let start = self.entries.len();
        let before = (self.state.clone(), self.forked.clone(), self.reach.clone());
        let hashes: Vec<OpHash> = group.iter().map(SignedOp::hash).collect();
        for h in &hashes {
            self.pending.remove(h);
        }
        self.deferred = true;
        let taken = group
            .into_iter()
            .all(|op| matches!(self.take(op, Trust::Needed), Ok(true)));
        self.deferred = false;
        if taken {
            self.recompute();
            if !hashes.iter().all(|h| self.inert(&before.0, h)) {
                self.take_waiting();
                return true;
            }
        }
        while self.entries.len() > start {
            self.pop();
        }
        (self.state, self.forked, self.reach) = before;
        false
    }

    /// [`Self::insert`] for an operation this member has just signed itself: its signature
    /// is not checked again (it cannot be wrong, and checking costs a tenth of a rotation).
    pub(crate) fn insert_own(&mut self, op: SignedOp) -> Result<bool, LogError> {
        self.take(op, Trust::Own)
    }

    /// Orders a batch parents first, dropping known operations, and marks each operation
    /// that another current member's operation in the batch descends from (`needed`).
    fn batch_order(&self, ops: Vec<SignedOp>, mark: bool) -> Vec<(SignedOp, Trust)> {
        // In the order given (a log is handed over parents first, so one pass places it).
        let mut batch: Vec<(OpHash, SignedOp)> = Vec::with_capacity(ops.len());
        let mut in_batch: HashMap<OpHash, usize> = HashMap::with_capacity(ops.len());
        for op in ops {
            let h = op.hash();
            if !self.index.contains_key(&h) && !in_batch.contains_key(&h) {
                in_batch.insert(h, batch.len());
                batch.push((h, op));
            }
        }
        let mut needed: BTreeSet<OpHash> = BTreeSet::new();
        let mut needed_by_author: BTreeSet<OpHash> = BTreeSet::new();
        if mark {
            let state = &self.state;
            for (h, op) in &batch {
                if state.member(&op.op.author).is_none() {
                    continue;
                }
                let author = op.op.author;
                let mut stack = vec![*h];
                let mut seen = BTreeSet::new();
                while let Some(x) = stack.pop() {
                    let Some(&xi) = in_batch.get(&x) else {
                        continue;
                    };
                    for p in &batch[xi].1.op.parents {
                        let Some(&pi) = in_batch.get(p) else { continue };
                        if seen.insert(*p) {
                            if batch[pi].1.op.author != author {
                                needed.insert(*p);
                            } else {
                                needed_by_author.insert(*p);
                            }
                            stack.push(*p);
                        }
                    }
                }
            }
        }
        let trust = |h: &OpHash| {
            if needed.contains(h) {
                Trust::Needed
            } else if needed_by_author.contains(h) {
                Trust::NeededByAuthor
            } else {
                Trust::Outside
            }
        };
        // Parents first (Kahn's algorithm within the batch, in the order given among those
        // ready): linear, whatever order the batch came in.
        let mut waiting_on: Vec<usize> = vec![0; batch.len()];
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); batch.len()];
        for (i, (_, op)) in batch.iter().enumerate() {
            for p in &op.op.parents {
                if let Some(&pi) = in_batch.get(p) {
                    waiting_on[i] += 1;
                    children[pi].push(i);
                }
            }
        }
        let mut ready: BTreeSet<usize> = (0..batch.len()).filter(|&i| waiting_on[i] == 0).collect();
        let mut order = Vec::with_capacity(batch.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &c in &children[i] {
                waiting_on[c] -= 1;
                if waiting_on[c] == 0 {
                    ready.insert(c);
                }
            }
        }
        let mut slots: Vec<Option<(OpHash, SignedOp)>> = batch.into_iter().map(Some).collect();
        let mut out = Vec::with_capacity(slots.len());
        for i in order {
            if let Some((h, op)) = slots[i].take() {
                out.push((op, trust(&h)));
            }
        }
        let rest: Vec<(OpHash, SignedOp)> = slots.into_iter().flatten().collect();
        // Whatever is left waits for parents that are not in the batch.
        out.extend(rest.into_iter().map(|(h, op)| {
            let t = trust(&h);
            (op, t)
        }));
        out
    }

    fn take(&mut self, op: SignedOp, trust: Trust) -> Result<bool, LogError> {
        let hash = op.hash();
        if self.index.contains_key(&hash) {
            return Ok(false);
        }
        if op.op.room_id != self.room_id {
            return Err(LogError::WrongRoom);
        }
        op.op.check_shape()?;
        if op.op.parents.is_empty() {
            return Err(LogError::BadGenesis);
        }
        if op.op.parents.iter().any(|p| !self.index.contains_key(p)) {
            return self.wait(hash, op);
        }
        if matches!(
            trust,
            Trust::Outside | Trust::Needed | Trust::NeededByAuthor
        ) {
            op.verify()?;
        }
        let mut ancestors = Bits::new();
        for p in &op.op.parents {
            let i = self.index[p];
            bit_or(&mut ancestors, &self.entries[i as usize].ancestors);
            bit_set(&mut ancestors, i);
        }
        self.check(&op.op, &ancestors).map_err(LogError::Invalid)?;
        let refusal = match trust {
            Trust::Outside => self.refusal(&op.op, &hash, &ancestors),
            Trust::NeededByAuthor => self
                .refusal(&op.op, &hash, &ancestors)
                .filter(|r| *r == Refusal::FormerMember),
            _ => None,
        };
        let limit = if op.op.body.is_event() {
            MAX_OPS
        } else {
            MAX_OPS - EVENT_RESERVE
        };
        if self.entries.len() >= limit {
            return Err(LogError::TooManyOps);
        }
        let event = op.op.body.is_event();
        self.push(hash, op, ancestors);
        if self.deferred {
            return Ok(true);
        }
        if let Some(refusal) = refusal {
            // An operation of a refused kind is not taken only if taking it would change
            // nothing: a node must never lack an operation that has effect.
            let before = (self.state.clone(), self.forked.clone(), self.reach.clone());
            self.recompute();
            if self.inert(&before.0, &hash) {
                self.pop();
                (self.state, self.forked, self.reach) = before;
                return Err(LogError::Refused(refusal));
            }
        } else if event || self.forks_rotations() {
            self.recompute();
        } else {
            self.advance_frontier();
        }
        self.take_waiting();
        Ok(true)
    }

    /// Whether the state is what it was in `before` and the operation `hash`, just taken
    /// in, has no effect.
    fn inert(&self, before: &State, hash: &OpHash) -> bool {
        let (s, b) = (&self.state, before);
        !s.is_valid(hash)
            && s.roster.members == b.roster.members
            && s.roster.former == b.roster.former
            && s.roster.facilitator == b.roster.facilitator
            && s.roster.revoked == b.roster.revoked
            && s.roster.used_invites == b.roster.used_invites
            && s.roster.handovers == b.roster.handovers
            && s.roster.taken == b.roster.taken
            && s.frontier == b.frontier
            && s.epoch_number == b.epoch_number
            && s.needs_rotation == b.needs_rotation
            && s.departures == b.departures
    }

    /// Undoes [`Self::push`] of the last operation (whose state the caller restores).
    fn pop(&mut self) {
        let Some(entry) = self.entries.pop() else {
            return;
        };
        let i = self.entries.len() as u32;
        self.children.pop();
        for p in &entry.op.op.parents {
            if let Some(&pi) = self.index.get(p) {
                let children = &mut self.children[pi as usize];
                children.retain(|&c| c != i);
                if children.is_empty() {
                    self.heads.insert(pi);
                }
            }
        }
        self.heads.remove(&i);
        if let Some(bits) = self.by_author.get_mut(&entry.op.op.author)
            && let Some(w) = bits.get_mut(i as usize / 64)
        {
            *w &= !(1 << (i % 64));
        }
        if entry.op.op.body.is_event() {
            self.events.pop();
            // Cached rosters are keyed by the events in a past, by their place among
            // events: the place this one had will be another's.
            self.rosters.clear();
        } else if let Some(mine) = self.rotations_by.get_mut(&entry.op.op.author) {
            mine.pop();
        }
        self.reach.pop();
        self.index.remove(&entry.hash);
    }

    /// Keeps an operation whose parents have not arrived, if its author is known.
    fn wait(&mut self, hash: OpHash, op: SignedOp) -> Result<bool, LogError> {
        let author = op.op.author;
        if self.state.member_or_former(&author).is_none() {
            return Err(LogError::Refused(Refusal::UnknownAuthor));
        }
        let theirs: Vec<(u64, OpHash)> = self
            .pending
            .iter()
            .filter(|(_, (_, p))| p.op.author == author)
            .map(|(h, (seq, _))| (*seq, *h))
            .collect();
        // The oldest waiting operation makes way: of this author's when it has too many,
        // else of anyone's.
        let evict = if theirs.len() >= MAX_PENDING_PER_AUTHOR {
            theirs.iter().min().map(|(_, h)| *h)
        } else if self.pending.len() >= MAX_PENDING {
            self.pending
                .iter()
                .min_by_key(|(_, (seq, _))| *seq)
                .map(|(h, _)| *h)
        } else {
            None
        };
        if let Some(h) = evict {
            self.pending.remove(&h);
        }
        self.pending_seq += 1;
        self.pending.insert(hash, (self.pending_seq, op));
        Err(LogError::MissingParents)
    }

    /// Takes in waiting operations whose parents are now all known.
    fn take_waiting(&mut self) {
        loop {
            let ready: Vec<OpHash> = self
                .pending
                .iter()
                .filter(|(_, (_, p))| p.op.parents.iter().all(|h| self.index.contains_key(h)))
                .map(|(h, _)| *h)
                .collect();
            if ready.is_empty() {
                return;
            }
            for h in ready {
                if let Some((_, op)) = self.pending.remove(&h) {
                    let _ = self.take(op, Trust::Outside);
                }
            }
        }
    }

    fn push(&mut self, hash: OpHash, op: SignedOp, ancestors: Bits) {
        let i = self.entries.len() as u32;
        for p in &op.op.parents {
            if let Some(&pi) = self.index.get(p) {
                self.children[pi as usize].push(i);
                self.heads.remove(&pi);
            }
        }
        self.heads.insert(i);
        bit_set(self.by_author.entry(op.op.author).or_default(), i);
        if op.op.body.is_event() {
            self.events.push(i);
        } else {
            self.rotations_by.entry(op.op.author).or_default().push(i);
        }
        self.reach.push(None);
        self.index.insert(hash, i);
        self.children.push(Vec::new());
        self.entries.push(Entry {
            hash,
            op,
            ancestors,
        });
    }

    fn anc(&self, a: u32, b: u32) -> bool {
        bit_get(&self.entries[b as usize].ancestors, a)
    }

    fn concurrent(&self, a: u32, b: u32) -> bool {
        a != b && !self.anc(a, b) && !self.anc(b, a)
    }

    /// The roster of the past `ancestors` (a down-closed set of positions).
    fn roster_of(&mut self, ancestors: &[u64]) -> Arc<Roster> {
        let mut key = Bits::new();
        let mut subset = Vec::new();
        for (k, &e) in self.events.iter().enumerate() {
            if bit_get(ancestors, e) {
                bit_set(&mut key, k as u32);
                subset.push(e);
            }
        }
        if let Some(r) = self.rosters.get(&key) {
            return r.clone();
        }
        let roster = Arc::new(self.roster(&subset));
        if self.rosters.len() >= MAX_CACHED_ROSTERS {
            self.rosters.clear();
        }
        self.rosters.insert(key, roster.clone());
        roster
    }

    /// Who is in the room and in what role, as the events `subset` (down-closed, in arrival
    /// order) determine it: the handover and removal rules, then a fold in canonical order.
    fn roster(&self, subset: &[u32]) -> Roster {
        let op = |i: u32| &self.entries[i as usize].op.op;
        let hash_of = |i: u32| self.entries[i as usize].hash;

        // Canonical order: topological, ties broken by hash (smallest first).
        let m = subset.len();
        let mut waiting_on: Vec<usize> = (0..m)
            .map(|a| (0..m).filter(|&b| self.anc(subset[b], subset[a])).count())
            .collect();
        let mut ready: BTreeSet<(OpHash, usize)> = (0..m)
            .filter(|&a| waiting_on[a] == 0)
            .map(|a| (hash_of(subset[a]), a))
            .collect();
        let mut order = Vec::with_capacity(m);
        while let Some((_, a)) = ready.pop_first() {
            order.push(subset[a]);
            for b in 0..m {
                if self.anc(subset[a], subset[b]) {
                    waiting_on[b] -= 1;
                    if waiting_on[b] == 0 {
                        ready.insert((hash_of(subset[b]), b));
                    }
                }
            }
        }

        // Handovers: of one author's concurrent handovers, one its target took counts
        // before one not taken; then the smallest hash.
        let handovers: Vec<u32> = subset
            .iter()
            .copied()
            .filter(|&h| matches!(op(h).body, OpBody::Handover { .. }))
            .collect();
        let taken: BTreeSet<u32> = subset
            .iter()
            .filter_map(|&t| match &op(t).body {
                OpBody::TakeRole { handover } => self.index.get(handover).copied(),
                _ => None,
            })
            .collect();
        let effective_handover = |h: u32| {
            let OpBody::Handover { to } = op(h).body else {
                return false;
            };
            let key = |x: u32| (!taken.contains(&x), hash_of(x));
            let wins = handovers.iter().all(|&r| {
                r == h || op(r).author != op(h).author || !self.concurrent(h, r) || key(h) < key(r)
            });
            wins && to != op(h).author
        };
        let effective_handovers: Vec<u32> = handovers
            .iter()
            .copied()
            .filter(|&h| effective_handover(h))
            .collect();
        // Handover wins: the role's operations concurrent with their author's handover.
        let handed_over = |x: u32| {
            op(x).body.is_privileged()
                && effective_handovers
                    .iter()
                    .any(|&h| op(h).author == op(x).author && self.concurrent(h, x))
        };
        // Removal wins: a leave concurrent with the leaver's removal.
        let removed_concurrently = |m: MemberId, x: u32| {
            subset.iter().any(|&r| {
                matches!(&op(r).body, OpBody::Remove { member, .. } if *member == m)
                    && !handed_over(r)
                    && self.concurrent(r, x)
            })
        };

        let mut s = Roster {
            order_of_events: order.clone(),
            taken: taken.clone(),
            ..Roster::default()
        };
        for &x in &order {
            let o = op(x);
            let author = o.author;
            let took = match &o.body {
                OpBody::Create {
                    facilitator,
                    display_name,
                    peer,
                    retention_secs,
                    ..
                } => {
                    s.members.insert(
                        author,
                        Member {
                            public: *facilitator,
                            display_name: display_name.clone(),
                            peer: peer.clone(),
                            role: Role::Facilitator,
                            admitted_by: hash_of(x),
                        },
                    );
                    s.order.push(author);
                    s.ever.insert(author);
                    s.facilitator = Some(author);
                    s.retention_secs = *retention_secs;
                    true
                }
                OpBody::Admit {
                    member,
                    display_name,
                    peer,
                    invite_id,
                } => {
                    let ok = !handed_over(x)
                        && !s.ever.contains(&member.id)
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
                                admitted_by: hash_of(x),
                            },
                        );
                        s.order.push(member.id);
                        s.ever.insert(member.id);
                        s.used_invites.insert(*invite_id);
                    }
                    ok
                }
                OpBody::Leave => {
                    let ok = !removed_concurrently(author, x) && s.members.contains_key(&author);
                    if ok {
                        depart(&mut s, author, x);
                    }
                    ok
                }
                OpBody::Remove { member, .. } => {
                    let ok = !handed_over(x) && s.members.contains_key(member);
                    if ok {
                        depart(&mut s, *member, x);
                    }
                    ok
                }
                OpBody::Handover { to } => {
                    // A handover that counts always takes the role from its author; a
                    // target who left meanwhile leaves the role to the fallback below.
                    let ok = effective_handovers.contains(&x);
                    if ok {
                        if let Some(m) = s.members.get_mut(&author) {
                            m.role = Role::Member;
                        }
                        s.facilitator = None;
                        if let Some(m) = s.members.get_mut(to) {
                            m.role = Role::Facilitator;
                            s.facilitator = Some(*to);
                        }
                        s.handovers.push(x);
                    }
                    ok
                }
                OpBody::RevokeInvite { invite_id } => {
                    let ok = !handed_over(x);
                    if ok {
                        s.revoked.insert(*invite_id);
                    }
                    ok
                }
                OpBody::TakeRole { handover } => self
                    .index
                    .get(handover)
                    .is_some_and(|h| effective_handovers.contains(h)),
                OpBody::Rotate { .. } => false,
            };
            if took {
                s.effective.insert(x);
            }
            // A room never stays without a facilitator while it has members: the role falls
            // to the longest-standing member.
            if !s.facilitator.is_some_and(|f| s.members.contains_key(&f)) {
                s.facilitator = s
                    .order
                    .iter()
                    .find(|id| s.members.contains_key(id))
                    .copied();
                if let Some(m) = s.facilitator.and_then(|f| s.members.get_mut(&f)) {
                    m.role = Role::Facilitator;
                }
            }
        }
        s.order.retain(|id| s.members.contains_key(id));
        s
    }

    /// Checks an operation against the state of its own past (`ancestors`).
    fn check(&mut self, o: &Op, ancestors: &[u64]) -> Result<(), Rule> {
        let past = self.roster_of(ancestors);
        let author = o.author;
        if !past.members.contains_key(&author) {
            return Err(Rule::NotMember);
        }
        let facilitator = past.facilitator == Some(author);
        if o.body.is_privileged() && !facilitator {
            return Err(Rule::NotFacilitator);
        }
        let members: BTreeSet<MemberId> = past.members.keys().copied().collect();
        match &o.body {
            OpBody::Create { .. } => Err(Rule::NotMember),
            OpBody::Admit {
                member,
                display_name,
                invite_id,
                ..
            } => {
                let ok = !past.ever.contains(&member.id)
                    && past.members.len() < MAX_MEMBERS
                    && !past.revoked.contains(invite_id)
                    && !past.used_invites.contains(invite_id)
                    && crate::crypto::is_usable_agreement_key(&member.agreement)
                    && !past
                        .members
                        .values()
                        .any(|m| same_name(&m.display_name, display_name));
                ok.then_some(()).ok_or(Rule::BadAdmission)
            }
            OpBody::Leave => (!facilitator).then_some(()).ok_or(Rule::FacilitatorLeaves),
            OpBody::Remove { member, rotation } => {
                if *member == author || !members.contains(member) {
                    return Err(Rule::NoSuchMember);
                }
                let mut remaining = members;
                remaining.remove(member);
                (rotation.recipients() == remaining)
                    .then_some(())
                    .ok_or(Rule::WrongRecipients)
            }
            OpBody::Rotate { rotation } => {
                if rotation.recipients() != members {
                    return Err(Rule::WrongRecipients);
                }
                // The facilitator may: it rotates before readmitting a former member, so that
                // the welcome holds no key to what was said while that member was away.
                if !facilitator && self.rotates_again(author, ancestors) {
                    return Err(Rule::RotatesAgain);
                }
                Ok(())
            }
            OpBody::Handover { to } => (*to != author && members.contains(to))
                .then_some(())
                .ok_or(Rule::NoSuchMember),
            OpBody::RevokeInvite { invite_id } => (!past.revoked.contains(invite_id))
                .then_some(())
                .ok_or(Rule::AlreadyRevoked),
            OpBody::TakeRole { handover } => {
                let ok = self.index.get(handover).is_some_and(|&h| {
                    let ho = &self.entries[h as usize].op.op;
                    bit_get(ancestors, h)
                        && matches!(ho.body, OpBody::Handover { to } if to == author)
                        && !self.taken_in(ancestors, |t| {
                            t == h
                                || (self.entries[t as usize].op.op.author == ho.author
                                    && self.concurrent(t, h))
                        })
                });
                ok.then_some(()).ok_or(Rule::NotYourRole)
            }
        }
    }

    /// Whether the past `ancestors` holds a taking of a handover (its position) that
    /// `which` picks.
    fn taken_in(&self, ancestors: &[u64], which: impl Fn(u32) -> bool) -> bool {
        self.events.iter().any(|&e| {
            bit_get(ancestors, e)
                && matches!(&self.entries[e as usize].op.op.body,
                    OpBody::TakeRole { handover } if self.index.get(handover).is_some_and(|&h| which(h)))
        })
    }

    /// Whether `author` made a rotation in the past `ancestors` after which that past holds
    /// nothing but more of its rotations.
    fn rotates_again(&self, author: MemberId, ancestors: &[u64]) -> bool {
        let Some(rotations) = self.rotations_by.get(&author) else {
            return false;
        };
        let mut mine = Bits::new();
        for &r in rotations {
            bit_set(&mut mine, r);
        }
        // Only the latest of the author's rotations in the past need a look: what came
        // after an earlier one includes what came after a later one.
        let mut latest: Vec<u32> = Vec::new();
        for &r in rotations.iter().rev() {
            if !bit_get(ancestors, r) || latest.iter().any(|&l| self.anc(r, l)) {
                continue;
            }
            latest.push(r);
            let before = &self.entries[r as usize].ancestors;
            let anything_else = ancestors.iter().enumerate().any(|(w, a)| {
                a & !before.get(w).copied().unwrap_or(0) & !mine.get(w).copied().unwrap_or(0) != 0
            });
            if !anything_else {
                return true;
            }
        }
        false
    }

    /// Whether a rotation by `author` on the current heads would be invalid because that
    /// author, not the facilitator, made the last rotation and nothing else happened since.
    pub fn would_rotate_again(&self, author: MemberId) -> bool {
        if self.state.facilitator() == Some(author) {
            return false;
        }
        let mut ancestors = Bits::new();
        for h in self.heads() {
            let i = self.index[&h];
            bit_or(&mut ancestors, &self.entries[i as usize].ancestors);
            bit_set(&mut ancestors, i);
        }
        self.rotates_again(author, &ancestors)
    }

    /// Whether a valid operation from outside is of a kind that could only stuff the log.
    fn refusal(&self, o: &Op, hash: &OpHash, ancestors: &[u64]) -> Option<Refusal> {
        let roster = &self.state.roster;
        if roster.former.contains_key(&o.author) {
            return Some(Refusal::FormerMember);
        }
        // The role's operations concurrent with their author's handover: without effect.
        // A new handover concurrent with one that counts, and was taken or has a smaller
        // hash, would not count either.
        let concurrent_handover = |beating_only: bool| {
            roster.handovers.iter().any(|&h| {
                let held = &self.entries[h as usize];
                held.op.op.author == o.author
                    && !bit_get(ancestors, h)
                    && (!beating_only || roster.taken.contains(&h) || held.hash < *hash)
            })
        };
        match o.body {
            OpBody::Handover { .. } if concurrent_handover(true) => {
                return Some(Refusal::HandedOver);
            }
            OpBody::Admit { .. } | OpBody::Remove { .. } | OpBody::RevokeInvite { .. }
                if concurrent_handover(false) =>
            {
                return Some(Refusal::HandedOver);
            }
            _ => {}
        }
        if matches!(o.body, OpBody::Rotate { .. }) {
            // Of an author's concurrent rotations the one with the smallest hash has effect:
            // a new one concurrent with one of smaller hash that has effect is not taken. (A
            // node that holds none smaller takes it, and members hand each other their logs
            // again and again, so what has effect in the end reaches every node.)
            let beaten = self.rotations_by.get(&o.author).is_some_and(|mine| {
                mine.iter().any(|&r| {
                    let held = &self.entries[r as usize];
                    !bit_get(ancestors, r) && held.hash < *hash && self.state.is_valid(&held.hash)
                })
            });
            if beaten {
                return Some(Refusal::ConcurrentRotation);
            }
        }
        None
    }

    /// Whether the operation at position `i` has effect, given the roster of the whole
    /// log: events as the roster says; a rotation if its author's admission has effect,
    /// unless its author departed concurrently or made a concurrent rotation with a smaller
    /// hash (an author's history forks only when something is wrong: one rotation of each
    /// fork counts).
    fn has_effect(&self, roster: &Roster, i: u32) -> bool {
        let o = &self.entries[i as usize].op.op;
        match o.body {
            OpBody::Rotate { .. } => {
                let admitted =
                    roster.members.contains_key(&o.author) || roster.former.contains_key(&o.author);
                admitted && !self.departed_since(roster, i) && !self.forked.contains(&i)
            }
            _ => roster.effective.contains(&i),
        }
    }

    /// Whether the author of the rotation at `i` departed concurrently with it (its
    /// departure does not descend from it).
    fn departed_since(&self, roster: &Roster, i: u32) -> bool {
        let author = self.entries[i as usize].op.op.author;
        roster
            .departures
            .iter()
            .any(|&d| departed(&self.entries[d as usize].op.op) == author && !self.anc(i, d))
    }

    /// Whether the last operation taken in is a rotation concurrent with another of its
    /// author's.
    fn forks_rotations(&self) -> bool {
        let i = (self.entries.len() - 1) as u32;
        let entry = &self.entries[i as usize];
        matches!(entry.op.op.body, OpBody::Rotate { .. })
            && self
                .rotations_by
                .get(&entry.op.op.author)
                .is_some_and(|mine| {
                    mine.iter()
                        .any(|&r| r != i && !bit_get(&entry.ancestors, r))
                })
    }

    /// The rotations that lose to a concurrent rotation of the same author: taken in hash
    /// order (among those its author's departure leaves in effect), a rotation counts
    /// unless one that already counts is concurrent with it.
    fn forked_rotations(&self, roster: &Roster) -> BTreeSet<u32> {
        let mut losers = BTreeSet::new();
        for all in self.rotations_by.values() {
            let mut mine: Vec<u32> = all
                .iter()
                .copied()
                .filter(|&r| !self.departed_since(roster, r))
                .collect();
            // An author's rotations almost always form a chain: nothing to compare then.
            let chain = mine
                .windows(2)
                .all(|w| bit_get(&self.entries[w[1] as usize].ancestors, w[0]));
            if chain {
                continue;
            }
            mine.sort_by_key(|&r| self.entries[r as usize].hash);
            let mut counting: Vec<u32> = Vec::new();
            for r in mine {
                if counting.iter().any(|&w| self.concurrent(w, r)) {
                    losers.insert(r);
                } else {
                    counting.push(r);
                }
            }
        }
        losers
    }

    /// Recomputes the state from scratch: the roster of every event, then the keying
    /// layer. Linear in the length of the log.
    fn recompute(&mut self) {
        let all: Vec<u32> = self.events.clone();
        let roster = Arc::new(self.roster(&all));
        self.forked = self.forked_rotations(&roster);
        let n = self.entries.len();
        let effective: Vec<bool> = (0..n as u32).map(|i| self.has_effect(&roster, i)).collect();
        // Depth of each effective keying operation: one more than the deepest effective
        // keying operation before it.
        let mut reach: Vec<Option<u64>> = vec![None; n];
        let mut depth = BTreeMap::new();
        for i in 0..n {
            let parents = &self.entries[i].op.op.parents;
            let before = parents
                .iter()
                .filter_map(|p| self.index.get(p).and_then(|&pi| reach[pi as usize]))
                .max();
            let keying = self.entries[i].op.op.body.rotation().is_some() && effective[i];
            reach[i] = if keying {
                let d = before.map_or(0, |d| d + 1);
                depth.insert(self.entries[i].hash, d);
                Some(d)
            } else {
                before
            };
        }
        // The frontier: effective keying operations with no effective keying descendant.
        let mut below = vec![false; n];
        let mut frontier = Vec::new();
        for i in (0..n).rev() {
            let keying = self.entries[i].op.op.body.rotation().is_some() && effective[i];
            if keying && !below[i] {
                frontier.push(self.entries[i].hash);
            }
            let mark = keying || below[i];
            if mark {
                for p in &self.entries[i].op.op.parents {
                    if let Some(&pi) = self.index.get(p) {
                        below[pi as usize] = true;
                    }
                }
            }
        }
        frontier.sort();
        self.reach = reach;
        self.state = State {
            departures: roster
                .departures
                .iter()
                .map(|&d| self.entries[d as usize].hash)
                .collect(),
            roster,
            effective: self
                .entries
                .iter()
                .zip(&effective)
                .map(|(e, x)| (e.hash, *x))
                .collect(),
            frontier,
            epoch_number: 0,
            needs_rotation: false,
            keying_depth: depth,
        };
        self.settle_epoch();
    }

    /// Moves the frontier for the operation just taken in, which is not an event.
    fn advance_frontier(&mut self) {
        let i = self.entries.len() - 1;
        let effect = self.has_effect(&self.state.roster, i as u32);
        let entry = &self.entries[i];
        self.state.effective.insert(entry.hash, effect);
        let before = entry
            .op
            .op
            .parents
            .iter()
            .filter_map(|p| self.index.get(p).and_then(|&pi| self.reach[pi as usize]))
            .max();
        if !effect || entry.op.op.body.rotation().is_none() {
            self.reach[i] = before;
            return;
        }
        let depth = before.map_or(0, |d| d + 1);
        self.reach[i] = Some(depth);
        self.state.keying_depth.insert(entry.hash, depth);
        let index = &self.index;
        let ancestors = &entry.ancestors;
        self.state
            .frontier
            .retain(|k| !index.get(k).is_some_and(|&ki| bit_get(ancestors, ki)));
        self.state.frontier.push(entry.hash);
        self.state.frontier.sort();
        self.settle_epoch();
    }

    /// The epoch number and whether a rotation is needed, from the frontier and roster.
    fn settle_epoch(&mut self) {
        let s = &self.state;
        let epoch_number = s
            .frontier
            .iter()
            .filter_map(|k| s.keying_depth.get(k))
            .copied()
            .max()
            .unwrap_or(0);
        let frontier: Vec<(u32, BTreeSet<MemberId>)> = s
            .frontier
            .iter()
            .filter_map(|k| {
                let i = *self.index.get(k)?;
                let recipients = self.entries[i as usize].op.op.body.rotation()?.recipients();
                Some((i, recipients))
            })
            .collect();
        // Whether `id`, admitted at `admitted` (if ever), holds every frontier secret: it
        // is a recipient, or was welcomed after the operation (a welcome carries the
        // frontier's secrets).
        let holds_all = |id: &MemberId, admitted: Option<u32>| {
            frontier.iter().all(|(k, recipients)| {
                recipients.contains(id) || admitted.is_some_and(|a| self.anc(*k, a))
            })
        };
        let admitted = |id: &MemberId| -> Option<u32> {
            self.events.iter().copied().find(|&e| {
                let o = &self.entries[e as usize].op.op;
                match &o.body {
                    OpBody::Admit { member, .. } => member.id == *id,
                    OpBody::Create { .. } => o.author == *id,
                    _ => false,
                }
            })
        };
        let r = &s.roster;
        let member_lacks = r.members.keys().any(|id| !holds_all(id, admitted(id)));
        // Anyone admitted at some point who is not a member now (a former member, or one
        // whose admission has no effect: the facilitator who signed it may have welcomed
        // it) and who holds every frontier secret.
        let outsider_holds = self.events.iter().any(|&e| {
            let o = &self.entries[e as usize].op.op;
            let id = match &o.body {
                OpBody::Admit { member, .. } => member.id,
                OpBody::Create { .. } => o.author,
                _ => return false,
            };
            !r.members.contains_key(&id) && holds_all(&id, Some(e))
        });
        // A leave that no frontier operation descends from: members refuse messages sealed
        // under an epoch older than a departure their author knew of.
        let uncovered_leave = r.departures.iter().any(|&d| {
            matches!(self.entries[d as usize].op.op.body, OpBody::Leave)
                && !frontier.iter().any(|(k, _)| self.anc(d, *k))
        });
        let wide = s.frontier.len() > WIDE_FRONTIER;
        self.state.epoch_number = epoch_number;
        self.state.needs_rotation = member_lacks || outsider_holds || uncovered_leave || wide;
    }

    /// Whether `a` is a (strict) ancestor of `b`.
    pub fn is_ancestor(&self, a: &OpHash, b: &OpHash) -> bool {
        match (self.index.get(a), self.index.get(b)) {
            (Some(&ai), Some(&bi)) => self.anc(ai, bi),
            _ => false,
        }
    }

    /// The epoch number a valid keying operation starts (its depth among keying operations).
    pub fn keying_depth(&self, op: &OpHash) -> Option<u64> {
        self.state.keying_depth.get(op).copied()
    }

    /// Whether the operation is an effective keying operation (one an epoch can name).
    pub fn is_effective_keying(&self, op: &OpHash) -> bool {
        self.state.keying_depth.contains_key(op)
    }

    /// Whether the two operations are concurrent (neither descends from the other).
    pub fn are_concurrent(&self, a: &OpHash, b: &OpHash) -> bool {
        match (self.index.get(a), self.index.get(b)) {
            (Some(&ai), Some(&bi)) => self.concurrent(ai, bi),
            _ => false,
        }
    }

    /// The room this log belongs to.
    pub fn room_id(&self) -> RoomId {
        self.room_id
    }

    /// The state the log determines.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// What the next operation (or message) names as its parents: the latest operations
    /// with effect that no other operation with effect descends from, at most
    /// [`MAX_PARENTS`], in hash order. Operations without effect are passed over (an
    /// operation without effect may be one that other members' nodes did not take).
    pub fn heads(&self) -> Vec<OpHash> {
        let effective = |i: u32| {
            self.state
                .effective
                .get(&self.entries[i as usize].hash)
                .copied()
                .unwrap_or(false)
        };
        let mut found: BTreeSet<u32> = BTreeSet::new();
        let mut seen: BTreeSet<u32> = BTreeSet::new();
        let mut stack: Vec<u32> = self.heads.iter().copied().collect();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            if effective(i) {
                found.insert(i);
            } else {
                let parents = &self.entries[i as usize].op.op.parents;
                stack.extend(parents.iter().filter_map(|p| self.index.get(p)));
            }
        }
        let mut heads: Vec<OpHash> = found
            .iter()
            .rev()
            .filter(|&&a| !found.iter().any(|&b| self.anc(a, b)))
            .take(MAX_PARENTS)
            .map(|&i| self.entries[i as usize].hash)
            .collect();
        heads.sort();
        heads
    }

    /// Whether the operation is in the log.
    pub fn contains(&self, op: &OpHash) -> bool {
        self.index.contains_key(op)
    }

    /// An operation by hash.
    pub fn op(&self, op: &OpHash) -> Option<&SignedOp> {
        self.index.get(op).map(|&i| &self.entries[i as usize].op)
    }

    /// Every operation with its hash, in the order they were taken in (parents first).
    pub fn iter(&self) -> impl Iterator<Item = (&OpHash, &SignedOp)> {
        self.entries.iter().map(|e| (&e.hash, &e.op))
    }

    /// The events (every operation but rotations) with their hashes, in the state's
    /// canonical order: the same on every member's node.
    pub fn events_in_order(&self) -> impl Iterator<Item = (&OpHash, &SignedOp)> {
        self.state
            .roster
            .order_of_events
            .iter()
            .map(|&i| (&self.entries[i as usize].hash, &self.entries[i as usize].op))
    }

    /// All operations, parents first.
    pub fn ops(&self) -> Vec<SignedOp> {
        self.entries.iter().map(|e| e.op.clone()).collect()
    }

    /// Deletes the sealed shares of a keying operation from this copy (they are kept as
    /// their digest, so the operation still verifies and keeps its hash).
    pub fn drop_shares(&mut self, op: &OpHash) {
        if let Some(&i) = self.index.get(op) {
            let entry = &mut self.entries[i as usize];
            entry.op = entry.op.without_shares();
        }
    }

    /// Puts back the sealed shares of a keying operation this copy holds without them,
    /// from `op` (the same operation with its shares). Returns whether it did.
    pub fn fill_shares(&mut self, hash: &OpHash, op: &SignedOp) -> bool {
        let Some(&i) = self.index.get(hash) else {
            return false;
        };
        let entry = &mut self.entries[i as usize];
        let held = entry.op.op.body.rotation();
        if !matches!(held, Some(r) if matches!(r.shares, Shares::Dropped(_))) || op.hash() != *hash
        {
            return false;
        }
        entry.op = op.clone();
        true
    }

    /// How many operations wait for their parents.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// How many operations the log holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a log has at least its genesis.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What [`Membership::insert_all`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inserted {
    /// Operations new to the log.
    pub new: usize,
    /// Operations refused (invalid, malformed or of a refused kind).
    pub refused: usize,
}

/// Who a departure takes out of the room.
fn departed(o: &Op) -> MemberId {
    match &o.body {
        OpBody::Remove { member, .. } => *member,
        _ => o.author,
    }
}

fn depart(s: &mut Roster, who: MemberId, at: u32) {
    if let Some(m) = s.members.remove(&who) {
        s.former.insert(who, m);
    }
    s.departures.push(at);
}
