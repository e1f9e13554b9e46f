//! The membership log: who is in a room, in what role, and how they got there.
//!
//! Every change to a room's membership is an [`Op`], signed by its author's room key
//! and naming the operations its author had seen (`parents`, by hash). The room's
//! state — members, roles — is a deterministic function of the set of operations,
//! so every member that holds the same operations computes the same state.
//!
//! Rules enforced by [`Membership::apply`]:
//! - the first operation is `Create`, signed by the facilitator it names;
//! - only the facilitator admits, and only people who are not yet members;
//! - a room never has more than [`MAX_MEMBERS`] members;
//! - an operation whose parents are unknown is not applied (the caller may offer it
//!   again once it has them); an operation already applied is recognised and ignored,
//!   so replays change nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::crypto::hash;
use crate::identity::{MemberId, MemberKeys, MemberPublic};
use crate::invite::InviteId;
use crate::room::RoomId;
use crate::wire;

/// The most members a room can have, facilitator included.
pub const MAX_MEMBERS: usize = 8;

const OP_LABEL: &[u8] = b"confer/v1/op";

/// The hash that names an operation.
pub type OpHash = [u8; 32];

/// What an operation does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum OpBody {
    /// The room begins; the author is its facilitator.
    Create {
        /// The facilitator's public keys.
        facilitator: MemberPublic,
        /// The facilitator's display name in this room.
        display_name: String,
        /// The facilitator node's libp2p peer id.
        peer: Vec<u8>,
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

/// Why an operation was not applied.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum LogError {
    /// The signature does not match the author.
    #[error("operation signature does not verify")]
    BadSignature,
    /// The operation names another room.
    #[error("operation belongs to another room")]
    WrongRoom,
    /// Some parents are not known yet.
    #[error("operation refers to operations not yet received")]
    MissingParents,
    /// A `Create` where the log already has one, or a log that does not start with one.
    #[error("operation is not a valid start of the room")]
    BadGenesis,
    /// The author may not make this change.
    #[error("only the facilitator may do that")]
    NotFacilitator,
    /// The member is already in the room.
    #[error("already a member")]
    AlreadyMember,
    /// The room is full.
    #[error("the room is full (at most 8 members)")]
    RoomFull,
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

/// A current member as the log describes it.
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
}

/// A room's membership, computed from its log.
#[derive(Debug, Clone)]
pub struct Membership {
    room_id: RoomId,
    /// Operations in the order they were applied (a topological order of the log).
    applied: Vec<SignedOp>,
    known: BTreeSet<OpHash>,
    heads: BTreeSet<OpHash>,
    members: BTreeMap<MemberId, Member>,
    /// Insertion order of members, for stable listings.
    order: Vec<MemberId>,
}

impl Membership {
    /// Starts a log from its `Create` operation.
    pub fn from_genesis(genesis: SignedOp) -> Result<Self, LogError> {
        genesis.verify()?;
        let OpBody::Create {
            facilitator,
            display_name,
            peer,
        } = &genesis.op.body
        else {
            return Err(LogError::BadGenesis);
        };
        if !genesis.op.parents.is_empty() || facilitator.id != genesis.op.author {
            return Err(LogError::BadGenesis);
        }
        let member = Member {
            public: *facilitator,
            display_name: display_name.clone(),
            peer: peer.clone(),
            role: Role::Facilitator,
        };
        let hash = genesis.hash();
        let mut members = BTreeMap::new();
        members.insert(facilitator.id, member);
        Ok(Self {
            room_id: genesis.op.room_id,
            order: vec![facilitator.id],
            applied: vec![genesis],
            known: BTreeSet::from([hash]),
            heads: BTreeSet::from([hash]),
            members,
        })
    }

    /// Rebuilds a log by applying `ops` in order; the first must be the genesis.
    pub fn replay(ops: Vec<SignedOp>) -> Result<Self, LogError> {
        let mut ops = ops.into_iter();
        let mut log = Self::from_genesis(ops.next().ok_or(LogError::BadGenesis)?)?;
        for op in ops {
            log.apply(op)?;
        }
        Ok(log)
    }

    /// Applies one operation. Returns `Ok(false)` for an operation already applied.
    pub fn apply(&mut self, op: SignedOp) -> Result<bool, LogError> {
        let hash = op.hash();
        if self.known.contains(&hash) {
            return Ok(false);
        }
        if op.op.room_id != self.room_id {
            return Err(LogError::WrongRoom);
        }
        op.verify()?;
        if op.op.parents.is_empty() || op.op.parents.iter().any(|p| !self.known.contains(p)) {
            return Err(LogError::MissingParents);
        }
        match &op.op.body {
            OpBody::Create { .. } => return Err(LogError::BadGenesis),
            OpBody::Admit {
                member,
                display_name,
                peer,
                ..
            } => {
                if self.role_of(&op.op.author) != Some(Role::Facilitator) {
                    return Err(LogError::NotFacilitator);
                }
                if self.members.contains_key(&member.id) {
                    return Err(LogError::AlreadyMember);
                }
                if self.members.len() >= MAX_MEMBERS {
                    return Err(LogError::RoomFull);
                }
                self.members.insert(
                    member.id,
                    Member {
                        public: *member,
                        display_name: display_name.clone(),
                        peer: peer.clone(),
                        role: Role::Member,
                    },
                );
                self.order.push(member.id);
            }
        }
        for parent in &op.op.parents {
            self.heads.remove(parent);
        }
        self.heads.insert(hash);
        self.known.insert(hash);
        self.applied.push(op);
        Ok(true)
    }

    /// The room this log belongs to.
    pub fn room_id(&self) -> RoomId {
        self.room_id
    }

    /// The current heads, to be named as parents by the next operation.
    pub fn heads(&self) -> Vec<OpHash> {
        self.heads.iter().copied().collect()
    }

    /// All applied operations, in an order in which they can be replayed.
    pub fn ops(&self) -> &[SignedOp] {
        &self.applied
    }

    /// A member's role, if they are a member.
    pub fn role_of(&self, id: &MemberId) -> Option<Role> {
        self.members.get(id).map(|m| m.role)
    }

    /// A current member.
    pub fn member(&self, id: &MemberId) -> Option<&Member> {
        self.members.get(id)
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

    /// How many members the room has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a room has at least its facilitator.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}
