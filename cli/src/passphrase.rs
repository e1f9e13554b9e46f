//! Getting passphrases: from the environment (scripts and tests) or typed on the terminal
//! without echo. They are never taken from a command-line argument, where other users of
//! the machine could see them.
//!
//! A passphrase given in the environment is taken out of it before the command runs: the
//! kernel shows a process's starting environment in `/proc/<pid>/environ` for as long as
//! it runs (to the same user, and to root), and removing a variable inside the process
//! changes only the C library's list, not that copy. So [`Given::take`] starts `confer`
//! again in the same process (exec: the same process id, the same arguments) with the
//! passphrase variables removed, and hands their values over on standard input through
//! a pipe. It runs first in `main`, before any thread is started.

use std::io::{Read, Write};
use std::path::Path;

use confer_store::{Profile, StoreError};
use zeroize::Zeroizing;

use crate::error::Error;

/// The environment variable scripts and tests use to supply the passphrase.
pub const ENV: &str = "CONFER_PASSPHRASE";

/// The environment variable scripts and tests use to supply a new passphrase
/// (`confer passphrase change`).
pub const NEW_ENV: &str = "CONFER_NEW_PASSPHRASE";

/// Set by [`Given::take`] in the environment of the `confer` it starts in its place: its
/// standard input holds the passphrases taken out of the environment.
const HANDED_OVER_ENV: &str = "CONFER_PASSPHRASES_ON_STDIN";

/// The longest passphrase accepted from the environment, in bytes: far more than anyone
/// types, and small enough that both passphrases fit a pipe's smallest buffer (one 4 KiB
/// page), so that handing them over never waits for a reader.
const MAX_ENV_BYTES: usize = 1024;

/// A passphrase, wiped from memory when dropped.
pub type Passphrase = Zeroizing<String>;

/// The passphrases given in the environment, if any, once taken out of it.
#[derive(Default)]
pub struct Given {
    current: Option<Passphrase>,
    new: Option<Passphrase>,
}

impl std::fmt::Debug for Given {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Given")
            .field("current", &self.current.as_ref().map(|_| "<redacted>"))
            .field("new", &self.new.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Given {
    /// The passphrases from the environment, taken out of it. If `CONFER_PASSPHRASE` or
    /// `CONFER_NEW_PASSPHRASE` is set, this does not return: `confer` starts again in
    /// this process without them, and this call in the new one returns them. Call it
    /// before any thread starts.
    pub fn take() -> Result<Given, Error> {
        if std::env::var_os(HANDED_OVER_ENV).is_some() {
            return read_handed_over(std::io::stdin().lock());
        }
        let given = Given {
            current: from_env(ENV)?,
            new: from_env(NEW_ENV)?,
        };
        if given.current.is_none() && given.new.is_none() {
            return Ok(given);
        }
        Err(start_again_without(&given))
    }
}

/// The passphrase for a new profile named `name`: from the environment, or typed twice.
/// Checked for strength after the first typing, so a weak one is not typed twice.
pub fn new_profile(given: Given, name: &str) -> Result<Passphrase, Error> {
    if let Some(p) = given.current {
        return Ok(p);
    }
    choose("Choose a passphrase for your profile: ", name, ENV)
}

/// The passphrase that unlocks an existing profile: from the environment, or typed once.
pub fn existing_profile(given: &mut Given) -> Result<Passphrase, Error> {
    match given.current.take() {
        Some(p) => Ok(p),
        None => prompt("Passphrase: ", ENV),
    }
}

/// A new passphrase for the profile named `name`: from `CONFER_NEW_PASSPHRASE`, or typed
/// twice (checked for strength after the first).
pub fn replacement(given: &mut Given, name: &str) -> Result<Passphrase, Error> {
    match given.new.take() {
        Some(p) => Ok(p),
        None => choose("Choose a new passphrase: ", name, NEW_ENV),
    }
}

/// Unlocks the profile in `home` (blocking: Argon2 is deliberately slow); refuses, before
/// asking for a passphrase, if there is no profile there.
pub fn unlock_profile(home: &Path, given: &mut Given) -> Result<Profile, Error> {
    if !Profile::exists(home) {
        return Err(StoreError::NotInitialised {
            dir: home.to_path_buf(),
        }
        .into());
    }
    let passphrase = existing_profile(given)?;
    Ok(Profile::unlock(home, &passphrase)?)
}

/// A passphrase typed twice, checked for strength between the two.
fn choose(question: &str, name: &str, env: &str) -> Result<Passphrase, Error> {
    let first = prompt(question, env)?;
    confer_store::profile::check_passphrase(&first, name)?;
    let second = prompt("Type it again: ", env)?;
    if *first != *second {
        return Err(Error::usage(
            "the two passphrases were different; nothing was changed, please try again",
        ));
    }
    Ok(first)
}

fn from_env(name: &str) -> Result<Option<Passphrase>, Error> {
    match std::env::var(name) {
        Ok(p) if p.len() > MAX_ENV_BYTES => {
            drop(Zeroizing::new(p));
            Err(Error::usage(format!(
                "{name} is longer than {MAX_ENV_BYTES} bytes; please use a shorter passphrase"
            )))
        }
        Ok(p) => Ok(Some(Zeroizing::new(p))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::usage(format!(
            "{name} is set but is not valid UTF-8 text"
        ))),
    }
}

/// Starts `confer` again in this process, with the same arguments and environment less
/// the passphrase variables, its standard input a pipe holding `given` as
/// `NAME=VALUE\0` entries (no variable's value can hold a zero byte). Returns only if
/// that fails.
fn start_again_without(given: &Given) -> Error {
    use std::os::unix::process::CommandExt;

    let failed = |e: std::io::Error| {
        Error::usage(format!(
            "could not take the passphrase out of this program's environment ({e}); \
             unset {ENV} and {NEW_ENV} and type the passphrase when asked instead"
        ))
    };
    let mut handed = Zeroizing::new(Vec::with_capacity(2 * (MAX_ENV_BYTES + 32)));
    for (name, value) in [(ENV, &given.current), (NEW_ENV, &given.new)] {
        if let Some(value) = value {
            handed.extend_from_slice(name.as_bytes());
            handed.push(b'=');
            handed.extend_from_slice(value.as_bytes());
            handed.push(0);
        }
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return failed(e),
    };
    let (reader, mut writer) = match std::io::pipe() {
        Ok(pipe) => pipe,
        Err(e) => return failed(e),
    };
    // At most two entries of MAX_ENV_BYTES: this fits the pipe's buffer, so the write
    // completes with nobody reading yet.
    if let Err(e) = writer.write_all(&handed) {
        return failed(e);
    }
    drop(writer);
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    command
        .args(args)
        .env_remove(ENV)
        .env_remove(NEW_ENV)
        .env(HANDED_OVER_ENV, "1")
        .stdin(reader);
    failed(command.exec())
}

/// The passphrases handed over by [`start_again_without`], read from `input` to its end.
fn read_handed_over(input: impl Read) -> Result<Given, Error> {
    let failed = || {
        Error::usage(format!(
            "could not read the passphrase handed over from {ENV}; unset \
             {HANDED_OVER_ENV} if you set it yourself"
        ))
    };
    let limit = 2 * (MAX_ENV_BYTES + 32);
    let mut handed = Zeroizing::new(Vec::with_capacity(limit + 1));
    input
        .take(u64::try_from(limit + 1).unwrap_or(u64::MAX))
        .read_to_end(&mut handed)
        .map_err(|_| failed())?;
    if handed.len() > limit {
        return Err(failed());
    }
    let mut given = Given::default();
    for entry in handed.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let text = std::str::from_utf8(entry).map_err(|_| failed())?;
        let (name, value) = text.split_once('=').ok_or_else(failed)?;
        let value = Some(Zeroizing::new(value.to_owned()));
        match name {
            ENV => given.current = value,
            NEW_ENV => given.new = value,
            _ => return Err(failed()),
        }
    }
    Ok(given)
}

fn prompt(question: &str, env: &str) -> Result<Passphrase, Error> {
    rpassword::prompt_password(question).map(Zeroizing::new).map_err(|e| {
        Error::usage(format!(
            "could not read a passphrase from the terminal ({e}); run this in a terminal or set {env}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handed_over_passphrases_are_read_back_and_anything_else_refused() {
        let given =
            read_handed_over(&b"CONFER_PASSPHRASE=old one\0CONFER_NEW_PASSPHRASE=new = one\0"[..])
                .unwrap();
        assert_eq!(
            given.current.as_deref().map(String::as_str),
            Some("old one")
        );
        assert_eq!(given.new.as_deref().map(String::as_str), Some("new = one"));
        let none = read_handed_over(&b""[..]).unwrap();
        assert!(none.current.is_none() && none.new.is_none());
        for bad in [
            &b"OTHER=x\0"[..],
            b"no equals sign\0",
            b"CONFER_PASSPHRASE=\xff\0",
            &[b'x'; 4 * MAX_ENV_BYTES],
        ] {
            assert!(read_handed_over(bad).is_err());
        }
        let debug = format!("{given:?}");
        assert!(!debug.contains("old one"), "{debug}");
    }
}
