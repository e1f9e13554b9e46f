//! Getting the profile passphrase: from `CONFER_PASSPHRASE` (scripts and tests) or typed on
//! the terminal without echo. It is never taken from a command-line argument, where other
//! users of the machine could see it.

use std::path::Path;

use confer_store::{Profile, StoreError};
use zeroize::Zeroizing;

use crate::error::Error;

/// The environment variable scripts and tests use to supply the passphrase.
pub const ENV: &str = "CONFER_PASSPHRASE";

/// A passphrase, wiped from memory when dropped.
pub type Passphrase = Zeroizing<String>;

/// The passphrase for a new profile: from the environment, or typed twice.
pub fn new_profile() -> Result<Passphrase, Error> {
    if let Some(p) = from_env()? {
        return Ok(p);
    }
    let first = prompt("Choose a passphrase for your profile: ")?;
    let second = prompt("Type it again: ")?;
    if *first != *second {
        return Err(Error::usage(
            "the two passphrases were different; nothing was created, please try again",
        ));
    }
    Ok(first)
}

/// The passphrase that unlocks an existing profile: from the environment, or typed once.
pub fn existing_profile() -> Result<Passphrase, Error> {
    match from_env()? {
        Some(p) => Ok(p),
        None => prompt("Passphrase: "),
    }
}

/// Unlocks the profile in `home` (blocking: Argon2 is deliberately slow); refuses, before
/// asking for a passphrase, if there is no profile there.
pub fn unlock_profile(home: &Path) -> Result<Profile, Error> {
    if !Profile::exists(home) {
        return Err(StoreError::NotInitialised {
            dir: home.to_path_buf(),
        }
        .into());
    }
    let passphrase = existing_profile()?;
    Ok(Profile::unlock(home, &passphrase)?)
}

fn from_env() -> Result<Option<Passphrase>, Error> {
    match std::env::var(ENV) {
        Ok(p) => Ok(Some(Zeroizing::new(p))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::usage(format!(
            "{ENV} is set but is not valid UTF-8 text"
        ))),
    }
}

fn prompt(question: &str) -> Result<Passphrase, Error> {
    rpassword::prompt_password(question).map(Zeroizing::new).map_err(|e| {
        Error::usage(format!(
            "could not read a passphrase from the terminal ({e}); run this in a terminal or set {ENV}"
        ))
    })
}
