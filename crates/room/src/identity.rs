//! Per-room pseudonymous identities.
//!
//! A person appears in each room under a fresh key pair made for that room only: an
//! ed25519 key that signs everything they do there, and an X25519 key to which other
//! members seal secrets for them. Nothing links the keys of one person in two rooms,
//! and the node's network identity (its libp2p key) is separate from both.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::secret::Secret32;

/// A member's id in one room: the bytes of its ed25519 verifying key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId(pub [u8; 32]);

impl MemberId {
    /// Lower-case hex of the id.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Checks `signature` over `message` with domain separation `label`.
    pub fn verify(
        &self,
        label: &[u8],
        message: &[u8],
        signature: &Sig,
    ) -> Result<(), SignatureError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError)?;
        key.verify_strict(&labelled(label, message), signature)
            .map_err(|_| SignatureError)
    }
}

impl std::fmt::Debug for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemberId({})", &self.to_hex()[..12])
    }
}

/// An ed25519 signature.
pub type Sig = Signature;

/// A signature did not verify.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("bad signature")]
pub struct SignatureError;

/// What other members know of a member's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberPublic {
    /// The signing key, which is also the member's id.
    pub id: MemberId,
    /// The X25519 key secrets are sealed to.
    pub agreement: [u8; 32],
}

fn labelled(label: &[u8], message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(label.len() + message.len() + 1);
    out.extend_from_slice(label);
    out.push(0);
    out.extend_from_slice(message);
    out
}

/// A member's own secret keys in one room.
///
/// Only the two secrets are serialized; the expanded signing key and both public halves
/// are derived once when the keys are made or decoded, because recomputing a public key is
/// a scalar multiplication and would otherwise dominate sealing a message.
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "KeySecrets", into = "KeySecrets")]
pub struct MemberKeys {
    secrets: KeySecrets,
    signing: SigningKey,
    agreement: StaticSecret,
    public: MemberPublic,
}

/// The serialized form of [`MemberKeys`].
#[derive(Clone, Serialize, Deserialize)]
struct KeySecrets {
    signing: Secret32,
    agreement: Secret32,
}

impl From<KeySecrets> for MemberKeys {
    fn from(secrets: KeySecrets) -> Self {
        let signing = SigningKey::from_bytes(secrets.signing.expose());
        let agreement = StaticSecret::from(*secrets.agreement.expose());
        let public = MemberPublic {
            id: MemberId(signing.verifying_key().to_bytes()),
            agreement: PublicKey::from(&agreement).to_bytes(),
        };
        Self {
            secrets,
            signing,
            agreement,
            public,
        }
    }
}

impl From<MemberKeys> for KeySecrets {
    fn from(keys: MemberKeys) -> Self {
        keys.secrets.clone()
    }
}

impl MemberKeys {
    /// Fresh keys for a new room.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        KeySecrets {
            signing: Secret32::random(rng),
            agreement: Secret32::random(rng),
        }
        .into()
    }

    /// The agreement secret, for opening sealed boxes.
    pub fn agreement_secret(&self) -> &StaticSecret {
        &self.agreement
    }

    /// This member's public keys.
    pub fn public(&self) -> MemberPublic {
        self.public
    }

    /// This member's id.
    pub fn id(&self) -> MemberId {
        self.public.id
    }

    /// Signs `message` under domain separation `label`.
    pub fn sign(&self, label: &[u8], message: &[u8]) -> Sig {
        self.signing.sign(&labelled(label, message))
    }
}

impl std::fmt::Debug for MemberKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberKeys")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn sign_verify_with_labels() {
        let mut rng = StdRng::seed_from_u64(7);
        let keys = MemberKeys::generate(&mut rng);
        let sig = keys.sign(b"a", b"msg");
        assert!(keys.id().verify(b"a", b"msg", &sig).is_ok());
        assert!(keys.id().verify(b"b", b"msg", &sig).is_err());
        assert!(keys.id().verify(b"a", b"msh", &sig).is_err());
        let other = MemberKeys::generate(&mut rng);
        assert!(other.id().verify(b"a", b"msg", &sig).is_err());
    }

    #[test]
    fn rooms_get_unlinkable_keys() {
        let mut rng = StdRng::seed_from_u64(8);
        let a = MemberKeys::generate(&mut rng);
        let b = MemberKeys::generate(&mut rng);
        assert_ne!(a.public().id, b.public().id);
        assert_ne!(a.public().agreement, b.public().agreement);
    }
}
