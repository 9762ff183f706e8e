//! The one AEAD construction every vault record uses, and the envelope it is stored in.
//!
//! XChaCha20-Poly1305 with a fresh random 24-byte nonce per encryption: 192 random bits make
//! a nonce collision negligible even across billions of seals under one key, so no counter
//! state has to survive crashes (design.md, Custody).
//!
//! Envelope (all records): `version (1) ‖ key_id_len (1) ‖ key_id ‖ nonce (24) ‖ ciphertext ‖
//! tag (16)`. The header is authenticated: the associated data is
//! `"agp-vault/v1" ‖ purpose ‖ version ‖ key_id ‖ parts…`, every item length-prefixed (u32 BE)
//! so two different lists can never encode to the same bytes. The purpose separates check,
//! KEK, data-key and secret records, so a record of one kind can never open as another.
//!
//! Invariant: plaintext leaves this module only inside [`Zeroizing`]; a failed open returns
//! an opaque [`OpenError`], never partial plaintext.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use super::VaultError;

pub(crate) const KEY_LEN: usize = 32;
pub(crate) const NONCE_LEN: usize = 24;
pub(crate) const TAG_LEN: usize = 16;
/// Envelope format version; part of the associated data.
const VERSION: u8 = 1;
const AAD_DOMAIN: &[u8] = b"agp-vault/v1";

/// A 256-bit key that wipes itself when dropped.
pub(crate) type KeyBytes = Zeroizing<[u8; KEY_LEN]>;

/// Which kind of record is sealed: each has its own associated-data domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Check,
    Kek,
    DataKey,
    Secret,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Check => b"check",
            Purpose::Kek => b"kek",
            Purpose::DataKey => b"data-key",
            Purpose::Secret => b"secret",
        }
    }
}

/// Why an envelope did not open. Deliberately coarse: callers turn it into a typed
/// [`VaultError`] naming the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Too short, unknown version, bad key-id bytes.
    Malformed(&'static str),
    /// The tag did not verify (wrong key, other associated data, flipped bit).
    Authentication,
}

/// A parsed envelope borrowing the stored bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Envelope<'a> {
    pub key_id: &'a str,
    nonce: [u8; NONCE_LEN],
    ciphertext: &'a [u8],
}

/// 32 fresh random bytes.
pub(crate) fn random_key() -> Result<KeyBytes, VaultError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(key.as_mut()).map_err(|_| VaultError::Rng)?;
    Ok(key)
}

fn aad(purpose: Purpose, key_id: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + parts.iter().map(|p| p.len() + 4).sum::<usize>());
    let mut push = |item: &[u8]| {
        // Items are tiny (ids, names); u32 cannot overflow for anything the vault accepts.
        out.extend_from_slice(&(item.len() as u32).to_be_bytes());
        out.extend_from_slice(item);
    };
    push(AAD_DOMAIN);
    push(purpose.label());
    push(&[VERSION]);
    push(key_id.as_bytes());
    for part in parts {
        push(part);
    }
    out
}

/// Encrypts `plaintext` under `key` and returns the encoded envelope.
pub(crate) fn seal(
    key: &[u8; KEY_LEN],
    key_id: &str,
    purpose: Purpose,
    parts: &[&[u8]],
    plaintext: &[u8],
) -> Result<Vec<u8>, VaultError> {
    let key_id_len = u8::try_from(key_id.len())
        .map_err(|_| VaultError::InvalidSlot("key id longer than 255 bytes"))?;
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| VaultError::Rng)?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let aad = aad(purpose, key_id, parts);
    // `encrypt` copies the plaintext into its output buffer and encrypts it in place, so the
    // returned vector never holds plaintext.
    let ciphertext = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| VaultError::InvalidSlot("plaintext too long for XChaCha20-Poly1305"))?;
    let mut out = Vec::with_capacity(2 + key_id.len() + NONCE_LEN + ciphertext.len());
    out.push(VERSION);
    out.push(key_id_len);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Parses an envelope's header without decrypting (to learn which key opens it).
pub(crate) fn parse(bytes: &[u8]) -> Result<Envelope<'_>, OpenError> {
    let (&version, rest) = bytes.split_first().ok_or(OpenError::Malformed("empty"))?;
    if version != VERSION {
        return Err(OpenError::Malformed("unknown envelope version"));
    }
    let (&id_len, rest) = rest
        .split_first()
        .ok_or(OpenError::Malformed("truncated"))?;
    let id_len = usize::from(id_len);
    if rest.len() < id_len + NONCE_LEN + TAG_LEN {
        return Err(OpenError::Malformed("truncated"));
    }
    let (id, rest) = rest.split_at(id_len);
    let key_id = std::str::from_utf8(id).map_err(|_| OpenError::Malformed("key id not UTF-8"))?;
    let (nonce_bytes, ciphertext) = rest.split_at(NONCE_LEN);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(nonce_bytes);
    Ok(Envelope {
        key_id,
        nonce,
        ciphertext,
    })
}

/// Decrypts a parsed envelope. The header's key id is part of the associated data, so a
/// header edited to name another key fails here even if that key exists.
pub(crate) fn open(
    key: &[u8; KEY_LEN],
    envelope: &Envelope<'_>,
    purpose: Purpose,
    parts: &[&[u8]],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let aad = aad(purpose, envelope.key_id, parts);
    // The tag is verified before anything is decrypted, so a failure leaves no plaintext.
    cipher
        .decrypt(
            &XNonce::from(envelope.nonce),
            Payload {
                msg: envelope.ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| OpenError::Authentication)
}

/// Opens a record that must hold exactly a 32-byte key.
pub(crate) fn open_key(
    key: &[u8; KEY_LEN],
    envelope: &Envelope<'_>,
    purpose: Purpose,
    parts: &[&[u8]],
) -> Result<KeyBytes, OpenError> {
    let plain = open(key, envelope, purpose, parts)?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if plain.len() != KEY_LEN {
        return Err(OpenError::Malformed("wrapped key is not 32 bytes"));
    }
    out.copy_from_slice(&plain);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> [u8; KEY_LEN] {
        [b; KEY_LEN]
    }

    #[test]
    fn round_trip_with_matching_context() {
        let sealed = seal(&key(1), "k1", Purpose::Secret, &[b"c", b"x"], b"hello").unwrap();
        let env = parse(&sealed).unwrap();
        assert_eq!(env.key_id, "k1");
        let plain = open(&key(1), &env, Purpose::Secret, &[b"c", b"x"]).unwrap();
        assert_eq!(plain.as_slice(), b"hello");
    }

    #[test]
    fn fresh_nonce_every_time() {
        let a = seal(&key(1), "k1", Purpose::Secret, &[], b"same").unwrap();
        let b = seal(&key(1), "k1", Purpose::Secret, &[], b"same").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn other_key_purpose_parts_or_split_fail() {
        let sealed = seal(&key(1), "k1", Purpose::Secret, &[b"ab", b"c"], b"v").unwrap();
        let env = parse(&sealed).unwrap();
        let fail = |k: &[u8; 32], p: Purpose, parts: &[&[u8]]| {
            assert_eq!(
                open(k, &env, p, parts).unwrap_err(),
                OpenError::Authentication
            );
        };
        fail(&key(2), Purpose::Secret, &[b"ab", b"c"]);
        fail(&key(1), Purpose::DataKey, &[b"ab", b"c"]);
        // Length prefixes: the same concatenation split differently is different data.
        fail(&key(1), Purpose::Secret, &[b"a", b"bc"]);
        fail(&key(1), Purpose::Secret, &[b"abc"]);
    }

    #[test]
    fn every_flipped_bit_fails_closed() {
        let sealed = seal(&key(7), "k1", Purpose::Kek, &[b"p"], b"0123456789").unwrap();
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                let ok = parse(&bad)
                    .ok()
                    .and_then(|env| open(&key(7), &env, Purpose::Kek, &[b"p"]).ok());
                assert!(ok.is_none(), "byte {i} bit {bit} still opened");
            }
        }
    }

    #[test]
    fn truncated_or_unknown_version_is_malformed() {
        let sealed = seal(&key(1), "k1", Purpose::Check, &[], b"v").unwrap();
        assert!(matches!(parse(&sealed[..10]), Err(OpenError::Malformed(_))));
        let mut v2 = sealed.clone();
        v2[0] = 2;
        assert!(matches!(parse(&v2), Err(OpenError::Malformed(_))));
        assert!(matches!(parse(&[]), Err(OpenError::Malformed(_))));
    }
}
