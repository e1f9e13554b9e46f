//! The passphrase-protected profile file, `<home>/profile`.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! offset len  field
//!      0   8  magic "CONFERPF"
//!      8   2  format version (1)
//!     10   4  Argon2id m_cost (KiB)
//!     14   4  Argon2id t_cost
//!     18   4  Argon2id p_cost
//!     22  16  salt
//!     38  24  XChaCha20-Poly1305 nonce
//!     62   …  ciphertext ‖ 16-byte tag of:
//!               device_secret (32) ‖ storage_key (32) ‖ name length (2) ‖ name (UTF-8)
//! ```
//!
//! The 62-byte header is the associated data of the ciphertext. The key is
//! Argon2id(passphrase, salt) with the parameters from the header: new profiles get
//! m = 64 MiB, t = 3, p = 1; a profile written with other parameters (within the bounds
//! checked on reading) still opens, and gets the current ones when its passphrase is
//! changed ([`Profile::change_passphrase`], which seals the same secrets anew).
//!
//! A new passphrase must have at least [`MIN_PASSPHRASE_CHARS`] characters and be hard
//! to guess by the zxcvbn strength estimator ([`check_passphrase`]).

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::crypto::{self, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::files::{self, create_private_dir, io_error};
use crate::{Result, Store, StoreError};

pub(crate) const PROFILE_FILE: &str = "profile";
const MAGIC: [u8; 8] = *b"CONFERPF";
const FORMAT_VERSION: u16 = 1;
const SALT_LEN: usize = 16;
const HEADER_LEN: usize = 8 + 2 + 4 + 4 + 4 + SALT_LEN + NONCE_LEN;

/// Argon2id memory cost for new profiles, in KiB: 64 MiB (RFC 9106's second recommended
/// setting). The key is derived once per unlock, at the start of `confer node run`, so
/// a fraction of a second is cheap for the owner and costly for a guesser.
const DEFAULT_M_COST: u32 = 64 * 1024;
/// Argon2id passes for new profiles (RFC 9106: 3 with 64 MiB).
const DEFAULT_T_COST: u32 = 3;
/// Argon2id lanes for new profiles. This build computes lanes one after another, so more
/// lanes would cost the owner as much and give a guesser parallelism for free.
const DEFAULT_P_COST: u32 = 1;

// Bounds accepted when reading a header. The upper bounds keep a tampered
// header from making unlock allocate absurd memory or spin for hours; the
// lower memory bound is OWASP's weakest recommended configuration.
const MIN_M_COST: u32 = 7 * 1024;
const MAX_M_COST: u32 = 1024 * 1024; // 1 GiB
const MIN_T_COST: u32 = 1;
const MAX_T_COST: u32 = 16;
const MIN_P_COST: u32 = 1;
const MAX_P_COST: u32 = 16;

/// The longest profile name accepted, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 1024;

const SECRETS_FIXED_LEN: usize = KEY_LEN + KEY_LEN + 2;
const MIN_FILE_LEN: usize = HEADER_LEN + SECRETS_FIXED_LEN + TAG_LEN;
const MAX_FILE_LEN: usize = MIN_FILE_LEN + MAX_NAME_LEN;

/// The secrets kept in the encrypted part of the profile file.
///
/// Zeroized on drop; its `Debug` output shows none of the fields.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ProfileSecrets {
    /// Long-term device secret, from which the node derives its identities.
    pub device_secret: [u8; 32],
    /// Root key of the local database; see the crate docs for what is
    /// derived from it.
    pub storage_key: [u8; 32],
    /// The name the user gave this profile.
    pub name: String,
}

impl fmt::Debug for ProfileSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileSecrets")
            .field("device_secret", &"<redacted>")
            .field("storage_key", &"<redacted>")
            .field("name", &"<redacted>")
            .finish()
    }
}

impl ProfileSecrets {
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(SECRETS_FIXED_LEN + self.name.len()));
        out.extend_from_slice(&self.device_secret);
        out.extend_from_slice(&self.storage_key);
        // `name.len() <= MAX_NAME_LEN < u16::MAX` is checked by `create`.
        let len = u16::try_from(self.name.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let device_secret = crypto::array_at::<KEY_LEN>(bytes, 0)?;
        let storage_key = crypto::array_at::<KEY_LEN>(bytes, KEY_LEN)?;
        let len = u16::from_be_bytes(crypto::array_at::<2>(bytes, 2 * KEY_LEN)?);
        let name = bytes.get(SECRETS_FIXED_LEN..)?;
        if name.len() != usize::from(len) || name.len() > MAX_NAME_LEN {
            return None;
        }
        let name = std::str::from_utf8(name).ok()?.to_owned();
        Some(Self {
            device_secret,
            storage_key,
            name,
        })
    }
}

/// The clear header of the profile file.
struct Header {
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        out[10..14].copy_from_slice(&self.m_cost.to_be_bytes());
        out[14..18].copy_from_slice(&self.t_cost.to_be_bytes());
        out[18..22].copy_from_slice(&self.p_cost.to_be_bytes());
        out[22..38].copy_from_slice(&self.salt);
        out[38..62].copy_from_slice(&self.nonce);
        out
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let short = || "the profile file is truncated".to_owned();
        let magic = crypto::array_at::<8>(bytes, 0).ok_or_else(short)?;
        if magic != MAGIC {
            return Err("the profile file is not a Confer profile".to_owned());
        }
        let version = u16::from_be_bytes(crypto::array_at(bytes, 8).ok_or_else(short)?);
        if version != FORMAT_VERSION {
            return Err(format!(
                "profile format version {version} is not supported (this build reads version {FORMAT_VERSION})"
            ));
        }
        let m_cost = u32::from_be_bytes(crypto::array_at(bytes, 10).ok_or_else(short)?);
        let t_cost = u32::from_be_bytes(crypto::array_at(bytes, 14).ok_or_else(short)?);
        let p_cost = u32::from_be_bytes(crypto::array_at(bytes, 18).ok_or_else(short)?);
        let salt = crypto::array_at(bytes, 22).ok_or_else(short)?;
        let nonce = crypto::array_at(bytes, 38).ok_or_else(short)?;
        let in_range = (MIN_M_COST..=MAX_M_COST).contains(&m_cost)
            && (MIN_T_COST..=MAX_T_COST).contains(&t_cost)
            && (MIN_P_COST..=MAX_P_COST).contains(&p_cost);
        if !in_range {
            return Err(format!(
                "the profile's key-derivation parameters (m={m_cost} KiB, t={t_cost}, p={p_cost}) are out of range"
            ));
        }
        Ok(Self {
            m_cost,
            t_cost,
            p_cost,
            salt,
            nonce,
        })
    }

    /// Argon2id(passphrase, salt) with this header's parameters.
    fn derive_key(&self, passphrase: &str) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        let params =
            Params::new(self.m_cost, self.t_cost, self.p_cost, Some(KEY_LEN)).map_err(|_| {
                StoreError::Crypto {
                    reason: "Argon2 parameters",
                }
            })?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.as_bytes(), &self.salt, key.as_mut_slice())
            .map_err(|_| StoreError::Crypto {
                reason: "Argon2 key derivation",
            })?;
        Ok(key)
    }
}

/// The Argon2id parameters written into a profile's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KdfParams {
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
}

impl KdfParams {
    /// What new profiles and changed passphrases get.
    const DEFAULT: Self = Self {
        m_cost: DEFAULT_M_COST,
        t_cost: DEFAULT_T_COST,
        p_cost: DEFAULT_P_COST,
    };
}

/// The whole profile file for `secrets` under `passphrase`: a header with `params`, a
/// fresh salt and a fresh nonce, then the sealed secrets.
fn seal_secrets(secrets: &ProfileSecrets, passphrase: &str, params: KdfParams) -> Result<Vec<u8>> {
    let mut salt = [0u8; SALT_LEN];
    crypto::fill_random(&mut salt)?;
    let header = Header {
        m_cost: params.m_cost,
        t_cost: params.t_cost,
        p_cost: params.p_cost,
        salt,
        nonce: crypto::random_nonce()?,
    };
    let key = header.derive_key(passphrase)?;
    let header_bytes = header.encode();
    let ciphertext = crypto::seal(&key, &header.nonce, &header_bytes, &secrets.encode())?;
    let mut contents = Vec::with_capacity(HEADER_LEN + ciphertext.len());
    contents.extend_from_slice(&header_bytes);
    contents.extend_from_slice(&ciphertext);
    Ok(contents)
}

/// An unlocked profile: where it lives and its secrets.
pub struct Profile {
    home: PathBuf,
    secrets: ProfileSecrets,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("home", &self.home)
            .field("secrets", &self.secrets)
            .finish()
    }
}

/// The fewest characters a new profile's passphrase may have. The profile and the store
/// are encrypted under a key derived from it with Argon2id, which slows guessing but
/// cannot save a short passphrase from an attacker who copies the disk.
pub const MIN_PASSPHRASE_CHARS: usize = 10;

/// The fewest guesses, as a power of ten, that the strength estimator (zxcvbn) must
/// expect an attacker to need: its top band, "very unguessable". At 10^10 guesses,
/// each an Argon2id of 64 MiB, a copied profile holds out for years against one
/// computer and for days against a large rented cluster; most passphrases of three or
/// four unrelated words are far above it.
const MIN_GUESSES_LOG10: f64 = 10.0;

/// Whether `passphrase` may protect a new profile (or replace a profile's passphrase):
/// at least [`MIN_PASSPHRASE_CHARS`] characters, and not easy to guess by the strength
/// estimator, which knows common passwords, words, names, dates, keyboard patterns and
/// repeats, and is told the profile's `name`. Callers that ask for a passphrase twice
/// can check after the first.
pub fn check_passphrase(passphrase: &str, name: &str) -> Result<()> {
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(StoreError::ShortPassphrase {
            min: MIN_PASSPHRASE_CHARS,
        });
    }
    let estimate = zxcvbn::zxcvbn(passphrase, &[name, "confer"]);
    if estimate.guesses_log10() >= MIN_GUESSES_LOG10 {
        return Ok(());
    }
    // The estimator's warning, as part of one sentence: "this is a very common
    // password" rather than "This is a very common password.".
    let warning = estimate
        .feedback()
        .and_then(zxcvbn::feedback::Feedback::warning)
        .map(|warning| {
            let text = warning.to_string();
            let text = text.trim_end_matches('.');
            let mut chars = text.chars();
            chars
                .next()
                .map(|first| first.to_lowercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        });
    Err(StoreError::WeakPassphrase {
        reason: warning.unwrap_or_else(|| {
            "a computer trying likely passphrases would find it too soon".to_owned()
        }),
    })
}

/// Whether `name` can be a profile's name: one line of visible text, at most
/// [`MAX_NAME_LEN`] bytes. [`Profile::create`] checks it too; callers that ask for a
/// passphrase can check first.
pub fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        return Err(StoreError::BadName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StoreError::NameTooLong { max: MAX_NAME_LEN });
    }
    Ok(())
}

impl Profile {
    /// Creates a new profile in `home` (created with mode 0700 if missing),
    /// protected by `passphrase`, with fresh random secrets and the current Argon2id
    /// parameters (64 MiB, 3 passes).
    ///
    /// Refuses, changing nothing, a bad name or a passphrase [`check_passphrase`]
    /// refuses. Refuses with [`StoreError::AlreadyExists`], changing nothing, if a
    /// profile file is already there. The file is written atomically (temporary
    /// file, fsync, link into place, fsync of the directory) with mode 0600.
    pub fn create(home: &Path, passphrase: &str, name: &str) -> Result<Profile> {
        check_name(name)?;
        check_passphrase(passphrase, name)?;
        Self::create_with(home, passphrase, name, KdfParams::DEFAULT)
    }

    /// [`Profile::create`] with the given Argon2id parameters and no strength check.
    fn create_with(
        home: &Path,
        passphrase: &str,
        name: &str,
        params: KdfParams,
    ) -> Result<Profile> {
        create_private_dir(home)?;
        if Self::exists(home) {
            return Err(StoreError::AlreadyExists {
                dir: home.to_path_buf(),
            });
        }

        let mut secrets = ProfileSecrets {
            device_secret: [0; 32],
            storage_key: [0; 32],
            name: name.to_owned(),
        };
        crypto::fill_random(&mut secrets.device_secret)?;
        crypto::fill_random(&mut secrets.storage_key)?;
        let contents = seal_secrets(&secrets, passphrase, params)?;
        files::write_new_file(home, &profile_path(home), &contents, || {
            StoreError::AlreadyExists {
                dir: home.to_path_buf(),
            }
        })?;
        Ok(Profile {
            home: home.to_path_buf(),
            secrets,
        })
    }

    /// Seals this profile's secrets again under `new_passphrase`, with a fresh salt and
    /// nonce and the Argon2id parameters new profiles get, and replaces the profile file
    /// (temporary file, fsync, rename, fsync of the directory: a crash leaves the old
    /// file or the new one). The device secret and the storage key stay the same, so the
    /// store needs no rewriting; a copy of the old file still opens with the old
    /// passphrase.
    ///
    /// Taking the open `store` proves that no node runs on this profile meanwhile: a
    /// node holds the store while it runs, so none runs now and none can start until the
    /// change is done. Refuses, changing nothing,
    /// if `new_passphrase` is too weak ([`check_passphrase`]), if `store` is not this
    /// profile's, or if the profile file is no longer the one `store` was opened with.
    pub fn change_passphrase(&self, store: &Store, new_passphrase: &str) -> Result<()> {
        check_passphrase(new_passphrase, self.name())?;
        if store.home() != self.home {
            return Err(StoreError::Corrupt {
                dir: self.home.clone(),
                reason: "the store given is another profile's".to_owned(),
            });
        }
        let contents = seal_secrets(&self.secrets, new_passphrase, KdfParams::DEFAULT)?;
        store.replace_profile_file(&contents)
    }

    /// Unlocks the profile in `home` with `passphrase`.
    ///
    /// [`StoreError::NotInitialised`] if there is no profile,
    /// [`StoreError::WrongPassphrase`] if the passphrase does not decrypt it,
    /// [`StoreError::Corrupt`] if the file does not parse.
    pub fn unlock(home: &Path, passphrase: &str) -> Result<Profile> {
        let path = profile_path(home);
        let corrupt = |reason: String| StoreError::Corrupt {
            dir: home.to_path_buf(),
            reason,
        };
        let bytes = read_bounded(home, &path)?;
        if bytes.len() > MAX_FILE_LEN {
            return Err(corrupt("the profile file is too large".to_owned()));
        }
        let header = Header::decode(&bytes).map_err(corrupt)?;
        if bytes.len() < MIN_FILE_LEN {
            return Err(corrupt("the profile file is truncated".to_owned()));
        }
        let (header_bytes, ciphertext) = bytes.split_at(HEADER_LEN);
        let key = header.derive_key(passphrase)?;
        let plaintext = crypto::open(&key, &header.nonce, header_bytes, ciphertext)
            .ok_or(StoreError::WrongPassphrase)?;
        let secrets = ProfileSecrets::decode(&plaintext).ok_or_else(|| {
            corrupt("the profile's encrypted contents do not have the expected layout".to_owned())
        })?;
        Ok(Profile {
            home: home.to_path_buf(),
            secrets,
        })
    }

    /// Whether a profile file (or anything else by that name) exists in `home`.
    pub fn exists(home: &Path) -> bool {
        fs::symlink_metadata(profile_path(home)).is_ok()
    }

    /// The device secret.
    pub fn device_secret(&self) -> &[u8; 32] {
        &self.secrets.device_secret
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.secrets.name
    }

    /// The home directory this profile was created in or unlocked from.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The database root key; only the `db` module needs it.
    pub(crate) fn storage_key(&self) -> &[u8; 32] {
        &self.secrets.storage_key
    }
}

pub(crate) fn profile_path(home: &Path) -> PathBuf {
    home.join(PROFILE_FILE)
}

/// Reads at most `MAX_FILE_LEN + 1` bytes of the profile file.
fn read_bounded(home: &Path, path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StoreError::NotInitialised {
                dir: home.to_path_buf(),
            });
        }
        Err(e) => return Err(io_error("open", path)(e)),
    };
    let mut bytes = Zeroizing::new(Vec::new());
    let limit = u64::try_from(MAX_FILE_LEN + 1).unwrap_or(u64::MAX);
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(io_error("read", path))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: &str = "correct horse battery staple";

    fn home() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn create_unlock_roundtrip() {
        let dir = home();
        let home = dir.path().join("nested").join("home");
        let created = Profile::create(&home, PASS, "Alice").unwrap();
        assert!(Profile::exists(&home));
        let unlocked = Profile::unlock(&home, PASS).unwrap();
        assert_eq!(unlocked.name(), "Alice");
        assert_eq!(unlocked.device_secret(), created.device_secret());
        assert_eq!(unlocked.storage_key(), created.storage_key());
        assert_ne!(created.device_secret(), created.storage_key());
        assert_ne!(created.device_secret(), &[0u8; 32]);
        assert_eq!(unlocked.home(), home.as_path());
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(&home)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(PROFILE_FILE)]);
    }

    #[cfg(unix)]
    #[test]
    fn permissions_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = home();
        let home = dir.path().join("home");
        Profile::create(&home, PASS, "a").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home), 0o700);
        assert_eq!(mode(&profile_path(&home)), 0o600);
    }

    #[test]
    fn two_profiles_have_different_secrets() {
        let (a, b) = (home(), home());
        let pa = Profile::create(a.path(), PASS, "x").unwrap();
        let pb = Profile::create(b.path(), PASS, "x").unwrap();
        assert_ne!(pa.device_secret(), pb.device_secret());
        assert_ne!(pa.storage_key(), pb.storage_key());
        let fa = fs::read(profile_path(a.path())).unwrap();
        let fb = fs::read(profile_path(b.path())).unwrap();
        assert_ne!(fa[22..38], fb[22..38], "salts must differ");
    }

    #[test]
    fn wrong_passphrase() {
        let dir = home();
        Profile::create(dir.path(), PASS, "Alice").unwrap();
        let err = Profile::unlock(dir.path(), "correct horse battery stapler").unwrap_err();
        assert!(matches!(err, StoreError::WrongPassphrase), "{err:?}");
        assert_eq!(err.to_string(), "wrong passphrase for this profile");
    }

    #[test]
    fn short_passphrase_and_bad_names_rejected() {
        let dir = home();
        let err = Profile::create(dir.path(), "", "Alice").unwrap_err();
        assert!(matches!(err, StoreError::ShortPassphrase { .. }), "{err:?}");
        let err = Profile::create(dir.path(), "123456789", "Alice").unwrap_err();
        assert!(
            matches!(err, StoreError::ShortPassphrase { min: 10 }),
            "{err:?}"
        );
        for bad in ["", "   ", "two\nlines"] {
            let err = Profile::create(dir.path(), PASS, bad).unwrap_err();
            assert!(matches!(err, StoreError::BadName), "{bad:?}: {err:?}");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let err = Profile::create(dir.path(), PASS, &long).unwrap_err();
        assert!(matches!(err, StoreError::NameTooLong { .. }), "{err:?}");
        assert!(!Profile::exists(dir.path()));
        // The longest allowed name round-trips.
        let name = "é".repeat(MAX_NAME_LEN / 2);
        Profile::create(dir.path(), PASS, &name).unwrap();
        assert_eq!(Profile::unlock(dir.path(), PASS).unwrap().name(), name);
    }

    /// The Argon2id parameters in a profile file's header.
    fn params_in_file(home: &Path) -> KdfParams {
        let header = Header::decode(&fs::read(profile_path(home)).unwrap()).unwrap();
        KdfParams {
            m_cost: header.m_cost,
            t_cost: header.t_cost,
            p_cost: header.p_cost,
        }
    }

    /// The parameters profiles were created with before they were raised.
    const EARLIER: KdfParams = KdfParams {
        m_cost: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };

    /// A new profile's key costs an attacker at least 64 MiB and 3 passes of Argon2id
    /// per guess.
    #[test]
    fn new_profiles_use_argon2id_of_64_mib_and_3_passes() {
        let dir = home();
        Profile::create(dir.path(), PASS, "Alice").unwrap();
        let params = params_in_file(dir.path());
        assert!(params.m_cost >= 64 * 1024, "{params:?}");
        assert!(params.t_cost >= 3, "{params:?}");
    }

    /// A profile created with the earlier, cheaper parameters (they are in its header)
    /// still opens, and keeps them until its passphrase is changed.
    #[test]
    fn a_profile_with_the_earlier_parameters_still_opens() {
        let dir = home();
        let created = Profile::create_with(dir.path(), PASS, "Alice", EARLIER).unwrap();
        let unlocked = Profile::unlock(dir.path(), PASS).unwrap();
        assert_eq!(unlocked.storage_key(), created.storage_key());
        assert_eq!(params_in_file(dir.path()), EARLIER);
    }

    /// Passphrases that are long enough but easy to guess are refused, with the
    /// estimator's reason in one plain sentence; the profile's name counts as easy to
    /// guess. Nothing is created.
    #[test]
    fn weak_passphrases_are_refused_with_a_reason() {
        let dir = home();
        for (weak, reason) in [
            ("aaaaaaaaaaaa", "repeats like"),
            ("password12", "very common password"),
            ("qwertyuiop", "top-100 common password"),
            ("zxcvbnm,./asdfg", "keys are easy to guess"),
            ("Priya Priya Priya", "only slightly harder to guess"),
            ("a passphrase", "would find it too soon"),
        ] {
            let err = Profile::create(dir.path(), weak, "Priya").unwrap_err();
            let StoreError::WeakPassphrase { reason: given } = &err else {
                panic!("{weak:?}: {err:?}");
            };
            assert!(given.contains(reason), "{weak:?}: {given}");
            let sentence = err.to_string();
            assert!(
                sentence.starts_with("that passphrase would be easy to guess ("),
                "{sentence}"
            );
            assert!(!sentence.contains(". "), "one sentence: {sentence}");
            assert!(!Profile::exists(dir.path()));
        }
        for strong in [PASS, "plum kettle harbour nine", "Monday group notes"] {
            check_passphrase(strong, "Priya").unwrap();
        }
    }

    /// Changing the passphrase seals the same secrets under the new one with the current
    /// parameters: the old passphrase stops opening the file, the new one opens it with
    /// the same keys (so the store still opens), the directory is synced after the
    /// rename, and nothing temporary is left.
    #[test]
    fn changing_the_passphrase_reseals_with_the_current_parameters() {
        const NEW: &str = "lantern orchard velvet 47";
        let dir = home();
        let profile = Profile::create_with(dir.path(), PASS, "Alice", EARLIER).unwrap();
        let store = Store::open(&profile).unwrap();
        store.put_room(&[1; 32], b"room").unwrap();
        let syncs = crate::files::tests::dir_syncs_during(|| {
            profile.change_passphrase(&store, NEW).unwrap();
        });
        assert_eq!(syncs, 1);
        // The store goes on writing into the profile it now belongs to.
        store.write_manifest().unwrap();
        drop(store);

        assert_eq!(params_in_file(dir.path()), KdfParams::DEFAULT);
        let err = Profile::unlock(dir.path(), PASS).unwrap_err();
        assert!(matches!(err, StoreError::WrongPassphrase), "{err:?}");
        let unlocked = Profile::unlock(dir.path(), NEW).unwrap();
        assert_eq!(unlocked.storage_key(), profile.storage_key());
        assert_eq!(unlocked.device_secret(), profile.device_secret());
        assert_eq!(unlocked.name(), "Alice");
        let store = Store::open(&unlocked).unwrap();
        assert_eq!(store.rooms().unwrap().len(), 1);
        drop(store);
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["db", "db.manifest", PROFILE_FILE]);
    }

    /// A weak new passphrase, another profile's store, or a profile file replaced since
    /// the store was opened: refused, and the profile file is unchanged.
    #[test]
    fn a_refused_passphrase_change_changes_nothing() {
        let dir = home();
        let profile = Profile::create(dir.path(), PASS, "Alice").unwrap();
        let before = fs::read(profile_path(dir.path())).unwrap();
        let store = Store::open(&profile).unwrap();
        let err = profile.change_passphrase(&store, "password12").unwrap_err();
        assert!(matches!(err, StoreError::WeakPassphrase { .. }), "{err:?}");
        assert_eq!(fs::read(profile_path(dir.path())).unwrap(), before);

        let other_dir = home();
        let other = Profile::create(other_dir.path(), PASS, "Bob").unwrap();
        let other_store = Store::open(&other).unwrap();
        assert!(
            profile
                .change_passphrase(&other_store, "plum kettle harbour nine")
                .is_err()
        );
        assert_eq!(fs::read(profile_path(dir.path())).unwrap(), before);

        // The file changed behind the store's back (a profile created anew in its place).
        fs::write(profile_path(dir.path()), b"someone else's").unwrap();
        let err = profile
            .change_passphrase(&store, "plum kettle harbour nine")
            .unwrap_err();
        assert!(err.to_string().contains("deleted or replaced"), "{err}");
        assert_eq!(
            fs::read(profile_path(dir.path())).unwrap(),
            b"someone else's"
        );
    }

    #[test]
    fn second_create_refused_and_file_unchanged() {
        let dir = home();
        Profile::create(dir.path(), PASS, "Alice").unwrap();
        let before = fs::read(profile_path(dir.path())).unwrap();
        let err = Profile::create(dir.path(), "another passphrase", "Mallory").unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
        assert!(err.to_string().starts_with("a profile already exists in "));
        assert_eq!(fs::read(profile_path(dir.path())).unwrap(), before);
        assert_eq!(Profile::unlock(dir.path(), PASS).unwrap().name(), "Alice");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn link_refuses_to_overwrite() {
        // The race-free part of `create`: even past the early check, an
        // existing profile is never replaced.
        let dir = home();
        fs::write(profile_path(dir.path()), b"existing").unwrap();
        let err = files::write_new_file(dir.path(), &profile_path(dir.path()), b"new", || {
            StoreError::AlreadyExists {
                dir: dir.path().to_path_buf(),
            }
        })
        .unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
        assert_eq!(fs::read(profile_path(dir.path())).unwrap(), b"existing");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn unlock_without_profile() {
        let dir = home();
        let err = Profile::unlock(dir.path(), PASS).unwrap_err();
        assert!(matches!(err, StoreError::NotInitialised { .. }), "{err:?}");
        assert!(err.to_string().ends_with("run `confer init` first"));
    }

    fn unlock_with_contents(contents: &[u8]) -> StoreError {
        let dir = home();
        fs::write(profile_path(dir.path()), contents).unwrap();
        Profile::unlock(dir.path(), PASS).unwrap_err()
    }

    #[test]
    fn damaged_profiles_are_errors_not_panics() {
        let dir = home();
        Profile::create(dir.path(), PASS, "Alice").unwrap();
        let good = fs::read(profile_path(dir.path())).unwrap();

        // Every truncation is an error, never a panic.
        for len in 0..good.len() {
            let err = unlock_with_contents(&good[..len]);
            let expected = if len < MIN_FILE_LEN {
                matches!(err, StoreError::Corrupt { .. })
            } else {
                matches!(
                    err,
                    StoreError::Corrupt { .. } | StoreError::WrongPassphrase
                )
            };
            assert!(expected, "len {len}: {err:?}");
        }

        // Garbage.
        let err = unlock_with_contents(&[0x5a; 200]);
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");

        // Too large.
        let mut big = good.clone();
        big.resize(MAX_FILE_LEN + 1, 0);
        let err = unlock_with_contents(&big);
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");

        // Unknown version.
        let mut bad = good.clone();
        bad[9] = 2;
        let err = unlock_with_contents(&bad);
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("version 2"), "{err}");

        // Absurd Argon2 memory / time / lanes: rejected before deriving.
        for (at, value) in [(10, u32::MAX), (10, 0), (14, 1000), (14, 0), (18, 1000)] {
            let mut bad = good.clone();
            bad[at..at + 4].copy_from_slice(&u32::to_be_bytes(value));
            let err = unlock_with_contents(&bad);
            assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        }

        // In-range but altered header (authenticated as AAD), ciphertext or
        // tag: all fail authentication.
        for at in [22, 40, HEADER_LEN, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            let err = unlock_with_contents(&bad);
            assert!(matches!(err, StoreError::WrongPassphrase), "{at}: {err:?}");
        }

        // Something else than a file in the profile's place.
        let dir = home();
        fs::create_dir(profile_path(dir.path())).unwrap();
        assert!(Profile::unlock(dir.path(), PASS).is_err());
    }

    #[test]
    fn secrets_are_encrypted_in_the_file() {
        let dir = home();
        let profile = Profile::create(dir.path(), PASS, "NAME-MARKER-7f3a").unwrap();
        let file = fs::read(profile_path(dir.path())).unwrap();
        let contains = |needle: &[u8]| file.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(b"NAME-MARKER-7f3a"));
        assert!(!contains(PASS.as_bytes()));
        assert!(!contains(profile.device_secret()));
        assert!(!contains(profile.storage_key()));
    }

    #[test]
    fn debug_redacts() {
        let dir = home();
        let profile = Profile::create(dir.path(), PASS, "NAME-MARKER").unwrap();
        let debug = format!("{profile:?}");
        assert!(!debug.contains("NAME-MARKER"), "{debug}");
        let secret_hex: String = profile.device_secret()[..4]
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        assert!(!debug.contains(&secret_hex), "{debug}");
        assert!(debug.contains("<redacted>"));
    }
}
