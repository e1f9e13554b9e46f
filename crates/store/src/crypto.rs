//! Small wrappers around the primitives, shared by `profile` and `db`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::StoreError;

/// Length of every symmetric key in this crate.
pub(crate) const KEY_LEN: usize = 32;
/// XChaCha20-Poly1305 nonce length.
pub(crate) const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub(crate) const TAG_LEN: usize = 16;

/// Fills `buf` from the operating system's random number generator.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), StoreError> {
    getrandom::fill(buf).map_err(|e| StoreError::Random {
        reason: e.to_string(),
    })
}

/// A fresh random nonce.
pub(crate) fn random_nonce() -> Result<[u8; NONCE_LEN], StoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    Ok(nonce)
}

fn cipher(key: &[u8; KEY_LEN]) -> XChaCha20Poly1305 {
    // Borrowed as a `Key` without a copy; the cipher zeroizes its own copy of
    // the key on drop (feature `zeroize`).
    let key: &Key = key.into();
    XChaCha20Poly1305::new(key)
}

/// XChaCha20-Poly1305 encryption; returns ciphertext ‖ tag.
pub(crate) fn seal(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, StoreError> {
    cipher(key)
        .encrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| StoreError::Crypto {
            reason: "encryption",
        })
}

/// XChaCha20-Poly1305 decryption. `None` if the ciphertext does not
/// authenticate under this key, nonce and associated data.
pub(crate) fn open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    cipher(key)
        .decrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// Copies `N` bytes starting at `at`, or `None` if `buf` is too short.
pub(crate) fn array_at<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    let end = at.checked_add(N)?;
    buf.get(at..end)?.try_into().ok()
}

/// The shortest a padded value is: every small record (an outbox entry, a setting, a
/// short message) seals to the same length.
pub(crate) const PAD_MIN: usize = 256;

/// The length a value of `len` bytes is padded to before sealing: at least [`PAD_MIN`],
/// and above that Padmé's (Nikitin et al., "Reducing Metadata Leakage from Encrypted
/// Files and Communication with PURBs", PETS 2019): the length's lowest bits are rounded
/// up so that of a length of 2^E only about log2(E) + 1 leading bits remain, leaking
/// O(log log n) bits of it at a cost of at most 1/2^(log2(E)+1) (6.25% from 256 bytes
/// on, 3.2% from 64 KiB).
///
/// `confer_room::wire::padded_len` is the same rule for envelopes; this crate keeps its
/// own copy because it knows nothing of the room protocol, and its minimum is smaller.
pub(crate) fn padded_len(len: usize) -> usize {
    if len <= PAD_MIN {
        return PAD_MIN;
    }
    let e = usize::BITS - 1 - len.leading_zeros(); // floor(log2 len), at least 8
    let s = u32::BITS - e.leading_zeros(); // floor(log2 e) + 1
    let mask = (1usize << (e - s)) - 1;
    len.saturating_add(mask) & !mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_lengths_fall_in_few_buckets_and_cost_little() {
        assert_eq!(padded_len(0), PAD_MIN);
        assert_eq!(padded_len(PAD_MIN), PAD_MIN);
        assert_eq!(padded_len(PAD_MIN + 1), PAD_MIN + 16);
        assert_eq!(padded_len(1000), 1024);
        let mut buckets = std::collections::BTreeSet::new();
        for len in 0..=64 * 1024 {
            let padded = padded_len(len);
            assert!(padded >= len);
            if len > PAD_MIN {
                // At most 6.25% longer.
                assert!(padded - len <= len / 16, "{len} -> {padded}");
            }
            buckets.insert(padded);
        }
        // 64 Ki lengths, a few hundred lengths on disk.
        assert!(buckets.len() < 200, "{}", buckets.len());
    }
}
