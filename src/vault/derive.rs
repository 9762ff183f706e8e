//! Keys derived from the master key for one named use outside the vault's own records.
//!
//! Several replicas on one database must agree on some keys (the HMAC over a consent flow's
//! `state`, the key sealing a flow's PKCE verifier in a shared table) without a new secret to
//! distribute: every replica already holds the master key. A [`DerivedKey`] is HKDF-SHA256
//! (RFC 5869) of the master key with a fixed salt and the purpose's label as `info`, so:
//! - the master key never leaves the vault: callers get only the derived key, and HKDF's
//!   one-wayness means a derived key reveals nothing of the master or of another purpose's key;
//! - each [`KeyPurpose`] has its own key (its label is fixed here, never caller-supplied text),
//!   so a MAC or ciphertext made for one use can never verify or open for another.
//!
//! Invariant: key bytes live in [`Zeroizing`] memory and never appear in `Debug` or errors.
//! Rotating the master key changes every derived key: what they protect must be short-lived
//! (consent flows live 10 minutes) or re-sealed by whoever rotates.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::crypto::{self, KEY_LEN, KeyBytes, Purpose};
use super::{MasterKey, Vault, VaultError};

/// HKDF's salt: fixed, public, names the scheme (RFC 5869 §3.1: a salt need not be secret).
const SALT: &[u8] = b"agp-derived-key/v1";

/// What a derived key is for; each has its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// The HMAC over a consent flow's `state` (shared by every replica).
    ConsentState,
    /// Seals a consent flow's record (with its PKCE verifier) in the database.
    ConsentFlowSeal,
}

impl KeyPurpose {
    /// HKDF's `info`, and the key id written in what [`DerivedKey::seal`] produces.
    pub fn label(self) -> &'static str {
        match self {
            KeyPurpose::ConsentState => "consent-state/v1",
            KeyPurpose::ConsentFlowSeal => "consent-flow-seal/v1",
        }
    }
}

/// A 256-bit key for one [`KeyPurpose`]. `Debug` names the purpose, never the bytes.
pub struct DerivedKey {
    key: KeyBytes,
    purpose: KeyPurpose,
}

impl fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DerivedKey({}, [REDACTED])", self.purpose.label())
    }
}

/// Why [`DerivedKey::open`] failed. Coarse on purpose: no partial plaintext, no key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The bytes are not an envelope this key made (truncated, unknown version, another key id).
    #[error("the sealed value is malformed or was sealed by another key")]
    Malformed,
    /// The tag did not verify: another master key, other associated data, or altered bytes.
    #[error("the sealed value failed authentication (altered, moved, or another master key)")]
    Authentication,
}

/// HKDF-SHA256 with a 32-byte output: extract (PRK = HMAC(salt, ikm)), then one block of
/// expand (T(1) = HMAC(PRK, info ‖ 0x01)). Written on `hmac` rather than another crate: it is
/// the whole of RFC 5869 for one block, checked against the RFC's test vector below.
fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8]) -> KeyBytes {
    let mut extract = <Hmac<Sha256> as Mac>::new_from_slice(salt)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    extract.update(ikm);
    let prk = Zeroizing::new(<[u8; 32]>::from(extract.finalize().into_bytes()));
    let mut expand = <Hmac<Sha256> as Mac>::new_from_slice(prk.as_ref())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    expand.update(info);
    expand.update(&[1]);
    Zeroizing::new(expand.finalize().into_bytes().into())
}

impl DerivedKey {
    fn derive(master: &[u8; KEY_LEN], purpose: KeyPurpose) -> Self {
        Self {
            key: hkdf_sha256(SALT, master, purpose.label().as_bytes()),
            purpose,
        }
    }

    /// A random key for `purpose`, known to this process only (the embedded, single-process
    /// mode, where nothing has to agree with another replica).
    pub fn ephemeral(purpose: KeyPurpose) -> Result<Self, VaultError> {
        Ok(Self {
            key: crypto::random_key()?,
            purpose,
        })
    }

    pub fn purpose(&self) -> KeyPurpose {
        self.purpose
    }

    /// HMAC-SHA256 of `message` under this key.
    pub fn mac(&self, message: &[&[u8]]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        for part in message {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Seals `plaintext` with the vault's AEAD (XChaCha20-Poly1305, random nonce); `context`
    /// is authenticated (length-prefixed, so different lists never collide) and must be given
    /// again to open it: name what the value belongs to (e.g. the flow id).
    pub fn seal(&self, context: &[&[u8]], plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        crypto::seal(
            &self.key,
            self.purpose.label(),
            Purpose::Secret,
            context,
            plaintext,
        )
    }

    /// Opens what [`DerivedKey::seal`] made with the same `context`.
    pub fn open(&self, sealed: &[u8], context: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let envelope = crypto::parse(sealed).map_err(|_| OpenError::Malformed)?;
        if envelope.key_id != self.purpose.label() {
            return Err(OpenError::Malformed);
        }
        crypto::open(&self.key, &envelope, Purpose::Secret, context)
            .map_err(|_| OpenError::Authentication)
    }
}

impl MasterKey {
    /// The key for `purpose` derived from this master key (see the module documentation).
    pub fn derive(&self, purpose: KeyPurpose) -> DerivedKey {
        DerivedKey::derive(self.bytes(), purpose)
    }
}

impl Vault {
    /// The key for `purpose` derived from the vault's master key: the same on every replica
    /// that opens the vault with the same master key. The master key itself is never exposed.
    pub fn derive_key(&self, purpose: KeyPurpose) -> DerivedKey {
        match &self.backend {
            super::Backend::Sled(v) => v.derive_key(purpose),
            super::Backend::Postgres(v) => v.derive_key(purpose),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hkdf_matches_rfc_5869_test_case_1() {
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        // The first 32 of the RFC's 42 output bytes (T(1)).
        let okm = hex::decode("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf")
            .unwrap();
        assert_eq!(hkdf_sha256(&salt, &ikm, &info).as_slice(), okm.as_slice());
    }

    #[test]
    fn same_master_same_key_and_purposes_differ() {
        let a = MasterKey::from_bytes([7; 32]);
        let b = MasterKey::from_bytes([7; 32]);
        let other = MasterKey::from_bytes([8; 32]);
        let msg: &[&[u8]] = &[b"flow"];
        let state = a.derive(KeyPurpose::ConsentState);
        assert_eq!(state.mac(msg), b.derive(KeyPurpose::ConsentState).mac(msg));
        assert_ne!(
            state.mac(msg),
            other.derive(KeyPurpose::ConsentState).mac(msg)
        );
        assert_ne!(
            state.mac(msg),
            a.derive(KeyPurpose::ConsentFlowSeal).mac(msg)
        );
        // Never the master key itself.
        assert_ne!(state.key.as_ref(), &[7u8; 32]);
        let printed = format!("{state:?}");
        assert_eq!(printed, "DerivedKey(consent-state/v1, [REDACTED])");
    }

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let key = MasterKey::from_bytes([1; 32]).derive(KeyPurpose::ConsentFlowSeal);
        let sealed = key.seal(&[b"flow-1"], b"verifier-canary").unwrap();
        assert!(!sealed.windows(15).any(|w| w == b"verifier-canary"));
        let again = MasterKey::from_bytes([1; 32]).derive(KeyPurpose::ConsentFlowSeal);
        assert_eq!(
            again.open(&sealed, &[b"flow-1"]).unwrap().as_slice(),
            b"verifier-canary"
        );
        assert_eq!(
            key.open(&sealed, &[b"flow-2"]),
            Err(OpenError::Authentication)
        );
        let other = MasterKey::from_bytes([2; 32]).derive(KeyPurpose::ConsentFlowSeal);
        assert_eq!(
            other.open(&sealed, &[b"flow-1"]),
            Err(OpenError::Authentication)
        );
        let state = MasterKey::from_bytes([1; 32]).derive(KeyPurpose::ConsentState);
        assert_eq!(state.open(&sealed, &[b"flow-1"]), Err(OpenError::Malformed));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            key.open(&flipped, &[b"flow-1"]),
            Err(OpenError::Authentication)
        );
    }
}
