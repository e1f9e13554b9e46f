//! `confer node run`: unlock the profile, start the node from the node crate, and keep it
//! running until SIGINT or SIGTERM, then shut it down cleanly.

use std::path::Path;
use std::time::Duration;

use confer_node::api::{RelayInfo, Reply, Request};
use confer_node::{Node, NodeConfig};
use confer_store::Profile;
use tokio::signal::unix::{SignalKind, signal};

use crate::error::Error;
use crate::output::{self, safe_line};
use crate::passphrase;

/// Unlocks the profile in `home` (blocking: Argon2 is deliberately slow), then runs the
/// node on a new runtime until it is asked to stop.
pub fn run(
    home: &Path,
    mut given: passphrase::Given,
    listen: Vec<String>,
    relays: Vec<String>,
    json: bool,
) -> Result<(), Error> {
    let profile = passphrase::unlock_profile(home, &mut given)?;
    crate::runtime()?.block_on(serve(profile, NodeConfig::new(listen, relays), json))
}

async fn serve(profile: Profile, config: NodeConfig, json: bool) -> Result<(), Error> {
    // Install the handlers before announcing readiness: whoever reads the readiness line
    // may signal us at once, and a signal without a handler would kill us uncleanly.
    let signal_error =
        |e: std::io::Error| Error::usage(format!("could not watch for stop signals: {e}"));
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;

    let node = Node::start(profile, config).await?;
    if let Err(e) = announce(&node, json).await {
        node.shutdown().await;
        return Err(e);
    }

    // Until asked to stop: say when messages missed while offline come in (counts only:
    // this output may end up in a system log, so it names no room and no one).
    // Likewise when a leave nobody had heard reaches a member.
    let mut progress = CatchUp::default();
    let mut leaves = Leaves::default();
    let mut warned_of_other_copy = false;
    let mut other_versions_shown = 0;
    let mut poll = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = poll.tick() => {
                if let Reply::Status(status) = node.request(Request::Status).await {
                    let unheard = status.rooms.iter().filter(|r| r.leave_unheard).count();
                    let heard = status.leaves_heard;
                    // A closed output (e.g. the reader of a pipe went away) must not stop
                    // the node.
                    if let Some(event) = progress.update(status.caught_up) {
                        let _ = show(event, json);
                    }
                    if let Some(event) = leaves.update(unheard, heard) {
                        let _ = show_leave(event, json);
                    }
                    // Said once (`confer status` goes on saying it).
                    if status.other_copy > 0 && !warned_of_other_copy {
                        warned_of_other_copy = true;
                        let _ = if json {
                            output::json(&serde_json::json!({"event": "other_copy"}))
                        } else {
                            output::line(crate::commands::OTHER_COPY)
                        };
                    }
                    // Said whenever more connected members' nodes run another version than
                    // at the last look (one has just connected).
                    if status.other_versions > other_versions_shown {
                        let nodes = status.other_versions;
                        let _ = if json {
                            output::json(&serde_json::json!({"event": "other_version", "nodes": nodes}))
                        } else {
                            output::line(&crate::commands::other_versions_sentence(nodes))
                        };
                    }
                    other_versions_shown = status.other_versions;
                }
            }
        }
    }
    if !json {
        eprintln!("Stopping the node…");
    }
    // A second signal while shutting down means "now": leave without waiting.
    tokio::select! {
        () = node.shutdown() => Ok(()),
        _ = terminate.recv() => Err(Error::usage("stopped before the node had shut down cleanly")),
        _ = interrupt.recv() => Err(Error::usage("stopped before the node had shut down cleanly")),
    }
}

/// How often `node run` looks at the catch-up count.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What `node run` says about catching up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Missed messages are coming in: this many so far in this catch-up.
    Receiving(u64),
    /// They stopped coming: this many in all.
    CaughtUp(u64),
}

/// Turns the node's running count of messages taken in from catch-up
/// (`StatusInfo::caught_up`), read every [`PROGRESS_EVERY`], into lines to show: one
/// while it grows, one when it has stopped growing.
#[derive(Debug, Default)]
struct CatchUp {
    last: u64,
    started_at: Option<u64>,
}

impl CatchUp {
    fn update(&mut self, count: u64) -> Option<Progress> {
        let before = std::mem::replace(&mut self.last, count);
        if count > before {
            let start = *self.started_at.get_or_insert(before);
            Some(Progress::Receiving(count - start))
        } else {
            self.started_at
                .take()
                .map(|start| Progress::CaughtUp(count - start))
        }
    }
}

fn show(event: Progress, json: bool) -> Result<(), Error> {
    match (event, json) {
        (Progress::Receiving(n), true) => {
            output::json(&serde_json::json!({"event": "catching_up", "received": n}))
        }
        (Progress::CaughtUp(n), true) => {
            output::json(&serde_json::json!({"event": "caught_up", "received": n}))
        }
        (Progress::Receiving(n), false) => output::line(&format!(
            "Receiving messages you missed while offline: {n} so far…"
        )),
        (Progress::CaughtUp(n), false) => output::line(&format!(
            "Caught up: {n} message{} you missed {} now stored.",
            if n == 1 { "" } else { "s" },
            if n == 1 { "is" } else { "are" }
        )),
    }
}

/// What `node run` says about leaves no other member has heard yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaveNews {
    /// At start: this many rooms were left unheard; the node is trying to tell them.
    Waiting(usize),
    /// A member's node has heard of one (or more) of them.
    Heard,
}

/// Turns the number of rooms left unheard (`RoomSummary::leave_unheard`) and the count
/// of such leaves since told (`StatusInfo::leaves_heard`), read every
/// [`PROGRESS_EVERY`], into lines to show: how many are unheard at start, and each time
/// the count grows (however briefly a leave was unheard between two readings).
#[derive(Debug, Default)]
struct Leaves {
    heard: Option<u64>,
}

impl Leaves {
    fn update(&mut self, unheard: usize, heard: u64) -> Option<LeaveNews> {
        match self.heard.replace(heard) {
            None if unheard > 0 => Some(LeaveNews::Waiting(unheard)),
            Some(before) if heard > before => Some(LeaveNews::Heard),
            _ => None,
        }
    }
}

fn show_leave(event: LeaveNews, json: bool) -> Result<(), Error> {
    match (event, json) {
        (LeaveNews::Waiting(n), true) => {
            output::json(&serde_json::json!({"event": "leave_unheard", "rooms": n}))
        }
        (LeaveNews::Heard, true) => output::json(&serde_json::json!({"event": "leave_heard"})),
        (LeaveNews::Waiting(n), false) => output::line(&format!(
            "You left {} while no other member was online; trying to reach one to tell them.",
            if n == 1 {
                "a room".to_owned()
            } else {
                format!("{n} rooms")
            }
        )),
        (LeaveNews::Heard, false) => output::line(
            "Another member's node has now heard that you left a room; they will pass it on.",
        ),
    }
}

/// Prints the node's identity, addresses and relays: the readiness signal scripts wait
/// for.
async fn announce(node: &Node, json: bool) -> Result<(), Error> {
    let (peer_id, addrs) = (node.peer_id(), node.listen_addrs());
    let relays = match node.request(Request::Status).await {
        Reply::Status(status) => status.relays,
        _ => Vec::new(),
    };
    if json {
        return output::json(&serde_json::json!({
            "peer_id": peer_id,
            "listen": addrs,
            "relays": relays,
        }));
    }
    output::line(&format!(
        "Your node is running. Peer id: {}",
        safe_line(&peer_id)
    ))?;
    let waiting: Vec<&RelayInfo> = relays.iter().filter(|r| !r.reserved).collect();
    if addrs.is_empty() && relays.is_empty() {
        // Relay-only mode with no relay yet: say how to become reachable.
        output::line(
            "It listens on nothing yet: this profile is in relay-only mode and has no relay. Join with an invite from a facilitator who uses one, or add one with `confer config add-relay` (with the node stopped).",
        )?;
    } else if addrs.is_empty() {
        output::line(&format!(
            "It listens on nothing yet: this profile is in relay-only mode and none of its relays ({}) has accepted it so far. It keeps trying; `confer status` shows when one does.",
            relays.len()
        ))?;
    } else {
        output::line("Listening on:")?;
        for addr in &addrs {
            output::line(&format!("  {}", safe_line(addr)))?;
        }
    }
    for relay in waiting {
        output::line(&format!(
            "Relay not reached yet (the node keeps trying): {}",
            safe_line(&relay.address)
        ))?;
    }
    output::line("Use the other `confer` commands from another terminal; press Ctrl-C to stop.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leave_lines_follow_the_count() {
        let mut l = Leaves::default();
        assert_eq!(l.update(2, 0), Some(LeaveNews::Waiting(2)));
        assert_eq!(l.update(2, 0), None);
        assert_eq!(l.update(1, 1), Some(LeaveNews::Heard));
        assert_eq!(l.update(1, 1), None);
        // A new leave while running was announced by `confer leave` itself; one that
        // was heard before the next reading still counts.
        assert_eq!(l.update(1, 2), Some(LeaveNews::Heard));
        let mut quiet = Leaves::default();
        assert_eq!(quiet.update(0, 0), None);
        assert_eq!(quiet.update(0, 0), None);
    }

    #[test]
    fn catch_up_lines_follow_the_count() {
        let mut p = CatchUp::default();
        assert_eq!(p.update(0), None, "nothing yet");
        assert_eq!(p.update(400), Some(Progress::Receiving(400)));
        assert_eq!(p.update(1000), Some(Progress::Receiving(1000)));
        assert_eq!(p.update(1000), Some(Progress::CaughtUp(1000)));
        assert_eq!(p.update(1000), None, "said once");
        // A later catch-up counts from where it starts.
        assert_eq!(p.update(1003), Some(Progress::Receiving(3)));
        assert_eq!(p.update(1003), Some(Progress::CaughtUp(3)));
    }
}
