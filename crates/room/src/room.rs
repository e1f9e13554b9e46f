//! A room as one member holds it: its log, the epoch keys it can use, and (for the
//! facilitator) the invites it has issued. Pure state plus functions; no IO.
//!
//! ## Traffic on the wire
//!
//! Everything a room sends over gossip is an [`Envelope`]: an 8-byte key id, a nonce and a
//! ciphertext. Inside, sealed with XChaCha20-Poly1305 under the epoch's message key
//! (associated data: room id and epoch id), is a payload — a message or a membership
//! operation — with its author's id and their ed25519 signature over the room id, epoch id
//! and payload. The network sees neither author, room nor kind of payload, and a member
//! cannot forge another member's words. The key id only says which of a member's epoch
//! keys to try; every envelope of an epoch carries the same one, and it changes with the
//! epoch, as the topic does.
//!
//! ## Epoch keys
//!
//! The log's keying frontier (see [`crate::log`]) names the operations whose secrets make
//! up the current epoch. The epoch key is
//! `HKDF-SHA256(ikm = secret_1 || … || secret_n in frontier hash order, salt = room id,
//! "confer/v1/epoch-key")`, and from it, with distinct labels, the message key, the key id
//! and the gossip topic name. A member who lacks any frontier secret — as a removed member
//! lacks its removal's — cannot compute the key.
//!
//! Old epoch keys are kept for the room's retention period after they are replaced, so a
//! message sent just before a rotation can still be opened, and then deleted: forward
//! secrecy for whatever was recorded off the wire.
//!
//! ## Messages and causality
//!
//! A message names the log heads its author had seen (`context`). A receiver refuses a
//! message whose context includes a departure that its epoch does not descend from: once a
//! member knows of a removal it must use a later key.

use std::collections::{BTreeMap, BTreeSet};

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::crypto::{self, Sealed, SealedBox};
use crate::identity::{MemberId, MemberKeys, MemberPublic};
use crate::invite::{
    Invite, InviteBody, InviteError, InviteId, IssuedInvite, JoinRequest, JoinResponse,
    check_display_name,
};
use crate::log::{
    Inserted, LogError, MAX_FRONTIER, MAX_MEMBERS, Member, Membership, Op, OpBody, OpHash, Role,
    Rotation, Shares, SignedOp,
};
use crate::secret::Secret32;
use crate::wire;

/// The longest message text, in bytes.
pub const MAX_TEXT: usize = 32 * 1024;
/// The largest envelope accepted from the network, in bytes.
pub const MAX_ENVELOPE: usize = 64 * 1024;
/// The largest stored room record accepted, in bytes.
pub const MAX_ROOM_RECORD: usize = wire::MAX_LARGE;
/// How long old epoch keys are kept by default: seven days.
pub const DEFAULT_RETENTION_SECS: u64 = 7 * 24 * 3600;
/// The oldest an epoch gets before a member's node starts a new one: seven days, so a key
/// (and what it opens) never spans more than about a week of a room's life.
pub const MAX_EPOCH_AGE_MS: u64 = 7 * 24 * 3600 * 1000;
/// How much longer a member who is not the facilitator waits past [`MAX_EPOCH_AGE_MS`]
/// before rotating, so that usually one node rotates, not all at once: one day.
pub const MEMBER_ROTATION_DELAY_MS: u64 = 24 * 3600 * 1000;
/// How many requests naming a name already taken one invite is answered before it stops
/// working: a person choosing a name needs a try or two, someone testing names needs many.
pub const MAX_NAME_REFUSALS: u8 = 3;
/// The most epoch keys a member holds (current and retired). Retired keys beyond it are
/// deleted oldest first, whatever their age.
pub const MAX_EPOCHS: usize = 64;
/// The most context hashes a message may name.
const MAX_CONTEXT: usize = 64;

const ENVELOPE_LABEL: &[u8] = b"confer/v1/envelope";
const PAYLOAD_LABEL: &[u8] = b"confer/v1/payload";
const WELCOME_LABEL: &[u8] = b"confer/v1/welcome";
const SHARE_LABEL: &[u8] = b"confer/v1/share";

/// A room's id: 32 random bytes. Never derived from its name.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoomId(pub [u8; 32]);

impl RoomId {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for RoomId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RoomId({})", &self.to_hex()[..12])
    }
}

/// A message's id: a hash of its signed plaintext.
pub type MessageId = [u8; 32];

/// Why a room operation failed. Display strings are sentences for the user.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RoomError {
    /// A room or display name is unacceptable.
    #[error("{0}")]
    Name(#[from] crate::invite::NameError),
    /// Only the facilitator may do this.
    #[error("only the room's facilitator can do that (`confer members` shows who it is)")]
    NotFacilitator,
    /// This profile is no longer in the room.
    #[error("you are no longer a member of this room")]
    NotMember,
    /// The facilitator cannot leave without handing over.
    #[error(
        "the facilitator cannot leave; hand the role to another member first (`confer handover`)"
    )]
    FacilitatorCannotLeave,
    /// No such member.
    #[error(
        "no current member goes by that name or has an id starting with it (see `confer members`)"
    )]
    NoSuchMember,
    /// More than one member matches.
    #[error(
        "more than one member matches that; give the first characters of their id instead (see `confer members`)"
    )]
    AmbiguousMember,
    /// The facilitator cannot remove or hand over to themself.
    #[error(
        "you cannot remove yourself or hand the room to yourself; to stop facilitating, hand the role to another member (`confer handover`), then leave"
    )]
    NotYourself,
    /// The room is full.
    #[error("the room is full (at most 8 members)")]
    RoomFull,
    /// The message is empty or too long.
    #[error("a message must be between 1 and {MAX_TEXT} bytes")]
    BadText,
    /// The current epoch's key is not available yet (a rotation is on its way).
    #[error("this room's new key has not reached this node yet; try again in a moment")]
    NoKey,
    /// No outstanding invite matches.
    #[error("no outstanding invite matches that")]
    NoSuchInvite,
    /// The welcome from the facilitator did not check out.
    #[error("the facilitator's answer could not be verified")]
    BadWelcome,
    /// A stored record is damaged.
    #[error("a stored room record is damaged")]
    BadRecord,
    /// This member made the current key and nothing has happened since.
    #[error(
        "the room's key is already new: you made it, and it can change again once something else has happened in the room"
    )]
    KeyIsNew,
    /// The room's history of changes is too large to keep.
    #[error("this room's history of changes is full; start a new room and invite the members")]
    TooLarge,
    /// The membership log refused an operation.
    #[error("{0}")]
    Log(#[from] LogError),
}

/// Why bytes from the network were not accepted. Callers count these and drop the bytes.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Too large or not an envelope.
    #[error("undecodable envelope")]
    Malformed,
    /// Not sealed under any key this member holds (another room, a deleted or a future
    /// epoch, or altered).
    #[error("envelope does not open with any room key held")]
    Crypto,
    /// The author is not known yet, or the message names operations not yet received;
    /// the caller may offer it again after applying operations.
    #[error("author or context not yet known")]
    Pending,
    /// The author has left or been removed.
    #[error("author is no longer a member")]
    Departed,
    /// Sealed under an epoch older than its own context allows (after a removal).
    #[error("sealed with a key retired by a departure the sender knew of")]
    StaleEpoch,
    /// The author's signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The content breaks a rule (e.g. text too long, an operation for another room).
    #[error("invalid content")]
    Invalid,
}

/// One epoch key this member holds.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EpochKey {
    /// Hash of the frontier that defines the epoch.
    pub id: [u8; 32],
    /// The epoch number (longest chain of keying operations).
    pub number: u64,
    /// The keying operations whose secrets make up the key.
    pub frontier: Vec<OpHash>,
    key: Secret32,
    /// When this epoch was replaced, Unix milliseconds.
    pub retired_at: Option<u64>,
    /// When this member first held this epoch's key, Unix milliseconds (its clock).
    pub since: u64,
}

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochKey")
            .field("number", &self.number)
            .finish_non_exhaustive()
    }
}

impl EpochKey {
    fn derive(&self, room: &RoomId, label: &[u8]) -> Secret32 {
        crypto::derive(self.key.expose(), &room.0, label)
    }

    fn message_key(&self, room: &RoomId) -> Secret32 {
        self.derive(room, b"confer/v1/epoch/message-key")
    }

    /// The gossip topic of this epoch: opaque, derived from the epoch key.
    pub fn topic(&self, room: &RoomId) -> String {
        let t = self.derive(room, b"confer/v1/epoch/topic");
        format!("confer-{}", hex::encode(&t.expose()[..16]))
    }
}

/// What a gossip message carries: a sealed header naming the epoch (its frontier of
/// keying operations) and the sealed body. Nothing is in clear.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    header: Sealed,
    sealed: Sealed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct MessageBody {
    sent_at: u64,
    salt: [u8; 16],
    context: Vec<OpHash>,
    text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
enum Payload {
    Message(MessageBody),
    Op(Box<SignedOp>),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct SignedPayload {
    author: MemberId,
    payload: Payload,
    signature: crate::identity::Sig,
}

/// A verified message, as stored and shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageRecord {
    /// Hash of the signed plaintext.
    pub id: MessageId,
    /// The author's member id.
    pub author: MemberId,
    /// The author's clock when sent, Unix milliseconds.
    pub sent_at: u64,
    /// The text.
    pub text: String,
}

impl MessageRecord {
    /// Encodes for the store.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode(self).unwrap_or_default()
    }

    /// Decodes from the store.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RoomError> {
        wire::decode(bytes, MAX_ENVELOPE).map_err(|_| RoomError::BadRecord)
    }
}

/// What an envelope turned out to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A verified message.
    Message(MessageRecord),
    /// A membership operation (`new`: it changed the log).
    Op {
        /// Whether the operation was new to this member.
        new: bool,
    },
}

/// What a joiner receives, sealed to its X25519 key.
#[derive(Clone, Serialize, Deserialize)]
struct Welcome {
    room_name: String,
    ops: Vec<SignedOp>,
    secrets: Vec<(OpHash, Secret32)>,
}

/// The result of admitting a joiner.
#[derive(Debug)]
pub struct Admission {
    /// The answer to send back to the joiner.
    pub response: JoinResponse,
    /// The admission, sealed for the room's topic, to publish to the other members;
    /// `None` when the request had been admitted before (its answer was lost on the way
    /// and the joiner's node asked again): nothing new happened.
    pub announcement: Option<Vec<u8>>,
    /// The room as it was before the admission (to put back if the admission cannot be
    /// stored); `None` when nothing new happened. It is the room's own earlier state,
    /// moved out, not a copy: a request that is refused costs no copy of the room.
    pub previous: Option<Box<Room>>,
}

/// A change of membership, as shown among a room's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    /// The operation that made it.
    pub id: OpHash,
    /// When, by its author's clock (Unix milliseconds).
    pub at: u64,
    /// What changed.
    pub kind: ChangeKind,
    /// Whether it is about this profile (under any identity it had in the room): it
    /// joined, left, was removed or was made facilitator, or created the room.
    pub about_me: bool,
    /// Whether this profile made it, about someone else (a removal or a handover).
    pub by_me: bool,
}

/// What a [`MembershipChange`] was, with the display names involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// The room was created.
    Created {
        /// Its first facilitator.
        by: String,
    },
    /// Someone joined.
    Joined {
        /// The new member.
        who: String,
    },
    /// Someone left.
    Left {
        /// The member who left.
        who: String,
    },
    /// The facilitator removed someone.
    Removed {
        /// The member removed.
        who: String,
        /// The facilitator.
        by: String,
    },
    /// The facilitator handed the role to another member.
    Handover {
        /// The facilitator until then.
        from: String,
        /// The new facilitator.
        to: String,
    },
    /// A member started a new key whose copy for this profile did not open, or opened to
    /// something other than the key the member committed to; this profile's node started
    /// another.
    BadKey {
        /// The member whose new key was bad.
        by: String,
    },
}

/// An invite issued by this member that can still be redeemed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutstandingInvite {
    /// The invite's id.
    pub id: InviteId,
    /// Unix seconds.
    pub expires_at: u64,
}

/// A room as one member holds it.
#[derive(Clone)]
pub struct Room {
    name: String,
    me: MemberKeys,
    log: Membership,
    secrets: BTreeMap<OpHash, Secret32>,
    /// Epoch keys, oldest first; the last is current when it matches the log's frontier.
    epochs: Vec<EpochKey>,
    invites: BTreeMap<InviteId, IssuedInvite>,
    /// Keying operations whose share for this member has been looked at: opened, found
    /// bad, or never there. A share is opened once; after its secret is deleted it is
    /// never opened again, even if a copy with shares arrives.
    opened: BTreeSet<OpHash>,
    /// Keying operations whose share for this member did not open, or opened to a secret
    /// that does not match the operation's commitment.
    bad_shares: BTreeSet<OpHash>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("id", &self.id())
            .field("members", &self.log.state().members().len())
            .field("epoch", &self.epoch_number())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct RoomRecord {
    name: String,
    me: MemberKeys,
    ops: Vec<SignedOp>,
    secrets: Vec<(OpHash, Secret32)>,
    epochs: Vec<EpochKey>,
    invites: Vec<(InviteId, IssuedInvite)>,
    opened: Vec<OpHash>,
    bad_shares: Vec<OpHash>,
}

fn share_aad(room: &RoomId, member: &MemberId) -> Vec<u8> {
    let mut aad = SHARE_LABEL.to_vec();
    aad.extend_from_slice(&room.0);
    aad.extend_from_slice(&member.0);
    aad
}

fn make_rotation<R: CryptoRng + ?Sized>(
    room: &RoomId,
    recipients: &[MemberPublic],
    secret: &Secret32,
    rng: &mut R,
) -> Result<Rotation, RoomError> {
    let mut recipients = recipients.to_vec();
    recipients.sort_by_key(|m| m.id);
    let keys: Vec<[u8; 32]> = recipients.iter().map(|m| m.agreement).collect();
    let aad = |i: usize| share_aad(room, &recipients[i].id);
    let (ephemeral, copies) = crypto::seal_to_many(&keys, aad, secret.expose(), rng);
    // Every member's key was checked at admission, so every copy seals; one that does not
    // would leave its member without the key.
    let copies: Option<Vec<Sealed>> = copies.into_iter().collect();
    Ok(Rotation {
        ephemeral,
        commitment: crate::log::commitment(room, secret.expose()),
        recipients: recipients.iter().map(|m| m.id).collect(),
        shares: Shares::Sealed(copies.ok_or(RoomError::BadRecord)?),
    })
}

/// The key that seals envelope headers: derived from the room id, so any member (and
/// anyone who ever held an invite) can read a header, which names only the frontier's
/// operation hashes — meaningless without the secrets — and lets a member derive the key
/// of an epoch it never had as its own current one (concurrent histories).
fn header_key(room: &RoomId) -> Secret32 {
    crypto::derive(&room.0, b"", b"confer/v1/header-key")
}

fn epoch_id(frontier: &[OpHash]) -> [u8; 32] {
    let parts: Vec<&[u8]> = frontier.iter().map(|h| h.as_slice()).collect();
    crypto::hash(b"confer/v1/epoch-id", &parts)
}

impl Room {
    /// Creates a room; the creator is its facilitator, shown as `display_name`.
    pub fn create<R: CryptoRng + ?Sized>(
        name: &str,
        display_name: &str,
        peer: Vec<u8>,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Self, RoomError> {
        check_display_name(name)?;
        check_display_name(display_name)?;
        let mut id = [0u8; 32];
        rng.fill_bytes(&mut id);
        let room_id = RoomId(id);
        let me = MemberKeys::generate(rng);
        let secret = Secret32::random(rng);
        let rotation = make_rotation(&room_id, &[me.public()], &secret, rng)?;
        let genesis = SignedOp::sign(
            Op {
                room_id,
                parents: Vec::new(),
                author: me.id(),
                created_at: now_ms,
                body: OpBody::Create {
                    facilitator: me.public(),
                    display_name: display_name.to_owned(),
                    peer,
                    retention_secs: DEFAULT_RETENTION_SECS,
                    rotation,
                },
            },
            &me,
        )?;
        let mut room = Self {
            name: name.to_owned(),
            log: Membership::from_genesis(genesis)?,
            me,
            secrets: BTreeMap::new(),
            epochs: Vec::new(),
            invites: BTreeMap::new(),
            opened: BTreeSet::new(),
            bad_shares: BTreeSet::new(),
        };
        room.refresh(now_ms);
        Ok(room)
    }

    /// The room's id.
    pub fn id(&self) -> RoomId {
        self.log.room_id()
    }

    /// The room's name (known only to members).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This member's id in the room.
    pub fn me(&self) -> MemberId {
        self.me.id()
    }

    /// Whether this profile is still a member.
    pub fn is_member(&self) -> bool {
        self.log.state().member(&self.me.id()).is_some()
    }

    /// Whether this member is the facilitator.
    pub fn is_facilitator(&self) -> bool {
        self.log.state().facilitator() == Some(self.me.id())
    }

    /// Current members, facilitator first.
    pub fn members(&self) -> Vec<&Member> {
        self.log.state().members()
    }

    /// The membership log.
    pub fn log(&self) -> &Membership {
        &self.log
    }

    /// The current epoch number.
    pub fn epoch_number(&self) -> u64 {
        self.log.state().epoch_number()
    }

    /// Whether this member should start a new epoch: the log asks for one (see
    /// [`crate::log::State::needs_rotation`]), or this member is a recipient of a secret of
    /// the current epoch that it does not hold (its copy reached it bad, or without its
    /// shares), so it can never hold the current key.
    pub fn needs_rotation(&self) -> bool {
        let me = self.me.id();
        self.log.state().needs_rotation()
            || (self.is_member()
                && self.log.state().frontier().iter().any(|k| {
                    !self.secrets.contains_key(k)
                        && self
                            .log
                            .op(k)
                            .and_then(|op| op.op.body.rotation())
                            .is_some_and(|r| r.recipients.contains(&me))
                }))
    }

    /// A display name for `id`: the member's name, marked if they have left or were
    /// removed.
    pub fn display_name_of(&self, id: &MemberId) -> String {
        let state = self.log.state();
        match (state.member(id), state.former_member(id)) {
            (Some(m), _) => m.display_name.clone(),
            (None, Some(m)) => {
                let removed = state.departures().iter().any(|d| {
                    self.log.op(d).is_some_and(
                        |op| matches!(&op.op.body, OpBody::Remove { member, .. } if member == id),
                    )
                });
                let how = if removed { "removed" } else { "left" };
                format!("{} ({how})", m.display_name)
            }
            (None, None) => format!("(unknown {})", &id.to_hex()[..8]),
        }
    }

    /// The current epoch key, if this member holds it.
    fn current(&self) -> Option<&EpochKey> {
        let frontier = self.log.state().frontier();
        self.epochs.last().filter(|e| e.frontier == frontier)
    }

    /// The gossip topic of the current epoch, if this member holds its key.
    pub fn topic(&self) -> Option<String> {
        self.current().map(|e| e.topic(&self.id()))
    }

    /// A tag naming the room between its members' nodes when they push operations and
    /// envelopes to each other directly (over the authenticated, encrypted libp2p channel),
    /// whatever epoch each is in. Derived from the room id; never sent on gossip.
    pub fn sync_tag(&self) -> [u8; 16] {
        let t = crypto::derive(&self.id().0, b"", b"confer/v1/sync-tag");
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&t.expose()[..16]);
        tag
    }

    /// The membership changes while this profile was in the room, its own admission
    /// first, in log order: who joined, left, was removed or became facilitator. Changes
    /// from before it came are left out: a newcomer is not shown who came and went before
    /// it (its node holds the whole log, but nothing invites it to read it). A member
    /// invited back sees the changes of each of its memberships, each up to and including
    /// the operation that ended it, and nothing from while it was away.
    pub fn changes_while_member(&self) -> Vec<MembershipChange> {
        let state = self.log.state();
        let Some(peer) = state
            .member_or_former(&self.me.id())
            .map(|m| m.peer.as_slice())
        else {
            return Vec::new();
        };
        // Whether a member id (current or former) was one of this node's profile's.
        let mine = |id: &MemberId| state.member_or_former(id).is_some_and(|m| m.peer == peer);
        let name = |id: &MemberId| {
            state
                .member_or_former(id)
                .map_or_else(|| "someone".to_owned(), |m| m.display_name.clone())
        };
        // Each membership this node's profile had: from the operation that admitted it
        // (or created the room) to the leave or removal that ended it, if any.
        let starts: BTreeSet<OpHash> = state
            .members()
            .into_iter()
            .chain(state.former_members())
            .filter(|m| m.peer == peer)
            .map(|m| m.admitted_by)
            .collect();
        let ends: BTreeSet<OpHash> = state
            .departures()
            .iter()
            .filter(|d| self.departed_by(d).is_some_and(|who| mine(&who)))
            .copied()
            .collect();
        let mut changes = Vec::new();
        let mut inside = false;
        for (hash, op) in self.log.events_in_order() {
            inside |= starts.contains(hash);
            if !inside || !state.is_valid(hash) {
                continue;
            }
            inside = !ends.contains(hash);
            let author = op.op.author;
            let by = name(&author);
            let (kind, subject) = match &op.op.body {
                OpBody::Create { .. } => (ChangeKind::Created { by }, author),
                OpBody::Admit { member, .. } => (
                    ChangeKind::Joined {
                        who: name(&member.id),
                    },
                    member.id,
                ),
                OpBody::Leave => (ChangeKind::Left { who: by }, author),
                OpBody::Remove { member, .. } => (
                    ChangeKind::Removed {
                        who: name(member),
                        by,
                    },
                    *member,
                ),
                OpBody::Handover { to } => (
                    ChangeKind::Handover {
                        from: by,
                        to: name(to),
                    },
                    *to,
                ),
                OpBody::Rotate { .. } | OpBody::RevokeInvite { .. } | OpBody::TakeRole { .. } => {
                    continue;
                }
            };
            let about_me = mine(&subject);
            changes.push(MembershipChange {
                id: *hash,
                at: op.op.created_at,
                kind,
                about_me,
                by_me: !about_me
                    && matches!(op.op.body, OpBody::Remove { .. } | OpBody::Handover { .. })
                    && mine(&author),
            });
        }
        // A bad key reached this profile as a recipient, so while it was a member: shown
        // before the first change that came after it.
        for (hash, author) in self.bad_keys() {
            let at = self.log.op(&hash).map_or(0, |op| op.op.created_at);
            let place = changes
                .iter()
                .position(|c| self.log.is_ancestor(&hash, &c.id))
                .unwrap_or(changes.len());
            changes.insert(
                place,
                MembershipChange {
                    id: hash,
                    at,
                    kind: ChangeKind::BadKey { by: name(&author) },
                    about_me: false,
                    by_me: false,
                },
            );
        }
        changes
    }

    /// Whether this profile is in the room again, under a new identity, after leaving or
    /// being removed (its node's peer id belongs to a former member too).
    pub fn rejoined(&self) -> bool {
        let state = self.log.state();
        state
            .member(&self.me.id())
            .is_some_and(|m| state.had_peer(&m.peer))
    }

    /// Whether `peer` (libp2p peer id bytes) belongs to a current or former member.
    pub fn knows_peer(&self, peer: &[u8]) -> bool {
        self.log.state().has_peer(peer)
    }

    /// The operation that ended the latest membership of the member whose node is `peer`
    /// (libp2p peer id bytes): its leave or removal. `None` if the peer is a current
    /// member or unknown. Cheap (no operation is copied).
    pub fn departure_of(&self, peer: &[u8]) -> Option<OpHash> {
        let state = self.log.state();
        if state.members().iter().any(|m| m.peer == peer) {
            return None;
        }
        state.departures().iter().rev().copied().find(|d| {
            self.departed_by(d)
                .and_then(|who| state.former_member(&who))
                .is_some_and(|m| m.peer == peer)
        })
    }

    /// Who the leave or removal `departure` took out of the room.
    fn departed_by(&self, departure: &OpHash) -> Option<MemberId> {
        let op = self.log.op(departure)?;
        match &op.op.body {
            OpBody::Leave => Some(op.op.author),
            OpBody::Remove { member, .. } => Some(*member),
            _ => None,
        }
    }

    /// For the node of a member who left or was removed, identified by its libp2p peer id
    /// (bytes), and who still acts as a member (it was away when it was removed): the
    /// operation that ended its membership and every operation before it, so it learns
    /// that it is out. Nothing after its departure: who joined later, or later keys, is
    /// none of its business. `None` if the peer is a current member or unknown.
    pub fn departure_for(&self, peer: &[u8]) -> Option<Vec<SignedOp>> {
        let departure = &self.departure_of(peer)?;
        Some(
            self.log
                .ops()
                .into_iter()
                .filter(|op| {
                    let h = op.hash();
                    h == *departure || self.log.is_ancestor(&h, departure)
                })
                .collect(),
        )
    }

    /// The newest epoch key held: the current one, or, while a new key has not reached
    /// this member yet, the last one it had. Membership operations are sealed under it.
    fn sending_epoch(&self) -> Option<&EpochKey> {
        self.current().or(self.epochs.last())
    }

    /// Whether `envelope` (of this room) was sealed under the current epoch: only then can
    /// every current member open it. Anything unreadable is `false`.
    pub fn sealed_in_current_epoch(&self, envelope: &[u8]) -> bool {
        let Some(current) = self.current() else {
            return false;
        };
        self.unwrap_header(envelope)
            .is_ok_and(|(_, frontier)| frontier == current.frontier)
    }

    /// Decodes an envelope of this room and opens its header: the envelope and the
    /// frontier of the epoch it was sealed in.
    fn unwrap_header(&self, bytes: &[u8]) -> Result<(Envelope, Vec<OpHash>), OpenError> {
        let envelope: Envelope =
            wire::decode(bytes, MAX_ENVELOPE).map_err(|_| OpenError::Malformed)?;
        let header = crypto::open(&header_key(&self.id()), ENVELOPE_LABEL, &envelope.header)
            .map_err(|_| OpenError::Crypto)?;
        let frontier: Vec<OpHash> =
            wire::decode(&header, 40 * MAX_FRONTIER).map_err(|_| OpenError::Malformed)?;
        Ok((envelope, frontier))
    }

    /// The topic membership operations authored now are published on.
    pub fn sending_topic(&self) -> Option<String> {
        self.sending_epoch().map(|e| e.topic(&self.id()))
    }

    /// Topics of every epoch key held (current last): a node listens on retired ones until
    /// their keys are deleted, for messages sent just before a rotation.
    pub fn topics(&self) -> Vec<String> {
        self.epochs.iter().map(|e| e.topic(&self.id())).collect()
    }

    /// Takes in what the log now says: opens the shares addressed to this member of
    /// effective keying operations (once each, checking each secret against its
    /// commitment), and moves to the new epoch if the frontier changed and all its secrets
    /// are known.
    fn refresh(&mut self, now_ms: u64) {
        let room = self.id();
        let me = self.me.id();
        let agreement = self.me.agreement_secret();
        for (hash, op) in self.log.iter() {
            let Some(rotation) = op.op.body.rotation() else {
                continue;
            };
            if self.opened.contains(hash) || !self.log.is_effective_keying(hash) {
                continue;
            }
            // A copy without its shares is left unopened: a copy with them may come.
            if rotation.recipients.contains(&me) && matches!(rotation.shares, Shares::Dropped(_)) {
                continue;
            }
            self.opened.insert(*hash);
            if !rotation.recipients.contains(&me) {
                continue;
            }
            let opened = rotation.share_for(&me).and_then(|share| {
                let bytes = crypto::open_from(agreement, &share_aad(&room, &me), &share)
                    .map(zeroize::Zeroizing::new)
                    .ok()?;
                let secret = <[u8; 32]>::try_from(bytes.as_slice()).ok()?;
                let secret = Secret32::from_bytes(secret);
                (crate::log::commitment(&room, secret.expose()) == rotation.commitment)
                    .then_some(secret)
            });
            match opened {
                Some(secret) => {
                    self.secrets.insert(*hash, secret);
                }
                None => {
                    self.bad_shares.insert(*hash);
                }
            }
        }
        let frontier = self.log.state().frontier().to_vec();
        if self.epochs.last().is_some_and(|e| e.frontier == frontier) {
            return;
        }
        let Some(mut epoch) = self.derive_epoch(&frontier) else {
            return;
        };
        epoch.since = now_ms;
        for e in &mut self.epochs {
            e.retired_at.get_or_insert(now_ms);
        }
        self.epochs.retain(|e| e.frontier != frontier);
        self.epochs.push(epoch);
        self.bound_epochs();
    }

    /// The key of the epoch named by `frontier`, if this member holds all its secrets:
    /// `HKDF-SHA256(ikm = the secrets in frontier order, salt = room id, info = label ||
    /// epoch id)`, so two frontiers never share a key even if they name the same secrets.
    fn derive_epoch(&self, frontier: &[OpHash]) -> Option<EpochKey> {
        let mut ikm = zeroize::Zeroizing::new(Vec::with_capacity(32 * frontier.len()));
        for k in frontier {
            ikm.extend_from_slice(self.secrets.get(k)?.expose());
        }
        let id = epoch_id(frontier);
        let mut info = b"confer/v2/epoch-key".to_vec();
        info.extend_from_slice(&id);
        let key = crypto::derive(&ikm, &self.id().0, &info);
        let number = frontier
            .iter()
            .filter_map(|k| self.log.keying_depth(k))
            .max()
            .unwrap_or(0);
        Some(EpochKey {
            id,
            number,
            frontier: frontier.to_vec(),
            key,
            retired_at: None,
            since: 0,
        })
    }

    /// The key of the epoch an envelope's header names, held or derived. A derived key is
    /// returned, not kept: the caller keeps it only once the envelope's body has opened
    /// under it and verified. A frontier must name, in strictly increasing order, at most
    /// [`MAX_FRONTIER`] effective keying operations of this log, none an ancestor of
    /// another.
    fn epoch_for(&self, frontier: &[OpHash]) -> Result<(Option<usize>, EpochKey), OpenError> {
        if let Some(i) = self.epochs.iter().position(|e| e.frontier == frontier) {
            return Ok((Some(i), self.epochs[i].clone()));
        }
        if frontier.is_empty()
            || frontier.len() > MAX_FRONTIER
            || !frontier.windows(2).all(|w| w[0] < w[1])
        {
            return Err(OpenError::Invalid);
        }
        if frontier.iter().any(|k| !self.log.contains(k)) {
            return Err(OpenError::Pending);
        }
        let antichain = frontier.iter().all(|a| {
            self.log.is_effective_keying(a) && frontier.iter().all(|b| !self.log.is_ancestor(a, b))
        });
        if !antichain {
            return Err(OpenError::Invalid);
        }
        Ok((None, self.derive_epoch(frontier).ok_or(OpenError::Crypto)?))
    }

    /// Keeps a key derived for an envelope whose body opened and verified under it:
    /// someone else's epoch, never current here, kept as a retired one.
    fn keep_epoch(&mut self, mut epoch: EpochKey, now_ms: u64) {
        epoch.retired_at = Some(now_ms);
        epoch.since = now_ms;
        let at = self.epochs.len().saturating_sub(1);
        self.epochs.insert(at, epoch);
        self.bound_epochs();
    }

    /// Deletes the oldest retired epoch keys beyond [`MAX_EPOCHS`].
    fn bound_epochs(&mut self) {
        while self.epochs.len() > MAX_EPOCHS {
            let Some(i) = self.epochs.iter().position(|e| e.retired_at.is_some()) else {
                return;
            };
            self.epochs.remove(i);
        }
    }

    /// Deletes retired epoch keys older than the room's retention period, together with
    /// the secrets only they needed and those secrets' sealed shares in this copy of the
    /// log: what is deleted cannot be opened again from this profile, after a restart
    /// either. Returns whether anything was deleted.
    pub fn prune(&mut self, now_ms: u64) -> bool {
        let retention_ms = self.log.state().retention_secs().saturating_mul(1000);
        let before = self.epochs.len();
        self.epochs.retain(|e| {
            e.retired_at
                .is_none_or(|t| now_ms.saturating_sub(t) < retention_ms)
        });
        let keep: BTreeSet<OpHash> = self
            .epochs
            .iter()
            .flat_map(|e| e.frontier.iter().copied())
            .chain(self.log.state().frontier().iter().copied())
            .collect();
        let dropped: Vec<OpHash> = self
            .secrets
            .keys()
            .filter(|h| !keep.contains(*h))
            .copied()
            .collect();
        for h in &dropped {
            self.secrets.remove(h);
            self.log.drop_shares(h);
        }
        self.epochs.len() != before || !dropped.is_empty()
    }

    /// Whether this member can start a new epoch now: it is a member, and it did not make
    /// the last rotation with nothing else done in the room since.
    pub fn may_rotate(&self) -> bool {
        self.is_member() && !self.log.would_rotate_again(self.me.id())
    }

    /// Whether the current epoch is old enough for this member's node to start a new one
    /// ([`MAX_EPOCH_AGE_MS`]; a member who is not the facilitator waits
    /// [`MEMBER_ROTATION_DELAY_MS`] longer).
    pub fn epoch_too_old(&self, now_ms: u64) -> bool {
        let Some(current) = self.current() else {
            return false;
        };
        let age = if self.is_facilitator() {
            MAX_EPOCH_AGE_MS
        } else {
            MAX_EPOCH_AGE_MS + MEMBER_ROTATION_DELAY_MS
        };
        now_ms.saturating_sub(current.since) >= age && self.may_rotate()
    }

    /// The keying operations whose share for this member was bad (would not open, or
    /// opened to a secret that does not match its commitment), with their authors.
    pub fn bad_keys(&self) -> Vec<(OpHash, MemberId)> {
        self.bad_shares
            .iter()
            .filter_map(|h| self.log.op(h).map(|op| (*h, op.op.author)))
            .collect()
    }

    /// How many epoch keys this member holds (current and retired).
    pub fn epochs_held(&self) -> usize {
        self.epochs.len()
    }

    fn aad(&self, epoch: &EpochKey) -> Vec<u8> {
        let mut aad = ENVELOPE_LABEL.to_vec();
        aad.extend_from_slice(&self.id().0);
        aad.extend_from_slice(&epoch.id);
        aad
    }

    fn payload_signed_bytes(&self, epoch: &EpochKey, payload: &Payload) -> Vec<u8> {
        let mut bytes = self.id().0.to_vec();
        bytes.extend_from_slice(&epoch.id);
        bytes.extend_from_slice(&wire::encode(payload).unwrap_or_default());
        bytes
    }

    fn seal_payload<R: CryptoRng + ?Sized>(
        &self,
        epoch: &EpochKey,
        payload: Payload,
        rng: &mut R,
    ) -> (Vec<u8>, Vec<u8>) {
        let signature = self
            .me
            .sign(PAYLOAD_LABEL, &self.payload_signed_bytes(epoch, &payload));
        let inner = SignedPayload {
            author: self.me.id(),
            payload,
            signature,
        };
        // A message is padded inside the encryption (see `wire::pad`): the envelope's
        // length shows the message's only to within its bucket. An operation is not: its
        // size says little a padding could hide (docs/SECURITY.md), and unpadded it is
        // still read by nodes from before the padding, so a room whose members update at
        // different times keeps agreeing on who is in it and on its keys.
        let mut plaintext = wire::encode(&inner).unwrap_or_default();
        let encoded = plaintext.len();
        if matches!(inner.payload, Payload::Message(_)) {
            wire::pad(&mut plaintext);
        }
        let sealed = crypto::seal(
            &epoch.message_key(&self.id()),
            &self.aad(epoch),
            &plaintext,
            rng,
        );
        plaintext.truncate(encoded);
        let header_plain = wire::encode(&epoch.frontier).unwrap_or_default();
        let header = crypto::seal(&header_key(&self.id()), ENVELOPE_LABEL, &header_plain, rng);
        let envelope = Envelope { header, sealed };
        (wire::encode(&envelope).unwrap_or_default(), plaintext)
    }

    /// Seals a message for the room's topic. Returns the envelope bytes to publish and
    /// the record to store locally.
    pub fn seal_message<R: CryptoRng + ?Sized>(
        &self,
        text: &str,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<(Vec<u8>, MessageRecord), RoomError> {
        if !self.is_member() {
            return Err(RoomError::NotMember);
        }
        if text.is_empty() || text.len() > MAX_TEXT {
            return Err(RoomError::BadText);
        }
        // After a departure, nothing new goes out under a key the departed member holds:
        // the sender must rotate first (the node does so automatically).
        if self.needs_rotation() {
            return Err(RoomError::NoKey);
        }
        let epoch = self.current().ok_or(RoomError::NoKey)?;
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let mut context = self.log.heads();
        context.truncate(MAX_CONTEXT);
        let body = MessageBody {
            sent_at: now_ms,
            salt,
            context,
            text: text.to_owned(),
        };
        let (envelope, plaintext) = self.seal_payload(epoch, Payload::Message(body), rng);
        let record = MessageRecord {
            id: crypto::hash(b"confer/v1/message-id", &[&plaintext]),
            author: self.me.id(),
            sent_at: now_ms,
            text: text.to_owned(),
        };
        Ok((envelope, record))
    }

    /// Opens an envelope from the room's topics: finds the epoch key by its id, decrypts,
    /// verifies the signature, then either checks a message against the log (author a
    /// current member, context known, epoch not older than the context allows) or takes a
    /// membership operation into the log.
    pub fn open(&mut self, bytes: &[u8], now_ms: u64) -> Result<Incoming, OpenError> {
        let (envelope, frontier) = self.unwrap_header(bytes)?;
        let room = self.id();
        let (held, epoch) = self.epoch_for(&frontier)?;
        let plaintext = crypto::open(
            &epoch.message_key(&room),
            &self.aad(&epoch),
            &envelope.sealed,
        )
        .map(zeroize::Zeroizing::new)
        .map_err(|_| OpenError::Crypto)?;
        let (inner, encoded): (SignedPayload, usize) =
            wire::decode_padded(&plaintext, MAX_ENVELOPE).map_err(|_| OpenError::Malformed)?;
        let plaintext = plaintext.get(..encoded).ok_or(OpenError::Malformed)?;
        // A message is authenticated by the payload signature. An operation carries its
        // author's own signature, which the log checks, so the wrapper's is not checked
        // again (whoever re-wraps an operation cannot change it).
        if matches!(inner.payload, Payload::Message(_)) {
            inner
                .author
                .verify(
                    PAYLOAD_LABEL,
                    &self.payload_signed_bytes(&epoch, &inner.payload),
                    &inner.signature,
                )
                .map_err(|_| OpenError::BadSignature)?;
        }
        let result = match inner.payload {
            Payload::Message(body) => {
                self.check_message(&inner.author, &body, &epoch.frontier)?;
                Incoming::Message(MessageRecord {
                    id: crypto::hash(b"confer/v1/message-id", &[plaintext]),
                    author: inner.author,
                    sent_at: body.sent_at,
                    text: body.text,
                })
            }
            Payload::Op(op) => match self.log.insert(*op) {
                Ok(new) => {
                    if new {
                        self.refresh(now_ms);
                    }
                    Incoming::Op { new }
                }
                Err(LogError::MissingParents) => return Err(OpenError::Pending),
                Err(_) => return Err(OpenError::Invalid),
            },
        };
        // Only now, with the body opened and verified, is a derived key kept.
        if held.is_none() && !self.epochs.iter().any(|e| e.frontier == epoch.frontier) {
            self.keep_epoch(epoch, now_ms);
        }
        Ok(result)
    }

    fn check_message(
        &self,
        author: &MemberId,
        body: &MessageBody,
        epoch_frontier: &[OpHash],
    ) -> Result<(), OpenError> {
        if body.text.is_empty() || body.text.len() > MAX_TEXT || body.context.len() > MAX_CONTEXT {
            return Err(OpenError::Invalid);
        }
        let state = self.log.state();
        if state.member(author).is_none() {
            return Err(if state.former_member(author).is_some() {
                OpenError::Departed
            } else {
                OpenError::Pending
            });
        }
        if body.context.iter().any(|h| !self.log.contains(h)) {
            return Err(OpenError::Pending);
        }
        // Every departure the author knew of must be behind the epoch it sealed with.
        for d in state.departures() {
            let known = body
                .context
                .iter()
                .any(|c| c == d || self.log.is_ancestor(d, c));
            let covered = epoch_frontier
                .iter()
                .any(|k| k == d || self.log.is_ancestor(d, k));
            if known && !covered {
                return Err(OpenError::StaleEpoch);
            }
        }
        Ok(())
    }

    /// Authors a membership operation on the current heads, applies it, and returns it
    /// sealed under the epoch that was current *before* it (so every member who has not
    /// yet seen it can open it).
    fn author_op<R: CryptoRng + ?Sized>(
        &mut self,
        body: OpBody,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Vec<u8>, RoomError> {
        self.author_keying_op(body, None, now_ms, rng)
    }

    /// [`Self::author_op`] for a keying operation whose secret this member just drew: it
    /// is recorded directly instead of being opened again from its own share.
    fn author_keying_op<R: CryptoRng + ?Sized>(
        &mut self,
        body: OpBody,
        secret: Option<Secret32>,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Vec<u8>, RoomError> {
        let epoch = self.sending_epoch().cloned().ok_or(RoomError::NoKey)?;
        let op = SignedOp::sign(
            Op {
                room_id: self.id(),
                parents: self.log.heads(),
                author: self.me.id(),
                created_at: now_ms,
                body,
            },
            &self.me,
        )?;
        let hash = op.hash();
        self.log.insert_own(op.clone()).map_err(|e| match e {
            LogError::Invalid(crate::log::Rule::RotatesAgain) => RoomError::KeyIsNew,
            LogError::TooManyOps => RoomError::TooLarge,
            e => RoomError::Log(e),
        })?;
        if let Some(secret) = secret {
            self.secrets.insert(hash, secret);
            self.opened.insert(hash);
        }
        self.refresh(now_ms);
        Ok(self.seal_payload(&epoch, Payload::Op(Box::new(op)), rng).0)
    }

    fn member_by(&self, query: &str) -> Result<MemberId, RoomError> {
        let q = query.trim().to_lowercase();
        let members = self.members();
        let by_name: Vec<MemberId> = members
            .iter()
            .filter(|m| crate::invite::same_name(&m.display_name, query))
            .map(|m| m.public.id)
            .collect();
        let by_id: Vec<MemberId> = members
            .iter()
            .filter(|m| q.len() >= 4 && m.public.id.to_hex().starts_with(&q))
            .map(|m| m.public.id)
            .collect();
        match (by_name.as_slice(), by_id.as_slice()) {
            ([one], _) | ([], [one]) => Ok(*one),
            ([], []) => Err(RoomError::NoSuchMember),
            _ => Err(RoomError::AmbiguousMember),
        }
    }

    /// For the facilitator's actions on someone else: checks the role and resolves
    /// `member` (display name or member-id prefix) to another current member.
    fn another_member_for_facilitator(&self, member: &str) -> Result<MemberId, RoomError> {
        if !self.is_facilitator() {
            return Err(RoomError::NotFacilitator);
        }
        let target = self.member_by(member)?;
        if target == self.me() {
            return Err(RoomError::NotYourself);
        }
        Ok(target)
    }

    /// Leaves the room. The returned envelope must be published; afterwards this member
    /// can neither read nor post anything new.
    pub fn leave<R: CryptoRng + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Vec<u8>, RoomError> {
        if !self.is_member() {
            return Err(RoomError::NotMember);
        }
        if self.is_facilitator() {
            return Err(RoomError::FacilitatorCannotLeave);
        }
        self.author_op(OpBody::Leave, now_ms, rng)
    }

    /// Removes a member (facilitator only) and starts a new epoch whose secret is sealed
    /// to the remaining members only. `member` is a display name or a member-id prefix.
    pub fn remove<R: CryptoRng + ?Sized>(
        &mut self,
        member: &str,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Vec<u8>, RoomError> {
        let target = self.another_member_for_facilitator(member)?;
        let remaining: Vec<MemberPublic> = self
            .members()
            .iter()
            .filter(|m| m.public.id != target)
            .map(|m| m.public)
            .collect();
        let secret = Secret32::random(rng);
        let rotation = make_rotation(&self.id(), &remaining, &secret, rng)?;
        self.author_keying_op(
            OpBody::Remove {
                member: target,
                rotation,
            },
            Some(secret),
            now_ms,
            rng,
        )
    }

    /// Starts a new epoch with a fresh random secret sealed to every current member.
    pub fn rotate<R: CryptoRng + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Vec<u8>, RoomError> {
        if !self.is_member() {
            return Err(RoomError::NotMember);
        }
        if !self.may_rotate() {
            return Err(RoomError::KeyIsNew);
        }
        let recipients: Vec<MemberPublic> = self.members().iter().map(|m| m.public).collect();
        let secret = Secret32::random(rng);
        let rotation = make_rotation(&self.id(), &recipients, &secret, rng)?;
        self.author_keying_op(OpBody::Rotate { rotation }, Some(secret), now_ms, rng)
    }

    /// Hands the facilitator role to another member.
    pub fn handover<R: CryptoRng + ?Sized>(
        &mut self,
        member: &str,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Vec<u8>, RoomError> {
        let to = self.another_member_for_facilitator(member)?;
        self.author_op(OpBody::Handover { to }, now_ms, rng)
    }

    /// The handover that made this member the facilitator, if it has not yet said that it
    /// takes the role ([`OpBody::TakeRole`]): its node does so at once.
    pub fn role_to_take(&self) -> Option<OpHash> {
        if !self.is_facilitator() {
            return None;
        }
        let me = self.me.id();
        let handover = self
            .log
            .events_in_order()
            .filter(|(h, op)| {
                matches!(op.op.body, OpBody::Handover { to } if to == me)
                    && self.log.state().is_valid(h)
            })
            .map(|(h, _)| *h)
            .last()?;
        let taken = self.log.events_in_order().any(|(_, op)| {
            op.op.author == me
                && matches!(op.op.body, OpBody::TakeRole { handover: t } if t == handover)
        });
        (!taken).then_some(handover)
    }

    /// Says that this member takes the role a handover gave it (see [`Self::role_to_take`]).
    pub fn take_role<R: CryptoRng + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Vec<u8>, RoomError> {
        let handover = self.role_to_take().ok_or(RoomError::NotFacilitator)?;
        self.author_op(OpBody::TakeRole { handover }, now_ms, rng)
    }

    /// Invites this member issued that are neither used, revoked nor expired.
    pub fn outstanding_invites(&self, now_ms: u64) -> Vec<OutstandingInvite> {
        // Only the facilitator admits: a former facilitator's invites no longer work.
        if !self.is_facilitator() {
            return Vec::new();
        }
        let state = self.log.state();
        self.invites
            .iter()
            .filter(|(id, i)| {
                !i.used
                    && now_ms / 1000 < i.expires_at
                    && !state.is_revoked(id)
                    && !state.is_used(id)
            })
            .map(|(id, i)| OutstandingInvite {
                id: *id,
                expires_at: i.expires_at,
            })
            .collect()
    }

    /// Revokes an outstanding invite (facilitator only), by full code or id prefix (hex).
    pub fn revoke_invite<R: CryptoRng + ?Sized>(
        &mut self,
        which: &str,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Vec<u8>, RoomError> {
        if !self.is_facilitator() {
            return Err(RoomError::NotFacilitator);
        }
        let which = which.trim();
        let id = match Invite::from_code(which) {
            Ok(invite) if invite.body.room_id == self.id() => invite.body.invite_id,
            Ok(_) => return Err(RoomError::NoSuchInvite),
            Err(_) => {
                let q = which.to_lowercase();
                let matches: Vec<InviteId> = self
                    .outstanding_invites(now_ms)
                    .into_iter()
                    .filter(|i| q.len() >= 4 && hex::encode(i.id).starts_with(&q))
                    .map(|i| i.id)
                    .collect();
                if matches.len() != 1 {
                    return Err(RoomError::NoSuchInvite);
                }
                matches[0]
            }
        };
        if !self.outstanding_invites(now_ms).iter().any(|i| i.id == id) {
            return Err(RoomError::NoSuchInvite);
        }
        self.author_op(OpBody::RevokeInvite { invite_id: id }, now_ms, rng)
    }

    /// Issues an invite (facilitator only). `addresses` are the facilitator node's
    /// dialable multiaddresses, `peer` its libp2p peer id bytes.
    pub fn issue_invite<R: CryptoRng + ?Sized>(
        &mut self,
        addresses: Vec<String>,
        peer: Vec<u8>,
        expires_at: u64,
        rng: &mut R,
    ) -> Result<Invite, RoomError> {
        if !self.is_facilitator() {
            return Err(RoomError::NotFacilitator);
        }
        if self.members().len() >= MAX_MEMBERS {
            return Err(RoomError::RoomFull);
        }
        let mut invite_id = [0u8; 16];
        rng.fill_bytes(&mut invite_id);
        let secret = Secret32::random(rng);
        let body = InviteBody {
            room_id: self.id(),
            invite_id,
            secret: secret.clone(),
            expires_at,
            facilitator: self.me.id(),
            facilitator_peer: peer,
            addresses,
        };
        let invite = Invite::sign(body, &self.me).map_err(|_| RoomError::BadRecord)?;
        self.invites.insert(
            invite_id,
            IssuedInvite {
                secret,
                expires_at,
                used: false,
                name_refusals: 0,
            },
        );
        Ok(invite)
    }

    /// Handles a join request (facilitator only): checks the invite, records the
    /// admission in the log, marks the invite used, and seals a welcome to the joiner.
    /// On refusal nothing changes. The caller must persist the room before sending
    /// the response, so a crash cannot make an invite usable twice.
    ///
    /// The same request again (the same member keys and peer, still a member; the
    /// joiner's node asks again when the connection failed before the answer came)
    /// gets a welcome to the room as it is now and changes nothing: otherwise a lost
    /// answer would leave the joiner out, its invite spent and its name taken. Only the
    /// holder of the request's keys can open that welcome, and it holds nothing a
    /// current member is not given anyway.
    pub fn admit<R: CryptoRng + ?Sized>(
        &mut self,
        request: &JoinRequest,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Admission, InviteError> {
        let body = &request.body;
        // The request's own shape first, before anything about the room.
        if !crypto::is_usable_agreement_key(&body.member.agreement) {
            return Err(InviteError::BadRequest);
        }
        // Until the invite's secret is proven, every refusal is the same: a holder of a
        // dead, altered or foreign invite learns nothing about the room.
        let issued = self
            .invites
            .get(&body.invite_id)
            .filter(|i| body.room_id == self.id() && i.secret == body.secret)
            .filter(|_| self.is_facilitator())
            .filter(|_| !self.log.state().is_revoked(&body.invite_id))
            .ok_or(InviteError::Unknown)?;
        if issued.used || self.log.state().is_used(&body.invite_id) {
            let admitted = self
                .log
                .state()
                .member(&body.member.id)
                .is_some_and(|m| m.public == body.member && m.peer == body.peer);
            if !admitted {
                return Err(InviteError::Unknown);
            }
            return Ok(Admission {
                response: self.welcome(&body.member, rng)?,
                announcement: None,
                previous: None,
            });
        }
        if now_ms / 1000 >= issued.expires_at || issued.name_refusals >= MAX_NAME_REFUSALS {
            return Err(InviteError::Unknown);
        }
        if self.members().len() >= MAX_MEMBERS {
            return Err(InviteError::RoomFull);
        }
        // Members tell each other apart by name: refuse one that looks like a current
        // member's. The invite stays usable under another name, a few times only, so that
        // whoever holds it cannot test name after name.
        if self
            .members()
            .iter()
            .any(|m| crate::invite::same_name(&m.display_name, &body.display_name))
        {
            if let Some(issued) = self.invites.get_mut(&body.invite_id) {
                issued.name_refusals = issued.name_refusals.saturating_add(1);
            }
            return Err(InviteError::NameTaken);
        }
        let Some(epoch) = self.current().cloned() else {
            return Err(InviteError::Unknown);
        };
        let op = SignedOp::sign(
            Op {
                room_id: self.id(),
                parents: self.log.heads(),
                author: self.me.id(),
                created_at: now_ms,
                body: OpBody::Admit {
                    member: body.member,
                    display_name: body.display_name.clone(),
                    peer: body.peer.clone(),
                    invite_id: body.invite_id,
                },
            },
            &self.me,
        )
        .map_err(|_| InviteError::BadRequest)?;
        let hash = op.hash();
        let mut after = self.clone();
        after
            .log
            .insert_own(op.clone())
            .map_err(|_| InviteError::BadRequest)?;
        if !after.log.state().is_valid(&hash) {
            return Err(InviteError::BadRequest);
        }
        after.refresh(now_ms);
        let response = after.welcome(&body.member, rng)?;
        if let Some(issued) = after.invites.get_mut(&body.invite_id) {
            issued.used = true;
        }
        let previous = std::mem::replace(self, after);
        let (announcement, _) = self.seal_payload(&epoch, Payload::Op(Box::new(op)), rng);
        Ok(Admission {
            response,
            announcement: Some(announcement),
            previous: Some(Box::new(previous)),
        })
    }

    /// The room as it is now (name, log, the current key's secrets), sealed to a member.
    /// The log goes as this member holds it: the shares of keying operations whose epochs
    /// are past are already deleted from it.
    fn welcome<R: CryptoRng + ?Sized>(
        &self,
        member: &MemberPublic,
        rng: &mut R,
    ) -> Result<JoinResponse, InviteError> {
        let secrets = self
            .log
            .state()
            .frontier()
            .iter()
            .filter_map(|k| self.secrets.get(k).map(|s| (*k, s.clone())))
            .collect();
        let welcome = Welcome {
            room_name: self.name.clone(),
            ops: self.log.ops(),
            secrets,
        };
        let plaintext = zeroize::Zeroizing::new(
            wire::encode_large(&welcome).map_err(|_| InviteError::BadRequest)?,
        );
        // What the sealing and the answer's framing add must still fit in an answer.
        if plaintext.len() > crate::invite::MAX_JOIN_RESPONSE - WELCOME_OVERHEAD {
            return Err(InviteError::BadRequest);
        }
        let sealed = crypto::seal_to(
            &member.agreement,
            &welcome_aad(&self.id(), &member.id),
            &plaintext,
            rng,
        )
        .map_err(|_| InviteError::BadRequest)?;
        Ok(JoinResponse::Welcome(sealed))
    }

    /// Builds the joiner's copy of the room from the facilitator's welcome. Its size and
    /// shape are checked before its log is replayed (every operation verified and judged
    /// as if it came from the network), and each secret against its operation's
    /// commitment.
    pub fn from_welcome(
        invite: &Invite,
        me: MemberKeys,
        sealed: &SealedBox,
        now_ms: u64,
    ) -> Result<Self, RoomError> {
        let room_id = invite.body.room_id;
        if sealed.sealed.ciphertext.len() > wire::MAX_LARGE {
            return Err(RoomError::BadWelcome);
        }
        let plaintext = crypto::open_from(
            me.agreement_secret(),
            &welcome_aad(&room_id, &me.id()),
            sealed,
        )
        .map(zeroize::Zeroizing::new)
        .map_err(|_| RoomError::BadWelcome)?;
        let welcome: Welcome =
            wire::decode_large(&plaintext, wire::MAX_LARGE).map_err(|_| RoomError::BadWelcome)?;
        if welcome.ops.len() > crate::log::MAX_OPS
            || welcome.secrets.is_empty()
            || welcome.secrets.len() > MAX_FRONTIER
            || check_display_name(&welcome.room_name).is_err()
            || welcome.ops.first().is_none_or(|g| g.op.room_id != room_id)
        {
            return Err(RoomError::BadWelcome);
        }
        let log = Membership::replay(welcome.ops).map_err(|_| RoomError::BadWelcome)?;
        // The invite's signer must be the facilitator the (self-authenticating) log names.
        if log.room_id() != room_id
            || log.state().facilitator() != Some(invite.body.facilitator)
            || log.state().member(&me.id()).is_none()
        {
            return Err(RoomError::BadWelcome);
        }
        let committed = welcome.secrets.iter().all(|(k, secret)| {
            log.op(k)
                .and_then(|op| op.op.body.rotation())
                .is_some_and(|r| r.commitment == crate::log::commitment(&room_id, secret.expose()))
        });
        if !committed {
            return Err(RoomError::BadWelcome);
        }
        let mut room = Self {
            name: welcome.room_name,
            me,
            log,
            secrets: welcome.secrets.into_iter().collect(),
            epochs: Vec::new(),
            invites: BTreeMap::new(),
            opened: BTreeSet::new(),
            bad_shares: BTreeSet::new(),
        };
        room.refresh(now_ms);
        if room.current().is_none() {
            return Err(RoomError::BadWelcome);
        }
        Ok(room)
    }

    /// Takes in operations received outside an envelope (a member's log). A copy with its
    /// shares fills in one this member holds without them, if it never looked at that
    /// operation's share.
    pub fn merge_ops(&mut self, ops: Vec<SignedOp>, now_ms: u64) -> Inserted {
        let mut filled = false;
        for op in &ops {
            if matches!(op.op.body.rotation(), Some(r) if matches!(r.shares, Shares::Sealed(_))) {
                let h = op.hash();
                if !self.opened.contains(&h) {
                    filled |= self.log.fill_shares(&h, op);
                }
            }
        }
        let inserted = self.log.insert_all(ops);
        if inserted.new > 0 || filled {
            self.refresh(now_ms);
        }
        inserted
    }

    /// Encodes the whole room, secrets included, for the (encrypted) store. Fails, rather
    /// than giving anything short, for a room too large to keep.
    pub fn to_bytes(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, RoomError> {
        let record = RoomRecord {
            name: self.name.clone(),
            me: self.me.clone(),
            ops: self.log.ops(),
            secrets: self.secrets.iter().map(|(k, v)| (*k, v.clone())).collect(),
            epochs: self.epochs.clone(),
            invites: self.invites.iter().map(|(k, v)| (*k, v.clone())).collect(),
            opened: self.opened.iter().copied().collect(),
            bad_shares: self.bad_shares.iter().copied().collect(),
        };
        wire::encode_large(&record)
            .map(zeroize::Zeroizing::new)
            .map_err(|_| RoomError::TooLarge)
    }

    /// Decodes a room from the store. The log's rules are applied again; its signatures
    /// are not checked again (the store is sealed under this profile's key).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RoomError> {
        let record: RoomRecord =
            wire::decode_large(bytes, MAX_ROOM_RECORD).map_err(|_| RoomError::BadRecord)?;
        let mut room = Self {
            name: record.name,
            me: record.me,
            log: Membership::restore(record.ops).map_err(|_| RoomError::BadRecord)?,
            secrets: record.secrets.into_iter().collect(),
            epochs: record.epochs,
            invites: record.invites.into_iter().collect(),
            opened: record.opened.into_iter().collect(),
            bad_shares: record.bad_shares.into_iter().collect(),
        };
        room.bound_epochs();
        Ok(room)
    }

    /// Signs any operation with this member's key (tests forge operations with it).
    #[cfg(any(test, feature = "test_utils"))]
    #[allow(clippy::expect_used)]
    pub fn sign_op_for_tests(&self, op: Op) -> SignedOp {
        SignedOp::sign(op, &self.me).expect("an operation of bounded size signs")
    }

    /// Seals a message under the newest key held, skipping every check a sender makes.
    #[cfg(any(test, feature = "test_utils"))]
    pub fn forge_message_for_tests<R: CryptoRng + ?Sized>(
        &self,
        text: &str,
        now_ms: u64,
        rng: &mut R,
    ) -> Vec<u8> {
        let epoch = self.sending_epoch().cloned().expect("some key held");
        self.forge_in(&epoch, text, now_ms, rng)
    }

    /// Seals a message with this member's keys and log context, under `old`'s current key.
    #[cfg(any(test, feature = "test_utils"))]
    pub fn forge_message_in_epoch_for_tests<R: CryptoRng + ?Sized>(
        &self,
        old: &Room,
        text: &str,
        now_ms: u64,
        rng: &mut R,
    ) -> Vec<u8> {
        let epoch = old.current().cloned().expect("old view has a key");
        self.forge_in(&epoch, text, now_ms, rng)
    }

    #[cfg(any(test, feature = "test_utils"))]
    fn forge_in<R: CryptoRng + ?Sized>(
        &self,
        epoch: &EpochKey,
        text: &str,
        now_ms: u64,
        rng: &mut R,
    ) -> Vec<u8> {
        let body = MessageBody {
            sent_at: now_ms,
            salt: [7; 16],
            context: self.log.heads(),
            text: text.to_owned(),
        };
        self.seal_payload(epoch, Payload::Message(body), rng).0
    }

    /// Signs, with this member's key (current or former), an operation of `kind` whose
    /// parents are `parents` (any operations of the log: an author can always back-date),
    /// with a real rotation sealed to the members of that past where the kind needs one.
    /// What a malicious member, former member or former facilitator can make.
    #[cfg(any(test, feature = "test_utils"))]
    #[allow(clippy::expect_used)]
    pub fn forge_op_for_tests<R: CryptoRng + ?Sized>(
        &self,
        parents: Vec<OpHash>,
        kind: ForgedKind,
        now_ms: u64,
        rng: &mut R,
    ) -> SignedOp {
        let mut wanted: BTreeSet<OpHash> = parents.iter().copied().collect();
        let past: Vec<SignedOp> = self
            .log
            .iter()
            .filter(|(h, _)| {
                wanted
                    .iter()
                    .any(|p| *p == **h || self.log.is_ancestor(h, p))
            })
            .map(|(_, op)| op.clone())
            .collect();
        wanted.clear();
        let members: Vec<MemberPublic> = Membership::restore(past)
            .map(|log| log.state().members().iter().map(|m| m.public).collect())
            .unwrap_or_default();
        let rotation = |without: Option<MemberId>, rng: &mut R| {
            let to: Vec<MemberPublic> = members
                .iter()
                .filter(|m| Some(m.id) != without)
                .copied()
                .collect();
            make_rotation(&self.id(), &to, &Secret32::random(rng), rng).expect("rotation")
        };
        let body = match kind {
            ForgedKind::Leave => OpBody::Leave,
            ForgedKind::Rotate => OpBody::Rotate {
                rotation: rotation(None, rng),
            },
            ForgedKind::Remove(member) => OpBody::Remove {
                member,
                rotation: rotation(Some(member), rng),
            },
            ForgedKind::Handover(to) => OpBody::Handover { to },
            ForgedKind::Admit => {
                let keys = MemberKeys::generate(rng);
                let mut invite_id = [0u8; 16];
                rng.fill_bytes(&mut invite_id);
                OpBody::Admit {
                    member: keys.public(),
                    display_name: format!("Sock {}", hex::encode(&invite_id[..3])),
                    peer: Vec::new(),
                    invite_id,
                }
            }
        };
        let mut parents = parents;
        parents.sort();
        parents.dedup();
        self.sign_op_for_tests(Op {
            room_id: self.id(),
            parents,
            author: self.me.id(),
            created_at: now_ms,
            body,
        })
    }

    /// An envelope of this room whose sealed header names `frontier` and whose body is
    /// `body`, sealed under no key anyone holds: what anyone who knows the room id (a
    /// member, a former member, an invite holder) can send.
    #[cfg(any(test, feature = "test_utils"))]
    #[allow(clippy::expect_used)]
    pub fn envelope_naming_for_tests<R: CryptoRng + ?Sized>(
        &self,
        frontier: &[OpHash],
        body: &[u8],
        rng: &mut R,
    ) -> Vec<u8> {
        let header = crypto::seal(
            &header_key(&self.id()),
            ENVELOPE_LABEL,
            &wire::encode(&frontier.to_vec()).expect("frontier encodes"),
            rng,
        );
        let sealed = crypto::seal(&Secret32::random(rng), b"", body, rng);
        wire::encode(&Envelope { header, sealed }).expect("envelope encodes")
    }

    /// Swaps this member's keys for someone else's (tests impersonate outsiders with it).
    #[cfg(any(test, feature = "test_utils"))]
    pub fn replace_keys_for_tests(&mut self, keys: MemberKeys) {
        self.me = keys;
    }

    /// This member's role, if a member.
    pub fn my_role(&self) -> Option<Role> {
        self.log.state().member(&self.me.id()).map(|m| m.role)
    }
}

/// What [`Room::forge_op_for_tests`] makes.
#[cfg(any(test, feature = "test_utils"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgedKind {
    /// A leave.
    Leave,
    /// A rotation sealed to the members of the past.
    Rotate,
    /// A removal of this member, with a rotation sealed to the rest.
    Remove(MemberId),
    /// A handover to this member.
    Handover(MemberId),
    /// An admission of a fresh key.
    Admit,
}

/// More than what sealing a welcome and framing it as an answer add to its plaintext
/// (ephemeral key, nonce, tag and length prefixes: under 100 bytes).
const WELCOME_OVERHEAD: usize = 1024;

fn welcome_aad(room_id: &RoomId, joiner: &MemberId) -> Vec<u8> {
    let mut aad = WELCOME_LABEL.to_vec();
    aad.extend_from_slice(&room_id.0);
    aad.extend_from_slice(&joiner.0);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invite::JoinBody;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const NOW: u64 = 1_800_000_000_000;

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    fn facilitator(rng: &mut StdRng) -> Room {
        Room::create("Case review", "Alice", b"peer-a".to_vec(), NOW, rng).unwrap()
    }

    fn invite(room: &mut Room, rng: &mut StdRng) -> Invite {
        let code = room
            .issue_invite(
                vec!["/ip4/127.0.0.1/tcp/1".into()],
                b"peer-a".to_vec(),
                NOW / 1000 + 3600,
                rng,
            )
            .unwrap()
            .to_code();
        Invite::from_code(&code).unwrap()
    }

    fn request(invite: &Invite, name: &str, rng: &mut StdRng) -> (MemberKeys, JoinRequest) {
        let keys = MemberKeys::generate(rng);
        let body = JoinBody {
            room_id: invite.body.room_id,
            invite_id: invite.body.invite_id,
            secret: invite.body.secret.clone(),
            member: keys.public(),
            display_name: name.into(),
            peer: name.as_bytes().to_vec(),
        };
        let req = JoinRequest::new(body, &keys).unwrap();
        // Through the wire, as the node does.
        (keys, JoinRequest::from_bytes(&req.to_bytes()).unwrap())
    }

    fn join(fac: &mut Room, name: &str, rng: &mut StdRng) -> (Room, Vec<u8>) {
        crate::test_utils::join(fac, name, NOW, rng)
    }

    #[test]
    fn only_envelopes_of_the_current_epoch_count_as_current() {
        let mut r = rng(7);
        let mut alice = facilitator(&mut r);
        let (mut bob, _) = join(&mut alice, "Bob", &mut r);
        let (before, _) = alice.seal_message("before", NOW, &mut r).unwrap();
        assert!(alice.sealed_in_current_epoch(&before));
        let rotation = alice.rotate(NOW + 1, &mut r).unwrap();
        assert!(!alice.sealed_in_current_epoch(&before));
        bob.open(&rotation, NOW + 1).unwrap();
        assert!(!bob.sealed_in_current_epoch(&before));
        let (after, _) = alice.seal_message("after", NOW + 2, &mut r).unwrap();
        assert!(alice.sealed_in_current_epoch(&after) && bob.sealed_in_current_epoch(&after));
    }

    #[test]
    fn join_and_discuss() {
        let mut r = rng(1);
        let mut alice = facilitator(&mut r);
        let (mut bob, _) = join(&mut alice, "Bob", &mut r);
        let (mut carol, announce_carol) = join(&mut alice, "Carol", &mut r);
        assert_eq!(
            bob.open(&announce_carol, NOW).unwrap(),
            Incoming::Op { new: true }
        );
        // Replay of the announcement is recognised and changes nothing.
        assert_eq!(
            bob.open(&announce_carol, NOW).unwrap(),
            Incoming::Op { new: false }
        );
        for room in [&alice, &bob, &carol] {
            let names: Vec<_> = room
                .members()
                .iter()
                .map(|m| m.display_name.clone())
                .collect();
            assert_eq!(names, ["Alice", "Bob", "Carol"]);
            assert_eq!(room.topic(), alice.topic());
            assert_eq!(room.name(), "Case review");
        }
        assert!(!alice.topic().unwrap().contains(&alice.id().to_hex()[..8]));
        let (env, rec) = bob.seal_message("hello", NOW + 1, &mut r).unwrap();
        assert!(alice.sealed_in_current_epoch(&env));
        assert!(!alice.sealed_in_current_epoch(b"not an envelope"));
        for room in [&mut alice, &mut carol] {
            assert_eq!(
                room.open(&env, NOW).unwrap(),
                Incoming::Message(rec.clone())
            );
        }
        assert_eq!(alice.display_name_of(&rec.author), "Bob");
        // The envelope carries neither the text nor the author's key.
        assert!(!env.windows(5).any(|w| w == b"hello"));
        assert!(!env.windows(32).any(|w| w == rec.author.0));
    }

    /// Someone who sees only envelopes (a network observer, a relay) learns a message's
    /// length only to within its padding bucket: every short message seals to one length,
    /// and longer ones to a few. Each still opens to the record its author holds, whose
    /// id is that of the unpadded plaintext. Membership operations stay unpadded, as nodes
    /// from before the padding read them.
    #[test]
    fn an_envelope_shows_a_message_length_only_to_within_its_bucket() {
        let mut r = rng(7);
        let mut alice = facilitator(&mut r);
        let (bob, _) = join(&mut alice, "Bob", &mut r);
        let mut short = std::collections::BTreeSet::new();
        let mut overheads = std::collections::BTreeSet::new();
        let mut lengths = std::collections::BTreeSet::new();
        for len in (1..=4_000).step_by(7) {
            let text = "x".repeat(len);
            let (env, rec) = bob.seal_message(&text, NOW + 1, &mut r).unwrap();
            assert_eq!(
                alice.open(&env, NOW).unwrap(),
                Incoming::Message(rec.clone())
            );
            // The same payload's plaintext (only the salt differs, which has a fixed size).
            let body = MessageBody {
                sent_at: NOW + 1,
                salt: [0; 16],
                context: bob.log.heads(),
                text,
            };
            let (_, plaintext) =
                bob.seal_payload(bob.current().unwrap(), Payload::Message(body), &mut r);
            // The envelope's length is the padded length plus a constant: nothing more
            // of the message's length shows.
            overheads.insert(env.len() as i64 - wire::padded_len(plaintext.len()) as i64);
            lengths.insert(env.len());
            if len <= 300 {
                short.insert(env.len());
            }
        }
        assert_eq!(overheads.len(), 1, "{overheads:?}");
        assert_eq!(short.len(), 1, "1 to 300 characters: {short:?}");
        // 572 lengths up to 4,000 characters, 50 envelope lengths: one up to 512 bytes of
        // plaintext, then 16 each in buckets of 32 bytes to 1 KiB, 64 to 2 KiB and 128 to
        // 4 KiB, and one beyond.
        assert_eq!(lengths.len(), 50);
        // A membership operation is not padded: a node from before the padding, whose
        // decoder takes no trailing bytes, still reads it.
        let (bob_id, epoch) = (bob.id(), bob.current().unwrap().clone());
        let rotation = alice.rotate(NOW + 2, &mut r).unwrap();
        let (envelope, _) = bob.unwrap_header(&rotation).unwrap();
        let plaintext = crypto::open(
            &epoch.message_key(&bob_id),
            &bob.aad(&epoch),
            &envelope.sealed,
        )
        .unwrap();
        let op: SignedPayload = wire::decode(&plaintext, MAX_ENVELOPE).unwrap();
        assert!(matches!(op.payload, Payload::Op(_)));
    }

    #[test]
    fn invite_is_single_use_and_expires() {
        let mut r = rng(2);
        let mut alice = facilitator(&mut r);
        let inv = invite(&mut alice, &mut r);
        let (_, req) = request(&inv, "Bob", &mut r);
        alice.admit(&req, NOW, &mut r).unwrap();
        // A spent or expired invite is answered as one never issued: its holder learns
        // nothing about the room. (The joiner's own node says "expired" before asking.)
        let (_, again) = request(&inv, "Mallory", &mut r);
        assert_eq!(
            alice.admit(&again, NOW, &mut r).unwrap_err(),
            InviteError::Unknown
        );

        let inv = invite(&mut alice, &mut r);
        let (_, late) = request(&inv, "Late", &mut r);
        let before = alice.to_bytes().unwrap().len();
        let after_expiry = (inv.body.expires_at + 1) * 1000;
        assert_eq!(
            alice.admit(&late, after_expiry, &mut r).unwrap_err(),
            InviteError::Unknown
        );
        assert_eq!(
            inv.check_expiry(inv.body.expires_at),
            Err(InviteError::Expired)
        );
        assert_eq!(
            alice.to_bytes().unwrap().len(),
            before,
            "a refusal changes nothing"
        );
        assert_eq!(alice.members().len(), 2);
    }

    /// Membership changes are listed from one's own admission on: the facilitator sees
    /// everything since the room began; a later joiner does not see who came and went
    /// before it came. A former member's name says whether they left or were removed.
    #[test]
    fn changes_are_listed_from_ones_own_admission() {
        let mut r = rng(14);
        let mut alice = facilitator(&mut r);
        let (bob, _) = join(&mut alice, "Bob", &mut r);
        alice.remove("Bob", NOW + 1, &mut r).unwrap();
        let (mut carol, _) = join(&mut alice, "Carol", &mut r);
        let handover = alice.handover("Carol", NOW + 2, &mut r).unwrap();
        carol.open(&handover, NOW + 2).unwrap();
        let (_dan, _) = join(&mut carol, "Dan", &mut r);
        let kinds = |room: &Room| -> Vec<ChangeKind> {
            room.changes_while_member()
                .into_iter()
                .map(|c| c.kind)
                .collect()
        };
        let name = |s: &str| s.to_owned();
        assert_eq!(
            kinds(&alice),
            [
                ChangeKind::Created { by: name("Alice") },
                ChangeKind::Joined { who: name("Bob") },
                ChangeKind::Removed {
                    who: name("Bob"),
                    by: name("Alice")
                },
                ChangeKind::Joined { who: name("Carol") },
                ChangeKind::Handover {
                    from: name("Alice"),
                    to: name("Carol")
                },
            ]
        );
        assert_eq!(
            kinds(&carol),
            [
                ChangeKind::Joined { who: name("Carol") },
                ChangeKind::Handover {
                    from: name("Alice"),
                    to: name("Carol")
                },
                ChangeKind::Joined { who: name("Dan") },
            ],
            "nothing of Bob, who came and went before Carol"
        );
        // Which are about Alice herself, and which she made about someone else.
        let flags = |room: &Room| -> Vec<(bool, bool)> {
            room.changes_while_member()
                .into_iter()
                .map(|c| (c.about_me, c.by_me))
                .collect()
        };
        assert_eq!(
            flags(&alice),
            [
                (true, false),
                (false, false),
                (false, true),
                (false, false),
                (false, true)
            ]
        );
        assert_eq!(
            flags(&carol),
            [(true, false), (true, false), (false, false)]
        );
        // Bob, whose node was told nothing more, has only his own arrival.
        assert_eq!(kinds(&bob), [ChangeKind::Joined { who: name("Bob") }]);
        // His messages are shown as a removed member's; one who leaves, as having left.
        assert_eq!(alice.display_name_of(&bob.me()), "Bob (removed)");
        let (mut eve, _) = join(&mut carol, "Eve", &mut r);
        let left = eve.leave(NOW + 4, &mut r).unwrap();
        carol.open(&left, NOW + 4).unwrap();
        assert_eq!(carol.display_name_of(&eve.me()), "Eve (left)");

        // Bob, invited back (the same node), sees his first membership up to his removal,
        // and his new one, but nothing from while he was away.
        let (bob_again, _) = join(&mut carol, "Bob", &mut r);
        assert!(bob_again.rejoined());
        assert_eq!(
            kinds(&bob_again),
            [
                ChangeKind::Joined { who: name("Bob") },
                ChangeKind::Removed {
                    who: name("Bob"),
                    by: name("Alice")
                },
                ChangeKind::Joined { who: name("Bob") },
            ]
        );
        assert_eq!(
            flags(&bob_again),
            [(true, false); 3],
            "each identity is his"
        );
        // Eve's leave ends a membership too: Bob came back while she was away.
        let (eve_again, _) = join(&mut carol, "Eve", &mut r);
        assert_eq!(
            kinds(&eve_again),
            [
                ChangeKind::Joined { who: name("Eve") },
                ChangeKind::Left { who: name("Eve") },
                ChangeKind::Joined { who: name("Eve") },
            ]
        );
    }

    /// Only the facilitator admits, so the invites a facilitator issued stop working (and
    /// stop being listed) when it hands the role over.
    #[test]
    fn a_former_facilitators_invites_are_no_longer_outstanding() {
        let mut r = rng(13);
        let mut alice = facilitator(&mut r);
        let (_bob, _) = join(&mut alice, "Bob", &mut r);
        let inv = invite(&mut alice, &mut r);
        assert_eq!(alice.outstanding_invites(NOW).len(), 1);
        alice.handover("Bob", NOW + 1, &mut r).unwrap();
        assert!(alice.outstanding_invites(NOW + 1).is_empty());
        let (_, req) = request(&inv, "Carol", &mut r);
        assert!(alice.admit(&req, NOW + 1, &mut r).is_err());
    }

    /// A joiner whose answer was lost asks again with the same request: it gets the room
    /// as it is then, and nothing is recorded twice. The spent invite gets nobody else
    /// in: not other keys, not the same keys from another peer, not the same request
    /// once its member has been removed.
    #[test]
    fn the_same_join_request_again_gets_the_welcome_again_and_nothing_else_does() {
        let mut r = rng(12);
        let mut alice = facilitator(&mut r);
        let inv = invite(&mut alice, &mut r);
        let (keys, req) = request(&inv, "Bob", &mut r);
        let first = alice.admit(&req, NOW, &mut r).unwrap();
        assert!(first.announcement.is_some());
        alice.rotate(NOW + 1, &mut r).unwrap();
        let ops = alice.log().ops().len();

        let again = alice.admit(&req, NOW + 2, &mut r).unwrap();
        assert!(again.announcement.is_none(), "nothing new to announce");
        assert_eq!(alice.log().ops().len(), ops, "nothing recorded");
        assert_eq!(alice.members().len(), 2);
        let JoinResponse::Welcome(sealed) = again.response else {
            panic!("refused")
        };
        let bob = Room::from_welcome(&inv, keys.clone(), &sealed, NOW + 2).unwrap();
        assert_eq!(
            bob.epoch_number(),
            alice.epoch_number(),
            "the key as it is now"
        );
        let (message, _) = alice
            .seal_message("after the rotation", NOW + 3, &mut r)
            .unwrap();
        assert!(bob.clone().open(&message, NOW + 3).is_ok());

        let (_, other_keys) = request(&inv, "Mallory", &mut r);
        let mut elsewhere = req.body.clone();
        elsewhere.peer = b"Mallory".to_vec();
        let elsewhere = JoinRequest::new(elsewhere, &keys).unwrap();
        for refused in [&other_keys, &elsewhere] {
            assert_eq!(
                alice.admit(refused, NOW + 4, &mut r).unwrap_err(),
                InviteError::Unknown
            );
        }
        alice.remove("Bob", NOW + 5, &mut r).unwrap();
        assert_eq!(
            alice.admit(&req, NOW + 6, &mut r).unwrap_err(),
            InviteError::Unknown
        );
    }

    #[test]
    fn wrong_secret_or_room_is_unknown() {
        let mut r = rng(3);
        let mut alice = facilitator(&mut r);
        let mut other = facilitator(&mut r);
        let inv = invite(&mut alice, &mut r);
        let mut guessed = inv.clone();
        guessed.body.secret = Secret32::random(&mut r);
        let (_, req) = request(&guessed, "Eve", &mut r);
        assert_eq!(
            alice.admit(&req, NOW, &mut r).unwrap_err(),
            InviteError::Unknown
        );
        let (_, req) = request(&inv, "Eve", &mut r);
        assert_eq!(
            other.admit(&req, NOW, &mut r).unwrap_err(),
            InviteError::Unknown
        );
    }

    #[test]
    fn a_name_a_member_uses_is_refused_and_the_invite_stays_usable() {
        let mut r = rng(12);
        let mut alice = facilitator(&mut r);
        let (_bob, _) = join(&mut alice, "Bob", &mut r);
        let inv = invite(&mut alice, &mut r);
        for taken in [" bob", "ALICE "] {
            let (_, req) = request(&inv, taken, &mut r);
            assert_eq!(
                alice.admit(&req, NOW, &mut r).unwrap_err(),
                InviteError::NameTaken,
                "{taken:?}"
            );
        }
        assert_eq!(alice.members().len(), 2);
        let (_, req) = request(&inv, "Bob Martin", &mut r);
        assert!(alice.admit(&req, NOW, &mut r).is_ok());
        assert_eq!(alice.members().len(), 3);
    }

    /// Whoever holds an invite cannot test name after name to learn who is in the room:
    /// after a few names refused as taken, the invite stops working, and every answer is
    /// the same as for an invite never issued.
    #[test]
    fn an_invite_does_not_answer_name_after_name() {
        let mut r = rng(14);
        let mut alice = facilitator(&mut r);
        let (_bob, _) = join(&mut alice, "Bob", &mut r);
        let inv = invite(&mut alice, &mut r);
        for _ in 0..MAX_NAME_REFUSALS {
            let (_, req) = request(&inv, "Bob", &mut r);
            assert_eq!(
                alice.admit(&req, NOW, &mut r).unwrap_err(),
                InviteError::NameTaken
            );
        }
        for name in ["Bob", "Carol"] {
            let (_, req) = request(&inv, name, &mut r);
            assert_eq!(
                alice.admit(&req, NOW, &mut r).unwrap_err(),
                InviteError::Unknown,
                "{name}: the same answer whether the name is taken or free"
            );
        }
        assert_eq!(alice.members().len(), 2);
        // A request with a key no one can seal to is refused before the invite is looked
        // at, so it tells nothing either way.
        let (_, mut bad) = request(&invite(&mut alice, &mut r), "Bob", &mut r);
        bad.body.member.agreement = [0; 32];
        assert_eq!(
            alice.admit(&bad, NOW, &mut r).unwrap_err(),
            InviteError::BadRequest
        );
    }

    #[test]
    fn a_member_removed_while_away_is_told_of_its_removal_and_nothing_after() {
        let mut r = rng(13);
        let mut alice = facilitator(&mut r);
        let (mut bob, _) = join(&mut alice, "Bob", &mut r);
        let (mut carol, admitted) = join(&mut alice, "Carol", &mut r);
        bob.open(&admitted, NOW).unwrap();
        // Carol is away: she sees neither her removal nor Dave's admission after it.
        alice.remove("Carol", NOW + 1, &mut r).unwrap();
        let (_dave, _) = join(&mut alice, "Dave", &mut r);
        assert!(alice.departure_for(b"Bob").is_none(), "Bob is a member");
        assert!(alice.departure_for(b"Mallory").is_none(), "unknown peer");
        let told = alice.departure_for(b"Carol").expect("Carol was removed");
        assert!(carol.is_member());
        carol.merge_ops(told, NOW + 2);
        assert!(!carol.is_member(), "Carol learns she is out");
        let names: Vec<String> = carol
            .members()
            .iter()
            .map(|m| m.display_name.clone())
            .collect();
        assert_eq!(names, ["Alice", "Bob"], "nothing after her removal");
    }

    #[test]
    fn ninth_member_is_refused() {
        let mut r = rng(4);
        let mut alice = facilitator(&mut r);
        // Issue all invites up front so the cap is enforced at redemption.
        let invites: Vec<_> = (0..8).map(|_| invite(&mut alice, &mut r)).collect();
        for (i, inv) in invites.iter().enumerate() {
            let (_, req) = request(inv, &format!("M{i}"), &mut r);
            let result = alice.admit(&req, NOW, &mut r);
            if i < 7 {
                assert!(result.is_ok(), "member {i}");
            } else {
                assert_eq!(result.unwrap_err(), InviteError::RoomFull);
            }
        }
        assert_eq!(alice.members().len(), MAX_MEMBERS);
        assert_eq!(
            alice
                .issue_invite(vec![], vec![], NOW / 1000 + 10, &mut r)
                .unwrap_err(),
            RoomError::RoomFull
        );
    }

    #[test]
    fn only_the_facilitator_admits() {
        let mut r = rng(5);
        let mut alice = facilitator(&mut r);
        let (mut bob, _) = join(&mut alice, "Bob", &mut r);
        assert_eq!(
            bob.issue_invite(vec![], vec![], NOW / 1000 + 10, &mut r)
                .unwrap_err(),
            RoomError::NotFacilitator
        );
        // Bob forges an admission of a friend and seals it for the room.
        let friend = MemberKeys::generate(&mut r);
        let forged = SignedOp::sign(
            Op {
                room_id: bob.id(),
                parents: bob.log.heads(),
                author: bob.me(),
                created_at: NOW,
                body: OpBody::Admit {
                    member: friend.public(),
                    display_name: "Friend".into(),
                    peer: vec![],
                    invite_id: [0; 16],
                },
            },
            &bob.me,
        )
        .unwrap();
        let epoch = bob.current().unwrap().clone();
        let (env, _) = bob.seal_payload(&epoch, Payload::Op(Box::new(forged.clone())), &mut r);
        // Signed by Bob, who was never facilitator: refused, and not even kept.
        assert_eq!(alice.open(&env, NOW), Err(OpenError::Invalid));
        assert!(!alice.log.contains(&forged.hash()));
        assert_eq!(alice.members().len(), 2);
    }

    #[test]
    fn forged_author_and_outsiders_are_rejected() {
        let mut r = rng(6);
        let mut alice = facilitator(&mut r);
        let (mut bob, _) = join(&mut alice, "Bob", &mut r);
        // Bob holds the room key but signs as Alice: the signature check fails.
        let payload = Payload::Message(MessageBody {
            sent_at: NOW,
            salt: [0; 16],
            context: bob.log.heads(),
            text: "I quit".into(),
        });
        let epoch = bob.current().unwrap().clone();
        let signature = bob
            .me
            .sign(PAYLOAD_LABEL, &bob.payload_signed_bytes(&epoch, &payload));
        let inner = SignedPayload {
            author: alice.me(),
            payload,
            signature,
        };
        let sealed = crypto::seal(
            &epoch.message_key(&bob.id()),
            &bob.aad(&epoch),
            &wire::encode(&inner).unwrap(),
            &mut r,
        );
        let header = crypto::seal(
            &header_key(&bob.id()),
            ENVELOPE_LABEL,
            &wire::encode(&epoch.frontier).unwrap(),
            &mut r,
        );
        let env = wire::encode(&Envelope { header, sealed }).unwrap();
        assert_eq!(alice.open(&env, NOW), Err(OpenError::BadSignature));

        // Someone who got hold of the key but is not in the log.
        let mut outsider = bob.clone();
        outsider.me = MemberKeys::generate(&mut r);
        let body = MessageBody {
            sent_at: NOW,
            salt: [1; 16],
            context: vec![],
            text: "hi".into(),
        };
        let epoch = outsider.current().unwrap().clone();
        let (env, _) = outsider.seal_payload(&epoch, Payload::Message(body), &mut r);
        assert_eq!(bob.open(&env, NOW), Err(OpenError::Pending));

        // Another room's traffic, or altered bytes, do not open.
        let other = facilitator(&mut r);
        let (env, _) = other.seal_message("hi", NOW, &mut r).unwrap();
        assert_eq!(alice.open(&env, NOW), Err(OpenError::Crypto));
        let (mut env, _) = bob.seal_message("hi", NOW, &mut r).unwrap();
        let last = env.len() - 1;
        env[last] ^= 1;
        assert_eq!(alice.open(&env, NOW), Err(OpenError::Crypto));
        assert_eq!(alice.open(&[1, 2, 3], NOW), Err(OpenError::Malformed));
    }

    #[test]
    fn welcome_is_only_for_the_joiner_and_bound_to_the_invite() {
        let mut r = rng(7);
        let mut alice = facilitator(&mut r);
        let inv = invite(&mut alice, &mut r);
        let (keys, req) = request(&inv, "Bob", &mut r);
        let JoinResponse::Welcome(sealed) = alice.admit(&req, NOW, &mut r).unwrap().response else {
            panic!()
        };
        let eve = MemberKeys::generate(&mut r);
        assert_eq!(
            Room::from_welcome(&inv, eve, &sealed, NOW).unwrap_err(),
            RoomError::BadWelcome
        );
        // A welcome replayed against an invite from another facilitator is refused.
        let mut other = facilitator(&mut r);
        let mut foreign = invite(&mut other, &mut r);
        foreign.body.room_id = inv.body.room_id;
        assert_eq!(
            Room::from_welcome(&foreign, keys.clone(), &sealed, NOW).unwrap_err(),
            RoomError::BadWelcome
        );
        assert!(Room::from_welcome(&inv, keys, &sealed, NOW).is_ok());
    }

    #[test]
    fn record_roundtrip_keeps_secrets_and_log() {
        let mut r = rng(8);
        let mut alice = facilitator(&mut r);
        let (bob, _) = join(&mut alice, "Bob", &mut r);
        let restored = Room::from_bytes(&alice.to_bytes().unwrap()).unwrap();
        assert_eq!(restored.topic(), alice.topic());
        assert_eq!(restored.members().len(), 2);
        assert!(restored.is_facilitator());
        let (env, rec) = bob.seal_message("after restart", NOW, &mut r).unwrap();
        assert_eq!(
            restored.clone().open(&env, NOW).unwrap(),
            Incoming::Message(rec)
        );
        assert_eq!(
            Room::from_bytes(&[0xFF; 10]).unwrap_err(),
            RoomError::BadRecord
        );
        let epoch = alice.current().unwrap();
        let debug = format!("{alice:?} {epoch:?}");
        assert!(!debug.contains(&hex::encode(epoch.key.expose())));
    }

    #[test]
    fn names_and_texts_are_checked() {
        let mut r = rng(9);
        assert!(Room::create("", "A", vec![], NOW, &mut r).is_err());
        assert!(Room::create("x", &"n".repeat(65), vec![], NOW, &mut r).is_err());
        assert!(Room::create("x\u{7}", "A", vec![], NOW, &mut r).is_err());
        let alice = facilitator(&mut r);
        assert_eq!(
            alice.seal_message("", NOW, &mut r).unwrap_err(),
            RoomError::BadText
        );
        assert_eq!(
            alice
                .seal_message(&"x".repeat(MAX_TEXT + 1), NOW, &mut r)
                .unwrap_err(),
            RoomError::BadText
        );
    }
}
