//! The compositions of primitives Confer uses, each in one place.
//!
//! Nothing here is new cryptography; each function composes the named crates'
//! primitives in a standard way, and says what it is for:
//!
//! - [`seal`] / [`open`]: XChaCha20-Poly1305 with a random 192-bit nonce. The large
//!   nonce makes random nonces safe with many independent senders sharing one key
//!   (every member of a room seals under the same epoch key).
//! - [`seal_to`] / [`open_from`]: a "sealed box" to one member's X25519 key: a fresh
//!   ephemeral X25519 key pair, HKDF-SHA256 over the shared secret (salted with both
//!   public keys, so the derived key is bound to this sender/recipient pair), then
//!   [`seal`]. Used to hand a joiner the room's epoch secret and membership log.
//!   The recipient learns nothing about the sender from it; authenticity comes from
//!   the signed membership log inside.
//! - [`seal_to_many`]: the sealed box for several recipients at once, with one ephemeral
//!   X25519 key shared by all copies (a multi-recipient KEM with shared randomness). Each
//!   copy's key is HKDF over that recipient's own Diffie-Hellman output, salted with the
//!   ephemeral *and the recipient's* public key, so the copies' keys are independent; the
//!   saving is one scalar multiplication per extra recipient. Used for the epoch secret in
//!   a rotation, sealed to every member. Each copy opens with [`open_from`].
//! - [`derive()`]: HKDF-SHA256 with a distinct `info` label per purpose, so one secret
//!   never serves two purposes (message key vs. gossip topic name).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;
use x25519_dalek::{EphemeralSecret, PublicKey, ReusableSecret, StaticSecret};

use crate::secret::Secret32;

/// Why sealed bytes did not open.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// Wrong key, wrong associated data, or the ciphertext was altered.
    #[error("decryption failed: wrong key or altered data")]
    Open,
    /// A peer supplied a low-order X25519 point.
    #[error("invalid public key")]
    WeakKey,
}

/// A ciphertext with the nonce it was sealed under.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sealed {
    /// Random 192-bit nonce.
    pub nonce: [u8; 24],
    /// Ciphertext including the 16-byte Poly1305 tag. Encoded as bytes, not as a
    /// sequence of numbers: the same bytes on the wire (bincode writes both as a length
    /// and the bytes), decoded with one copy instead of one call per byte.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// A [`Sealed`] value addressed to one X25519 public key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SealedBox {
    /// The sender's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// The sealed payload.
    pub sealed: Sealed,
}

/// Seals `plaintext` under `key`, binding `aad`.
pub fn seal<R: rand_core::CryptoRng + ?Sized>(
    key: &Secret32,
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Sealed {
    let mut nonce = [0u8; 24];
    rng.fill_bytes(&mut nonce);
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    // Encryption only fails for inputs beyond 2^38 bytes, which the wire limits exclude.
    let ciphertext = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .unwrap_or_default();
    Sealed { nonce, ciphertext }
}

/// Opens a value sealed by [`seal`] with the same key and `aad`.
pub fn open(key: &Secret32, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    cipher
        .decrypt(
            &XNonce::from(sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Open)
}

fn box_key(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> Secret32 {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    derive(shared, &salt, b"confer/v1/sealed-box")
}

/// Seals `plaintext` so that only the holder of `recipient`'s secret can open it.
pub fn seal_to<R: rand_core::CryptoRng + ?Sized>(
    recipient: &[u8; 32],
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<SealedBox, CryptoError> {
    let recipient_key = PublicKey::from(*recipient);
    let ephemeral_secret = EphemeralSecret::random_from_rng(rng);
    let ephemeral = PublicKey::from(&ephemeral_secret).to_bytes();
    let shared = ephemeral_secret.diffie_hellman(&recipient_key);
    if !shared.was_contributory() {
        return Err(CryptoError::WeakKey);
    }
    let key = box_key(shared.as_bytes(), &ephemeral, recipient);
    Ok(SealedBox {
        ephemeral,
        sealed: seal(&key, aad, plaintext, rng),
    })
}

/// Seals `plaintext` to each of `recipients` under one ephemeral key; `aad(i)` is the
/// associated data of the i-th copy. Returns the ephemeral public key and one copy per
/// recipient, `None` for a recipient whose key is a low-order point (it can receive
/// nothing; such keys are refused at admission).
pub fn seal_to_many<R: rand_core::CryptoRng + ?Sized>(
    recipients: &[[u8; 32]],
    aad: impl Fn(usize) -> Vec<u8>,
    plaintext: &[u8],
    rng: &mut R,
) -> ([u8; 32], Vec<Option<Sealed>>) {
    let ephemeral_secret = ReusableSecret::random_from_rng(rng);
    let ephemeral = PublicKey::from(&ephemeral_secret).to_bytes();
    let mut out = Vec::with_capacity(recipients.len());
    for (i, recipient) in recipients.iter().enumerate() {
        let shared = ephemeral_secret.diffie_hellman(&PublicKey::from(*recipient));
        if !shared.was_contributory() {
            out.push(None);
            continue;
        }
        let key = box_key(shared.as_bytes(), &ephemeral, recipient);
        out.push(Some(seal(&key, &aad(i), plaintext, rng)));
    }
    (ephemeral, out)
}

/// Whether `public` is an X25519 key a sealed box can be addressed to (not a low-order
/// point, for which every Diffie-Hellman output is predictable).
pub fn is_usable_agreement_key(public: &[u8; 32]) -> bool {
    let probe = StaticSecret::from([0x42u8; 32]);
    probe
        .diffie_hellman(&PublicKey::from(*public))
        .was_contributory()
}

/// Opens a [`SealedBox`] addressed to `secret`'s public key.
pub fn open_from(
    secret: &StaticSecret,
    aad: &[u8],
    sealed: &SealedBox,
) -> Result<Vec<u8>, CryptoError> {
    let shared = secret.diffie_hellman(&PublicKey::from(sealed.ephemeral));
    if !shared.was_contributory() {
        return Err(CryptoError::WeakKey);
    }
    let recipient = PublicKey::from(secret).to_bytes();
    let key = box_key(shared.as_bytes(), &sealed.ephemeral, &recipient);
    open(&key, aad, &sealed.sealed)
}

/// HKDF-SHA256: a 32-byte key for one purpose, named by `label`.
pub fn derive(ikm: &[u8], salt: &[u8], label: &[u8]) -> Secret32 {
    let mut out = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA256 output length.
    let _ = Hkdf::<Sha256>::new(Some(salt), ikm).expand(label, &mut out);
    let secret = Secret32::from_bytes(out);
    zeroize::Zeroize::zeroize(&mut out);
    secret
}

/// SHA-256 of the concatenation of `parts`, with a domain label first.
pub fn hash(label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update((label.len() as u64).to_le_bytes());
    h.update(label);
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// The ciphertext encoded as a byte string is the same bytes as the plain `Vec<u8>`
    /// of earlier versions, and reads the same.
    #[test]
    fn a_sealed_value_is_encoded_as_before() {
        #[derive(Serialize)]
        struct Plain {
            nonce: [u8; 24],
            ciphertext: Vec<u8>,
        }
        let ciphertext: Vec<u8> = (0..=255).collect();
        let plain = crate::wire::encode(&Plain {
            nonce: [9; 24],
            ciphertext: ciphertext.clone(),
        })
        .unwrap();
        let sealed = Sealed {
            nonce: [9; 24],
            ciphertext,
        };
        assert_eq!(crate::wire::encode(&sealed).unwrap(), plain);
        assert_eq!(crate::wire::decode::<Sealed>(&plain, 1024).unwrap(), sealed);
    }

    #[test]
    fn seal_open_and_tamper() {
        let mut rng = StdRng::seed_from_u64(1);
        let key = Secret32::random(&mut rng);
        let sealed = seal(&key, b"aad", b"hello", &mut rng);
        assert_eq!(open(&key, b"aad", &sealed).unwrap(), b"hello");
        assert_eq!(open(&key, b"other", &sealed), Err(CryptoError::Open));
        let mut altered = sealed.clone();
        altered.ciphertext[0] ^= 1;
        assert_eq!(open(&key, b"aad", &altered), Err(CryptoError::Open));
        let other = Secret32::random(&mut rng);
        assert_eq!(open(&other, b"aad", &sealed), Err(CryptoError::Open));
    }

    #[test]
    fn sealed_box_only_opens_for_recipient() {
        let mut rng = StdRng::seed_from_u64(2);
        let alice = StaticSecret::random_from_rng(&mut rng);
        let mallory = StaticSecret::random_from_rng(&mut rng);
        let alice_pub = PublicKey::from(&alice).to_bytes();
        let boxed = seal_to(&alice_pub, b"ctx", b"secret", &mut rng).unwrap();
        assert_eq!(open_from(&alice, b"ctx", &boxed).unwrap(), b"secret");
        assert_eq!(open_from(&mallory, b"ctx", &boxed), Err(CryptoError::Open));
        assert_eq!(open_from(&alice, b"other", &boxed), Err(CryptoError::Open));
        let mut altered = boxed.clone();
        altered.ephemeral[3] ^= 1;
        assert!(open_from(&alice, b"ctx", &altered).is_err());
    }

    #[test]
    fn sealing_to_many_gives_each_recipient_its_own_copy() {
        let mut rng = StdRng::seed_from_u64(4);
        let keys: Vec<StaticSecret> = (0..3)
            .map(|_| StaticSecret::random_from_rng(&mut rng))
            .collect();
        let publics: Vec<[u8; 32]> = keys.iter().map(|k| PublicKey::from(k).to_bytes()).collect();
        let aad = |i: usize| vec![i as u8];
        let (ephemeral, copies) = seal_to_many(&publics, aad, b"epoch secret", &mut rng);
        for (i, key) in keys.iter().enumerate() {
            let boxed = SealedBox {
                ephemeral,
                sealed: copies[i].clone().unwrap(),
            };
            assert_eq!(open_from(key, &aad(i), &boxed).unwrap(), b"epoch secret");
            // Another recipient's copy does not open with this key.
            let other = SealedBox {
                ephemeral,
                sealed: copies[(i + 1) % 3].clone().unwrap(),
            };
            assert!(open_from(key, &aad((i + 1) % 3), &other).is_err());
        }
        let (_, weak) = seal_to_many(&[[0u8; 32], publics[0]], aad, b"x", &mut rng);
        assert!(weak[0].is_none() && weak[1].is_some());
        assert!(!is_usable_agreement_key(&[0u8; 32]));
        assert!(is_usable_agreement_key(&publics[0]));
    }

    #[test]
    fn low_order_point_is_refused() {
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(
            seal_to(&[0u8; 32], b"", b"x", &mut rng),
            Err(CryptoError::WeakKey)
        );
    }

    #[test]
    fn derive_separates_labels() {
        assert_ne!(derive(b"k", b"s", b"a"), derive(b"k", b"s", b"b"));
        assert_eq!(derive(b"k", b"s", b"a"), derive(b"k", b"s", b"a"));
    }
}
