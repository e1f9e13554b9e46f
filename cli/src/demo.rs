//! `confer demo`: a whole session between three people, in one process, on loopback.
//!
//! Three nodes start with temporary profiles (deleted afterwards) and talk over real TCP
//! on 127.0.0.1. Everything goes through [`Node::request`], the same requests the control
//! socket carries, so the demo exercises exactly what `confer` commands do. Between steps it
//! never sleeps blindly: after each message it polls the other two nodes until the message
//! has arrived, with a deadline that turns into a clear error. At the end the facilitator
//! removes one member, and the demo checks that what is said next never reaches them.

use std::time::{Duration, Instant};

use confer_node::api::{MessageInfo, Reply, Request};
use confer_node::net::NetConfig;
use confer_node::{Node, NodeConfig};
use confer_store::Profile;

use crate::error::Error;
use crate::output::{self, safe, safe_line};

/// The passphrase of the throwaway demo profiles.
const DEMO_PASSPHRASE: &str = "confer demo passphrase";
/// How long one message may take to reach everyone before the demo gives up.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(15);
/// How often the receivers are asked whether a message has arrived.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// The room's name; it never leaves the three nodes in clear.
const ROOM: &str = "Monthly peer supervision";
/// The check-in: who speaks (0 Sam, 1 Priya, 2 Jo) and what they say. No case details.
const DISCUSSION: [(usize, &str); 4] = [
    (
        0,
        "Welcome, Priya and Jo. Usual ground rules: what is said here stays here, unless someone \
         is at risk of harm. Quick check-in first: how are you arriving today?",
    ),
    (
        1,
        "A full week. I have a grievance where I am the only HR person involved, and I would \
         like some time on keeping my own judgement separate from the manager's.",
    ),
    (
        2,
        "Steady, thanks. Nothing urgent from me, so happy for Priya to present first.",
    ),
    (
        0,
        "Thank you both. Priya, when you are ready: what is the one question you would like \
         the group to help you with?",
    ),
];

/// What Sam says once Jo has been removed; Jo's node must never show it.
const CLOSING: &str = "Jo's placement has ended, so it is the two of us from next month. \
                       Same time, same ground rules.";

/// One participant: a name for the narration, a node, and the profile directory that
/// disappears with it.
struct Person {
    name: &'static str,
    node: Node,
    home: tempfile::TempDir,
}

/// Runs the demo on a new runtime.
pub fn run() -> Result<(), Error> {
    crate::runtime()?.block_on(demo())
}

async fn demo() -> Result<(), Error> {
    let started = Instant::now();
    say(
        "Starting three nodes on this computer (127.0.0.1 only), each with its own temporary encrypted profile.",
    )?;
    let people = [
        start("Sam", "an external supervisor who facilitates the group").await?,
        start("Priya", "the only HR officer in a small charity").await?,
        start("Jo", "a probation officer").await?,
    ];
    let result = session(&people).await;
    say("Stopping the nodes.")?;
    let mut homes = Vec::with_capacity(people.len());
    for person in people {
        person.node.shutdown().await;
        homes.push(person.home);
    }
    result?;
    check_no_plaintext(&homes)?;
    say("Deleting the temporary profiles.")?;
    drop(homes);
    say(&format!(
        "Done in {:.1} s.",
        started.elapsed().as_secs_f64()
    ))
}

async fn session(people: &[Person; 3]) -> Result<(), Error> {
    let [sam, priya, jo] = people;

    let room = match ask(
        sam,
        Request::CreateRoom {
            name: ROOM.to_owned(),
            display_name: None,
        },
    )
    .await?
    {
        Reply::Room(room) => room,
        other => return Err(unexpected(&other)),
    };
    say(&format!(
        "Sam creates the room \"{}\" and becomes its facilitator. Its id is {}; the name itself is never sent over the network.",
        room.name,
        short(&room.room_id)
    ))?;

    for joiner in [priya, jo] {
        let invite = match ask(
            sam,
            Request::Invite {
                room: room.room_id.clone(),
                expires_in_secs: 3600,
            },
        )
        .await?
        {
            Reply::Invite(invite) => invite,
            other => return Err(unexpected(&other)),
        };
        say(&format!(
            "Sam issues a single-use invite for {}, valid for an hour: {}",
            joiner.name,
            preview(&invite.code)
        ))?;
        let joined = match ask(
            joiner,
            Request::Join {
                code: invite.code,
                display_name: Some(joiner.name.to_owned()),
                wait_secs: 0,
            },
        )
        .await?
        {
            Reply::Room(joined) => joined,
            other => return Err(unexpected(&other)),
        };
        if joined.room_id != room.room_id {
            return Err(Error::usage(format!(
                "{} joined a different room than the one invited to",
                joiner.name
            )));
        }
        say(&format!(
            "{}'s node redeems the code with Sam's node and is admitted to \"{}\" under a new pseudonymous identity.",
            joiner.name, joined.name
        ))?;
    }

    if let Reply::Members { members, .. } = ask(
        sam,
        Request::Members {
            room: room.room_id.clone(),
        },
    )
    .await?
    {
        let list: Vec<String> = members
            .iter()
            .map(|m| format!("{} ({})", m.name, m.role))
            .collect();
        say(&format!("The room's members are now: {}.", list.join(", ")))?;
    }

    say(
        "The check-in begins. Each message is signed, encrypted with the room key, and sent to the other two nodes.",
    )?;
    for (speaker, text) in DISCUSSION {
        let author = &people[speaker];
        let message_id = match ask(
            author,
            Request::Send {
                room: room.room_id.clone(),
                text: text.to_owned(),
            },
        )
        .await?
        {
            Reply::Sent { message_id, .. } => message_id,
            other => return Err(unexpected(&other)),
        };
        say(&format!("{} writes: {}", author.name, text))?;
        for reader in people.iter().filter(|p| p.name != author.name) {
            wait_for(reader, &room.room_id, &message_id).await?;
        }
        say("  … delivered to the other two nodes.")?;
    }

    say("Each person now reads the room's history from their own node:")?;
    let mut histories = Vec::with_capacity(people.len());
    for person in people {
        let history = history(person, &room.room_id).await?;
        say(&format!("{} sees {} messages:", person.name, history.len()))?;
        for message in &history {
            say(&format!(
                "    {}",
                output::message_line(&message.sent_at, &message.author, &message.text)
            ))?;
        }
        histories.push(history);
    }
    let expected: Vec<&str> = DISCUSSION.iter().map(|(_, text)| *text).collect();
    let texts: Vec<&str> = histories[0].iter().map(|m| m.text.as_str()).collect();
    // Compare what was said, by whom and when; whether a sender has had a delivery
    // confirmation yet (`pending`) is each node's own view.
    let said = |h: &Vec<MessageInfo>| -> Vec<(String, String, String, String)> {
        h.iter()
            .map(|m| {
                (
                    m.message_id.clone(),
                    m.author.clone(),
                    m.text.clone(),
                    m.sent_at.clone(),
                )
            })
            .collect()
    };
    if histories.iter().any(|h| said(h) != said(&histories[0])) || texts != expected {
        return Err(Error::usage(
            "the three nodes do not show the same four messages in the same order",
        ));
    }
    say("All three nodes hold the same four messages in the same order.")?;
    remove_jo(people, &room.room_id).await
}

/// The property the room's keys exist for: Sam removes Jo, the room moves to a key Jo's
/// node never receives, and what is said next never reaches Jo's node.
async fn remove_jo(people: &[Person; 3], room: &str) -> Result<(), Error> {
    let [sam, priya, jo] = people;
    let changed = match ask(
        sam,
        Request::Remove {
            room: room.to_owned(),
            member: jo.name.to_owned(),
        },
    )
    .await?
    {
        Reply::Changed(changed) => changed,
        other => return Err(unexpected(&other)),
    };
    say(&format!(
        "Sam now removes Jo from the room. Sam's node makes a new room key (key epoch {}) and seals it to Sam and Priya only.",
        changed.epoch
    ))?;
    until("Priya's node to have the new key", || async {
        Ok(matches!(
            ask(priya, Request::Members { room: room.to_owned() }).await?,
            Reply::Members { epoch, .. } if epoch == changed.epoch
        ))
    })
    .await?;
    until("Jo's node to learn of the removal", || async {
        Ok(matches!(
            ask(
                jo,
                Request::Read {
                    room: room.to_owned(),
                    follow: false,
                    last: None,
                }
            )
            .await?,
            Reply::History { member: false, .. }
        ))
    })
    .await?;
    say(
        "Priya's node has the new key; Jo's node learns that Jo is no longer a member, and receives no key.",
    )?;
    let message_id = match ask(
        sam,
        Request::Send {
            room: room.to_owned(),
            text: CLOSING.to_owned(),
        },
    )
    .await?
    {
        Reply::Sent { message_id, .. } => message_id,
        other => return Err(unexpected(&other)),
    };
    say(&format!("Sam writes: {CLOSING}"))?;
    wait_for(priya, room, &message_id).await?;
    say("  … delivered to Priya's node.")?;
    let jos = history(jo, room).await?;
    if jos.iter().any(|m| m.text == CLOSING) || jos.len() != DISCUSSION.len() {
        return Err(Error::usage(
            "Jo's node holds a message sent after Jo was removed",
        ));
    }
    say(&format!(
        "Jo's node never had it, and could not open it if it did: Jo's history still ends with the {} messages of the check-in.",
        jos.len()
    ))
}

/// Reads every file the three nodes wrote and fails if any holds the room's name or a
/// message of the discussion in clear.
fn check_no_plaintext(homes: &[tempfile::TempDir]) -> Result<(), Error> {
    // Display names are too short to search for: two or three bytes turn up by chance in
    // ciphertext. The room's name and whole messages cannot.
    let mut secrets: Vec<&str> = vec![ROOM, CLOSING];
    secrets.extend(DISCUSSION.iter().map(|(_, text)| *text));
    for home in homes {
        for file in files_under(home.path())? {
            let bytes = std::fs::read(&file)
                .map_err(|e| Error::usage(format!("could not read {}: {e}", file.display())))?;
            if let Some(found) = secrets.iter().find(|s| contains(&bytes, s.as_bytes())) {
                return Err(Error::usage(format!(
                    "{} contains \"{found}\" in clear; the store is not encrypting",
                    file.display()
                )));
            }
        }
    }
    say(
        "Checked every file in the three profile directories: neither the room's name nor any message is stored in clear.",
    )
}

fn files_under(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, Error> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::usage(format!("could not list {}: {e}", dir.display())))?;
        for entry in entries {
            let entry = entry
                .map_err(|e| Error::usage(format!("could not list {}: {e}", dir.display())))?;
            let kind = entry.file_type().map_err(|e| {
                Error::usage(format!("could not inspect {}: {e}", entry.path().display()))
            })?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    Ok(files)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Creates a temporary profile and starts a node for it on loopback.
async fn start(name: &'static str, who: &str) -> Result<Person, Error> {
    let home = tempfile::Builder::new()
        .prefix("confer-demo-")
        .tempdir()
        .map_err(|e| {
            Error::usage(format!(
                "could not create a temporary directory for the demo: {e}"
            ))
        })?;
    let path = home.path().to_path_buf();
    let profile =
        tokio::task::spawn_blocking(move || Profile::create(&path, DEMO_PASSPHRASE, name))
            .await
            .map_err(|e| Error::usage(format!("creating a demo profile failed: {e}")))??;
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
        relays: Vec::new(),
        net: NetConfig::for_tests(),
        control_socket: false,
        follow_queue: confer_node::FOLLOW_QUEUE,
    };
    let node = Node::start(profile, config).await?;
    say(&format!(
        "  {name}, {who}: node {} listening on {}",
        short(&node.peer_id()),
        node.listen_addrs().join(", ")
    ))?;
    Ok(Person { name, node, home })
}

async fn ask(person: &Person, request: Request) -> Result<Reply, Error> {
    match person.node.request(request).await {
        Reply::Error { message } => {
            Err(Error::Refused(format!("{}'s node: {message}", person.name)))
        }
        other => Ok(other),
    }
}

async fn history(person: &Person, room: &str) -> Result<Vec<MessageInfo>, Error> {
    match ask(
        person,
        Request::Read {
            room: room.to_owned(),
            follow: false,
            last: None,
        },
    )
    .await?
    {
        Reply::History { messages, .. } => Ok(messages),
        other => Err(unexpected(&other)),
    }
}

/// Polls `check` until it holds, or fails after [`DELIVERY_DEADLINE`] saying it waited
/// for `what`.
async fn until<F, Fut>(what: &str, mut check: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, Error>>,
{
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    while !check().await? {
        if Instant::now() >= deadline {
            return Err(Error::usage(format!(
                "waited {} seconds for {what}",
                DELIVERY_DEADLINE.as_secs()
            )));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    Ok(())
}

/// Polls `reader`'s node until it holds `message_id`, or fails after [`DELIVERY_DEADLINE`].
async fn wait_for(reader: &Person, room: &str, message_id: &str) -> Result<(), Error> {
    until(
        &format!("{}'s node to receive a message", reader.name),
        || async {
            Ok(history(reader, room)
                .await?
                .iter()
                .any(|m| m.message_id == message_id))
        },
    )
    .await
}

fn unexpected(reply: &Reply) -> Error {
    Error::usage(format!("a demo node gave an unexpected answer: {reply:?}"))
}

/// The first characters of an id or code, enough to recognise it.
fn short(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(16).collect();
    if chars.next().is_some() {
        format!("{}…", safe_line(&head))
    } else {
        safe_line(&head).into_owned()
    }
}

/// The start and end of an invite code (they share a prefix, so both ends are shown).
fn preview(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    if chars.len() <= 32 {
        return safe_line(code).into_owned();
    }
    let head: String = chars[..16].iter().collect();
    let tail: String = chars[chars.len() - 8..].iter().collect();
    format!(
        "{}…{} ({} characters)",
        safe_line(&head),
        safe_line(&tail),
        chars.len()
    )
}

fn say(sentence: &str) -> Result<(), Error> {
    output::line(&safe(sentence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plaintext_check_finds_a_message_in_a_nested_file() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join("db")).unwrap();
        std::fs::write(home.path().join("db").join("blob"), b"ciphertext").unwrap();
        let homes = [home];
        assert!(check_no_plaintext(&homes).is_ok());
        let leaked = format!("xx{}yy", DISCUSSION[2].1);
        std::fs::write(homes[0].path().join("db").join("log"), leaked).unwrap();
        assert!(check_no_plaintext(&homes).is_err());
    }
}
