//! `confer passphrase change`: seal the profile again under a new passphrase, through the
//! store crate. The node must be stopped: it holds the store while it runs, and holding
//! the store here keeps a node from starting meanwhile.

use std::path::Path;

use confer_store::{Profile, Store, StoreError};

use crate::error::Error;
use crate::output;
use crate::passphrase;

/// Asks for the current passphrase, unlocks the profile in `home`, then asks for the new
/// one and seals the profile under it. Changes nothing on any failure.
pub fn run(home: &Path, mut given: passphrase::Given, json: bool) -> Result<(), Error> {
    if !Profile::exists(home) {
        return Err(StoreError::NotInitialised {
            dir: home.to_path_buf(),
        }
        .into());
    }
    let current = passphrase::existing_profile(&mut given)?;
    let profile = Profile::unlock(home, &current)?;
    let store = Store::open(&profile).map_err(|e| match e {
        StoreError::InUse { .. } => Error::usage(
            "your node is running: stop it (Ctrl-C where it runs) before changing the passphrase, then start it again with the new one",
        ),
        e => e.into(),
    })?;
    let new = passphrase::replacement(&mut given, profile.name())?;
    if *new == *current {
        return Err(Error::usage(
            "the new passphrase is the same as the current one; nothing was changed",
        ));
    }
    profile.change_passphrase(&store, &new)?;
    drop(store);
    if json {
        return output::json(&serde_json::json!({ "changed": true }));
    }
    output::line(
        "Changed the passphrase. Use the new one from now on, starting with `confer node run`.",
    )?;
    output::line(
        "A copy of your profile folder made before now (a backup) still opens with the old passphrase: replace it with a new copy, or delete it.",
    )
}
