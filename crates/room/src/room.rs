//! A room as one member holds it: its log, its current epoch key, and (for the
//! facilitator) the invites it has issued. Pure state plus functions; no IO.
//!
//! ## Traffic on the wire
//!
//! Everything a room sends over gossip is an [`Envelope`]: a nonce and a ciphertext,
//! nothing else. Inside, sealed with XChaCha20-Poly1305 under the epoch's message key
//! (associated data: room id and epoch number), is a payload — a message or a
//! membership operation — with its author's id and their ed25519 signature over
//! the room id, epoch and payload. So the network sees neither author, room nor
//! kind of payload, and a member cannot forge another member's words.
//!
//! ## Epoch keys
//!
//! An epoch has a 32-byte random secret. From it, HKDF-SHA256 derives (with the room
//! id as salt and distinct labels) the message key and the gossip topic name, so the
//! topic is opaque and changes whenever the secret does.

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::crypto::{self, CryptoError, Sealed, SealedBox};
use crate::identity::{MemberId, MemberKeys};
use crate::invite::{
    Invite, InviteBody, InviteError, InviteId, IssuedInvite, JoinRequest, JoinResponse,
    check_display_name,
};
use crate::log::{LogError, MAX_MEMBERS, Member, Membership, Op, OpBody, SignedOp};
use crate::secret::Secret32;
use crate::wire;

/// The longest message text, in bytes.
pub const MAX_TEXT: usize = 32 * 1024;
/// The largest envelope accepted from the network, in bytes.
pub const MAX_ENVELOPE: usize = 64 * 1024;
/// The largest stored room record accepted, in bytes.
pub const MAX_ROOM_RECORD: usize = wire::MAX_WIRE;

const ENVELOPE_LABEL: &[u8] = b"confer/v1/envelope";
const PAYLOAD_LABEL: &[u8] = b"confer/v1/payload";
const WELCOME_LABEL: &[u8] = b"confer/v1/welcome";

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
    #[error("only the room's facilitator can do that")]
    NotFacilitator,
    /// The room is full.
    #[error("the room is full (at most 8 members)")]
    RoomFull,
    /// The message is empty or too long.
    #[error("a message must be between 1 and {MAX_TEXT} bytes")]
    BadText,
    /// The welcome from the facilitator did not check out.
    #[error("the facilitator's answer could not be verified")]
    BadWelcome,
    /// A stored record is damaged.
    #[error("a stored room record is damaged")]
    BadRecord,
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
    /// Not sealed under this room's current key (another room, old epoch, or altered).
    #[error("envelope does not open with the room key")]
    Crypto,
    /// The author is not (yet) a member; the caller may retry after applying operations.
    #[error("author is not a member")]
    UnknownAuthor,
    /// The author's signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The content breaks a rule (e.g. text too long).
    #[error("invalid content")]
    Invalid,
}

/// The current key epoch.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Epoch {
    /// Counts up from 0 at creation.
    pub number: u64,
    /// The epoch secret; never leaves a member except sealed to another member.
    pub secret: Secret32,
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoch")
            .field("number", &self.number)
            .finish_non_exhaustive()
    }
}

/// What a gossip message carries: a nonce and a ciphertext, nothing in clear.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope(pub Sealed);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct MessageBody {
    sent_at: u64,
    salt: [u8; 16],
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
    /// A membership operation that was applied (false: already known).
    Op {
        /// Whether the operation was new.
        new: bool,
    },
}

/// What a joiner receives, sealed to its X25519 key.
#[derive(Clone, Serialize, Deserialize)]
struct Welcome {
    room_name: String,
    ops: Vec<SignedOp>,
    epoch: Epoch,
}

/// The result of admitting a joiner.
#[derive(Debug)]
pub struct Admission {
    /// The answer to send back to the joiner.
    pub response: JoinResponse,
    /// The admission, sealed for the room's topic, to publish to the other members.
    pub announcement: Vec<u8>,
}

/// A room as one member holds it.
#[derive(Clone)]
pub struct Room {
    name: String,
    me: MemberKeys,
    log: Membership,
    epoch: Epoch,
    invites: std::collections::BTreeMap<InviteId, IssuedInvite>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("id", &self.id())
            .field("members", &self.log.len())
            .field("epoch", &self.epoch.number)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct RoomRecord {
    name: String,
    me: MemberKeys,
    ops: Vec<SignedOp>,
    epoch: Epoch,
    invites: Vec<(InviteId, IssuedInvite)>,
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
        let me = MemberKeys::generate(rng);
        let genesis = SignedOp::sign(
            Op {
                room_id: RoomId(id),
                parents: Vec::new(),
                author: me.id(),
                created_at: now_ms,
                body: OpBody::Create {
                    facilitator: me.public(),
                    display_name: display_name.to_owned(),
                    peer,
                },
            },
            &me,
        );
        Ok(Self {
            name: name.to_owned(),
            log: Membership::from_genesis(genesis)?,
            me,
            epoch: Epoch {
                number: 0,
                secret: Secret32::random(rng),
            },
            invites: Default::default(),
        })
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

    /// Whether this member is the facilitator.
    pub fn is_facilitator(&self) -> bool {
        self.log.role_of(&self.me.id()) == Some(crate::log::Role::Facilitator)
    }

    /// Current members, facilitator first.
    pub fn members(&self) -> Vec<&Member> {
        self.log.members()
    }

    /// The membership log.
    pub fn log(&self) -> &Membership {
        &self.log
    }

    /// The current epoch number.
    pub fn epoch_number(&self) -> u64 {
        self.epoch.number
    }

    /// A display name for `id`: the member's name, or a short id for a non-member.
    pub fn display_name_of(&self, id: &MemberId) -> String {
        match self.log.member(id) {
            Some(m) => m.display_name.clone(),
            None => format!("(former member {})", &id.to_hex()[..8]),
        }
    }

    fn message_key(&self) -> Secret32 {
        crypto::derive(
            self.epoch.secret.expose(),
            &self.id().0,
            b"confer/v1/epoch/message-key",
        )
    }

    /// The gossip topic for the current epoch: opaque, derived from the epoch secret.
    pub fn topic(&self) -> String {
        let t = crypto::derive(
            self.epoch.secret.expose(),
            &self.id().0,
            b"confer/v1/epoch/topic",
        );
        format!("confer-{}", hex::encode(&t.expose()[..16]))
    }

    fn envelope_aad(&self) -> Vec<u8> {
        let mut aad = self.id().0.to_vec();
        aad.extend_from_slice(&self.epoch.number.to_le_bytes());
        aad
    }

    fn payload_signed_bytes(&self, payload: &Payload) -> Vec<u8> {
        let mut bytes = self.envelope_aad();
        bytes.extend_from_slice(&wire::encode(payload).unwrap_or_default());
        bytes
    }

    fn seal_payload<R: CryptoRng + ?Sized>(
        &self,
        payload: Payload,
        rng: &mut R,
    ) -> (Vec<u8>, Vec<u8>) {
        let signature = self
            .me
            .sign(PAYLOAD_LABEL, &self.payload_signed_bytes(&payload));
        let inner = SignedPayload {
            author: self.me.id(),
            payload,
            signature,
        };
        let plaintext = wire::encode(&inner).unwrap_or_default();
        let mut aad = ENVELOPE_LABEL.to_vec();
        aad.extend_from_slice(&self.envelope_aad());
        let sealed = crypto::seal(&self.message_key(), &aad, &plaintext, rng);
        (
            wire::encode(&Envelope(sealed)).unwrap_or_default(),
            plaintext,
        )
    }

    /// Seals a message for the room's topic. Returns the envelope bytes to publish and
    /// the record to store locally.
    pub fn seal_message<R: CryptoRng + ?Sized>(
        &self,
        text: &str,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<(Vec<u8>, MessageRecord), RoomError> {
        if text.is_empty() || text.len() > MAX_TEXT {
            return Err(RoomError::BadText);
        }
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let body = MessageBody {
            sent_at: now_ms,
            salt,
            text: text.to_owned(),
        };
        let (envelope, plaintext) = self.seal_payload(Payload::Message(body), rng);
        let record = MessageRecord {
            id: crypto::hash(b"confer/v1/message-id", &[&plaintext]),
            author: self.me.id(),
            sent_at: now_ms,
            text: text.to_owned(),
        };
        Ok((envelope, record))
    }

    /// Opens an envelope from the room's topic: decrypts, verifies the author is a
    /// member and the signature holds, and applies membership operations.
    pub fn open(&mut self, bytes: &[u8]) -> Result<Incoming, OpenError> {
        let Envelope(sealed) =
            wire::decode(bytes, MAX_ENVELOPE).map_err(|_| OpenError::Malformed)?;
        let mut aad = ENVELOPE_LABEL.to_vec();
        aad.extend_from_slice(&self.envelope_aad());
        let plaintext =
            crypto::open(&self.message_key(), &aad, &sealed).map_err(|_| OpenError::Crypto)?;
        let inner: SignedPayload =
            wire::decode(&plaintext, MAX_ENVELOPE).map_err(|_| OpenError::Malformed)?;
        if self.log.member(&inner.author).is_none() {
            return Err(OpenError::UnknownAuthor);
        }
        inner
            .author
            .verify(
                PAYLOAD_LABEL,
                &self.payload_signed_bytes(&inner.payload),
                &inner.signature,
            )
            .map_err(|_| OpenError::BadSignature)?;
        match inner.payload {
            Payload::Message(body) => {
                if body.text.is_empty() || body.text.len() > MAX_TEXT {
                    return Err(OpenError::Invalid);
                }
                Ok(Incoming::Message(MessageRecord {
                    id: crypto::hash(b"confer/v1/message-id", &[&plaintext]),
                    author: inner.author,
                    sent_at: body.sent_at,
                    text: body.text,
                }))
            }
            Payload::Op(op) => match self.log.apply(*op) {
                Ok(new) => Ok(Incoming::Op { new }),
                Err(LogError::MissingParents) => Err(OpenError::UnknownAuthor),
                Err(_) => Err(OpenError::Invalid),
            },
        }
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
        if self.log.len() >= MAX_MEMBERS {
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
            },
        );
        Ok(invite)
    }

    /// Handles a join request (facilitator only): checks the invite, records the
    /// admission in the log, marks the invite used, and seals a welcome to the joiner.
    /// On refusal nothing changes. The caller must persist the room before sending
    /// the response, so a crash cannot make an invite usable twice.
    pub fn admit<R: CryptoRng + ?Sized>(
        &mut self,
        request: &JoinRequest,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Admission, InviteError> {
        let body = &request.body;
        if body.room_id != self.id() || !self.is_facilitator() {
            return Err(InviteError::Unknown);
        }
        let issued = self
            .invites
            .get(&body.invite_id)
            .ok_or(InviteError::Unknown)?;
        if issued.secret != body.secret {
            return Err(InviteError::Unknown);
        }
        if issued.used {
            return Err(InviteError::AlreadyUsed);
        }
        if now_ms / 1000 >= issued.expires_at {
            return Err(InviteError::Expired);
        }
        if self.log.len() >= MAX_MEMBERS {
            return Err(InviteError::RoomFull);
        }
        if self.log.member(&body.member.id).is_some() {
            return Err(InviteError::BadRequest);
        }
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
        );
        let mut log = self.log.clone();
        log.apply(op.clone()).map_err(|e| match e {
            LogError::RoomFull => InviteError::RoomFull,
            _ => InviteError::BadRequest,
        })?;
        let welcome = Welcome {
            room_name: self.name.clone(),
            ops: log.ops().to_vec(),
            epoch: self.epoch.clone(),
        };
        let plaintext = wire::encode(&welcome).map_err(|_| InviteError::BadRequest)?;
        let sealed = crypto::seal_to(
            &body.member.agreement,
            &welcome_aad(&self.id(), &body.member.id),
            &plaintext,
            rng,
        )
        .map_err(|_| InviteError::BadRequest)?;
        self.log = log;
        if let Some(issued) = self.invites.get_mut(&body.invite_id) {
            issued.used = true;
        }
        let (announcement, _) = self.seal_payload(Payload::Op(Box::new(op)), rng);
        Ok(Admission {
            response: JoinResponse::Welcome(sealed),
            announcement,
        })
    }

    /// Builds the joiner's copy of the room from the facilitator's welcome.
    pub fn from_welcome(
        invite: &Invite,
        me: MemberKeys,
        sealed: &SealedBox,
    ) -> Result<Self, RoomError> {
        let room_id = invite.body.room_id;
        let plaintext = crypto::open_from(
            &me.agreement_secret(),
            &welcome_aad(&room_id, &me.id()),
            sealed,
        )
        .map_err(|_: CryptoError| RoomError::BadWelcome)?;
        let welcome: Welcome =
            wire::decode(&plaintext, wire::MAX_WIRE).map_err(|_| RoomError::BadWelcome)?;
        let log = Membership::replay(welcome.ops).map_err(|_| RoomError::BadWelcome)?;
        let created_by = log.ops().first().map(|op| op.op.author);
        if log.room_id() != room_id
            || created_by != Some(invite.body.facilitator)
            || log.member(&me.id()).is_none()
            || check_display_name(&welcome.room_name).is_err()
        {
            return Err(RoomError::BadWelcome);
        }
        Ok(Self {
            name: welcome.room_name,
            me,
            log,
            epoch: welcome.epoch,
            invites: Default::default(),
        })
    }

    /// Encodes the whole room, secrets included, for the (encrypted) store.
    pub fn to_bytes(&self) -> Vec<u8> {
        let record = RoomRecord {
            name: self.name.clone(),
            me: self.me.clone(),
            ops: self.log.ops().to_vec(),
            epoch: self.epoch.clone(),
            invites: self.invites.iter().map(|(k, v)| (*k, v.clone())).collect(),
        };
        wire::encode(&record).unwrap_or_default()
    }

    /// Decodes a room from the store, re-verifying its log.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RoomError> {
        let record: RoomRecord =
            wire::decode(bytes, MAX_ROOM_RECORD).map_err(|_| RoomError::BadRecord)?;
        Ok(Self {
            name: record.name,
            me: record.me,
            log: Membership::replay(record.ops).map_err(|_| RoomError::BadRecord)?,
            epoch: record.epoch,
            invites: record.invites.into_iter().collect(),
        })
    }
}

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
        let inv = invite(fac, rng);
        let (keys, req) = request(&inv, name, rng);
        let admission = fac.admit(&req, NOW, rng).unwrap();
        let JoinResponse::Welcome(sealed) =
            JoinResponse::from_bytes(&admission.response.to_bytes()).unwrap()
        else {
            panic!("refused")
        };
        (
            Room::from_welcome(&inv, keys, &sealed).unwrap(),
            admission.announcement,
        )
    }

    #[test]
    fn join_and_discuss() {
        let mut r = rng(1);
        let mut alice = facilitator(&mut r);
        let (mut bob, _) = join(&mut alice, "Bob", &mut r);
        let (mut carol, announce_carol) = join(&mut alice, "Carol", &mut r);
        assert_eq!(
            bob.open(&announce_carol).unwrap(),
            Incoming::Op { new: true }
        );
        // Replay of the announcement is recognised and changes nothing.
        assert_eq!(
            bob.open(&announce_carol).unwrap(),
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
        assert!(!alice.topic().contains(&alice.id().to_hex()[..8]));
        let (env, rec) = bob.seal_message("hello", NOW + 1, &mut r).unwrap();
        for room in [&mut alice, &mut carol] {
            assert_eq!(room.open(&env).unwrap(), Incoming::Message(rec.clone()));
        }
        assert_eq!(alice.display_name_of(&rec.author), "Bob");
        // The envelope carries neither the text nor the author's key.
        assert!(!env.windows(5).any(|w| w == b"hello"));
        assert!(!env.windows(32).any(|w| w == rec.author.0));
    }

    #[test]
    fn invite_is_single_use_and_expires() {
        let mut r = rng(2);
        let mut alice = facilitator(&mut r);
        let inv = invite(&mut alice, &mut r);
        let (_, req) = request(&inv, "Bob", &mut r);
        alice.admit(&req, NOW, &mut r).unwrap();
        let (_, again) = request(&inv, "Mallory", &mut r);
        assert_eq!(
            alice.admit(&again, NOW, &mut r).unwrap_err(),
            InviteError::AlreadyUsed
        );

        let inv = invite(&mut alice, &mut r);
        let (_, late) = request(&inv, "Late", &mut r);
        let before = alice.to_bytes().len();
        let after_expiry = (inv.body.expires_at + 1) * 1000;
        assert_eq!(
            alice.admit(&late, after_expiry, &mut r).unwrap_err(),
            InviteError::Expired
        );
        assert_eq!(
            inv.check_expiry(inv.body.expires_at),
            Err(InviteError::Expired)
        );
        assert_eq!(alice.to_bytes().len(), before, "a refusal changes nothing");
        assert_eq!(alice.members().len(), 2);
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
        );
        let (env, _) = bob.seal_payload(Payload::Op(Box::new(forged.clone())), &mut r);
        assert_eq!(alice.open(&env), Err(OpenError::Invalid));
        assert_eq!(
            alice.log.clone().apply(forged),
            Err(LogError::NotFacilitator)
        );
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
            text: "I quit".into(),
        });
        let signature = bob
            .me
            .sign(PAYLOAD_LABEL, &bob.payload_signed_bytes(&payload));
        let inner = SignedPayload {
            author: alice.me(),
            payload,
            signature,
        };
        let mut aad = ENVELOPE_LABEL.to_vec();
        aad.extend_from_slice(&bob.envelope_aad());
        let sealed = crypto::seal(
            &bob.message_key(),
            &aad,
            &wire::encode(&inner).unwrap(),
            &mut r,
        );
        let env = wire::encode(&Envelope(sealed)).unwrap();
        assert_eq!(alice.open(&env), Err(OpenError::BadSignature));

        // Someone who got hold of the key but is not in the log.
        let mut outsider = bob.clone();
        outsider.me = MemberKeys::generate(&mut r);
        let (env, _) = outsider.seal_message("hi", NOW, &mut r).unwrap();
        assert_eq!(bob.open(&env), Err(OpenError::UnknownAuthor));

        // Another room's traffic, or altered bytes, do not open.
        let other = facilitator(&mut r);
        let (env, _) = other.seal_message("hi", NOW, &mut r).unwrap();
        assert_eq!(alice.open(&env), Err(OpenError::Crypto));
        let (mut env, _) = bob.seal_message("hi", NOW, &mut r).unwrap();
        let last = env.len() - 1;
        env[last] ^= 1;
        assert_eq!(alice.open(&env), Err(OpenError::Crypto));
        assert_eq!(alice.open(&[1, 2, 3]), Err(OpenError::Malformed));
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
            Room::from_welcome(&inv, eve, &sealed).unwrap_err(),
            RoomError::BadWelcome
        );
        // A welcome replayed against an invite from another facilitator is refused.
        let mut other = facilitator(&mut r);
        let mut foreign = invite(&mut other, &mut r);
        foreign.body.room_id = inv.body.room_id;
        assert_eq!(
            Room::from_welcome(&foreign, keys.clone(), &sealed).unwrap_err(),
            RoomError::BadWelcome
        );
        assert!(Room::from_welcome(&inv, keys, &sealed).is_ok());
    }

    #[test]
    fn record_roundtrip_keeps_secrets_and_log() {
        let mut r = rng(8);
        let mut alice = facilitator(&mut r);
        let (bob, _) = join(&mut alice, "Bob", &mut r);
        let restored = Room::from_bytes(&alice.to_bytes()).unwrap();
        assert_eq!(restored.topic(), alice.topic());
        assert_eq!(restored.members().len(), 2);
        assert!(restored.is_facilitator());
        let (env, rec) = bob.seal_message("after restart", NOW, &mut r).unwrap();
        assert_eq!(restored.clone().open(&env).unwrap(), Incoming::Message(rec));
        assert_eq!(
            Room::from_bytes(&[0xFF; 10]).unwrap_err(),
            RoomError::BadRecord
        );
        let debug = format!("{alice:?} {:?}", alice.epoch);
        assert!(!debug.contains(&hex::encode(alice.epoch.secret.expose())));
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
