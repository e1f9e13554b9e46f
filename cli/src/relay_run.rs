//! `confer relay run`: serve as a relay (from the node crate) until SIGINT or SIGTERM.

use std::path::Path;

use confer_node::relay::{Relay, RelayConfig, RelayLimits};
use tokio::signal::unix::{SignalKind, signal};

use crate::error::Error;
use crate::output::{self, safe_line};

/// Runs a relay whose key is kept in `home` (created on first run).
pub fn run(
    home: &Path,
    listen: Vec<String>,
    announce: Vec<String>,
    json: bool,
) -> Result<(), Error> {
    let config = RelayConfig {
        listen,
        announce,
        limits: RelayLimits::default(),
    };
    crate::runtime()?.block_on(serve(home, config, json))
}

async fn serve(home: &Path, config: RelayConfig, json: bool) -> Result<(), Error> {
    let signal_error =
        |e: std::io::Error| Error::usage(format!("could not watch for stop signals: {e}"));
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;

    let relay = Relay::start_in(home, config)
        .await
        .map_err(|e| Error::usage(e.to_string()))?;
    let addresses: Vec<String> = relay.addresses().iter().map(ToString::to_string).collect();
    let announced = if json {
        output::json(&serde_json::json!({
            "peer_id": relay.peer_id().to_string(),
            "addresses": addresses,
        }))
    } else {
        announce(&relay.peer_id().to_string(), &addresses)
    };
    if let Err(e) = announced {
        relay.shutdown().await;
        return Err(e);
    }
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    relay.shutdown().await;
    Ok(())
}

fn announce(peer_id: &str, addresses: &[String]) -> Result<(), Error> {
    output::line(&format!(
        "The relay is running. Peer id: {}",
        safe_line(peer_id)
    ))?;
    output::line(
        "Members use it with `confer node run --relay ADDRESS` or `confer config add-relay ADDRESS`, where ADDRESS is one they can reach of:",
    )?;
    for addr in addresses {
        output::line(&format!("  {}", safe_line(addr)))?;
    }
    output::line("It passes on encrypted traffic only. Press Ctrl-C to stop.")
}
