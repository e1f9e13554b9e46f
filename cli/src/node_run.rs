//! `confer node run`: unlock the profile, start the node from the node crate, and keep it
//! running until SIGINT or SIGTERM, then shut it down cleanly.

use std::path::Path;

use confer_node::api::{RelayInfo, Reply, Request};
use confer_node::{Node, NodeConfig};
use confer_store::Profile;
use tokio::signal::unix::{SignalKind, signal};

use crate::error::Error;
use crate::output::{self, safe_line};
use crate::passphrase;

/// Unlocks the profile in `home` (blocking: Argon2 is deliberately slow), then runs the
/// node on a new runtime until it is asked to stop.
pub fn run(home: &Path, listen: Vec<String>, relays: Vec<String>, json: bool) -> Result<(), Error> {
    let profile = passphrase::unlock_profile(home)?;
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

    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
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
