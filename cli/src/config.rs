//! `confer config`: show or change the profile's network settings (kept, sealed, in the
//! profile's store by the node crate). The node must be stopped: it holds the store while
//! it runs, and reads the settings when it starts.

use std::path::Path;

use confer_node::settings::Settings;
use confer_store::{Store, StoreError};

use crate::args::ConfigCommand;
use crate::error::Error;
use crate::output::{self, safe_line};
use crate::passphrase;

/// Runs one `confer config` command.
pub fn run(home: &Path, mut given: passphrase::Given, command: ConfigCommand) -> Result<(), Error> {
    let profile = passphrase::unlock_profile(home, &mut given)?;
    // One open store for reading and writing: the node must not be running meanwhile.
    let store = Store::open(&profile).map_err(|e| match e {
        StoreError::InUse { .. } => Error::usage(
            "your node is running: stop it (Ctrl-C where it runs) before changing its settings, then start it again",
        ),
        e => e.into(),
    })?;
    let mut settings = Settings::read(&store)?;
    let (json, said) = match command {
        ConfigCommand::Show { output } => (output.json, None),
        ConfigCommand::RelayOnly { mode, output } => {
            let on = mode == "on";
            settings.relay_only = on;
            settings.write(&store)?;
            let said = if on && settings.relays.is_empty() {
                "Relay-only mode is on. Add a relay (`confer config add-relay`) or join with an invite from a facilitator who uses one, or nobody can reach your node."
            } else if on {
                "Relay-only mode is on: your node will connect to other members only through relays."
            } else {
                "Relay-only mode is off: your node may connect directly to other members."
            };
            (output.json, Some(said))
        }
        ConfigCommand::AddRelay { address, output } => {
            let added = settings
                .add_relay(&address)
                .map_err(|e| Error::usage(e.to_string()))?;
            if added {
                settings.write(&store)?;
            }
            let said = if added {
                "Added the relay; the node reserves a slot on it when it starts."
            } else {
                "That relay was already in the settings."
            };
            (output.json, Some(said))
        }
        ConfigCommand::RemoveRelay { address, output } => {
            if !settings.remove_relay(&address) {
                return Err(Error::usage(format!(
                    "`{}` is not one of this profile's relays (see `confer config show`)",
                    safe_line(&address)
                )));
            }
            settings.write(&store)?;
            (output.json, Some("Removed the relay."))
        }
    };
    if json {
        return output::json(&settings);
    }
    if let Some(said) = said {
        output::line(said)?;
    }
    show(&settings)
}

fn show(settings: &Settings) -> Result<(), Error> {
    output::line(&format!(
        "Relay-only mode: {}",
        if settings.relay_only { "on" } else { "off" }
    ))?;
    if settings.relays.is_empty() {
        return output::line("Relays: none");
    }
    output::line("Relays:")?;
    for relay in &settings.relays {
        output::line(&format!("  {}", safe_line(relay)))?;
    }
    Ok(())
}
