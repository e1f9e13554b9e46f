//! Invites and the join handshake.
//!
//! An invite is a signed, single-use, expiring ticket into one room:
//!
//! ```text
//! code = "confer1" || base58( bincode( Invite { body, signature } ) )
//! body = { room id, invite id, one-time secret, expiry, facilitator's member id,
//!          facilitator's network peer id, facilitator's dialable addresses }
//! signature = ed25519 by the facilitator's room key over the encoded body
//! ```
//!
//! The code carries no room name and nothing about the members. Its signature makes any
//! alteration (a swapped address, a later expiry) detectable before anything is sent,
//! and the welcome a joiner receives must come from a log created by the same key.
//!
//! Redeeming: the joiner makes fresh room keys and sends a [`JoinRequest`] to the
//! facilitator's node over the libp2p request-response protocol (inside the noise
//! channel authenticated as the facilitator's peer id). The request carries the
//! invite's secret and is signed by the joiner's new room key, proving possession. The
//! facilitator checks the invite is known, unused, unexpired and that the room has
//! space, and answers with a [`JoinResponse`]: a welcome sealed to the joiner's X25519
//! key, or a refusal.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::crypto::SealedBox;
use crate::identity::{MemberId, MemberKeys, MemberPublic};
use crate::room::RoomId;
use crate::secret::Secret32;
use crate::wire;

/// Text that starts every invite code.
pub const CODE_PREFIX: &str = "confer1";
/// The longest invite code accepted, in characters.
pub const MAX_CODE_LEN: usize = 4096;
/// At most this many addresses in an invite.
pub const MAX_ADDRESSES: usize = 16;
/// The longest address accepted, in bytes.
pub const MAX_ADDRESS_LEN: usize = 256;
/// The longest display name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// The largest join request accepted, in bytes.
pub const MAX_JOIN_REQUEST: usize = 4096;
/// The largest answer to a join request, in bytes: a welcome holds the whole room, up to
/// [`wire::MAX_LARGE`].
pub const MAX_JOIN_RESPONSE: usize = wire::MAX_LARGE;

const INVITE_LABEL: &[u8] = b"confer/v1/invite";
const JOIN_LABEL: &[u8] = b"confer/v1/join-request";

/// An invite's identifier, unique within its room.
pub type InviteId = [u8; 16];

/// Why an invite was refused. Each variant's text is one sentence for the user.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InviteError {
    /// Not an invite code at all, or cut short in copying.
    #[error("this is not a valid invite code (it may have been cut short when copied)")]
    Malformed,
    /// Decodes, but the signature does not match: someone changed it.
    #[error("this invite code has been altered and cannot be trusted")]
    Altered,
    /// Past its expiry time.
    #[error("this invite has expired; ask the facilitator for a new one")]
    Expired,
    /// Already redeemed once.
    #[error("this invite has already been used; ask the facilitator for a new one")]
    AlreadyUsed,
    /// Unknown to the facilitator (revoked, or never issued by this node).
    #[error("the facilitator does not recognise this invite; ask them for a new one")]
    Unknown,
    /// The room already has its full number of members.
    #[error("the room is full (at most 8 members)")]
    RoomFull,
    /// The request itself was invalid.
    #[error("the join request was invalid")]
    BadRequest,
    /// A current member already uses the display name asked for.
    #[error("someone in this room already goes by that name; join again with another name (--as)")]
    NameTaken,
    /// The facilitator's node has had more join requests from this node than it answers
    /// (a few at once, then one every ten seconds).
    #[error(
        "the facilitator's node has had too many join requests from yours; wait a minute, then run the same command again"
    )]
    TooManyRequests,
}

/// The signed part of an invite.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InviteBody {
    /// The room to join.
    pub room_id: RoomId,
    /// This invite's id.
    pub invite_id: InviteId,
    /// Proves the holder was given this invite.
    pub secret: Secret32,
    /// Unix time in seconds after which the invite is refused.
    pub expires_at: u64,
    /// The facilitator's member id in this room; the welcome's log must be created by it.
    pub facilitator: MemberId,
    /// The facilitator node's libp2p peer id, as bytes.
    pub facilitator_peer: Vec<u8>,
    /// Multiaddresses at which the facilitator's node can be dialled.
    pub addresses: Vec<String>,
}

/// An invite: body plus the facilitator's signature.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Invite {
    /// What the facilitator signed.
    pub body: InviteBody,
    signature: crate::identity::Sig,
}

impl Invite {
    /// Signs `body` with the facilitator's room keys.
    pub fn sign(body: InviteBody, facilitator: &MemberKeys) -> Result<Self, InviteError> {
        let encoded = wire::encode(&body).map_err(|_| InviteError::Malformed)?;
        Ok(Self {
            signature: facilitator.sign(INVITE_LABEL, &encoded),
            body,
        })
    }

    /// The copy-pasteable code.
    pub fn to_code(&self) -> String {
        // Encoding a value this crate built cannot fail; an empty code would be refused.
        let bytes = wire::encode(self).unwrap_or_default();
        format!("{CODE_PREFIX}{}", bs58::encode(bytes).into_string())
    }

    /// Parses and verifies a code: shape, sizes and signature. Does not check expiry.
    pub fn from_code(code: &str) -> Result<Self, InviteError> {
        // Whitespace anywhere is ignored: a code pasted from an email or a chat often
        // arrives wrapped over several lines, and base58 has none of its own.
        if code.len() > 2 * MAX_CODE_LEN {
            return Err(InviteError::Malformed);
        }
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() > MAX_CODE_LEN {
            return Err(InviteError::Malformed);
        }
        let payload = code
            .strip_prefix(CODE_PREFIX)
            .ok_or(InviteError::Malformed)?;
        let bytes = bs58::decode(payload)
            .into_vec()
            .map_err(|_| InviteError::Malformed)?;
        let invite: Invite =
            wire::decode(&bytes, MAX_CODE_LEN).map_err(|_| InviteError::Malformed)?;
        let body = &invite.body;
        if body.addresses.len() > MAX_ADDRESSES
            || body.addresses.iter().any(|a| a.len() > MAX_ADDRESS_LEN)
            || body.facilitator_peer.len() > crate::log::MAX_PEER_LEN
        {
            return Err(InviteError::Malformed);
        }
        let encoded = wire::encode(body).map_err(|_| InviteError::Malformed)?;
        body.facilitator
            .verify(INVITE_LABEL, &encoded, &invite.signature)
            .map_err(|_| InviteError::Altered)?;
        Ok(invite)
    }

    /// Refuses an invite past its expiry at `now` (Unix seconds).
    pub fn check_expiry(&self, now: u64) -> Result<(), InviteError> {
        if now >= self.body.expires_at {
            Err(InviteError::Expired)
        } else {
            Ok(())
        }
    }
}

/// What the facilitator's node keeps about an invite it issued.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssuedInvite {
    /// The one-time secret.
    pub secret: Secret32,
    /// Unix seconds.
    pub expires_at: u64,
    /// Set once redeemed; an invite is single-use.
    pub used: bool,
    /// How often a request with this invite was refused because its name was taken.
    pub name_refusals: u8,
}

/// The signed part of a join request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinBody {
    /// The room to join.
    pub room_id: RoomId,
    /// The invite being redeemed.
    pub invite_id: InviteId,
    /// The invite's secret.
    pub secret: Secret32,
    /// The joiner's fresh keys for this room.
    pub member: MemberPublic,
    /// The name the joiner chose for this room.
    pub display_name: String,
    /// The joiner node's libp2p peer id, as bytes.
    pub peer: Vec<u8>,
}

/// A joiner's request to be admitted, signed with its new room key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinRequest {
    /// What the joiner signed.
    pub body: JoinBody,
    signature: crate::identity::Sig,
}

impl JoinRequest {
    /// Builds and signs a request.
    pub fn new(body: JoinBody, keys: &MemberKeys) -> Result<Self, InviteError> {
        let encoded = wire::encode(&body).map_err(|_| InviteError::BadRequest)?;
        Ok(Self {
            signature: keys.sign(JOIN_LABEL, &encoded),
            body,
        })
    }

    /// Encodes for the network.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode(self).unwrap_or_default()
    }

    /// Decodes bytes from the network and checks sizes and the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InviteError> {
        let request: JoinRequest =
            wire::decode(bytes, MAX_JOIN_REQUEST).map_err(|_| InviteError::BadRequest)?;
        check_display_name(&request.body.display_name).map_err(|_| InviteError::BadRequest)?;
        if request.body.peer.len() > crate::log::MAX_PEER_LEN {
            return Err(InviteError::BadRequest);
        }
        let encoded = wire::encode(&request.body).map_err(|_| InviteError::BadRequest)?;
        request
            .body
            .member
            .id
            .verify(JOIN_LABEL, &encoded, &request.signature)
            .map_err(|_| InviteError::BadRequest)?;
        Ok(request)
    }
}

/// The facilitator's answer to a [`JoinRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum JoinResponse {
    /// Admitted: a welcome (`room::Welcome`: the room name, the membership log and the
    /// epoch secrets) sealed to the joiner's X25519 key.
    Welcome(SealedBox),
    /// Refused, with the reason.
    Refused(InviteError),
}

impl JoinResponse {
    /// Encodes for the network.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode_large(self).unwrap_or_default()
    }

    /// Decodes bytes from the network, at most [`MAX_JOIN_RESPONSE`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InviteError> {
        wire::decode_large(bytes, MAX_JOIN_RESPONSE).map_err(|_| InviteError::Malformed)
    }
}

/// Why a display or room name is refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Empty or only spaces.
    #[error("a name cannot be empty")]
    Empty,
    /// Too long.
    #[error("a name can be at most {MAX_NAME_LEN} bytes long")]
    TooLong,
    /// Contains control characters.
    #[error("a name cannot contain control characters")]
    Control,
    /// Contains invisible or direction-changing characters.
    #[error(
        "a name cannot contain invisible or text-direction characters (they make one name look like another)"
    )]
    Invisible,
}

/// Characters that show as nothing, or reorder the text around them: a name holding one
/// can look exactly like another member's (zero-width spaces and joiners, direction marks,
/// embeddings, overrides and isolates, word joiners, the byte-order mark).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
    )
}

/// Whether two display names would look the same to the members: equal once leading,
/// trailing and repeated spaces are ignored, and regardless of case. A room admits no
/// one under a name a current member already uses.
pub fn same_name(a: &str, b: &str) -> bool {
    loose_name(a) == loose_name(b)
}

/// A name as [`same_name`] compares it: words separated by single spaces, lower case.
pub fn loose_name(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Checks a display name or room name.
pub fn check_display_name(name: &str) -> Result<(), NameError> {
    if name.trim().is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    if name.chars().any(is_invisible) {
        return Err(NameError::Invisible);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::Room;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn issued() -> (Room, String) {
        let mut rng = StdRng::seed_from_u64(11);
        let mut room = Room::create("Group", "Fac", vec![1], 0, &mut rng).unwrap();
        let invite = room
            .issue_invite(
                vec!["/ip4/10.0.0.1/tcp/4001".into()],
                vec![1, 2],
                1_000,
                &mut rng,
            )
            .unwrap();
        (room, invite.to_code())
    }

    #[test]
    fn code_roundtrip_carries_no_room_name() {
        let (room, code) = issued();
        assert!(code.starts_with(CODE_PREFIX));
        assert!(
            code.chars().all(|c| c.is_ascii_alphanumeric()),
            "copy-pasteable: {code}"
        );
        let invite = Invite::from_code(&format!("  {code}\n")).unwrap();
        assert_eq!(invite.body.room_id, room.id());
        let bytes = bs58::decode(&code[CODE_PREFIX.len()..]).into_vec().unwrap();
        assert!(!bytes.windows(5).any(|w| w == b"Group"));
        assert!(!bytes.windows(3).any(|w| w == b"Fac"));
    }

    /// A code wrapped over lines by an email or chat program (or with spaces around)
    /// still reads; it is the same invite.
    #[test]
    fn a_code_wrapped_over_lines_still_reads() {
        let (_, code) = issued();
        let expected = Invite::from_code(&code).unwrap();
        let chars: Vec<char> = code.chars().collect();
        for (width, break_with) in [(70, "\n"), (64, "\r\n"), (40, " "), (76, "\n\t")] {
            let wrapped: Vec<String> = chars
                .chunks(width)
                .map(|line| line.iter().collect())
                .collect();
            let wrapped = format!("\n{}\n", wrapped.join(break_with));
            assert_eq!(
                Invite::from_code(&wrapped),
                Ok(expected.clone()),
                "{wrapped}"
            );
        }
        // Spread out to more than twice the longest code, it is refused before any copy.
        let spread: String = code.chars().flat_map(|c| [c, ' ', ' ']).collect();
        let spread = format!("{spread}{}", " ".repeat(2 * MAX_CODE_LEN));
        assert_eq!(Invite::from_code(&spread), Err(InviteError::Malformed));
    }

    #[test]
    fn malformed_and_truncated_codes() {
        let (_, code) = issued();
        for bad in [
            "",
            "hello",
            "confer1",
            "confer10OIl",
            &code[..code.len() - 5],
            &code[7..],
        ] {
            assert_eq!(Invite::from_code(bad), Err(InviteError::Malformed), "{bad}");
        }
        assert_eq!(
            Invite::from_code(&"a".repeat(MAX_CODE_LEN + 1)),
            Err(InviteError::Malformed)
        );
    }

    #[test]
    fn altered_codes_are_detected() {
        let (_, code) = issued();
        let mut invite = Invite::from_code(&code).unwrap();
        invite.body.expires_at += 86_400;
        assert_eq!(
            Invite::from_code(&invite.to_code()),
            Err(InviteError::Altered)
        );
        let mut invite = Invite::from_code(&code).unwrap();
        invite.body.addresses = vec!["/ip4/6.6.6.6/tcp/1".into()];
        assert_eq!(
            Invite::from_code(&invite.to_code()),
            Err(InviteError::Altered)
        );
    }

    #[test]
    fn expiry() {
        let (_, code) = issued();
        let invite = Invite::from_code(&code).unwrap();
        assert!(invite.check_expiry(999).is_ok());
        assert_eq!(invite.check_expiry(1_000), Err(InviteError::Expired));
    }

    #[test]
    fn names_that_would_look_like_others_are_caught() {
        for bad in [
            "Bob\u{200B}",
            "\u{202E}boB",
            "Bo\u{00AD}b",
            "\u{FEFF}Bob",
            "B\u{2066}ob",
        ] {
            assert_eq!(
                check_display_name(bad),
                Err(NameError::Invisible),
                "{bad:?}"
            );
        }
        assert_eq!(check_display_name("Zoë Ó Briain"), Ok(()));
        assert_eq!(check_display_name("אורית"), Ok(()));
        assert!(same_name("Bob  Martin", " bob martin"));
        assert!(!same_name("Bob", "Bobby"));
    }

    #[test]
    fn join_request_signature_and_limits() {
        let mut rng = StdRng::seed_from_u64(12);
        let keys = MemberKeys::generate(&mut rng);
        let body = JoinBody {
            room_id: crate::room::RoomId([3; 32]),
            invite_id: [4; 16],
            secret: Secret32::random(&mut rng),
            member: keys.public(),
            display_name: "Bob".into(),
            peer: vec![5],
        };
        let request = JoinRequest::new(body.clone(), &keys).unwrap();
        assert_eq!(
            JoinRequest::from_bytes(&request.to_bytes()).unwrap(),
            request
        );
        // Signed by someone else's key than the one it names.
        let other = MemberKeys::generate(&mut rng);
        let forged = JoinRequest::new(body.clone(), &other).unwrap();
        assert_eq!(
            JoinRequest::from_bytes(&forged.to_bytes()),
            Err(InviteError::BadRequest)
        );
        let long = JoinRequest::new(
            JoinBody {
                display_name: "x".repeat(100),
                ..body
            },
            &keys,
        )
        .unwrap();
        assert_eq!(
            JoinRequest::from_bytes(&long.to_bytes()),
            Err(InviteError::BadRequest)
        );
        assert_eq!(
            JoinRequest::from_bytes(&vec![0; MAX_JOIN_REQUEST + 1]),
            Err(InviteError::BadRequest)
        );
    }
}
