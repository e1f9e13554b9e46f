//! `confer init`: create the profile through the store crate.

use std::path::Path;

use confer_node::settings::Settings;
use confer_store::{Profile, StoreError};

use crate::error::Error;
use crate::output::{self, safe_line};
use crate::passphrase;

/// Creates the profile in `home`. Refuses, without asking for a passphrase and without
/// changing anything, if one is already there.
pub fn run(
    home: &Path,
    given: passphrase::Given,
    name: &str,
    relay_only: bool,
    json: bool,
) -> Result<(), Error> {
    if Profile::exists(home) {
        return Err(StoreError::AlreadyExists {
            dir: home.to_path_buf(),
        }
        .into());
    }
    // Before asking for a passphrase: a bad name would waste it.
    confer_store::profile::check_name(name)?;
    let passphrase = passphrase::new_profile(given, name)?;
    let profile = Profile::create(home, &passphrase, name)?;
    if relay_only {
        Settings {
            relay_only,
            relays: Vec::new(),
        }
        .save(&profile)?;
    }
    let shown =
        std::fs::canonicalize(profile.home()).unwrap_or_else(|_| profile.home().to_path_buf());
    if json {
        return output::json(&serde_json::json!({
            "home": shown.to_string_lossy(),
            "name": profile.name(),
            "relay_only": relay_only,
        }));
    }
    output::line(&format!(
        "Created the profile for {} in {}.",
        safe_line(profile.name()),
        safe_line(&shown.to_string_lossy())
    ))?;
    output::line(
        "Its contents are encrypted with your passphrase; keep the passphrase safe, it cannot be recovered.",
    )?;
    if relay_only {
        output::line(
            "Relay-only mode is on: other members will never learn your IP address. Your node needs a relay: `confer config add-relay`, or join with an invite from a facilitator who uses one.",
        )?;
    }
    output::line("Next, start your node with `confer node run`.")
}
