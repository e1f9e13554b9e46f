//! The encrypted database, `<home>/db`.
//!
//! Four sled trees:
//!
//! | tree | sled key | sealed plaintext |
//! |---|---|---|
//! | `meta` | `"format"` | `"confer-store"` ‖ format version (u32, now 2) |
//! | `rooms` | room tag (16) | room id (32) ‖ value |
//! | `messages` | room tag (16) ‖ message tag (16) | sort key (u64) ‖ message id (32) ‖ value |
//! | `outbox` | room tag (16) ‖ outbox tag (16) | message id (32) |
//!
//! A stored value is nonce (24) ‖ XChaCha20-Poly1305 ciphertext ‖ tag (16). The
//! plaintext is padded: value length (u32) ‖ value ‖ zeros, to at least 256 bytes and
//! above that to Padmé's buckets, so a value's sealed length shows its length only to
//! within its bucket. The associated data is `"confer-store v2 padded"` ‖ tree name
//! length (u8) ‖ tree name ‖ sled key. The format record alone is sealed unpadded
//! under `"confer-store v1"` ‖ …, so that every version can read which version wrote
//! the database; values written by format version 1 (unpadded, the same associated
//! data) still open. Tags and keys are described in the crate docs.
//!
//! Message sort keys and ids are sealed too, so [`Store::latest_messages_mapped`] decrypts a
//! room's messages and sorts them in memory. Rooms are small; this is cheap.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::{self, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::files::{self, create_private_dir};
use crate::profile::Profile;
use crate::{Result, StoreError};

const DB_DIR: &str = "db";

/// How long [`Store::open`] keeps trying while the database's lock is held, before it
/// reports [`StoreError::InUse`]. sled's background threads (log writes, file
/// truncation) each keep the locked file open until they finish, so a store closed a
/// moment ago in this process can still hold its lock briefly; a second node holds it
/// for as long as it runs, and is reported after this wait.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

const TREE_META: &str = "meta";
const TREE_ROOMS: &str = "rooms";
const TREE_MESSAGES: &str = "messages";
const TREE_OUTBOX: &str = "outbox";

const FORMAT_KEY: &[u8] = b"format";
/// The file beside the database recording how much it holds (see [`Store::write_manifest`]).
const MANIFEST_FILE: &str = "db.manifest";
const MANIFEST_MAGIC: &[u8] = b"confer-manifest-1";
const FORMAT_MAGIC: &[u8] = b"confer-store";
/// Version 2 pads values; a version 1 database (its values unpadded) opens, and its
/// format record is raised to 2, since values written from then on are padded.
const FORMAT_VERSION: u32 = 2;
/// The earliest format this build opens.
const OLDEST_FORMAT_VERSION: u32 = 1;

const HKDF_SALT: &[u8] = b"confer-store";
const LABEL_VALUE_SEAL: &[u8] = b"confer-store v1 value seal";
const LABEL_INDEX: &[u8] = b"confer-store v1 index";
/// Associated data prefix of a value sealed as it is (the format record, and every value
/// written before values were padded).
const AAD_PREFIX: &[u8] = b"confer-store v1";
/// Associated data prefix of a padded value: length (u32) ‖ value ‖ zeros.
const AAD_PREFIX_PADDED: &[u8] = b"confer-store v2 padded";
/// Bytes before a padded value: its length.
const LENGTH_PREFIX: usize = 4;

const ID_LEN: usize = 32;
const INDEX_TAG_LEN: usize = 16;
const SEALED_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A room id or message id, as the store sees it: 32 opaque bytes.
type Id = [u8; ID_LEN];
type IndexTag = [u8; INDEX_TAG_LEN];

/// A room's stored value, decrypted: it holds the room's keys, so it is wiped from
/// memory when dropped.
pub type RoomValue = Zeroizing<Vec<u8>>;

/// Keys derived from the profile's storage key; zeroized on drop.
struct Keys {
    /// XChaCha20-Poly1305 key for every value.
    seal: Zeroizing<[u8; KEY_LEN]>,
    /// HMAC-SHA256 key for room and message tags.
    index: Zeroizing<[u8; KEY_LEN]>,
}

impl Keys {
    fn derive(storage_key: &[u8; KEY_LEN]) -> Result<Self> {
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), storage_key);
        let mut seal = Zeroizing::new([0u8; KEY_LEN]);
        let mut index = Zeroizing::new([0u8; KEY_LEN]);
        let failed = |_| StoreError::Crypto {
            reason: "HKDF expand",
        };
        hkdf.expand(LABEL_VALUE_SEAL, seal.as_mut_slice())
            .map_err(failed)?;
        hkdf.expand(LABEL_INDEX, index.as_mut_slice())
            .map_err(failed)?;
        Ok(Self { seal, index })
    }

    /// First 16 bytes of HMAC(index key, parts...).
    fn tag(&self, parts: &[&[u8]]) -> Result<IndexTag> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.index.as_slice())
            .map_err(|_| StoreError::Crypto { reason: "HMAC key" })?;
        for part in parts {
            mac.update(part);
        }
        let full = mac.finalize().into_bytes();
        crypto::array_at(&full, 0).ok_or(StoreError::Crypto {
            reason: "HMAC output",
        })
    }

    fn room_tag(&self, room_id: &Id) -> Result<IndexTag> {
        self.tag(&[b"room", room_id])
    }

    fn message_tag(&self, room_id: &Id, message_id: &Id) -> Result<IndexTag> {
        self.tag(&[b"message", room_id, message_id])
    }

    /// Unlike the message tag, so an outbox record does not point at its message's record.
    fn outbox_tag(&self, room_id: &Id, message_id: &Id) -> Result<IndexTag> {
        self.tag(&[b"outbox", room_id, message_id])
    }
}

/// The encrypted database of one profile.
///
/// Room ids and message ids are 32 opaque bytes, values are opaque byte
/// strings; the store knows nothing of the room protocol. All methods take
/// `&self` and may be called from several threads.
pub struct Store {
    home: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    rooms: sled::Tree,
    messages: sled::Tree,
    /// This profile's messages no other member is known to hold yet, one record each.
    outbox: sled::Tree,
    /// How many messages `messages` holds (messages are never deleted): counted once at
    /// open, then kept up to date by [`Store::insert_message`], so that
    /// [`Store::write_manifest`] does not walk the whole tree every time.
    message_count: AtomicU64,
    keys: Keys,
    /// SHA-256 of the profile file when the store was opened: if the profile directory
    /// is deleted or replaced while this store is open (the new profile has a new file,
    /// with a new random salt), files written by path (the manifest) would land in
    /// someone else's profile. Changing the passphrase through this store updates it.
    profile_digest: std::sync::Mutex<[u8; 32]>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database of `profile` at `<home>/db`.
    ///
    /// [`StoreError::InUse`] if another process or another open `Store` holds
    /// it (after waiting up to a second for it to be released, see `LOCK_WAIT`);
    /// [`StoreError::Corrupt`] if it is damaged, from an incompatible
    /// version, or was written under another profile's keys.
    pub fn open(profile: &Profile) -> Result<Store> {
        let home = profile.home().to_path_buf();
        let path = home.join(DB_DIR);
        create_private_dir(&path)?;
        let profile_file = home.join(crate::profile::PROFILE_FILE);
        let profile_digest = file_digest(&profile_file).map_err(|source| StoreError::Io {
            action: "read",
            path: profile_file,
            source,
        })?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new().path(&path).open() {
                Ok(db) => break db,
                Err(e) => match open_error(&home, e) {
                    StoreError::InUse { .. } if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    e => return Err(e),
                },
            }
        };
        let tree = |name: &str| db.open_tree(name).map_err(|e| open_error(&home, e));
        let messages = tree(TREE_MESSAGES)?;
        let store = Store {
            meta: tree(TREE_META)?,
            rooms: tree(TREE_ROOMS)?,
            outbox: tree(TREE_OUTBOX)?,
            message_count: AtomicU64::new(messages.len() as u64),
            messages,
            keys: Keys::derive(profile.storage_key())?,
            db,
            home,
            profile_digest: std::sync::Mutex::new(profile_digest),
        };
        store.check_format()?;
        store.check_manifest()?;
        Ok(store)
    }

    /// Records, in a small sealed file beside the database (`<home>/db.manifest`), how
    /// many rooms and messages the store holds. [`Store::open`] refuses a database that
    /// holds fewer than the manifest says: sled treats damage in its log as an unfinished
    /// write and drops everything after it, so without this a damaged store would open
    /// with rooms or messages silently missing. Call it now and then and at shutdown; what
    /// was written after the last call is not covered.
    ///
    /// It counts what is stored, then flushes, then records the counts: a message stored
    /// meanwhile (from another thread) is counted at the next call, so the manifest never
    /// claims more than is on disk.
    ///
    /// Nothing is written if the profile directory was deleted or replaced since the store
    /// was opened (a person starting over while an old node still runs): the manifest
    /// would be sealed under the old profile's key and make the new one unopenable.
    pub fn write_manifest(&self) -> Result<()> {
        let counts = (
            self.rooms.len() as u64,
            self.message_count.load(Ordering::SeqCst),
        );
        self.flush()?;
        self.write_counts(counts)
    }

    /// Writes the manifest file recording `counts` (rooms, messages), unless the profile
    /// directory was replaced since the store was opened (see [`Store::write_manifest`]).
    fn write_counts(&self, counts: (u64, u64)) -> Result<()> {
        self.check_profile_file(&self.profile_digest(), "write the manifest into")?;
        let mut plaintext = MANIFEST_MAGIC.to_vec();
        plaintext.extend_from_slice(&counts.0.to_be_bytes());
        plaintext.extend_from_slice(&counts.1.to_be_bytes());
        let sealed = self.seal_value(MANIFEST_FILE, b"counts", &plaintext)?;
        // Renamed into place, then the directory synced: a crash leaves the old manifest
        // or the new one, and once this returns the new one survives a crash.
        files::replace_file(&self.home, &self.home.join(MANIFEST_FILE), &sealed)
    }

    /// The digest of the profile file this store belongs to.
    fn profile_digest(&self) -> std::sync::MutexGuard<'_, [u8; 32]> {
        // The digest is one plain value: a panic elsewhere cannot leave it half written.
        self.profile_digest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses if the profile file is no longer the one whose digest is `expected` (the
    /// profile directory was deleted or replaced while this store was open).
    fn check_profile_file(&self, expected: &[u8; 32], action: &'static str) -> Result<()> {
        if file_digest(&crate::profile::profile_path(&self.home)).ok() == Some(*expected) {
            return Ok(());
        }
        Err(StoreError::Io {
            action,
            path: self.home.clone(),
            source: std::io::Error::other(
                "the profile directory was deleted or replaced while this store was open",
            ),
        })
    }

    /// Replaces the profile file with `contents` (the same secrets sealed anew, see
    /// [`Profile::change_passphrase`]), if it is still the file this store was opened
    /// with, and remembers the new file as this store's.
    pub(crate) fn replace_profile_file(&self, contents: &[u8]) -> Result<()> {
        use sha2::Digest;
        let mut digest = self.profile_digest();
        self.check_profile_file(&digest, "replace the profile in")?;
        files::replace_file(
            &self.home,
            &crate::profile::profile_path(&self.home),
            contents,
        )?;
        *digest = Sha256::digest(contents).into();
        Ok(())
    }

    fn check_manifest(&self) -> Result<()> {
        let path = self.home.join(MANIFEST_FILE);
        let sealed = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StoreError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        let plaintext = self
            .open_value(MANIFEST_FILE, b"counts", &sealed)
            .map_err(|_| self.corrupt("the store's manifest is damaged"))?;
        let counts = plaintext
            .strip_prefix(MANIFEST_MAGIC)
            .filter(|rest| rest.len() == 16)
            .and_then(|rest| {
                Some((
                    crypto::array_at::<8>(rest, 0)?,
                    crypto::array_at::<8>(rest, 8)?,
                ))
            })
            .map(|(r, m)| (u64::from_be_bytes(r), u64::from_be_bytes(m)))
            .ok_or_else(|| self.corrupt("the store's manifest does not parse"))?;
        let (rooms, messages) = (
            self.rooms.len() as u64,
            self.message_count.load(Ordering::SeqCst),
        );
        if rooms < counts.0 || messages < counts.1 {
            return Err(self.corrupt(&format!(
                "it holds {rooms} of the {} rooms and {messages} of the {} messages it had \
                 recorded, so part of it was lost or damaged; restore the profile directory \
                 from a backup, or ask another member's node to resend the messages after \
                 starting with a fresh store",
                counts.0, counts.1
            )));
        }
        Ok(())
    }

    /// Stores (or replaces) the value of a room.
    pub fn put_room(&self, room_id: &[u8; 32], value: &[u8]) -> Result<()> {
        let key = self.keys.room_tag(room_id)?;
        let mut plaintext = Zeroizing::new(Vec::with_capacity(ID_LEN + value.len()));
        plaintext.extend_from_slice(room_id);
        plaintext.extend_from_slice(value);
        let sealed = self.seal_value(TREE_ROOMS, &key, &plaintext)?;
        self.rooms
            .insert(key, sealed)
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// The value of a room, if stored; wiped from memory when dropped (a room's value
    /// holds its keys).
    pub fn room(&self, room_id: &[u8; 32]) -> Result<Option<RoomValue>> {
        let key = self.keys.room_tag(room_id)?;
        let Some(sealed) = self.rooms.get(key).map_err(|e| self.db_error(e))? else {
            return Ok(None);
        };
        let (stored_id, value) = self.open_room(&key, &sealed)?;
        if &stored_id != room_id {
            return Err(self.corrupt("a room record holds another room's id"));
        }
        Ok(Some(value))
    }

    /// Every stored room as (room id, value), ordered by room id; each value is wiped
    /// from memory when dropped.
    pub fn rooms(&self) -> Result<Vec<([u8; 32], RoomValue)>> {
        let mut out = Vec::new();
        for entry in self.rooms.iter() {
            let (key, sealed) = entry.map_err(|e| self.db_error(e))?;
            let (room_id, value) = self.open_room(&key, &sealed)?;
            if self.keys.room_tag(&room_id)?.as_slice() != key.as_ref() {
                return Err(self.corrupt("a room record is stored under the wrong key"));
            }
            out.push((room_id, value));
        }
        out.sort_unstable_by_key(|entry| entry.0);
        Ok(out)
    }

    /// Stores a message of a room unless a message with this id is already
    /// stored for that room. Returns `true` if it was stored, `false` (having
    /// written nothing) if it was a duplicate.
    ///
    /// [`Store::latest_messages_mapped`] lists a room's messages by (`sort_key`,
    /// `message_id`).
    pub fn insert_message(
        &self,
        room_id: &[u8; 32],
        message_id: &[u8; 32],
        sort_key: u64,
        value: &[u8],
    ) -> Result<bool> {
        let key = self.message_key(room_id, message_id)?;
        // No lookup first: the compare-and-swap below finds a duplicate by itself, and
        // the node stores only messages its index says are new (in a profile of a
        // catch-up the lookup was two fifths of this function). A duplicate costs a
        // wasted seal.
        let mut plaintext = Zeroizing::new(Vec::with_capacity(8 + ID_LEN + value.len()));
        plaintext.extend_from_slice(&sort_key.to_be_bytes());
        plaintext.extend_from_slice(message_id);
        plaintext.extend_from_slice(value);
        let sealed = self.seal_value(TREE_MESSAGES, &key, &plaintext)?;
        // Compare-and-swap from "absent", so two concurrent inserts of the
        // same message store it once.
        let swapped = self
            .messages
            .compare_and_swap(key, None::<&[u8]>, Some(sealed))
            .map_err(|e| self.db_error(e))?;
        if swapped.is_ok() {
            self.message_count.fetch_add(1, Ordering::SeqCst);
        }
        Ok(swapped.is_ok())
    }

    /// The last `n` of a room's messages in order of (sort key, message id), each value
    /// turned by `map` into what the caller keeps as it is read (those it maps to `None`
    /// are left out), and how many came before them (mapped to `Some` and left out). Holds
    /// at most `n` mapped values at a time, however long the history (`usize::MAX`: all).
    pub fn latest_messages_mapped<T>(
        &self,
        room_id: &[u8; 32],
        n: usize,
        mut map: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<(Vec<T>, usize)> {
        let mut latest: std::collections::BTreeMap<(u64, Id), T> = Default::default();
        let mut earlier = 0;
        self.for_each_message(room_id, |sort_key, message_id, value| {
            if let Some(kept) = map(value) {
                latest.insert((sort_key, message_id), kept);
                if latest.len() > n {
                    latest.pop_first();
                    earlier += 1;
                }
            }
        })?;
        Ok((latest.into_values().collect(), earlier))
    }

    /// A room's message values, in order (see [`Store::latest_messages_mapped`]).
    #[cfg(test)]
    fn messages(&self, room_id: &[u8; 32]) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .latest_messages_mapped(room_id, usize::MAX, |value| Some(value.to_vec()))?
            .0)
    }

    /// Calls `visit(sort key, message id, value)` with each message of the room, in no
    /// particular order, one at a time: a caller that needs no order (a node building
    /// its index at start) never holds a long history's values all at once; for them in
    /// order, see [`Store::latest_messages_mapped`]. Stops at the first damaged record
    /// ([`StoreError::Corrupt`]).
    pub fn for_each_message(
        &self,
        room_id: &[u8; 32],
        mut visit: impl FnMut(u64, Id, &[u8]),
    ) -> Result<()> {
        let room_tag = self.keys.room_tag(room_id)?;
        for entry in self.messages.scan_prefix(room_tag) {
            let (key, sealed) = entry.map_err(|e| self.db_error(e))?;
            let plaintext = self.open_value(TREE_MESSAGES, &key, &sealed)?;
            let parsed = crypto::array_at::<8>(&plaintext, 0)
                .zip(crypto::array_at::<ID_LEN>(&plaintext, 8))
                .zip(plaintext.get(8 + ID_LEN..));
            let Some(((sort_key, message_id), value)) = parsed else {
                return Err(self.corrupt("a message record is too short"));
            };
            if key.get(INDEX_TAG_LEN..)
                != Some(self.keys.message_tag(room_id, &message_id)?.as_slice())
            {
                return Err(self.corrupt("a message record is stored under the wrong key"));
            }
            visit(u64::from_be_bytes(sort_key), message_id, value);
        }
        Ok(())
    }

    /// Whether a message with this id is stored for the room.
    pub fn has_message(&self, room_id: &[u8; 32], message_id: &[u8; 32]) -> Result<bool> {
        let key = self.message_key(room_id, message_id)?;
        self.messages
            .contains_key(key)
            .map_err(|e| self.db_error(e))
    }

    /// One message's value, if stored for the room.
    pub fn message(&self, room_id: &[u8; 32], message_id: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let key = self.message_key(room_id, message_id)?;
        let Some(sealed) = self.messages.get(key).map_err(|e| self.db_error(e))? else {
            return Ok(None);
        };
        let plaintext = self.open_value(TREE_MESSAGES, &key, &sealed)?;
        match (
            crypto::array_at::<ID_LEN>(&plaintext, 8),
            plaintext.get(8 + ID_LEN..),
        ) {
            (Some(stored_id), Some(value)) if &stored_id == message_id => Ok(Some(value.to_vec())),
            _ => Err(self.corrupt("a message record does not match its key")),
        }
    }

    /// Records one of this profile's messages as not yet held by any other member (the
    /// node's outbox). One record per message, so recording or clearing one writes that
    /// one alone, however many are waiting.
    pub fn add_to_outbox(&self, room_id: &[u8; 32], message_id: &[u8; 32]) -> Result<()> {
        let key = self.outbox_key(room_id, message_id)?;
        let sealed = self.seal_value(TREE_OUTBOX, &key, message_id)?;
        self.outbox
            .insert(key, sealed)
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// Clears messages from the outbox (another member holds them).
    pub fn remove_from_outbox(&self, room_id: &[u8; 32], message_ids: &[[u8; 32]]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for message_id in message_ids {
            batch.remove(&self.outbox_key(room_id, message_id)?);
        }
        self.outbox.apply_batch(batch).map_err(|e| self.db_error(e))
    }

    /// The room's messages in the outbox, in no particular order.
    pub fn outbox(&self, room_id: &[u8; 32]) -> Result<Vec<[u8; 32]>> {
        let room_tag = self.keys.room_tag(room_id)?;
        let mut ids = Vec::new();
        for entry in self.outbox.scan_prefix(room_tag) {
            let (key, sealed) = entry.map_err(|e| self.db_error(e))?;
            let plaintext = self.open_value(TREE_OUTBOX, &key, &sealed)?;
            let Some(id) = crypto::array_at::<ID_LEN>(&plaintext, 0) else {
                return Err(self.corrupt("an outbox record is too short"));
            };
            if key[..] != self.outbox_key(room_id, &id)?[..] {
                return Err(self.corrupt("an outbox record is stored under the wrong key"));
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// Deletes a room: its record, its messages and its named records (`states`).
    /// Returns how many messages were deleted.
    ///
    /// The manifest is lowered first, so that a crash part-way leaves a store that opens
    /// (holding more than the manifest says, never less); the deletion is then flushed.
    /// sled is log-structured: the deleted values (sealed) may stay in its files until it
    /// reuses the space.
    pub fn delete_room(&self, room_id: &[u8; 32], states: &[&str]) -> Result<usize> {
        let room_tag = self.keys.room_tag(room_id)?;
        let mut keys = Vec::new();
        for key in self.messages.scan_prefix(room_tag).keys() {
            keys.push(key.map_err(|e| self.db_error(e))?);
        }
        let had_room = self
            .rooms
            .contains_key(room_tag)
            .map_err(|e| self.db_error(e))?;
        let count = keys.len() as u64;
        self.message_count.fetch_sub(count, Ordering::SeqCst);
        self.write_counts((
            (self.rooms.len() as u64).saturating_sub(u64::from(had_room)),
            self.message_count.load(Ordering::SeqCst),
        ))?;
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key);
        }
        self.messages
            .apply_batch(batch)
            .map_err(|e| self.db_error(e))?;
        let mut waiting = sled::Batch::default();
        for key in self.outbox.scan_prefix(room_tag).keys() {
            waiting.remove(key.map_err(|e| self.db_error(e))?);
        }
        self.outbox
            .apply_batch(waiting)
            .map_err(|e| self.db_error(e))?;
        for name in states {
            let key = self.keys.tag(&[b"room-state", room_id, name.as_bytes()])?;
            self.meta.remove(key).map_err(|e| self.db_error(e))?;
        }
        self.rooms.remove(room_tag).map_err(|e| self.db_error(e))?;
        self.flush()?;
        Ok(count as usize)
    }

    /// Stores (or replaces) a small named record belonging to a room (e.g. the node's
    /// outbox of messages not yet confirmed by another member). Sealed like every value.
    pub fn put_room_state(&self, room_id: &[u8; 32], name: &str, value: &[u8]) -> Result<()> {
        let key = self.keys.tag(&[b"room-state", room_id, name.as_bytes()])?;
        let sealed = self.seal_value(TREE_META, &key, value)?;
        self.meta
            .insert(key, sealed)
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// Deletes a named record of a room, if stored.
    pub fn remove_room_state(&self, room_id: &[u8; 32], name: &str) -> Result<()> {
        let key = self.keys.tag(&[b"room-state", room_id, name.as_bytes()])?;
        self.meta.remove(key).map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// A named record of a room, if stored.
    pub fn room_state(&self, room_id: &[u8; 32], name: &str) -> Result<Option<Vec<u8>>> {
        let key = self.keys.tag(&[b"room-state", room_id, name.as_bytes()])?;
        let Some(sealed) = self.meta.get(key).map_err(|e| self.db_error(e))? else {
            return Ok(None);
        };
        Ok(Some(self.open_value(TREE_META, &key, &sealed)?.to_vec()))
    }

    /// The profile directory this store belongs to.
    pub fn home(&self) -> &std::path::Path {
        &self.home
    }

    /// Stores (or replaces) a small named record of the profile's own (e.g. the node's
    /// network settings), sealed like every value, and flushes it to disk.
    pub fn put_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        let key = self.keys.tag(&[b"setting", name.as_bytes()])?;
        let sealed = self.seal_value(TREE_META, &key, value)?;
        self.meta
            .insert(key, sealed)
            .map_err(|e| self.db_error(e))?;
        self.flush()
    }

    /// A named record of the profile, if stored.
    pub fn setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let key = self.keys.tag(&[b"setting", name.as_bytes()])?;
        let Some(sealed) = self.meta.get(key).map_err(|e| self.db_error(e))? else {
            return Ok(None);
        };
        Ok(Some(self.open_value(TREE_META, &key, &sealed)?.to_vec()))
    }

    /// Writes everything stored so far to disk. Call this before
    /// acknowledging anything to a user or a peer.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// A handle that flushes this store from another thread, e.g. a blocking task, so
    /// that the caller need not wait for the disk. [`Flusher::flush`] makes durable
    /// everything written to the store before the call began, like [`Store::flush`].
    pub fn flusher(&self) -> Flusher {
        Flusher {
            db: self.db.clone(),
            home: self.home.clone(),
        }
    }

    fn message_key(&self, room_id: &Id, message_id: &Id) -> Result<[u8; 2 * INDEX_TAG_LEN]> {
        self.room_key(room_id, self.keys.message_tag(room_id, message_id)?)
    }

    fn outbox_key(&self, room_id: &Id, message_id: &Id) -> Result<[u8; 2 * INDEX_TAG_LEN]> {
        self.room_key(room_id, self.keys.outbox_tag(room_id, message_id)?)
    }

    /// Room tag ‖ `tag`: a record's sled key under its room's prefix.
    fn room_key(&self, room_id: &Id, tag: IndexTag) -> Result<[u8; 2 * INDEX_TAG_LEN]> {
        let mut key = [0u8; 2 * INDEX_TAG_LEN];
        key[..INDEX_TAG_LEN].copy_from_slice(&self.keys.room_tag(room_id)?);
        key[INDEX_TAG_LEN..].copy_from_slice(&tag);
        Ok(key)
    }

    fn open_room(&self, key: &[u8], sealed: &[u8]) -> Result<(Id, RoomValue)> {
        let plaintext = self.open_value(TREE_ROOMS, key, sealed)?;
        let room_id = crypto::array_at::<ID_LEN>(&plaintext, 0)
            .ok_or_else(|| self.corrupt("a room record is too short"))?;
        let value = Zeroizing::new(plaintext.get(ID_LEN..).unwrap_or_default().to_vec());
        Ok((room_id, value))
    }

    /// Checks the sealed format record, writing it into a new database.
    fn check_format(&self) -> Result<()> {
        let stored = self.meta.get(FORMAT_KEY).map_err(|e| self.db_error(e))?;
        let Some(sealed) = stored else {
            if !self.rooms.is_empty() || !self.messages.is_empty() {
                return Err(self.corrupt("the database has records but no format record"));
            }
            return self.write_format();
        };
        let plaintext = self
            .open_value(TREE_META, FORMAT_KEY, &sealed)
            .map_err(|_| {
                self.corrupt(
                    "the database was not written with this profile's keys \
                 (was the profile re-created?)",
                )
            })?;
        let version = plaintext
            .strip_prefix(FORMAT_MAGIC)
            .and_then(|rest| <[u8; 4]>::try_from(rest).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| self.corrupt("the format record does not parse"))?;
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(self.corrupt(&format!(
                "database format version {version} is not supported \
                 (this build reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})"
            )));
        }
        if version < FORMAT_VERSION {
            return self.write_format();
        }
        Ok(())
    }

    /// Writes this build's format record, unpadded so that every version can read it
    /// (and an older build refuses the database by its version), and flushes it.
    fn write_format(&self) -> Result<()> {
        let mut plaintext = FORMAT_MAGIC.to_vec();
        plaintext.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        let sealed = self.seal_unpadded(TREE_META, FORMAT_KEY, &plaintext)?;
        self.meta
            .insert(FORMAT_KEY, sealed)
            .map_err(|e| self.db_error(e))?;
        self.flush()
    }

    /// Seals `value` padded ([`crypto::padded_len`]), so that its sealed length shows
    /// only its bucket: length (u32) ‖ value ‖ zeros, under [`AAD_PREFIX_PADDED`].
    fn seal_value(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<Vec<u8>> {
        let len = u32::try_from(value.len()).map_err(|_| StoreError::Crypto {
            reason: "a value too large to store",
        })?;
        let padded = crypto::padded_len(LENGTH_PREFIX + value.len());
        let mut plaintext = Zeroizing::new(Vec::with_capacity(padded));
        plaintext.extend_from_slice(&len.to_be_bytes());
        plaintext.extend_from_slice(value);
        plaintext.resize(padded, 0);
        self.seal_with(&aad(AAD_PREFIX_PADDED, tree, key), &plaintext)
    }

    /// Seals `value` as it is, under [`AAD_PREFIX`]: only the format record, which every
    /// version must be able to read to say which version wrote it.
    fn seal_unpadded(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<Vec<u8>> {
        self.seal_with(&aad(AAD_PREFIX, tree, key), value)
    }

    fn seal_with(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let nonce = crypto::random_nonce()?;
        let ciphertext = crypto::seal(&self.keys.seal, &nonce, aad, plaintext)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Opens a value sealed by [`Store::seal_value`] (padded) or sealed as it is (the
    /// format record, and values written before padding): the associated data tells
    /// which, and no value authenticates under both.
    fn open_value(&self, tree: &str, key: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < SEALED_OVERHEAD {
            return Err(self.corrupt(&format!("a record in `{tree}` is too short")));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = crypto::array_at::<NONCE_LEN>(nonce, 0)
            .ok_or_else(|| self.corrupt(&format!("a record in `{tree}` is too short")))?;
        let padded = aad(AAD_PREFIX_PADDED, tree, key);
        if let Some(plaintext) = crypto::open(&self.keys.seal, &nonce, &padded, ciphertext) {
            return unpad(&plaintext)
                .ok_or_else(|| self.corrupt(&format!("a record in `{tree}` is badly padded")));
        }
        crypto::open(
            &self.keys.seal,
            &nonce,
            &aad(AAD_PREFIX, tree, key),
            ciphertext,
        )
        .ok_or_else(|| {
            self.corrupt(&format!(
                "a record in `{tree}` failed authentication (altered or moved)"
            ))
        })
    }

    fn corrupt(&self, reason: &str) -> StoreError {
        StoreError::Corrupt {
            dir: self.home.clone(),
            reason: reason.to_owned(),
        }
    }

    fn db_error(&self, e: sled::Error) -> StoreError {
        runtime_error(&self.home, e)
    }
}

/// Flushes a [`Store`] from anywhere (see [`Store::flusher`]). It holds no keys.
#[derive(Clone)]
pub struct Flusher {
    db: sled::Db,
    home: PathBuf,
}

impl fmt::Debug for Flusher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flusher")
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

impl Flusher {
    /// Writes everything stored so far to disk (blocking; see [`Store::flush`]).
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map_err(|e| runtime_error(&self.home, e))?;
        Ok(())
    }
}

/// Associated data binding a value to its form (`prefix`), its tree and its sled key.
fn aad(prefix: &[u8], tree: &str, key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(prefix.len() + 1 + tree.len() + key.len());
    aad.extend_from_slice(prefix);
    // Tree names are short constants of this module.
    aad.push(u8::try_from(tree.len()).unwrap_or(u8::MAX));
    aad.extend_from_slice(tree.as_bytes());
    aad.extend_from_slice(key);
    aad
}

/// The value inside a padded plaintext (length ‖ value ‖ zeros); `None` unless the
/// length fits and only zeros follow the value.
fn unpad(plaintext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let len = u32::from_be_bytes(crypto::array_at(plaintext, 0)?);
    let end = LENGTH_PREFIX.checked_add(usize::try_from(len).ok()?)?;
    let value = plaintext.get(LENGTH_PREFIX..end)?;
    let padding = plaintext.get(end..)?;
    padding
        .iter()
        .all(|b| *b == 0)
        .then(|| Zeroizing::new(value.to_vec()))
}

/// Maps an error from opening sled.
/// The SHA-256 of a file's contents.
fn file_digest(path: &Path) -> std::io::Result<[u8; 32]> {
    use sha2::Digest;
    Ok(Sha256::digest(std::fs::read(path)?).into())
}

fn open_error(home: &Path, e: sled::Error) -> StoreError {
    match &e {
        // sled 0.34 reports a held lock as an `Io` error of kind `Other` whose
        // message starts "could not acquire lock on".
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::InUse {
                dir: home.to_path_buf(),
            }
        }
        sled::Error::Io(io) => StoreError::Database {
            dir: home.to_path_buf(),
            reason: format!("could not open the database: {io}"),
        },
        _ => runtime_error(home, e),
    }
}

/// Maps an error from a sled operation on an open database.
fn runtime_error(home: &Path, e: sled::Error) -> StoreError {
    let dir = home.to_path_buf();
    match e {
        sled::Error::Io(io) => StoreError::Database {
            dir,
            reason: io.to_string(),
        },
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => StoreError::Corrupt {
            dir,
            reason: format!("the database reports: {e}"),
        },
        other => StoreError::Database {
            dir,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const PASS: &str = "plum kettle harbour nine";

    fn setup() -> (tempfile::TempDir, Profile) {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile::create(dir.path(), PASS, "Alice").unwrap();
        (dir, profile)
    }

    /// Rooms as plain values, to compare.
    fn plain(rooms: Vec<(Id, Zeroizing<Vec<u8>>)>) -> Vec<(Id, Vec<u8>)> {
        rooms.into_iter().map(|(id, v)| (id, v.to_vec())).collect()
    }

    fn id(n: u8) -> [u8; 32] {
        let mut id = [0u8; 32];
        crypto::fill_random(&mut id).unwrap();
        id[0] = n;
        id
    }

    /// Deleting a room takes its record, messages and named records, nothing of another
    /// room's, and the store opens again afterwards (the manifest was lowered).
    #[test]
    fn a_deleted_room_leaves_nothing_and_the_store_reopens() {
        let (_dir, profile) = setup();
        let (gone, kept) = (id(1), id(2));
        {
            let store = Store::open(&profile).unwrap();
            for room in [&gone, &kept] {
                store.put_room(room, b"room").unwrap();
                for n in 0..3 {
                    store
                        .insert_message(room, &id(n), u64::from(n), b"m")
                        .unwrap();
                }
                store.put_room_state(room, "outbox", b"o").unwrap();
                store.add_to_outbox(room, &id(9)).unwrap();
            }
            store.write_manifest().unwrap();
            assert_eq!(store.delete_room(&gone, &["outbox"]).unwrap(), 3);
            assert!(store.outbox(&gone).unwrap().is_empty());
            assert_eq!(store.outbox(&kept).unwrap().len(), 1);
            assert_eq!(store.room(&gone).unwrap(), None);
            assert!(store.messages(&gone).unwrap().is_empty());
            assert_eq!(store.room_state(&gone, "outbox").unwrap(), None);
            assert_eq!(store.messages(&kept).unwrap().len(), 3);
            assert_eq!(store.room_state(&kept, "outbox").unwrap().unwrap(), b"o");
        }
        let store = Store::open(&profile).unwrap();
        assert_eq!(store.rooms().unwrap().len(), 1);
        assert_eq!(store.messages(&kept).unwrap().len(), 3);
        store.write_manifest().unwrap();
    }

    /// Writing the manifest, and deleting a room (which lowers it first), rename the new
    /// manifest into place and then sync the directory, so that the new name survives a
    /// crash on every file system.
    #[test]
    fn the_manifest_s_directory_is_synced_after_each_rename() {
        let (dir, profile) = setup();
        let store = Store::open(&profile).unwrap();
        let room = id(1);
        store.put_room(&room, b"room").unwrap();
        let syncs = crate::files::tests::dir_syncs_during(|| store.write_manifest().unwrap());
        assert_eq!(syncs, 1);
        let syncs = crate::files::tests::dir_syncs_during(|| {
            store.delete_room(&room, &[]).unwrap();
        });
        assert_eq!(syncs, 1);
        // Only the database and the profile's own files are left: no temporary manifest.
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [DB_DIR, MANIFEST_FILE, crate::profile::PROFILE_FILE]);
    }

    /// On disk a message's sealed value shows its length only to within a bucket:
    /// messages of 100 and 101 bytes seal to the same length, and so do room records
    /// that differ by a byte.
    #[test]
    fn sealed_messages_of_100_and_101_bytes_have_the_same_length() {
        let (_dir, profile) = setup();
        let store = Store::open(&profile).unwrap();
        let room = id(1);
        let sealed_len = |text_len: usize| {
            let message = id(2);
            let text = vec![b'x'; text_len];
            assert!(store.insert_message(&room, &message, 0, &text).unwrap());
            let key = store.message_key(&room, &message).unwrap();
            let len = store.messages.get(key).unwrap().unwrap().len();
            assert_eq!(store.message(&room, &message).unwrap().unwrap(), text);
            len
        };
        assert_eq!(sealed_len(100), sealed_len(101));
        // Longer messages: a few buckets, never shorter than the text.
        let lengths: std::collections::BTreeSet<usize> = (1000..1100).map(sealed_len).collect();
        assert!(lengths.len() <= 2, "{lengths:?}");
        assert!(lengths.iter().all(|len| *len > 1100));

        let (a, b) = (id(3), id(4));
        store.put_room(&a, &[7; 600]).unwrap();
        store.put_room(&b, &[7; 601]).unwrap();
        let room_len = |r: &Id| {
            let key = store.keys.room_tag(r).unwrap();
            store.rooms.get(key).unwrap().unwrap().len()
        };
        assert_eq!(room_len(&a), room_len(&b));
    }

    /// A database written before values were padded (format version 1, every value
    /// sealed as it was) opens: its values read as they were, its format record is
    /// raised, and what is written from then on is padded.
    #[test]
    fn values_sealed_before_padding_still_open() {
        let (_dir, profile) = setup();
        let (room, message) = (id(1), id(2));
        {
            let store = Store::open(&profile).unwrap();
            let mut format = FORMAT_MAGIC.to_vec();
            format.extend_from_slice(&1u32.to_be_bytes());
            let sealed = store.seal_unpadded(TREE_META, FORMAT_KEY, &format).unwrap();
            store.meta.insert(FORMAT_KEY, sealed).unwrap();
            // A room and a message as the earlier build sealed them.
            let key = store.keys.room_tag(&room).unwrap();
            let plaintext = [&room[..], b"old room"].concat();
            let sealed = store.seal_unpadded(TREE_ROOMS, &key, &plaintext).unwrap();
            store.rooms.insert(key, sealed).unwrap();
            let key = store.message_key(&room, &message).unwrap();
            let plaintext = [&5u64.to_be_bytes()[..], &message, b"old message"].concat();
            let sealed = store
                .seal_unpadded(TREE_MESSAGES, &key, &plaintext)
                .unwrap();
            store.messages.insert(key, sealed).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(&profile).unwrap();
        assert_eq!(
            plain(store.rooms().unwrap()),
            [(room, b"old room".to_vec())]
        );
        assert_eq!(store.messages(&room).unwrap(), [b"old message".to_vec()]);
        let format = store.meta.get(FORMAT_KEY).unwrap().unwrap();
        let format = store.open_value(TREE_META, FORMAT_KEY, &format).unwrap();
        assert_eq!(format[FORMAT_MAGIC.len()..], FORMAT_VERSION.to_be_bytes());
        store.put_room(&room, b"new room").unwrap();
        let sealed = store
            .rooms
            .get(store.keys.room_tag(&room).unwrap())
            .unwrap();
        assert_eq!(sealed.unwrap().len(), SEALED_OVERHEAD + crypto::PAD_MIN);
        assert_eq!(store.room(&room).unwrap().unwrap().as_slice(), b"new room");
    }

    /// Room values (they hold the rooms' keys) come out of the store in buffers that
    /// are wiped when dropped.
    #[test]
    fn room_values_come_out_in_buffers_wiped_on_drop() {
        let (_dir, profile) = setup();
        let store = Store::open(&profile).unwrap();
        let room = id(1);
        store.put_room(&room, b"keys").unwrap();
        let one: Option<Zeroizing<Vec<u8>>> = store.room(&room).unwrap();
        let all: Vec<(Id, Zeroizing<Vec<u8>>)> = store.rooms().unwrap();
        assert_eq!(one.unwrap().as_slice(), b"keys");
        assert_eq!(all[0].1.as_slice(), b"keys");
    }

    /// The outbox holds one record per waiting message: recording or clearing one writes
    /// that one alone; it survives a reopen; rooms keep their own; a record moved under
    /// another key is refused.
    #[test]
    fn the_outbox_keeps_one_record_per_waiting_message() {
        let (_dir, profile) = setup();
        let (room, other) = (id(1), id(2));
        let waiting: Vec<[u8; 32]> = (10..15).map(id).collect();
        {
            let store = Store::open(&profile).unwrap();
            for m in &waiting {
                store.add_to_outbox(&room, m).unwrap();
            }
            store.add_to_outbox(&other, &waiting[0]).unwrap();
            // Again: still one record.
            store.add_to_outbox(&room, &waiting[0]).unwrap();
            store
                .remove_from_outbox(&room, &[waiting[1], waiting[3], id(99)])
                .unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(&profile).unwrap();
        let mut left = store.outbox(&room).unwrap();
        left.sort_unstable();
        let mut expected = vec![waiting[0], waiting[2], waiting[4]];
        expected.sort_unstable();
        assert_eq!(left, expected);
        assert_eq!(store.outbox(&other).unwrap(), [waiting[0]]);
        assert!(store.outbox(&id(3)).unwrap().is_empty());
        // An outbox record's key does not point at its message's record.
        let (outbox_key, message_key) = (
            store.outbox_key(&room, &waiting[0]).unwrap(),
            store.message_key(&room, &waiting[0]).unwrap(),
        );
        assert_eq!(outbox_key[..INDEX_TAG_LEN], message_key[..INDEX_TAG_LEN]);
        assert_ne!(outbox_key[INDEX_TAG_LEN..], message_key[INDEX_TAG_LEN..]);
        // A record copied under another message's key is refused.
        let key = store.outbox_key(&room, &waiting[0]).unwrap();
        let sealed = store.outbox.get(key).unwrap().unwrap();
        let other_key = store.outbox_key(&room, &id(20)).unwrap();
        store.outbox.insert(other_key, sealed).unwrap();
        assert!(matches!(
            store.outbox(&room),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn the_manifest_catches_lost_rooms_and_messages() {
        let (dir, profile) = setup();
        let room = id(1);
        {
            let store = Store::open(&profile).unwrap();
            store.put_room(&room, b"room").unwrap();
            let ids: Vec<[u8; 32]> = (0..3).map(id).collect();
            for (n, m) in (0u64..).zip(&ids) {
                store.insert_message(&room, m, n, b"m").unwrap();
            }
            // A duplicate is not counted.
            assert!(!store.insert_message(&room, &ids[0], 0, b"m").unwrap());
            store.write_manifest().unwrap();
        }
        {
            // The count carries over a restart: 4 recorded now.
            let store = Store::open(&profile).unwrap();
            store.insert_message(&room, &id(9), 9, b"later").unwrap();
            store.write_manifest().unwrap();
            store.insert_message(&room, &id(10), 10, b"later").unwrap();
            store.flush().unwrap();
        }
        // More data than the manifest recorded is fine (written after it).
        drop(Store::open(&profile).unwrap());
        // Lose messages behind the store's back, as sled does with a damaged log.
        {
            let db = sled::open(dir.path().join(DB_DIR)).unwrap();
            db.open_tree(TREE_MESSAGES).unwrap().clear().unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(&profile).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("0 of the 4 messages"), "{err}");
        // A whole database gone (the manifest remains) is refused too.
        std::fs::remove_dir_all(dir.path().join(DB_DIR)).unwrap();
        assert!(matches!(
            Store::open(&profile),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn single_messages_and_room_state() {
        let (_dir, profile) = setup();
        let store = Store::open(&profile).unwrap();
        let (room, other, nine) = (id(1), id(2), id(9));
        assert_eq!(store.message(&room, &nine).unwrap(), None);
        store.insert_message(&room, &nine, 5, b"nine").unwrap();
        assert_eq!(
            store.message(&room, &nine).unwrap().as_deref(),
            Some(&b"nine"[..])
        );
        assert_eq!(store.message(&other, &nine).unwrap(), None);
        assert_eq!(store.room_state(&room, "outbox").unwrap(), None);
        store.put_room_state(&room, "outbox", b"ids").unwrap();
        store
            .put_room_state(&room, "outbox", b"ids, later")
            .unwrap();
        assert_eq!(
            store.room_state(&room, "outbox").unwrap().as_deref(),
            Some(&b"ids, later"[..])
        );
        assert_eq!(store.room_state(&other, "outbox").unwrap(), None);
        // Room state does not show up as a room.
        assert!(store.rooms().unwrap().is_empty());
    }

    #[test]
    fn rooms_roundtrip() {
        let (_dir, profile) = setup();
        let store = Store::open(&profile).unwrap();
        let (a, b) = (id(1), id(2));
        assert_eq!(store.room(&a).unwrap(), None);
        assert!(store.rooms().unwrap().is_empty());
        store.put_room(&a, b"room a").unwrap();
        store.put_room(&b, b"").unwrap();
        assert_eq!(
            store.room(&a).unwrap().as_deref().map(Vec::as_slice),
            Some(&b"room a"[..])
        );
        assert_eq!(
            store.room(&b).unwrap().as_deref().map(Vec::as_slice),
            Some(&b""[..])
        );
        store.put_room(&a, b"room a, renamed").unwrap();
        assert_eq!(
            plain(store.rooms().unwrap()),
            vec![(a, b"room a, renamed".to_vec()), (b, Vec::new())]
        );
    }

    #[test]
    fn messages_ordered_and_deduplicated() {
        let (_dir, profile) = setup();
        let store = Store::open(&profile).unwrap();
        let (room, other) = (id(1), id(2));
        // Same sort key: ordered by message id.
        let (m_low, m_high) = (id(0x10), id(0xf0));
        let m_first = id(0x80);
        let m_last = id(0x00);

        assert!(store.insert_message(&room, &m_high, 5, b"c").unwrap());
        assert!(
            store
                .insert_message(&room, &m_last, u64::MAX, b"d")
                .unwrap()
        );
        assert!(store.insert_message(&room, &m_low, 5, b"b").unwrap());
        assert!(store.insert_message(&room, &m_first, 0, b"a").unwrap());
        // The same message id in another room is another message.
        assert!(store.insert_message(&other, &m_low, 1, b"x").unwrap());

        // Replays write nothing, whatever they carry.
        assert!(!store.insert_message(&room, &m_low, 5, b"b").unwrap());
        assert!(!store.insert_message(&room, &m_low, 1, b"forged").unwrap());

        assert_eq!(
            store.messages(&room).unwrap(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]
        );
        assert_eq!(store.messages(&other).unwrap(), vec![b"x".to_vec()]);
        assert!(store.messages(&id(3)).unwrap().is_empty());
        assert!(store.has_message(&room, &m_low).unwrap());
        assert!(store.has_message(&other, &m_low).unwrap());
        assert!(!store.has_message(&other, &m_high).unwrap());
    }

    #[test]
    fn many_messages_sorted() {
        let (_dir, profile) = setup();
        let store = Store::open(&profile).unwrap();
        let room = id(1);
        let mut expected = Vec::new();
        for i in 0..200u64 {
            let sort_key = (i * 7919) % 200; // a permutation of 0..200
            let value = format!("message {sort_key:03}").into_bytes();
            assert!(
                store
                    .insert_message(&room, &id(0), sort_key, &value)
                    .unwrap()
            );
            expected.push(value);
        }
        expected.sort();
        assert_eq!(store.messages(&room).unwrap(), expected);
        // Mapped as read, in the same order, leaving out what the map drops.
        let sevens = store
            .latest_messages_mapped(&room, usize::MAX, |value| {
                value.ends_with(b"7").then(|| value.to_vec())
            })
            .unwrap()
            .0;
        let expected_sevens: Vec<Vec<u8>> = expected
            .iter()
            .filter(|v| v.ends_with(b"7"))
            .cloned()
            .collect();
        assert_eq!(sevens, expected_sevens);
        assert_eq!(sevens.len(), 20);
        // The latest only: the end of the same order, and how many came before.
        let (latest, earlier) = store
            .latest_messages_mapped(&room, 3, |value| Some(value.to_vec()))
            .unwrap();
        assert_eq!(latest, expected[197..]);
        assert_eq!(earlier, 197);
        let (latest_sevens, earlier) = store
            .latest_messages_mapped(&room, 2, |value| {
                value.ends_with(b"7").then(|| value.to_vec())
            })
            .unwrap();
        assert_eq!(latest_sevens, expected_sevens[18..]);
        assert_eq!(earlier, 18);
        let (all, earlier) = store
            .latest_messages_mapped(&room, 500, |value| Some(value.to_vec()))
            .unwrap();
        assert_eq!((all, earlier), (expected.clone(), 0));
        // Visited one at a time: the same messages, in no particular order.
        let mut visited = Vec::new();
        store
            .for_each_message(&room, |_, _, value| visited.push(value.to_vec()))
            .unwrap();
        visited.sort();
        assert_eq!(visited, expected);
        store
            .for_each_message(&id(2), |_, _, _| panic!("another room's message"))
            .unwrap();
    }

    #[test]
    fn reopen_sees_same_data() {
        let (dir, profile) = setup();
        let (room, msg) = (id(1), id(2));
        {
            let store = Store::open(&profile).unwrap();
            store.put_room(&room, b"the room").unwrap();
            assert!(store.insert_message(&room, &msg, 1, b"hello").unwrap());
            store.flush().unwrap();
        }
        drop(profile);
        let profile = Profile::unlock(dir.path(), PASS).unwrap();
        let store = Store::open(&profile).unwrap();
        assert_eq!(
            plain(store.rooms().unwrap()),
            vec![(room, b"the room".to_vec())]
        );
        assert_eq!(store.messages(&room).unwrap(), vec![b"hello".to_vec()]);
        assert!(!store.insert_message(&room, &msg, 1, b"hello").unwrap());
    }

    /// A store whose profile directory was deleted and created again (someone starting
    /// over while an old node still runs) writes no manifest into the new one, which
    /// would be sealed under the old key and make the new profile unopenable.
    #[test]
    fn no_manifest_goes_into_a_directory_that_replaced_the_store_s() {
        let (dir, profile) = setup();
        let old = Store::open(&profile).unwrap();
        old.write_manifest().unwrap();
        std::fs::remove_dir_all(dir.path()).unwrap();
        std::fs::create_dir(dir.path()).unwrap();
        let new_profile = Profile::create(dir.path(), PASS, "Alice").unwrap();
        drop(Store::open(&new_profile).unwrap());

        let err = old.write_manifest().unwrap_err();
        assert!(err.to_string().contains("deleted or replaced"), "{err}");
        assert!(!dir.path().join(MANIFEST_FILE).exists());
        drop(old);
        Store::open(&new_profile).unwrap();
    }

    #[test]
    fn second_open_is_in_use() {
        let (_dir, profile) = setup();
        let store = Store::open(&profile).unwrap();
        let err = Store::open(&profile).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
        assert!(
            err.to_string()
                .ends_with("is in use by another running node"),
            "{err}"
        );
        drop(store);
        Store::open(&profile).unwrap();
    }

    /// A store whose lock is released shortly after (as when sled's background threads
    /// from a store just closed in this process still hold the file) opens, rather than
    /// being reported as in use by another node.
    #[test]
    fn a_lock_released_shortly_after_is_waited_for() {
        let (dir, profile) = setup();
        drop(Store::open(&profile).unwrap());
        // The lingering holder: the same database opened directly, closed 200 ms later.
        let db = sled::open(dir.path().join(DB_DIR)).unwrap();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(db);
        });
        let store = Store::open(&profile);
        holder.join().unwrap();
        assert!(store.is_ok(), "{:?}", store.err());
    }

    #[test]
    fn values_cannot_be_swapped_between_keys() {
        let (_dir, profile) = setup();
        let store = Store::open(&profile).unwrap();
        let (a, b) = (id(1), id(2));
        store.put_room(&a, b"room a").unwrap();
        store.put_room(&b, b"room b").unwrap();
        let (ka, kb) = (
            store.keys.room_tag(&a).unwrap(),
            store.keys.room_tag(&b).unwrap(),
        );
        let sealed_a = store.rooms.get(ka).unwrap().unwrap();
        store.rooms.insert(kb, sealed_a.clone()).unwrap();
        assert!(matches!(store.room(&b), Err(StoreError::Corrupt { .. })));
        assert!(matches!(store.rooms(), Err(StoreError::Corrupt { .. })));

        // A room value moved into the messages tree under a message key.
        let (room, msg) = (id(3), id(4));
        assert!(store.insert_message(&room, &msg, 0, b"m").unwrap());
        let key = store.message_key(&room, &msg).unwrap();
        store.messages.insert(key, sealed_a).unwrap();
        assert!(matches!(
            store.messages(&room),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn tampered_value_is_corrupt_not_panic() {
        let (_dir, profile) = setup();
        let store = Store::open(&profile).unwrap();
        let room = id(1);
        store.put_room(&room, b"value").unwrap();
        let key = store.keys.room_tag(&room).unwrap();
        for bad in [Vec::new(), vec![0u8; 10], vec![0u8; SEALED_OVERHEAD], {
            let mut v = store.rooms.get(key).unwrap().unwrap().to_vec();
            v[NONCE_LEN] ^= 1;
            v
        }] {
            store.rooms.insert(key, bad).unwrap();
            let err = store.room(&room).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        }
    }

    #[test]
    fn store_of_another_profile_is_rejected() {
        let (dir_a, profile_a) = setup();
        {
            let store = Store::open(&profile_a).unwrap();
            store.put_room(&id(1), b"a").unwrap();
            store.flush().unwrap();
        }
        // The profile is re-created (new storage key) next to the old db.
        fs::remove_file(dir_a.path().join("profile")).unwrap();
        drop(profile_a);
        let profile_b = Profile::create(dir_a.path(), PASS, "Bob").unwrap();
        let err = Store::open(&profile_b).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("this profile's keys"), "{err}");
    }

    #[test]
    fn incompatible_format_version_is_rejected() {
        let (_dir, profile) = setup();
        {
            let store = Store::open(&profile).unwrap();
            let mut plaintext = FORMAT_MAGIC.to_vec();
            plaintext.extend_from_slice(&99u32.to_be_bytes());
            let sealed = store.seal_value(TREE_META, FORMAT_KEY, &plaintext).unwrap();
            store.meta.insert(FORMAT_KEY, sealed).unwrap();
            store.flush().unwrap();
        }
        let err = Store::open(&profile).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("version 99"), "{err}");
    }

    #[test]
    fn missing_format_record_with_data_is_rejected() {
        let (_dir, profile) = setup();
        {
            let store = Store::open(&profile).unwrap();
            store.put_room(&id(1), b"a").unwrap();
            store.meta.remove(FORMAT_KEY).unwrap();
            store.flush().unwrap();
        }
        let err = Store::open(&profile).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn garbage_database_is_an_error_not_a_panic() {
        let (dir, profile) = setup();
        let db = dir.path().join(DB_DIR);
        fs::create_dir(&db).unwrap();
        fs::write(db.join("conf"), b"this is not a sled config file").unwrap();
        fs::write(db.join("db"), vec![0xa5; 4096]).unwrap();
        let result = std::panic::catch_unwind(|| Store::open(&profile).map(|_| ()));
        let result = result.expect("opening a damaged database must not panic");
        assert!(result.is_err(), "{result:?}");
    }

    #[test]
    fn debug_prints_no_keys() {
        let (_dir, profile) = setup();
        let store = Store::open(&profile).unwrap();
        let debug = format!("{store:?}");
        assert!(debug.starts_with("Store"), "{debug}");
        for key in [&store.keys.seal, &store.keys.index] {
            let head = format!("{}, {}, {}", key[0], key[1], key[2]);
            assert!(!debug.contains(&head), "{debug}");
        }
    }

    /// Every file under `dir`, recursively, as bytes.
    fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(all_files(&path));
            } else {
                let bytes = fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
        out
    }

    #[test]
    fn no_plaintext_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let name_marker = "PROFILE-NAME-MARKER-4b1d";
        let profile = Profile::create(dir.path(), PASS, name_marker).unwrap();
        let room_marker = "ROOM-VALUE-MARKER-9c2e";
        let message_marker = "MESSAGE-MARKER-31f7";
        let (room, other_room) = (id(1), id(2));
        let mut message_ids = Vec::new();
        {
            let store = Store::open(&profile).unwrap();
            store
                .put_room(&room, format!("{room_marker} Monday group").as_bytes())
                .unwrap();
            store.put_room(&other_room, room_marker.as_bytes()).unwrap();
            for i in 0..50u64 {
                let message_id = id(3);
                let text = format!("{message_marker} number {i}, some casework");
                assert!(
                    store
                        .insert_message(&room, &message_id, i, text.as_bytes())
                        .unwrap()
                );
                message_ids.push(message_id);
            }
            // The markers are really stored (so the test below is meaningful).
            assert_eq!(store.messages(&room).unwrap().len(), 50);
            store.flush().unwrap();
        }
        let secrets = [*profile.device_secret(), *profile.storage_key()];
        drop(profile);

        let files = all_files(dir.path());
        assert!(files.len() >= 2, "{files:?}");
        let total: usize = files.iter().map(|(_, b)| b.len()).sum();
        assert!(total > 50 * message_marker.len(), "data must be on disk");

        let mut needles: Vec<(String, Vec<u8>)> = vec![
            ("profile name".into(), name_marker.as_bytes().to_vec()),
            ("room value".into(), room_marker.as_bytes().to_vec()),
            ("message".into(), message_marker.as_bytes().to_vec()),
            ("passphrase".into(), PASS.as_bytes().to_vec()),
            ("room id".into(), room.to_vec()),
            ("other room id".into(), other_room.to_vec()),
            // Also any 16-byte window of an id (e.g. a truncated prefix).
            ("room id prefix".into(), room[..16].to_vec()),
            ("room id suffix".into(), room[16..].to_vec()),
        ];
        for (i, message_id) in message_ids.iter().enumerate() {
            needles.push((format!("message id {i}"), message_id[..16].to_vec()));
            needles.push((format!("message id {i} tail"), message_id[16..].to_vec()));
        }
        for secret in secrets {
            needles.push(("profile secret".into(), secret[..16].to_vec()));
        }
        for (path, bytes) in &files {
            for (what, needle) in &needles {
                let found = bytes.windows(needle.len()).any(|w| w == needle.as_slice());
                assert!(!found, "{what} found in clear in {}", path.display());
            }
        }
    }

    /// Run by [`crash_recovery`] in a child process: writes, flushes, writes
    /// more without flushing, and exits without running any destructor.
    #[test]
    #[ignore = "helper: run as a child process by crash_recovery"]
    fn crash_child() {
        let Some(home) = std::env::var_os("CONFER_STORE_CRASH_HOME") else {
            return;
        };
        let profile = Profile::unlock(Path::new(&home), PASS).unwrap();
        let store = Store::open(&profile).unwrap();
        let room = [7u8; 32];
        store.put_room(&room, b"crash room").unwrap();
        for i in 0..100u64 {
            let mut message_id = [0u8; 32];
            message_id[..8].copy_from_slice(&i.to_be_bytes());
            assert!(
                store
                    .insert_message(&room, &message_id, i, b"flushed")
                    .unwrap()
            );
        }
        store.flush().unwrap();
        for i in 100..200u64 {
            let mut message_id = [0u8; 32];
            message_id[..8].copy_from_slice(&i.to_be_bytes());
            assert!(
                store
                    .insert_message(&room, &message_id, i, b"unflushed")
                    .unwrap()
            );
        }
        std::process::exit(17);
    }

    #[test]
    fn crash_recovery() {
        let (dir, profile) = setup();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "db::tests::crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CONFER_STORE_CRASH_HOME", dir.path())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(
            status.code(),
            Some(17),
            "child did not reach its crash point"
        );

        // The lock died with the process; everything flushed is there, and
        // whatever else survived decrypts and is in order.
        let store = Store::open(&profile).unwrap();
        let room = [7u8; 32];
        assert_eq!(
            store.room(&room).unwrap().as_deref().map(Vec::as_slice),
            Some(&b"crash room"[..])
        );
        let messages = store.messages(&room).unwrap();
        assert!(messages.len() >= 100, "{} messages", messages.len());
        assert!(messages[..100].iter().all(|m| m == b"flushed"));
        assert!(messages[100..].iter().all(|m| m == b"unflushed"));
        for i in 0..100u64 {
            let mut message_id = [0u8; 32];
            message_id[..8].copy_from_slice(&i.to_be_bytes());
            assert!(store.has_message(&room, &message_id).unwrap());
        }
    }
}
