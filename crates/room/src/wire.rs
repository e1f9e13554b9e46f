//! The wire encoding: serde + bincode 2 through one shared configuration.
//!
//! Every byte string that comes from outside (the network, an invite code, the store)
//! is decoded only through [`decode`], which
//! - refuses input longer than the caller's limit before looking at it,
//! - uses bincode's own allocation limit ([`MAX_WIRE`]) so a forged length prefix
//!   cannot make the decoder allocate more than that,
//! - and rejects trailing bytes, so one value has exactly one encoding that decodes.
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

/// Decodes exactly one value from `bytes`, which must be at most `limit` bytes long.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, WireError> {
    let limit = limit.min(MAX_WIRE);
    if bytes.len() > limit {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, CONFIG).map_err(|_| WireError::Malformed)?;
    if used != bytes.len() {
        return Err(WireError::TrailingBytes);
    }
    Ok(value)
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
