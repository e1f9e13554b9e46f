//! The wire encoding: serde + bincode 2 through one shared configuration.
//!
//! Every byte string that comes from outside (the network, an invite code, the store)
//! is decoded only through [`decode`], which
//! - refuses input longer than the caller's limit before looking at it,
//! - uses bincode's own allocation limit ([`MAX_WIRE`]) so a forged length prefix
//!   cannot make the decoder allocate more than that,
//! - rejects trailing bytes,
//! - and rejects any encoding but the one [`encode`] gives (bincode also reads numbers
//!   written in more bytes than they need), so one value has exactly one encoding that
//!   decodes.
//!
//! One exception, for what is sealed inside a room envelope: [`pad`] lengthens an
//! encoding with zero bytes so that the ciphertext's length tells an observer little
//! about the message's, and [`decode_padded`] accepts such zeros after the value (and
//! nothing else there). Both sides of that are inside the AEAD, so only a key holder can
//! choose the padding, and what the zeros follow is the one encoding of the value.
//!
//! bincode is marked unmaintained (RUSTSEC-2025-0141); it is kept because its 2.0.1
//! release is stable and small, and it is confined to this module so it can be
//! replaced in one place. `deny.toml` records the exception.

use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;

/// The largest value any Confer decoder accepts, in bytes.
pub const MAX_WIRE: usize = 1024 * 1024;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_WIRE>,
>;

const CONFIG: Config = bincode::config::standard().with_limit::<MAX_WIRE>();

/// The largest value of the few kinds that can hold a whole room (a stored room record, a
/// welcome), in bytes: a log at its cap of 8,192 operations fits once the shares of past
/// epochs are deleted.
pub const MAX_LARGE: usize = 4 * 1024 * 1024;

type LargeConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_LARGE>,
>;

const LARGE_CONFIG: LargeConfig = bincode::config::standard().with_limit::<MAX_LARGE>();

/// Why bytes did not decode.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The input is longer than allowed for this kind of value.
    #[error("input of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit that applied.
        limit: usize,
    },
    /// The bytes are not a valid encoding of the expected value.
    #[error("malformed input")]
    Malformed,
    /// A valid value was followed by more bytes.
    #[error("unexpected trailing bytes")]
    TrailingBytes,
    /// The value decodes, but from an encoding other than its one canonical encoding.
    #[error("non-canonical encoding")]
    NotCanonical,
}

/// Encodes a value. Encoding a value built by this crate cannot fail in practice;
/// an error means a value larger than [`MAX_WIRE`].
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let bytes = bincode::serde::encode_to_vec(value, CONFIG).map_err(|_| WireError::Malformed)?;
    if bytes.len() > MAX_WIRE {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            limit: MAX_WIRE,
        });
    }
    Ok(bytes)
}

/// [`encode`] for a value that may hold a whole room, up to [`MAX_LARGE`].
pub fn encode_large<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let bytes =
        bincode::serde::encode_to_vec(value, LARGE_CONFIG).map_err(|_| WireError::Malformed)?;
    if bytes.len() > MAX_LARGE {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            limit: MAX_LARGE,
        });
    }
    Ok(bytes)
}

/// Decodes exactly one value from `bytes`, which must be at most `limit` bytes long.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, WireError> {
    match decode_leading(bytes, limit)? {
        (value, used) if used == bytes.len() => Ok(value),
        _ => Err(WireError::TrailingBytes),
    }
}

/// [`decode`] for a value that may hold a whole room, up to [`MAX_LARGE`].
pub fn decode_large<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, WireError> {
    let limit = limit.min(MAX_LARGE);
    if bytes.len() > limit {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let (value, used): (T, usize) =
        bincode::serde::decode_from_slice(bytes, LARGE_CONFIG).map_err(|_| WireError::Malformed)?;
    if used != bytes.len() {
        return Err(WireError::TrailingBytes);
    }
    canonical(&value, bytes, |v| {
        bincode::serde::encode_to_vec(v, LARGE_CONFIG).map_err(|_| WireError::Malformed)
    })?;
    Ok(value)
}

/// Decodes the value at the start of `bytes` (at most `limit` bytes long); returns it and
/// the length of its encoding. The callers decide what may follow it.
fn decode_leading<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<(T, usize), WireError> {
    let limit = limit.min(MAX_WIRE);
    if bytes.len() > limit {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let (value, used): (T, usize) =
        bincode::serde::decode_from_slice(bytes, CONFIG).map_err(|_| WireError::Malformed)?;
    canonical(&value, &bytes[..used], encode)?;
    Ok((value, used))
}

/// Refuses a value whose encoding is not the one `encode` gives it: bincode also reads a
/// number written in more bytes than it needs, and one value must have one encoding
/// (message ids, duplicate checks and the gossip cache all rely on it).
fn canonical<T>(
    value: &T,
    bytes: &[u8],
    encode: impl Fn(&T) -> Result<Vec<u8>, WireError>,
) -> Result<(), WireError> {
    let again = zeroize::Zeroizing::new(encode(value)?);
    if again.as_slice() == bytes {
        Ok(())
    } else {
        Err(WireError::NotCanonical)
    }
}

/// The shortest a padded plaintext is: every message up to a few hundred characters
/// (check-ins, one-line answers) seals to the same length.
pub const PAD_MIN: usize = 512;

/// The length [`pad`] makes a plaintext of `len` bytes: at least [`PAD_MIN`], and above
/// that Padmé's (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and
/// Communication with PURBs", PETS 2019): the length's lowest bits are rounded up so that
/// of a length of 2^E only about log2(E) + 1 leading bits remain, leaking O(log log n)
/// bits of it at a cost of at most 1/2^(log2(E)+1) (6.25% from 512 bytes on, 3.2% from
/// 64 KiB).
pub fn padded_len(len: usize) -> usize {
    if len <= PAD_MIN {
        return PAD_MIN;
    }
    let e = usize::BITS - 1 - len.leading_zeros(); // floor(log2 len), at least 9
    let s = u32::BITS - e.leading_zeros(); // floor(log2 e) + 1
    let mask = (1usize << (e - s)) - 1;
    (len + mask) & !mask
}

/// Lengthens `bytes` with zeros to [`padded_len`].
pub fn pad(bytes: &mut Vec<u8>) {
    bytes.resize(padded_len(bytes.len()), 0);
}

/// [`decode`] for a plaintext that may carry [`pad`]'s zeros after the value: anything
/// but zeros there is [`WireError::TrailingBytes`]. Returns the value and the length of
/// its encoding (the bytes before the padding).
pub fn decode_padded<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<(T, usize), WireError> {
    let (value, used) = decode_leading(bytes, limit)?;
    if bytes
        .get(used..)
        .is_none_or(|rest| rest.iter().any(|b| *b != 0))
    {
        return Err(WireError::TrailingBytes);
    }
    Ok((value, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_trailing_bytes() {
        let bytes = encode(&(7u32, String::from("x"))).unwrap();
        assert_eq!(
            decode::<(u32, String)>(&bytes, 100).unwrap(),
            (7, "x".into())
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode::<(u32, String)>(&longer, 100),
            Err(WireError::TrailingBytes)
        );
    }

    #[test]
    fn padding_hides_the_length_within_a_bucket_and_costs_little() {
        assert_eq!(padded_len(0), PAD_MIN);
        assert_eq!(padded_len(1), PAD_MIN);
        assert_eq!(padded_len(PAD_MIN), PAD_MIN);
        // 513 to 1023 bytes: multiples of 32; 1,024 to 2,047: of 64; 32 KiB on: of 2 KiB.
        assert_eq!(padded_len(513), 544);
        assert_eq!(padded_len(1000), 1024);
        assert_eq!(padded_len(1100), 1152);
        assert_eq!(padded_len(33_000), 34_816);
        let mut previous = 0;
        for len in 0..70_000 {
            let padded = padded_len(len);
            assert!(padded >= len.max(PAD_MIN), "{len} -> {padded}");
            assert!(padded >= previous, "monotonic at {len}");
            if len > PAD_MIN {
                assert!(padded - len <= len / 16, "{len} -> {padded}: over 6.25%");
            }
            previous = padded;
        }
        // Few distinct lengths: 70,000 lengths pad to under a hundred and fifty.
        let distinct: std::collections::BTreeSet<usize> = (0..70_000).map(padded_len).collect();
        assert!(distinct.len() < 150, "{}", distinct.len());
    }

    #[test]
    fn padded_values_decode_and_only_zeros_may_follow() {
        let mut bytes = encode(&(7u32, String::from("x"))).unwrap();
        let used = bytes.len();
        pad(&mut bytes);
        assert_eq!(bytes.len(), PAD_MIN);
        assert_eq!(
            decode_padded::<(u32, String)>(&bytes, 1000).unwrap(),
            ((7, "x".into()), used)
        );
        // Unpadded (as sealed before padding existed) decodes too.
        assert_eq!(
            decode_padded::<(u32, String)>(&bytes[..used], 1000).unwrap(),
            ((7, "x".into()), used)
        );
        let mut tampered = bytes.clone();
        tampered[PAD_MIN - 1] = 1;
        assert_eq!(
            decode_padded::<(u32, String)>(&tampered, 1000),
            Err(WireError::TrailingBytes)
        );
        assert!(matches!(
            decode_padded::<(u32, String)>(&bytes, 100),
            Err(WireError::TooLarge { .. })
        ));
        // The ordinary decoder still refuses the padding.
        assert_eq!(
            decode::<(u32, String)>(&bytes, 1000),
            Err(WireError::TrailingBytes)
        );
    }

    /// A length prefix written in three bytes where one does: the same value, another
    /// encoding, refused.
    #[test]
    fn a_value_has_one_encoding() {
        let bytes = encode(&vec![7u8; 3]).unwrap();
        assert_eq!(bytes, [3, 7, 7, 7]);
        assert_eq!(decode::<Vec<u8>>(&bytes, 100).unwrap(), vec![7; 3]);
        let wide = [251, 3, 0, 7, 7, 7];
        assert_eq!(decode::<Vec<u8>>(&wide, 100), Err(WireError::NotCanonical));
        assert_eq!(
            decode_large::<Vec<u8>>(&wide, 100),
            Err(WireError::NotCanonical)
        );
        let mut padded = wide.to_vec();
        pad(&mut padded);
        assert_eq!(
            decode_padded::<Vec<u8>>(&padded, 1000),
            Err(WireError::NotCanonical)
        );
    }

    #[test]
    fn rejects_oversized_input_and_forged_lengths() {
        assert!(matches!(
            decode::<Vec<u8>>(&[0u8; 10], 5),
            Err(WireError::TooLarge { .. })
        ));
        // A varint length prefix claiming u64::MAX bytes must fail, not allocate.
        let forged = [0xFFu8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(decode::<Vec<u8>>(&forged, 100), Err(WireError::Malformed));
    }
}
