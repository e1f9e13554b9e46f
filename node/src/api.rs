//! The local control API between the `confer` binary and a running node.
//!
//! The node listens on a Unix socket, `control.sock` in the profile directory, with mode
//! 0600 from the moment it appears, and serves only connections from the profile
//! owner's user id, at most 32 at once (see `control`). The protocol is one JSON
//! document per line: the client writes one [`Request`], the node answers with one
//! [`Reply`] per line. Every request gets exactly one reply, except
//! [`Request::Read`] with `follow: true`, which gets the history and then one
//! [`Reply::Message`] per new message (and a [`Reply::Delivered`] when another member
//! confirms holding one of this member's messages shown as pending) until the client
//! hangs up. A client keeps its end open until the reply has come: closing it (even only
//! for writing) abandons the request, so that work which waits for others (`join
//! --wait`) stops when the person who asked has gone.
//!
//! Lines are limited to [`MAX_LINE`] bytes in both directions; a longer history is sent
//! in [`Reply::HistoryPart`]s.

use serde::{Deserialize, Serialize};

/// Longest line either side accepts, in bytes.
pub const MAX_LINE: usize = 1024 * 1024;

/// Largest [`Reply::HistoryPart`] line the node writes, in bytes (one message is at most
/// a few hundred KiB of JSON, so a part may exceed this by one message, never
/// [`MAX_LINE`]).
pub const HISTORY_PART: usize = 256 * 1024;

/// File name of the control socket inside the profile directory.
pub const SOCKET_NAME: &str = "control.sock";

/// What a client asks the node to do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The node's peer id, listening addresses and rooms.
    Status,
    /// Create a room; the caller becomes its facilitator.
    CreateRoom {
        /// The room's name, seen only by its members.
        name: String,
        /// The facilitator's display name in this room (default: the profile's name).
        #[serde(default)]
        display_name: Option<String>,
    },
    /// The rooms this profile belongs to.
    ListRooms,
    /// Issue an invite to a room (facilitator only).
    Invite {
        /// A room name or a unique prefix of its id.
        room: String,
        /// Seconds until the invite expires.
        expires_in_secs: u64,
    },
    /// Redeem an invite code, waiting until admitted or refused.
    Join {
        /// The invite code as printed by `confer invite`.
        code: String,
        /// The name to show to the room's members (default: the profile's name).
        #[serde(default)]
        display_name: Option<String>,
        /// If the facilitator's node cannot be reached, keep trying for this many seconds
        /// (at most until the invite expires) before answering; 0 answers at once. Stops
        /// when the asker goes away.
        #[serde(default)]
        wait_secs: u64,
    },
    /// Send a message to a room.
    Send {
        /// A room name or a unique prefix of its id.
        room: String,
        /// The message text.
        text: String,
    },
    /// A room's history, oldest first; with `follow`, then every new message.
    Read {
        /// A room name or a unique prefix of its id.
        room: String,
        /// Keep the connection open and stream new messages.
        follow: bool,
        /// Only the last this many messages, and the membership changes since the first
        /// of them ([`Reply::History`] says how many were left out). Ignored when
        /// following: a follower is given the whole history, so that it can tell, after
        /// falling behind, what it has not shown (see `client::Follower`).
        #[serde(default)]
        last: Option<u64>,
    },
    /// A room's members.
    Members {
        /// A room name or a unique prefix of its id.
        room: String,
    },
    /// Leave a room (members; the facilitator hands over first). If some of this member's
    /// messages in the room have reached no other member yet, the node waits (up to
    /// 10 s, while a member's node is connected) until one has them, and otherwise
    /// refuses: members take nothing from someone who has gone, so they would be lost.
    Leave {
        /// A room name or a unique prefix of its id.
        room: String,
        /// Leave at once, even if some of this member's messages would then never reach
        /// anyone.
        #[serde(default)]
        anyway: bool,
    },
    /// Remove a member and rotate the room key (facilitator only).
    Remove {
        /// A room name or a unique prefix of its id.
        room: String,
        /// The member's display name or a prefix of their member id.
        member: String,
    },
    /// Start a new key epoch.
    Rotate {
        /// A room name or a unique prefix of its id.
        room: String,
    },
    /// Hand the facilitator role to another member (facilitator only).
    Handover {
        /// A room name or a unique prefix of its id.
        room: String,
        /// The member's display name or a prefix of their member id.
        member: String,
    },
    /// Withdraw an outstanding invite (facilitator only).
    RevokeInvite {
        /// A room name or a unique prefix of its id.
        room: String,
        /// The invite code, or a prefix of the invite id.
        invite: String,
    },
    /// The invites this node issued for a room that can still be redeemed.
    ListInvites {
        /// A room name or a unique prefix of its id.
        room: String,
    },
    /// Delete a room this profile is no longer in from this computer: its history, keys
    /// and every record of it. Refused while a member, and while a leave has not reached
    /// any member yet (the node must keep telling them).
    Forget {
        /// A room name or a unique prefix of its id.
        room: String,
    },
}

/// The node's answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to [`Request::Status`].
    Status(StatusInfo),
    /// Answer to [`Request::CreateRoom`] and [`Request::Join`].
    Room(RoomInfo),
    /// Answer to [`Request::ListRooms`].
    Rooms {
        /// The rooms.
        rooms: Vec<RoomSummary>,
    },
    /// Answer to [`Request::Invite`].
    Invite(InviteInfo),
    /// Answer to [`Request::Send`].
    Sent {
        /// The new message's id (hex).
        message_id: String,
        /// No other member of the room was reachable (connected and subscribed) just
        /// now: the message is stored and goes out as soon as one is (until someone holds
        /// it, it is pending, see [`MessageInfo::pending`]).
        #[serde(default)]
        waiting: bool,
    },
    /// Answer to [`Request::Read`]: the history so far.
    History {
        /// Messages, oldest first.
        messages: Vec<MessageInfo>,
        /// False if this profile has left the room or been removed: its messages marked
        /// pending will then never be confirmed (members take nothing from someone who has
        /// gone, and confirm nothing to them), though a member removed right after writing
        /// may have reached the others.
        #[serde(default = "yes")]
        member: bool,
        /// Membership changes while this profile was in the room (at most [`MAX_EVENTS`], the
        /// latest), oldest first, to show among the messages.
        #[serde(default)]
        events: Vec<EventInfo>,
        /// Messages before these, left out as [`Request::Read`]'s `last` asked.
        #[serde(default)]
        earlier: u64,
    },
    /// On the control socket only: one part of a history too long for one line
    /// ([`MAX_LINE`]). Parts of at most [`HISTORY_PART`] bytes come first, then
    /// [`Reply::History`] with the rest; [`crate::client::Client::next`] joins them, so
    /// its callers see one [`Reply::History`].
    HistoryPart {
        /// Messages, oldest first, continued by the next part.
        messages: Vec<MessageInfo>,
    },
    /// On the control socket only, streamed after [`Reply::History`] when following: a
    /// membership change.
    Event(EventInfo),
    /// A new message, streamed after [`Reply::History`] when following. One of this
    /// member's own messages is marked pending only if no member could take it when it
    /// was sent (see `FollowUpdate::Message`).
    Message(MessageInfo),
    /// Streamed when following: another member has confirmed holding one of this
    /// member's messages that this stream showed as pending, so it no longer is.
    Delivered {
        /// The message id (hex).
        message_id: String,
    },
    /// Streamed when following, last: more than `queue` new messages arrived before this
    /// reader took them, so the node stopped sending them to it rather than hold them or
    /// slow down. Everything is stored: following again shows the history with them;
    /// [`crate::client::Follower`] does so by itself and shows each message once.
    FellBehind {
        /// How many messages a reader may lag behind ([`crate::NodeConfig::follow_queue`]).
        queue: usize,
    },
    /// Answer to [`Request::Members`].
    Members {
        /// The current key epoch.
        epoch: u64,
        /// The members, facilitator first.
        members: Vec<MemberInfo>,
    },
    /// Answer to a membership change (leave, remove, rotate, handover, revoke).
    Changed(ChangeInfo),
    /// Answer to [`Request::Forget`].
    Forgotten {
        /// The room id (hex).
        room_id: String,
        /// The room's name.
        name: String,
        /// How many messages were deleted.
        messages: usize,
    },
    /// Answer to [`Request::ListInvites`].
    Invites {
        /// Outstanding invites, soonest expiry first.
        invites: Vec<InviteSummary>,
    },
    /// The request failed; `message` is one sentence meant for the user.
    Error {
        /// What went wrong, and what to do about it.
        message: String,
    },
}

/// The node's identity on the network and what it is in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusInfo {
    /// The libp2p peer id of this node.
    pub peer_id: String,
    /// Multiaddresses the node listens on.
    pub listen: Vec<String>,
    /// The rooms this profile belongs to.
    pub rooms: Vec<RoomSummary>,
    /// Messages from the network dropped since start because they did not decode, were
    /// too large, or failed decryption or verification.
    #[serde(default)]
    pub dropped: u64,
    /// Relay-only mode: the node never connects directly to other members.
    #[serde(default)]
    pub relay_only: bool,
    /// Reachability found by AutoNAT: `public`, `private` or `unknown`.
    #[serde(default)]
    pub nat: String,
    /// The relays the node keeps a reservation on.
    #[serde(default)]
    pub relays: Vec<RelayInfo>,
    /// Open connections.
    #[serde(default)]
    pub connections: Vec<ConnectionInfo>,
    /// Messages sent before this node started (by their authors' clocks) that it has
    /// received since: what it missed while it was off (`confer node run` shows it
    /// growing while it catches up).
    #[serde(default)]
    pub caught_up: u64,
    /// Leaves nobody had heard (see [`RoomSummary::leave_unheard`]) that this node has
    /// since told a member of, since it started.
    #[serde(default)]
    pub leaves_heard: u64,
    /// Joins in progress: asked of a facilitator's node, or waiting to ask again because
    /// it could not be reached (`confer join --wait`; given up when the asker goes).
    #[serde(default)]
    pub joining: usize,
    /// Stored rooms that could not be read when the node started (damaged, or written by
    /// a version of Confer that this one cannot read); they are kept as they are, and the
    /// other rooms run.
    #[serde(default)]
    pub unreadable_rooms: usize,
    /// Messages in this profile's name, sent while this node was running, that reached it
    /// from other members and that it did not send: the profile is running on another
    /// computer as well (a copy, or a backup started while this one runs). Each copy then
    /// holds only part of the discussion.
    #[serde(default)]
    pub other_copy: u64,
    /// Members' nodes connected now that tell another Confer version than this one's:
    /// messages between them and this node may not get through (`MemberInfo::other_version`
    /// says whose).
    #[serde(default)]
    pub other_versions: usize,
}

/// A relay and whether the node holds a reservation on it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RelayInfo {
    /// The relay's address, ending in `/p2p/<relay peer id>`.
    pub address: String,
    /// Whether the relay accepted a reservation: others can reach this node through it.
    pub reserved: bool,
}

/// An open connection to a peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The peer.
    pub peer_id: String,
    /// The peer's address on this connection.
    pub address: String,
    /// Whether the connection goes through a relay (the peer does not see this node's IP
    /// address, nor this node the peer's).
    pub relayed: bool,
}

/// A room in a listing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoomSummary {
    /// The room id (hex).
    pub room_id: String,
    /// The room's name.
    pub name: String,
    /// How many members the room has.
    pub members: usize,
    /// How many messages this node holds in the room (it grows while a returning member
    /// catches up).
    #[serde(default)]
    pub messages: usize,
    /// False once this profile has left the room or been removed (its history stays
    /// readable).
    #[serde(default = "yes")]
    pub member: bool,
    /// How many of this member's messages no other member has confirmed holding yet
    /// (each marked pending by `confer read`).
    #[serde(default)]
    pub pending: usize,
    /// Of those, how many were sent under an identity of this profile that is no longer
    /// in the room (see [`MessageInfo::gone`]).
    #[serde(default)]
    pub gone: usize,
    /// This profile left the room while no other member's node was connected, and its
    /// node has not reached one to tell it yet (it keeps trying while it runs).
    #[serde(default)]
    pub leave_unheard: bool,
}

fn yes() -> bool {
    true
}

/// A room that was just created or joined.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoomInfo {
    /// The room id (hex).
    pub room_id: String,
    /// The room's name.
    pub name: String,
}

/// A freshly issued invite.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InviteInfo {
    /// The copy-pasteable invite code.
    pub code: String,
    /// When the invite stops working, RFC 3339 UTC.
    pub expires_at: String,
}

/// One message of a room's history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageInfo {
    /// The message id (hex).
    pub message_id: String,
    /// The author's display name in this room.
    pub author: String,
    /// The text.
    pub text: String,
    /// When the author sent it, RFC 3339 UTC.
    pub sent_at: String,
    /// True for this member's own messages that no other member has confirmed holding
    /// yet (they are retried until one does).
    #[serde(default)]
    pub pending: bool,
    /// With `pending`: sent under an identity of this profile that is no longer in the
    /// room (it left or was removed, and perhaps joined again under a new one). Nothing
    /// retries it, and members confirm nothing to a departed identity; it is confirmed
    /// only if a member turns out to hold it (see the sync protocol's summaries).
    #[serde(default)]
    pub gone: bool,
}

/// Most membership changes a history carries (the latest ones).
pub const MAX_EVENTS: usize = 1000;

/// Keeps, of a history's membership changes, those at or after its first message: a
/// history cut to its last messages shows the changes among them, not those before.
pub fn changes_from_first(events: &mut Vec<EventInfo>, messages: &[MessageInfo]) {
    if let Some(first) = messages.first() {
        events.retain(|e| e.at >= first.sent_at);
    }
}

/// How far ahead of the reader's clock a message's time may be and still be taken at its
/// word: a node places a message dated later than this where it arrived, and the CLI
/// marks it and does not let it make the messages after it look late.
pub const CLOCK_AHEAD: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// A change of membership shown among a room's messages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct EventInfo {
    /// When, by the clock of whoever made the change, RFC 3339 UTC.
    pub at: String,
    /// `created`, `joined`, `left`, `removed` or `handover`.
    pub kind: String,
    /// Whom it is about: the room's creator, who joined, who left, who was removed, or
    /// the new facilitator.
    pub who: String,
    /// Who made it, when that is someone else: the facilitator who removed `who` or
    /// handed the role to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Whether `who` is this profile (under any identity it had in the room).
    #[serde(default)]
    pub you: bool,
    /// Whether `by` is this profile.
    #[serde(default)]
    pub by_you: bool,
}

/// One member of a room.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member's pseudonymous id in this room (hex of its signing key).
    pub member_id: String,
    /// The member's display name in this room.
    pub name: String,
    /// `facilitator` or `member`.
    pub role: String,
    /// Whether this is the profile asking.
    #[serde(default)]
    pub you: bool,
    /// Whether the member's node is connected to this node now (always for `you`):
    /// what is sent now reaches connected members at once, and the others when their
    /// nodes next reach a member's.
    #[serde(default)]
    pub connected: bool,
    /// The Confer version the member's connected node tells this one, when it is not
    /// this node's ([`crate::net::CONFER_VERSION`]): messages between the
    /// two may not get through (an older node cannot read what a newer one sends) until
    /// both run the same version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_version: Option<String>,
}

/// The state of a room after a membership change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChangeInfo {
    /// The room id (hex).
    pub room_id: String,
    /// The key epoch now current (as far as this node knows).
    pub epoch: u64,
    /// How many members the room has now.
    pub members: usize,
    /// How many of the other members' nodes were connected and were sent the change.
    /// Those that were not learn of it when one of their nodes next reaches this one (or
    /// a member's node that has it); after a leave, only this node has it.
    #[serde(default)]
    pub reached: usize,
}

/// An invite that can still be redeemed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InviteSummary {
    /// The invite id (hex).
    pub invite_id: String,
    /// When it expires, RFC 3339 UTC.
    pub expires_at: String,
}
