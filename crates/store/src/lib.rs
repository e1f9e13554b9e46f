//! Encrypted local storage for a Confer node.
//!
//! This is the only crate in the workspace that knows about the on-disk format
//! (and about [`sled`]). Everything it writes lives under one directory, the
//! profile's *home*:
//!
//! ```text
//! <home>/            mode 0700 when we create it
//! <home>/profile     passphrase-protected profile file, mode 0600
//! <home>/db/         sled database, every key and value opaque
//! ```
//!
//! # Threat model
//!
//! An adversary (typically an employer who copies the profile directory from a
//! managed laptop) who obtains every byte under `<home>` while the node is
//! **not** running must learn nothing about the discussion: no message text, no
//! room names or descriptions, no room ids, no message ids, no profile name, no
//! key material. A device that is compromised while it is unlocked is out of
//! scope.
//!
//! What such an adversary *can* still see, and this crate does not hide: that
//! Confer is used, the number of rooms, the number of messages stored per room
//! (records are grouped under an opaque per-room tag), how many of the profile's
//! own messages no other member has confirmed yet (the outbox's records, one per
//! message, under tags unlike the messages' own), the size of each value to
//! within its bucket (values are padded before sealing: at least 256 bytes, above
//! that Padmé's buckets, at most 6.25% apart) and, from file timestamps and the
//! order of sled's log, roughly when things were written.
//!
//! # The profile file ([`profile`])
//!
//! A small header in clear (magic, format version, Argon2id parameters
//! `m_cost`/`t_cost`/`p_cost`, a 16-byte random salt and a 24-byte random
//! nonce), followed by an XChaCha20-Poly1305 ciphertext of the
//! [`ProfileSecrets`]: the device secret, the storage key and the profile name.
//! The header is the AEAD's associated data, so it cannot be altered without
//! detection. The Argon2id parameters are bounded before use, so a tampered
//! header cannot make unlocking allocate absurd amounts of memory.
//!
//! # The database ([`db`])
//!
//! Every value written to sled is padded, then sealed with XChaCha20-Poly1305
//! under a key derived from the storage key, with a fresh random 24-byte nonce,
//! and with associated data binding the tree name and the record's sled key, so
//! a value cannot be moved to another key or tree without failing authentication.
//! Decrypted room values (they hold the rooms' keys) are handed out in buffers
//! that are wiped when dropped. Sled
//! keys never contain room ids or message ids in clear, only HMAC tags. A
//! sealed format record makes an incompatible database, or a database written
//! by a different profile, a clear error rather than a silently empty store.
//!
//! # Key derivations
//!
//! | key | derived as | used for |
//! |---|---|---|
//! | profile key | Argon2id(passphrase, salt, header params), 32 bytes | seals the profile secrets in `<home>/profile` (header as AAD) |
//! | value key | HKDF-SHA256(ikm = storage key, salt = `"confer-store"`, info = `"confer-store v1 value seal"`) | XChaCha20-Poly1305 key for every value in the database |
//! | index key | HKDF-SHA256(ikm = storage key, salt = `"confer-store"`, info = `"confer-store v1 index"`) | HMAC-SHA256 key for the opaque sled keys below |
//! | room tag | HMAC(index key, `"room"` ‖ room id), first 16 bytes | sled key of a room record, and prefix of its messages' keys |
//! | message tag | HMAC(index key, `"message"` ‖ room id ‖ message id), first 16 bytes | second half of a message's sled key (dedup without revealing the id) |
//! | outbox tag | HMAC(index key, `"outbox"` ‖ room id ‖ message id), first 16 bytes | second half of an outbox record's sled key (not linkable to the message's record) |
//!
//! The storage key and the device secret are generated from the operating
//! system's random number generator when the profile is created; they never
//! leave the profile file except in memory, where they are zeroized on drop.
//!
//! # Durability
//!
//! Writes reach sled's in-memory buffers at once and disk on
//! [`Store::flush`]. Callers must flush before acknowledging anything to a user
//! or a peer.

#![deny(missing_docs)]

mod crypto;
pub mod db;
mod files;
pub mod profile;

use std::io;
use std::path::PathBuf;

pub use db::{Flusher, Store};
pub use profile::{Profile, ProfileSecrets};

/// Everything that can go wrong in this crate.
///
/// Each variant displays as one sentence that can be shown to a user as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The passphrase does not decrypt the profile (or the encrypted part of
    /// the profile file was altered; the two cannot be told apart).
    #[error("wrong passphrase for this profile")]
    WrongPassphrase,

    /// A passphrase shorter than [`profile::MIN_PASSPHRASE_CHARS`] was offered for a new
    /// profile or as a profile's new passphrase: everything on disk is only as strong as
    /// it.
    #[error(
        "the passphrase is too short: use at least {min} characters (a few unrelated words are easy to remember and hard to guess)"
    )]
    ShortPassphrase {
        /// The fewest characters accepted.
        min: usize,
    },

    /// A passphrase the strength estimator finds easy to guess was offered for a new
    /// profile or as a profile's new passphrase.
    #[error(
        "that passphrase would be easy to guess ({reason}); add another word or two (a few unrelated words are easy to remember and hard to guess)"
    )]
    WeakPassphrase {
        /// What makes it easy to guess, in plain words.
        reason: String,
    },

    /// The profile name is empty or contains control characters.
    #[error("the name must be one line of visible text, the name the others will see")]
    BadName,

    /// The profile name is longer than the format allows.
    #[error("the profile name is too long; use at most {max} bytes")]
    NameTooLong {
        /// The largest allowed name, in bytes of UTF-8.
        max: usize,
    },

    /// [`Profile::create`] found an existing profile and changed nothing.
    #[error(
        "a profile already exists in {}; unlock it instead, or choose another directory",
        .dir.display()
    )]
    AlreadyExists {
        /// The profile's home directory.
        dir: PathBuf,
    },

    /// There is no profile file in the home directory.
    #[error("no profile in {}; run `confer init` first", .dir.display())]
    NotInitialised {
        /// The profile's home directory.
        dir: PathBuf,
    },

    /// The database is locked by another process (or another open [`Store`]).
    #[error("the store in {} is in use by another running node", .dir.display())]
    InUse {
        /// The profile's home directory.
        dir: PathBuf,
    },

    /// Something on disk does not parse, does not authenticate, or was
    /// written by an incompatible version or by another profile.
    #[error(
        "the store in {} is damaged or from an incompatible version: {reason}",
        .dir.display()
    )]
    Corrupt {
        /// The profile's home directory.
        dir: PathBuf,
        /// What exactly is wrong, for the user and for bug reports.
        reason: String,
    },

    /// A file system operation failed.
    #[error("could not {action} {}: {source}", .path.display())]
    Io {
        /// What we were trying to do, e.g. "read".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The database reported an error that is not corruption (e.g. disk full).
    #[error("the store in {} could not be used: {reason}", .dir.display())]
    Database {
        /// The profile's home directory.
        dir: PathBuf,
        /// The database's description of the problem.
        reason: String,
    },

    /// The operating system could not supply random bytes.
    #[error("the operating system could not supply random numbers: {reason}")]
    Random {
        /// The operating system's description of the problem.
        reason: String,
    },

    /// A cryptographic primitive rejected its input; this indicates a bug.
    #[error("a cryptographic operation failed unexpectedly ({reason}); this is a bug")]
    Crypto {
        /// Which operation failed.
        reason: &'static str,
    },
}

/// `Result` with [`StoreError`] as the default error.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
