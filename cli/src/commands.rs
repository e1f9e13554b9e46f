//! The commands that talk to a running node over its control socket.
//!
//! Each one sends one [`Request`], checks that the [`Reply`] is the kind it expects, and
//! prints it: as JSON with `--json`, as a few plain lines otherwise. Any decision about
//! rooms, invites or messages is the node's; a [`Reply::Error`] becomes
//! [`Error::Refused`] with the node's sentence unchanged.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;

use confer_node::api::{
    CLOCK_AHEAD, ChangeInfo, EventInfo, InviteInfo, InviteSummary, MemberInfo, MessageInfo, Reply,
    Request, RoomInfo, RoomSummary, StatusInfo, changes_from_first,
};
use confer_node::client::{Client, Follower};

use crate::error::Error;
use serde::Serialize;

use crate::output::{self, safe_line};

/// The longest message accepted, in bytes of UTF-8.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// How long `join` and `leave` wait for an answer before saying what they wait for.
const PROGRESS_AFTER: std::time::Duration = std::time::Duration::from_millis(300);

/// Sends `request` to the node for `home` and returns its reply; `Reply::Error` is an error.
async fn ask(home: &Path, request: &Request) -> Result<Reply, Error> {
    refused(Client::call(home, request).await?)
}

fn refused(reply: Reply) -> Result<Reply, Error> {
    match reply {
        Reply::Error { message } => Err(Error::Refused(message)),
        other => Ok(other),
    }
}

fn unexpected(reply: &Reply) -> Error {
    tracing::debug!(?reply, "unexpected reply");
    Error::usage(
        "the node gave an answer this command did not expect; \
         make sure the node and this `confer` are the same version",
    )
}

/// `confer status`
pub async fn status(home: &Path, json: bool) -> Result<(), Error> {
    let info: StatusInfo = match ask(home, &Request::Status).await? {
        Reply::Status(info) => info,
        other => return Err(unexpected(&other)),
    };
    if json {
        return output::json(&info);
    }
    output::line(&format!("Peer id: {}", safe_line(&info.peer_id)))?;
    output::line("Listening on:")?;
    for addr in &info.listen {
        output::line(&format!("  {}", safe_line(addr)))?;
    }
    if info.listen.is_empty() {
        output::line("  (no addresses)")?;
    }
    if info.relay_only {
        output::line("Relay-only mode: on (other members never learn your IP address)")?;
    } else {
        output::line(&format!("Reachability (AutoNAT): {}", safe_line(&info.nat)))?;
    }
    for relay in &info.relays {
        output::line(&format!(
            "Relay {}: {}",
            safe_line(&relay.address),
            if relay.reserved {
                "reserved, others can reach you through it"
            } else {
                "no reservation yet (retrying)"
            }
        ))?;
    }
    let relayed = info.connections.iter().filter(|c| c.relayed).count();
    output::line(&format!(
        "Connections: {} ({} through a relay)",
        info.connections.len(),
        relayed
    ))?;
    if info.joining > 0 {
        output::line(&format!(
            "Joining: {} (waiting for the facilitator's node)",
            info.joining
        ))?;
    }
    if info.other_copy > 0 {
        output::line(OTHER_COPY)?;
    }
    if info.other_versions > 0 {
        output::line(&other_versions_sentence(info.other_versions))?;
    }
    if info.unreadable_rooms > 0 {
        output::line(&unreadable_rooms_sentence(info.unreadable_rooms))?;
    }
    print_rooms(&info.rooms)
}

/// What `status` says of stored rooms the node could not read when it started.
pub fn unreadable_rooms_sentence(rooms: usize) -> String {
    let (count, verb) = if rooms == 1 {
        ("A room stored on this computer".to_owned(), "was")
    } else {
        (format!("{rooms} rooms stored on this computer"), "were")
    };
    format!(
        "Warning: {count} could not be read when your node started (damaged, or made by          another version of Confer) and {verb} left as {}; your other rooms work as usual.",
        if rooms == 1 { "it is" } else { "they are" }
    )
}

/// What `status` and `node run` say when members' nodes run another version of Confer.
pub fn other_versions_sentence(nodes: usize) -> String {
    let (count, verb) = if nodes == 1 {
        ("A member's node".to_owned(), "runs")
    } else {
        (format!("{nodes} members' nodes"), "run")
    };
    format!(
        "Warning: {count} connected to yours {verb} another version of Confer: messages \
         between you may not get through until you run the same version (`confer members` \
         says whose)."
    )
}

/// What `status` and `node run` say when the profile seems to run on two computers.
pub const OTHER_COPY: &str = "Warning: messages in your name that this node did not send have reached it, sent while it was running: your profile seems to be running on another computer as well. Stop all but one; each copy holds only part of the discussion.";

/// `confer room create`
pub async fn create_room(
    home: &Path,
    name: String,
    display_name: Option<String>,
    json: bool,
) -> Result<(), Error> {
    let room = match ask(home, &Request::CreateRoom { name, display_name }).await? {
        Reply::Room(room) => room,
        other => return Err(unexpected(&other)),
    };
    if json {
        return output::json(&room);
    }
    let RoomInfo { room_id, name } = &room;
    output::line(&format!(
        "Created the room \"{}\" (id {}).",
        safe_line(name),
        safe_line(room_id)
    ))?;
    output::line("You are its facilitator. Invite someone with:")?;
    output::line(&format!(
        "  confer invite '{}'",
        safe_line(name).replace('\'', "'\\''")
    ))
}

/// `confer room forget`
pub async fn forget_room(home: &Path, room: String, json: bool) -> Result<(), Error> {
    let reply = ask(home, &Request::Forget { room }).await?;
    let Reply::Forgotten {
        room_id,
        name,
        messages,
    } = &reply
    else {
        return Err(unexpected(&reply));
    };
    if json {
        return output::json(&serde_json::json!({
            "room_id": room_id,
            "name": name,
            "messages": messages,
        }));
    }
    output::line(&format!(
        "Deleted \"{}\" (id {}) from this computer: {messages} message{} and the room's keys. The other members keep their copies.",
        safe_line(name),
        safe_line(room_id),
        if *messages == 1 { "" } else { "s" }
    ))
}

/// `confer room list`
pub async fn list_rooms(home: &Path, json: bool) -> Result<(), Error> {
    let rooms = match ask(home, &Request::ListRooms).await? {
        Reply::Rooms { rooms } => rooms,
        other => return Err(unexpected(&other)),
    };
    if json {
        return output::json(&rooms);
    }
    print_rooms(&rooms)
}

fn print_rooms(rooms: &[RoomSummary]) -> Result<(), Error> {
    if rooms.is_empty() {
        return output::line(
            "You are not in any room yet. Create one with `confer room create NAME`.",
        );
    }
    output::line("Rooms:")?;
    for room in rooms {
        let people = if room.members == 1 {
            "member"
        } else {
            "members"
        };
        let said = if room.messages == 1 {
            "message"
        } else {
            "messages"
        };
        let unconfirmable = if room.member { room.gone } else { room.pending };
        let waiting = match (room.pending.saturating_sub(unconfirmable), unconfirmable) {
            (0, 0) => String::new(),
            (n, 0) => format!(", {n} of yours not yet received by anyone else"),
            (0, g) => format!(", {g} of yours {GONE_UNCONFIRMED}"),
            (n, g) => {
                format!(", {n} of yours not yet received by anyone else, {g} {GONE_UNCONFIRMED}")
            }
        };
        let gone = if room.member {
            ""
        } else if room.leave_unheard {
            ", you left but no other member has heard yet: keep your node running"
        } else {
            ", you are no longer a member"
        };
        output::line(&format!(
            "  {}  ({} {people}, {} {said}{waiting}{gone})  id {}",
            safe_line(&room.name),
            room.members,
            room.messages,
            safe_line(&room.room_id)
        ))?;
    }
    Ok(())
}

/// `confer invite`
pub async fn invite(
    home: &Path,
    room: String,
    expires_in_secs: u64,
    json: bool,
) -> Result<(), Error> {
    let invite: InviteInfo = match ask(
        home,
        &Request::Invite {
            room,
            expires_in_secs,
        },
    )
    .await?
    {
        Reply::Invite(invite) => invite,
        other => return Err(unexpected(&other)),
    };
    if json {
        return output::json(&invite);
    }
    output::line(&safe_line(&invite.code))?;
    output::line(&format!(
        "This code admits one person, until {}. Send it over a channel you trust, \
         and keep your node running so they can join.",
        safe_line(&invite.expires_at)
    ))
}

/// Sends `request`, whose answer can take seconds, and returns the reply. Says on stderr
/// what it is waiting for (`progress`, unless `json`), but only if it does take a while:
/// a request the node refuses at once gets just its error line. `stopped` is the error if
/// the node stops first.
async fn ask_patiently(
    home: &Path,
    request: &Request,
    progress: &str,
    json: bool,
    stopped: &str,
) -> Result<Reply, Error> {
    let mut client = Client::connect(home).await?;
    client.send(request).await?;
    let reply = client.next();
    tokio::pin!(reply);
    let reply = tokio::select! {
        reply = &mut reply => reply,
        () = tokio::time::sleep(PROGRESS_AFTER) => {
            if !json {
                eprintln!("{progress}");
            }
            reply.await
        }
    };
    refused(reply?.ok_or_else(|| Error::usage(stopped))?)
}

/// `confer join`
pub async fn join(
    home: &Path,
    code: String,
    display_name: Option<String>,
    wait_secs: Option<u64>,
    json: bool,
) -> Result<(), Error> {
    // Admission takes a round trip to the facilitator's node.
    let progress = match wait_secs {
        None => "Contacting the facilitator…".to_owned(),
        Some(secs) => format!(
            "Contacting the facilitator; if their node cannot be reached, trying again until it can (for up to {}; Ctrl-C stops waiting)…",
            humantime::format_duration(std::time::Duration::from_secs(secs))
        ),
    };
    let reply = ask_patiently(
        home,
        &Request::Join {
            code,
            display_name,
            wait_secs: wait_secs.unwrap_or(0),
        },
        &progress,
        json,
        "the node stopped before the facilitator answered; you have not joined",
    )
    .await?;
    let room = match reply {
        Reply::Room(room) => room,
        other => return Err(unexpected(&other)),
    };
    if json {
        return output::json(&room);
    }
    output::line(&format!(
        "You have joined \"{}\" (id {}).",
        safe_line(&room.name),
        safe_line(&room.room_id)
    ))
}

/// `confer send`; `text` is `-` to read standard input.
pub async fn send(home: &Path, room: String, text: String, json: bool) -> Result<(), Error> {
    let text = if text == "-" {
        read_stdin_message()?
    } else {
        text
    };
    check_message(&text)?;
    let (message_id, waiting) = match ask(home, &Request::Send { room, text }).await? {
        Reply::Sent {
            message_id,
            waiting,
        } => (message_id, waiting),
        other => return Err(unexpected(&other)),
    };
    if json {
        return output::json(&serde_json::json!({
            "message_id": message_id,
            "waiting": waiting,
        }));
    }
    if waiting {
        return output::line(&format!(
            "Stored (message id {}). No other member's node could take it just now (none is connected, or the room key has just changed): it goes out as soon as one can, and `confer read` marks it until someone holds it.",
            safe_line(&message_id)
        ));
    }
    output::line(&format!("Sent (message id {}).", safe_line(&message_id)))
}

/// Reads a message from standard input: at most [`MAX_MESSAGE_BYTES`] of UTF-8, with
/// one trailing newline (as `echo` adds) removed.
fn read_stdin_message() -> Result<String, Error> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_MESSAGE_BYTES as u64 + 2)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            Error::usage(format!(
                "could not read the message from standard input: {e}"
            ))
        })?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    // Only the first bytes were read: say it is too long before judging its encoding
    // (the cut may fall inside a character).
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(Error::usage(
            "the message on standard input is longer than the limit of 32 KiB; shorten it or send it in parts",
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| Error::usage("the message on standard input is not UTF-8 text"))
}

fn check_message(text: &str) -> Result<(), Error> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(Error::usage(format!(
            "the message is {} bytes long, more than the limit of 32 KiB; shorten it or send it in parts",
            text.len()
        )));
    }
    if text.trim().is_empty() {
        return Err(Error::usage("the message is empty; nothing was sent"));
    }
    Ok(())
}

/// `confer read`; `last` keeps only the end of the history.
pub async fn read(
    home: &Path,
    room: String,
    follow: bool,
    last: Option<u64>,
    json: bool,
) -> Result<(), Error> {
    let (first, follower) = if follow {
        Follower::start(home, &room).await?
    } else {
        let request = Request::Read { room, follow, last };
        (Client::call(home, &request).await?, None)
    };
    let (mut history, member, mut events, mut earlier) = match refused(first)? {
        Reply::History {
            messages,
            member,
            events,
            earlier,
        } => (messages, member, events, earlier),
        other => return Err(unexpected(&other)),
    };
    // The node keeps only the last messages itself, except for a follower, which it
    // gives the whole history.
    if let Some(last) = last {
        let keep = usize::try_from(last).unwrap_or(usize::MAX);
        let cut = history.len().saturating_sub(keep);
        history.drain(..cut);
        earlier += cut as u64;
    }
    if earlier > 0 {
        // Changes from before the first message shown are left out with the messages.
        changes_from_first(&mut events, &history);
        if !json {
            output::line(&format!(
                "({earlier} earlier message{} not shown; leave out --last to see them.)",
                if earlier == 1 { "" } else { "s" }
            ))?;
        }
    }
    let Some(mut follower) = follower else {
        if json {
            return output::json(&history);
        }
        print_history(&history, &events, member, false)?;
        if history.is_empty() {
            return output::line("No messages yet.");
        }
        return Ok(());
    };

    // Following: one JSON object per line (JSON Lines), or one text line per message.
    // New messages are shown as they arrive; one sent before something already shown (a
    // member catching up, or coming back online with what it wrote meanwhile) says so.
    // One's own message shown as not yet received gets a line when another member has
    // it (the node tells of those it marked pending).
    let mut latest = String::new();
    let mut pending: HashMap<String, String> = HashMap::new();
    let shown = |pending: &mut HashMap<String, String>, message: &MessageInfo| {
        if message.pending {
            pending.insert(message.message_id.clone(), message.sent_at.clone());
        }
    };
    print_history(&history, &events, member, json)?;
    for message in &history {
        shown(&mut pending, message);
        // In time order already; this only keeps `latest` (see `arrived_late`).
        arrived_late(&mut latest, &message.sent_at);
    }
    loop {
        match follower.next().await? {
            Some(Reply::Message(message)) => {
                if json {
                    output::json(&message)?
                } else if arrived_late(&mut latest, &message.sent_at) {
                    print_line(&message, member, "  (sent earlier; it has just arrived)")?
                } else {
                    print_message(&message, member)?
                }
                shown(&mut pending, &message);
            }
            Some(Reply::Event(event)) => print_event(&event, json)?,
            Some(Reply::Delivered { message_id }) => {
                let Some(sent_at) = pending.remove(&message_id) else {
                    continue;
                };
                if json {
                    output::json(&serde_json::json!({ "delivered": message_id }))?
                } else {
                    output::line(&format!(
                        "(Your message of [{}] has now been received by another member.)",
                        safe_line(&sent_at)
                    ))?
                }
            }
            Some(Reply::Error { message }) => return Err(Error::Refused(message)),
            Some(other) => return Err(unexpected(&other)),
            None => {
                eprintln!("The node stopped; no more messages will arrive.");
                return Ok(());
            }
        }
    }
}

/// What one's unconfirmed messages are when sent under an identity no longer in the room
/// (one left, or was removed, perhaps to join again). Members take nothing from someone
/// who has gone, and confirm nothing to them: a member removed right after writing may
/// have reached the others without knowing it.
const GONE_UNCONFIRMED: &str = "not known to have reached anyone else";

/// Prints a room's messages with its membership changes among them (see [`in_order`]);
/// with `json`, one JSON object per line.
fn print_history(
    messages: &[MessageInfo],
    events: &[EventInfo],
    member: bool,
    json: bool,
) -> Result<(), Error> {
    for entry in in_order(messages, events, std::time::SystemTime::now()) {
        match entry {
            Entry::Event(event) => print_event(event, json)?,
            Entry::Message(message) if json => output::json(message)?,
            Entry::Message(message) => print_message(message, member)?,
        }
    }
    Ok(())
}

/// One line of a history.
#[derive(Debug, PartialEq)]
enum Entry<'a> {
    Message(&'a MessageInfo),
    Event(&'a EventInfo),
}

/// A room's messages, in the node's order, with its membership changes among them by
/// time (RFC 3339 times of one width sort as text; a change goes before a message of
/// the same time). The node orders messages by their authors' times, except one dated
/// more than [`CLOCK_AHEAD`] after its clock when it arrived, which it places where it
/// arrived: such a message, still ahead of `now`, is placed among the changes as if it
/// had the time of the message before it.
fn in_order<'a>(
    messages: &'a [MessageInfo],
    events: &'a [EventInfo],
    now: std::time::SystemTime,
) -> Vec<Entry<'a>> {
    let horizon = horizon(now);
    let mut events = events.iter().peekable();
    let mut out = Vec::with_capacity(messages.len() + events.len());
    let mut latest = "";
    for message in messages {
        if message.sent_at.as_str() <= horizon.as_str() {
            latest = &message.sent_at;
        }
        while let Some(event) = events.next_if(|e| e.at.as_str() <= latest) {
            out.push(Entry::Event(event));
        }
        out.push(Entry::Message(message));
    }
    out.extend(events.map(Entry::Event));
    out
}

/// Prints one membership change: a line for people, or `{"event": {...}}`.
fn print_event(event: &EventInfo, json: bool) -> Result<(), Error> {
    if json {
        output::json(&serde_json::json!({ "event": event }))
    } else {
        output::line(&output::event_line(event))
    }
}

/// Prints one message of a room; `member` is false in a room one has left.
fn print_message(message: &MessageInfo, member: bool) -> Result<(), Error> {
    print_line(message, member, "")
}

fn print_line(message: &MessageInfo, member: bool, note: &str) -> Result<(), Error> {
    let mut line = output::message_line(&message.sent_at, &message.author, &message.text);
    if is_ahead(&message.sent_at, std::time::SystemTime::now()) {
        line.push_str("  (dated ahead of this computer's clock)");
    }
    match (message.pending, member && !message.gone) {
        (false, _) => {}
        (true, true) => line.push_str("  (not yet received by anyone else)"),
        (true, false) => line.push_str(&format!("  ({GONE_UNCONFIRMED})")),
    }
    line.push_str(note);
    output::line(&line)
}

/// Whether a message sent at `sent_at` (RFC 3339, UTC, fixed width: the order of the text
/// is the order in time) was sent before the latest one shown so far; updates `latest`.
/// A time more than [`CLOCK_AHEAD`] after this computer's clock does not count as the
/// latest: its author's clock is wrong, and everything after it would seem late.
fn arrived_late(latest: &mut String, sent_at: &str) -> bool {
    arrived_late_at(latest, sent_at, std::time::SystemTime::now())
}

fn arrived_late_at(latest: &mut String, sent_at: &str, now: std::time::SystemTime) -> bool {
    if sent_at < latest.as_str() {
        return true;
    }
    if !is_ahead(sent_at, now) {
        sent_at.clone_into(latest);
    }
    false
}

/// Whether a message's time (RFC 3339) is more than [`CLOCK_AHEAD`] after `now`.
fn is_ahead(sent_at: &str, now: std::time::SystemTime) -> bool {
    sent_at > horizon(now).as_str()
}

/// The latest time (RFC 3339) a message may have and not be ahead of `now`.
fn horizon(now: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(now + CLOCK_AHEAD).to_string()
}

/// `confer members`
///
/// The JSON stays an array of members, as before key epochs existed; each member object
/// carries the room's current `epoch` (the same for all).
pub async fn members(home: &Path, room: String, json: bool) -> Result<(), Error> {
    let (epoch, members) = members_of(home, room).await?;
    if json {
        let members: Vec<MemberLine<'_>> = members
            .iter()
            .map(|member| MemberLine { member, epoch })
            .collect();
        return output::json(&members);
    }
    output::line(&format!("Key epoch: {epoch}"))?;
    for member in &members {
        let presence = match (member.you, member.connected) {
            (true, _) => "you",
            (false, true) => "connected",
            (false, false) => "not connected now",
        };
        output::line(&format!(
            "{}  ({}, {presence})  id {}",
            safe_line(&member.name),
            safe_line(&member.role),
            safe_line(&member.member_id)
        ))?;
        if let Some(version) = &member.other_version {
            output::line(&other_version_sentence(version))?;
        }
    }
    Ok(())
}

/// Said under a member whose node announces another Confer version than this one.
fn other_version_sentence(theirs: &str) -> String {
    let number = |v: &str| v.trim_start_matches("/confer/").to_owned();
    format!(
        "    Their node runs another version of Confer ({}; yours is {}): messages between \
         you may not get through until you both run the same version.",
        safe_line(&number(theirs)),
        number(confer_node::net::CONFER_VERSION)
    )
}

/// One element of `confer members --json`.
#[derive(Serialize)]
struct MemberLine<'a> {
    #[serde(flatten)]
    member: &'a MemberInfo,
    epoch: u64,
}

async fn members_of(home: &Path, room: String) -> Result<(u64, Vec<MemberInfo>), Error> {
    match ask(home, &Request::Members { room }).await? {
        Reply::Members { epoch, members } => Ok((epoch, members)),
        other => Err(unexpected(&other)),
    }
}

/// Sends a membership change and returns the room's state afterwards.
async fn change(home: &Path, request: &Request) -> Result<ChangeInfo, Error> {
    match ask(home, request).await? {
        Reply::Changed(info) => Ok(info),
        other => Err(unexpected(&other)),
    }
}

/// `confer leave`
pub async fn leave(home: &Path, room: String, anyway: bool, json: bool) -> Result<(), Error> {
    // The node may wait for a member to receive our last messages first.
    let request = Request::Leave {
        room: room.clone(),
        anyway,
    };
    let info = match ask_patiently(
        home,
        &request,
        "Waiting for another member's node to receive your last messages…",
        json,
        "the node stopped before it answered; `confer room list` shows whether you have left",
    )
    .await?
    {
        Reply::Changed(info) => info,
        other => return Err(unexpected(&other)),
    };
    if json {
        return output::json(&info);
    }
    // The room's name, for the sentence only; the argument may have been an id prefix.
    let name = match ask(home, &Request::ListRooms).await {
        Ok(Reply::Rooms { rooms }) => rooms
            .into_iter()
            .find(|r| r.room_id == info.room_id)
            .map_or(room, |r| r.name),
        _ => room,
    };
    output::line(&left_sentence(&name))?;
    if info.reached == 0 && info.members > 0 {
        output::line(
            "No other member's node is connected just now, so only yours knows you left: \
             keep it running (`confer node run`); it keeps trying to reach theirs and tells \
             the first it reaches (`confer room list` shows when). Until then the room \
             counts you as a member.",
        )?;
    }
    Ok(())
}

/// A sentence for a change no other member's node has heard yet, if so.
fn unheard(info: &ChangeInfo) -> Result<(), Error> {
    if info.reached == 0 && info.members > 1 {
        output::line(
            "No other member's node is connected just now: theirs learn of this when they \
             next reach yours (or one that has heard it).",
        )?;
    }
    Ok(())
}

fn left_sentence(room_name: &str) -> String {
    format!(
        "You have left \"{}\". You can still read what was said before you left, \
         but you will not receive anything new. To come back, ask the facilitator for a \
         new invite.",
        safe_line(room_name)
    )
}

/// `confer remove`
pub async fn remove(home: &Path, room: String, member: String, json: bool) -> Result<(), Error> {
    // For the human sentence: who the node actually removed, as the difference between
    // the member lists before and after (the node, not this binary, resolves MEMBER).
    let before = if json {
        None
    } else {
        members_of(home, room.clone()).await.ok()
    };
    let info = change(
        home,
        &Request::Remove {
            room: room.clone(),
            member: member.clone(),
        },
    )
    .await?;
    if json {
        return output::json(&info);
    }
    let after = members_of(home, room).await.ok();
    let who = match (before, after) {
        (Some((_, before)), Some((_, after))) => {
            let mut gone = before
                .into_iter()
                .filter(|b| !after.iter().any(|a| a.member_id == b.member_id));
            match (gone.next(), gone.next()) {
                (Some(only), None) => only.name,
                _ => member,
            }
        }
        _ => member,
    };
    output::line(&removed_sentence(&who, &info))?;
    unheard(&info)
}

fn removed_sentence(who: &str, info: &ChangeInfo) -> String {
    format!(
        "Removed {} from the room, which now has {} {}. The room key has changed \
         (key epoch {}): they cannot read anything sent from now on.",
        safe_line(who),
        info.members,
        if info.members == 1 {
            "member"
        } else {
            "members"
        },
        info.epoch
    )
}

/// `confer rotate`
pub async fn rotate(home: &Path, room: String, json: bool) -> Result<(), Error> {
    let info = change(home, &Request::Rotate { room }).await?;
    if json {
        return output::json(&info);
    }
    output::line(&format!(
        "The room has a new key (key epoch {}); messages sent from now on use it.",
        info.epoch
    ))?;
    unheard(&info)
}

/// `confer handover`
pub async fn handover(home: &Path, room: String, member: String, json: bool) -> Result<(), Error> {
    let info = change(
        home,
        &Request::Handover {
            room: room.clone(),
            member: member.clone(),
        },
    )
    .await?;
    if json {
        return output::json(&info);
    }
    let who = match members_of(home, room).await {
        Ok((_, members)) => members
            .into_iter()
            .find(|m| m.role == "facilitator")
            .map_or(member, |m| m.name),
        Err(_) => member,
    };
    output::line(&format!(
        "{} is now the facilitator of the room; you are an ordinary member.",
        safe_line(&who)
    ))?;
    unheard(&info)
}

/// `confer invite list`
pub async fn list_invites(home: &Path, room: String, json: bool) -> Result<(), Error> {
    let invites: Vec<InviteSummary> = match ask(home, &Request::ListInvites { room }).await? {
        Reply::Invites { invites } => invites,
        other => return Err(unexpected(&other)),
    };
    if json {
        return output::json(&invites);
    }
    if invites.is_empty() {
        return output::line("No invite to this room can still be used.");
    }
    output::line("Invites that can still be used:")?;
    for invite in &invites {
        output::line(&format!(
            "  id {}  until {}",
            safe_line(&invite.invite_id),
            safe_line(&invite.expires_at)
        ))?;
    }
    Ok(())
}

/// `confer invite revoke`
pub async fn revoke_invite(
    home: &Path,
    room: String,
    invite: String,
    json: bool,
) -> Result<(), Error> {
    let info = change(home, &Request::RevokeInvite { room, invite }).await?;
    if json {
        return output::json(&info);
    }
    output::line("Revoked the invite; nobody can join with it any more.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_sent_before_one_already_shown_is_late() {
        let mut latest = String::new();
        assert!(!arrived_late(&mut latest, "2026-11-22T18:00:00.000Z"));
        assert!(!arrived_late(&mut latest, "2026-11-22T18:05:00.000Z"));
        assert!(arrived_late(&mut latest, "2026-11-22T18:01:00.000Z"));
        assert_eq!(
            latest, "2026-11-22T18:05:00.000Z",
            "a late one moves nothing"
        );
        assert!(
            !arrived_late(&mut latest, "2026-11-22T18:05:00.000Z"),
            "same moment"
        );
    }

    fn message(sent_at: &str, text: &str) -> MessageInfo {
        MessageInfo {
            message_id: text.into(),
            author: "Jo".into(),
            text: text.into(),
            sent_at: sent_at.into(),
            pending: false,
            gone: false,
        }
    }

    fn event(at: &str, who: &str) -> EventInfo {
        EventInfo {
            at: at.into(),
            kind: "joined".into(),
            who: who.into(),
            by: None,
            you: false,
            by_you: false,
        }
    }

    /// Membership changes go among the messages by time; a message dated far ahead,
    /// which the node placed where it arrived, does not pull the changes after it in
    /// front of it.
    #[test]
    fn changes_go_among_messages_by_time_and_a_message_dated_ahead_stays_where_it_arrived() {
        let now = humantime::parse_rfc3339("2026-11-22T18:05:00Z").unwrap();
        let messages = [
            message("2026-11-22T18:00:00.000Z", "first"),
            message("2027-06-01T00:00:00.000Z", "ahead"),
            message("2026-11-22T18:02:00.000Z", "second"),
        ];
        let events = [
            event("2026-11-22T17:59:00.000Z", "Ann"),
            event("2026-11-22T18:00:00.000Z", "Bo"),
            event("2026-11-22T18:01:00.000Z", "Cy"),
            event("2026-11-22T18:03:00.000Z", "Di"),
        ];
        let order: Vec<&str> = in_order(&messages, &events, now)
            .into_iter()
            .map(|entry| match entry {
                Entry::Message(m) => m.text.as_str(),
                Entry::Event(e) => e.who.as_str(),
            })
            .collect();
        assert_eq!(order, ["Ann", "Bo", "first", "ahead", "Cy", "second", "Di"]);
        assert!(is_ahead("2027-06-01T00:00:00.000Z", now));
        assert!(
            !is_ahead("2026-11-22T18:09:00.000Z", now),
            "within five minutes"
        );
    }

    /// A message from a member whose clock is ahead does not make everything after it
    /// look late; one within a few minutes of this computer's clock still counts.
    #[test]
    fn a_time_far_ahead_of_this_clock_is_not_the_latest() {
        let now = humantime::parse_rfc3339("2026-11-22T18:00:00Z").unwrap();
        let mut latest = String::new();
        let late = |latest: &mut String, at: &str| arrived_late_at(latest, at, now);
        assert!(!late(&mut latest, "2026-11-22T17:59:00.000Z"));
        assert!(
            !late(&mut latest, "2027-01-01T00:00:00.000Z"),
            "dated ahead"
        );
        assert_eq!(latest, "2026-11-22T17:59:00.000Z");
        assert!(!late(&mut latest, "2026-11-22T17:59:30.000Z"));
        assert!(
            !late(&mut latest, "2026-11-22T18:04:00.000Z"),
            "within the margin"
        );
        assert_eq!(latest, "2026-11-22T18:04:00.000Z");
        assert!(late(&mut latest, "2026-11-22T18:01:00.000Z"));
    }

    #[test]
    fn message_limits() {
        assert!(check_message("hello").is_ok());
        assert!(check_message(&"x".repeat(MAX_MESSAGE_BYTES)).is_ok());
        assert!(check_message(&"x".repeat(MAX_MESSAGE_BYTES + 1)).is_err());
        assert!(check_message("").is_err());
        assert!(check_message(" \n ").is_err());
    }

    #[test]
    fn members_json_keeps_the_array_and_adds_the_epoch() {
        let member = MemberInfo {
            member_id: "ab12".to_owned(),
            name: "Sam".to_owned(),
            role: "facilitator".to_owned(),
            you: true,
            connected: true,
            other_version: None,
        };
        let line = MemberLine {
            member: &member,
            epoch: 3,
        };
        assert_eq!(
            serde_json::to_value([line]).unwrap(),
            serde_json::json!([
                {"member_id": "ab12", "name": "Sam", "role": "facilitator", "you": true,
                 "connected": true, "epoch": 3}
            ])
        );
    }

    #[test]
    fn a_member_of_another_version_is_said_so() {
        let member = MemberInfo {
            member_id: "cd34".to_owned(),
            name: "Jo".to_owned(),
            role: "member".to_owned(),
            you: false,
            connected: true,
            other_version: Some("/confer/0.1.0".to_owned()),
        };
        let json = serde_json::to_value(MemberLine {
            member: &member,
            epoch: 1,
        })
        .unwrap();
        assert_eq!(json["other_version"], "/confer/0.1.0");
        let sentence = other_version_sentence("/confer/0.1.0");
        assert!(
            sentence.contains("(0.1.0; yours is ")
                && sentence.contains("may not get through until you both run the same version"),
            "{sentence}"
        );
        assert!(
            other_versions_sentence(1)
                .starts_with("Warning: A member's node connected to yours runs another version")
        );
        assert!(
            other_versions_sentence(2)
                .starts_with("Warning: 2 members' nodes connected to yours run another version")
        );
        // What another node announces is shown safely.
        assert!(!other_version_sentence("/confer/\u{1b}[2J").contains('\u{1b}'));
    }

    #[test]
    fn change_sentences() {
        let left = left_sentence("Peer\u{1b}group");
        assert!(left.contains("\"Peer\\u{1b}group\""), "{left}");
        assert!(
            left.contains("still read") && left.contains("anything new"),
            "{left}"
        );
        let info = ChangeInfo {
            room_id: "ab".to_owned(),
            epoch: 4,
            members: 1,
            reached: 0,
        };
        assert_eq!(
            removed_sentence("Jo", &info),
            "Removed Jo from the room, which now has 1 member. The room key has changed \
             (key epoch 4): they cannot read anything sent from now on."
        );
    }
}
