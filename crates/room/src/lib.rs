//! The Confer room protocol.
//!
//! A room is a small (at most [`MAX_MEMBERS`]) invitation-only group. This crate holds
//! everything about rooms that can be decided without IO: per-room pseudonymous
//! identities ([`identity`]), invites and the join handshake ([`invite`]), the signed,
//! hash-linked membership log ([`log`]), epoch keys and sealing ([`room`], [`crypto`]),
//! and the size-limited wire encoding ([`wire`]).
//!
//! Architecture invariant: this crate does no IO. It knows nothing of tokio, libp2p or
//! sled; time and randomness come in as arguments (`now_ms`, `rng`), so every function
//! can be tested with a seeded RNG and fuzzed.
#![deny(missing_docs)]

pub mod crypto;
pub mod identity;
pub mod invite;
pub mod log;
pub mod room;
pub mod secret;
#[cfg(any(test, feature = "test_utils"))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod test_utils;
pub mod wire;

pub use identity::{MemberId, MemberKeys, MemberPublic};
pub use invite::{Invite, InviteError, JoinRequest, JoinResponse};
pub use log::{MAX_MEMBERS, Role};
pub use room::{
    ChangeKind, Incoming, MembershipChange, MessageRecord, OpenError, Room, RoomError, RoomId,
};
pub use secret::Secret32;
